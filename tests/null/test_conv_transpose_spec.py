"""conv_transpose2d spec, templates, ONNX import (ConvTranspose, 1-D windows) and export: no device needed."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from kernelforge.errors import InvalidParamsError, ShapeError
from kernelforge.export import export
from kernelforge.graph.ir import GraphError
from kernelforge.graph.lower import lower
from kernelforge.graph.onnx_import import UnsupportedModelError, import_model
from kernelforge.graph.passes import optimize
from kernelforge.graph.reference import run_graph
from kernelforge.ops import Limits, get_op
from kernelforge.ops._attrs import lift_1d_attrs
from kernelforge.ops._epilogue import Activation
from kernelforge.ops.conv_transpose import DEFAULT_PARAMS, GLSL_DEFAULT_PARAMS, ConvTransposeProblem
from kernelforge.templates import render
from kernelforge.testing.ops import assert_default_fits, assert_params_reach_template

SPEC = get_op("conv_transpose2d")
LIMITS = Limits()
TINY = Limits(max_invocations=32, max_wg_x=32, max_wg_y=32, max_workgroup_storage=1024, max_texture_size=2048)
SHAPES = [
    "1x1x1x1:1x1x1",
    "1x64x32x32:32x2x2:s2",  # a U-Net's upsampling
    "1x3x7x6:4x3x3:s3x2:p1:o1",  # the pytorch-converted conformance case
    "2x6x4x5:6x3x3:s2:p0,1,2,0:d2x1:g3",
    "1x8x5x5:8x4x4:s2:p1:g8",  # depthwise
    "1x4x4x4:8x3x3:s2:g4",  # depthwise, multiplier 2
    "1x16x1x50:8x1x5:s1x4:p0,2,0,2:o0x3",  # a lifted 1-D layer
    "1x3x200x300:3x3x3:s2:p1:o1",  # an output taller than a row-aligned texture
]
REPO_DB = Path(__file__).resolve().parents[2] / "tuning_db"
RTOL = 1e-4


# --- models --------------------------------------------------------------------------------------------------


def _model(
    nodes: list[onnx.NodeProto],
    inputs: list[onnx.ValueInfoProto],
    outputs: list[onnx.ValueInfoProto],
    inits: list[onnx.TensorProto],
    opset: int,
) -> onnx.ModelProto:
    model = helper.make_model(helper.make_graph(nodes, "model", inputs, outputs, inits))
    model.opset_import[0].version = opset
    model.ir_version = 8 if opset <= 17 else 10
    onnx.checker.check_model(model, full_check=True)
    return model


def _weight(rng: np.random.Generator, name: str, shape: Sequence[int]) -> onnx.TensorProto:
    fan_in = int(np.prod(shape[1:]))
    return numpy_helper.from_array((rng.standard_normal(shape) / np.sqrt(fan_in)).astype(np.float32), name)


def conv_transpose_model(
    x_shape: Sequence[int], w_shape: Sequence[int], bias: bool = True, opset: int = 17, **attrs: Any
) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """Return a one-node ConvTranspose model (weights as initializers), its feeds and ORT's output shape."""
    rng = np.random.default_rng(len(attrs))
    group = int(attrs.get("group", 1))
    inits = [_weight(rng, "w", w_shape)]
    if bias:
        inits.append(numpy_helper.from_array(rng.uniform(-1, 1, w_shape[1] * group).astype(np.float32), "b"))
    node = helper.make_node("ConvTranspose", ["x", "w", "b"][: 2 + bias], ["y"], name="up", **attrs)
    x = rng.standard_normal(x_shape).astype(np.float32)
    probe = helper.make_graph([node], "probe", [helper.make_tensor_value_info("x", 1, list(x_shape))], [], inits)
    probe.output.append(helper.make_tensor_value_info("y", TensorProto.FLOAT, None))
    y_shape = _ort(helper.make_model(probe, opset_imports=[helper.make_opsetid("", opset)]), {"x": x}).shape
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x_shape))]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(y_shape))]
    return _model([node], inputs, outputs, inits, opset), {"x": x}


def unet_model(opset: int = 17) -> onnx.ModelProto:
    """Return a tiny U-Net level: Conv (s2) -> Relu -> ConvTranspose (s2) -> Relu -> Concat(skip) -> Conv."""
    rng = np.random.default_rng(11)
    inits = [
        _weight(rng, "w_down", (16, 8, 3, 3)),
        numpy_helper.from_array(rng.uniform(-0.1, 0.1, 16).astype(np.float32), "b_down"),
        _weight(rng, "w_up", (16, 8, 2, 2)),
        numpy_helper.from_array(rng.uniform(-0.1, 0.1, 8).astype(np.float32), "b_up"),
        _weight(rng, "w_out", (3, 16, 3, 3)),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w_down", "b_down"], ["d"], pads=[1, 1, 1, 1], strides=[2, 2], name="down"),
        helper.make_node("Relu", ["d"], ["dr"], name="down_relu"),
        helper.make_node("ConvTranspose", ["dr", "w_up", "b_up"], ["u"], strides=[2, 2], name="up"),
        helper.make_node("Relu", ["u"], ["ur"], name="up_relu"),
        helper.make_node("Concat", ["ur", "x"], ["cat"], axis=1, name="skip"),
        helper.make_node("Conv", ["cat", "w_out"], ["y"], pads=[1, 1, 1, 1], name="out"),
    ]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 12, 10])]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 12, 10])]
    return _model(nodes, inputs, outputs, inits, opset)


def audio_model(opset: int = 17) -> onnx.ModelProto:
    """Return a tiny audio front end: Conv1d -> Relu -> MaxPool1d (SAME) -> Conv1d (dilated) on [2, 4, 40]."""
    rng = np.random.default_rng(12)
    inits = [
        _weight(rng, "w1", (8, 4, 5)),
        numpy_helper.from_array(rng.uniform(-0.1, 0.1, 8).astype(np.float32), "b1"),
        _weight(rng, "w2", (6, 8, 3)),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], kernel_shape=[5], pads=[2, 2], strides=[2], name="c1"),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu"),
        helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[3], strides=[2], auto_pad="SAME_UPPER", name="pool"),
        helper.make_node("Conv", ["p1", "w2"], ["y"], dilations=[2], pads=[2, 2], name="c2"),
    ]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4, 40])]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 6, 10])]
    return _model(nodes, inputs, outputs, inits, opset)


def _ort(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)[0]


def _assert_close(got: np.ndarray, want: np.ndarray) -> None:
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=0, atol=RTOL * max(float(np.abs(want).max()), 1e-6))


# --- problems and keys ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text,out",
    [
        ("1x64x32x32:32x2x2:s2", (1, 32, 64, 64)),
        ("1x3x7x6:4x3x3:s3x2:p1:o1", (1, 4, 20, 12)),
        ("2x6x4x5:6x3x3:s2:p0,1,2,0:d2x1:g3", (2, 6, 9, 10)),
        ("1x2x3x3:2x4x4:s2:o1x1", (1, 2, 9, 9)),
        ("1x4x1x9:2x1x3", (1, 2, 1, 11)),
    ],
)
def test_parse_key_round_trip_and_output_shape(text, out):
    problem = SPEC.parse_problem(text)
    assert SPEC.output_shape(problem) == out
    key = SPEC.problem_key(problem)
    assert SPEC.parse_problem(key) == problem and ";" not in key


@pytest.mark.parametrize(
    "text",
    ["", "1x2x3:4x3x3", "1x2x3x3:4x3", "1x2x3x3:4x3x3:s", "1x2x3x3:4x3x3:s1:s2", "1x2x3x3:4x3x3:q1",
     "1x2x3x3:4x3x3:p1,2", "1x2x3x3:4x3x3:g1x2", "1x2x3x3:4x3x3:s0", "1x2x3x3:4x3x3:g3", "1x2x3x3:4x3x3:p3,0,2,0"],
)  # fmt: skip
def test_bad_shape_strings_name_the_op(text):
    with pytest.raises(ShapeError, match="conv_transpose2d"):
        SPEC.parse_problem(text)


@pytest.mark.parametrize(
    "kwargs,field",
    [
        ({"n": 0}, "n"),
        ({"kh": True}, "kh"),
        ({"strides": (0, 1)}, "strides"),
        ({"pads": (0, 0, -1, 0)}, "pads"),
        ({"output_padding": (1,)}, "output_padding"),
        ({"dilations": (1, 2.0)}, "dilations"),
        ({"group": 3}, "group"),
        ({"pads": (5, 0, 5, 0)}, "crop"),
        ({"has_bias": 1}, "has_bias"),
    ],
)
def test_problem_validation_names_the_field(kwargs, field):
    base = {"n": 1, "c": 4, "h": 3, "w": 3, "m": 4, "kh": 3, "kw": 3}
    with pytest.raises(ShapeError, match=f"conv_transpose2d: .*{field}"):
        ConvTransposeProblem(**{**base, **kwargs})


# --- ONNX attributes and node problems -----------------------------------------------------------------------


def _node_problem(x, w, bias=None, **attrs) -> ConvTransposeProblem:
    node_attrs = SPEC.from_onnx("ConvTranspose", 17, attrs)
    return SPEC.from_node([x, w, bias], node_attrs)


@pytest.mark.parametrize(
    "x,w,attrs",
    [
        ((1, 2, 3, 3), (2, 2, 3, 3), {"auto_pad": "SAME_UPPER", "strides": [2, 2]}),  # odd total: extra at the end
        ((1, 2, 3, 3), (2, 2, 3, 3), {"auto_pad": "SAME_LOWER", "strides": [2, 2]}),
        ((1, 2, 3, 4), (2, 2, 4, 4), {"auto_pad": "SAME_UPPER", "strides": [2, 2]}),
        ((1, 2, 3, 3), (2, 2, 3, 3), {"auto_pad": "VALID", "strides": [2, 1], "output_padding": [1, 0]}),
        ((1, 2, 3, 3), (2, 2, 4, 4), {"output_shape": [7, 8], "strides": [2, 2]}),
        ((1, 2, 3, 3), (2, 2, 4, 4), {"output_shape": [7, 7], "strides": [2, 2], "auto_pad": "SAME_UPPER"}),
        ((1, 2, 3, 3), (2, 2, 4, 4), {"output_shape": [9, 9], "strides": [2, 2]}),  # longer than the full result
        ((1, 2, 3, 3), (2, 2, 3, 3), {"strides": [3, 2], "output_padding": [1, 1], "pads": [1, 0, 2, 1]}),
        ((1, 2, 3, 3), (2, 2, 3, 3), {"strides": [3, 2], "output_shape": [10, 8], "output_padding": [1, 1]}),
    ],
)
def test_pads_and_output_size_match_onnxruntime(x, w, attrs):
    model, feeds = conv_transpose_model(x, w, bias=False, **attrs)
    problem = _node_problem(x, w, **attrs)
    want = _ort(model, feeds)
    weights = numpy_helper.to_array(model.graph.initializer[0])
    _assert_close(SPEC.reference(problem, [feeds["x"], weights]), want)


def test_same_with_a_window_narrower_than_the_stride_is_refused():
    # ONNX Runtime clamps the pads at 0 (7x7), onnx.reference pads negatively (9x9): no answer to match
    with pytest.raises(ShapeError, match=r"SAME_UPPER.*narrower than stride 3.*disagree"):
        _node_problem((1, 1, 3, 3), (1, 1, 1, 1), auto_pad="SAME_UPPER", strides=[3, 3])


@pytest.mark.parametrize(
    "attrs,message",
    [
        ({"kernel_shape": [3, 3, 3]}, "3-D ConvTranspose is not supported"),
        ({"strides": [2], "pads": [1, 1, 1, 1]}, "disagree on the number of spatial axes"),
        ({"pads": [1, 1, 1]}, "disagree"),
        ({"auto_pad": "SAME"}, "auto_pad='SAME'"),
        ({"group": 0}, "group=0"),
        ({"strides": [0, 1]}, "strides=\\[0, 1\\]"),
        ({"output_padding": [-1, 0]}, "output_padding"),
        ({"output_shape": [4, 4, 4]}, "3-D ConvTranspose"),
        ({"output_shape": [1, 2, 7, 7]}, "4-D ConvTranspose"),  # N and C included: ONNX Runtime refuses it too
    ],
)
def test_from_onnx_names_unsupported_attributes(attrs, message):
    with pytest.raises(ValueError, match=message):
        SPEC.from_onnx("ConvTranspose", 17, attrs)


def test_from_onnx_lifts_1d_attributes_over_a_unit_height():
    attrs = SPEC.from_onnx(
        "ConvTranspose", 17, {"strides": [2], "pads": [1, 0], "output_padding": [1], "output_shape": [9]}
    )
    assert attrs["strides"] == (1, 2) and attrs["pads"] == (0, 1, 0, 0) and attrs["output_padding"] == (0, 1)
    assert attrs["output_shape"] == (1, 9) and attrs["dilations"] == (1, 1) and attrs["auto_pad"] == "NOTSET"
    assert lift_1d_attrs({"kernel_shape": [3], "pads": [2, 1], "auto_pad": b"VALID", "group": 2}) == {
        "kernel_shape": [1, 3],
        "pads": [0, 2, 0, 1],
        "auto_pad": b"VALID",
        "group": 2,
    }


def test_from_node_checks_weights_kernel_shape_and_bias():
    with pytest.raises(ShapeError, match="must have X's 4 input channels"):
        _node_problem((1, 4, 3, 3), (2, 4, 3, 3))
    with pytest.raises(ShapeError, match="kernel_shape \\(2, 2\\) differs"):
        _node_problem((1, 4, 3, 3), (4, 2, 3, 3), kernel_shape=[2, 2])
    with pytest.raises(ShapeError, match="bias of shape \\(2,\\) must be \\[4\\]"):
        _node_problem((1, 4, 3, 3), (4, 2, 3, 3), (2,), group=2)
    with pytest.raises(ShapeError, match="must be 4-D"):
        _node_problem((1, 4, 3), (4, 2, 3))
    call = lower("conv_transpose2d", [(1, 4, 3, 3), (4, 2, 3, 3), (4,)], {"group": 2}, ["x", "w", "b"])
    assert call.problem.m == 4 and call.problem.has_bias and call.inputs == ("x", "w", "b")


# --- the reference -------------------------------------------------------------------------------------------


def test_reference_matches_a_hand_computation():
    # 1-D along x: inputs [1, 2] with a 3-tap kernel [1, 10, 100], stride 2: taps land at 0..2 and 2..4
    x = np.array([1.0, 2.0], np.float32).reshape(1, 1, 1, 2)
    w = np.array([1.0, 10.0, 100.0], np.float32).reshape(1, 1, 1, 3)
    problem = ConvTransposeProblem(1, 1, 1, 2, 1, 1, 3, strides=(1, 2))
    np.testing.assert_array_equal(SPEC.reference(problem, [x, w]).reshape(-1), [1, 10, 102, 20, 200])
    cropped = ConvTransposeProblem(1, 1, 1, 2, 1, 1, 3, strides=(1, 2), pads=(0, 1, 0, 0), output_padding=(0, 2))
    np.testing.assert_array_equal(SPEC.reference(cropped, [x, w]).reshape(-1), [10, 102, 20, 200, 0, 0])
    with_act = ConvTransposeProblem(1, 1, 1, 2, 1, 1, 3, strides=(1, 2), has_bias=True, activation=Activation("relu"))
    bias = np.array([-50.0], np.float32)
    np.testing.assert_array_equal(SPEC.reference(with_act, [x, w, bias]).reshape(-1), [0, 0, 52, 0, 150])


@pytest.mark.parametrize(
    "x,w,attrs",
    [
        ((1, 3, 7, 6), (3, 4, 3, 3), {"strides": [3, 2], "pads": [1, 1, 1, 1], "output_padding": [1, 1]}),
        ((2, 4, 5, 5), (4, 3, 2, 2), {"strides": [2, 2]}),
        ((1, 6, 4, 5), (6, 2, 3, 3), {"strides": [2, 2], "group": 3, "dilations": [2, 1], "pads": [0, 1, 2, 0]}),
        ((1, 4, 4, 4), (4, 1, 3, 3), {"strides": [2, 2], "group": 4, "auto_pad": "SAME_LOWER"}),
        ((1, 2, 3, 5), (2, 2, 3, 2), {"strides": [3, 2], "dilations": [2, 3], "output_padding": [2, 1]}),
    ],
)
def test_reference_matches_onnxruntime_and_onnx_reference(x, w, attrs):
    from onnx.reference import ReferenceEvaluator

    model, feeds = conv_transpose_model(x, w, **attrs)
    inits = [numpy_helper.to_array(t) for t in model.graph.initializer]
    got = SPEC.reference(_node_problem(x, w, inits[1].shape, **attrs), [feeds["x"], *inits])
    _assert_close(got, _ort(model, feeds))
    if attrs.get("group", 1) == 1:  # onnx.reference mis-adds the bias of grouped ones (ONNX Runtime agrees with us)
        _assert_close(got, ReferenceEvaluator(model).run(None, feeds)[0])


# --- params, constraints and kernels -------------------------------------------------------------------------


@pytest.mark.parametrize("language", ["wgsl", "glsl"])
def test_every_param_reaches_the_template(language):
    assert_params_reach_template(SPEC, language)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("limits", [LIMITS, TINY], ids=["default", "tiny"])
@pytest.mark.parametrize("language", ["wgsl", "glsl"])
def test_default_fits_and_space_is_usable(shape, limits, language):
    problem = SPEC.parse_problem(shape)
    params = assert_default_fits(SPEC, problem, limits, language)
    assert SPEC.validate_params(params, language) == params
    for seed in SPEC.seed_params(problem, limits, language):
        assert SPEC.constraints(problem, seed, limits, language) is None


def test_constraints_name_what_breaks():
    problem = SPEC.parse_problem("1x6x4x4:6x3x3:s2:g3")  # 2 output channels per group
    checks = [
        ({**DEFAULT_PARAMS, "wpt_o": 8, "vec_width": 1}, "wpt_o=8 > output channels per group 2"),
        ({**DEFAULT_PARAMS, "vec_width": 4, "wpt_o": 4}, "vec_width=4 needs output channels per group"),
        ({**DEFAULT_PARAMS, "vec_width": 1, "wpt_o": 2, "tile_k": 4}, "tile_k=4 > input channels per group 2"),
        ({**DEFAULT_PARAMS, "vec_width": 1, "wpt_o": 1, "wg_x": 64, "wg_y": 8}, "512 invocations"),
        ({**DEFAULT_PARAMS, "vec_width": 4, "wpt_o": 2}, "not a multiple of vec_width"),
    ]
    for params, message in checks:
        reason = SPEC.constraints(problem, params, LIMITS, "wgsl")
        assert reason is not None and message in reason, (params, reason)
    wide = SPEC.parse_problem("1x64x8x8:64x2x2:s2")
    tall = {**DEFAULT_PARAMS, "wpt_p": 16, "wpt_o": 16, "tile_k": 8, "vec_width": 4, "wg_x": 4}
    assert "wide tiles" in (SPEC.constraints(wide, tall, LIMITS, "wgsl") or "")
    assert SPEC.constraints(wide, tall, Limits(wide_tiles=True), "wgsl") is None
    scalar = {**tall, "vec_width": 1}
    assert "2048 FMAs > 1024" in (SPEC.constraints(wide, scalar, Limits(wide_tiles=True), "wgsl") or "")
    grouped = SPEC.parse_problem("1x6x4x4:6x3x3:s2:g3")
    reason = SPEC.constraints(grouped, GLSL_DEFAULT_PARAMS, LIMITS, "glsl")
    assert reason is not None and "multiples of 4" in reason
    assert SPEC.default_params(grouped, LIMITS, "glsl")["layout"] == 0


def test_phase_tiles_cover_every_output_pixel_once():
    problem = SPEC.parse_problem("1x2x5x7:2x3x3:s3x3:p1:o2")  # 16x20 output, stride 3: uneven phases
    params = {**DEFAULT_PARAMS, "wpt_p": 4, "wg_x": 4}
    launch = SPEC.launch(problem, params)
    tiles, row_tiles, sx = launch.uniforms[1], SPEC._row_tiles(problem, params), 3
    assert launch.uniforms[0] == problem.oh * problem.ow and tiles == problem.oh * sx * row_tiles
    covered = []
    for t in range(tiles):  # the kernel's own arithmetic (phase=1)
        oy, phase, q = t // (sx * row_tiles), (t // row_tiles) % sx, t % row_tiles
        first = phase + q * params["wpt_p"] * sx
        covered += [(oy, first + i * sx) for i in range(params["wpt_p"]) if first + i * sx < problem.ow]
    assert sorted(covered) == [(y, x) for y in range(problem.oh) for x in range(problem.ow)]
    assert launch.workgroups == (-(-tiles // 4), 1, 1)


def test_rendered_sources_reflect_params():
    problem = SPEC.parse_problem("1x8x5x6:8x3x3:s2:p1:o1")
    phase = render(SPEC, "wgsl", problem, DEFAULT_PARAMS)
    assert "@workgroup_size(16, 2, 1)" in phase and "array<vec4<f32>>" in phase and "act4(v)" in phase
    assert "if (tx % SX != 0)" in phase and "ok0 | ok1" not in phase
    plain = render(SPEC, "wgsl", problem, {**DEFAULT_PARAMS, "phase": 0, "layout": 0, "wpt_p": 2})
    assert "if (!(ok0 | ok1))" in plain and "for (var e = 0u; e < 4u; e++)" in plain
    biased = lower("conv_transpose2d", [(1, 8, 5, 6), (8, 8, 3, 3), (8,)], {"strides": (2, 2)}, ["x", "w", "b"])
    relu = ConvTransposeProblem(**{**biased.problem.__dict__, "activation": Activation("relu")})
    text = render(SPEC, "wgsl", relu, DEFAULT_PARAMS)
    assert "@binding(3) var<storage, read> bias" in text and "@binding(4)" in text and "max(x, vec4<f32>(0.0))" in text
    glsl = render(SPEC, "glsl", relu, {"layout": 1, "c_unroll": 2, "square": 1}, target="web")
    assert glsl.startswith("#version 300 es") and "uniform sampler2D BIAS;" in glsl and "kf_coord" in glsl
    nchw = render(SPEC, "glsl", problem, {"layout": 0, "c_unroll": 4, "square": 0})
    assert "out float o0;" in nchw and "BIAS" not in nchw


@pytest.mark.parametrize(
    "bad",
    [
        {**DEFAULT_PARAMS, "phase": 2},
        {**DEFAULT_PARAMS, "wpt_p": 32},
        {k: v for k, v in DEFAULT_PARAMS.items() if k != "tile_k"},
        {**DEFAULT_PARAMS, "layout": True},
    ],
)
def test_params_are_validated_before_rendering(bad):
    with pytest.raises(InvalidParamsError):
        render(SPEC, "wgsl", SPEC.parse_problem("1x8x5x6:8x3x3:s2"), bad)


def test_device_inputs_rearrange_weights_per_kernel():
    problem = SPEC.parse_problem("1x4x2x3:6x2x2:s2:g2")  # W [4, 3, 2, 2]
    x, w = SPEC.make_inputs(problem, np.random.default_rng(0))
    wgsl = SPEC.device_inputs(problem, DEFAULT_PARAMS, [x, w])
    np.testing.assert_array_equal(wgsl[0], x.transpose(0, 2, 3, 1))
    np.testing.assert_array_equal(wgsl[1][1, 0, 3, 2], w[3, 2, 1, 0])  # [kh, kw, c, mg]
    packed = SPEC.device_inputs(problem, {"layout": 1, "c_unroll": 1, "square": 0}, [x, w])[1]
    assert packed.shape == (2 * 2 * 2, 6)
    # row (ky*kw + kx)*cg + ci, column g*mg + o: channel 3 is group 1's ci 1; output 2 of group 1 is column 5
    assert packed[(1 * 2 + 0) * 2 + 1, 5] == w[3, 2, 1, 0]
    plain = SPEC.device_inputs(problem, {"layout": 0, "c_unroll": 1, "square": 0}, [x, w])
    np.testing.assert_array_equal(plain[1], w.reshape(4, 12))
    assert SPEC.input_layouts(problem, {"layout": 0, "c_unroll": 1, "square": 0}) == (None, None, None)
    with pytest.raises(ShapeError, match="2 inputs expected"):
        SPEC.device_inputs(problem, DEFAULT_PARAMS, [x])
    with pytest.raises(ShapeError, match="W has 2 values"):
        SPEC.device_inputs(problem, DEFAULT_PARAMS, [x, w[:1, :1, :1, :2]])


def test_gl_launch_textures():
    problem = SPEC.parse_problem("2x8x3x5:4x3x3:s2")
    nhwc = SPEC.gl_launch(problem, {"layout": 1, "c_unroll": 1, "square": 0})
    assert [(t.rows, t.cols, t.pack) for t in nhwc.inputs] == [(30, 8, 4), (72, 4, 4)]
    assert (nhwc.rows, nhwc.cols) == (2 * 7 * 11, 4)
    nchw = SPEC.gl_launch(problem, {"layout": 0, "c_unroll": 1, "square": 1})
    assert [(t.rows, t.cols, t.pack, t.square) for t in nchw.inputs] == [(48, 5, 1, True), (8, 36, 1, True)]
    assert nchw.samplers == ("X", "W") and (nchw.rows, nchw.cols) == (2 * 4 * 7, 11)


# --- ONNX import ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("opset", [11, 17, 22])
def test_unet_imports_fuses_and_matches_onnxruntime(opset):
    model = unet_model(opset)
    graph = optimize(import_model(model))
    assert [n.op for n in graph.nodes] == ["conv2d", "conv_transpose2d", "concat", "conv2d"]
    up = graph.nodes[1]
    assert up.attrs["activation"] == Activation("relu") and len(up.inputs) == 3 and up.origin.startswith("Conv")
    x = np.random.default_rng(0).standard_normal((1, 8, 12, 10)).astype(np.float32)
    _assert_close(run_graph(graph, {"x": x})["y"], _ort(model, {"x": x}))


@pytest.mark.parametrize("opset", [11, 17, 22])
def test_audio_model_runs_its_1d_windows_as_2d_kernels(opset):
    model = audio_model(opset)
    graph = import_model(model)
    kernels = [n.op for n in graph.nodes if n.op != "reshape"]
    assert kernels == ["conv2d", "elementwise", "pool2d", "conv2d"]
    pool = next(n for n in graph.nodes if n.op == "pool2d")
    assert pool.attrs["kernel_shape"] == (1, 3) and pool.attrs["pads"] == (0, 0, 0, 1)
    conv = graph.nodes[[n.op for n in graph.nodes].index("conv2d")]
    assert graph.value(conv.inputs[1]).shape == (8, 4, 1, 5) and graph.value(conv.inputs[1]).is_const
    x = np.random.default_rng(1).standard_normal((2, 4, 40)).astype(np.float32)
    _assert_close(run_graph(optimize(graph), {"x": x})["y"], _ort(model, {"x": x}))


@pytest.mark.parametrize(
    "op,attrs,x_shape,w_shape",
    [
        ("ConvTranspose", {"strides": [2], "output_padding": [1], "pads": [1, 0]}, (2, 4, 9), (4, 3, 3)),
        ("ConvTranspose", {"strides": [3], "group": 2, "auto_pad": "SAME_LOWER"}, (1, 4, 6), (4, 2, 4)),
        ("ConvTranspose", {"strides": [2], "output_shape": [12]}, (1, 2, 5), (2, 3, 3)),
        ("Conv", {"strides": [2], "dilations": [2], "pads": [3, 1], "group": 2}, (1, 4, 20), (6, 2, 3)),
        ("Conv", {"auto_pad": "SAME_LOWER", "strides": [3]}, (1, 3, 11), (2, 3, 4)),
        ("AveragePool", {"kernel_shape": [3], "pads": [1, 1], "count_include_pad": 1}, (2, 3, 10), None),
        ("AveragePool", {"kernel_shape": [4], "strides": [3], "ceil_mode": 1}, (1, 2, 11), None),
        ("MaxPool", {"kernel_shape": [3], "dilations": [2], "strides": [2], "pads": [2, 0]}, (1, 2, 13), None),
        ("GlobalAveragePool", {}, (2, 3, 7), None),
        ("GlobalMaxPool", {}, (2, 3, 7), None),
    ],
)
def test_1d_nodes_match_onnxruntime(op, attrs, x_shape, w_shape):
    rng = np.random.default_rng(2)
    inits = [] if w_shape is None else [_weight(rng, "w", w_shape)]
    node = helper.make_node(op, ["x", *(i.name for i in inits)], ["y"], name="n", **attrs)
    x = rng.standard_normal(x_shape).astype(np.float32)
    probe = helper.make_model(
        helper.make_graph([node], "p", [helper.make_tensor_value_info("x", 1, list(x_shape))], [], inits)
    )
    probe.graph.output.append(helper.make_tensor_value_info("y", TensorProto.FLOAT, None))
    probe.opset_import[0].version = 19
    want = _ort(probe, {"x": x})
    model = _model(
        [node],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x_shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(want.shape))],
        inits,
        19,
    )
    graph = import_model(model)
    assert [n.op for n in graph.nodes][::2] == ["reshape", "reshape"] and len(graph.nodes) == 3
    _assert_close(run_graph(graph, {"x": x})["y"], want)


def test_1d_conv_with_a_runtime_weight_reshapes_it_on_the_device():
    nodes = [helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1], name="c")]
    inputs = [
        helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 8]),
        helper.make_tensor_value_info("w", TensorProto.FLOAT, [3, 2, 3]),
    ]
    model = _model(nodes, inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 8])], [], 17)
    graph = import_model(model)
    assert [n.op for n in graph.nodes] == ["reshape", "reshape", "conv2d", "reshape"]
    rng = np.random.default_rng(3)
    feeds = {"x": rng.standard_normal((1, 2, 8)).astype(np.float32), "w": rng.standard_normal((3, 2, 3))}
    feeds["w"] = feeds["w"].astype(np.float32)
    _assert_close(run_graph(graph, feeds)["y"], _ort(model, feeds))


def test_unsupported_windows_are_listed_with_their_reason():
    rng = np.random.default_rng(4)
    nodes = [
        helper.make_node("ConvTranspose", ["x", "w"], ["a"], kernel_shape=[2, 2, 2], auto_pad="VALID", name="up3d"),
        helper.make_node("Conv", ["x", "w"], ["b"], kernel_shape=[2, 2, 2], name="conv3d"),  # 3-D pools run
        helper.make_node("ConvTranspose", ["x", "w"], ["c"], auto_pad="SAME", name="bad_pad"),
    ]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4, 4])]
    outputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in "abc"]
    graph = helper.make_graph(nodes, "g", inputs, outputs, [_weight(rng, "w", (2, 2, 2, 2, 2))])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(UnsupportedModelError) as info:
        import_model(model)
    lines = str(info.value).splitlines()[1:]
    assert lines == [
        "ConvTranspose node 'up3d' (opset 17): a 3-D ConvTranspose takes explicit pads only (no auto_pad or "
        "output_shape)",
        "Conv node 'conv3d' (opset 17): kernel_shape=[2, 2, 2]: only 1-D and 2-D windows are supported",
        "ConvTranspose node 'bad_pad' (opset 17): auto_pad='SAME' (supported: NOTSET, VALID, SAME_UPPER, SAME_LOWER)",
    ]


def test_bad_shapes_fail_at_import_naming_the_node():
    model, _ = conv_transpose_model((1, 4, 3, 3), (4, 2, 3, 3), bias=False)
    model.graph.initializer[0].CopyFrom(numpy_helper.from_array(np.ones((2, 2, 3, 3), np.float32), "w"))
    with pytest.raises(GraphError, match=r"ConvTranspose node 'up' .*X's 4 input channels"):
        import_model(model)
    narrow, _ = conv_transpose_model((1, 1, 3, 3), (1, 1, 1, 1), bias=False, strides=[2, 2])
    narrow.graph.node[0].attribute.append(helper.make_attribute("auto_pad", "SAME_UPPER"))
    with pytest.raises(GraphError, match=r"ConvTranspose node 'up' .*disagree"):
        import_model(narrow)
    nodes = [helper.make_node("Conv", ["x", "w"], ["y"], name="c1d")]
    bad_w = numpy_helper.from_array(np.ones((2, 2, 1, 3), np.float32), "w")
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 8])]
    model = helper.make_model(helper.make_graph(nodes, "g", inputs, [], [bad_w]))
    model.graph.output.append(helper.make_tensor_value_info("y", TensorProto.FLOAT, None))
    with pytest.raises(GraphError, match=r"Conv node 'c1d' .*weight 'w' of shape \(2, 2, 1, 3\) must be 3-D"):
        import_model(model)


def test_export_writes_conv_transpose_steps_for_both_languages(tmp_path):
    export(unet_model(), tmp_path / "bundle", db=REPO_DB)
    manifest = json.loads((tmp_path / "bundle" / "manifest.json").read_text())
    languages = set()
    for target in manifest["targets"]:
        steps = [s for s in target["plan"]["steps"] if s["op"] == "conv_transpose2d"]
        assert [s["node"] for s in steps] == ["up"], target["id"]
        assert "SY" in manifest["shaders"][steps[0]["shader"]]
        ops = [s["op"] for s in target["plan"]["steps"]]
        if target["language"] == "wgsl":  # the layout pass keeps the whole U-Net level in one layout
            assert ops.count("transpose") <= 2, ops
        languages.add(target["language"])
    assert languages == {"wgsl", "glsl"}


def test_runtime_weights_run_grouped_ones_per_group():
    inputs = [
        helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 8]),
        helper.make_tensor_value_info("w", TensorProto.FLOAT, [2, 3, 3]),
    ]
    out = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 17])]
    # a weight that is a graph input reaches the kernel through a relayout to the order it reads
    nodes = [helper.make_node("ConvTranspose", ["x", "w"], ["y"], strides=[2], name="up1d")]
    model = _model(nodes, inputs, out, [], 17)
    rng = np.random.default_rng(3)
    feeds = {
        "x": rng.standard_normal((1, 2, 8)).astype(np.float32),
        "w": rng.standard_normal((2, 3, 3)).astype(np.float32),
    }
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    np.testing.assert_allclose(run_graph(import_model(model), feeds)["y"], want, rtol=1e-5, atol=1e-5)
    # grouped (2 groups of 2 input and 3 output channels, a constant bias): one ungrouped kernel per group
    inputs = [
        helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8]),
        helper.make_tensor_value_info("w", TensorProto.FLOAT, [4, 3, 3]),
    ]
    bias = numpy_helper.from_array(rng.standard_normal(6).astype(np.float32), "b")
    grouped = [helper.make_node("ConvTranspose", ["x", "w", "b"], ["y"], strides=[2], group=2, name="up_g")]
    out = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 6, 17])]
    model = _model(grouped, inputs, out, [bias], 17)
    feeds = {
        "x": rng.standard_normal((1, 4, 8)).astype(np.float32),
        "w": rng.standard_normal((4, 3, 3)).astype(np.float32),
    }
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    graph = import_model(model)
    assert [n.op for n in graph.nodes].count("conv_transpose2d") == 2
    np.testing.assert_allclose(run_graph(graph, feeds)["y"], want, rtol=1e-5, atol=1e-5)


def test_bias_add_and_activation_fuse_into_the_kernel():
    rng = np.random.default_rng(5)
    inits = [
        _weight(rng, "w", (4, 6, 2, 2)),
        numpy_helper.from_array(rng.uniform(-1, 1, (1, 6, 1, 1)).astype(np.float32), "shift"),
    ]
    nodes = [
        helper.make_node("ConvTranspose", ["x", "w"], ["u"], strides=[2, 2], name="up"),
        helper.make_node("Add", ["u", "shift"], ["s"], name="add"),
        helper.make_node("LeakyRelu", ["s"], ["y"], alpha=0.2, name="act"),
    ]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4, 3, 5])]
    model = _model(nodes, inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 6, 6, 10])], inits, 17)
    graph = optimize(import_model(model))
    (node,) = graph.nodes
    assert node.op == "conv_transpose2d" and node.attrs["activation"].kind == "leaky_relu"
    assert graph.value(node.inputs[2]).shape == (6,)
    x = rng.standard_normal((2, 4, 3, 5)).astype(np.float32)
    _assert_close(run_graph(graph, {"x": x})["y"], _ort(model, {"x": x}))
