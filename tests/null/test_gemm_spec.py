"""GEMM spec, templates and parameter validation: no device needed."""

from __future__ import annotations

import numpy as np
import pytest

from kernelforge.errors import InvalidParamsError, ShapeError
from kernelforge.ops import Limits, get_op
from kernelforge.ops._epilogue import ACTIVATIONS, Activation
from kernelforge.ops.gemm import DEFAULT_PARAMS, GemmProblem
from kernelforge.templates import kernel_hash, render, template_hash
from kernelforge.testing.ops import assert_default_fits, assert_params_reach_template, valid_configs

SPEC = get_op("gemm")
LIMITS = Limits()


@pytest.mark.parametrize("language", ["wgsl", "glsl"])
def test_every_param_reaches_the_template(language):
    assert_params_reach_template(SPEC, language)


@pytest.mark.parametrize("shape", ["1x1x1", "3x5x7", "1024x1024x1024", "4x9x10x11t", "65537x4x4"])
def test_default_params_always_fit(shape):
    problem = SPEC.parse_problem(shape)
    assert_default_fits(SPEC, problem, LIMITS, "wgsl")


def test_tfjs_style_default_is_the_builtin_one():
    problem = SPEC.parse_problem("1024x1024x1024")
    assert SPEC.default_params(problem, LIMITS, "wgsl") == DEFAULT_PARAMS
    assert DEFAULT_PARAMS["wg_x"] * DEFAULT_PARAMS["wg_y"] == 64
    assert (DEFAULT_PARAMS["wpt_m"], DEFAULT_PARAMS["wpt_n"], DEFAULT_PARAMS["tile_k"]) == (4, 4, 32)
    # an odd N cannot use vec4: the default degrades to scalar loads instead of failing
    odd = SPEC.parse_problem("64x63x64")
    assert SPEC.default_params(odd, LIMITS, "wgsl")["vec_width"] == 1


def test_constraints_name_the_reason():
    problem = SPEC.parse_problem("64x64x64")
    big = {**DEFAULT_PARAMS, "wg_x": 64, "wg_y": 32}
    assert "invocations" in SPEC.constraints(problem, big, LIMITS, "wgsl")
    shared = {**DEFAULT_PARAMS, "wg_x": 16, "wg_y": 16, "wpt_n": 8, "tile_k": 32}
    assert "workgroup memory" in SPEC.constraints(problem, shared, LIMITS, "wgsl")
    assert "vec_a=4" in SPEC.constraints(problem, {**DEFAULT_PARAMS, "vec_a": 4}, LIMITS, "wgsl")
    tight = Limits(max_invocations=32)
    assert "invocations" in SPEC.constraints(problem, DEFAULT_PARAMS, tight, "wgsl")
    assert SPEC.constraints(problem, SPEC.default_params(problem, tight, "wgsl"), tight, "wgsl") is None


def test_space_has_many_valid_points():
    problem = SPEC.parse_problem("1024x1024x1024")
    valid = len(valid_configs(SPEC, problem, LIMITS, "wgsl"))
    assert SPEC.space_size("wgsl") > valid > 1000


@pytest.mark.parametrize(
    "bad",
    [
        {**DEFAULT_PARAMS, "wg_x": "8u; } fn evil() { "},
        {**DEFAULT_PARAMS, "wg_x": 3},
        {**DEFAULT_PARAMS, "wg_x": 8.0},
        {**DEFAULT_PARAMS, "staging": True},
        {**DEFAULT_PARAMS, "extra": 1},
        {k: v for k, v in DEFAULT_PARAMS.items() if k != "tile_k"},
    ],
)
def test_params_are_validated_before_rendering(bad):
    problem = SPEC.parse_problem("64x64x64")
    with pytest.raises(InvalidParamsError):
        render(SPEC, "wgsl", problem, bad)


def test_rendered_source_reflects_params():
    problem = GemmProblem(m=8, n=8, k=8, has_bias=True, activation=Activation.parse("leaky_relu(0.25)"))
    text = render(SPEC, "wgsl", problem, DEFAULT_PARAMS)
    assert "@workgroup_size(8, 8, 1)" in text
    assert "var<workgroup> a_tile: array<f32, 1024>" in text
    assert "x * vec4<f32>(0.25)" in text
    assert "@binding(3) var<storage, read> bias" in text
    unstaged = render(SPEC, "wgsl", problem, {**DEFAULT_PARAMS, "staging": 0, "vec_a": 4})
    assert "var<workgroup>" not in unstaged and "load_a4" in unstaged


def test_template_hash_covers_includes():
    own = template_hash("wgsl/gemm.wgsl.j2")
    assert own == kernel_hash(SPEC, "wgsl")
    assert len(own) == 64
    assert own != template_hash("common/epilogue.wgsl.j2")


@pytest.mark.parametrize("text", ["", "12x12", "0x4x4", "axbxc", "4x4x4x4x4", "1x2x3tt"])
def test_bad_shape_strings(text):
    with pytest.raises(ShapeError):
        SPEC.parse_problem(text)


def test_shape_keys_round_trip():
    for text in ("1024x1024x1024", "4x64x64x64t", "7x3x1"):
        assert SPEC.problem_key(SPEC.parse_problem(text)) == text
    shared_b = GemmProblem(m=4, n=4, k=4, batch=3, batch_b=1)
    assert SPEC.problem_key(shared_b) == "3x4x4x4/b1"


def test_reference_matches_numpy():
    problem = GemmProblem(m=5, n=6, k=7, batch=2, batch_b=2, trans_b=True, has_bias=True)
    a, b, bias = SPEC.make_inputs(problem, np.random.default_rng(0))
    expected = a.astype(np.float64) @ b.astype(np.float64).transpose(0, 2, 1) + bias
    np.testing.assert_allclose(SPEC.reference(problem, [a, b, bias]), expected, rtol=1e-6)


@pytest.mark.parametrize(
    "text,expected",
    [
        (None, Activation("none")),
        ("relu", Activation("relu")),
        ("leaky_relu(0.2)", Activation("leaky_relu", 0.2)),
        ("leaky_relu", Activation("leaky_relu", 0.01)),
        ("clip(-1, 2.5)", Activation("clip", -1.0, 2.5)),
    ],
)
def test_activation_parse(text, expected):
    assert Activation.parse(text) == expected


@pytest.mark.parametrize("text", ["swish", "relu(1)", "clip(a,b)", "clip(0, inf)", "x); evil(", "leaky_relu(nan)"])
def test_activation_parse_rejects(text):
    with pytest.raises(InvalidParamsError):
        Activation.parse(text)


def test_activation_semantics_differ():
    # the reference itself: a wrong activation must not pass as another one (clip's default is relu6)
    x = np.linspace(-8, 8, 33)
    acts = [Activation.parse(n) for n in ACTIVATIONS if n != "clip"] + [Activation.parse("clip(-1, 2)")]
    seen = {str(a): a.apply(x).round(6).tobytes() for a in acts}
    assert len(set(seen.values())) == len(acts)


def test_seed_configs_are_valid_points_of_the_space():
    limits = Limits()
    big = SPEC.parse_problem("1024x1024x1024")
    seeds = SPEC.seed_params(big, limits, "wgsl")
    assert len(seeds) >= 2 and DEFAULT_PARAMS not in seeds
    for seed in seeds:
        assert SPEC.validate_params(seed, "wgsl") == seed
    # a seed that does not fit (vec4 needs N % 4 == 0) is left out rather than handed to the tuner
    odd = SPEC.parse_problem("31x37x41")
    assert all(SPEC.constraints(odd, s, limits, "wgsl") is None for s in SPEC.seed_params(odd, limits, "wgsl"))
    # GLSL: the default's half-float twin, so a tune times both render-target formats
    (twin,) = SPEC.seed_params(big, limits, "glsl")
    assert twin == {**SPEC.default_params(big, limits, "glsl"), "precision": 1}
    assert SPEC.validate_params(twin, "glsl") == twin and SPEC.gl_launch(big, twin).half


def test_matrix_vector_problems_try_one_row_seeds_first():
    limits = Limits()
    seeds = SPEC.seed_params(SPEC.parse_problem("1x128x64t"), limits, "wgsl")
    assert len(seeds) >= 4
    # one row per thread and per workgroup, K as vec4 straight from memory: no barriers, no idle rows
    assert all(s["wpt_m"] == 1 and s["wg_y"] == 1 and s["vec_a"] == 4 and s["staging"] == 0 for s in seeds[:4])
    big = SPEC.seed_params(SPEC.parse_problem("64x128x64t"), limits, "wgsl")
    assert not any(s in big for s in seeds[:4])
    # K not a multiple of 4: vec4 A loads do not fit, so those seeds are left out
    odd_k = SPEC.seed_params(SPEC.parse_problem("1x16x30"), limits, "wgsl")
    assert odd_k and all(s["vec_a"] == 1 for s in odd_k)


def test_wide_register_tiles_only_where_the_compiler_handles_them():
    problem = SPEC.parse_problem("256x256x256")
    tall = {"wg_x": 8, "wg_y": 1, "wpt_m": 16, "wpt_n": 16, "tile_k": 8, "vec_width": 4, "vec_a": 4, "staging": 0}
    tall["precision"] = 0
    assert "wpt_m=16" in (SPEC.constraints(problem, tall, Limits(), "wgsl") or "")
    assert SPEC.constraints(problem, {**tall, "wpt_m": 8}, Limits(), "wgsl") is None  # 128: the narrow cap
    assert SPEC.constraints(problem, tall, Limits(wide_tiles=True), "wgsl") is None
    assert tall in SPEC.seed_params(problem, Limits(wide_tiles=True), "wgsl")
    assert tall not in SPEC.seed_params(problem, Limits(), "wgsl")


def test_f16_arithmetic_needs_shader_f16_and_states_its_bound():
    problem = SPEC.parse_problem("64x64x64")
    f16 = {**DEFAULT_PARAMS, "precision": 1}
    assert "shader-f16" in SPEC.constraints(problem, f16, LIMITS, "wgsl")
    assert SPEC.constraints(problem, f16, Limits(f16=True), "wgsl") is None
    assert SPEC.tolerance(problem, f16) == 1e-2 and SPEC.tolerance(problem, DEFAULT_PARAMS) == 1e-4
    # a record made before the tunable existed computes in f32
    older = {k: v for k, v in DEFAULT_PARAMS.items() if k != "precision"}
    assert SPEC.validate_params(older, "wgsl")["precision"] == 0
    source = render(SPEC, "wgsl", problem, f16)
    assert "enable f16;" in source and "var acc0_0 = vec4<f16>(0.0);" in source
    assert "enable f16" not in render(SPEC, "wgsl", problem, {**DEFAULT_PARAMS, "precision": 0})
