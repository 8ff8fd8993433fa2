"""ArgMax/ArgMin spec, templates and parameter validation: no device needed."""

from __future__ import annotations

import numpy as np
import pytest

from kernelforge.errors import InvalidParamsError, ShapeError
from kernelforge.ops import Limits, get_op
from kernelforge.ops.arg_reduce import ArgReduceProblem, arg_reduce_array
from kernelforge.templates import render
from kernelforge.testing.ops import assert_default_fits, assert_params_reach_template, valid_configs

SPEC = get_op("arg_reduce")
LIMITS = Limits()
SHAPES = ["1", "7:a0:min", "2x50257:a1:last:k0", "3x5x7:a1", "13x1x7:a1", "65536x3:a0", "1x64x56x56:a1:min"]


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


@pytest.mark.parametrize("language", ["wgsl", "glsl"])
def test_every_valid_config_renders(language):
    for shape in ("3x5x7:a1:min:last", "6x9:a1", "9:a0:last"):
        problem = SPEC.parse_problem(shape)
        configs = valid_configs(SPEC, problem, LIMITS, language)
        assert configs
        for params in configs:
            source = render(SPEC, language, problem, params, "web")
            assert ("<" if problem.kind == "min" else ">") in source


@pytest.mark.parametrize(
    ("text", "key", "out_shape"),
    [
        ("8x1000", "8x1000:a0:max", (1, 1000)),
        ("8x1000:a-1:min", "8x1000:a1:min", (8, 1)),
        ("2x3x4:a1:max:last:k0", "2x3x4:a1:max:last", None),
        (" 2x3x4:a-2:min:k0:last ", "2x3x4:a1:min:last:k0", (2, 4)),
    ],
)
def test_parse_key_and_output_shape(text, key, out_shape):
    problem = SPEC.parse_problem(text)
    assert SPEC.problem_key(problem).startswith(key)
    assert SPEC.parse_problem(SPEC.problem_key(problem)) == problem
    assert "," not in SPEC.problem_key(problem)
    if out_shape is not None:
        assert SPEC.output_shape(problem) == out_shape


@pytest.mark.parametrize("text", ["", "8x", "8x0", "8:a1", "8:mean", "8:a0:first", "8:a0:k2"])
def test_bad_shapes_are_rejected(text):
    with pytest.raises(ShapeError):
        SPEC.parse_problem(text)


def test_bad_problems_and_params_are_named():
    with pytest.raises(ShapeError, match="kind"):
        ArgReduceProblem((3, 4), 1, "sum")
    with pytest.raises(ShapeError, match="axis"):
        ArgReduceProblem((3, 4), 2)
    with pytest.raises(InvalidParamsError, match="threads"):
        SPEC.validate_params({"threads": 3, "outputs_per_wg": 1}, "wgsl")
    problem = SPEC.parse_problem("4x8:a1")
    assert "idle" in (SPEC.constraints(problem, {"threads": 64, "outputs_per_wg": 1}, LIMITS, "wgsl") or "")
    big = SPEC.parse_problem("2x50257:a1")
    assert "MAX_TEXTURE_SIZE" in (SPEC.constraints(big, {"pack": 1, "square": 0}, LIMITS, "glsl") or "")


@pytest.mark.parametrize(
    ("attrs", "want"),
    [
        ({}, {"axis": 0, "kind": "max", "last": False, "keepdims": True}),
        (
            {"axis": -1, "keepdims": 0, "select_last_index": 1},
            {"axis": -1, "kind": "max", "last": True, "keepdims": False},
        ),
    ],
)
def test_from_onnx(attrs, want):
    assert SPEC.from_onnx("ArgMax", 13, attrs) == want
    assert SPEC.from_onnx("ArgMin", 13, attrs) == {**want, "kind": "min"}
    with pytest.raises(ValueError, match="keepdims=3"):
        SPEC.from_onnx("ArgMax", 13, {"keepdims": 3})


def test_reference_follows_the_in_order_scan():
    nan, inf = np.nan, np.inf
    x = np.array([[1, nan, 3, 3], [nan, 4, 5, 5], [-inf, -inf, nan, -inf], [nan, nan, nan, nan]], np.float32)
    assert arg_reduce_array(x, 1, "max", keepdims=False).tolist() == [2, 0, 0, 0]
    assert arg_reduce_array(x, 1, "max", last=True, keepdims=False).tolist() == [3, 0, 3, 0]
    assert arg_reduce_array(x, 1, "min", keepdims=False).tolist() == [0, 0, 0, 0]
    assert arg_reduce_array(x, 1, "min", last=True).tolist() == [[0], [0], [3], [0]]
    problem = ArgReduceProblem(x.shape, 1, "max", True, False)
    out = SPEC.reference(problem, [x])
    assert out.dtype == np.float32 and out.shape == SPEC.output_shape(problem) == (4,)
