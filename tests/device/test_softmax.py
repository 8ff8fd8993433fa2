"""Softmax on real adapters (WGSL and GLSL) against numpy and ONNX's reference evaluator."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import kernelforge.api as kops
from kernelforge.errors import ShapeError
from kernelforge.ops import get_op
from kernelforge.ops.softmax import SoftmaxProblem
from kernelforge.testing.ops import check_op, check_sampled_configs, quick_tune

from ..null.test_softmax_spec import onnx_softmax

pytestmark = pytest.mark.device
SPEC = get_op("softmax")

SHAPES = [
    "1",
    "1x1",
    "7",
    "10000",  # one long row
    "3x10000:a0",  # long rows strided 10000 apart... of length 3; and 10000 rows
    "10000x1",  # short rows of 1
    "5x2000:a1",
    "8x1000:a-1",
    "3x5x7:a0",
    "3x5x7:a1",
    "13x1x7:a1",  # a size-1 softmax axis
    "31x37:a0",
    "2x3x4x5x6x7:a3",  # rank 6, middle axis
    "2x17x3:a-2",
]


@pytest.mark.parametrize("shape", SHAPES)
def test_wgsl_shapes_with_sampled_configs(lavapipe, shape):
    configs = check_sampled_configs(lavapipe, SPEC, SPEC.parse_problem(shape), 4, len(shape))
    assert len(configs) >= 2


@pytest.mark.parametrize("shape", SHAPES)
def test_glsl_shapes_with_sampled_configs(gl, shape):
    configs = check_sampled_configs(gl, SPEC, SPEC.parse_problem(shape), 3, len(shape))
    assert len(configs) >= 2


def test_wgsl_every_reduction_width(lavapipe):
    # each threads value with both passes: partial workgroups, idle lanes and every tree depth
    problem = SPEC.parse_problem("19x300")
    for threads, online in itertools.product(SPEC.params("wgsl")[0].choices, (0, 1)):
        check_op(lavapipe, SPEC, problem, {"threads": threads, "rows_per_wg": max(1, 32 // threads), "online": online})


def test_every_wgsl_device_runs_softmax(wgsl_device):
    problem = SPEC.parse_problem("6x37x5:a1")
    for params in (
        SPEC.default_params(problem, wgsl_device.limits, "wgsl"),
        {"threads": 16, "rows_per_wg": 4, "online": 1},
    ):
        check_op(wgsl_device, SPEC, problem, params)


@pytest.mark.parametrize("language", ["wgsl", "glsl"])
def test_large_magnitudes_stay_finite(lavapipe, gl, language):
    backend = lavapipe if language == "wgsl" else gl
    rng = np.random.default_rng(4)
    x = rng.choice(np.array([-1000.0, 1000.0, 999.0, -999.5, 0.0], np.float32), (6, 40)).astype(np.float32)
    x[0] = -1000.0  # a row of equal, very negative values: uniform output
    x[1] = 1000.0
    problem = SoftmaxProblem(x.shape, -1)
    configs = [SPEC.default_params(problem, backend.limits, language)]
    configs += [{"threads": 8, "rows_per_wg": 2, "online": 1}, {"threads": 1, "rows_per_wg": 8, "online": 1}]
    if language == "glsl":
        configs = [{"pack": p, "square": 0, "online": o} for p in (1, 4) for o in (0, 1)]
    for params in configs:
        out = check_op(backend, SPEC, problem, params, inputs=[x])
        assert np.all(np.isfinite(out))
        np.testing.assert_allclose(out[0], 1 / 40, rtol=1e-5)
        np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("shape,axis", [((4, 33), -1), ((3, 5, 7), 1), ((2, 9, 4), 0)])
@pytest.mark.parametrize("language", ["wgsl", "glsl"])
def test_matches_onnx_reference_evaluator(lavapipe, gl, shape, axis, language):
    x = np.random.default_rng(9).standard_normal(shape).astype(np.float32) * 5
    device = "lavapipe" if language == "wgsl" else gl.info.index
    np.testing.assert_allclose(
        kops.softmax(x, axis, device=device, backend=language), onnx_softmax(x, axis), rtol=1e-5, atol=1e-6
    )


def test_public_api(lavapipe):
    x = np.random.default_rng(1).standard_normal((3, 4, 5))
    out = kops.softmax(x, axis=1, device="lavapipe")
    assert out.dtype == np.float32 and out.shape == x.shape
    np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(
        kops.softmax([1, 2, 3], device="lavapipe"), np.exp([1, 2, 3]) / np.exp([1, 2, 3]).sum(), rtol=1e-5
    )
    assert kops.softmax(np.zeros((0, 4)), device="lavapipe").shape == (0, 4)


@pytest.mark.parametrize(
    "args,match",
    [
        ((np.ones((2, 3)), 2), "softmax: axis"),
        ((np.ones((2, 3)), -3), "softmax: axis"),
        ((np.float32(1.0), 0), "softmax: x"),
        ((np.array([["a"]]), 0), "softmax: x"),
    ],
)
def test_public_api_rejects_bad_input(lavapipe, args, match):
    with pytest.raises(ShapeError, match=match):
        kops.softmax(*args, device="lavapipe")


def test_tuner_smoke(tmp_path, lavapipe):
    problem = SPEC.parse_problem("64x300")
    result = quick_tune(lavapipe, SPEC, problem, tmp_path)
    assert result.record is not None and result.best_time <= result.default_time
    assert SPEC.constraints(problem, result.record.params, lavapipe.limits, "wgsl") is None
    check_op(lavapipe, SPEC, problem, result.record.params)
