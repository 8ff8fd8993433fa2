"""ONNX import: IR structure per op and opset, numerics against onnxruntime, and every error path."""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from kernelforge.graph.ir import Graph, GraphError
from kernelforge.graph.onnx_import import MAX_OPSET, ModelError, UnsupportedModelError, import_model
from kernelforge.graph.reference import run_graph

LIGHT = sorted(glob.glob(os.path.join(os.path.dirname(onnx.__file__), "backend/test/data/light/*.onnx")))


def make_model(
    nodes: Sequence[onnx.NodeProto],
    inputs: dict[str, Sequence[Any] | None],
    outputs: Sequence[str],
    inits: dict[str, np.ndarray] | None = None,
    opset: int = 13,
    dtype: int = TensorProto.FLOAT,
) -> onnx.ModelProto:
    """Build a model; ``None`` as an input shape declares no shape, outputs have no declared shape."""
    graph = helper.make_graph(
        list(nodes),
        "test",
        [helper.make_tensor_value_info(k, dtype, s) for k, s in inputs.items()],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in (inits or {}).items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8 if opset <= 17 else 10
    return model


def check_numerics(
    model: onnx.ModelProto, feeds: dict[str, np.ndarray] | None = None, seed: int = 0, low: float = -2.0
) -> Graph:
    """Import, run the IR in numpy and compare with onnxruntime (tolerance relative to the largest magnitude)."""
    graph = import_model(model)
    rng = np.random.default_rng(seed)
    feeds = feeds or {n: rng.uniform(low, 2.0, graph.values[n].shape).astype(np.float32) for n in graph.inputs}
    got = run_graph(graph, feeds)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    want = session.run(None, feeds)
    for name, expected in zip(graph.outputs, want, strict=True):
        assert got[name].shape == expected.shape, name
        finite = np.abs(expected[np.isfinite(expected)])  # infinities and NaNs must match exactly
        scale = max(1.0, float(finite.max()) if finite.size else 1.0)
        np.testing.assert_allclose(got[name], expected, rtol=1e-4, atol=1e-4 * scale, err_msg=name)
    return graph


def ops(graph: Graph) -> list[str]:
    return [n.op for n in graph.nodes]


def rand(*shape: int, seed: int = 1, low: float = -1.0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(low, 1.0, shape).astype(np.float32)


# --- elementwise ---------------------------------------------------------------------------------------------

UNARY = [
    ("Relu", {}, 13, "relu(v0)"),
    ("Sigmoid", {}, 13, "sigmoid(v0)"),
    ("Tanh", {}, 13, "tanh(v0)"),
    ("HardSwish", {}, 14, "hardswish(v0)"),
    ("HardSigmoid", {"alpha": 0.3, "beta": 0.4}, 13, "hardsigmoid(v0, "),
    ("LeakyRelu", {"alpha": 0.2}, 9, "leaky_relu(v0, "),
    ("Gelu", {}, 20, "gelu(v0)"),
    ("Exp", {}, 13, "exp(v0)"),
    ("Neg", {}, 13, "neg(v0)"),
    ("Abs", {}, 13, "abs(v0)"),
    ("Sqrt", {}, 13, "sqrt(v0)"),
    ("Reciprocal", {}, 13, "reciprocal(v0)"),
]


@pytest.mark.parametrize(("op", "attrs", "opset", "expr"), UNARY, ids=[u[0] for u in UNARY])
def test_unary_elementwise(op: str, attrs: dict[str, Any], opset: int, expr: str) -> None:
    model = make_model([helper.make_node(op, ["x"], ["y"], name="n", **attrs)], {"x": [2, 3, 4]}, ["y"], opset=opset)
    positive = op in ("Sqrt", "Reciprocal")
    graph = check_numerics(model, low=0.1 if positive else -2.0)
    assert ops(graph) == ["elementwise"]
    assert graph.nodes[0].attrs["expr"].startswith(expr)
    assert graph.nodes[0].origin == f"{op} node 'n' (opset {opset})"


@pytest.mark.parametrize(("op", "symbol"), [("Add", "+"), ("Sub", "-"), ("Mul", "*"), ("Div", "/")])
@pytest.mark.parametrize("opset", [9, 13])
def test_binary_broadcast(op: str, symbol: str, opset: int) -> None:
    model = make_model([helper.make_node(op, ["x", "z"], ["y"])], {"x": [2, 3, 4], "z": [3, 1]}, ["y"], opset=opset)
    graph = check_numerics(model, low=0.5)
    assert ops(graph) == ["elementwise"]
    assert graph.nodes[0].attrs["expr"] == f"v0 {symbol} v1"
    assert graph.values["y"].shape == (2, 3, 4)


def test_scalar_constant_becomes_literal_and_repeated_input_is_shared() -> None:
    nodes = [
        helper.make_node("Mul", ["x", "half"], ["a"]),
        helper.make_node("Sub", ["two", "a"], ["b"]),
        helper.make_node("Mul", ["b", "b"], ["y"]),
    ]
    inits = {"half": np.float32(0.5), "two": np.array([2.0], np.float32)}
    graph = check_numerics(make_model(nodes, {"x": [4, 5]}, ["y"], inits))
    assert [n.attrs["expr"] for n in graph.nodes] == ["v0 * 0.5", "2.0 - v0", "v0 * v0"]
    assert graph.nodes[2].inputs == ["b"]
    assert not any(v.is_const for v in graph.values.values())


@pytest.mark.parametrize("op", ["Sum", "Max", "Min"])
def test_variadic(op: str) -> None:
    model = make_model([helper.make_node(op, ["a", "b", "c"], ["y"])], {"a": [3, 4], "b": [4], "c": [3, 1]}, ["y"])
    graph = check_numerics(model)
    assert ops(graph) == ["elementwise"] and len(graph.nodes[0].inputs) == 3


@pytest.mark.parametrize("exponent", [np.float32(2.0), np.float32(0.5), None])
def test_pow(exponent: np.float32 | None) -> None:
    inputs: dict[str, Any] = {"x": [3, 4]}
    inits = {}
    if exponent is None:
        inputs["e"] = [4]
    else:
        inits["e"] = exponent
    graph = check_numerics(make_model([helper.make_node("Pow", ["x", "e"], ["y"])], inputs, ["y"], inits), low=0.2)
    assert graph.nodes[0].attrs["expr"].startswith("pow(v0, ")


@pytest.mark.parametrize(
    ("opset", "bounds", "expr"),
    [
        (9, {"min": 0.0, "max": 6.0}, "clip(v0, 0.0, 6.0)"),
        (9, {"min": -1.0}, "max(v0, (-1.0))"),
        (11, ("lo", ""), "max(v0, 0.0)"),
        (13, ("", "hi"), "min(v0, 6.0)"),
        (13, ("lo", "hi"), "clip(v0, 0.0, 6.0)"),
        (13, ("lo", "rt"), "min(max(v0, 0.0), v1)"),
    ],
)
def test_clip(opset: int, bounds: Any, expr: str) -> None:
    inits = {"lo": np.float32(0.0), "hi": np.float32(6.0)}
    inputs: dict[str, Any] = {"x": [2, 8]}
    if isinstance(bounds, dict):
        node = helper.make_node("Clip", ["x"], ["y"], **bounds)
    else:
        node = helper.make_node("Clip", ["x", *bounds], ["y"])
        if "rt" in bounds:
            inputs["rt"] = []
    feeds = {"x": np.linspace(-8, 8, 16, dtype=np.float32).reshape(2, 8)}
    if "rt" in inputs:
        feeds["rt"] = np.array(3.0, np.float32)
    graph = check_numerics(make_model([node], inputs, ["y"], inits, opset), feeds)
    assert ops(graph) == ["elementwise"] and graph.nodes[0].attrs["expr"] == expr


# --- dense ops -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attrs", "group", "bias"),
    [
        ({"pads": [1, 0, 2, 1], "strides": [2, 1]}, 1, True),
        ({"dilations": [2, 2], "pads": [2, 2, 2, 2]}, 1, False),
        ({"auto_pad": "SAME_UPPER", "strides": [2, 2]}, 2, True),
        ({"auto_pad": "SAME_LOWER", "strides": [2, 2]}, 1, True),
        ({"auto_pad": "VALID", "kernel_shape": [3, 3]}, 4, False),
    ],
)
def test_conv(attrs: dict[str, Any], group: int, bias: bool) -> None:
    inits = {"w": rand(4, 4 // group, 3, 3)}
    if bias:
        inits["b"] = rand(4, seed=2)
    node = helper.make_node("Conv", ["x", "w", "b"] if bias else ["x", "w"], ["y"], group=group, **attrs)
    graph = check_numerics(make_model([node], {"x": [1, 4, 9, 8]}, ["y"], inits))
    (conv,) = graph.nodes
    assert conv.op == "conv2d" and conv.attrs["group"] == group and len(conv.inputs) == (3 if bias else 2)
    assert conv.attrs["activation"].kind == "none" and len(conv.attrs["pads"]) == 4


@pytest.mark.parametrize(
    ("attrs", "c_shape", "b_const"),
    [
        ({}, (5,), True),
        ({"transB": 1, "alpha": 0.5, "beta": 2.0}, (1, 5), True),
        ({"transA": 1}, (3, 5), True),
        ({"alpha": 2.0, "beta": 0.5}, (3, 5), False),
        ({"transA": 1, "transB": 1, "alpha": 1.5}, None, False),
        ({"beta": 3.0}, (), True),
    ],
)
def test_gemm(attrs: dict[str, Any], c_shape: tuple[int, ...] | None, b_const: bool) -> None:
    a_shape = (4, 3) if attrs.get("transA") else (3, 4)
    b_shape = (5, 4) if attrs.get("transB") else (4, 5)
    inputs: dict[str, Any] = {"a": list(a_shape)}
    inits: dict[str, np.ndarray] = {}
    if b_const:
        inits["b"] = rand(*b_shape)
    else:
        inputs["b"] = list(b_shape)
    if c_shape is not None:
        inits["c"] = rand(*c_shape, seed=3)
    names = ["a", "b", "c"] if c_shape is not None else ["a", "b"]
    graph = check_numerics(make_model([helper.make_node("Gemm", names, ["y"], **attrs)], inputs, ["y"], inits))
    gemm = next(n for n in graph.nodes if n.op == "gemm")
    assert gemm.attrs["trans_b"] == bool(attrs.get("transB"))
    assert ("transpose" in ops(graph)) == bool(attrs.get("transA"))  # A is a runtime input
    if c_shape in ((5,), (1, 5), ()):
        assert ops(graph) == ["gemm"] and graph.values[gemm.inputs[2]].shape == (5,)


def test_gemm_runtime_c_and_alpha() -> None:
    node = helper.make_node("Gemm", ["a", "b", "c"], ["y"], alpha=0.5, beta=2.0)
    graph = check_numerics(make_model([node], {"a": [3, 4], "b": [4, 5], "c": [5]}, ["y"]))
    assert ops(graph) == ["gemm", "elementwise"]
    assert graph.nodes[1].attrs["expr"] == "v0 * 0.5 + v1 * 2.0" and graph.nodes[1].inputs[1] == "c"


@pytest.mark.parametrize(
    ("a", "b", "expected_ops"),
    [
        ((3, 4), (4, 5), ["gemm"]),
        ((2, 3, 4), (4, 5), ["reshape", "gemm", "reshape"]),
        ((2, 3, 4), (2, 4, 5), ["gemm"]),
        ((2, 2, 3, 4), (2, 2, 4, 5), ["reshape", "reshape", "gemm", "reshape"]),
        ((4,), (4, 5), ["reshape", "gemm", "reshape"]),
        ((3, 4), (4,), ["reshape", "gemm", "reshape"]),
    ],
)
def test_matmul(a: tuple[int, ...], b: tuple[int, ...], expected_ops: list[str]) -> None:
    graph = check_numerics(make_model([helper.make_node("MatMul", ["a", "b"], ["y"])], {"a": a, "b": b}, ["y"]))
    assert ops(graph) == expected_ops
    names = [n.name for n in graph.nodes]
    assert len(set(names)) == len(names)
    if len(names) > 1:
        assert names == [f"MatMul_0:{k}" for k in range(len(names))]


def test_matmul_constant_weight_is_reshaped_at_import() -> None:
    model = make_model([helper.make_node("MatMul", ["a", "w"], ["y"])], {"a": [2, 3, 4]}, ["y"], {"w": rand(1, 4, 5)})
    graph = check_numerics(model)
    assert ops(graph) == ["reshape", "gemm", "reshape"]
    assert graph.values[graph.nodes[1].inputs[1]].data is not None


@pytest.mark.parametrize(
    ("a", "b"), [([1, 3, 4], [2, 4, 5]), ([4], [2, 4, 5]), ([3, 4], [2, 1, 4, 5]), ([2, 1, 3, 4], [1, 6, 4, 5])]
)
def test_matmul_batch_dims_broadcast(a: list[int], b: list[int]) -> None:
    model = make_model([helper.make_node("MatMul", ["a", "b"], ["y"])], {"a": a, "b": b}, ["y"])
    graph = check_numerics(model)
    assert [op for op in ops(graph) if op == "gemm"] == ["gemm"]


def test_batchnorm() -> None:
    inits = {"s": rand(3, low=0.5), "b": rand(3, seed=2), "m": rand(3, seed=3), "v": rand(3, seed=4, low=0.5)}
    node = helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"], epsilon=1e-3)
    graph = check_numerics(make_model([node], {"x": [2, 3, 4, 4]}, ["y"], inits, opset=9))
    assert ops(graph) == ["batchnorm"] and graph.nodes[0].attrs["epsilon"] == pytest.approx(1e-3)


# --- windowed ops --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("op", "attrs", "opset"),
    [
        ("MaxPool", {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}, 9),
        ("MaxPool", {"kernel_shape": [2, 3], "ceil_mode": 1, "dilations": [2, 1], "strides": [2, 2]}, 12),
        ("MaxPool", {"kernel_shape": [3, 3], "auto_pad": "SAME_UPPER", "strides": [2, 2]}, 13),
        ("AveragePool", {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "count_include_pad": 1}, 11),
        ("AveragePool", {"kernel_shape": [3, 2], "pads": [1, 0, 1, 1], "strides": [2, 2]}, 19),
        ("GlobalAveragePool", {}, 9),
        ("GlobalMaxPool", {}, 13),
    ],
)
def test_pool(op: str, attrs: dict[str, Any], opset: int) -> None:
    graph = check_numerics(
        make_model([helper.make_node(op, ["x"], ["y"], **attrs)], {"x": [1, 3, 9, 10]}, ["y"], {}, opset)
    )
    (pool,) = graph.nodes
    assert pool.op == "pool2d" and pool.attrs["mode"] == ("max" if "Max" in op else "avg")
    assert pool.attrs["global_"] == op.startswith("Global")


@pytest.mark.parametrize("size", [3, 4])
def test_lrn(size: int) -> None:
    node = helper.make_node("LRN", ["x"], ["y"], size=size, alpha=0.02, beta=0.6, bias=1.5)
    model = make_model([node], {"x": [1, 6, 3, 3]}, ["y"])
    if size % 2:
        graph = check_numerics(model)
    else:  # onnxruntime takes odd sizes only (and onnx.reference's LRN loops over N, not C): numpy per the spec
        graph = import_model(model)
        x = rand(1, 6, 3, 3).astype(np.float64)
        sq = np.stack([(x[:, max(0, c - 1) : c + 3] ** 2).sum(axis=1) for c in range(6)], axis=1)
        want = x / (1.5 + 0.02 / size * sq) ** 0.6
        np.testing.assert_allclose(run_graph(graph, {"x": x.astype(np.float32)})["y"], want, rtol=1e-5, atol=1e-6)
    assert ops(graph) == ["elementwise", "conv2d", "elementwise"]
    band = graph.values[graph.nodes[1].inputs[1]].data
    assert band is not None and band.shape == (6, 6, 1, 1)
    # output channel 2 sums input channels 2 - floor((size-1)/2) .. 2 + ceil((size-1)/2)
    expected = [0, 1, 1, 1, 0, 0] if size == 3 else [0, 1, 1, 1, 1, 0]
    np.testing.assert_array_equal(band[2, :, 0, 0], expected)


# --- data movement -------------------------------------------------------------------------------------------


def test_concat_negative_axis_with_constant_input() -> None:
    node = helper.make_node("Concat", ["a", "k", "b"], ["y"], axis=-2)
    graph = check_numerics(make_model([node], {"a": [2, 3, 4], "b": [2, 1, 4]}, ["y"], {"k": rand(2, 2, 4)}))
    assert ops(graph) == ["concat"] and graph.nodes[0].attrs["axis"] == 1


@pytest.mark.parametrize(
    ("target", "allowzero", "expected"),
    [([0, -1], 0, (2, 12)), ([-1, 4], 0, (6, 4)), ([2, 3, 2, 2], 0, (2, 3, 2, 2)), ([24], 1, (24,))],
)
def test_reshape(target: list[int], allowzero: int, expected: tuple[int, ...]) -> None:
    attrs = {"allowzero": allowzero} if allowzero else {}
    node = helper.make_node("Reshape", ["x", "shape"], ["y"], **attrs)
    graph = check_numerics(make_model([node], {"x": [2, 3, 4]}, ["y"], {"shape": np.array(target, np.int64)}, 14))
    assert ops(graph) == ["reshape"] and graph.values["y"].shape == expected


@pytest.mark.parametrize("opset", [11, 13, 21])
def test_squeeze_unsqueeze_flatten(opset: int) -> None:
    if opset >= 13:
        nodes = [
            helper.make_node("Unsqueeze", ["x", "ax"], ["u"]),
            helper.make_node("Squeeze", ["u", "ax2"], ["s"]),
        ]
        inits = {"ax": np.array([0, -1], np.int64), "ax2": np.array([-1], np.int64)}
    else:
        nodes = [
            helper.make_node("Unsqueeze", ["x"], ["u"], axes=[0, -1]),
            helper.make_node("Squeeze", ["u"], ["s"], axes=[-1]),
        ]
        inits = {}
    nodes.append(helper.make_node("Flatten", ["s"], ["y"], axis=2))
    graph = check_numerics(make_model(nodes, {"x": [2, 3, 4]}, ["y"], inits, opset))
    assert ops(graph) == ["reshape", "reshape", "reshape"]
    assert graph.values["u"].shape == (1, 2, 3, 4, 1) and graph.values["y"].shape == (2, 12)


def test_transpose() -> None:
    nodes = [helper.make_node("Transpose", ["x"], ["t"], perm=[2, 0, 1]), helper.make_node("Transpose", ["t"], ["y"])]
    graph = check_numerics(make_model(nodes, {"x": [2, 3, 4]}, ["y"]))
    assert [n.attrs["perm"] for n in graph.nodes] == [(2, 0, 1), (2, 1, 0)]


@pytest.mark.parametrize(
    ("opset", "axis", "expected"),
    [(11, 1, ["reshape", "softmax", "reshape"]), (11, -1, ["softmax"]), (13, 1, ["softmax"])],
)
def test_softmax(opset: int, axis: int, expected: list[str]) -> None:
    node = helper.make_node("Softmax", ["x"], ["y"], axis=axis)
    graph = check_numerics(make_model([node], {"x": [2, 3, 4]}, ["y"], opset=opset))
    assert ops(graph) == expected
    assert next(n for n in graph.nodes if n.op == "softmax").attrs["axis"] == (
        1 if opset < 13 and axis == 1 else axis % 3
    )


@pytest.mark.parametrize(
    ("opset", "mode"), [(9, "constant"), (11, "reflect"), (13, "edge"), (18, "constant"), (21, "reflect")]
)
def test_pad(opset: int, mode: str) -> None:
    pads = [0, 0, 1, 2, 0, 0, 2, 1]
    inits: dict[str, np.ndarray] = {}
    if opset < 11:
        node = helper.make_node("Pad", ["x"], ["y"], mode=mode, pads=pads, value=1.5)
    elif opset < 18:
        node = helper.make_node("Pad", ["x", "p", "v"], ["y"], mode=mode)
        inits = {"p": np.array(pads, np.int64), "v": np.float32(1.5)}
    else:  # axes input: pad H and W only
        node = helper.make_node("Pad", ["x", "p", "v", "ax"], ["y"], mode=mode)
        inits = {"p": np.array([1, 2, 2, 1], np.int64), "v": np.float32(1.5), "ax": np.array([2, -1], np.int64)}
    graph = check_numerics(make_model([node], {"x": [1, 2, 4, 5]}, ["y"], inits, opset))
    (pad,) = graph.nodes
    assert pad.op == "pad" and pad.attrs["pads"] == tuple(pads) and pad.attrs["mode"] == mode
    assert graph.values["y"].shape == (1, 2, 7, 8)


RESIZES = [
    (9, "Upsample", {"mode": "nearest"}, "scales", [1, 1, 2, 3]),
    (9, "Upsample", {"mode": "linear"}, "scales", [1, 1, 2, 2]),
    (10, "Resize", {"mode": "nearest"}, "scales", [1, 1, 2, 2]),
    (10, "Resize", {"mode": "nearest"}, "scales", [1, 1, 0.6, 0.75]),
    (11, "Resize", {"mode": "linear", "coordinate_transformation_mode": "align_corners"}, "scales", [1, 1, 2, 1.5]),
    (13, "Resize", {"mode": "nearest", "nearest_mode": "floor"}, "sizes", [1, 2, 7, 3]),
    (
        13,
        "Resize",
        {"mode": "linear", "coordinate_transformation_mode": "pytorch_half_pixel"},
        "scales",
        [1, 1, 0.5, 2],
    ),
    (18, "Resize", {"mode": "linear", "axes": [2, 3]}, "sizes", [9, 11]),
    (
        19,
        "Resize",
        {"mode": "nearest", "coordinate_transformation_mode": "half_pixel_symmetric"},
        "scales",
        [1, 1, 3, 2],
    ),
]


@pytest.mark.parametrize(("opset", "op", "attrs", "kind", "values"), RESIZES)
def test_resize(opset: int, op: str, attrs: dict[str, Any], kind: str, values: list[float]) -> None:
    inits: dict[str, np.ndarray] = {}
    if op == "Upsample" or opset == 10:
        inits["s"] = np.array(values, np.float32)
        names = ["x", "s"]
    elif kind == "scales":
        inits["s"] = np.array(values, np.float32)
        names = ["x", "", "s"] if opset >= 13 else ["x", "roi", "s"]
        if opset < 13:
            inits["roi"] = np.zeros(0, np.float32)
    else:
        inits["z"] = np.array(values, np.int64)
        names = ["x", "", "", "z"]
    node = helper.make_node(op, names, ["y"], **attrs)
    graph = check_numerics(make_model([node], {"x": [1, 2, 4, 6]}, ["y"], inits, opset))
    (resize,) = graph.nodes
    assert resize.op == "resize" and resize.attrs["mode"] == attrs["mode"]
    assert set(resize.attrs) == {"scales", "sizes", "mode", "coordinate_transformation_mode", "nearest_mode"}


@pytest.mark.parametrize(
    ("opset", "axes", "keepdims", "expected"),
    [
        (13, [2, 3], 1, ["reduce"]),
        (13, [-1, -2], 0, ["reduce", "reshape"]),
        (18, [1], 1, ["reduce"]),
        (18, [2, 3], 0, ["reduce", "reshape"]),
        (13, [3], 0, ["reduce", "reshape"]),
        (18, None, 0, ["reduce", "reshape"]),
    ],
)
def test_reduce_mean(opset: int, axes: list[int] | None, keepdims: int, expected: list[str]) -> None:
    inits: dict[str, np.ndarray] = {}
    if opset >= 18:
        names = ["x", "ax"] if axes is not None else ["x"]
        if axes is not None:
            inits["ax"] = np.array(axes, np.int64)
        node = helper.make_node("ReduceMean", names, ["y"], keepdims=keepdims)
    else:
        node = helper.make_node("ReduceMean", ["x"], ["y"], axes=axes, keepdims=keepdims)
    graph = check_numerics(make_model([node], {"x": [2, 3, 4, 5]}, ["y"], inits, opset))
    assert ops(graph) == expected


def test_identity_dropout_alias_graph_outputs() -> None:
    nodes = [
        helper.make_node("Relu", ["x"], ["r"]),
        helper.make_node("Dropout", ["r"], ["d"]),
        helper.make_node("Identity", ["d"], ["y"]),
        helper.make_node("Identity", ["x"], ["z"]),
    ]
    graph = check_numerics(make_model(nodes, {"x": [2, 3]}, ["r", "y", "z"], opset=12))
    assert ops(graph) == ["elementwise", "reshape", "reshape"]
    producers = graph.producers()
    assert producers["y"].inputs == ["r"] and producers["z"].inputs == ["x"]


def test_constant_graph_output() -> None:
    value = numpy_helper.from_array(np.arange(4, dtype=np.float32).reshape(2, 2))
    nodes = [helper.make_node("Relu", ["x"], ["y"]), helper.make_node("Constant", [], ["k"], value=value)]
    graph = check_numerics(make_model(nodes, {"x": [3]}, ["y", "k"]))
    assert ops(graph) == ["elementwise"] and graph.values["k"].is_const


def test_cast_to_float_of_runtime_tensor_is_an_alias() -> None:
    nodes = [helper.make_node("Cast", ["x"], ["c"], to=TensorProto.FLOAT), helper.make_node("Relu", ["c"], ["y"])]
    graph = check_numerics(make_model(nodes, {"x": [3]}, ["y"]))
    assert ops(graph) == ["elementwise"] and graph.nodes[0].inputs == ["x"]


# --- constant folding ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("opset", [9, 13])
def test_shape_subgraph_folds_to_one_reshape(opset: int) -> None:
    unsq = {"axes": [0]} if opset < 13 else {}
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Gather", ["s", "zero"], ["n"], axis=0),
        helper.make_node("Unsqueeze", ["n", "ax"] if opset >= 13 else ["n"], ["n1"], **unsq),
        helper.make_node("Constant", [], ["m1"], value=numpy_helper.from_array(np.array([-1], np.int64))),
        helper.make_node("Concat", ["n1", "m1"], ["target"], axis=0),
        helper.make_node("Reshape", ["x", "target"], ["y"]),
    ]
    inits = {"zero": np.array(0, np.int64), "ax": np.array([0], np.int64)}
    graph = check_numerics(make_model(nodes, {"x": [2, 3, 4]}, ["y"], inits, opset))
    assert ops(graph) == ["reshape"] and graph.values["y"].shape == (2, 12)
    assert all(v.data is None or v.data.dtype == np.float32 for v in graph.values.values())


@pytest.mark.parametrize("opset", [9, 13])
def test_constant_of_shape_slice_cast_fold(opset: int) -> None:
    if opset < 10:
        sl = helper.make_node("Slice", ["k"], ["ks"], starts=[1], ends=[100], axes=[1])
    else:
        sl = helper.make_node("Slice", ["k", "st", "en", "axs", "stp"], ["ks"])
    nodes = [
        helper.make_node("ConstantOfShape", ["shp"], ["k"], value=numpy_helper.from_array(np.array([2], np.int64))),
        sl,
        helper.make_node("Cast", ["ks"], ["kf"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["kf", "half"], ["kh"]),
        helper.make_node("Add", ["x", "kh"], ["y"]),
    ]
    inits = {
        "shp": np.array([3, 4], np.int64),
        "half": np.float32(0.5),
        "st": np.array([-1], np.int64),
        "en": np.array([-1000], np.int64),
        "axs": np.array([1], np.int64),
        "stp": np.array([-2], np.int64),
    }
    graph = check_numerics(make_model(nodes, {"x": [3, 1]}, ["y"], inits, opset))
    assert ops(graph) == ["elementwise"]
    const = graph.values[graph.nodes[0].inputs[1]]
    assert const.data is not None and const.data.dtype == np.float32
    assert const.shape == ((3, 3) if opset < 10 else (3, 2))
    np.testing.assert_array_equal(const.data, 1.0)


# --- light models --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", LIGHT, ids=[os.path.basename(p) for p in LIGHT])
def test_light_models_import(path: str) -> None:
    graph = import_model(path)
    expected = numpy_helper.to_array(onnx.load_tensor(path.replace(".onnx", "_output_0.pb")))
    assert graph.values[graph.outputs[0]].shape == expected.shape
    assert set(ops(graph)) <= {
        "conv2d",
        "batchnorm",
        "elementwise",
        "pool2d",
        "concat",
        "reshape",
        "gemm",
        "softmax",
        "transpose",
    }
    assert all(v.data is None or v.data.dtype == np.float32 for v in graph.values.values())
    names = [n.name for n in graph.nodes]
    assert len(names) == len(set(names))


def test_light_models_found() -> None:
    assert len(LIGHT) >= 5


# --- errors --------------------------------------------------------------------------------------------------


def test_unsupported_ops_are_all_listed() -> None:
    nodes = [
        helper.make_node("Relu", ["x"], ["a"], name="ok"),
        helper.make_node("Hardmax", ["a"], ["b"], name="hm1"),
        helper.make_node("Conv", ["b", "w"], ["c"], name="conv1", auto_pad="SAME_MIDDLE"),
        helper.make_node("Gelu", ["c"], ["d"], name="gelu1", approximate="erf"),
        helper.make_node("Resize", ["d", "", "s"], ["e"], mode="area"),
        helper.make_node("Range", ["e", "i", "i"], ["f"], name="g"),
        helper.make_node("Custom", ["f"], ["h"], name="mine", domain="com.example"),
        helper.make_node("Reshape", ["h", "a"], ["y"], name="rs"),
    ]
    inits = {"w": rand(2, 2, 1, 1), "s": np.ones(4, np.float32), "i": np.array([0], np.int64)}
    model = make_model(nodes, {"x": [1, 2, 4, 4]}, ["y"], inits, 20)
    model.opset_import.append(helper.make_opsetid("com.example", 1))
    with pytest.raises(UnsupportedModelError) as info:
        import_model(model)
    lines = str(info.value).splitlines()[1:]
    assert lines[0] == "Hardmax node 'hm1' (opset 20): op type is not supported"
    assert lines[1].startswith("Conv node 'conv1' (opset 20): auto_pad='SAME_MIDDLE'")
    assert lines[2].startswith("Gelu node 'gelu1' (opset 20): approximate='erf' is not supported")
    assert lines[3].startswith("Resize node 'Resize_4' (opset 20): mode='area'")
    assert lines[4].startswith("Range node 'g' (opset 20): needs a runtime value")
    assert lines[5].startswith("Custom node 'mine' (opset 1): domain 'com.example'")
    assert lines[6] == "Reshape node 'rs' (opset 20): input 1 ('a') needs a runtime value; only a constant is supported"
    assert len(lines) == 7


def test_maxpool_indices_output_of_a_3d_pool_is_unsupported() -> None:
    node = helper.make_node("MaxPool", ["x"], ["y", "idx"], kernel_shape=[2, 2, 2], name="mp")
    with pytest.raises(UnsupportedModelError, match=r"MaxPool node 'mp' .*indices"):
        import_model(make_model([node], {"x": [1, 1, 4, 4, 4]}, ["y", "idx"]))


def test_dead_nodes_are_ignored() -> None:
    nodes = [helper.make_node("Relu", ["x"], ["y"]), helper.make_node("Hardmax", ["x"], ["dead"])]
    graph = import_model(make_model(nodes, {"x": [3]}, ["y"]))
    assert ops(graph) == ["elementwise"]


def test_truncated_and_missing_files(tmp_path: Path) -> None:
    data = make_model(
        [helper.make_node("Relu", ["x"], ["y"])], {"x": [3]}, ["y"], {"w": rand(64, 64)}
    ).SerializeToString()
    path = tmp_path / "cut.onnx"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match=r"cut\.onnx") as info:
        import_model(path)
    assert isinstance(info.value, GraphError) and "DecodeError" in str(info.value)
    with pytest.raises(ModelError, match="no such model file"):
        import_model(tmp_path / "missing.onnx")
    with pytest.raises(ModelError, match="bytes"):
        import_model(b"\x08\x07garbage" * 3)


def test_bytes_and_proto_inputs() -> None:
    model = make_model([helper.make_node("Relu", ["x"], ["y"])], {"x": [3]}, ["y"])
    assert ops(import_model(model.SerializeToString())) == ops(import_model(model)) == ["elementwise"]


def test_unsupported_dtypes_are_listed_with_unsupported_nodes() -> None:
    nodes = [helper.make_node("Hardmax", ["x"], ["h"], name="hm"), helper.make_node("Relu", ["h"], ["y"])]
    model = make_model(nodes, {"x": [3]}, ["y"], dtype=TensorProto.COMPLEX64)
    with pytest.raises(UnsupportedModelError) as info:
        import_model(model)
    lines = str(info.value).splitlines()
    assert "1 unsupported node(s) and 1 unsupported graph input/output dtype(s)" in lines[0]
    assert lines[1].startswith("graph input 'x': dtype COMPLEX64 is not supported (supported: bfloat16, bool, float16,")
    assert lines[2] == "Hardmax node 'hm' (opset 13): op type is not supported"


def test_runtime_cast_to_string_is_unsupported() -> None:
    nodes = [helper.make_node("Cast", ["x"], ["y"], to=TensorProto.STRING, name="c")]
    with pytest.raises(UnsupportedModelError, match=r"Cast node 'c' .*STRING"):
        import_model(make_model(nodes, {"x": [3]}, ["y"]))


def test_every_opset_of_the_installed_onnx_is_accepted() -> None:
    # a newer onnx must be reviewed (which supported ops changed?) before MAX_OPSET follows it
    assert onnx.defs.onnx_opset_version() == MAX_OPSET
    model = make_model([helper.make_node("Mod", ["x", "y"], ["z"])], {"x": [4], "y": [4]}, ["z"])
    model.opset_import[0].version = MAX_OPSET
    assert ops(import_model(model)) == ["elementwise"]


def test_old_opsets_load_ops_that_did_not_change_since() -> None:
    nodes = [
        helper.make_node("Relu", ["x"], ["r"]),  # Relu-6: the same op at opset 9
        helper.make_node("Upsample", ["r"], ["u"], scales=[1.0, 2.0], name="up"),  # Upsample-7: scales attribute
        helper.make_node("Flatten", ["u"], ["y"], name="fl"),  # Flatten-1, before Flatten-9
    ]
    model = make_model(nodes, {"x": [2, 3]}, ["y"], opset=7)
    with pytest.raises(UnsupportedModelError) as info:
        import_model(model)
    lines = str(info.value).splitlines()[1:]
    older = "(the version at opset 7) is older than the"
    assert lines == [
        f"Upsample node 'up' (opset 7): Upsample-7 {older} Upsample kernelforge converts",
        f"Flatten node 'fl' (opset 7): Flatten-1 {older} Flatten kernelforge converts",
    ]
    graph = check_numerics(make_model(nodes[:1], {"x": [2, 3]}, ["r"], opset=6))
    assert ops(graph) == ["elementwise"]


def test_a_model_without_a_default_opset_names_each_node() -> None:
    model = make_model([helper.make_node("Relu", ["x"], ["y"], name="r")], {"x": [3]}, ["y"])
    del model.opset_import[:]
    model.opset_import.append(helper.make_opsetid("ai.onnx.ml", 3))
    with pytest.raises(UnsupportedModelError, match=r"Relu node 'r' \(opset 0\): the model imports no default-domain"):
        import_model(model)


@pytest.mark.parametrize("opset", [MAX_OPSET + 1, 100])
def test_opset_out_of_range(opset: int) -> None:
    model = make_model([helper.make_node("Relu", ["x"], ["y"])], {"x": [3]}, ["y"])
    model.opset_import[0].version = opset
    with pytest.raises(UnsupportedModelError, match=f"opset {opset} is not supported"):
        import_model(model)


def test_input_shapes() -> None:
    model = make_model([helper.make_node("Relu", ["x"], ["y"])], {"x": ["N", 3, "H"]}, ["y"])
    with pytest.raises(ModelError, match=r"input 'x' has symbolic dim 2 \('H'\)"):
        import_model(model)
    assert import_model(model, {"x": [4, 3, 5]}).values["y"].shape == (4, 3, 5)
    with pytest.raises(ModelError, match=r"unknown input\(s\) \['img'\]; the inputs are 'x' \['N', 3, 'H'\]"):
        import_model(model, {"img": [1, 3, 5]})
    with pytest.raises(ModelError, match="contradicts"):
        import_model(model, {"x": [1, 4, 5]})
    batch = make_model([helper.make_node("Relu", ["x"], ["y"])], {"x": ["batch", 3]}, ["y"])
    graph = import_model(batch)
    assert graph.values["x"].shape == (1, 3) and graph.values["y"].shape == (1, 3)


def test_nodes_read_before_written_are_sorted() -> None:
    nodes = [helper.make_node("Relu", ["a"], ["y"], name="second"), helper.make_node("Neg", ["x"], ["a"], name="first")]
    graph = check_numerics(make_model(nodes, {"x": [3]}, ["y"]))
    assert [n.name for n in graph.nodes] == ["first", "second"]
    bad = make_model([helper.make_node("Relu", ["nowhere"], ["y"], name="r")], {"x": [3]}, ["y"])
    with pytest.raises(ModelError, match="Relu node 'r' reads 'nowhere'"):
        import_model(bad)
