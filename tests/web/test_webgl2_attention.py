"""Every attention GLSL config compiles and links as GLSL ES 3.00 in a real WebGL2."""

from __future__ import annotations

import pytest

from kernelforge.ops import Limits, get_op
from kernelforge.templates import render
from kernelforge.testing.ops import valid_configs

from ._webgl2 import assert_webgl2_compiles

pytestmark = pytest.mark.browser
SPEC = get_op("attention")
LIMITS = Limits()
# both mask kinds (a key axis, a broadcast one), K^T, causal, empty rows as zeros, a head size and Dv that leave
# texels partly used, a decoder step and a sequence too long for row-aligned textures
SHAPES = [
    "1x12x128x64:m1x1x1x128",
    "1x2x7x12:kv9:dv6:kt:w7x9:f-3.4028234663852886e38:c",
    "2x4x5x8:kv5:g2:m2x1x5x1:c-1:z",
    "1x4x1x64:kv37",
    "1x2x2048x32",
]


def test_attention_kernels_compile_in_webgl2(browser_page):
    sources = []
    for shape in SHAPES:
        problem = SPEC.parse_problem(shape)
        for params in valid_configs(SPEC, problem, LIMITS, "glsl"):
            sources.append((f"attention {shape} {params}", render(SPEC, "glsl", problem, params, target="web")))
    assert len(sources) >= 50
    assert_webgl2_compiles(browser_page, sources)
