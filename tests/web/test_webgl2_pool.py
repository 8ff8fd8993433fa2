"""pool2d GLSL kernels compile and link as GLSL ES 3.00 in headless Chromium's WebGL2."""

from __future__ import annotations

import numpy as np
import pytest

from kernelforge.ops import Limits, get_op
from kernelforge.templates import render
from kernelforge.testing.ops import every_config

from ._webgl2 import assert_webgl2_compiles

pytestmark = pytest.mark.browser
SPEC = get_op("pool2d")


def test_pool_kernels_compile_in_webgl2(browser_page):
    shapes = [
        "max:1x8x13x11:k3:s2:p1",
        "avg:2x5x7x9:k3x2:s2x1:p0x1x1x0:ceil:cip",
        "avg:1x4x9x10:k3x2:p2x1:d2x3",
        "max:1x3x1x700:k1x5:s1x3:d1x2",
        "gavg:2x12x7x5",
        "gmax:1x6x3x9",
    ]
    every = every_config(SPEC, "glsl")
    rng = np.random.default_rng(3)
    sources = []
    for shape in shapes:
        problem = SPEC.parse_problem(shape)
        picks = [SPEC.default_params(problem, Limits(), "glsl")] + [every[int(i)] for i in rng.choice(len(every), 6)]
        for params in picks:
            if SPEC.constraints(problem, params, Limits(), "glsl") is None:
                sources.append((f"{shape} {params}", render(SPEC, "glsl", problem, params, target="web")))
    assert len(sources) >= 30
    assert_webgl2_compiles(browser_page, sources)
