"""Every reduce GLSL config compiles and links as GLSL ES 3.00 in a real WebGL2."""

from __future__ import annotations

import pytest

from kernelforge.ops import Limits, get_op
from kernelforge.ops.reduce import KINDS
from kernelforge.templates import render
from kernelforge.testing.ops import valid_configs

from ._webgl2 import assert_webgl2_compiles

pytestmark = pytest.mark.browser
SPEC = get_op("reduce")
LIMITS = Limits()
# contiguous rows with tails of 0..3 values in a packed texel and a single texel; strided views; a view too
# wide for a row-aligned R32F texture
SHAPES = ["128x384:a1", "5x3:a1", "9x37:a1", "7:a0", "2x3x4x5:a1.2", "1x16x6x6:a2.3", "6x5x7:a0", "2x20000:a1"]


def test_reduce_kernels_compile_in_webgl2(browser_page):
    sources = []
    for shape in SHAPES:
        for kind in KINDS:
            problem = SPEC.parse_problem(f"{shape}:{kind}")
            for params in valid_configs(SPEC, problem, LIMITS, "glsl"):
                label = f"reduce {shape}:{kind} {params}"
                sources.append((label, render(SPEC, "glsl", problem, params, target="web")))
    assert len(sources) >= 250
    assert_webgl2_compiles(browser_page, sources)
