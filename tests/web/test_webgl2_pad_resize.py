"""The pad and resize GLSL kernels compile and link as GLSL ES 3.00 in a real WebGL2 (headless Chromium)."""

from __future__ import annotations

import pytest

from kernelforge.ops import Limits, get_op
from kernelforge.templates import render
from kernelforge.testing.ops import valid_configs

from ._webgl2 import assert_webgl2_compiles

pytestmark = pytest.mark.browser
LIMITS = Limits()
PROBLEMS = {
    "pad": [
        "2x3x4x5x3x2:p1,0,1,0,1,1,0,1,1,0,1,1:constant:v-inf",
        "1x3x17x13:p0,0,1,1,0,0,1,1:reflect",
        "31x37:p0,-30,0,5:reflect",
        "3x1x4:p1,2,0,2,3,1:edge",
        "7:p3,-2:constant:v0.5",
        "2x3x5x7:p0,-1,9,2,1,0,-2,4:wrap",
    ],
    "resize": [
        "1x3x5x7:s1.7,0.6:linear:align_corners",
        "2x8x5x7:o9,4:nearest:half_pixel:round_prefer_ceil",
        "1x64x28x28:s2,2:linear:half_pixel",
        "1x1x1x1:s1,1",
        "1x8x13x11:o6,9:cubic:tf_crop_and_resize:antialias:r0.1,-0.2,0.9,1.1:e-inf",
        "1x3x9x7:s0.5,0.7:linear:half_pixel:exclude:antialias",
    ],
}


def _sources() -> list[tuple[str, str]]:
    out = []
    for op, shapes in PROBLEMS.items():
        spec = get_op(op)
        for shape in shapes:
            problem = spec.parse_problem(shape)
            for params in valid_configs(spec, problem, LIMITS, "glsl"):
                out.append((f"{op} {shape} {params}", render(spec, "glsl", problem, params, "web")))
    return out


def test_pad_and_resize_kernels_compile_in_webgl2(browser_page):
    sources = _sources()
    assert len(sources) >= 30
    assert {label.split()[0] for label, _ in sources} == {"pad", "resize"}
    assert_webgl2_compiles(browser_page, sources)
