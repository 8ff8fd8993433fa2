"""Transpose (and NCHW <-> NHWC) on real adapters (WGSL and GLSL) against numpy and ONNX's reference evaluator."""

from __future__ import annotations

import numpy as np
import pytest

import kernelforge.api as kops
from kernelforge.errors import ShapeError
from kernelforge.ops import get_op
from kernelforge.testing.ops import check_op, check_sampled_configs, every_config, valid_configs

from ..null.test_transpose_spec import onnx_transpose

pytestmark = pytest.mark.device
SPEC = get_op("transpose")

SHAPES = [
    "1x64x9x9:p0231",  # NCHW -> NHWC
    "2x9x9x64:p0312",  # NHWC -> NCHW, batched
    "3x5",
    "7",
    "1x1x1",
    "2x1x3:p210",
    "2x3x4x5x6x7:p531042",  # rank 6, nothing collapses
    "37x41:p10",
    "3x17x33:p021",
    "3x17x33:p102",
    "2x3x4x5:p1032",
    "1x5000:p10",  # collapses to a copy of one long row
    "5x1x7x1x3:p43210",
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


def test_every_tiled_config_on_an_odd_batched_case(lavapipe):
    problem = SPEC.parse_problem("3x19x45:p021")
    tiled = [p for p in valid_configs(SPEC, problem, lavapipe.limits, "wgsl") if p["tiled"]]
    assert len(tiled) >= 6
    for params in tiled:
        check(lavapipe, problem, params)


def test_every_glsl_config_on_a_vec_copy_case(gl):
    problem = SPEC.parse_problem("3x5x8:p102")  # the last axis stays last: vec4 texel copies
    for params in every_config(SPEC, "glsl"):
        check(gl, problem, params)


def test_every_wgsl_device_runs_transpose(wgsl_device):
    problem = SPEC.parse_problem("2x5x3x7:p0231")
    for params in (
        SPEC.default_params(problem, wgsl_device.limits, "wgsl"),
        {"tiled": 0, "tile": 8, "wg": 32, "ept": 2},
    ):
        check(wgsl_device, problem, params)


@pytest.mark.parametrize("language", ["wgsl", "glsl"])
def test_matches_onnx_reference_evaluator(lavapipe, gl, language):
    rng = np.random.default_rng(6)
    device = "lavapipe" if language == "wgsl" else gl.info.index
    for shape, perm in [((3, 4), None), ((2, 3, 4), (1, 2, 0)), ((1, 6, 3, 2), (0, 2, 3, 1)), ((2, 3, 1, 4), None)]:
        x = rng.standard_normal(shape).astype(np.float32)
        np.testing.assert_array_equal(kops.transpose(x, perm, device=device, backend=language), onnx_transpose(x, perm))


def test_public_api_layout_round_trip(lavapipe):
    nchw = np.random.default_rng(2).standard_normal((2, 8, 5, 3)).astype(np.float32)
    nhwc = kops.transpose(nchw, (0, 2, 3, 1), device="lavapipe")
    np.testing.assert_array_equal(nhwc, nchw.transpose(0, 2, 3, 1))
    np.testing.assert_array_equal(kops.transpose(nhwc, [0, 3, 1, 2], device="lavapipe"), nchw)
    np.testing.assert_array_equal(
        kops.transpose(np.arange(6).reshape(2, 3), device="lavapipe"), [[0, 3], [1, 4], [2, 5]]
    )
    assert kops.transpose(np.zeros((0, 3, 2)), (1, 2, 0), device="lavapipe").shape == (3, 2, 0)


@pytest.mark.parametrize(
    "args,match",
    [
        ((np.ones((2, 3)), (0, 0)), "transpose: perm"),
        ((np.ones((2, 3)), (0, 1, 2)), "transpose: perm"),
        ((np.ones((1,) * 7), None), "transpose: x"),
        ((np.float32(1), None), "transpose: x"),
        ((np.array([["a"]]), None), "transpose: x"),
    ],
)
def test_public_api_rejects_bad_input(lavapipe, args, match):
    with pytest.raises(ShapeError, match=match):
        kops.transpose(*args, device="lavapipe")
