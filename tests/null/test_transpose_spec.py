"""Transpose spec, collapsing, templates and parameter validation: no device needed."""

from __future__ import annotations

import itertools

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

from kernelforge.errors import InvalidParamsError, ShapeError
from kernelforge.ops import Limits, get_op
from kernelforge.ops.transpose import TransposeProblem, collapse
from kernelforge.templates import render
from kernelforge.testing.ops import assert_default_fits, assert_params_reach_template, valid_configs

SPEC = get_op("transpose")
LIMITS = Limits()
SHAPES = [
    "1x64x56x56:p0231",
    "1x56x56x64:p0312",
    "3x5",
    "7",
    "1x1x1",
    "2x1x3:p210",
    "2x3x4x5x6x7:p531042",
    "37x41:p10",
    "3x17x33:p021",
    "3x17x33:p102",
    "1x5000:p10",
    "70000x2:p10",
]


def onnx_transpose(x, perm):
    attrs = {} if perm is None else {"perm": list(perm)}
    out_shape = list(np.transpose(x, perm).shape)
    graph = helper.make_graph(
        [helper.make_node("Transpose", ["x"], ["y"], **attrs)],
        "transpose",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(model)
    return ReferenceEvaluator(model).run(None, {"x": x})[0]


@pytest.mark.parametrize("language", ["wgsl", "glsl"])
def test_every_param_reaches_the_template(language):
    assert_params_reach_template(SPEC, language)


@pytest.mark.parametrize("language", ["wgsl", "glsl"])
@pytest.mark.parametrize("shape", SHAPES)
def test_default_params_always_fit(shape, language):
    problem = SPEC.parse_problem(shape)
    for limits in (LIMITS, Limits(max_invocations=64, max_wg_x=64, max_workgroup_storage=512)):
        params = assert_default_fits(SPEC, problem, limits, language)
        render(SPEC, language, problem, params)


def test_default_is_tiled_for_2d_cases_that_fill_a_tile_only():
    assert SPEC.default_params(SPEC.parse_problem("1x64x56x56:p0231"), LIMITS, "wgsl")["tiled"] == 1
    assert SPEC.default_params(SPEC.parse_problem("32x4x48:p120"), LIMITS, "wgsl")["tiled"] == 1  # (32)(4x48) swap
    assert SPEC.default_params(SPEC.parse_problem("2x3x4:p120"), LIMITS, "wgsl")["tiled"] == 0  # edges < tile
    assert SPEC.default_params(SPEC.parse_problem("2x3x4:p102"), LIMITS, "wgsl")["tiled"] == 0


@pytest.mark.parametrize(
    "shape,perm,dims,new_perm",
    [
        ((1, 64, 56, 56), (0, 2, 3, 1), (64, 3136), (1, 0)),
        ((2, 64, 56, 56), (0, 2, 3, 1), (2, 64, 3136), (0, 2, 1)),
        ((2, 64, 5, 7), (0, 3, 1, 2), (2, 320, 7), (0, 2, 1)),
        ((2, 1, 3), (0, 1, 2), (6,), (0,)),
        ((2, 1, 3), (2, 1, 0), (2, 3), (1, 0)),
        ((1, 1), (1, 0), (1,), (0,)),
        ((2, 3, 4), (1, 0, 2), (2, 3, 4), (1, 0, 2)),
        ((2, 3, 4, 5), (2, 3, 0, 1), (6, 20), (1, 0)),
        ((2, 3, 4, 5, 6, 7), (5, 3, 1, 0, 4, 2), (2, 3, 4, 5, 6, 7), (5, 3, 1, 0, 4, 2)),
    ],
)
def test_collapse(shape, perm, dims, new_perm):
    assert collapse(shape, perm) == (dims, new_perm)
    x = np.arange(np.prod(shape)).reshape(shape)
    np.testing.assert_array_equal(x.transpose(perm).reshape(-1), x.reshape(dims).transpose(new_perm).reshape(-1))


def test_collapse_is_exact_for_every_perm_of_a_rank4_shape():
    shape = (2, 1, 3, 4)
    x = np.arange(24).reshape(shape)
    for perm in itertools.permutations(range(4)):
        dims, new_perm = collapse(shape, perm)
        np.testing.assert_array_equal(x.transpose(perm).reshape(-1), x.reshape(dims).transpose(new_perm).reshape(-1))


@pytest.mark.parametrize(
    "text,shape,perm",
    [("1x64x56x56:p0231", (1, 64, 56, 56), (0, 2, 3, 1)), ("3x5", (3, 5), (1, 0)), ("7:p0", (7,), (0,))],
)
def test_parse_and_key_round_trip(text, shape, perm):
    problem = SPEC.parse_problem(text)
    assert (problem.shape, problem.perm) == (shape, perm)
    key = SPEC.problem_key(problem)
    assert SPEC.parse_problem(key) == problem and SPEC.problem_key(SPEC.parse_problem(key)) == key
    assert "," not in key
    assert TransposeProblem((3, 5)) == TransposeProblem((3, 5), (1, 0))


@pytest.mark.parametrize("text", ["", "3x5:p01x", "3x5:p00", "3x5:p012", "3x5:p2", "1x2x3x4x5x6x7", "3x0", "3x5:a1"])
def test_bad_shape_strings(text):
    with pytest.raises(ShapeError, match="transpose"):
        SPEC.parse_problem(text)


@pytest.mark.parametrize(
    "kwargs,field",
    [
        ({"shape": (2, 3), "perm": (0, 0)}, "perm"),
        ({"shape": (2, 3), "perm": "10"}, "perm"),
        ({"shape": (2, 3), "perm": (1, True)}, "perm"),
        ({"shape": (2, 3, 4, 5, 6, 7, 8)}, "rank"),
        ({"shape": (2, 0)}, "shape"),
    ],
)
def test_problem_validation_names_op_and_field(kwargs, field):
    with pytest.raises(ShapeError, match=f"transpose: .*{field}"):
        TransposeProblem(**kwargs)


def test_constraints_name_the_reason():
    nchw = SPEC.parse_problem("1x64x56x56:p0231")
    tiled = {"tiled": 1, "tile": 16, "wg": 256, "ept": 1}
    assert SPEC.constraints(nchw, tiled, LIMITS, "wgsl") is None
    other = SPEC.parse_problem("2x3x4:p102")
    assert "2-D transpose" in SPEC.constraints(other, tiled, LIMITS, "wgsl")
    assert "ept" in SPEC.constraints(nchw, {**tiled, "ept": 2}, LIMITS, "wgsl")
    assert "tile x 1 .. tile x tile" in SPEC.constraints(nchw, {**tiled, "tile": 8, "wg": 128}, LIMITS, "wgsl")
    assert "workgroup memory" in SPEC.constraints(
        nchw, {**tiled, "tile": 32}, Limits(max_workgroup_storage=2048), "wgsl"
    )
    assert "tiled=0" in SPEC.constraints(nchw, {**tiled, "tiled": 0}, LIMITS, "wgsl")
    batched = SPEC.parse_problem("70000x2x3:p021")
    assert "workgroups per dimension" in SPEC.constraints(batched, tiled, LIMITS, "wgsl")
    assert SPEC.default_params(batched, LIMITS, "wgsl")["tiled"] == 0
    tall = SPEC.parse_problem("1x5000:p10")
    assert "MAX_TEXTURE_SIZE" in SPEC.constraints(tall, {"pack": 1, "in_pack": 1, "square": 0}, LIMITS, "glsl")


def test_space_has_valid_points_in_both_languages():
    problem = SPEC.parse_problem("1x64x56x56:p0231")
    for language in ("wgsl", "glsl"):
        valid = valid_configs(SPEC, problem, LIMITS, language)
        assert SPEC.space_size(language) >= len(valid) > 3
    assert any(p["tiled"] for p in valid_configs(SPEC, problem, LIMITS, "wgsl"))


@pytest.mark.parametrize(
    "bad",
    [
        {"tiled": 0, "tile": 8, "wg": "64u; } fn evil() {", "ept": 1},
        {"tiled": 2, "tile": 8, "wg": 64, "ept": 1},
        {"tiled": 0, "tile": 8, "wg": 64},
    ],
)
def test_params_are_validated_before_rendering(bad):
    with pytest.raises(InvalidParamsError):
        render(SPEC, "wgsl", SPEC.parse_problem("3x5"), bad)


def test_rendered_sources_reflect_params():
    problem = SPEC.parse_problem("2x64x5x7:p0231")
    tiled = render(SPEC, "wgsl", problem, {"tiled": 1, "tile": 32, "wg": 256, "ept": 1})
    assert "@workgroup_size(32, 8, 1)" in tiled and "array<f32, 1056>" in tiled
    naive = render(SPEC, "wgsl", problem, {"tiled": 0, "tile": 8, "wg": 64, "ept": 4})
    assert "var<workgroup>" not in naive and naive.count("x[source(") == 4
    assert naive.count("rem % dims.d") == 2  # collapsed rank 3: two splits, the outermost coordinate is the rest
    glsl = render(SPEC, "glsl", SPEC.parse_problem("2x3x8:p102"), {"pack": 4, "in_pack": 4, "square": 0}, "web")
    assert glsl.startswith("#version 300 es") and "vec_copy=True" in glsl
    lanes = render(SPEC, "glsl", problem, {"pack": 4, "in_pack": 1, "square": 1})
    assert "vec_copy=False" in lanes and "load1(base + min(c0 + 3, LAST)" in lanes


@pytest.mark.parametrize(
    "shape,perm", [((3, 4), None), ((2, 3, 4), (1, 2, 0)), ((1, 4, 3, 2), (0, 2, 3, 1)), ((5,), None)]
)
def test_reference_matches_onnx(shape, perm):
    problem = TransposeProblem(shape, perm)
    (x,) = SPEC.make_inputs(problem, np.random.default_rng(3))
    out = SPEC.reference(problem, [x])
    assert out.shape == SPEC.output_shape(problem)
    np.testing.assert_array_equal(out, onnx_transpose(x, perm))
