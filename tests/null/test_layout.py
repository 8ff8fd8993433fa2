"""Layout assignment: regions take their majority layout, conversions only at borders, numerics unchanged."""

from __future__ import annotations

import numpy as np
import pytest

from kernelforge.graph.ir import Graph, Node, Value
from kernelforge.graph.layout import NHWC, assign_layouts, is_free, physical_shape
from kernelforge.graph.lower import lower_node
from kernelforge.graph.memory import plan_memory
from kernelforge.graph.reference import run_graph
from kernelforge.ops import get_op
from kernelforge.ops._epilogue import Activation
from kernelforge.ops.spec import Limits, Params


def _conv(graph: Graph, name: str, x: str, c: int, m: int, size: int, rng: np.random.Generator) -> str:
    w = graph.add_const(f"{name}.w", rng.standard_normal((m, c, 3, 3)).astype(np.float32) * 0.2)
    out = f"{name}.y"
    graph.values[out] = Value(out, (1, m, size, size))
    attrs = {"strides": (1, 1), "pads": (1, 1, 1, 1), "dilations": (1, 1), "group": 1, "activation": Activation()}
    graph.nodes.append(Node(name, "conv2d", [x, w], [out], attrs, f"Conv node {name!r}"))
    return out


def _chain(rng: np.random.Generator) -> Graph:
    """x -> conv a -> conv b -> relu(elementwise) -> pool (global) -> reshape -> gemm."""
    g = Graph({"x": Value("x", (1, 4, 6, 6))}, [], ["x"], ["out"])
    a = _conv(g, "a", "x", 4, 8, 6, rng)
    b = _conv(g, "b", a, 8, 8, 6, rng)
    g.values["r"] = Value("r", (1, 8, 6, 6))
    g.nodes.append(Node("relu", "elementwise", [b, a], ["r"], {"expr": "relu(v0) + v1"}))
    g.values["p"] = Value("p", (1, 8, 1, 1))
    pool = {"mode": "average", "global_": True}
    g.nodes.append(Node("gap", "pool2d", ["r"], ["p"], pool))
    g.values["f"] = Value("f", (1, 8))
    g.nodes.append(Node("flat", "reshape", ["p"], ["f"]))
    wfc = g.add_const("fc.w", rng.standard_normal((8, 3)).astype(np.float32))
    g.values["out"] = Value("out", (1, 3))
    g.nodes.append(Node("fc", "gemm", ["f", wfc], ["out"], {"trans_b": False, "activation": Activation()}))
    g.validate()
    return g


def _assign(graph: Graph, layout: int) -> tuple[dict[str, Params], object]:
    calls = {n.name: lower_node(graph, n) for n in graph.nodes}
    params: dict[str, Params] = {}
    for name, call in calls.items():
        if call is not None and call.op in ("conv2d", "pool2d"):
            spec = get_op(call.op)
            params[name] = {**spec.default_params(call.problem, Limits(), "wgsl"), "layout": layout}

    def relayout(node: Node, p: Params, want: int) -> Params:
        return {**p, "layout": want}

    plan = assign_layouts(graph, calls, params, relayout)
    return params, plan


@pytest.mark.parametrize("layout", [0, 1])
def test_one_region_takes_the_layout_of_its_kernels(layout: int) -> None:
    rng = np.random.default_rng(0)
    graph = _chain(rng)
    feeds = {"x": rng.standard_normal((1, 4, 6, 6)).astype(np.float32)}
    before = run_graph(graph, feeds)["out"]
    params, plan = _assign(graph, layout)
    graph.validate()
    assert len(plan.layouts) == 1  # type: ignore[attr-defined]
    assert all(p["layout"] == layout for p in params.values())
    want = NHWC if layout else None
    for name in ("a.y", "b.y", "r", "p"):
        assert graph.value(name).layout == want
    # NHWC: the model input is converted once (a kernel); the pooled [1, 8, 1, 1] leaves by a free view
    assert plan.conversions == layout  # type: ignore[attr-defined]
    ops = [n.op for n in graph.nodes]
    assert ops.count("transpose") == layout
    np.testing.assert_allclose(run_graph(graph, feeds)["out"], before, rtol=1e-6)
    plan_memory(graph).check(graph)


def test_minority_kernels_switch_to_the_region_layout() -> None:
    rng = np.random.default_rng(1)
    graph = _chain(rng)
    calls = {n.name: lower_node(graph, n) for n in graph.nodes}
    params: dict[str, Params] = {}
    for name, call in calls.items():
        if call is not None and call.op in ("conv2d", "pool2d"):
            spec = get_op(call.op)
            params[name] = dict(spec.default_params(call.problem, Limits(), "wgsl"))
    params["a"]["layout"] = 0  # conv a (4 -> 8 channels) has half the FLOPs of conv b: outvoted
    params["b"]["layout"] = 1
    params["gap"]["layout"] = 1
    switched: list[str] = []

    def relayout(node: Node, p: Params, want: int) -> Params:
        switched.append(node.name)
        return {**p, "layout": want}

    assign_layouts(graph, calls, params, relayout)
    assert switched == ["a"]
    assert params["a"]["layout"] == 1


def test_a_kernel_that_cannot_switch_keeps_its_layout_behind_conversions() -> None:
    rng = np.random.default_rng(2)
    graph = _chain(rng)
    feeds = {"x": rng.standard_normal((1, 4, 6, 6)).astype(np.float32)}
    before = run_graph(graph, feeds)["out"]
    calls = {n.name: lower_node(graph, n) for n in graph.nodes}
    params = {
        name: dict(get_op(call.op).default_params(call.problem, Limits(), "wgsl"))
        for name, call in calls.items()
        if call is not None and call.op in ("conv2d", "pool2d")
    }
    params["a"]["layout"] = 1
    params["b"]["layout"] = 1
    params["gap"]["layout"] = 0
    assign_layouts(graph, calls, params, lambda node, p, want: p)  # nothing can switch
    graph.validate()
    assert graph.value("b.y").layout == NHWC
    assert graph.value("p").layout is None
    # the pool reads NCHW: the elementwise output it reads was converted (or is NCHW itself)
    gap = next(n for n in graph.nodes if n.name == "gap")
    assert graph.value(gap.inputs[0]).layout is None
    np.testing.assert_allclose(run_graph(graph, feeds)["out"], before, rtol=1e-6)


def test_free_relayouts_move_only_size_one_axes() -> None:
    assert is_free((1, 8, 1, 1), NHWC, None)
    assert is_free((2, 1, 5, 1), NHWC, None)
    assert not is_free((1, 8, 2, 1), NHWC, None)
    assert physical_shape(Value("v", (1, 8, 2, 3), layout=NHWC)) == (1, 2, 3, 8)
