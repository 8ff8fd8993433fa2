"""conv2d GLSL kernels compile and link as GLSL ES 3.00 in headless Chromium's WebGL2."""

from __future__ import annotations

import pytest

from kernelforge.ops import Limits, get_op
from kernelforge.ops._epilogue import Activation
from kernelforge.ops.conv import ConvProblem
from kernelforge.templates import render
from kernelforge.testing.ops import valid_configs

from ._webgl2 import assert_webgl2_compiles

pytestmark = pytest.mark.browser
SPEC = get_op("conv2d")


def test_conv_kernels_compile_in_webgl2(browser_page):
    shapes = ["1x3x11x11:16x3x3:s2:p0,0,1,1", "1x8x9x9:8x3x3:s2:p1:g8", "1x8x6x6:16x3x3:p1:g2", "2x6x7x5:10x3x2:d1x2"]
    sources = []
    for i, shape in enumerate(shapes):
        base = SPEC.parse_problem(shape)
        problem = ConvProblem(
            **{
                **base.__dict__,
                "has_bias": True,
                "has_residual": i % 2 == 0,
                "activation": Activation.parse(["gelu", "relu6", "leaky_relu(0.1)", "tanh"][i]),
            }
        )
        for params in valid_configs(SPEC, problem, Limits(), "glsl"):
            sources.append((f"{shape} {params}", render(SPEC, "glsl", problem, params, target="web")))
    assert len(sources) >= 30
    assert_webgl2_compiles(browser_page, sources)
