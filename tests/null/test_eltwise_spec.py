"""elementwise spec: problems and keys, broadcasting plans, constraints, defaults, rendering; no device needed."""

from __future__ import annotations

import numpy as np
import pytest

from kernelforge.errors import InvalidParamsError, ShapeError
from kernelforge.ops import Limits, get_op
from kernelforge.ops.eltwise import DEFAULT_PARAMS, EltwiseProblem, _plan
from kernelforge.templates import render, template_hash
from kernelforge.testing.ops import assert_default_fits, assert_params_reach_template, valid_configs

SPEC = get_op("elementwise")
LIMITS = Limits()
LANGUAGES = ["wgsl", "glsl"]

SHAPES = [
    "relu(x*a+b)+y:x=1x64x56x56,a=64x1x1,b=64x1x1,y=1x64x56x56",
    "x*y:x=3x1x5,y=4x5",
    "x+y:x=2x3x8,y=8",
    "pow(x, 3) - y:x=7x3,y=scalar",
    "sigmoid(x):x=scalar",
    "x-y:x=1x1x1,y=1",
    "max(x, y) + z:x=2x1x3x1x5x1,y=7x1x1x5x4,z=1",
    "clip(x, -1.0, 1.0):x=65537x5",
    "x/y:x=4096x4096,y=4096x1",
]


@pytest.mark.parametrize("language", LANGUAGES)
def test_every_param_reaches_the_template(language):
    assert_params_reach_template(SPEC, language)


def test_template_hash_covers_the_expression_snippets():
    assert template_hash("wgsl/elementwise.wgsl.j2") != template_hash("common/expr_wgsl.j2")
    assert SPEC.name == "elementwise" and "relu(x*a+b)+y:x=" in SPEC.shape_syntax


@pytest.mark.parametrize("shape", SHAPES)
def test_key_parses_back_to_the_same_problem(shape):
    problem = SPEC.parse_problem(shape)
    key = SPEC.problem_key(problem)
    assert SPEC.parse_problem(key) == problem
    assert SPEC.problem_key(SPEC.parse_problem(key)) == key


def test_keys_are_unique_and_shapes_broadcast():
    keys = {SPEC.problem_key(SPEC.parse_problem(s)) for s in SHAPES}
    assert len(keys) == len(SHAPES)
    problem = SPEC.parse_problem("max(x, y) + z:z=1,y=7x1x1x5x4,x=2x1x3x1x5x1")
    assert problem.names == ("x", "y", "z")  # first appearance, not the order of the shape list
    assert SPEC.output_shape(problem) == (2, 7, 3, 1, 5, 4)
    assert SPEC.output_shape(SPEC.parse_problem("x+y:x=scalar,y=scalar")) == ()
    assert SPEC.problem_key(SPEC.parse_problem("x + 0.5:x=")) == "x+0.5:x=scalar"


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        ("x+y", "is not EXPR:NAME"),
        ("x+y:x=3", "no array|do not appear|unknown input name 'y'"),
        ("x:x=3,y=4", "do not appear"),
        ("x:x=3x", "NAME=DxDx"),
        ("x:x=3x0", "sizes >= 1"),
        ("x:x=3,x=3", "given twice"),
        ("x+y:x=3x4,y=5", "input 'y' of shape \\(5,\\) does not broadcast"),
        ("x:x=1x1x1x1x1x1x1", "rank <= 6"),
        ("foo(x):x=3", "unknown function 'foo'"),
        ("x.y:x=3", "Attribute"),
    ],
)
def test_bad_shapes_name_the_problem(shape, message):
    with pytest.raises(ShapeError, match=message):
        SPEC.parse_problem(shape)


def test_problem_validates_hand_built_ir_and_unused_inputs():
    with pytest.raises(ShapeError, match="unknown op"):
        EltwiseProblem(("evil", (), ("in", (0,))), ("x",), ((3,),))
    with pytest.raises(ShapeError, match="not used"):
        EltwiseProblem(("relu", (), ("in", (0,))), ("x", "y"), ((3,), (3,)))
    with pytest.raises(ShapeError, match="reserved"):
        EltwiseProblem(("relu", (), ("in", (0,))), ("exp",), ((3,),))


@pytest.mark.parametrize(
    ("shape", "dims", "strides", "kinds"),
    [
        ("x*y:x=3x1x5,y=4x5", (3, 4, 5), ((5, 0, 1), (0, 5, 1)), ("strided", "strided")),
        ("x+y:x=2x3x8,y=8", (6, 8), ((8, 1), (0, 1)), ("full", "strided")),
        ("x+y:x=2x3x8,y=2x3x8", (48,), ((1,), (1,)), ("full", "full")),
        ("x+y:x=5x1x1,y=5x4x3", (5, 12), ((1, 0), (12, 1)), ("strided", "full")),
        ("x+y:x=1x1,y=scalar", (1,), ((0,), (0,)), ("scalar", "scalar")),
        ("x+y:x=1x7x1,y=scalar", (7,), ((1,), (0,)), ("full", "scalar")),
    ],
)
def test_shapes_collapse_to_few_axes(shape, dims, strides, kinds):
    plan = _plan(SPEC.parse_problem(shape))
    assert (plan.dims, plan.strides, plan.kinds) == (dims, strides, kinds)


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("shape", SHAPES)
def test_default_params_always_fit(shape, language):
    problem = SPEC.parse_problem(shape)
    params = assert_default_fits(SPEC, problem, LIMITS, language)
    render(SPEC, language, problem, params)


def test_defaults_degrade_instead_of_failing():
    assert SPEC.default_params(SPEC.parse_problem("x:x=64x64"), LIMITS, "wgsl") == DEFAULT_PARAMS
    odd = SPEC.default_params(SPEC.parse_problem("x+y:x=6x5,y=5"), LIMITS, "wgsl")
    assert odd["vec4"] == 0
    # a 2x6 input read at the output's own offsets collapses to 12 elements: vec4 fits although 6 % 4 != 0
    assert SPEC.default_params(SPEC.parse_problem("x:x=2x6"), LIMITS, "wgsl")["vec4"] == 1


def test_constraints_name_the_reason():
    problem = SPEC.parse_problem("x+y:x=6x5,y=5")
    assert "vec4=1 needs" in SPEC.constraints(problem, {**DEFAULT_PARAMS, "vec4": 1}, LIMITS, "wgsl")
    tight = Limits(max_invocations=64, max_wg_x=64)
    assert "workgroup of 256" in SPEC.constraints(problem, {**DEFAULT_PARAMS, "wg": 256}, tight, "wgsl")
    big = SPEC.parse_problem("x+y:x=8192x8192,y=1")
    assert "storage binding" in SPEC.constraints(big, DEFAULT_PARAMS, LIMITS, "wgsl")
    few = Limits(max_workgroups_per_dim=16)
    assert "dispatch" in SPEC.constraints(SPEC.parse_problem("x:x=100000"), DEFAULT_PARAMS, few, "wgsl")
    wide = SPEC.parse_problem("x:x=100000")
    assert "MAX_TEXTURE_SIZE" in SPEC.constraints(wide, {"pack_out": 4, "pack_in": 4, "square": 0}, LIMITS, "glsl")
    assert SPEC.constraints(wide, {"pack_out": 4, "pack_in": 4, "square": 1}, LIMITS, "glsl") is None


def test_launch_covers_every_item_with_a_2d_grid_past_65535():
    problem = SPEC.parse_problem("x*2:x=3x7x11")
    launch = SPEC.launch(problem, {"wg": 64, "ept": 2, "vec4": 0})
    assert launch.workgroups == (2, 1, 1) and launch.uniforms[:2] == (231, 2)
    huge = SPEC.parse_problem("x*2:x=4096x4096")
    gx, gy, _ = SPEC.launch(huge, {"wg": 64, "ept": 1, "vec4": 1}).workgroups
    assert gx == 65535 and gx * gy * 64 >= 4096 * 4096 // 4


def test_flops_and_shape_vector():
    problem = SPEC.parse_problem(SHAPES[0])
    assert SPEC.flops(problem) == 64 * 56 * 56 * 4
    assert SPEC.shape_vector(problem)[0] == 64 * 56 * 56


def test_space_has_valid_points_in_both_languages():
    problem = SPEC.parse_problem(SHAPES[0])
    valid = {language: valid_configs(SPEC, problem, LIMITS, language) for language in LANGUAGES}
    assert len(valid["wgsl"]) == SPEC.space_size("wgsl")
    assert all(p["square"] == 1 for p in valid["glsl"]) and len(valid["glsl"]) == 4  # 200704 texels: too wide


def test_wgsl_text_is_generated_from_the_ir():
    problem = SPEC.parse_problem("relu(x*a+b)+y:x=2x4x3,a=4x1,b=4x1,y=2x4x3")
    text = render(SPEC, "wgsl", problem, {"wg": 128, "ept": 2, "vec4": 0})
    for line in (
        "let t0 = v0 * v1;",
        "let t1 = t0 + v2;",
        "let t2 = select(max(t1, f32(0.0)), t1, kf_nan_s(t1));",
        "y[i] = t3;",
    ):
        assert line in text
    assert "@workgroup_size(128, 1, 1)" in text and "const EPT: u32 = 2u;" in text
    assert "fn off1(e: u32)" in text and "fn off0" not in text  # x is read at the output's own offset
    vec = render(SPEC, "wgsl", SPEC.parse_problem("x*2.5:x=8"), {"wg": 64, "ept": 1, "vec4": 1})
    assert "array<vec4<f32>>" in vec and "let t0 = v0 * vec4<f32>(2.5);" in vec


def test_glsl_text_is_generated_from_the_ir():
    problem = SPEC.parse_problem("leaky_relu(x, 0.25) - pow(y, 2):x=5,y=5")
    text = render(SPEC, "glsl", problem, {"pack_out": 1, "pack_in": 1, "square": 0}, target="web")
    assert text.startswith("#version 300 es")
    assert "float t0 = (v0 >= 0.0 ? v0 : v0 * 0.25);" in text
    assert "float t1 = v1 * v1;" in text and "o0 = t2;" in text
    packed = render(SPEC, "glsl", problem, {"pack_out": 4, "pack_in": 4, "square": 1})
    assert "vec4 t0 = mix(v0 * vec4(0.25), v0, greaterThanEqual(v0, vec4(0.0)));" in packed
    assert "vec4 v0 = ld0v(i);" in packed


@pytest.mark.parametrize("language", LANGUAGES)
def test_no_program_text_reaches_the_shader(language):
    problem = SPEC.parse_problem("gelu(secret_name) + pow(other_name, 0.5):secret_name=3,other_name=1")
    params = SPEC.default_params(problem, LIMITS, language)
    text = render(SPEC, language, problem, params)
    assert "secret_name" not in text and "other_name" not in text
    assert ("kf_erf" in text) and ("kf_pow" in text)


def test_params_are_validated_before_rendering():
    problem = SPEC.parse_problem("x:x=4")
    for bad in ({**DEFAULT_PARAMS, "wg": "64u; evil"}, {**DEFAULT_PARAMS, "ept": 3}, {"wg": 64, "ept": 1}):
        with pytest.raises(InvalidParamsError):
            render(SPEC, "wgsl", problem, bad)


def test_make_inputs_find_a_finite_domain():
    rng = np.random.default_rng(0)
    for shape in ("sqrt(x - y) + reciprocal(x):x=5x3,y=3", "pow(x, y) / y:x=4,y=4", "relu(x):x=2x2"):
        problem = SPEC.parse_problem(shape)
        inputs = SPEC.make_inputs(problem, rng)
        assert [a.shape for a in inputs] == list(problem.shapes)
        assert all(a.dtype == np.float32 for a in inputs)
        assert np.all(np.isfinite(SPEC.reference(problem, inputs)))
    relu = SPEC.parse_problem("relu(x):x=64")
    assert SPEC.make_inputs(relu, rng)[0].min() < 0  # no domain op: negative values are exercised


def test_device_inputs_check_shapes():
    problem = SPEC.parse_problem("x+y:x=2x3,y=3")
    ok = SPEC.device_inputs(problem, DEFAULT_PARAMS, [np.ones((2, 3)), np.ones(3)])
    assert [a.dtype for a in ok] == [np.float32, np.float32]
    with pytest.raises(ShapeError, match="input 'y' has shape"):
        SPEC.device_inputs(problem, DEFAULT_PARAMS, [np.ones((2, 3)), np.ones(2)])
