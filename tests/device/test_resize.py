"""Resize on real adapters (WGSL and GLSL) against the numpy reference and onnx.reference; a tuning smoke run."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import kernelforge.api as kops
from kernelforge.errors import ShapeError
from kernelforge.ops import get_op
from kernelforge.ops.resize import COORDINATE_MODES, NEAREST_MODES
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
    problem = SPEC.parse_problem("2x8x9x7:s1.5,2.5:linear:align_corners")
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
    with pytest.raises(ShapeError, match="tf_crop_and_resize"):
        kops.resize(x, scales=[2, 2], coordinate_transformation_mode="tf_crop_and_resize", device="lavapipe")
    with pytest.raises(ShapeError, match="cubic"):
        kops.resize(x, scales=[2, 2], mode="cubic", device="lavapipe")
    with pytest.raises(ShapeError, match="resize: sizes must be integers"):
        kops.resize(x, sizes=[2.5, 2], device="lavapipe")


def test_tuning_smoke(tmp_path, lavapipe):
    problem = SPEC.parse_problem("1x8x12x10:s2,1.5:linear")
    result = quick_tune(lavapipe, SPEC, problem, tmp_path)
    assert result.record is not None and result.best_time <= result.default_time
    assert SPEC.constraints(problem, result.record.params, lavapipe.limits, "wgsl") is None
    check_op(lavapipe, SPEC, problem, result.record.params)
