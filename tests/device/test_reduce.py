"""The reduce op on real adapters (WGSL and GLSL) against numpy, and reductions and instance normalization in
models against ONNX Runtime."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import kernelforge
from kernelforge.ops import get_op
from kernelforge.ops.reduce import KINDS, ReduceProblem
from kernelforge.runtime.kernel import prepare
from kernelforge.testing.ops import check_op, check_sampled_configs, quick_tune, sampled_configs

from ..null.test_onnx_reduce import group_norm_model, instance_norm_model, reduce_model, squeeze_excite_model

pytestmark = [pytest.mark.device, pytest.mark.filterwarnings("ignore::RuntimeWarning")]  # numpy on NaN
SPEC = get_op("reduce")

SHAPES = [
    "300x1:a1",  # R=1: every output is one element
    "7:a0",  # everything, one output
    "5x3:a1",  # last axis, R not a multiple of 4
    "9x37:a1",
    "3x1000:a1",  # long rows
    "6x5x7:a0",  # first axis
    "4x8x12:a1",  # middle axis, inner % 4 == 0
    "2x3x4x5:a1.2",  # two middle axes, inner 5
    "1x16x6x6:a2.3",  # spatial
    "2x3x4x5",  # all axes
    "1000x3:a0",  # a long first axis, 3 outputs
    "65x10:a1",  # outputs not a multiple of outputs_per_wg
]


@pytest.mark.parametrize("kind", KINDS)
def test_wgsl_every_kind_with_sampled_configs(wgsl_device, kind):
    for k, shape in enumerate(SHAPES):
        configs = check_sampled_configs(wgsl_device, SPEC, SPEC.parse_problem(f"{shape}:{kind}"), 3, k)
        assert len(configs) >= 2


@pytest.mark.parametrize("kind", KINDS)
def test_glsl_every_kind_with_sampled_configs(gl, kind):
    for k, shape in enumerate(SHAPES):
        configs = check_sampled_configs(gl, SPEC, SPEC.parse_problem(f"{shape}:{kind}"), 3, k)
        assert len(configs) >= 2


@pytest.mark.parametrize("kind", ["max", "prod", "log_sum_exp", "mean"])
def test_wgsl_every_merge_scheme(lavapipe, kind):
    # every threads value with both merges and both loads: partial workgroups, idle threads, every tree depth
    for shape in ("19x300:a1", "3x64x8:a1"):
        problem = SPEC.parse_problem(f"{shape}:{kind}")
        for threads, tree, vec4 in itertools.product(SPEC.params("wgsl")[0].choices, (0, 1), (0, 1)):
            params = {"threads": threads, "outputs_per_wg": max(1, 32 // threads), "vec4": vec4, "tree": tree}
            params["layout"] = 0
            if SPEC.constraints(problem, params, lavapipe.limits, "wgsl") is None:
                check_op(lavapipe, SPEC, problem, params)


@pytest.mark.parametrize("shape", ["2x12x5x6:a2.3:mean", "2x8x3x3:a1:max", "1x16x4x4:a1.2.3:log_sum_exp"])
def test_wgsl_channels_last_layout(wgsl_device, shape):
    problem = SPEC.parse_problem(shape)
    configs = [
        p
        for p in sampled_configs(SPEC, problem, wgsl_device.limits, "wgsl", 12, 5)
        if p["layout"] == 1 or p == SPEC.default_params(problem, wgsl_device.limits, "wgsl")
    ]
    assert any(p["layout"] for p in configs)
    for params in configs:
        check_op(wgsl_device, SPEC, problem, params)


def test_glsl_every_config(gl):
    # tails of 0..3 values in a packed texel, strided and contiguous views
    for shape, kind in itertools.product(("6x8:a1", "4x9:a1", "3x10:a1", "5x11:a1", "3x7x6:a1"), ("min", "lse")):
        problem = SPEC.parse_problem(f"{shape}:{'log_sum_exp' if kind == 'lse' else kind}")
        for pack, square in itertools.product((1, 4), (0, 1)):
            check_op(gl, SPEC, problem, {"pack": pack, "square": square})


# --- NaN and infinities -----------------------------------------------------------------------------------------


def _same(out: np.ndarray, ref: np.ndarray, what: str) -> None:
    """NaN and infinities where the reference has them, the finite values within the usual tolerance."""
    assert out.shape == ref.shape, what
    np.testing.assert_array_equal(np.isnan(out), np.isnan(ref), err_msg=f"{what}: NaN differs")
    special = ~np.isfinite(ref) & ~np.isnan(ref)
    np.testing.assert_array_equal(out[special], ref[special], err_msg=f"{what}: infinities differ")
    finite = np.isfinite(ref)
    scale = max(1.0, float(np.abs(ref[finite]).max(initial=0.0)))
    np.testing.assert_allclose(out[finite], ref[finite], rtol=0, atol=1e-4 * scale, err_msg=what)


def _special_inputs(problem: ReduceProblem, seed: int) -> np.ndarray:
    """Return x with NaN at a few places, +-inf at others, and the special rows every kind must get right."""
    rng = np.random.default_rng(seed)
    (x,) = SPEC.make_inputs(problem, rng)
    rows = np.moveaxis(x.reshape(problem.outer, problem.length, problem.inner), 1, 2).reshape(-1, problem.length)
    rows[0, 3] = np.nan  # NaN in the middle of a row: NaN out (ONNX Runtime drops such a NaN for max/min)
    rows[1, :] = -np.inf  # all -inf: max, min, sum and log_sum_exp are -inf
    rows[2, 5] = np.inf  # one +inf
    rows[3, 0], rows[3, -1] = np.inf, -np.inf  # both: a sum is NaN, log_sum_exp +inf
    rows[4, :] = 0.0  # a zero sum: log_sum is -inf
    if problem.kind not in ("prod", "l2", "sum_square"):  # float32 products and squares of it overflow
        rows[5, 1] = -3e38  # a huge negative element: log_sum_exp stays finite
    spots = rng.choice(rows[6:].size, 5, replace=False)
    rows[6:].reshape(-1)[spots] = rng.choice(np.array([np.nan, np.inf, -np.inf], np.float32), 5)
    back = rows.reshape(problem.outer, problem.inner, problem.length)
    return np.ascontiguousarray(np.moveaxis(back, 2, 1)).reshape(problem.shape)


def _check_specials(backend: Any, kind: str) -> None:
    for shape in ("12x40:a1", "3x32x4:a1", "2x12x5x6:a2.3"):
        problem = SPEC.parse_problem(f"{shape}:{kind}")
        x = _special_inputs(problem, len(shape))
        ref = SPEC.reference(problem, [x])
        assert np.isnan(ref).any() and np.isinf(ref).any(), shape
        for params in sampled_configs(SPEC, problem, backend.limits, backend.language, 3, seed=2):
            out = prepare(backend, SPEC, problem, params, [x]).run()
            _same(out, ref, f"{backend.info.slug} {backend.language} {problem} {params}")


@pytest.mark.parametrize("kind", KINDS)
def test_nan_and_inf_in_wgsl(wgsl_device, kind):
    _check_specials(wgsl_device, kind)


@pytest.mark.parametrize("kind", KINDS)
def test_nan_and_inf_in_glsl(gl, kind):
    _check_specials(gl, kind)


def test_tuner_smoke(tmp_path, lavapipe):
    problem = SPEC.parse_problem("1x64x16x16:a2.3:mean")
    result = quick_tune(lavapipe, SPEC, problem, tmp_path)
    assert result.record is not None and result.best_time <= result.default_time
    assert SPEC.constraints(problem, result.record.params, lavapipe.limits, "wgsl") is None
    check_op(lavapipe, SPEC, problem, result.record.params)


# --- models against ONNX Runtime ---------------------------------------------------------------------------------

RTOL = 1e-4  # of the output's largest magnitude


@pytest.fixture(scope="module", params=["wgsl", "glsl"])
def device(request: pytest.FixtureRequest) -> tuple[Any, str]:
    """(device info, language): lavapipe for WGSL, llvmpipe-GL for GLSL."""
    backend = request.getfixturevalue("lavapipe" if request.param == "wgsl" else "gl")
    return backend.info, request.param


def _check_model(model: onnx.ModelProto, feeds: dict[str, np.ndarray], device: tuple[Any, str]) -> Any:
    info, language = device
    session = kernelforge.load(model, device=info.index, backend=language)
    got = session.run(feeds)
    ort_session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    want = dict(zip([o.name for o in ort_session.get_outputs()], ort_session.run(None, feeds), strict=True))
    for name, expected in want.items():
        assert got[name].shape == expected.shape, name
        scale = max(float(np.abs(expected).max()), 1e-6)
        np.testing.assert_allclose(got[name], expected, rtol=0, atol=RTOL * scale, err_msg=f"{language} {name}")
    return session


@pytest.mark.parametrize("op", sorted(["ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1",
                                       "ReduceL2", "ReduceSumSquare", "ReduceLogSum", "ReduceLogSumExp"]))  # fmt: skip
def test_reduce_models_match_onnxruntime(device, op):
    low = 0.1 if op == "ReduceLogSum" else -2.0
    x = np.random.default_rng(1).uniform(low, 2.0, (2, 6, 5, 4)).astype(np.float32)
    for axes, keepdims in (([1], 0), ([2, 3], 1), ([0, 2], 0)):  # middle, spatial, not adjacent (a transpose)
        session = _check_model(reduce_model(op, x.shape, axes, keepdims, 18), {"x": x}, device)
        assert [s.call.op for s in session.steps].count("reduce") == 1


def test_squeeze_excite_block_matches_onnxruntime(device):
    model, feeds = squeeze_excite_model()
    session = _check_model(model, feeds, device)
    assert [s.call.op for s in session.steps].count("reduce") == 3


@pytest.mark.parametrize("shape,as_inputs", [((2, 4, 9, 7), False), ((1, 3, 300), True), ((2, 2, 3, 4, 5), False)])
def test_instance_norm_models_match_onnxruntime(device, shape, as_inputs):
    model, feeds = instance_norm_model(shape, 1e-4, as_inputs)
    session = _check_model(model, feeds, device)
    kernels = [s.call.op for s in session.steps if s.call.op != "transpose"]
    assert kernels == ["reduce", "elementwise", "reduce", "elementwise"]


def test_group_norm_on_a_conv_feature_map_matches_onnxruntime(device):
    model, feeds = group_norm_model((2, 3, 12, 12), channels=8, groups=4)
    for seed in (0, 1):  # a second input flows through the same buffers
        if seed:
            feeds = {"x": np.random.default_rng(seed).standard_normal((2, 3, 12, 12)).astype(np.float32)}
        session = _check_model(model, feeds, device)
    kernels = [s.call.op for s in session.steps if s.call.op != "transpose"]
    assert kernels == ["conv2d", "reduce", "elementwise", "reduce", "elementwise", "elementwise"]
