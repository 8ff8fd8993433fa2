"""Graph pass: find the attention of exported transformers and replace it with one ``attention`` node.

``torch.onnx.export`` writes scaled dot-product attention as ``MatMul(Q, Kᵀ) -> Mul/Div(scale) ->
Where(mask, ·, fill)? -> Add(mask)? -> Softmax(-1) -> MatMul(·, V)``, which import turns into a batched
``gemm`` between ``reshape`` views, one ``elementwise`` node per ONNX op, a ``softmax`` and a second ``gemm``.
:func:`fuse_attention` walks back from each last-axis softmax and forward to the ``P·V`` product and, when every
tensor in between is read only by the chain, replaces the whole chain with one node of the ``attention`` op:

* the scale may be any product of constant scalars (``Mul``/``Div``) on the scores, on Q or on Kᵀ (the
  ``sqrt(scale)`` on each form); it is folded into the node's ``scale``;
* ``Transpose(K)`` that swaps the last two axes is dropped (a transpose that also moves other axes keeps them:
  its permutation loses the swap); any other Kᵀ is read as it stands (``k_transposed``);
* ``Where(cond, scores, c)`` (or ``Where(cond, c, scores)``, negated) with a scalar constant ``c`` becomes the
  node's select mask and ``fill``; one ``Add`` of a tensor that broadcasts to the scores, after it, becomes
  its additive mask (runtime, or a constant such as a causal mask folded at load);
* scores of rank 2, 3 or 4 (``[Sq, Skv]``, ``[B*H, Sq, Skv]``, ``[B, H, Sq, Skv]``) are viewed as 4-D.

Anything else on the way (an activation, a second mask, a mask added before the scale, a tensor read elsewhere,
a softmax over another axis) leaves the chain as it was. The rewrite computes exactly what the chain computes,
up to float rounding of the scale and of the sums; fully masked rows stay NaN, as Softmax makes them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from kernelforge.errors import ShapeError
from kernelforge.graph.ir import Graph, Node, Value
from kernelforge.ops import _expr, get_op

__all__ = ["fuse_attention"]

_Tree = _expr.Node
_Ops = list[tuple[str, tuple[_Tree, ...]]]
"""Ops on the way from a program's leaf to its root: ``(op, the other operands)``."""


@dataclass
class _Chain:
    """What was found between the QK product and the softmax, in the order the scores go through it."""

    scale: float = 1.0
    select: str = ""
    select_negated: bool = False
    fill: float = -math.inf
    add: str = ""


@dataclass(frozen=True)
class _Match:
    """One attention to rewrite: its inputs as the graph has them and what the node computes."""

    q: str
    k: str
    v: str
    k_transposed: bool
    k_swap: Node | None
    """A transpose producing Kᵀ that keeps a permutation of other axes: rewritten to produce K."""
    chain: _Chain
    lead: tuple[int, ...]
    out: str
    anchor: Node


class _Graph:
    """A graph with its producer and reader maps, rebuilt after each rewrite."""

    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self.producers = graph.producers()
        self.readers = graph.consumers()
        self.outputs = set(graph.outputs)

    def shape(self, name: str) -> tuple[int, ...]:
        return self.graph.value(name).shape

    def producer(self, name: str, op: str) -> Node | None:
        node = self.producers.get(name)
        return node if node is not None and node.op == op else None

    def only_reader(self, name: str, node: Node) -> bool:
        """Whether ``node`` is the one reader of ``name`` (once) and ``name`` is no graph output."""
        readers = self.readers.get(name, [])
        return name not in self.outputs and len(readers) == 1 and readers[0] is node

    def scalar(self, node: Node, leaf: _Tree) -> float | None:
        """Return the value of a program leaf that is a constant or a one-element constant input, else None."""
        if leaf[0] == "const":
            return float(leaf[1][0])
        if leaf[0] != "in":
            return None
        data = self.graph.const(node.inputs[leaf[1][0]])
        return None if data is None or data.size != 1 else float(np.asarray(data).reshape(-1)[0])


def _program(node: Node) -> _Tree | None:
    """Return an elementwise node's program with leaf ``k`` meaning ``node.inputs[k]``, or None."""
    try:
        tree, names = _expr.parse(node.attrs["expr"])
    except (KeyError, _expr.ExpressionError):
        return None
    if any(not n.startswith("v") or not n[1:].isdigit() for n in names):
        return None
    index = [int(n[1:]) for n in names]

    def remap(t: _Tree) -> _Tree:
        if t[0] == "in":
            return ("in", (index[t[1][0]],))
        return (t[0], t[1], *(remap(c) for c in t[2:]))

    return remap(tree)


def _count(tree: _Tree, leaf: _Tree) -> int:
    return int(tree == leaf) + sum(_count(c, leaf) for c in tree[2:] if isinstance(c, tuple))


def _path(tree: _Tree, leaf: _Tree) -> _Ops | None:
    """Return the ops from ``leaf`` up to the root as ``(op, other operands)``, innermost first, or None.

    Only ``add``, ``mul``, ``div`` (leaf in the numerator) and ``where`` (leaf in a branch, not the condition)
    may sit on the path; ``where`` records ``(cond, other branch, ("leaf_true",) or ("leaf_false",))``.
    """
    if _count(tree, leaf) != 1:
        return None
    ops: _Ops = []
    node = tree
    while node != leaf:
        op, kids = node[0], node[2:]
        if op in ("add", "mul"):
            inner, other = (kids[0], kids[1]) if _count(kids[0], leaf) else (kids[1], kids[0])
            ops.append((op, (other,)))
        elif op == "div" and _count(kids[0], leaf):
            inner = kids[0]
            ops.append((op, (kids[1],)))
        elif op == "where" and not _count(kids[0], leaf):
            true_side = bool(_count(kids[1], leaf))
            inner, other = (kids[1], kids[2]) if true_side else (kids[2], kids[1])
            ops.append((op, (kids[0], other, ("leaf_true" if true_side else "leaf_false", ()))))
        else:
            return None
        node = inner
    return ops[::-1]


def _scale_of(g: _Graph, node: Node, op: str, other: _Tree) -> float | None:
    """Return the factor a ``mul``/``div`` by a scalar constant applies, else None."""
    value = g.scalar(node, other)
    if value is None or not math.isfinite(value) or value == 0.0:
        return None
    return value if op == "mul" else 1.0 / value


def _apply(g: _Graph, node: Node, ops: _Ops, chain: _Chain, scores: tuple[int, ...]) -> bool:
    """Add one elementwise node's ops (innermost first) to ``chain``; return False for what it cannot hold."""
    for op, operands in ops:
        if op in ("mul", "div"):
            factor = _scale_of(g, node, op, operands[0])
            if factor is None or chain.select or chain.add:
                return False  # a scale after a mask would scale the mask too
            chain.scale *= factor
        elif op == "where":
            cond, other, side = operands
            fill = g.scalar(node, other)
            if cond[0] != "in" or fill is None or math.isnan(fill) or chain.select or chain.add:
                return False
            name = node.inputs[cond[1][0]]
            if not _broadcasts(g.shape(name), scores):
                return False
            chain.select, chain.fill, chain.select_negated = name, fill, side[0] == "leaf_false"
        else:  # add
            other = operands[0]
            if other[0] != "in" or chain.add:
                return False
            name = node.inputs[other[1][0]]
            if not _broadcasts(g.shape(name), scores):
                return False
            chain.add = name
    return True


def _broadcasts(shape: tuple[int, ...], scores: tuple[int, ...]) -> bool:
    if len(shape) > len(scores):
        return False
    padded = (1,) * (len(scores) - len(shape)) + shape
    return all(d in (1, s) for d, s in zip(padded, scores, strict=True))


def _back(g: _Graph, name: str, reader: Node, scores: tuple[int, ...]) -> tuple[Node, _Chain] | None:
    """Walk from the softmax input back to the QK gemm; return it and the chain in forward order."""
    if not g.only_reader(name, reader):
        return None
    node = g.producers.get(name)
    if node is None:
        return None
    if node.op == "reshape":
        gemm = g.producer(node.inputs[0], "gemm")
        if gemm is None or not g.only_reader(node.inputs[0], node):
            return None
        return gemm, _Chain()
    if node.op == "gemm":
        return node, _Chain()
    if node.op != "elementwise" or g.shape(name) != scores:
        return None
    tree = _program(node)
    if tree is None:
        return None
    for k, source in enumerate(node.inputs):
        ops = _path(tree, ("in", (k,))) if g.shape(source) == scores else None
        if ops is None:
            continue
        found = _back(g, source, node, scores)
        if found is not None and _apply(g, node, ops, found[1], scores):
            return found
    return None


def _strip_scale(g: _Graph, name: str, reader: Node, chain: _Chain) -> str:
    """Follow constant-scalar ``Mul``/``Div`` nodes read only by the chain up from ``name``, folding them."""
    while g.only_reader(name, reader):
        node = g.producer(name, "elementwise")
        tree = _program(node) if node is not None else None
        if node is None or tree is None:
            break
        shape = g.shape(name)
        sources = [k for k, s in enumerate(node.inputs) if g.shape(s) == shape and not g.graph.value(s).is_const]
        ops = _path(tree, ("in", (sources[0],))) if len(sources) == 1 else None
        if not ops or any(op not in ("mul", "div") for op, _ in ops):
            break
        factors = [_scale_of(g, node, op, operands[0]) for op, operands in ops]
        if any(f is None for f in factors):
            break
        chain.scale *= math.prod(f for f in factors if f is not None)
        name, reader = node.inputs[sources[0]], node
    return name


def _operand(g: _Graph, name: str, reader: Node, want: tuple[int, ...], chain: _Chain, scale: bool) -> str | None:
    """Return the tensor a gemm operand views (reshapes followed back) if it has shape ``want``."""
    while g.shape(name) != want:
        view = g.producer(name, "reshape")
        if view is None or not g.only_reader(name, reader):
            return None
        name, reader = view.inputs[0], view
    return _strip_scale(g, name, reader, chain) if scale else name


def _plain_gemm(node: Node) -> bool:
    activation = node.attrs.get("activation")
    kind = getattr(activation, "kind", "none")
    return len([i for i in node.inputs if i]) == 2 and not node.attrs.get("trans_b") and kind == "none"


def _match(g: _Graph, softmax: Node) -> _Match | None:
    """Return the attention ending at ``softmax``, or None when the pattern is not all there."""
    scores = g.shape(softmax.inputs[0])
    if not 2 <= len(scores) <= 4 or int(softmax.attrs.get("axis", -1)) % len(scores) != len(scores) - 1:
        return None
    lead, sq, skv = scores[:-2], scores[-2], scores[-1]
    found = _back(g, softmax.inputs[0], softmax, scores)
    if found is None:
        return None
    qk, chain = found
    if not _plain_gemm(qk):
        return None
    d = g.shape(qk.inputs[0])[-1]
    q = _operand(g, qk.inputs[0], qk, (*lead, sq, d), chain, True)
    k_t = _operand(g, qk.inputs[1], qk, (*lead, d, skv), chain, True)
    if q is None or k_t is None:
        return None
    k, k_transposed, k_swap = k_t, True, None
    transpose, transposed = g.producer(k_t, "transpose"), k_t
    merge = g.producer(k_t, "reshape")
    if merge is not None and g.only_reader(k_t, g.readers[k_t][0]):
        # heads folded into the batch after the transpose ([b, h, d, s] -> [b*h, d, s]): look through the view
        source = merge.inputs[0]
        if g.shape(source)[-2:] == g.shape(k_t)[-2:] and g.only_reader(source, merge):
            transpose, transposed = g.producer(source, "transpose"), source
    if transpose is not None and g.only_reader(transposed, g.readers[transposed][0]):
        perm = tuple(transpose.attrs["perm"])
        swapped = (*perm[:-2], perm[-1], perm[-2])
        k_transposed = False
        if swapped == tuple(range(len(perm))):
            k = _strip_scale(g, transpose.inputs[0], transpose, chain)
        else:
            k_swap = transpose
    # forward: the probabilities' one reader is (a view of) the P.V gemm
    probs = softmax.output
    view = g.readers.get(probs, [None])[0]
    if view is not None and view.op == "reshape" and g.only_reader(probs, view):
        probs = view.output
    pv = g.readers.get(probs, [None])[0]
    if pv is None or pv.op != "gemm" or not g.only_reader(probs, pv) or pv.inputs[0] != probs or not _plain_gemm(pv):
        return None
    dv = g.shape(pv.output)[-1]
    v = _operand(g, pv.inputs[1], pv, (*lead, skv, dv), chain, False)
    if v is None:
        return None
    out, anchor = pv.output, pv
    if g.shape(out) != (*lead, sq, dv):
        after = g.readers.get(out, [None])[0]
        if after is None or after.op != "reshape" or not g.only_reader(out, after):
            return None
        out, anchor = after.output, after
        if g.shape(out) != (*lead, sq, dv):
            return None
    return _Match(q, k, v, k_transposed, k_swap, chain, lead, out, anchor)


def _rewrite(graph: Graph, m: _Match) -> bool:
    """Replace the matched chain with an attention node at the anchor's place; return whether it did."""
    new: list[Node] = []
    origin = f"{m.anchor.origin or m.anchor.name} (fused attention)"

    def value(base: str, shape: tuple[int, ...]) -> str:
        name = graph.fresh_name(base)
        graph.values[name] = Value(name, shape)
        return name

    b, h = (1,) * (2 - len(m.lead)) + m.lead

    def view4(name: str, operand: bool = False) -> str:
        """Return ``name`` viewed as 4-D: an operand as ``[B, H, rows, cols]``, a mask left-padded with 1s."""
        shape = graph.value(name).shape
        shape4 = (b, h, *shape[-2:]) if operand else (1,) * (4 - len(shape)) + shape
        if shape == shape4:
            return name
        data = graph.const(name)
        if data is not None:
            return graph.add_const(f"{name}_4d", np.asarray(data).reshape(shape4))
        out = value(f"{name}_4d", shape4)
        new.append(Node(graph.fresh_name(f"{name}_view"), "reshape", [name], [out], {}, origin))
        return out

    k = m.k
    if m.k_swap is not None:
        perm = tuple(m.k_swap.attrs["perm"])
        swapped = (*perm[:-2], perm[-1], perm[-2])
        source = graph.value(m.k_swap.inputs[0]).shape
        k = value(f"{m.k_swap.output}_k", tuple(source[a] for a in swapped))
    chain = m.chain
    select = chain.select
    if select and chain.select_negated:
        data = graph.const(select)
        if data is not None:
            select = graph.add_const(f"{select}_not", (np.asarray(data) == 0.0).astype(np.float32))
        else:
            negated = value(f"{select}_not", graph.value(select).shape)
            new.append(Node(graph.fresh_name(f"{select}_not"), "elementwise", [select], [negated],
                            {"expr": "logical_not(v0)"}, origin))  # fmt: skip
            select = negated
    inputs = [view4(m.q, True), view4(k, True), view4(m.v, True), view4(chain.add) if chain.add else "",
              view4(select) if select else ""]  # fmt: skip
    attrs = {"scale": chain.scale, "k_transposed": m.k_transposed, "causal": None, "fill": chain.fill,
             "zero_empty": False}  # fmt: skip
    try:
        shapes = [graph.value(n).shape if n else None for n in inputs]
        problem = get_op("attention").from_node(shapes, attrs)
    except ShapeError:
        return False
    out_shape = problem.out_shape
    target = m.out if graph.value(m.out).shape == out_shape else value(f"{m.out}_4d", out_shape)
    new.append(Node(graph.fresh_name(f"{m.anchor.name}_attention"), "attention", inputs, [target], attrs, origin))
    if target != m.out:
        new.append(Node(graph.fresh_name(f"{m.out}_view"), "reshape", [target], [m.out], {}, origin))
    at = graph.nodes.index(m.anchor)
    graph.nodes[at : at + 1] = new
    if m.k_swap is not None:
        m.k_swap.attrs = {**m.k_swap.attrs, "perm": (*perm[:-2], perm[-1], perm[-2])}
        m.k_swap.outputs = [k]
    return True


def fuse_attention(graph: Graph) -> Graph:
    """Replace every attention chain (see the module docstring) with one ``attention`` node; prune the rest."""
    for softmax in [n for n in graph.nodes if n.op == "softmax"]:
        if softmax not in graph.nodes:
            continue
        match = _match(_Graph(graph), softmax)
        if match is not None and _rewrite(graph, match):
            graph.prune()
    return graph
