"""The GLSL texture contract: a packed row's last texel is zero past the row's end (``ops/texture.py``).

Consumers rely on it: a GEMM multiplies A's padding lanes in its last, partial K step. Every op's GLSL kernel
that writes four values per texel is run on an output whose rows do not fill their last texel, with data that
makes a repeated value stand out (infinities included), and the stored texture is read back whole.
"""

from __future__ import annotations

import numpy as np
import pytest

from kernelforge.ops import get_op
from kernelforge.runtime.kernel import prepare
from kernelforge.testing.ops import valid_configs

pytestmark = pytest.mark.device

# op -> a problem whose output rows end mid-texel (columns % 4 != 0)
CASES = {
    "elementwise": "x * 2 + y:x=3x5,y=5",
    "transpose": "6x3:p10",
    "concat": "3x2+3x5:a1",
    "slice": "4x9:s1:e8:a1",
    "gather": "7x5:i3",
    "pad": "3x5:p0,1,0,1",
    "softmax": "3x7",
    "layernorm": "3x7",
    "gemm": "3x6x5",
    "pool2d": "max:1x2x5x5:k2:s1",
    "pool2d_argmax": "max:1x2x6x6:k2:s1:col",
    "resize": "1x2x3x3:s1,2:nearest:asymmetric:floor",
    "conv2d": "1x3x5x5:6x3x3:p1",
    "reduce": "3x5x7:a2:sum",
    "conv_transpose2d": "1x3x3x3:6x2x2:s2",
    "attention": "1x2x5x6",
    "arg_reduce": "3x5x7:a1:min",
    "cumsum": "4x9:a1:excl",
}


def test_every_glsl_op_is_covered():
    from kernelforge.ops import specs

    assert set(CASES) == {spec.name for spec in specs() if "glsl" in spec.templates}


def _padding(stored: np.ndarray, width: int, height: int, rows: int, cols: int, square: bool) -> np.ndarray:
    """Return the lanes of each row's last texel past the row's end."""
    texels = stored.reshape(height * width, 4)
    row_texels = -(-cols // 4)
    if square:
        last = [r * row_texels + row_texels - 1 for r in range(rows)]
    else:
        last = [r * width + row_texels - 1 for r in range(rows)]
    return texels[last, cols % 4 :]


@pytest.mark.parametrize("op", sorted(CASES))
def test_packed_rows_end_in_zeros(gl, op):
    spec = get_op(op)
    problem = spec.parse_problem(CASES[op])
    rng = np.random.default_rng(0)
    inputs = [a.astype(np.float32) for a in spec.make_inputs(problem, rng)]
    inputs[0].reshape(-1)[-1] = np.inf  # a repeated last value would show as inf, not 0
    checked = 0
    for params in valid_configs(spec, problem, gl.limits, "glsl"):
        launch = spec.gl_launch(problem, params)
        if launch.targets[0].pack != 4 or launch.targets[0].cols % 4 == 0:
            continue
        kernel = prepare(gl, spec, problem, params, inputs)
        kernel.run()
        for t, target in enumerate(launch.targets):  # every render target (rows dealt round-robin)
            stored = kernel.executable.stored(kernel.program.steps[0].outputs[t].resource)
            rows = len(range(t, target.rows, len(launch.targets))) if len(launch.targets) > 1 else target.rows
            pad = _padding(stored, target.width, target.height, min(rows, target.rows), target.cols, target.square)
            assert np.all(pad == 0), f"{op} {params} target {t}: padding lanes hold {pad[np.nonzero(pad)][:4]}"
        checked += 1
    assert checked, f"{op}: no config writes packed rows that end mid-texel"
