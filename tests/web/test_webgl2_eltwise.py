"""The elementwise GLSL kernels compile and link as GLSL ES 3.00 in a real WebGL2 (headless Chromium)."""

from __future__ import annotations

import numpy as np
import pytest

from kernelforge.ops import Limits, get_op
from kernelforge.templates import render
from kernelforge.testing.ops import every_config

from ._webgl2 import assert_webgl2_compiles

pytestmark = pytest.mark.browser
SPEC = get_op("elementwise")
LIMITS = Limits()

PROGRAMS = [
    "relu(x*a+b)+y:x=1x8x5x5,a=8x1x1,b=8x1x1,y=1x8x5x5",
    "gelu(x) * sigmoid(y) - tanh(x) / hardswish(y):x=3x1x5,y=4x5",
    "hardsigmoid(x, 0.3, 0.4) + leaky_relu(y, 0.1) * exp(x) - sqrt(abs(y)):x=2x8,y=8",
    "pow(x, y) + pow(x, 3) - pow(x, -2) + reciprocal(max(x, min(y, 1))):x=scalar,y=7x3",
    "clip(-x, -1, 1) + neg(y):x=6x4,y=6x1",
    # the comparison, logic, rounding and modulo ops, with their NaN/inf helpers, in vec4 and scalar forms
    "where(logical_and(less(x, y), logical_not(equal(x, 0))), mod(x, y), fmod(y, x)):x=4x8,y=8",
    "sign(x) + round(y) + floor(x) - ceil(y) + trunc(x) + erf(y) + log(abs(x) + 1):x=3x5,y=5",
    "logical_or(greater(x, y), less_equal(x, 0)) + logical_xor(greater_equal(x, y), x) * sin(y) * cos(x):x=2x4,y=4",
]


def _sample_sources() -> list[tuple[str, str]]:
    rng = np.random.default_rng(13)
    every = every_config(SPEC, "glsl")
    out = []
    for shape in PROGRAMS:
        problem = SPEC.parse_problem(shape)
        for j in rng.choice(len(every), 4, replace=False):
            params = every[int(j)]
            if SPEC.constraints(problem, params, LIMITS, "glsl") is None:
                out.append((f"{SPEC.problem_key(problem)} {params}", render(SPEC, "glsl", problem, params, "web")))
        default = SPEC.default_params(problem, LIMITS, "glsl")
        out.append((f"default {shape}", render(SPEC, "glsl", problem, default, "web")))
    return out


def test_elementwise_glsl_compiles_in_webgl2(browser_page):
    sources = _sample_sources()
    assert len(sources) >= 15
    assert_webgl2_compiles(browser_page, sources)
