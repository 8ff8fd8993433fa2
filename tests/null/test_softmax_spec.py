"""Softmax spec, templates and parameter validation: no device needed."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

from kernelforge.errors import InvalidParamsError, ShapeError
from kernelforge.ops import Limits, get_op
from kernelforge.ops.shapes import linear_grid
from kernelforge.ops.softmax import SoftmaxProblem
from kernelforge.templates import render
from kernelforge.testing.ops import assert_default_fits, assert_params_reach_template, valid_configs

SPEC = get_op("softmax")
LIMITS = Limits()
SHAPES = [
    "1",
    "1x1",
    "7",
    "10000",
    "10000x1",
    "8x1000:a-1",
    "3x5x7:a0",
    "3x5x7:a1",
    "13x1x7:a1",
    "2x3x4x5x6x7:a3",
    "1x64x56x56:a1",
    "4096x4096",
    "65536x3:a0",
]


def onnx_softmax(x, axis):
    node = helper.make_node("Softmax", ["x"], ["y"], axis=axis)
    graph = helper.make_graph(
        [node],
        "softmax",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(x.shape))],
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
    for limits in (LIMITS, Limits(max_invocations=32, max_wg_x=32, max_workgroup_storage=1024)):
        params = assert_default_fits(SPEC, problem, limits, language)
        render(SPEC, language, problem, params)


def test_default_picks_a_thread_per_short_row_and_a_workgroup_per_long_row():
    short = SPEC.default_params(SPEC.parse_problem("4096x8"), LIMITS, "wgsl")
    assert short["threads"] == 1 and short["rows_per_wg"] == 64
    long = SPEC.default_params(SPEC.parse_problem("8x1000"), LIMITS, "wgsl")
    assert long["threads"] == 64 and long["rows_per_wg"] == 1


@pytest.mark.parametrize(
    "text,shape,axis",
    [("8x1000", (8, 1000), 1), ("8x1000:a-1", (8, 1000), 1), ("2x3x4:a-3", (2, 3, 4), 0), (" 5:a0 ", (5,), 0)],
)
def test_parse_and_key_round_trip(text, shape, axis):
    problem = SPEC.parse_problem(text)
    assert (problem.shape, problem.axis) == (shape, axis)
    key = SPEC.problem_key(problem)
    assert SPEC.parse_problem(key) == problem and SPEC.problem_key(SPEC.parse_problem(key)) == key
    assert "," not in key  # the CLI splits --shape lists on commas


@pytest.mark.parametrize("text", ["", "8x", "x8", "8x0", "8,1000", "8x1000:a2", "8x1000:a-3", "8x1000:b1", "8x1000:a"])
def test_bad_shape_strings(text):
    with pytest.raises(ShapeError, match="softmax"):
        SPEC.parse_problem(text)


@pytest.mark.parametrize(
    "kwargs,field",
    [
        ({"shape": (), "axis": 0}, "rank"),
        ({"shape": (2, 0), "axis": 0}, "shape"),
        ({"shape": (2, 3), "axis": 2}, "axis"),
        ({"shape": (2, 3), "axis": True}, "axis"),
        ({"shape": (2.0, 3), "axis": 0}, "shape"),
        ({"shape": "2x3", "axis": 0}, "shape"),
        ({"shape": (1,) * 9, "axis": 0}, "rank"),
    ],
)
def test_problem_validation_names_op_and_field(kwargs, field):
    with pytest.raises(ShapeError, match=f"softmax: .*{field}"):
        SoftmaxProblem(**kwargs)


def test_constraints_name_the_reason():
    problem = SPEC.parse_problem("64x1000")
    base = {"threads": 64, "rows_per_wg": 1, "online": 0}
    assert "invocations" in SPEC.constraints(problem, {**base, "rows_per_wg": 8}, LIMITS, "wgsl")
    assert "workgroup memory" in SPEC.constraints(problem, base, Limits(max_workgroup_storage=256), "wgsl")
    assert "idle" in SPEC.constraints(SPEC.parse_problem("64x3"), base, LIMITS, "wgsl")
    assert "rows idle" in SPEC.constraints(SPEC.parse_problem("2x1000"), {**base, "rows_per_wg": 4}, LIMITS, "wgsl")
    assert "MAX_TEXTURE_SIZE" in SPEC.constraints(
        SPEC.parse_problem("1x20000"), {"pack": 1, "square": 0, "online": 0}, LIMITS, "glsl"
    )
    huge = SPEC.parse_problem("33554433x2")  # 256 MiB
    assert "storage binding" in SPEC.constraints(huge, {**base, "threads": 2, "rows_per_wg": 128}, LIMITS, "wgsl")


def test_space_has_valid_points_in_both_languages():
    problem = SPEC.parse_problem("128x500")
    for language in ("wgsl", "glsl"):
        valid = valid_configs(SPEC, problem, LIMITS, language)
        assert SPEC.space_size(language) >= len(valid) > 3


def test_launch_spills_workgroups_into_y():
    problem = SPEC.parse_problem("200000x3")
    launch = SPEC.launch(problem, {"threads": 1, "rows_per_wg": 1, "online": 0})
    gx, gy, gz = launch.workgroups
    assert gx <= 65535 and gx * gy >= 200000 and gz == 1
    assert launch.uniforms[:3] == (200000, 3, 1)
    assert linear_grid(1) == (1, 1, 1) and linear_grid(65536) == (65535, 2, 1)


@pytest.mark.parametrize(
    "bad",
    [
        {"threads": "64u; } fn evil() {", "rows_per_wg": 1, "online": 0},
        {"threads": 3, "rows_per_wg": 1, "online": 0},
        {"threads": 64, "rows_per_wg": 1, "online": True},
        {"threads": 64, "rows_per_wg": 1},
        {"threads": 64, "rows_per_wg": 1, "online": 0, "extra": 1},
    ],
)
def test_params_are_validated_before_rendering(bad):
    with pytest.raises(InvalidParamsError):
        render(SPEC, "wgsl", SPEC.parse_problem("8x1000"), bad)


def test_rendered_sources_reflect_params():
    problem = SPEC.parse_problem("8x1000")
    tree = render(SPEC, "wgsl", problem, {"threads": 64, "rows_per_wg": 2, "online": 0})
    assert "@workgroup_size(64, 2, 1)" in tree and "var<workgroup> red_m: array<f32, 128>" in tree
    assert tree.count("workgroupBarrier()") == 2 * (1 + 6)  # max and sum: a store + log2(64) steps each
    single = render(SPEC, "wgsl", problem, {"threads": 1, "rows_per_wg": 64, "online": 1})
    assert "var<workgroup>" not in single and "workgroupBarrier" not in single and "exp(m - v)" in single
    glsl = render(SPEC, "glsl", problem, {"pack": 4, "square": 1, "online": 0}, target="web")
    assert glsl.startswith("#version 300 es") and "vec4 load(int row, int texel)" in glsl and "kf_coord" in glsl
    column = render(SPEC, "glsl", SPEC.parse_problem("3x7x5:a1"), {"pack": 1, "square": 0, "online": 1})
    assert "float load(" in column and "int first = (rr / L) * L;" in column


@pytest.mark.parametrize("shape,axis", [((3, 4), -1), ((2, 3, 5), 1), ((2, 3, 5), 0), ((4,), 0), ((2, 1, 3, 2), -3)])
def test_reference_matches_onnx(shape, axis):
    problem = SoftmaxProblem(shape, axis)
    (x,) = SPEC.make_inputs(problem, np.random.default_rng(1))
    np.testing.assert_allclose(SPEC.reference(problem, [x]), onnx_softmax(x, axis), rtol=1e-5, atol=1e-7)


def test_reference_is_stable_for_large_magnitudes():
    x = np.array([[1000.0, -1000.0, 999.0], [-1000.0, -1000.0, -1001.0]], np.float32)
    out = SPEC.reference(SoftmaxProblem(x.shape, -1), [x])
    assert np.all(np.isfinite(out))
    np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(out, onnx_softmax(x, -1), rtol=1e-5, atol=1e-7)
