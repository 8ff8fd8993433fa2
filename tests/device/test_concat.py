"""Concat on real adapters (WGSL and GLSL) against numpy and ONNX's reference evaluator."""

from __future__ import annotations

import numpy as np
import pytest

import kernelforge.api as kops
from kernelforge.errors import InvalidParamsError, ShapeError
from kernelforge.ops import get_op
from kernelforge.ops.concat import MAX_GLSL_INPUTS, MAX_WGSL_INPUTS
from kernelforge.testing.ops import check_op, check_sampled_configs

from ..null.test_concat_spec import onnx_concat

pytestmark = pytest.mark.device
SPEC = get_op("concat")

SHAPES = [
    "1+1:a0",
    "7+3:a0",
    "2x3+2x5:a-1",
    "1x64x9x9+1x32x9x9:a1",
    "5x3+2x3+1x3:a0",
    "3x1x2+3x4x2+3x2x2+3x1x2+3x3x2+3x1x2+3x5x2:a1",  # 7 inputs: every WGSL storage buffer in use
    "2x3x1x5x1x2+2x3x4x5x1x2:a2",  # rank 6, size-1 axes
    "13:a0",
    "4x4+4x8+4x12:a1",  # every width a multiple of 4: vec4 copies
    "1x20000+1x4:a1",  # one long row
    "37x2+37x3+37x1:a1",
]


def check(backend, problem, params):
    check_op(backend, SPEC, problem, params, rtol=0.0)  # a copy: exact


@pytest.mark.parametrize("shape", SHAPES)
def test_wgsl_shapes_with_sampled_configs(lavapipe, shape):
    configs = check_sampled_configs(lavapipe, SPEC, SPEC.parse_problem(shape), 4, len(shape), rtol=0.0)
    assert len(configs) >= 3


@pytest.mark.parametrize("shape", SHAPES)
def test_glsl_shapes_with_sampled_configs(gl, shape):
    configs = check_sampled_configs(gl, SPEC, SPEC.parse_problem(shape), 3, len(shape), rtol=0.0)
    assert len(configs) >= 2


def test_glsl_fifteen_inputs(gl):
    problem = SPEC.parse_problem("+".join(f"3x{k % 4 + 1}" for k in range(MAX_GLSL_INPUTS)) + ":a1")
    configs = check_sampled_configs(gl, SPEC, problem, 2, 15, rtol=0.0)
    assert len(configs) == 3


def test_every_wgsl_device_runs_concat(wgsl_device):
    problem = SPEC.parse_problem("2x3x5+2x1x5+2x4x5:a1")
    for params in (SPEC.default_params(problem, wgsl_device.limits, "wgsl"), {"wg": 32, "ept": 4, "vec_width": 1}):
        check(wgsl_device, problem, params)


@pytest.mark.parametrize("language", ["wgsl", "glsl"])
def test_matches_onnx_reference_evaluator(lavapipe, gl, language):
    rng = np.random.default_rng(5)
    device = "lavapipe" if language == "wgsl" else gl.info.index
    for shapes, axis in [([(2, 3, 4), (2, 1, 4), (2, 5, 4)], 1), ([(3, 2), (1, 2)], 0), ([(2, 2, 3), (2, 2, 1)], -1)]:
        arrays = [rng.standard_normal(s).astype(np.float32) for s in shapes]
        out = kops.concat(arrays, axis, device=device, backend=language)
        np.testing.assert_array_equal(out, onnx_concat(arrays, axis))


def test_public_api(lavapipe):
    a, b = np.arange(6).reshape(2, 3), np.ones((2, 1), np.float64)
    out = kops.concat([a, b], -1, device="lavapipe")
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, np.concatenate([a, b], axis=1))
    # an input empty along the axis is dropped, as in ONNX
    np.testing.assert_array_equal(kops.concat([a, np.zeros((2, 0)), b], 1, device="lavapipe"), out)
    assert kops.concat([np.zeros((0, 3)), np.zeros((0, 3))], 1, device="lavapipe").shape == (0, 6)


def test_too_many_wgsl_inputs_is_a_clear_error(lavapipe):
    arrays = [np.ones((2, 1))] * (MAX_WGSL_INPUTS + 1)
    with pytest.raises((ShapeError, InvalidParamsError), match="storage buffers"):
        kops.concat(arrays, 1, device="lavapipe")


@pytest.mark.parametrize(
    "args,match",
    [
        (([], 0), "concat: arrays"),
        ((np.ones((2, 3)), 0), "concat: arrays"),
        (([np.ones((2, 3)), np.ones((3, 3))], 1), r"concat: arrays\[1\]"),
        (([np.ones((2, 3)), np.ones(3)], 0), r"concat: arrays\[1\]"),
        (([np.ones((2, 3))], 2), "concat: axis"),
        (([np.float32(1)], 0), r"concat: arrays\[0\]"),
        (([np.ones(2), np.array(["x"])], 0), r"concat: arrays\[1\]"),
    ],
)
def test_public_api_rejects_bad_input(lavapipe, args, match):
    with pytest.raises(ShapeError, match=match):
        kops.concat(*args, device="lavapipe")
