"""CumSum spec, templates and parameter validation: no device needed."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from kernelforge.errors import InvalidParamsError, ShapeError
from kernelforge.ops import Limits, get_op
from kernelforge.ops.cumsum import CumSumProblem, cumsum_array
from kernelforge.templates import render
from kernelforge.testing.ops import assert_default_fits, assert_params_reach_template, valid_configs

SPEC = get_op("cumsum")
LIMITS = Limits()
SHAPES = ["1", "7:a0:excl", "1x2048", "3x5x7:a1:rev", "13x1x7:a1:excl:rev", "65536x3:a0", "200000x2"]


@pytest.mark.parametrize("language", ["wgsl", "glsl"])
def test_every_param_reaches_the_template(language):
    assert_params_reach_template(SPEC, language)


@pytest.mark.parametrize("language", ["wgsl", "glsl"])
@pytest.mark.parametrize("shape", SHAPES)
def test_default_params_always_fit(shape, language):
    problem = SPEC.parse_problem(shape)
    for limits in (LIMITS, Limits(max_invocations=16, max_wg_x=16)):
        params = assert_default_fits(SPEC, problem, limits, language)
        render(SPEC, language, problem, params)


@pytest.mark.parametrize("language", ["wgsl", "glsl"])
@pytest.mark.parametrize("flags", ["", ":excl", ":rev", ":excl:rev"])
def test_every_valid_config_renders(language, flags):
    for shape in ("3x5x7:a1", "6x9:a1", "9:a0"):
        problem = SPEC.parse_problem(shape + flags)
        configs = valid_configs(SPEC, problem, LIMITS, language)
        assert configs
        for params in configs:
            render(SPEC, language, problem, params, "web")


@pytest.mark.parametrize(
    ("text", "key"),
    [("1x2048", "1x2048:a1"), ("4x16x8:a-2:rev:excl", "4x16x8:a1:excl:rev"), (" 9:a0:excl ", "9:a0:excl")],
)
def test_parse_and_key_round_trip(text, key):
    problem = SPEC.parse_problem(text)
    assert SPEC.problem_key(problem) == key
    assert SPEC.parse_problem(key) == problem
    assert SPEC.output_shape(problem) == problem.shape


@pytest.mark.parametrize("text", ["", "8x", "8x0", "8:a1", "8:a0:inclusive", "8:a0,rev"])
def test_bad_shapes_are_rejected(text):
    with pytest.raises(ShapeError):
        SPEC.parse_problem(text)


def test_bad_problems_and_params_are_named():
    with pytest.raises(ShapeError, match="axis"):
        CumSumProblem((3, 4), -3)
    with pytest.raises(InvalidParamsError, match="rows_per_wg"):
        SPEC.validate_params({"rows_per_wg": 3}, "wgsl")
    tiny = Limits(max_invocations=16, max_wg_x=16)
    assert "exceeds" in (SPEC.constraints(SPEC.parse_problem("64x8"), {"rows_per_wg": 64}, tiny, "wgsl") or "")
    assert "MAX_TEXTURE_SIZE" in (
        SPEC.constraints(SPEC.parse_problem("2x20000"), {"pack": 1, "square": 0}, LIMITS, "glsl") or ""
    )


@pytest.mark.parametrize(("exclusive", "reverse"), list(itertools.product((False, True), (False, True))))
def test_reference_matches_a_loop(exclusive, reverse):
    x = np.random.default_rng(1).integers(-5, 6, (3, 6, 4)).astype(np.int32)
    for axis in range(3):
        got = cumsum_array(x, axis, exclusive, reverse)
        assert got.dtype == np.int32
        v = np.moveaxis(x, axis, 0).astype(np.int64)
        want = np.zeros_like(v)
        order = range(v.shape[0] - 1, -1, -1) if reverse else range(v.shape[0])
        acc = np.zeros_like(v[0])
        for j in order:
            if exclusive:
                want[j] = acc
                acc = acc + v[j]
            else:
                acc = acc + v[j]
                want[j] = acc
        np.testing.assert_array_equal(got, np.moveaxis(want, 0, axis))
