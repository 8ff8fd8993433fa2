"""``round(a / b)`` (QuantizeLinear's rounding) on every software GPU: the float32 quotient, ties to even, exactly.

Shader division may be off by a few ULP: SwiftShader divides by a constant as a multiplication by its
reciprocal. That moves a quotient that float32 rounds onto a half-way point to a neighbour and flips its
rounding; the kernels divide such quotients again, exactly.
"""

from __future__ import annotations

import numpy as np
import pytest

from kernelforge.ops import get_op
from kernelforge.ops.eltwise import EltwiseProblem
from kernelforge.runtime.kernel import prepare

pytestmark = pytest.mark.device
SPEC = get_op("elementwise")
N = 2048
# quantization scales: 2/255 as onnxruntime's calibration computes it, one of a LayerNorm output, round ones
SCALES = [0.00784313678741455, 0.03370441123843193, 0.1, 3.0]
WGSL = [{"wg": 64, "ept": 1, "vec4": 1}, {"wg": 64, "ept": 2, "vec4": 0}]
GLSL = [{"pack_out": 4, "pack_in": 1, "square": 0}, {"pack_out": 1, "pack_in": 1, "square": 0}]


def _nudged(a: np.ndarray, steps: np.ndarray) -> np.ndarray:
    """Return ``a`` moved by ``steps`` ULP each."""
    for _ in range(int(np.abs(steps).max())):
        a = np.where(steps > 0, np.nextafter(a, np.float32(np.inf)), a)
        a = np.where(steps < 0, np.nextafter(a, np.float32(-np.inf)), a)
        steps = steps - np.sign(steps)
    return a


def _near_ties(b: np.ndarray | np.float32, seed: int) -> np.ndarray:
    """Dividends within 3 ULP of ``h * b`` for half-integers ``h`` up to 2000, some exactly ``x + 1`` on ``b``."""
    rng = np.random.default_rng(seed)
    h = rng.integers(-2000, 2000, N) + 0.5
    a = _nudged((h * b).astype(np.float32), rng.integers(-3, 4, N))
    # the ties of QDQ models: x + 1 quantized on the scale of x (the + 1 after Erf in GELU)
    a[:256] = (np.arange(256, dtype=np.float32) - 128) * np.float32(b if np.ndim(b) == 0 else b[:256]) + np.float32(1)
    # big quotients, integers, zeros, infinities and NaN take the other paths
    a[256:266] = np.float32([3e7, -5e6, 4194305.0, 6.0, 0.0, -0.0, np.inf, -np.inf, np.nan, 3e38])
    return a


def _divisors(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.uniform(1, 2, N) * 2.0 ** rng.integers(-20, 21, N) * rng.choice([-1, 1], N)).astype(np.float32)


def test_reference_rounds_the_float32_quotient():
    b = _divisors(0)
    a = _near_ties(b, 0)
    problem = EltwiseProblem.from_text("round(x / y)", {"x": (N,), "y": (N,)})
    with np.errstate(over="ignore", invalid="ignore"):
        want = np.round(a / b)  # float32 division, as ONNX Div and QuantizeLinear
    np.testing.assert_array_equal(SPEC.reference(problem, [a, b]), want)
    exact = np.round(a.astype(np.float64) / b.astype(np.float64))
    assert (exact != want).sum() > 10, "the cases should include ties that float64 division would break"


def _check(backend, configs: list[dict[str, int]]) -> None:
    for scale in SCALES:  # a constant divisor, as QuantizeLinear's: the case drivers divide inexactly
        problem = EltwiseProblem.from_text(f"clip(round(x / {scale!r}) + 3, 0, 255)", {"x": (N,)})
        _compare(backend, problem, [_near_ties(np.float32(scale), 1)], configs)
    b = _divisors(2)
    _compare(backend, EltwiseProblem.from_text("round(x / y)", {"x": (N,), "y": (N,)}), [_near_ties(b, 2), b], configs)


def _compare(backend, problem: EltwiseProblem, arrays: list[np.ndarray], configs: list[dict[str, int]]) -> None:
    want = SPEC.reference(problem, arrays)
    for params in configs:
        out = prepare(backend, SPEC, problem, params, arrays).run()
        wrong = np.flatnonzero((out != want) & ~(np.isnan(out) & np.isnan(want)))
        assert wrong.size == 0, f"{problem.text} {params}: {wrong.size} wrong, e.g. at {arrays[0][wrong[:3]]}"


def test_every_wgsl_device_rounds_quotients_as_float32(wgsl_device):
    _check(wgsl_device, WGSL)


def test_glsl_rounds_quotients_as_float32(gl):
    _check(gl, GLSL)
