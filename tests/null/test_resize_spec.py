"""Resize spec, reference (vs onnx.reference), parsing and templates: no device needed."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from kernelforge.api._tensor import _pair
from kernelforge.errors import InvalidParamsError, ShapeError
from kernelforge.ops import Limits, get_op
from kernelforge.ops.resize import (
    COORDINATE_MODES,
    DEFAULT_PARAMS,
    NEAREST_MODES,
    ResizeProblem,
    axis_table,
)
from kernelforge.templates import render
from kernelforge.testing.ops import assert_default_fits, assert_params_reach_template, every_config

SPEC = get_op("resize")
LIMITS = Limits()
# (H, W) inputs and (scale_h, scale_w): size-1 axes, upscale, downscale, non-integer, identity, mixed
CASES = [
    ((1, 1), (3.0, 2.0)),
    ((5, 7), (2.0, 2.0)),
    ((8, 6), (0.5, 0.5)),
    ((5, 7), (1.7, 0.6)),
    ((7, 4), (0.3, 3.3)),
    ((3, 5), (1.0, 1.5)),
    ((9, 2), (0.75, 1.25)),
]


def onnx_resize(x, scales=None, sizes=None, op="Resize", opset=19, roi=None, **attrs):
    """Run one ONNX Resize (or Upsample) node through onnx.reference (``roi``: ONNX's starts then ends)."""
    from onnx import TensorProto, helper
    from onnx.reference import ReferenceEvaluator

    inits = []
    if op == "Upsample":
        inputs = ["x", "scales"]
        inits.append(helper.make_tensor("scales", TensorProto.FLOAT, [4], scales))
    elif scales is not None:
        inputs = ["x", "", "scales"]
        inits.append(helper.make_tensor("scales", TensorProto.FLOAT, [len(scales)], scales))
    else:
        inputs = ["x", "", "", "sizes"]
        inits.append(helper.make_tensor("sizes", TensorProto.INT64, [len(sizes)], sizes))
    if roi is not None:
        inputs[1] = "roi"
        inits.append(helper.make_tensor("roi", TensorProto.FLOAT, [len(roi)], roi))
    graph = helper.make_graph(
        [helper.make_node(op, inputs, ["y"], **attrs)],
        "resize",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)
    return ReferenceEvaluator(model).run(None, {"x": x})[0]


@pytest.mark.parametrize("language", ["wgsl", "glsl"])
def test_every_param_reaches_the_template(language):
    assert_params_reach_template(SPEC, language)


@pytest.mark.parametrize(
    "shape", ["1x1x1x1:s1,1", "1x3x224x224:s2,2:linear", "1x64x28x28:o1,1", "2x256x32x32:s4,4", "1x5x3x9000:s1,0.5"]
)
@pytest.mark.parametrize("language", ["wgsl", "glsl"])
def test_default_params_always_fit(shape, language):
    problem = SPEC.parse_problem(shape)
    for limits in (LIMITS, Limits(max_invocations=32, max_wg_x=16, max_wg_y=16)):
        assert_default_fits(SPEC, problem, limits, language)


def test_tall_grids_spill_into_z():
    problem = SPEC.parse_problem("2x256x32x32:s4,4")  # 2*256*128 = 65536 output rows
    launch = SPEC.launch(problem, {"wg_x": 1, "wg_y": 1, "opt": 1, "layout": 0})
    _, gy, gz = launch.workgroups
    assert gz == 2 and gy <= 65535 and gy * gz >= 65536
    assert launch.uniforms == (128, 65536, gy, 0)
    assert SPEC.constraints(problem, {"wg_x": 1, "wg_y": 1, "opt": 1, "layout": 0}, LIMITS, "wgsl") is None


def test_constraints_name_the_reason():
    problem = SPEC.parse_problem("1x8x32x32:s2,2")
    assert "invocations" in SPEC.constraints(problem, {**DEFAULT_PARAMS, "wg_x": 64, "wg_y": 16}, LIMITS, "wgsl")
    assert "per-axis" in SPEC.constraints(problem, DEFAULT_PARAMS, Limits(max_wg_x=8), "wgsl")
    tall = SPEC.parse_problem("1x64x224x224:s1,1")  # 14336 rows of NCHW texture
    assert "MAX_TEXTURE_SIZE" in SPEC.constraints(tall, {"layout": 0, "square": 0}, LIMITS, "glsl")
    assert SPEC.default_params(tall, LIMITS, "glsl") == {"layout": 0, "square": 1}


@pytest.mark.parametrize(
    "text",
    [
        "",
        "1x3x4x4",
        "1x3x4:s2,2",
        "1x3x4x4:s2",
        "1x3x4x4:s2,2:o8,8",
        "1x3x4x4:s2,2:linear:nearest",
        "1x3x4x4:s2,2:cubic:a-0.5:a-0.6",
        "1x3x4x4:s2,2:linear:a-0.5",  # the cubic coefficient outside cubic mode
        "1x3x4x4:s2,2:nearest:antialias",
        "1x3x4x4:s2,2:nearest:exclude",
        "1x3x4x4:s2,2:linear:e1",  # an extrapolation value outside tf_crop_and_resize
        "1x3x4x4:s2,2:linear:r0,0,0.5,0.5",
        "1x3x4x4:s2,2:linear:tf_crop_and_resize:r0,0,1",
        "1x3x4x4:s2,2:linear:tf_crop_and_resize:ex",
        "1x3x4x4:s2,2:cubic:ainf",
        "1x3x4x4:s2,2:not_larger",  # the aspect policy reads sizes
        "1x3x4x4:o2,2:not_larger:not_smaller",
        "1x3x4x4:s0,2",
        "1x3x4x4:s0.1,1",
        "1x3x4x4:o0,3",
        "1x3x4x4:sa,b",
        "0x3x4x4:s2,2",
        "1x3x4x4:s1e999,1",
    ],
)
def test_bad_shape_strings(text):
    with pytest.raises(ShapeError):
        SPEC.parse_problem(text)


def test_shape_keys_round_trip():
    assert SPEC.shape_separator == ";"  # keys hold commas: the CLI splits several shapes on ";" only
    for text in (
        "1x64x28x28:s2,2:linear:half_pixel",
        "1x3x17x23:o8,40:nearest:asymmetric:floor",
        "2x3x5x7:s0.3,1.7:nearest:align_corners:round_prefer_ceil",
        "1x1x1x1:s3,2:linear:half_pixel_symmetric",
        "1x3x8x8:s0.5,0.75:cubic:half_pixel",
        "1x3x8x8:s0.5,0.75:cubic:align_corners:a-0.5:exclude:antialias",
        "1x3x8x8:o3,5:linear:asymmetric:antialias",
        "1x1x4x4:o3,3:linear:tf_crop_and_resize:r0.4,0.6,0.6,0.8:e10.0",
        "1x1x4x4:o3,3:nearest:tf_crop_and_resize:floor:e-inf",
        "1x2x2x4:o1,3:nearest:half_pixel:round_prefer_floor:not_smaller",
    ):
        problem = SPEC.parse_problem(text)
        assert SPEC.problem_key(problem) == text
        assert SPEC.parse_problem(SPEC.problem_key(problem)) == problem
    # defaults and word order are normalized
    assert SPEC.problem_key(SPEC.parse_problem("1x2x3x4:floor:s2,2")) == "1x2x3x4:s2,2:nearest:half_pixel:floor"


def test_scales_are_float32_as_in_onnx():
    problem = ResizeProblem(1, 1, 10, 10, scales=(0.3, 0.7))
    assert problem.scales == (float(np.float32(0.3)), float(np.float32(0.7)))
    # float32(0.7) * 10 = 6.9999998: ONNX (and so kernelforge) gives 6 columns, not 7
    assert problem.out_hw == (3, 6)
    assert SPEC.problem_key(problem) == "1x1x10x10:s0.3,0.7:nearest:half_pixel:round_prefer_floor"


@pytest.mark.parametrize("coordinate_mode", COORDINATE_MODES)
def test_reference_matches_onnx_reference(coordinate_mode):
    rng = np.random.default_rng(4)
    for ((h, w), scales), mode in itertools.product(CASES, ("linear", *NEAREST_MODES)):
        kind, nearest = ("linear", "round_prefer_floor") if mode == "linear" else ("nearest", mode)
        attrs = {"mode": kind, "coordinate_transformation_mode": coordinate_mode, "nearest_mode": nearest}
        problem = ResizeProblem(2, 3, h, w, scales=scales, **attrs)
        x = rng.standard_normal((2, 3, h, w)).astype(np.float32)
        roi = [0, 0, 0, 0, 1, 1, 1, 1] if coordinate_mode == "tf_crop_and_resize" else None  # the whole input
        expected = onnx_resize(x, scales=[1, 1, *scales], roi=roi, **attrs)
        np.testing.assert_allclose(SPEC.reference(problem, [x]), expected, rtol=1e-6, atol=1e-6)
        by_size = ResizeProblem(2, 3, h, w, sizes=problem.out_hw, **attrs)
        expected = onnx_resize(x, sizes=[2, 3, *problem.out_hw], roi=roi, **attrs)
        np.testing.assert_allclose(SPEC.reference(by_size, [x]), expected, rtol=1e-6, atol=1e-6)


def test_nearest_modes_differ_on_ties():
    # half_pixel at scale 1/2 puts every source coordinate exactly on a .5 tie
    args = (8, 4, 0.5, "nearest", "half_pixel")
    floor = axis_table(*args, "round_prefer_floor")[:, 0]
    ceil = axis_table(*args, "round_prefer_ceil")[:, 0]
    np.testing.assert_array_equal(floor, [0, 2, 4, 6])
    np.testing.assert_array_equal(ceil, [1, 3, 5, 7])


@pytest.mark.parametrize("scales", [(2.0, 3.0), (1.0, 2.0), (3.0, 3.0)])
def test_upsample_is_asymmetric_floor_nearest(scales):
    x = np.random.default_rng(5).standard_normal((1, 2, 3, 4)).astype(np.float32)
    expected = onnx_resize(x, scales=[1, 1, *scales], op="Upsample", opset=9, mode="nearest")
    problem = ResizeProblem(
        1, 2, 3, 4, scales=scales, coordinate_transformation_mode="asymmetric", nearest_mode="floor"
    )
    np.testing.assert_array_equal(SPEC.reference(problem, [x]), expected)


def test_nhwc_layout_round_trips_through_device_conversion():
    problem = SPEC.parse_problem("2x8x3x5:s2,0.5:linear")
    params = {**DEFAULT_PARAMS, "layout": 1}
    x = SPEC.make_inputs(problem, np.random.default_rng(0))
    dev_x, table = SPEC.device_inputs(problem, params, x)
    assert dev_x.shape == (2, 3, 5, 8) and table.shape == (6 + 2, 4) and table.dtype == np.float32
    np.testing.assert_array_equal(dev_x, x[0].transpose(0, 2, 3, 1))
    out = SPEC.reference(problem, x)
    assert SPEC.device_output_shape(problem, params) == (2, 6, 2, 8)
    np.testing.assert_array_equal(SPEC.from_device(problem, params, out.transpose(0, 2, 3, 1).reshape(-1)), out)
    gl_matrix = out.transpose(0, 2, 3, 1).reshape(2 * 6 * 2, 8)  # what the GLSL backend hands back
    np.testing.assert_array_equal(SPEC.from_device(problem, params, gl_matrix), out)


def test_problem_and_argument_validation():
    with pytest.raises(ShapeError, match="exactly one"):
        ResizeProblem(1, 1, 2, 2)
    with pytest.raises(ShapeError, match="exactly one"):
        ResizeProblem(1, 1, 2, 2, scales=(2.0, 2.0), sizes=(4, 4))
    with pytest.raises(ShapeError, match="mode must be one of"):
        ResizeProblem(1, 1, 2, 2, scales=(2.0, 2.0), mode="area")
    with pytest.raises(ShapeError, match="coordinate_transformation_mode"):
        ResizeProblem(1, 1, 2, 2, scales=(2.0, 2.0), coordinate_transformation_mode="tf_half_pixel_for_nn")
    with pytest.raises(ShapeError, match="not nearest"):
        ResizeProblem(1, 1, 2, 2, scales=(2.0, 2.0), antialias=True)
    with pytest.raises(ShapeError, match="exclude_outside must be a bool"):
        ResizeProblem(1, 1, 2, 2, scales=(2.0, 2.0), mode="linear", exclude_outside=2)  # type: ignore[arg-type]
    with pytest.raises(ShapeError, match="tf_crop_and_resize only"):
        ResizeProblem(1, 1, 2, 2, scales=(2.0, 2.0), roi=(0.1, 0.0, 1.0, 1.0))
    with pytest.raises(ShapeError, match="roi must be a tuple"):
        ResizeProblem(1, 1, 2, 2, scales=(2.0, 2.0), coordinate_transformation_mode="tf_crop_and_resize", roi=(0, 1))
    with pytest.raises(ShapeError, match="applies to sizes"):
        ResizeProblem(1, 1, 2, 2, scales=(2.0, 2.0), keep_aspect_ratio_policy="not_larger")
    with pytest.raises(ShapeError, match="keep_aspect_ratio_policy must be"):
        ResizeProblem(1, 1, 2, 2, sizes=(2, 2), keep_aspect_ratio_policy="fit")
    with pytest.raises(ShapeError, match="nearest_mode"):
        ResizeProblem(1, 1, 2, 2, scales=(2.0, 2.0), nearest_mode="round")
    with pytest.raises(ShapeError, match="empty"):
        ResizeProblem(1, 1, 2, 2, scales=(0.4, 1.0))
    with pytest.raises(ShapeError, match="scales for N and C must be 1"):
        _pair("scales", [1, 2, 2, 2], (1, 3, 4, 4), False)
    with pytest.raises(ShapeError, match="sizes for N and C must equal"):
        _pair("sizes", [1, 2, 8, 8], (1, 3, 4, 4), True)
    with pytest.raises(ShapeError, match=r"4 .* or 2"):
        _pair("scales", [2, 2, 2], (1, 3, 4, 4), False)
    assert _pair("sizes", [1, 3, 8, 6], (1, 3, 4, 4), True) == (8, 6)
    assert _pair("scales", np.array([2.5, 0.5]), (1, 3, 4, 4), False) == (2.5, 0.5)


@pytest.mark.parametrize(
    "bad",
    [{**DEFAULT_PARAMS, "wg_x": "16u) fn evil("}, {**DEFAULT_PARAMS, "opt": 3}, {**DEFAULT_PARAMS, "layout": True}],
)
def test_params_are_validated_before_rendering(bad):
    with pytest.raises(InvalidParamsError):
        render(SPEC, "wgsl", SPEC.parse_problem("1x4x4x4:s2,2"), bad)


def test_rendered_sources_reflect_problem_and_params():
    problem = SPEC.parse_problem("1x8x5x7:s2,2:linear")
    nhwc = render(SPEC, "wgsl", problem, {"wg_x": 32, "wg_y": 2, "opt": 4, "layout": 1})
    assert "@workgroup_size(32, 2, 1)" in nhwc and "array<vec4<f32>>" in nhwc and "mix(x[" in nhwc
    odd = SPEC.parse_problem("1x3x5x7:s2,2")  # C % 4 != 0: NHWC falls back to scalars
    scalar = render(SPEC, "wgsl", odd, {"wg_x": 32, "wg_y": 2, "opt": 4, "layout": 1})
    assert "var<storage, read> x: array<f32>" in scalar and "mix(x[" not in scalar
    glsl = render(SPEC, "glsl", problem, {"layout": 1, "square": 0}, target="web")
    assert glsl.startswith("#version 300 es") and "out vec4 o0" in glsl
    for params in every_config(SPEC, "glsl"):
        assert "void main" in render(SPEC, "glsl", odd, params)
