"""Every Slice GLSL config compiles and links as GLSL ES 3.00 in a real WebGL2."""

from __future__ import annotations

import pytest

from kernelforge.ops import Limits, get_op
from kernelforge.templates import render
from kernelforge.testing.ops import valid_configs

from ._webgl2 import assert_webgl2_compiles

pytestmark = pytest.mark.browser
SPEC = get_op("slice")
LIMITS = Limits()
# texel copies, strided and reversed lanes, one value, rank 1 and 5, a row too wide for a row-aligned texture
SHAPES = [
    "1x197x2304:s768:e1536:a2",
    "1x64x20x20:s32:e64:a1",
    "4x6:s-1,0:e-100,6:t-1,2",
    "9:s-1:e-100:t-1",
    "1x1:s0:e1",
    "2x3x4x5x6:s1,-1,0,5:e2,-100,4,0:a0,1,3,4:t1,-1,2,-2",
    "2x20000:s1:e19999:a1",
]


def test_slice_kernels_compile_in_webgl2(browser_page):
    sources = []
    for shape in SHAPES:
        problem = SPEC.parse_problem(shape)
        for params in valid_configs(SPEC, problem, LIMITS, "glsl"):
            sources.append((f"slice {shape} {params}", render(SPEC, "glsl", problem, params, target="web")))
    assert len(sources) >= 45
    assert_webgl2_compiles(browser_page, sources)
