"""Every Gather GLSL config compiles and links as GLSL ES 3.00 in a real WebGL2."""

from __future__ import annotations

import pytest

from kernelforge.ops import Limits, get_op
from kernelforge.templates import render
from kernelforge.testing.ops import valid_configs

from ._webgl2 import assert_webgl2_compiles

pytestmark = pytest.mark.browser
SPEC = get_op("gather")
LIMITS = Limits()
# an embedding, a scalar index (rank-0 output), blocks of one value and of 5 (packed tails), a table that only
# fits wrapped square-ish, and more indices than rows
SHAPES = ["1000x64:i2x7", "5:is", "1x12x16:is:a1", "4x5x6:i2x3:a-1", "3x10x5:i4:a1", "30522x384:i8x128", "7x3:i9x2x2"]


def test_gather_kernels_compile_in_webgl2(browser_page):
    sources = []
    for shape in SHAPES:
        problem = SPEC.parse_problem(shape)
        for params in valid_configs(SPEC, problem, LIMITS, "glsl"):
            sources.append((f"gather {shape} {params}", render(SPEC, "glsl", problem, params, target="web")))
    assert len(sources) >= 50
    assert_webgl2_compiles(browser_page, sources)
