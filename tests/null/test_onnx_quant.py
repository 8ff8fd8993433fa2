"""Quantized ONNX models: Q/DQ folding, fake-quant pairs, dynamic quantization and integer matmul/conv vs onnxruntime.

Every case imports a model, runs the IR in numpy (the reference the kernels are checked against) and compares
with onnxruntime's CPU run. Whole models come from onnxruntime's own quantizer (:mod:`kernelforge.testing.quantized`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from kernelforge.graph.ir import Graph, GraphError
from kernelforge.graph.onnx_import import UnsupportedModelError, import_model
from kernelforge.graph.passes import optimize
from kernelforge.graph.quant import Quantized, relocate
from kernelforge.graph.reference import run_graph
from kernelforge.testing.models import MODELS
from kernelforge.testing.quantized import KINDS, TIE_SHARE, cosines, quantized, semantics_mismatch

DTYPES = {"int8": TensorProto.INT8, "uint8": TensorProto.UINT8, "int16": TensorProto.INT16}
DTYPES |= {"uint16": TensorProto.UINT16, "int4": TensorProto.INT4, "uint4": TensorProto.UINT4}
DTYPES |= {"int32": TensorProto.INT32, "float": TensorProto.FLOAT}
RANGE = {"int8": (-128, 127), "uint8": (0, 255), "int16": (-500, 500), "uint16": (0, 1000)}
RANGE |= {"int4": (-8, 7), "uint4": (0, 15), "int32": (-5000, 5000)}


def model(
    nodes: Sequence[onnx.NodeProto],
    inputs: dict[str, tuple[str, Sequence[int]]],
    outputs: dict[str, str],
    inits: Sequence[onnx.TensorProto] = (),
    opset: int = 13,
) -> onnx.ModelProto:
    """A model whose inputs and outputs have the named dtypes."""
    graph = helper.make_graph(
        list(nodes),
        "quant",
        [helper.make_tensor_value_info(n, DTYPES[t], s) for n, (t, s) in inputs.items()],
        [helper.make_tensor_value_info(n, DTYPES[t], None) for n, t in outputs.items()],
        list(inits),
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8 if opset <= 17 else 10
    return m


def tensor(name: str, dtype: str, values: Any) -> onnx.TensorProto:
    """An initializer of any dtype (4-bit ones packed by onnx)."""
    array = np.asarray(values)
    if dtype in ("int4", "uint4"):
        return helper.make_tensor(name, DTYPES[dtype], array.shape, array.reshape(-1).tolist())
    return numpy_helper.from_array(array.astype(helper.tensor_dtype_to_np_dtype(DTYPES[dtype])), name)


def ort_run(m: onnx.ModelProto, feeds: dict[str, np.ndarray], optimized: bool = True) -> list[np.ndarray]:
    options = ort.SessionOptions()
    if not optimized:  # the QDQ graph as written, every Q and DQ executed
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(m.SerializeToString(), options, providers=["CPUExecutionProvider"]).run(None, feeds)


def ours(m: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> tuple[Graph, list[np.ndarray]]:
    graph = import_model(m)
    got = run_graph(graph, feeds)
    return graph, [got[name] for name in graph.outputs]


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


# --- quantized constants and their relocation --------------------------------------------------------------


def test_quantized_dequantizes_in_float32_and_checks_its_fields() -> None:
    q = Quantized(np.array([[-128, 0, 127]], np.int8), np.array([0.1], np.float32), np.array([-1], np.int8))
    np.testing.assert_array_equal(q.dequantize(), (np.array([[-127, 1, 128]]).astype(np.float32) * np.float32(0.1)))
    with pytest.raises(ValueError, match="int8 or uint8"):
        Quantized(np.zeros(3, np.int16), np.ones(1, np.float32), np.zeros(1, np.int16))
    with pytest.raises(ValueError, match=r"must have shape \(3,\)"):
        Quantized(np.zeros(3, np.int8), np.ones(2, np.float32), np.zeros(2, np.int8), 0)
    with pytest.raises(ValueError, match="finite"):
        Quantized(np.zeros(3, np.int8), np.array([np.inf], np.float32), np.zeros(1, np.int8))
    with pytest.raises(ValueError, match="zero point of dtype uint8"):
        Quantized(np.zeros(3, np.int8), np.ones(1, np.float32), np.zeros(1, np.uint8))


def _conv_weight() -> Quantized:
    q = rng().integers(-128, 128, (4, 2, 3, 3)).astype(np.int8)
    return Quantized(q, rng(1).uniform(0.01, 0.1, 4).astype(np.float32), np.array([0, 1, -2, 3], np.int8), 0)


@pytest.mark.parametrize(
    ("convert", "axis"),
    [
        (lambda w: w.transpose(2, 3, 1, 0), 3),  # WGSL HWIO
        (lambda w: w.transpose(2, 3, 1, 0).reshape(18, 4), 1),  # GLSL NHWC matrix
        (lambda w: w.reshape(4, -1), 0),  # GLSL NCHW matrix
        (lambda w: w[1:3], 0),  # a slice keeps its channels' scales
    ],
)
def test_relocate_follows_the_channel_axis(convert: Any, axis: int) -> None:
    quant = _conv_weight()
    bound = convert(quant.dequantize())
    moved = relocate(quant, bound, convert)
    assert moved is not None and moved.axis == axis and moved.q.shape == bound.shape
    np.testing.assert_array_equal(moved.dequantize().view(np.uint32), bound.view(np.uint32))


def test_relocate_refuses_arithmetic_padding_and_mixed_channels() -> None:
    quant = _conv_weight()
    data = quant.dequantize()
    for convert in (lambda w: w * 2, lambda w: np.pad(w, ((0, 1), (0, 0), (0, 0), (0, 0))), lambda w: w.reshape(-1)):
        assert relocate(quant, convert(data), convert) is None
    per_tensor = Quantized(quant.q, np.array([0.5], np.float32), np.array([3], np.int8))
    moved = relocate(per_tensor, per_tensor.dequantize().reshape(-1), lambda w: w.reshape(-1))
    assert moved is not None and moved.axis is None  # per tensor: any rearrangement


# --- DequantizeLinear / QuantizeLinear of constants ----------------------------------------------------------

FOLD_CASES = [
    # dtype, scale shape (None: 0-d), axis, opset, block_size, zero point
    ("int8", None, 1, 10, 0, True),
    ("uint8", None, 1, 13, 0, True),
    ("int8", (4,), 0, 13, 0, True),
    ("uint8", (5,), 1, 13, 0, True),
    ("int8", (5,), -1, 13, 0, False),
    ("int16", (5,), 1, 21, 0, True),
    ("uint16", None, 1, 21, 0, True),
    ("int4", (4,), 0, 21, 0, True),
    ("uint4", (5,), 1, 21, 0, True),
    ("int32", None, 1, 13, 0, False),
    ("int8", (4, 3), 1, 21, 2, True),  # blocks of 2 along 5 columns: the last one short
]


@pytest.mark.parametrize(("dtype", "scale_shape", "axis", "opset", "block", "with_zp"), FOLD_CASES)
def test_dequantize_constants_fold_as_onnxruntime(
    dtype: str, scale_shape: tuple[int, ...] | None, axis: int, opset: int, block: int, with_zp: bool
) -> None:
    lo, hi = RANGE[dtype]
    w = rng().integers(lo, hi + 1, (4, 5))
    scale = rng(1).uniform(0.01, 0.5, scale_shape or ()).astype(np.float32)
    zp = rng(2).integers(lo, hi + 1, scale_shape or ()) if with_zp else None
    if dtype == "int32":
        zp = None  # int32 data has no zero point
    attrs: dict[str, Any] = {} if opset < 13 else {"axis": axis}
    if block:
        attrs["block_size"] = block
    inits = [tensor("w", dtype, w), numpy_helper.from_array(scale, "s")]
    inputs = ["w", "s"]
    if zp is not None:
        inits.append(tensor("zp", dtype, zp))
        inputs.append("zp")
    nodes = [helper.make_node("DequantizeLinear", inputs, ["d"], **attrs), helper.make_node("Add", ["x", "d"], ["y"])]
    m = model(nodes, {"x": ("float", (4, 5))}, {"y": "float"}, inits, opset)
    x = rng(3).standard_normal((4, 5)).astype(np.float32)
    graph, (got,) = ours(m, {"x": x})
    np.testing.assert_array_equal(got, ort_run(m, {"x": x})[0])
    quant = graph.values["d"].quant
    assert (quant is not None) == (dtype in ("int8", "uint8", "int4", "uint4") and not block)
    if quant is not None:
        assert quant.dtype == ("int8" if dtype.startswith("int") else "uint8")
        assert quant.axis == (None if scale_shape is None else axis % 2)
        np.testing.assert_array_equal(quant.dequantize(), graph.values["d"].data)


def test_a_transposed_quantized_weight_stays_quantized() -> None:
    w = rng().integers(-128, 128, (5, 8))
    scale = rng(1).uniform(0.01, 0.1, 5).astype(np.float32)
    inits = [tensor("w", "int8", w), numpy_helper.from_array(scale, "s"), tensor("zp", "int8", [1, 2, 3, 4, 5])]
    nodes = [
        helper.make_node("DequantizeLinear", ["w", "s", "zp"], ["d"], axis=0),
        helper.make_node("Transpose", ["d"], ["t"], perm=[1, 0]),
        helper.make_node("MatMul", ["x", "t"], ["y"]),
    ]
    m = model(nodes, {"x": ("float", (3, 8))}, {"y": "float"}, inits)
    x = rng(2).standard_normal((3, 8)).astype(np.float32)
    graph, (got,) = ours(m, {"x": x})
    # onnxruntime's optimized run gets this one wrong (its DQ-Transpose-MatMul fusion): compare the graph as written
    np.testing.assert_allclose(got, ort_run(m, {"x": x}, optimized=False)[0], rtol=1e-5, atol=1e-5)
    quant = graph.values["t"].quant
    assert quant is not None and quant.axis == 1 and quant.q.shape == (8, 5)
    np.testing.assert_array_equal(quant.scale, scale)


@pytest.mark.parametrize(
    ("dtype", "opset", "per_channel"), [("int8", 13, False), ("uint8", 13, True), ("int4", 21, True)]
)
def test_quantize_constants_round_half_to_even_and_saturate(dtype: str, opset: int, per_channel: bool) -> None:
    # scale 0.5 keeps x / s exact: 0.25 / 0.5 = 0.5 -> 0, 0.75 / 0.5 = 1.5 -> 2, -1.25 / 0.5 = -2.5 -> -2
    ties = [0.25, 0.75, -1.25, 1.25, -0.75, 1e6, -1e6, 3.0]
    w = np.array([ties, [-t for t in ties]], np.float32)
    scale = np.array([0.5, 0.25] if per_channel else 0.5, np.float32)
    zp = np.array([1, 2] if per_channel else 1)
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(scale, "s"), tensor("zp", dtype, zp)]
    attrs = {"axis": 0} if per_channel else {}
    nodes = [
        helper.make_node("QuantizeLinear", ["w", "s", "zp"], ["q"], **attrs),
        helper.make_node("DequantizeLinear", ["q", "s", "zp"], ["d"], **attrs),
        helper.make_node("Add", ["x", "d"], ["y"]),
    ]
    m = model(nodes, {"x": ("float", w.shape)}, {"y": "float"}, inits, opset)
    x = np.zeros(w.shape, np.float32)
    np.testing.assert_array_equal(ours(m, {"x": x})[1][0], ort_run(m, {"x": x})[0])


# --- QuantizeLinear -> DequantizeLinear on runtime tensors ------------------------------------------------------


@pytest.mark.parametrize(("dtype", "zp", "per_channel"), [("uint8", 128, False), ("int8", 0, False), ("int8", 3, True)])
def test_fake_quant_pairs_match_onnxruntime(dtype: str, zp: int, per_channel: bool) -> None:
    scale = np.array([0.5, 0.25, 1.0] if per_channel else 0.5, np.float32)
    zps = np.full(scale.shape, zp)
    inits = [numpy_helper.from_array(scale, "s"), tensor("zp", dtype, zps)]
    attrs = {"axis": 1} if per_channel else {}
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["q"], **attrs),
        helper.make_node("DequantizeLinear", ["q", "s", "zp"], ["y"], **attrs),
    ]
    m = model(nodes, {"x": ("float", (2, 3, 8))}, {"y": "float", "q": dtype}, inits)
    x = rng().uniform(-40, 40, (2, 3, 8)).astype(np.float32)
    x[0, :, :4] = [[0.25, 0.75, -1.25, 1.75]] * 3  # ties (exact quotients where the scale is 0.5 or 1)
    x[1, :, :2] = [1e4, -1e4]  # saturation
    graph, got = ours(m, {"x": x})
    for mine, want in zip(got, ort_run(m, {"x": x}), strict=True):
        np.testing.assert_array_equal(mine, want)
    # the pair is one elementwise program after the passes (and the quantized tensor, an output, another)
    assert [n.op for n in optimize(graph).nodes] == ["elementwise", "elementwise"]


def test_runtime_quantize_refusals_name_node_and_reason() -> None:
    s = numpy_helper.from_array(np.array(0.5, np.float32), "s")
    fp8 = helper.make_tensor("zp", TensorProto.FLOAT8E4M3FN, [], [1.0])  # ONNX's reference ignores it
    q = model(
        [helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["y"])],
        {"x": ("float", (4,))},
        {"y": "float"},
        [s, fp8],
        19,
    )
    with pytest.raises(
        UnsupportedModelError,
        match=r"QuantizeLinear node 'QuantizeLinear_0' .*a float8_e4m3fn zero point other than 0 is not supported",
    ):
        import_model(q)
    blocked = helper.make_node("DequantizeLinear", ["x", "s"], ["y"], axis=0, block_size=2)
    m = model([blocked], {"x": ("int8", (4,))}, {"y": "float"}, [s], 21)
    with pytest.raises(GraphError, match=r"block_size=2: scale of shape \(\) for x \(4,\) along axis 0; want \(2,\)"):
        import_model(m)
    runtime_scale = model(
        [helper.make_node("DequantizeLinear", ["x", "r"], ["y"])],
        {"x": ("int8", (4,)), "r": ("float", ())},
        {"y": "float"},
    )
    assert [n.op for n in import_model(runtime_scale).nodes] == ["elementwise"]  # a scale fed at run time
    precise = helper.make_node("QuantizeLinear", ["x", "s"], ["y"], precision=TensorProto.FLOAT16)
    with pytest.raises(UnsupportedModelError, match="precision=float16 is not supported"):
        import_model(model([precise], {"x": ("float", (4,))}, {"y": "uint8"}, [s], 23))
    for dtype, opset in ((TensorProto.FLOAT8E4M3FN, 19), (TensorProto.FLOAT4E2M1, 23)):
        w = helper.make_tensor("w", dtype, [4], [1, 1.5, -3, 6])
        nodes = [helper.make_node("DequantizeLinear", ["w", "s"], ["d"]), helper.make_node("Add", ["x", "d"], ["y"])]
        m = model(nodes, {"x": ("float", (4,))}, {"y": "float"}, [w, s], opset)
        graph = import_model(m)  # folded: one add of a constant
        assert [n.op for n in graph.nodes] == ["elementwise"]
        x = np.arange(4, dtype=np.float32)
        np.testing.assert_array_equal(run_graph(graph, {"x": x})["y"], x + np.float32([0.5, 0.75, -1.5, 3]))


# --- DynamicQuantizeLinear, MatMulInteger, ConvInteger ----------------------------------------------------------


@pytest.mark.parametrize("case", ["normal", "zeros", "positive", "negative"])
def test_dynamic_quantize_linear_matches_onnxruntime(case: str) -> None:
    x = {
        "normal": rng().standard_normal((3, 17)),
        "zeros": np.zeros((3, 17)),  # max == min: scale 1, as onnxruntime (onnx's reference takes 1/255)
        "positive": rng().uniform(0.5, 3.0, (3, 17)),  # the range widens to 0: zero point 0
        "negative": -rng().uniform(0.5, 3.0, (3, 17)),  # zero point 255
    }[case].astype(np.float32)
    node = helper.make_node("DynamicQuantizeLinear", ["x"], ["y", "scale", "zp"])
    m = model([node], {"x": ("float", (3, 17))}, {"y": "uint8", "scale": "float", "zp": "uint8"}, opset=11)
    (y, scale, zp), want = ours(m, {"x": x})[1], ort_run(m, {"x": x})
    assert scale.shape == () and zp.shape == () and y.dtype == np.uint8
    np.testing.assert_allclose(scale, want[1], rtol=1e-6)
    np.testing.assert_array_equal(zp, want[2])
    # the float64 reference may round a quotient that float32 puts on a tie the other way: at most 1 apart
    assert np.abs(y.astype(int) - want[0]).max() <= 1 and (y == want[0]).mean() > 0.95


@pytest.mark.parametrize(
    ("a_type", "b_type", "b_zp"),
    [("uint8", "int8", [0] * 5), ("uint8", "uint8", [3, 0, 9, 1, 7]), ("int8", "int8", [0] * 5)],
)
def test_matmul_integer_is_exact(a_type: str, b_type: str, b_zp: list[int]) -> None:
    lo, hi = RANGE[b_type]
    b = rng(1).integers(lo, hi + 1, (16, 5))
    inits = [tensor("b", b_type, b), tensor("a_zp", a_type, 7), tensor("b_zp", b_type, b_zp)]
    node = helper.make_node("MatMulInteger", ["a", "b", "a_zp", "b_zp"], ["y"])
    m = model([node], {"a": (a_type, (2, 3, 16))}, {"y": "int32"}, inits)
    a = rng().integers(*RANGE[a_type], (2, 3, 16)).astype(helper.tensor_dtype_to_np_dtype(DTYPES[a_type]))
    graph, (got,) = ours(m, {"a": a})
    exact = (a.astype(np.int64) - 7) @ (b.astype(np.int64) - np.asarray(b_zp, np.int64))
    np.testing.assert_array_equal(got, exact)  # ONNX's definition, in int64
    # onnxruntime agrees except for uint8 x int8 on x86 CPUs without VNNI, whose kernel saturates int16 pair sums
    if (a_type, b_type) != ("uint8", "int8"):
        np.testing.assert_array_equal(got, ort_run(m, {"a": a})[0])
    (gemm,) = [n for n in graph.nodes if n.op == "gemm"]
    quant = graph.values[gemm.inputs[1]].quant
    assert quant is not None and quant.axis == (None if not any(b_zp) else 1)
    np.testing.assert_array_equal(quant.q, b)


def conv_integer(x: np.ndarray, w: np.ndarray, x_zp: int, w_zp: np.ndarray, pad: int, stride: int) -> np.ndarray:
    """ConvInteger in int64 numpy: padding holds the zero point (a 0 once it is subtracted), as onnxruntime."""
    shifted = np.pad(x.astype(np.int64) - x_zp, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    windows = np.lib.stride_tricks.sliding_window_view(shifted, w.shape[2:], axis=(2, 3))[:, :, ::stride, ::stride]
    return np.einsum("nchwij,mcij->nmhw", windows, w.astype(np.int64) - w_zp.reshape(-1, 1, 1, 1))


@pytest.mark.parametrize("w_zp", [[5], [0, 1, -2, 3]])
def test_conv_integer_is_exact_and_keeps_per_channel_zero_points(w_zp: list[int]) -> None:
    w = rng(1).integers(-128, 128, (4, 3, 3, 3))
    inits = [tensor("w", "int8", w), tensor("x_zp", "uint8", 100), tensor("w_zp", "int8", w_zp)]
    node = helper.make_node("ConvInteger", ["x", "w", "x_zp", "w_zp"], ["y"], pads=[1, 1, 1, 1], strides=[2, 2])
    m = model([node], {"x": ("uint8", (1, 3, 8, 8))}, {"y": "int32"}, inits)
    x = rng().integers(0, 256, (1, 3, 8, 8)).astype(np.uint8)
    graph, (got,) = ours(m, {"x": x})
    want = conv_integer(x, w, 100, np.array(w_zp), 1, 2)
    np.testing.assert_array_equal(got, want)
    if len(w_zp) == 1:  # onnxruntime runs per-tensor weight zero points only
        np.testing.assert_array_equal(want, ort_run(m, {"x": x})[0])
    (conv,) = [n for n in graph.nodes if n.op == "conv2d"]
    quant = graph.values[conv.inputs[1]].quant
    assert quant is not None and quant.axis == (0 if len(w_zp) > 1 else None)
    assert list(quant.zero_point) == w_zp


def test_integer_products_beyond_float32_are_refused_naming_the_node() -> None:
    k = 1024  # 1024 * 255 * 127 > 2**24
    inits = [tensor("b", "int8", np.full((k, 2), 127)), tensor("a_zp", "uint8", 0)]
    node = helper.make_node("MatMulInteger", ["a", "b", "a_zp"], ["y"], name="big")
    m = model([node], {"a": ("uint8", (1, k))}, {"y": "int32"}, inits)
    with pytest.raises(UnsupportedModelError, match=r"MatMulInteger node 'big' .*K=1024 products of up to 255 x 127"):
        import_model(m)
    narrow = [tensor("b", "int8", np.full((k, 2), 60)), tensor("a_zp", "uint8", 0)]  # 1024 * 255 * 60 < 2**24
    assert import_model(model([node], {"a": ("uint8", (1, k))}, {"y": "int32"}, narrow))
    conv = helper.make_node("ConvInteger", ["x", "w"], ["y"], name="wide")
    inits = [tensor("w", "int8", np.full((2, 128, 3, 3), -128))]
    with pytest.raises(UnsupportedModelError, match=r"ConvInteger node 'wide' .*K=1152 products of up to 255 x 128"):
        import_model(model([conv], {"x": ("uint8", (1, 128, 4, 4))}, {"y": "int32"}, inits))


# --- whole models quantized by onnxruntime -------------------------------------------------------------------


def _samples(m: onnx.ModelProto, count: int = 6) -> list[dict[str, np.ndarray]]:
    shape = tuple(d.dim_value for d in m.graph.input[0].type.tensor_type.shape.dim)
    return [{"x": rng(100 + k).standard_normal(shape).astype(np.float32)} for k in range(count)]


def strip_activation_pairs(m: onnx.ModelProto) -> onnx.ModelProto:
    """Return ``m`` without its QuantizeLinear -> DequantizeLinear pairs on runtime tensors (weights stay)."""
    out = onnx.ModelProto()
    out.CopyFrom(m)
    constant = {t.name for t in out.graph.initializer}
    producer = {o: n for n in out.graph.node for o in n.output}
    alias = {}
    for n in out.graph.node:
        source = producer.get(n.input[0]) if n.op_type == "DequantizeLinear" else None
        if source is not None and source.op_type == "QuantizeLinear" and source.input[0] not in constant:
            alias[n.output[0]] = source.input[0]
    nodes = [
        n
        for n in out.graph.node
        if n.output[0] not in alias and not (n.op_type == "QuantizeLinear" and n.input[0] not in constant)
    ]
    for n in nodes:
        n.input[:] = [alias.get(i, i) for i in n.input]
    nodes += [helper.make_node("Identity", [alias[o.name]], [o.name]) for o in out.graph.output if o.name in alias]
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    return out


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", ["mlp", "small_cnn"])
def test_quantized_models_match_onnxruntime(name: str, kind: str) -> None:
    m, fp32 = quantized(name, kind), MODELS[name]()
    graph = import_model(m)
    errors = {"ours-ort": 0.0, "ours-ort-as-written": 0.0, "ort-fp32": 0.0}
    for feeds in _samples(m):
        got = run_graph(graph, feeds)[graph.outputs[0]]
        want, written, reference = ort_run(m, feeds)[0], ort_run(m, feeds, False)[0], ort_run(fp32, feeds)[0]
        errors["ours-ort"] = max(errors["ours-ort"], float(np.abs(got - want).max()))
        errors["ours-ort-as-written"] = max(errors["ours-ort-as-written"], float(np.abs(got - written).max()))
        errors["ort-fp32"] = max(errors["ort-fp32"], float(np.abs(want - reference).max()))
    # every Q and DQ as written: the same numbers; onnxruntime's fused integer kernels may round an output one
    # step of its quantization (1/255 for the softmax) the other way, as they do against its own unfused run
    assert errors["ours-ort-as-written"] <= 1e-6, errors
    assert errors["ours-ort"] <= (1 / 255 + 1e-6 if kind != "dynamic" else 1e-6), errors
    assert errors["ours-ort"] <= errors["ort-fp32"], errors
    weights = [graph.values[n.inputs[1]] for n in optimize(graph).nodes if n.op in ("gemm", "conv2d")]
    assert weights and all(w.quant is not None for w in weights)


@pytest.mark.parametrize("name", ["mlp", "small_cnn"])
def test_dropping_fake_quant_pairs_loses_the_activations_onnxruntime_folded_into_them(name: str) -> None:
    # onnxruntime's quantizer drops Relu (and relu6's Clip) before a uint8 QuantizeLinear whose range starts at
    # 0: the clip to the range is the activation, so the pairs must stay
    m = quantized(name, "static")
    kept, dropped = import_model(m), import_model(strip_activation_pairs(m))
    assert "Relu" not in {n.op_type for n in m.graph.node}
    worst = {"kept": 0.0, "dropped": 0.0, "ort-fp32": 0.0}
    for feeds in _samples(m):
        want, reference = ort_run(m, feeds)[0], ort_run(MODELS[name](), feeds)[0]
        for key, graph in (("kept", kept), ("dropped", dropped)):
            worst[key] = max(worst[key], float(np.abs(run_graph(graph, feeds)[graph.outputs[0]] - want).max()))
        worst["ort-fp32"] = max(worst["ort-fp32"], float(np.abs(want - reference).max()))
    assert worst["kept"] <= worst["ort-fp32"] < worst["dropped"], worst
    assert worst["dropped"] > 10 * worst["kept"], worst


def test_blocked_quantize_and_dequantize_of_a_runtime_tensor_match_onnxruntime() -> None:
    rng = np.random.default_rng(4)
    scale = numpy_helper.from_array(rng.uniform(0.01, 0.1, (3, 2)).astype(np.float32), "s")
    point = tensor("zp", "int8", rng.integers(-5, 5, (3, 2)))
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["q"], axis=1, block_size=4),
        helper.make_node("DequantizeLinear", ["q", "s", "zp"], ["y"], axis=1, block_size=4),
    ]
    m = model(nodes, {"x": ("float", (3, 7))}, {"q": "int8", "y": "float"}, [scale, point], 21)
    feeds = {"x": rng.uniform(-3, 3, (3, 7)).astype(np.float32)}
    graph = optimize(import_model(m))
    got = run_graph(graph, feeds)
    want = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
    np.testing.assert_array_equal(got["q"], want[0].astype(np.float32))  # the int8 values, carried as floats
    np.testing.assert_allclose(got["y"], want[1], rtol=1e-6, atol=1e-7)


def test_a_scale_and_zero_point_computed_at_run_time_quantize_per_tensor() -> None:
    # DynamicQuantizeLinear written out: the scale and the zero point come from the data
    two = numpy_helper.from_array(np.array(255.0, np.float32), "steps")
    nodes = [
        helper.make_node("ReduceMax", ["x"], ["hi"], keepdims=0),
        helper.make_node("Div", ["hi", "steps"], ["s"]),
        helper.make_node("Cast", ["steps"], ["zp"], to=TensorProto.UINT8),
        helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["q"]),
        helper.make_node("DequantizeLinear", ["q", "s", "zp"], ["y"]),
    ]
    m = model(nodes, {"x": ("float", (2, 5))}, {"q": "uint8", "y": "float"}, [two], 13)
    m = onnx.shape_inference.infer_shapes(m)
    feeds = {"x": np.random.default_rng(2).uniform(0, 4, (2, 5)).astype(np.float32)}
    graph = import_model(m)
    assert "reduce" in [n.op for n in graph.nodes]  # the scale is computed on the device
    got = run_graph(optimize(graph), feeds)
    want = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
    np.testing.assert_array_equal(got["q"], want[0].astype(np.float32))
    np.testing.assert_allclose(got["y"], want[1], rtol=1e-6, atol=1e-6)
    per_axis = model(
        [helper.make_node("DequantizeLinear", ["x", "r"], ["y"], axis=0)],
        {"x": ("int8", (3, 4)), "r": ("float", (3,))},
        {"y": "float"},
    )
    with pytest.raises(UnsupportedModelError, match=r"computed at run time must be one value, got shape \(3,\)"):
        import_model(per_axis)


def test_semantics_mismatch_allows_a_few_tie_flips_and_nothing_more() -> None:
    want = np.arange(1000, dtype=np.float32)
    assert semantics_mismatch(want.copy(), want) is None
    flipped = want.copy()
    flipped[: int(TIE_SHARE * want.size)] += 5.0  # one 5-unit step on 1% of the outputs: a tie flip
    assert semantics_mismatch(flipped, want) is None
    flipped[: int(TIE_SHARE * want.size) + 1] += 5.0  # one output more
    assert semantics_mismatch(flipped, want) is not None
    off = want.copy()
    off[0] += 0.05 * 999  # one output, far off
    assert semantics_mismatch(off, want) is not None
    assert semantics_mismatch(want * 1.01, want) is not None  # a wrong scale: every output off


def test_cosines_are_per_row_along_the_last_axis() -> None:
    want = np.array([[[3.0, 4.0], [1.0, 0.0], [0.0, 0.0], [2.0, 2.0]]], np.float32)
    got = np.array([[[6.0, 8.0], [0.0, 1.0], [0.0, 0.0], [0.0, 0.0]]], np.float32)
    # scaled: 1; orthogonal: 0; two zero rows: 1; one zero row: 0 (never a NaN that a min() would skip)
    np.testing.assert_allclose(cosines(got, want), [[1.0, 0.0, 1.0, 0.0]], atol=1e-12)
    np.testing.assert_allclose(cosines(-want, want), [[-1.0, -1.0, 1.0, -1.0]], atol=1e-12)
    assert cosines(got.reshape(-1), want).shape == (1, 4)  # a browser's flat outputs take the reference's shape
