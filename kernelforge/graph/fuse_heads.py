"""Graph pass: let attention read and write heads where the projections put them, without the transposes.

Exported transformers split heads with ``Reshape([B, S, H, D]) -> Transpose(0, 2, 1, 3)`` before attention and
merge them with ``Transpose(0, 2, 1, 3) -> Reshape([B, S, H*D])`` after it (Hugging Face's ``split_heads`` /
``merge_heads``, timm's ``permute``). Each transpose is a kernel that reads and writes the whole tensor, four
per layer. The attention kernels read Q, K and V and write their output by rows of the head size; a
sequence-major tensor only orders those rows differently (see ``seq_major`` in
:mod:`kernelforge.ops._attention_problem`), so :func:`fold_head_transposes` drops each such transpose and marks
the tensor sequence-major on the ``attention`` node instead. A transpose that something else also reads stays
for that reader; the output's is dropped only when the attention node is its sole producer and it its sole
reader.
"""

from __future__ import annotations

from kernelforge.graph.ir import Graph, Node

__all__ = ["fold_head_transposes"]

_SWAP = (0, 2, 1, 3)
"""``[B, H, S, D] <-> [B, S, H, D]``."""


def _swap(node: Node | None) -> bool:
    return node is not None and node.op == "transpose" and tuple(node.attrs.get("perm", ())) == _SWAP


def fold_head_transposes(graph: Graph) -> Graph:
    """Fold the head transposes around every ``attention`` node into its ``seq_major`` attribute."""
    producers = graph.producers()
    readers = graph.consumers()
    for node in [n for n in graph.nodes if n.op == "attention"]:
        layout = set(node.attrs.get("seq_major", ""))
        for slot, letter in enumerate("qkv"):
            if letter in layout or (letter == "k" and node.attrs.get("k_transposed")):
                continue
            transpose = producers.get(node.inputs[slot])
            if _swap(transpose) and transpose is not None and len(graph.value(transpose.inputs[0]).shape) == 4:
                node.inputs[slot] = transpose.inputs[0]
                layout.add(letter)
        users = readers.get(node.output, [])
        merge = users[0] if len(users) == 1 else None
        if "o" not in layout and node.output not in graph.outputs and _swap(merge) and merge is not None:
            del graph.values[node.output]
            node.outputs = list(merge.outputs)
            graph.nodes.remove(merge)
            layout.add("o")
        node.attrs["seq_major"] = "".join(c for c in "qkvo" if c in layout)
    graph.prune()
    return graph
