"""Masks, comparisons, rounding and casts on runtime tensors, and the constant folding of mask arithmetic.

Each model is imported, run in the IR's numpy reference and compared with ONNX Runtime (``check_numerics``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from kernelforge.graph.ir import Graph, GraphError
from kernelforge.graph.onnx_import import UnsupportedModelError, import_model
from kernelforge.graph.passes import optimize
from tests.null.test_onnx_import import check_numerics, make_model, ops


def kernels(graph: Graph) -> list[str]:
    """The ops left after the graph passes, less reshapes (views, not kernels)."""
    return [op for op in ops(optimize(graph)) if op != "reshape"]


UNARY = [
    ("Erf", 13, "erf(v0)"),
    ("Floor", 13, "floor(v0)"),
    ("Ceil", 13, "ceil(v0)"),
    ("Round", 11, "round(v0)"),
    ("Sign", 13, "sign(v0)"),
    ("Log", 13, "log(v0)"),
    ("Sin", 7, "sin(v0)"),
    ("Cos", 7, "cos(v0)"),
]


@pytest.mark.parametrize(("op", "since", "expr"), UNARY, ids=[u[0] for u in UNARY])
def test_unary(op: str, since: int, expr: str) -> None:
    model = make_model([helper.make_node(op, ["x"], ["y"], name="n")], {"x": [2, 3, 4]}, ["y"], opset=max(since, 13))
    # scaled so that Floor/Ceil/Round see many integers apart
    graph = check_numerics(model, low=0.1 if op == "Log" else -2.0)
    assert ops(graph) == ["elementwise"] and graph.nodes[0].attrs["expr"] == expr


def _to_float(name: str, out: str) -> onnx.NodeProto:
    return helper.make_node("Cast", [name], [out], to=TensorProto.FLOAT)


@pytest.mark.parametrize("op", ["Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual"])
def test_comparisons_as_floats(op: str) -> None:
    # inputs are floored, so that equal pairs occur
    nodes = [
        helper.make_node("Floor", ["x"], ["fx"]),
        helper.make_node("Floor", ["z"], ["fz"]),
        helper.make_node(op, ["fx", "fz"], ["m"]),
        _to_float("m", "y"),
    ]
    model = make_model(nodes, {"x": [2, 3, 4], "z": [3, 1]}, ["y"], opset=16)
    graph = check_numerics(model)
    assert kernels(graph) == ["elementwise"]


def test_logic_and_where_chain() -> None:
    nodes = [
        helper.make_node("Less", ["x", "half"], ["a"]),
        helper.make_node("Greater", ["z", "minus_half"], ["b"]),
        helper.make_node("And", ["a", "b"], ["ab"]),
        helper.make_node("Or", ["a", "b"], ["aob"]),
        helper.make_node("Xor", ["ab", "aob"], ["x1"]),
        helper.make_node("Not", ["x1"], ["keep"]),
        helper.make_node("Where", ["keep", "x", "z"], ["w"]),
        helper.make_node("Where", ["b", "w", "neg_inf"], ["y"]),
    ]
    inits = {
        "half": np.array(0.5, np.float32),
        "minus_half": np.array(-0.5, np.float32),
        "neg_inf": np.array(-np.inf, np.float32),
    }
    model = make_model(nodes, {"x": [2, 3, 4], "z": [3, 4]}, ["y"], inits, opset=16)
    graph = check_numerics(model)
    # the whole chain is one fused elementwise kernel
    assert kernels(graph) == ["elementwise"]


def test_casts_to_integer_truncate_and_mod() -> None:
    nodes = [
        helper.make_node("Mul", ["x", "five"], ["x5"]),
        helper.make_node("Cast", ["x5"], ["i"], to=TensorProto.INT64),
        helper.make_node("Mod", ["i", "three"], ["m"]),  # floor modulo: the divisor's sign
        helper.make_node("Cast", ["x5"], ["j"], to=TensorProto.INT32),
        helper.make_node("Cast", ["j"], ["jf"], to=TensorProto.FLOAT),
        _to_float("m", "mf"),
        helper.make_node("Mod", ["x5", "z"], ["fm"], fmod=1),
        helper.make_node("Cast", ["x"], ["flag"], to=TensorProto.BOOL),
        _to_float("flag", "ff"),
        helper.make_node("Sum", ["mf", "jf", "fm", "ff"], ["y"]),
    ]
    inits = {"five": np.array(5.0, np.float32), "three": np.array(-3, np.int64)}
    model = make_model(nodes, {"x": [4, 5], "z": [5]}, ["y"], inits, opset=13)
    feeds = {
        "x": np.random.default_rng(3).uniform(-2, 2, (4, 5)).astype(np.float32),
        "z": np.array([0.7, -1.3, 2.0, 0.9, -0.4], np.float32),
    }
    feeds["x"][0, :3] = 0.0  # Cast to bool sees zeros
    graph = check_numerics(model, feeds)
    assert kernels(graph) == ["elementwise"]


@pytest.mark.parametrize(
    ("x_shape", "target"),
    [([3, 1], [2, 3, 4]), ([3, 1], [1, 4]), ([1], [5]), ([2, 1, 4], [3, 1])],
)
def test_expand_of_a_runtime_tensor(x_shape: list[int], target: list[int]) -> None:
    nodes = [helper.make_node("Expand", ["x", "shape"], ["y"])]
    model = make_model(nodes, {"x": x_shape}, ["y"], {"shape": np.array(target, np.int64)})
    graph = check_numerics(model)
    assert ops(graph) == ["elementwise"]
    assert graph.values["y"].shape == tuple(np.broadcast_shapes(tuple(x_shape), tuple(target)))


def test_expand_to_a_runtime_shape_is_unsupported() -> None:
    nodes = [helper.make_node("Expand", ["x", "shape"], ["y"], name="ex")]
    model = make_model(nodes, {"x": [3], "shape": [1]}, ["y"])
    with pytest.raises(UnsupportedModelError, match=r"Expand node 'ex'.*input 1 \('shape'\) needs a runtime value"):
        import_model(model)


def test_a_causal_mask_built_from_shapes_folds_away() -> None:
    # what a legacy GPT-2 export computes from the sequence length: Range, Unsqueeze, comparison, Where with -inf
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Gather", ["shape", "one"], ["seq"], axis=0),
        helper.make_node("Range", ["zero", "seq", "one_s"], ["pos"]),
        helper.make_node("Unsqueeze", ["pos", "axis0"], ["row"]),
        helper.make_node("Unsqueeze", ["pos", "axis1"], ["col"]),
        helper.make_node("LessOrEqual", ["row", "col"], ["allowed"]),
        helper.make_node("Where", ["allowed", "zero_f", "neg_inf"], ["bias"]),
        helper.make_node("Expand", ["bias", "full"], ["bias_full"]),
        helper.make_node("Trilu", ["ones"], ["lower"], upper=0),
        helper.make_node("Mul", ["lower", "bias_full"], ["masked_bias"]),
        helper.make_node("Tile", ["ones_row", "reps"], ["tiled"]),
        helper.make_node("Size", ["tiled"], ["n"]),
        helper.make_node("Cast", ["n"], ["nf"], to=TensorProto.FLOAT),
        helper.make_node("Equal", ["seq", "seq"], ["same"]),
        helper.make_node("Cast", ["same"], ["samef"], to=TensorProto.FLOAT),
        helper.make_node("Mod", ["seq", "two"], ["odd"]),
        helper.make_node("Cast", ["odd"], ["oddf"], to=TensorProto.FLOAT),
        helper.make_node("Add", ["x", "masked_bias"], ["a"]),
        helper.make_node("Sum", ["a", "nf", "samef", "oddf"], ["y"]),
    ]
    inits: dict[str, Any] = {
        "one": np.array(1, np.int64),
        "zero": np.array(0, np.int64),
        "one_s": np.array(1, np.int64),
        "two": np.array(2, np.int64),
        "axis0": np.array([0], np.int64),
        "axis1": np.array([1], np.int64),
        "zero_f": np.array(0.0, np.float32),
        "neg_inf": np.array(-1e9, np.float32),
        "full": np.array([2, 5, 5], np.int64),
        "ones": np.ones((5, 5), np.float32),
        "ones_row": np.ones((1, 3), np.float32),
        "reps": np.array([2, 2], np.int64),
    }
    model = make_model(nodes, {"x": [2, 5, 5]}, ["y"], inits, opset=16)
    graph = check_numerics(model)
    # everything but the two runtime adds folded at import, and those fuse into one kernel
    assert kernels(graph) == ["elementwise"]


def test_folded_sizes_are_checked() -> None:
    nodes = [
        helper.make_node("Expand", ["one", "huge"], ["big"], name="grow"),
        helper.make_node("Add", ["x", "big"], ["y"]),
    ]
    inits = {"one": np.ones(1, np.float32), "huge": np.array([1 << 20, 1 << 20], np.int64)}
    model = make_model(nodes, {"x": [1]}, ["y"], inits)
    with pytest.raises(GraphError, match=r"Expand node 'grow'"):
        import_model(model)


@pytest.mark.parametrize(("half", "fused"), [(0.5, True), (0.49, False)])
def test_exact_gelu_written_out_becomes_the_gemm_epilogue(half: float, fused: bool) -> None:
    # how exporters before opset 20 write torch.nn.GELU: x * 0.5 * (1 + erf(x / sqrt(2)))
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"]),
        helper.make_node("Div", ["h", "sqrt2"], ["s"]),
        helper.make_node("Erf", ["s"], ["e"]),
        helper.make_node("Add", ["e", "one"], ["e1"]),
        helper.make_node("Mul", ["h", "e1"], ["m"]),
        helper.make_node("Mul", ["m", "half"], ["y"]),
    ]
    inits = {
        "w": np.random.default_rng(4).standard_normal((8, 6)).astype(np.float32),
        "sqrt2": np.array(1.4142135381698608, np.float32),
        "one": np.array(1.0, np.float32),
        "half": np.array(half, np.float32),
    }
    graph = check_numerics(make_model(nodes, {"x": [3, 8]}, ["y"], inits, opset=17))
    optimized = optimize(graph)
    if fused:  # one kernel: the GEMM with a GELU epilogue
        assert kernels(optimized) == ["gemm"] and optimized.nodes[0].attrs["activation"].kind == "gelu"
    else:  # not GELU: the chain stays one elementwise kernel after the GEMM
        assert kernels(optimized) == ["gemm", "elementwise"]
