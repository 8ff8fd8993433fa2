"""GEMM on real adapters against the numpy reference."""

from __future__ import annotations

import time

import numpy as np
import pytest

import kernelforge.api as kops
from kernelforge.errors import InvalidParamsError, ShapeError
from kernelforge.ops import get_op
from kernelforge.ops._epilogue import ACTIVATIONS, Activation
from kernelforge.ops.gemm import DEFAULT_PARAMS, GemmProblem
from kernelforge.runtime.kernel import prepare
from kernelforge.testing.ops import check_op, check_sampled_configs

pytestmark = pytest.mark.device
SPEC = get_op("gemm")

SHAPES = [
    "1x1x1",
    "1x7x1",
    "7x1x5",
    "2x3x4",
    "17x13x5",
    "31x37x41",  # primes: no tile divides anything
    "33x65x129",  # one past every power-of-two tile
    "64x64x64",
    "100x36x72",
    "3x37x41x29",  # batch
    "5x8x8x8",
    "1x1x1t",
    "37x41x29t",
    "2x20x12x16t",
]

CONFIGS = [
    dict(DEFAULT_PARAMS),
    {"wg_x": 8, "wg_y": 8, "wpt_m": 8, "wpt_n": 8, "tile_k": 4, "vec_width": 4, "vec_a": 4, "staging": 0},
    {"wg_x": 4, "wg_y": 2, "wpt_m": 2, "wpt_n": 1, "tile_k": 2, "vec_width": 1, "vec_a": 1, "staging": 0},
    {"wg_x": 16, "wg_y": 4, "wpt_m": 1, "wpt_n": 4, "tile_k": 8, "vec_width": 4, "vec_a": 1, "staging": 1},
    {"wg_x": 2, "wg_y": 32, "wpt_m": 2, "wpt_n": 2, "tile_k": 16, "vec_width": 1, "vec_a": 1, "staging": 1},
    {"wg_x": 1, "wg_y": 1, "wpt_m": 1, "wpt_n": 1, "tile_k": 1, "vec_width": 1, "vec_a": 1, "staging": 1},
    # tall register tiles (256 accumulators), unstaged and staged, vec4 and scalar
    {"wg_x": 8, "wg_y": 1, "wpt_m": 16, "wpt_n": 16, "tile_k": 8, "vec_width": 4, "vec_a": 4, "staging": 0},
    {"wg_x": 8, "wg_y": 2, "wpt_m": 16, "wpt_n": 8, "tile_k": 2, "vec_width": 1, "vec_a": 1, "staging": 0},
    {"wg_x": 4, "wg_y": 2, "wpt_m": 16, "wpt_n": 16, "tile_k": 4, "vec_width": 4, "vec_a": 1, "staging": 1},
]


def _runnable(problem: GemmProblem, params, limits):
    reason = SPEC.constraints(problem, params, limits, "wgsl")
    return reason is None


@pytest.mark.parametrize("shape", SHAPES)
def test_shapes_with_fixed_configs(lavapipe, shape):
    problem = SPEC.parse_problem(shape)
    ran = 0
    for params in [SPEC.default_params(problem, lavapipe.limits, "wgsl"), *CONFIGS]:
        if _runnable(problem, params, lavapipe.limits):
            check_op(lavapipe, SPEC, problem, params)
            ran += 1
    assert ran >= 2, f"{shape}: too few configs were runnable"


def test_sampled_configs_across_the_space(lavapipe):
    rng = np.random.default_rng(7)
    problems = [SPEC.parse_problem(s) for s in ("29x44x36", "2x16x24x20t", "64x64x64")]
    checked = 0
    while checked < 36:
        params = {p.name: int(rng.choice(p.choices)) for p in SPEC.params("wgsl")}
        problem = problems[checked % len(problems)]
        if not _runnable(problem, params, lavapipe.limits):
            continue
        check_op(lavapipe, SPEC, problem, params, seed=checked)
        checked += 1


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
@pytest.mark.parametrize("vec_width", [1, 4])
def test_every_activation_with_bias(lavapipe, name, vec_width):
    act = Activation.parse(name)
    if name == "clip":
        act = Activation.parse("clip(-0.5, 0.25)")
    if name == "leaky_relu":
        act = Activation.parse("leaky_relu(0.2)")
    problem = GemmProblem(m=19, n=24, k=13, has_bias=True, activation=act)
    params = {**CONFIGS[1], "vec_width": vec_width, "vec_a": 1}
    inputs = SPEC.make_inputs(problem, np.random.default_rng(3))
    inputs[0] *= 4.0  # reach the clamps and saturations of every activation
    out = prepare(lavapipe, SPEC, problem, params, inputs).run()
    ref = SPEC.reference(problem, inputs)
    np.testing.assert_allclose(out, ref, rtol=2e-5, atol=2e-5)


def test_every_wgsl_device_runs_gemm(wgsl_device):
    problem = SPEC.parse_problem("2x23x36x17")
    for params in (SPEC.default_params(problem, wgsl_device.limits, "wgsl"), CONFIGS[2], CONFIGS[3]):
        if _runnable(problem, params, wgsl_device.limits):
            check_op(wgsl_device, SPEC, problem, params)


@pytest.mark.parametrize("shape", ["1x128x64t", "1x10x64t", "3x10x64", "2x4x12x8", "1x5x36t"])
def test_matrix_vector_seeds_on_every_wgsl_device(wgsl_device, shape):
    problem = SPEC.parse_problem(shape)
    seeds = SPEC.seed_params(problem, wgsl_device.limits, "wgsl")
    assert seeds
    for params in seeds:
        check_op(wgsl_device, SPEC, problem, params)


@pytest.mark.parametrize("selector", ["lavapipe", "swiftshader"])
def test_kernel_times_are_gpu_timestamps_on_vulkan(fresh_device, selector):
    # A fresh device: the first timed run also pays the query set-up (~15 ms on both), which once switched
    # timestamps off for good, so every tuner trial was timed by the wall clock (+0.3 ms of submit and read).
    backend = fresh_device(selector)
    problem = SPEC.parse_problem("1x128x64t")
    params = SPEC.seed_params(problem, backend.limits, "wgsl")[0]
    check_op(backend, SPEC, problem, params)
    kernel = prepare(backend, SPEC, problem, params, SPEC.make_inputs(problem, np.random.default_rng(0)))
    times, walls = [], []
    for _ in range(9):  # alternated, so a busy spell of the host reaches both lists alike
        times.append(kernel.time())
        start = time.perf_counter()
        kernel.run()
        walls.append(time.perf_counter() - start)
    assert backend.has_timestamps, f"{selector}: timestamps were switched off"
    # A pass's GPU time excludes the submit and the read-back that a wall clock counts: 0.13 vs 0.5 ms here,
    # while time() by the wall clock read 0.32-0.37 ms. Minima, since a host stall inflates a wall clock, and
    # a stalled timed run is reported by its wall clock.
    assert 0 < min(times) < 0.5 * min(walls), (sorted(times), sorted(walls))


def test_public_api_matches_numpy(lavapipe):
    rng = np.random.default_rng(5)
    a = rng.standard_normal((37, 23)).astype(np.float32)
    b = rng.standard_normal((23, 11)).astype(np.float32)
    bias = rng.standard_normal(11).astype(np.float32)
    out = kops.gemm(a, b, bias=bias, activation="relu", device="lavapipe")
    np.testing.assert_allclose(out, np.maximum(a @ b + bias, 0), rtol=1e-5, atol=1e-5)
    bt = rng.standard_normal((4, 11, 23)).astype(np.float32)
    a3 = rng.standard_normal((4, 37, 23)).astype(np.float32)
    out3 = kops.gemm(a3, bt, trans_b=True, device="lavapipe")
    np.testing.assert_allclose(out3, a3 @ bt.transpose(0, 2, 1), rtol=1e-5, atol=1e-5)
    # a shared (2-D) B broadcast over a batched A
    out_b = kops.gemm(a3, b, device="lavapipe")
    np.testing.assert_allclose(out_b, a3 @ b, rtol=1e-5, atol=1e-5)
    # integer input is converted, float64 too
    ints = kops.gemm(np.arange(6).reshape(2, 3), np.ones((3, 2)), device="lavapipe")
    np.testing.assert_array_equal(ints, np.array([[3, 3], [12, 12]], np.float32))


def test_public_api_rejects_bad_input(lavapipe):
    with pytest.raises(ShapeError, match="inner dimensions"):
        kops.gemm(np.ones((2, 3)), np.ones((4, 2)), device="lavapipe")
    with pytest.raises(ShapeError, match="bias"):
        kops.gemm(np.ones((2, 3)), np.ones((3, 2)), bias=np.ones(3), device="lavapipe")
    with pytest.raises(InvalidParamsError, match="unknown activation"):
        kops.gemm(np.ones((2, 3)), np.ones((3, 2)), activation="swish", device="lavapipe")
    with pytest.raises(ShapeError, match="dtype"):
        kops.gemm(np.array([["a"]]), np.ones((1, 1)), device="lavapipe")


def test_constraint_violation_never_compiles(lavapipe, monkeypatch):
    problem = SPEC.parse_problem("16x18x16")  # N % 4 != 0
    params = {**CONFIGS[1]}
    compiled = []
    monkeypatch.setattr(lavapipe, "_compile", lambda source, label: compiled.append(label))
    with pytest.raises(InvalidParamsError, match="vec_width=4 needs N % 4 == 0"):
        prepare(lavapipe, SPEC, problem, params, SPEC.make_inputs(problem, np.random.default_rng(0)))
    assert compiled == []


@pytest.mark.parametrize(
    "problem",
    [
        GemmProblem(m=19, n=24, k=13, has_bias=True, has_residual=True, activation=Activation.parse("gelu")),
        GemmProblem(m=33, n=20, k=17, has_residual=True),
        GemmProblem(m=7, n=12, k=9, batch=3, batch_b=3, trans_b=True, has_bias=True, has_residual=True),
    ],
    ids=["bias-gelu", "plain", "batched-trans_b"],
)
def test_residual_epilogue_on_both_languages(lavapipe, gl, problem):
    # a transformer's skip connection added before the activation, in one kernel (sampled configs of each space)
    for backend in (lavapipe, gl):
        check_sampled_configs(backend, SPEC, problem, 6, problem.m)
    quantized = GemmProblem(
        m=19, n=24, k=13, has_bias=True, has_residual=True, wq=SPEC.parse_problem("1x24x13/qi8c").wq
    )
    for backend in (lavapipe, gl):
        check_sampled_configs(backend, SPEC, quantized, 4, 5)


@pytest.mark.parametrize("shape", ["64x64x64", "63x64x64", "64x60x64", "64x64x60", "63x60x60", "2x64x128x32t"])
def test_divisible_shapes_drop_guards_and_stay_exact(lavapipe, shape):
    # M, N or K that is a multiple of its tile renders without that dimension's clamps, store guards or K tail;
    # every combination of the three still matches the reference (on a GELU + bias epilogue)
    from kernelforge.templates import render

    params = {"wg_x": 4, "wg_y": 4, "wpt_m": 4, "wpt_n": 8, "tile_k": 8, "vec_width": 4, "vec_a": 4, "staging": 0}
    base = SPEC.parse_problem(shape)
    problem = GemmProblem(
        m=base.m, n=base.n, k=base.k, batch=base.batch, batch_b=base.batch_b, trans_b=base.trans_b,
        has_bias=True, activation=Activation.parse("gelu"),
    )  # fmt: skip
    text = render(SPEC, "wgsl", problem, params)
    assert ("min(row0 + 1u, dims.m - 1u)" in text) == (problem.m % 16 != 0)
    assert ("if (col0 + 1u < nvec)" in text) == (problem.n % 32 != 0)
    assert ("k_main" in text) == (problem.k % 8 != 0)
    check_op(lavapipe, SPEC, problem, params)


@pytest.mark.parametrize("shape", ["64x64x64", "33x20x17", "3x96x128t", "2x16x24x40"])
def test_f16_arithmetic_is_within_its_bound_where_the_device_has_it(lavapipe, shape):
    from kernelforge.tuner.objective import verify

    assert lavapipe.limits.f16, "lavapipe offers shader-f16"
    problem = SPEC.parse_problem(shape)
    ran = 0
    limits = lavapipe.limits
    for base in [SPEC.default_params(problem, limits, "wgsl"), *SPEC.seed_params(problem, limits, "wgsl")]:
        params = {**base, "precision": 1}
        if SPEC.constraints(problem, params, lavapipe.limits, "wgsl") is None:
            out = check_op(lavapipe, SPEC, problem, params)  # the op's f16 bound
            ran += 1
    assert ran >= 2
    # it is f16: not within the float32 bound on the same inputs, and values past f16's range fail verification
    inputs = SPEC.make_inputs(problem, np.random.default_rng(0))
    assert not verify(out, SPEC.reference(problem, inputs), 1e-6).ok
    big = [x * 400 if i < 2 else x for i, x in enumerate(inputs)]
    kernel = prepare(lavapipe, SPEC, problem, params, big)
    assert not verify(kernel.run(), SPEC.reference(problem, big), SPEC.tolerance(problem, params)).ok


STAGED = [
    {"wg_x": 8, "wg_y": 8, "wpt_m": 4, "wpt_n": 4, "tile_k": 16, "vec_width": 4, "vec_a": 1, "staging": 1},
    {"wg_x": 4, "wg_y": 4, "wpt_m": 2, "wpt_n": 1, "tile_k": 8, "vec_width": 1, "vec_a": 1, "staging": 1},
]


@pytest.mark.parametrize("shape", ["64x64x64", "33x20x17", "3x96x128t", "2x16x24x40"])
def test_f16_tiles_with_f32_sums_are_within_their_bound(lavapipe, shape):
    from kernelforge.templates import render
    from kernelforge.tuner.objective import verify

    problem = SPEC.parse_problem(shape)
    inputs = SPEC.make_inputs(problem, np.random.default_rng(0))
    reference = SPEC.reference(problem, inputs)
    for base in STAGED:
        params = {**base, "precision": 2}
        assert SPEC.constraints(problem, params, lavapipe.limits, "wgsl") is None
        assert "var<workgroup> a_tile: array<f16," in render(SPEC, "wgsl", problem, params)
        out = check_op(lavapipe, SPEC, problem, params)  # the op's f16 bound
        # f16 tiles round the inputs: not within the float32 bound, yet closer than f16 sums
        assert not verify(out, reference, 1e-6).ok
        f16_sums = prepare(lavapipe, SPEC, problem, {**base, "precision": 1}, inputs).run()
        assert np.abs(out - reference).max() <= np.abs(f16_sums - reference).max()
    unstaged = {**STAGED[0], "staging": 0, "precision": 2}
    assert "needs staging=1" in (SPEC.constraints(problem, unstaged, lavapipe.limits, "wgsl") or "")
