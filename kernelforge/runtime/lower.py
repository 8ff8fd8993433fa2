"""From IR nodes to kernel calls: which op spec runs a node, on which problem, reading which values."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kernelforge.errors import ShapeError
from kernelforge.ops.concat import MAX_WGSL_INPUTS, ConcatProblem
from kernelforge.ops.conv import ConvProblem
from kernelforge.ops.eltwise import EltwiseProblem
from kernelforge.ops.gemm import GemmProblem
from kernelforge.ops.pad import PadProblem
from kernelforge.ops.pool import PoolProblem
from kernelforge.ops.resize import ResizeProblem
from kernelforge.ops.softmax import SoftmaxProblem
from kernelforge.ops.transpose import TransposeProblem
from kernelforge.runtime.graph import VIEW_OPS, Graph, GraphError, Node, Value


@dataclass(frozen=True)
class Lowered:
    """One node as a kernel call.

    Attributes:
        op: Registered op name (a key of :data:`kernelforge.ops.OPS`).
        problem: The op's problem dataclass.
        inputs: Value names in the op spec's input order (omitted optional inputs dropped).
    """

    op: str
    problem: Any
    inputs: tuple[str, ...]


def _shape(graph: Graph, name: str) -> tuple[int, ...]:
    return graph.value(name).shape


def _conv(graph: Graph, node: Node) -> Lowered:
    x, w, *rest = [*node.inputs, "", ""]
    n, c, h, wd = _shape(graph, x)
    m, _, kh, kw = _shape(graph, w)
    bias, residual = rest[0], rest[1]
    a = node.attrs
    problem = ConvProblem(
        n=n,
        c=c,
        h=h,
        w=wd,
        m=m,
        kh=kh,
        kw=kw,
        strides=tuple(a["strides"]),
        pads=tuple(a["pads"]),
        dilations=tuple(a["dilations"]),
        group=int(a["group"]),
        has_bias=bool(bias),
        has_residual=bool(residual),
        activation=a["activation"],
    )
    return Lowered("conv2d", problem, tuple(v for v in (x, w, bias, residual) if v))


def _gemm(graph: Graph, node: Node) -> Lowered:
    a_name, b_name, *rest = [*node.inputs, ""]
    bias = rest[0]
    a, b = _shape(graph, a_name), _shape(graph, b_name)
    trans_b = bool(node.attrs["trans_b"])
    m, k = a[-2:]
    n = b[-2] if trans_b else b[-1]
    problem = GemmProblem(
        m=m,
        n=n,
        k=k,
        batch=a[0] if len(a) == 3 else 1,
        batch_b=b[0] if len(b) == 3 else 1,
        trans_b=trans_b,
        has_bias=bool(bias),
        activation=node.attrs["activation"],
    )
    return Lowered("gemm", problem, tuple(v for v in (a_name, b_name, bias) if v))


def _elementwise(graph: Graph, node: Node) -> Lowered:
    shapes = {f"v{i}": _shape(graph, name) for i, name in enumerate(node.inputs)}
    problem = EltwiseProblem.from_text(node.attrs["expr"], shapes)
    return Lowered("elementwise", problem, tuple(node.inputs[int(name[1:])] for name in problem.names))


def _pool(graph: Graph, node: Node) -> Lowered:
    n, c, h, w = _shape(graph, node.inputs[0])
    a = node.attrs
    mode = {"average": "avg"}.get(a["mode"], a["mode"])  # the IR says ONNX's "average", pool2d "avg"
    if a.get("global_"):
        problem = PoolProblem(n=n, c=c, h=h, w=w, mode=mode, global_=True)
    else:
        problem = PoolProblem(
            n=n,
            c=c,
            h=h,
            w=w,
            mode=mode,
            kernel_shape=tuple(a["kernel_shape"]),
            strides=tuple(a["strides"]),
            pads=tuple(a["pads"]),
            dilations=tuple(a["dilations"]),
            ceil_mode=int(a["ceil_mode"]),
            count_include_pad=int(a["count_include_pad"]),
        )
    return Lowered("pool2d", problem, (node.inputs[0],))


def _concat(graph: Graph, node: Node) -> Lowered:
    problem = ConcatProblem(tuple(_shape(graph, i) for i in node.inputs), int(node.attrs["axis"]))
    return Lowered("concat", problem, tuple(node.inputs))


def _softmax(graph: Graph, node: Node) -> Lowered:
    return Lowered("softmax", SoftmaxProblem(_shape(graph, node.inputs[0]), int(node.attrs["axis"])), (node.inputs[0],))


def _transpose(graph: Graph, node: Node) -> Lowered:
    problem = TransposeProblem(_shape(graph, node.inputs[0]), tuple(node.attrs["perm"]))
    return Lowered("transpose", problem, (node.inputs[0],))


def _pad(graph: Graph, node: Node) -> Lowered:
    a = node.attrs
    problem = PadProblem(
        _shape(graph, node.inputs[0]), tuple(a["pads"]), str(a["mode"]), float(a.get("constant_value", 0.0))
    )
    return Lowered("pad", problem, (node.inputs[0],))


def _resize(graph: Graph, node: Node) -> Lowered:
    n, c, h, w = _shape(graph, node.inputs[0])
    return Lowered("resize", ResizeProblem(n=n, c=c, h=h, w=w, **node.attrs), (node.inputs[0],))


LOWERINGS = {
    "conv": _conv,
    "gemm": _gemm,
    "elementwise": _elementwise,
    "pool": _pool,
    "concat": _concat,
    "softmax": _softmax,
    "transpose": _transpose,
    "pad": _pad,
    "resize": _resize,
}
"""IR op -> its lowering (one row per IR op that runs a kernel)."""


def lower_node(graph: Graph, node: Node) -> Lowered | None:
    """Return the kernel call of ``node``, or None for a view op (no kernel).

    Raises:
        GraphError: Naming the node when it has no kernel (``batchnorm`` left after the passes) or its
            attributes do not make a valid problem.
    """
    if node.op in VIEW_OPS:
        return None
    lowering = LOWERINGS.get(node.op)
    if lowering is None:
        raise GraphError(f"{node.origin or node.name}: IR op {node.op!r} has no kernel (the graph passes remove it)")
    try:
        return lowering(graph, node)
    except (ShapeError, KeyError, TypeError, ValueError) as exc:
        raise GraphError(f"{node.origin or node.name}: cannot run as a kernel: {exc}") from exc


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
