"""The softmax, concat and transpose GLSL kernels compile and link as GLSL ES 3.00 in a real WebGL2."""

from __future__ import annotations

import numpy as np
import pytest

from kernelforge.ops import Limits, get_op
from kernelforge.templates import render
from kernelforge.testing.ops import valid_configs

from ._webgl2 import assert_webgl2_compiles

pytestmark = pytest.mark.browser
LIMITS = Limits()
PROBLEMS = {
    "softmax": ["8x1000:a-1", "3x5x7:a1", "7", "10000", "2x17x3:a0", "13x1x7:a1"],
    "concat": [
        "1x64x9x9+1x32x9x9:a1",
        "2x3+2x5:a-1",
        "4x4+4x8+4x12:a1",
        "+".join(f"3x{k % 4 + 1}" for k in range(15)) + ":a1",
    ],
    "transpose": ["1x64x9x9:p0231", "2x3x4x5x6x7:p531042", "3x5x8:p102", "7", "1x5000:p10"],
}


def _sources() -> list[tuple[str, str]]:
    rng = np.random.default_rng(13)
    out = []
    for op, shapes in PROBLEMS.items():
        spec = get_op(op)
        for shape in shapes:
            problem = spec.parse_problem(shape)
            valid = valid_configs(spec, problem, LIMITS, "glsl")
            picks = [valid[int(i)] for i in rng.choice(len(valid), min(4, len(valid)), replace=False)]
            for params in [spec.default_params(problem, LIMITS, "glsl"), *picks]:
                out.append((f"{op} {shape} {params}", render(spec, "glsl", problem, params, target="web")))
    return out


def test_shape_op_kernels_compile_in_webgl2(browser_page):
    sources = _sources()
    assert len(sources) >= 45
    assert_webgl2_compiles(browser_page, sources)
