"""Every ConvTranspose GLSL config compiles and links as GLSL ES 3.00 in a real WebGL2."""

from __future__ import annotations

import pytest

from kernelforge.ops import Limits, get_op
from kernelforge.ops._epilogue import Activation
from kernelforge.ops.conv_transpose import ConvTransposeProblem
from kernelforge.templates import render
from kernelforge.testing.ops import valid_configs

from ._webgl2 import assert_webgl2_compiles

pytestmark = pytest.mark.browser
SPEC = get_op("conv_transpose2d")
LIMITS = Limits()
# upsampling, output padding with stride 3, groups of 4 (packed) and of 3 (NCHW only), depthwise with and
# without a multiplier, a lifted 1-D layer, an output taller than a row-aligned texture
SHAPES = [
    "1x64x32x32:32x2x2:s2",
    "1x3x7x6:4x3x3:s3x2:p1:o1",
    "1x8x5x5:8x3x3:s2:p1:g2",
    "1x6x4x5:6x3x3:s2:p0,1,2,0:d2x1:g3",
    "1x8x5x5:8x4x4:s2:p1:g8",
    "1x4x4x4:8x3x3:s2:g4",
    "1x16x1x50:8x1x5:s1x4:p0,2,0,2:o0x3",
    "1x3x200x300:3x3x3:s2:p1:o1",
]


def test_conv_transpose_kernels_compile_in_webgl2(browser_page):
    sources = []
    for shape in SHAPES:
        plain = SPEC.parse_problem(shape)
        for bias, act in ((False, "none"), (True, "leaky_relu(0.1)")):
            problem = ConvTransposeProblem(**{**plain.__dict__, "has_bias": bias, "activation": Activation.parse(act)})
            for params in valid_configs(SPEC, problem, LIMITS, "glsl"):
                label = f"conv_transpose2d {shape} bias={bias} {act} {params}"
                sources.append((label, render(SPEC, "glsl", problem, params, target="web")))
    assert len(sources) >= 80
    assert_webgl2_compiles(browser_page, sources)
