"""Every LayerNormalization GLSL config compiles and links as GLSL ES 3.00 in a real WebGL2."""

from __future__ import annotations

import pytest

from kernelforge.ops import Limits, get_op
from kernelforge.templates import render
from kernelforge.testing.ops import valid_configs

from ._webgl2 import assert_webgl2_compiles

pytestmark = pytest.mark.browser
SPEC = get_op("layernorm")
LIMITS = Limits()
# tails of 0..3 values in a packed texel, one value, B or not, a row too wide for a row-aligned R32F texture
SHAPES = ["128x384", "5x3", "7:nb", "1", "2x3x4x5:a2:e0.001", "9x37:nb", "2x20000"]


def test_layernorm_kernels_compile_in_webgl2(browser_page):
    sources = []
    for shape in SHAPES:
        problem = SPEC.parse_problem(shape)
        for params in valid_configs(SPEC, problem, LIMITS, "glsl"):
            sources.append((f"layernorm {shape} {params}", render(SPEC, "glsl", problem, params, target="web")))
    assert len(sources) >= 50
    assert_webgl2_compiles(browser_page, sources)
