"""From IR nodes to kernel calls: the op spec named by the node builds its problem from the node's shapes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kernelforge.errors import ShapeError
from kernelforge.graph.ir import VIEW_OPS, Graph, GraphError, Node, Value
from kernelforge.ops import OPS, get_op
from kernelforge.ops.concat import MAX_WGSL_INPUTS


@dataclass(frozen=True)
class Lowered:
    """One node as a kernel call.

    Attributes:
        op: Registered op name (a key of :data:`kernelforge.ops.OPS`; the node's IR op).
        problem: The op's problem dataclass.
        inputs: Value names in the op spec's input order (omitted optional inputs dropped).
    """

    op: str
    problem: Any
    inputs: tuple[str, ...]


def lower_node(graph: Graph, node: Node) -> Lowered | None:
    """Return the kernel call of ``node``, or None for a view op (no kernel).

    Raises:
        GraphError: Naming the node when it has no kernel (``batchnorm`` left after the passes) or its
            attributes do not make a valid problem.
    """
    if node.op in VIEW_OPS:
        return None
    if node.op not in OPS:
        raise GraphError(f"{node.origin or node.name}: IR op {node.op!r} has no kernel (the graph passes remove it)")
    shapes = [graph.value(name).shape if name else None for name in node.inputs]
    try:
        return lower(node.op, shapes, node.attrs, node.inputs)
    except (ShapeError, KeyError, TypeError, ValueError) as exc:
        raise GraphError(f"{node.origin or node.name}: cannot run as a kernel: {exc}") from exc


def lower(op: str, shapes: Sequence[tuple[int, ...] | None], attrs: Mapping[str, Any], names: Sequence[str]) -> Lowered:
    """Return the kernel call of registered op ``op`` on inputs ``names`` of ``shapes`` (``""``/None: omitted).

    Raises:
        ShapeError: (or KeyError, TypeError, ValueError) When the shapes or attributes do not fit the op.
    """
    spec = get_op(op)
    problem = spec.from_node(shapes, attrs)
    bound = spec.node_inputs(problem, [bool(name) for name in names])
    return Lowered(op, problem, tuple(names[i] for i in bound))


MAX_WEIGHT_FLOATS = 1 << 24
"""Largest constant GEMM operand kept in one piece: 64 MiB fits WebGPU's default 128 MiB storage binding and a
4096x4096 R32F texture (VGG's first FC layer is 25088x4096 = 411 MB)."""


def split_wide_gemms(graph: Graph, max_floats: int = MAX_WEIGHT_FLOATS) -> int:
    """Split GEMMs whose constant B is larger than ``max_floats`` into column blocks joined by a concat.

    Returns:
        The number of GEMMs split.
    """
    nodes: list[Node] = []
    split = 0
    for node in graph.nodes:
        b = graph.const(node.inputs[1]) if node.op == "gemm" else None
        if b is None or b.size <= max_floats or b.ndim != 2:
            nodes.append(node)
            continue
        trans_b = bool(node.attrs["trans_b"])
        n = b.shape[0] if trans_b else b.shape[1]
        k = b.size // n
        width = max(1, max_floats // k)
        pieces = -(-n // width)
        if pieces > MAX_WGSL_INPUTS:
            width = -(-n // MAX_WGSL_INPUTS)
            pieces = -(-n // width)
        bias = graph.const(node.inputs[2]) if len(node.inputs) > 2 else None
        out = graph.value(node.output)
        parts = []
        for p in range(pieces):
            lo, hi = p * width, min(n, (p + 1) * width)
            block = b[lo:hi] if trans_b else b[:, lo:hi]
            inputs = [node.inputs[0], graph.add_const(f"{node.inputs[1]}/{p}", block)]
            if bias is not None:
                inputs.append(graph.add_const(f"{node.inputs[2]}/{p}", bias[lo:hi]))
            name = graph.fresh_name(f"{node.output}/{p}")
            graph.values[name] = Value(name, (*out.shape[:-1], hi - lo))
            nodes.append(
                Node(graph.fresh_name(f"{node.name}/{p}"), "gemm", inputs, [name], dict(node.attrs), node.origin)
            )
            parts.append(name)
        concat = Node(
            graph.fresh_name(f"{node.name}/concat"), "concat", parts, [node.output], {"axis": len(out.shape) - 1}
        )
        concat.origin = node.origin
        nodes.append(concat)
        split += 1
    graph.nodes = nodes
    graph.prune()
    return split
