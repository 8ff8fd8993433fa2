"""Softmax on real adapters (WGSL and GLSL) against numpy and ONNX's reference evaluator."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import kernelforge.ops as kops
from kernelforge.errors import ShapeError
from kernelforge.ops import get_op
from kernelforge.ops.softmax import SoftmaxProblem
from kernelforge.runtime.kernel import prepare
from kernelforge.tuner.measure import MeasureConfig
from kernelforge.tuner.objective import verify
from kernelforge.tuner.tune import TuneOptions, tune_problem

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


def every(language):
    names = [p.name for p in SPEC.params(language)]
    return [dict(zip(names, v, strict=True)) for v in itertools.product(*(p.choices for p in SPEC.params(language)))]


def sampled(problem, limits, language, count, seed):
    valid = [p for p in every(language) if SPEC.constraints(problem, p, limits, language) is None]
    rng = np.random.default_rng(seed)
    picks = [valid[int(i)] for i in rng.choice(len(valid), min(count, len(valid)), replace=False)]
    return [SPEC.default_params(problem, limits, language), *picks]


def check(backend, problem, params, inputs=None):
    inputs = inputs if inputs is not None else SPEC.make_inputs(problem, np.random.default_rng(0))
    out = prepare(backend, SPEC, problem, params, inputs).run()
    verdict = verify(out, SPEC.reference(problem, inputs))
    assert verdict.ok, f"{SPEC.problem_key(problem)} {params}: max error {verdict.max_error} > {verdict.tolerance}"
    return out


@pytest.mark.parametrize("shape", SHAPES)
def test_wgsl_shapes_with_sampled_configs(lavapipe, shape):
    problem = SPEC.parse_problem(shape)
    configs = sampled(problem, lavapipe.limits, "wgsl", 4, len(shape))
    for params in configs:
        check(lavapipe, problem, params)
    assert len(configs) >= 2


@pytest.mark.parametrize("shape", SHAPES)
def test_glsl_shapes_with_sampled_configs(gl, shape):
    problem = SPEC.parse_problem(shape)
    configs = sampled(problem, gl.limits, "glsl", 3, len(shape))
    for params in configs:
        check(gl, problem, params)
    assert len(configs) >= 2


def test_wgsl_every_reduction_width(lavapipe):
    # each threads value with both passes: partial workgroups, idle lanes and every tree depth
    problem = SPEC.parse_problem("19x300")
    for threads, online in itertools.product(SPEC.params("wgsl")[0].choices, (0, 1)):
        check(lavapipe, problem, {"threads": threads, "rows_per_wg": max(1, 32 // threads), "online": online})


def test_every_wgsl_device_runs_softmax(wgsl_device):
    problem = SPEC.parse_problem("6x37x5:a1")
    for params in (
        SPEC.default_params(problem, wgsl_device.limits, "wgsl"),
        {"threads": 16, "rows_per_wg": 4, "online": 1},
    ):
        check(wgsl_device, problem, params)


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
        out = check(backend, problem, params, [x])
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
    quick = MeasureConfig(min_reps=2, max_reps=3, max_seconds=0.2)
    options = TuneOptions(
        trials=3, sampler="random", seed=1, db_dir=tmp_path, measure=quick, remeasure=quick, progress=False
    )
    problem = SPEC.parse_problem("64x300")
    result = tune_problem(lavapipe, SPEC, problem, options)
    assert result.record is not None and result.best_time <= result.default_time
    assert SPEC.constraints(problem, result.record.params, lavapipe.limits, "wgsl") is None
    check(lavapipe, problem, result.record.params)
