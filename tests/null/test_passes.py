"""Graph passes on small hand-built IR graphs: structure after each pass and numerics before vs after."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import numpy as np
import pytest

from kernelforge.graph.ir import Graph, GraphError, Node, Value
from kernelforge.graph.memory import MemoryPlan
from kernelforge.graph.passes import (
    MAX_FUSED_INPUTS,
    fold_batchnorm,
    fold_constants,
    fuse_elementwise,
    fuse_epilogues,
    optimize,
    plan_memory,
    program_of,
)
from kernelforge.graph.reference import run_graph
from kernelforge.ops import _expr
from kernelforge.ops._epilogue import Activation


class Builder:
    """Builds IR graphs value by value, with random float32 constants from a seeded rng."""

    def __init__(self, seed: int = 0) -> None:
        self.g = Graph({}, [], [], [])
        self.rng = np.random.default_rng(seed)
        self.feeds: dict[str, np.ndarray] = {}

    def _value(self, base: str, shape: Sequence[int], data: np.ndarray | None = None) -> str:
        name = self.g.fresh_name(base)
        arr = None if data is None else np.asarray(data, np.float32).reshape(tuple(shape))
        self.g.values[name] = Value(name, tuple(shape), arr)
        return name

    def input(self, shape: Sequence[int], name: str = "x") -> str:
        name = self._value(name, shape)
        self.g.inputs.append(name)
        self.feeds[name] = self.rng.standard_normal(tuple(shape)).astype(np.float32)
        return name

    def const(self, shape: Sequence[int], lo: float = -1.0, hi: float = 1.0, name: str = "c") -> str:
        return self._value(name, shape, self.rng.uniform(lo, hi, tuple(shape)))

    def node(self, op: str, inputs: list[str], shape: Sequence[int], attrs: dict | None = None) -> str:
        out = self._value(f"{op}_out", shape)
        self.g.nodes.append(Node(self.g.fresh_name(op), op, inputs, [out], attrs or {}, f"{op} node"))
        return out

    def shape(self, name: str) -> tuple[int, ...]:
        return self.g.value(name).shape

    def conv(
        self, x: str, m: int, k: int = 1, group: int = 1, pad: int = 0, bias: bool = False, **attrs: object
    ) -> str:
        n, c, h, w = self.shape(x)
        weight = self.const((m, c // group, k, k), name="w")
        inputs = [x, weight] + ([self.const((m,), name="b")] if bias else [])
        a = {"strides": (1, 1), "pads": (pad,) * 4, "dilations": (1, 1), "group": group, "activation": Activation()}
        a.update(attrs)
        return self.node("conv2d", inputs, (n, m, h + 2 * pad - k + 1, w + 2 * pad - k + 1), a)

    def gemm(self, a: str, n: int, trans_b: bool = False, bias: bool = False) -> str:
        *lead, k = self.shape(a)
        b = self.const((n, k) if trans_b else (k, n), name="wb")
        inputs = [a, b] + ([self.const((n,), name="bias")] if bias else [])
        return self.node("gemm", inputs, (*lead, n), {"trans_b": trans_b, "activation": Activation()})

    def bn(self, x: str, params: Sequence[str] | None = None, eps: float = 1e-3) -> str:
        c = self.shape(x)[1]
        if params is None:
            params = [
                self.const((c,), 0.5, 1.5, "scale"),
                self.const((c,), name="shift"),
                self.const((c,), name="mean"),
                self.const((c,), 0.5, 2.0, "var"),
            ]
        return self.node("batchnorm", [x, *params], self.shape(x), {"epsilon": eps})

    def ew(self, expr: str, *inputs: str) -> str:
        shape = _expr.broadcast_shape({f"v{i}": self.shape(n) for i, n in enumerate(inputs)})
        return self.node("elementwise", list(inputs), shape, {"expr": expr})

    def reshape(self, x: str, shape: Sequence[int]) -> str:
        return self.node("reshape", [x], shape)

    def output(self, *names: str) -> Graph:
        self.g.outputs.extend(names)
        self.g.validate()
        return self.g


def check_pass(b: Builder, step: Callable[[Graph], Graph], rtol: float = 1e-5) -> Graph:
    """Run ``step`` on the builder's graph; assert it stays valid and computes the same outputs."""
    before = run_graph(copy.deepcopy(b.g), b.feeds)
    graph = step(b.g)
    graph.validate()
    after = run_graph(graph, b.feeds)
    assert list(after) == list(before)
    for name in before:
        np.testing.assert_allclose(after[name], before[name], rtol=rtol, atol=1e-5)
    return graph


def ops(graph: Graph) -> list[str]:
    return [node.op for node in graph.nodes]


# --------------------------------------------------------------------------------------------- fold_constants


def test_fold_constants_folds_const_subgraphs_and_views() -> None:
    b = Builder(1)
    x = b.input((2, 3, 4))
    scale = b.ew("v0*v1 + 1.0", b.const((12,)), b.const((12,)))
    scale3 = b.reshape(scale, (3, 4))
    y = b.ew("v0 * v1", x, scale3)
    b.output(y)
    graph = check_pass(b, fold_constants)
    assert ops(graph) == ["elementwise"]
    folded = graph.value(graph.nodes[0].inputs[1])
    assert folded.is_const and folded.shape == (3, 4)


def test_fold_constants_leaves_dynamic_nodes() -> None:
    b = Builder(2)
    x = b.input((4,))
    b.output(b.ew("relu(v0)", x))
    graph = check_pass(b, fold_constants)
    assert ops(graph) == ["elementwise"]


# --------------------------------------------------------------------------------------------- fold_batchnorm


@pytest.mark.parametrize(("group", "bias"), [(1, False), (1, True), (4, True)])
def test_fold_batchnorm_into_conv(group: int, bias: bool) -> None:
    b = Builder(3)
    x = b.input((1, 4, 5, 5))
    y = b.bn(b.conv(x, 4, 3, group=group, pad=1, bias=bias))
    b.output(y)
    graph = check_pass(b, fold_batchnorm)
    assert ops(graph) == ["conv2d"]
    conv = graph.nodes[0]
    assert conv.output == y and graph.value(conv.inputs[2]).shape == (4,)
    assert all(graph.value(n).is_const for n in conv.inputs[1:3])


@pytest.mark.parametrize("trans_b", [False, True])
def test_fold_batchnorm_into_gemm(trans_b: bool) -> None:
    b = Builder(4)
    a = b.input((3, 5))
    b.output(b.bn(b.gemm(a, 6, trans_b=trans_b, bias=True)))
    graph = check_pass(b, fold_batchnorm)
    assert ops(graph) == ["gemm"]


def test_fold_batchnorm_blocked_becomes_affine_elementwise() -> None:
    b = Builder(5)
    x = b.input((1, 3, 4, 4))
    conv = b.conv(x, 3, activation=Activation("relu"))  # an activation blocks folding
    shared = b.conv(x, 3)
    side = b.ew("v0 + 1.0", shared)  # a second consumer blocks folding
    b.output(b.bn(conv), b.bn(shared), side)
    graph = check_pass(b, fold_batchnorm)
    assert ops(graph) == ["conv2d", "conv2d", "elementwise", "elementwise", "elementwise"]
    for node in graph.nodes[3:]:
        assert program_of(node) == _expr.parse("v0*v1 + v2")[0]
        assert [graph.value(n).shape for n in node.inputs[1:]] == [(3, 1, 1), (3, 1, 1)]


@pytest.mark.parametrize("shape", [(2, 5), (2, 5, 3), (1, 5, 2, 2, 2)])
def test_batchnorm_without_producer_broadcasts_channel_axis(shape: tuple[int, ...]) -> None:
    b = Builder(6)
    b.output(b.bn(b.input(shape)))
    graph = check_pass(b, fold_batchnorm)
    assert ops(graph) == ["elementwise"]
    assert graph.value(graph.nodes[0].inputs[1]).shape == (5,) + (1,) * (len(shape) - 2)


def test_batchnorm_with_dynamic_params_becomes_elementwise() -> None:
    b = Builder(7)
    x = b.input((2, 3, 4, 4))
    scale = b.input((3,), "scale")
    b.feeds[scale] = np.abs(b.feeds[scale]) + 0.5
    params = [scale, b.const((3,)), b.const((3,)), b.const((3,), 0.5, 1.0)]
    b.output(b.bn(b.conv(x, 3), params))
    graph = check_pass(b, fold_batchnorm)
    assert ops(graph) == ["conv2d", "reshape", "elementwise"]


# --------------------------------------------------------------------------------------------- fuse_epilogues


def test_fuse_bias_into_conv_and_gemm() -> None:
    b = Builder(8)
    x = b.input((1, 3, 4, 4))
    conv = b.ew("v1 + v0", b.const((1, 5, 1, 1)), b.conv(x, 5))
    conv = b.ew("v0 - v1", conv, b.const((5, 1, 1)))  # adds to the bias the first add created
    a = b.input((2, 4), "a")
    gemm = b.ew("v0 + v1", b.gemm(a, 6, bias=True), b.const((6,)))
    b.output(conv, gemm)
    graph = check_pass(b, fuse_epilogues)
    assert ops(graph) == ["conv2d", "gemm"]
    assert [len(n.inputs) for n in graph.nodes] == [3, 3]


def test_fuse_residual_then_activation() -> None:
    b = Builder(9)
    x = b.input((1, 4, 5, 5))
    y = b.ew("relu(v0)", b.ew("v0 + v1", b.conv(x, 4, 3, pad=1, bias=True), x))
    b.output(y)
    graph = check_pass(b, fuse_epilogues)
    assert ops(graph) == ["conv2d"]
    conv = graph.nodes[0]
    assert conv.inputs[3] == x and conv.attrs["activation"] == Activation("relu") and conv.output == y


def test_residual_after_activation_is_not_fused() -> None:
    b = Builder(10)
    x = b.input((1, 4, 5, 5))
    b.output(b.ew("v0 + v1", b.ew("relu(v0)", b.conv(x, 4, 3, pad=1)), x))
    graph = check_pass(b, fuse_epilogues)
    assert ops(graph) == ["conv2d", "elementwise"]
    assert graph.nodes[0].attrs["activation"].kind == "relu" and len(graph.nodes[0].inputs) == 2


def test_residual_must_be_computed_before_the_conv() -> None:
    b = Builder(11)
    x = b.input((1, 4, 5, 5))
    first, second = b.conv(x, 4), b.conv(x, 4)
    b.output(b.ew("v0 + v1", first, second))
    graph = check_pass(b, fuse_epilogues)
    # `second` is computed after `first`: only the second conv may take the other as its residual
    assert ops(graph) == ["conv2d", "conv2d"]
    assert len(graph.nodes[0].inputs) == 2 and graph.nodes[1].inputs[3] == first


def test_gemm_takes_a_residual_and_shared_values_do_not_fuse() -> None:
    b = Builder(12)
    a = b.input((3, 4), "a")
    r = b.input((3, 5), "r")
    gemm = b.gemm(a, 5)
    shared = b.conv(b.input((1, 2, 3, 3)), 2)
    b.output(b.ew("v0 + v1", gemm, r), b.ew("relu(v0)", shared), b.ew("sigmoid(v0)", shared))
    graph = check_pass(b, fuse_epilogues)
    assert ops(graph) == ["gemm", "conv2d", "elementwise", "elementwise"]
    assert graph.nodes[0].inputs[3] == r


def test_a_skip_connection_after_a_3d_matmul_view_becomes_the_gemm_residual() -> None:
    # nn.Linear on [1, S, H] runs as a 2-D gemm between views; the bias and the residual add that follow the
    # view move in front of it (the residual through a view of its own) and join the epilogue
    from kernelforge.graph.passes import optimize

    b = Builder(12)
    x = b.input((1, 6, 4), "x")
    r = b.input((1, 6, 5), "r")
    flat = b.node("reshape", [x], (6, 4))
    out = b.node("reshape", [b.gemm(flat, 5)], (1, 6, 5))
    b.output(b.ew("v0 + v1", b.ew("v0 + v1", out, b.const((5,))), r))
    graph = check_pass(b, optimize)
    gemm = next(n for n in graph.nodes if n.op == "gemm")
    assert ops(graph).count("elementwise") == 0 and gemm.inputs[2] and gemm.inputs[3]


def test_graph_output_is_not_fused() -> None:
    b = Builder(13)
    conv = b.conv(b.input((1, 2, 3, 3)), 2)
    b.output(conv, b.ew("relu(v0)", conv))
    graph = check_pass(b, fuse_epilogues)
    assert ops(graph) == ["conv2d", "elementwise"]


@pytest.mark.parametrize(
    ("expr", "activation"),
    [
        ("relu(v0)", Activation("relu")),
        ("clip(v0, 0, 6)", Activation("relu6")),
        ("clip(v0, -0.5, 0.25)", Activation("clip", -0.5, 0.25)),
        ("sigmoid(v0)", Activation("sigmoid")),
        ("tanh(v0)", Activation("tanh")),
        ("gelu(v0)", Activation("gelu")),
        ("hardswish(v0)", Activation("hardswish")),
        ("leaky_relu(v0, 0.2)", Activation("leaky_relu", 0.2)),
        ("v0 * sigmoid(v0)", Activation("silu")),  # SiLU as exporters write it, and as Swish(alpha=1)
        ("sigmoid(v0) * v0", Activation("silu")),
        ("v0 * sigmoid(1 * v0)", Activation("silu")),
    ],
)
def test_fuse_activations(expr: str, activation: Activation) -> None:
    b = Builder(14)
    x = b.input((1, 3, 4, 4))
    b.output(b.ew(expr, b.conv(x, 4, bias=True)), b.ew(expr, b.gemm(b.input((2, 3), "a"), 4)))
    graph = check_pass(b, fuse_epilogues)
    assert ops(graph) == ["conv2d", "gemm"]
    assert all(node.attrs["activation"] == activation for node in graph.nodes)


def test_non_epilogue_elementwise_is_left_alone() -> None:
    b = Builder(15)
    x = b.input((1, 3, 4, 4))
    b.output(b.ew("exp(v0)", b.ew("v0 * v1", b.conv(x, 3), b.const((3, 1, 1)))))
    graph = check_pass(b, fuse_epilogues)
    assert ops(graph) == ["conv2d", "elementwise", "elementwise"]


# ------------------------------------------------------------------------------------------- fuse_elementwise


def test_fuse_elementwise_chain_and_tree_dedup() -> None:
    b = Builder(16)
    x = b.input((2, 3, 4))
    y = b.input((3, 1), "y")
    left = b.ew("v0 * v1", b.ew("relu(v0)", x), b.const((4,)))
    right = b.ew("tanh(v0) + v1", y, x)  # x again: the fused node reads it once
    b.output(b.ew("v0 - v1", left, right))
    graph = check_pass(b, fuse_elementwise)
    assert ops(graph) == ["elementwise"]
    node = graph.nodes[0]
    assert len(node.inputs) == 3 and {x, y} < set(node.inputs)
    assert graph.value(node.output).shape == (2, 3, 4)


def test_fuse_elementwise_respects_consumers_and_outputs() -> None:
    b = Builder(17)
    x = b.input((5,))
    shared = b.ew("relu(v0)", x)
    out_mid = b.ew("v0 * 2.0", x)
    b.output(b.ew("v0 + 1.0", shared), b.ew("v0 - 1.0", shared), out_mid, b.ew("exp(v0)", out_mid))
    graph = check_pass(b, fuse_elementwise)
    assert len(graph.nodes) == 5


def test_fuse_elementwise_stops_at_expression_limits() -> None:
    b = Builder(18)
    value = b.input((8,))
    for _ in range(80):
        value = b.ew("sigmoid(v0) * 0.9 + 0.05", value)
    b.output(value)
    graph = check_pass(b, fuse_elementwise)
    assert 1 < len(graph.nodes) < 80
    for node in graph.nodes:
        _expr.parse(node.attrs["expr"])


def test_fuse_elementwise_caps_inputs() -> None:
    b = Builder(19)
    value = b.input((6,))
    for _ in range(12):
        value = b.ew("v0 + v1", value, b.const((6,)))
    b.output(value)
    graph = check_pass(b, fuse_elementwise)
    assert 1 < len(graph.nodes) < 12
    assert all(len(node.inputs) <= MAX_FUSED_INPUTS for node in graph.nodes)


# ------------------------------------------------------------------------------------------------- optimize


def test_inverted_residual_block_is_three_convs() -> None:
    b = Builder(20)
    x = b.input((1, 8, 6, 6))
    h = b.ew("clip(v0, 0, 6)", b.bn(b.conv(x, 16)))
    h = b.ew("clip(v0, 0.0, 6.0)", b.bn(b.conv(h, 16, 3, group=16, pad=1)))
    y = b.ew("v0 + v1", x, b.bn(b.conv(h, 8)))
    b.output(y)
    graph = check_pass(b, optimize, rtol=1e-4)
    assert ops(graph) == ["conv2d", "conv2d", "conv2d"]
    first, dw, project = graph.nodes
    assert first.attrs["activation"] == dw.attrs["activation"] == Activation("relu6")
    assert project.inputs[3] == x and project.attrs["activation"].kind == "none" and project.output == y
    assert all(graph.value(n.inputs[2]).is_const for n in graph.nodes)


# --------------------------------------------------------------------------------------------------- memory


def _chain(n: int, size: int = 16) -> Graph:
    b = Builder(21)
    value = b.input((size,))
    for _ in range(n):
        value = b.ew("relu(v0)", value)
    return b.output(value)


def test_memory_chain_ping_pongs_two_buffers() -> None:
    graph = _chain(10)
    plan = plan_memory(graph)
    plan.check(graph)
    # the input's buffer joins the ping-pong once its reader ran, and the output ends in one of the two
    assert len(plan.buffer_bytes) == 2
    assert plan.naive_bytes == 11 * 64 and plan.planned_bytes <= plan.naive_bytes // 2


def test_memory_views_share_and_extend_lifetime() -> None:
    b = Builder(22)
    x = b.input((4, 4))
    a = b.ew("relu(v0)", x)
    view = b.reshape(a, (16,))
    c = b.ew("exp(v0)", x)  # a is dead here, but its view is not
    d = b.ew("v0 + v1", view, b.reshape(c, (16,)))
    graph = b.output(b.ew("v0 * 2.0", d))
    plan = plan_memory(graph)
    plan.check(graph)
    assert plan.buffer_of[view] == plan.buffer_of[a] != plan.buffer_of[c]
    assert plan.naive_bytes == 4 * 16 * 5  # x, a (+view), c (+view), d, output


def test_memory_check_rejects_overlap() -> None:
    graph = _chain(4)
    plan = plan_memory(graph)
    squashed = MemoryPlan({k: 0 for k in plan.buffer_of}, (10**6,), 10**6, plan.naive_bytes)
    with pytest.raises(GraphError, match="buffer 0"):
        squashed.check(graph)


def _random_dag(rng: np.random.Generator) -> Graph:
    b = Builder(int(rng.integers(1 << 30)))
    values = [b.input((int(rng.integers(1, 9)), 4), f"in{i}") for i in range(int(rng.integers(1, 3)))]
    for _ in range(int(rng.integers(3, 25))):
        pick = values[int(rng.integers(len(values)))]
        if rng.random() < 0.2:
            values.append(b.reshape(pick, (b.g.value(pick).size,)))
        elif rng.random() < 0.5:
            values.append(b.ew("relu(v0)", pick))
        else:
            other = values[int(rng.integers(len(values)))]
            if b.shape(other) != b.shape(pick):
                other = b.const(b.shape(pick))
            values.append(b.ew("v0 + v1", pick, other))
    outputs = sorted({values[-1], *(values[int(i)] for i in rng.integers(0, len(values), 2))} - set(b.g.inputs))
    return b.output(*(outputs or [b.ew("relu(v0)", values[-1])]))


def _lifetimes(graph: Graph, plan: MemoryPlan) -> dict[str, tuple[int, int]]:
    """Independent liveness: a value's buffer is busy from its first writer to the last reader of the buffer."""
    forever = len(graph.nodes)
    writes = {name: -1 for name in graph.inputs}
    writes.update({node.output: i for i, node in enumerate(graph.nodes)})
    reads = {name: i for i, node in enumerate(graph.nodes) for name in node.inputs}
    result: dict[str, tuple[int, int]] = {}
    views = {node.output: node.inputs[0] for node in graph.nodes if node.op == "reshape"}
    for name in plan.buffer_of:
        root = _root(views, name)
        family = [n for n in plan.buffer_of if _root(views, n) == root]
        # inputs are written before the first kernel, outputs read after the last one
        start = min(writes[n] for n in family)
        last_read = max(max(reads.get(n, writes[n]) for n in family), start)
        end = forever if any(n in graph.outputs for n in family) else last_read
        result[name] = (start, end)
    return result


def _root(views: dict[str, str], name: str) -> str:
    while name in views:
        name = views[name]
    return name


def test_memory_random_dags_never_share_live_buffers() -> None:
    rng = np.random.default_rng(1234)
    for _ in range(60):
        graph = _random_dag(rng)
        plan = plan_memory(graph)
        plan.check(graph)
        live = _lifetimes(graph, plan)
        planned = [n for n, v in graph.values.items() if not v.is_const]
        assert sorted(plan.buffer_of) == sorted(planned)
        views = {node.output: node.inputs[0] for node in graph.nodes if node.op == "reshape"}
        for a in planned:
            assert plan.buffer_bytes[plan.buffer_of[a]] >= graph.value(a).nbytes
            for other in planned:
                if a < other and plan.buffer_of[a] == plan.buffer_of[other] and _root(views, a) != _root(views, other):
                    (s1, e1), (s2, e2) = live[a], live[other]
                    assert e1 < s2 or e2 < s1, (a, other)
        assert plan.planned_bytes == sum(plan.buffer_bytes) <= plan.naive_bytes
