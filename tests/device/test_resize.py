"""Resize on real adapters (WGSL and GLSL) against the numpy reference, onnx.reference and onnxruntime; a tuning
smoke run."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import kernelforge.api as kops
from kernelforge.errors import ShapeError
from kernelforge.ops import get_op
from kernelforge.ops.resize import COORDINATE_MODES, NEAREST_MODES
from kernelforge.runtime.kernel import prepare
from kernelforge.testing.ops import check_op, quick_tune, valid_configs

pytestmark = pytest.mark.device
SPEC = get_op("resize")

SHAPES = [
    "1x1x1x1:s1,1",
    "1x1x1x1:s3,2:linear",
    "1x3x5x7:s1.7,0.6:linear:align_corners",
    "2x4x5x7:o9,4:nearest:half_pixel:round_prefer_ceil",
    "1x8x8x6:s0.5,0.5:nearest:half_pixel:round_prefer_floor",  # exact .5 ties
    "2x5x13x11:s2,2:linear:pytorch_half_pixel",
    "1x4x7x3:s0.3,3.3:nearest:asymmetric:ceil",
    "1x12x9x2:s0.75,1.25:linear:half_pixel_symmetric",
    "3x1x17x23:o8,40:nearest:asymmetric:floor",
    "1x64x28x28:s2,2:linear:half_pixel",
]
# the tap modes (cubic, antialias, exclude_outside), tf_crop_and_resize and keep_aspect_ratio_policy
MODE_SHAPES = [
    "1x1x4x4:s2,2:cubic",
    "2x8x9x7:s1.7,0.6:cubic:align_corners:a-0.5:exclude",
    "1x4x13x11:s0.26,0.4:cubic:antialias",  # 16 x 12 taps
    "1x3x13x11:o4,3:linear:pytorch_half_pixel:antialias",
    "2x4x6x9:s1,0.3:cubic:asymmetric:exclude:antialias",  # H left alone: one tap pair
    "1x5x7x9:s0.6,1.3:linear:half_pixel:exclude",
    "2x4x7x9:o5,11:linear:tf_crop_and_resize:r0.2,-0.3,0.9,1.4:e2.5",
    "1x4x7x9:o5,11:cubic:tf_crop_and_resize:r1.2,0.5,-0.1,0.5:e-3",  # a flipped region and a single column
    "1x3x7x9:s2,0.5:nearest:tf_crop_and_resize:round_prefer_ceil:r0.2,-0.3,0.9,1.4",
    "1x2x2x4:o1,3:nearest:half_pixel:round_prefer_floor:not_smaller",
    "1x8x5x7:o3,9:cubic:half_pixel:not_larger",
]


@pytest.mark.parametrize("shape", SHAPES)
def test_shapes_wgsl(lavapipe, shape):
    problem = SPEC.parse_problem(shape)
    rng = np.random.default_rng(len(shape))
    valid = valid_configs(SPEC, problem, lavapipe.limits, "wgsl")
    default = SPEC.default_params(problem, lavapipe.limits, "wgsl")
    # the default, its NHWC twin and sampled points of the space
    configs = [default, {**default, "layout": 1}] + [valid[int(i)] for i in rng.choice(len(valid), 3)]
    for params in configs:
        check_op(lavapipe, SPEC, problem, params)


@pytest.mark.parametrize("shape", SHAPES)
def test_shapes_glsl(gl, shape):
    problem = SPEC.parse_problem(shape)
    for params in valid_configs(SPEC, problem, gl.limits, "glsl"):  # the whole (small) GLSL space
        check_op(gl, SPEC, problem, params)


@pytest.mark.parametrize("shape", MODE_SHAPES)
def test_modes_wgsl(lavapipe, shape):
    problem = SPEC.parse_problem(shape)
    rng = np.random.default_rng(len(shape))
    valid = valid_configs(SPEC, problem, lavapipe.limits, "wgsl")
    default = SPEC.default_params(problem, lavapipe.limits, "wgsl")
    for params in [default, {**default, "layout": 1}] + [valid[int(i)] for i in rng.choice(len(valid), 2)]:
        check_op(lavapipe, SPEC, problem, params)


@pytest.mark.parametrize("shape", MODE_SHAPES)
def test_modes_glsl(gl, shape):
    problem = SPEC.parse_problem(shape)
    for params in valid_configs(SPEC, problem, gl.limits, "glsl"):
        check_op(gl, SPEC, problem, params)


@pytest.mark.parametrize("value", ["-inf", "nan"])
def test_extrapolation_value_is_written_exactly(lavapipe, gl, value):
    problem = SPEC.parse_problem(f"1x4x7x9:o5,11:cubic:tf_crop_and_resize:r0.2,-0.3,0.9,1.4:e{value}")
    x = SPEC.make_inputs(problem, np.random.default_rng(1))
    ref = SPEC.reference(problem, x)
    outside = ~np.isfinite(ref)
    assert outside.sum() == 4 * (5 * 11 - 5 * 6)  # every row and columns 2..7 are inside
    for device, params in ((lavapipe, {"wg_x": 4, "wg_y": 4, "opt": 2, "layout": 1}), (gl, {"layout": 0, "square": 1})):
        out = prepare(device, SPEC, problem, params, x).run()
        np.testing.assert_array_equal(out[outside], ref[outside])
        np.testing.assert_allclose(out[~outside], ref[~outside], rtol=1e-5, atol=1e-5)


def test_every_coordinate_and_nearest_mode_on_device(lavapipe, gl):
    # the table carries every mode: one kernel per (mode, layout) must reproduce all of them
    rng = np.random.default_rng(2)
    for coordinate_mode, nearest_mode in itertools.product(COORDINATE_MODES, NEAREST_MODES):
        problem = SPEC.parse_problem(f"1x4x7x5:s1.5,0.6:nearest:{coordinate_mode}:{nearest_mode}")
        wgsl = {"wg_x": 4, "wg_y": 4, "opt": int(rng.choice([1, 2])), "layout": int(rng.integers(2))}
        check_op(lavapipe, SPEC, problem, wgsl)
        check_op(gl, SPEC, problem, {"layout": int(rng.integers(2)), "square": int(rng.integers(2))})
    for coordinate_mode in COORDINATE_MODES:
        problem = SPEC.parse_problem(f"2x4x5x9:o11,4:linear:{coordinate_mode}")
        check_op(lavapipe, SPEC, problem, {"wg_x": 8, "wg_y": 2, "opt": 2, "layout": 1})
        check_op(gl, SPEC, problem, {"layout": 1, "square": 0})


def test_every_wgsl_device_runs_resize(wgsl_device):
    for shape in (
        "2x8x9x7:s1.5,2.5:linear:align_corners",
        "1x8x13x11:o6,9:cubic:tf_crop_and_resize:antialias:r0.1,-0.2,0.9,1.1:e0.5",
    ):
        problem = SPEC.parse_problem(shape)
        for params in (
            SPEC.default_params(problem, wgsl_device.limits, "wgsl"),
            {"wg_x": 4, "wg_y": 8, "opt": 4, "layout": 1},
        ):
            check_op(wgsl_device, SPEC, problem, params)


@pytest.mark.parametrize("backend", ["wgsl", "glsl"])
def test_single_node_onnx_graphs(lavapipe, gl, backend):
    from tests.null.test_resize_spec import onnx_resize

    device = "lavapipe" if backend == "wgsl" else "auto"
    x = np.random.default_rng(3).standard_normal((1, 4, 6, 5)).astype(np.float32)
    cases = [
        ({"scales": [1, 1, 2.0, 1.5]}, {"mode": "linear", "coordinate_transformation_mode": "half_pixel"}),
        ({"sizes": [1, 4, 4, 9]}, {"mode": "nearest", "coordinate_transformation_mode": "align_corners"}),
        ({"scales": [1, 1, 0.5, 0.7]}, {"mode": "nearest", "nearest_mode": "ceil"}),
    ]
    for size, attrs in cases:
        expected = onnx_resize(x, **size, **attrs)
        got = kops.resize(x, **size, **attrs, device=device, backend=backend)
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    # Upsample (opset 9) through its documented mapping
    expected = onnx_resize(x, scales=[1, 1, 2, 3], op="Upsample", opset=9, mode="nearest")
    got = kops.resize(
        x,
        scales=[1, 1, 2, 3],
        coordinate_transformation_mode="asymmetric",
        nearest_mode="floor",
        device=device,
        backend=backend,
    )
    np.testing.assert_array_equal(got, expected)


def test_public_api_rejects_bad_input(lavapipe):
    x = np.ones((1, 3, 4, 4))
    with pytest.raises(ShapeError, match="resize: scales for N and C must be 1"):
        kops.resize(x, scales=[1, 2, 2, 2], device="lavapipe")
    with pytest.raises(ShapeError, match="resize: give exactly one"):
        kops.resize(x, scales=[2, 2], sizes=[8, 8], device="lavapipe")
    with pytest.raises(ShapeError, match="resize: x must be a non-empty 4-D"):
        kops.resize(np.ones((3, 4, 4)), scales=[2, 2], device="lavapipe")
    with pytest.raises(ShapeError, match="roi and extrapolation_value apply to tf_crop_and_resize"):
        kops.resize(x, scales=[2, 2], roi=[0.1, 0, 1, 1], device="lavapipe")
    with pytest.raises(ShapeError, match="resize: roi must keep N and C whole"):
        kops.resize(x, scales=[2, 2], roi=[0, 0.5, 0, 0, 1, 1, 1, 1], device="lavapipe")
    with pytest.raises(ShapeError, match="resize: roi must be a sequence"):
        kops.resize(x, scales=[2, 2], roi="all", device="lavapipe")
    with pytest.raises(ShapeError, match="not nearest"):
        kops.resize(x, scales=[0.5, 0.5], antialias=True, device="lavapipe")
    with pytest.raises(ShapeError, match="resize: sizes must be integers"):
        kops.resize(x, sizes=[2.5, 2], device="lavapipe")


@pytest.mark.parametrize("backend", ["wgsl", "glsl"])
def test_public_api_new_modes_match_onnx_reference(lavapipe, gl, backend):
    from tests.null.test_resize_spec import onnx_resize

    device = "lavapipe" if backend == "wgsl" else "auto"
    x = np.random.default_rng(4).standard_normal((1, 4, 9, 7)).astype(np.float32)
    crop = {"coordinate_transformation_mode": "tf_crop_and_resize", "extrapolation_value": -1.0}
    roi = [0, 0, 0.1, -0.2, 1, 1, 0.8, 1.3]
    expected = onnx_resize(x, sizes=[1, 4, 5, 8], roi=roi, mode="cubic", **crop)
    got = kops.resize(x, sizes=[5, 8], mode="cubic", roi=roi, **crop, device=device, backend=backend)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    run = {"device": device, "backend": backend}
    attrs = {"mode": "cubic", "antialias": 1, "exclude_outside": 1, "cubic_coeff_a": -0.5}
    expected = onnx_resize(x, scales=[1, 1, 0.4, 0.6], **attrs)
    got = kops.resize(x, [0.4, 0.6], mode="cubic", antialias=True, exclude_outside=True, cubic_coeff_a=-0.5, **run)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    expected = onnx_resize(x, sizes=[4, 5], axes=[2, 3], mode="linear", keep_aspect_ratio_policy="not_smaller")
    got = kops.resize(x, sizes=[4, 5], mode="linear", keep_aspect_ratio_policy="not_smaller", **run)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


RESIZE_MODELS = [  # (attrs, inputs): what onnxruntime and onnx.reference agree on
    ({"mode": "cubic"}, {"scales": [1, 1, 1.7, 0.6]}),
    ({"mode": "cubic", "cubic_coeff_a": -0.5, "exclude_outside": 1, "antialias": 1}, {"scales": [1, 1, 0.4, 0.6]}),
    ({"mode": "linear", "antialias": 1, "coordinate_transformation_mode": "align_corners"}, {"sizes": [1, 3, 4, 3]}),
    (
        {"mode": "linear", "coordinate_transformation_mode": "tf_crop_and_resize", "extrapolation_value": 2.5},
        {"roi": [0, 0, 0.2, -0.3, 1, 1, 0.9, 1.4], "sizes": [1, 3, 5, 11]},
    ),
    ({"mode": "cubic", "axes": [2, 3], "keep_aspect_ratio_policy": "not_smaller"}, {"sizes": [5, 4]}),
]


@pytest.mark.parametrize(("attrs", "inputs"), RESIZE_MODELS)
@pytest.mark.parametrize("backend", ["wgsl", "glsl"])
def test_whole_models_match_onnxruntime(lavapipe, gl, backend, attrs, inputs):
    import kernelforge
    from tests.device.test_session import assert_matches_ort
    from tests.null.test_resize_modes import resize_model

    model = resize_model(attrs, **inputs, shape=(1, 3, 7, 9))
    device = lavapipe if backend == "wgsl" else gl
    session = kernelforge.load(model, device=device.info.index, backend=backend)
    feeds = {"x": np.random.default_rng(6).standard_normal((1, 3, 7, 9)).astype(np.float32)}
    assert_matches_ort(model, session.run(feeds), feeds)


def test_tuning_smoke(tmp_path, lavapipe):
    problem = SPEC.parse_problem("1x8x12x10:s2,1.5:linear")
    result = quick_tune(lavapipe, SPEC, problem, tmp_path)
    assert result.record is not None and result.best_time <= result.default_time
    assert SPEC.constraints(problem, result.record.params, lavapipe.limits, "wgsl") is None
    check_op(lavapipe, SPEC, problem, result.record.params)
