"""Every pool2d_argmax (MaxPool's indices) GLSL config compiles and links as GLSL ES 3.00 in a real WebGL2."""

from __future__ import annotations

import pytest

from kernelforge.ops import Limits, get_op
from kernelforge.templates import render
from kernelforge.testing.ops import valid_configs

from ._webgl2 import assert_webgl2_compiles

pytestmark = pytest.mark.browser
SPEC = get_op("pool2d_argmax")


def test_pool_argmax_kernels_compile_in_webgl2(browser_page):
    sources = []
    for shape in ("max:1x8x13x11:k3:s2:p1", "max:2x5x7x9:k3x2:s2x1:p0x1x1x0:ceil:col", "max:1x3x1x700:k1x5:d1x2"):
        problem = SPEC.parse_problem(shape)
        for params in valid_configs(SPEC, problem, Limits(), "glsl"):
            sources.append((f"{shape} {params}", render(SPEC, "glsl", problem, params, target="web")))
    assert len(sources) >= 10
    assert_webgl2_compiles(browser_page, sources)
