"""Concat spec, templates and parameter validation: no device needed."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

from kernelforge.errors import InvalidParamsError, ShapeError
from kernelforge.ops import Limits, get_op
from kernelforge.ops.concat import MAX_GLSL_INPUTS, MAX_WGSL_INPUTS, ConcatProblem
from kernelforge.templates import render
from kernelforge.testing.ops import assert_default_fits, assert_params_reach_template, valid_configs

SPEC = get_op("concat")
LIMITS = Limits()
SHAPES = [
    "1+1:a0",
    "7+3:a0",
    "2x3+2x5:a-1",
    "1x64x56x56+1x32x56x56:a1",
    "5x3+2x3+1x3:a0",
    "3x1x2+3x4x2+3x2x2+3x1x2+3x3x2+3x1x2+3x5x2:a1",
    "2x3x1x5x1x2+2x3x4x5x1x2:a2",
    "13:a0",
    "4x4+4x8+4x12:a1",
    "1x20000+1x4:a1",
]


def onnx_concat(arrays, axis):
    names = [f"x{k}" for k in range(len(arrays))]
    out_shape = list(np.concatenate(arrays, axis=axis).shape)
    graph = helper.make_graph(
        [helper.make_node("Concat", names, ["y"], axis=axis)],
        "concat",
        [
            helper.make_tensor_value_info(n, TensorProto.FLOAT, list(a.shape))
            for n, a in zip(names, arrays, strict=True)
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(model)
    return ReferenceEvaluator(model).run(None, dict(zip(names, arrays, strict=True)))[0]


@pytest.mark.parametrize("language", ["wgsl", "glsl"])
def test_every_param_reaches_the_template(language):
    assert_params_reach_template(SPEC, language)


@pytest.mark.parametrize("language", ["wgsl", "glsl"])
@pytest.mark.parametrize("shape", SHAPES)
def test_default_params_always_fit(shape, language):
    problem = SPEC.parse_problem(shape)
    for limits in (LIMITS, Limits(max_invocations=32, max_wg_x=32)):
        params = assert_default_fits(SPEC, problem, limits, language)
        render(SPEC, language, problem, params)


@pytest.mark.parametrize(
    "text,shapes,axis",
    [
        ("1x64x56x56+1x32x56x56:a1", ((1, 64, 56, 56), (1, 32, 56, 56)), 1),
        ("2x3+2x5:a-1", ((2, 3), (2, 5)), 1),
        ("7:a0", ((7,),), 0),
        ("4x2+1x2+3x2:a-2", ((4, 2), (1, 2), (3, 2)), 0),
    ],
)
def test_parse_and_key_round_trip(text, shapes, axis):
    problem = SPEC.parse_problem(text)
    assert (problem.shapes, problem.axis) == (shapes, axis)
    key = SPEC.problem_key(problem)
    assert SPEC.parse_problem(key) == problem and SPEC.problem_key(SPEC.parse_problem(key)) == key
    assert "," not in key


@pytest.mark.parametrize(
    "text", ["", "2x3+2x5", "2x3+2x5:a2", "2x3+3x5:a1", "2x3+2x3x1:a0", "2x3++2x3:a0", "2x0+2x1:a1", "2x3+2x5:ax"]
)
def test_bad_shape_strings(text):
    with pytest.raises(ShapeError, match="concat"):
        SPEC.parse_problem(text)


@pytest.mark.parametrize(
    "kwargs,field",
    [
        ({"shapes": (), "axis": 0}, "shapes"),
        ({"shapes": ((2, 3), (2, 4)), "axis": 0}, r"shapes\[1\]"),
        ({"shapes": ((2, 3), (2,)), "axis": 0}, r"shapes\[1\]"),
        ({"shapes": ((2, 3),), "axis": -3}, "axis"),
        ({"shapes": ((2, -3),), "axis": 0}, r"shapes\[0\]"),
        ({"shapes": ((2, 3),) * 65, "axis": 0}, "inputs"),
    ],
)
def test_problem_validation_names_op_and_field(kwargs, field):
    with pytest.raises(ShapeError, match=f"concat: .*{field}"):
        ConcatProblem(**kwargs)


def test_problem_views():
    problem = SPEC.parse_problem("2x3x5+2x1x5+2x4x5:a1")
    assert (problem.outer, problem.inner, problem.widths, problem.offsets, problem.width) == (
        2,
        5,
        (15, 5, 20),
        (0, 15, 20),
        40,
    )
    assert SPEC.output_shape(problem) == (2, 8, 5)


def test_input_count_limits_per_language():
    seven = SPEC.parse_problem("+".join(["2x3"] * MAX_WGSL_INPUTS) + ":a0")
    eight = SPEC.parse_problem("+".join(["2x3"] * (MAX_WGSL_INPUTS + 1)) + ":a0")
    assert SPEC.constraints(seven, SPEC.default_params(seven, LIMITS, "wgsl"), LIMITS, "wgsl") is None
    reason = SPEC.constraints(eight, {"wg": 64, "ept": 1, "vec_width": 1}, LIMITS, "wgsl")
    assert "9 storage buffers > 8" in reason
    with pytest.raises(ShapeError, match="maxStorageBuffersPerShaderStage"):
        SPEC.default_params(eight, LIMITS, "wgsl")
    fifteen = SPEC.parse_problem("+".join(["2x3"] * MAX_GLSL_INPUTS) + ":a1")
    sixteen = SPEC.parse_problem("+".join(["2x3"] * (MAX_GLSL_INPUTS + 1)) + ":a1")
    assert SPEC.constraints(fifteen, SPEC.default_params(fifteen, LIMITS, "glsl"), LIMITS, "glsl") is None
    with pytest.raises(ShapeError, match="16 inputs > 15 textures"):
        SPEC.default_params(sixteen, LIMITS, "glsl")


def test_constraints_name_the_reason():
    odd = SPEC.parse_problem("2x3+2x5:a1")
    assert "multiple of 4" in SPEC.constraints(odd, {"wg": 64, "ept": 1, "vec_width": 4}, LIMITS, "wgsl")
    assert SPEC.default_params(odd, LIMITS, "wgsl")["vec_width"] == 1
    even = SPEC.parse_problem("2x4+2x8:a1")
    assert SPEC.default_params(even, LIMITS, "wgsl")["vec_width"] == 4
    assert "exceeds the device limits" in SPEC.constraints(
        even, {"wg": 256, "ept": 1, "vec_width": 4}, Limits(max_invocations=128), "wgsl"
    )
    tall = SPEC.parse_problem("1x20000+1x4:a1")
    assert "MAX_TEXTURE_SIZE" in SPEC.constraints(tall, {"pack": 4, "in_pack": 4, "square": 0}, LIMITS, "glsl")
    assert SPEC.default_params(tall, LIMITS, "glsl")["square"] == 1


def test_space_has_valid_points_in_both_languages():
    problem = SPEC.parse_problem("1x64x56x56+1x32x56x56:a1")
    for language in ("wgsl", "glsl"):
        valid = valid_configs(SPEC, problem, LIMITS, language)
        assert SPEC.space_size(language) >= len(valid) > 3


@pytest.mark.parametrize(
    "bad",
    [
        {"wg": "64u; } fn evil() {", "ept": 1, "vec_width": 1},
        {"wg": 48, "ept": 1, "vec_width": 1},
        {"wg": 64, "ept": 1},
        {"wg": 64, "ept": 1.0, "vec_width": 1},
    ],
)
def test_params_are_validated_before_rendering(bad):
    with pytest.raises(InvalidParamsError):
        render(SPEC, "wgsl", SPEC.parse_problem("2x3+2x5:a1"), bad)


def test_rendered_sources_reflect_params():
    problem = SPEC.parse_problem("2x4+2x8+2x12:a1")
    wgsl = render(SPEC, "wgsl", problem, {"wg": 128, "ept": 2, "vec_width": 4})
    assert "@workgroup_size(128, 1, 1)" in wgsl and "array<vec4<f32>>" in wgsl
    assert "const OFF2: u32 = 3u;" in wgsl and "@binding(4) var<storage, read_write> y" in wgsl
    glsl = render(SPEC, "glsl", problem, {"pack": 4, "in_pack": 4, "square": 0}, target="web")
    assert glsl.startswith("#version 300 es") and "vec4 load4(" in glsl and "uniform sampler2D X2;" in glsl
    lanes = render(SPEC, "glsl", SPEC.parse_problem("2x3+2x5:a1"), {"pack": 4, "in_pack": 4, "square": 1})
    assert "float load1(" in lanes and "kf_coord" in lanes


@pytest.mark.parametrize("text", ["2x3+2x5:a1", "3x2x2+1x2x2+2x2x2:a0", "2x3x4+2x3x1:a-1"])
def test_reference_matches_onnx(text):
    problem = SPEC.parse_problem(text)
    inputs = SPEC.make_inputs(problem, np.random.default_rng(2))
    np.testing.assert_array_equal(SPEC.reference(problem, inputs), onnx_concat(inputs, problem.axis))
