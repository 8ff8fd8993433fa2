"""Every ArgMax/ArgMin (arg_reduce) and CumSum GLSL config compiles and links as GLSL ES 3.00 in a real WebGL2."""

from __future__ import annotations

import pytest

from kernelforge.ops import Limits, get_op
from kernelforge.templates import render
from kernelforge.testing.ops import valid_configs

from ._webgl2 import assert_webgl2_compiles

pytestmark = pytest.mark.browser
LIMITS = Limits()
SHAPES = {
    # a classifier head's row, rows with packed-texel tails, an inner axis, select_last_index
    "arg_reduce": ["8x1000:a1:max", "5x3:a1:min", "2x7x9:a1:max:last", "9:a0:min:k0"],
    # position ids over a mask, an inner axis, exclusive and reverse scans
    "cumsum": ["1x128", "4x16x8:a1:excl:rev", "3x5:a0:rev", "2x37:excl"],
}


@pytest.mark.parametrize("op", sorted(SHAPES))
def test_scan_kernels_compile_in_webgl2(browser_page, op):
    spec = get_op(op)
    sources = []
    for shape in SHAPES[op]:
        problem = spec.parse_problem(shape)
        for params in valid_configs(spec, problem, LIMITS, "glsl"):
            sources.append((f"{op} {shape} {params}", render(spec, "glsl", problem, params, target="web")))
    assert len(sources) >= 8
    assert_webgl2_compiles(browser_page, sources)
