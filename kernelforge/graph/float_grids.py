"""Rounding onto the float8, float4e2m1 and float8e8m0 grids inside a graph, in exact float32 arithmetic.

Every value of these types is a float32, so a tensor of one is carried as float32 values on its grid (see
:mod:`.dtypes`); a Cast or QuantizeLinear to one rounds onto the grid with the elementwise expression
language's own ops (no shader of its own). Only comparisons, selects, clips, multiplications by powers of two
and ``round(a / b)`` are used, all exact on every device: ``round(a / b)`` decides the ties of the float32
quotient exactly even where the shader's division is a few ULP off (``round_div`` in
:mod:`kernelforge.ops._expr`).

- **float8 and float4e2m1** (:func:`emit_round`): a value ``q = x / scale`` rounds to nearest even on a grid
  whose spacing ``u`` is a power of two fixed by q's binade (one ``where`` per binade; the subnormals share the
  smallest normal binade's spacing), as ``round(|x| / (|scale| * u)) * u`` with q's sign put back (so a
  negative value that rounds to 0 gives -0, as ONNX): dividing by the power of two ``u`` commutes with
  float32's rounding of ``x / scale``, so that is ONNX's float32 quotient rounded onto the grid. ``u`` itself
  comes from the shader's quotient, which can only differ in binade from the exact one within a few ULP of a
  power of two, where both spacings round to that power. Beyond the largest finite value: with ``saturate``
  (and always for float4e2m1, which has neither infinity nor NaN) that value of the same sign, else infinity
  (float8e5m2) or NaN (the others); NaN stays NaN (float4e2m1: 0, as ``ml_dtypes``). The infinity and the NaN
  are ``pow``'s explicit ones. A float32 subnormal that the device takes for 0 passes through as that 0.
- **float8e8m0** (:func:`emit_e8m0`): the powers of two ``2**-127 .. 2**127``. ``floor(log2 |x|)`` is
  estimated with ``log`` (within one of the truth), the power of two looked up in a 255-entry table (a
  ``gather``: exact) and corrected by one comparison each way; ``round_mode`` ``up``, ``down`` or ``nearest``
  (ties up) then picks it or its double. As ONNX's spec table: NaN stays NaN; with ``saturate`` an infinity or a
  result beyond ``2**127`` gives ``2**127`` and one below ``2**-127`` (rounding up: only 0) gives ``2**-127``,
  without it both give NaN (:func:`kernelforge.graph.dtypes.to_e8m0`). The sign is ignored, as ONNX's reference
  does (the spec leaves negative values undefined). ``2**-127`` and every input below ``2**-126`` are float32
  subnormals, which a device may flush to 0 (a graph output of this type reads such a 0 as ``2**-127``:
  :func:`kernelforge.graph.edges.from_compute`).

A program too large for one elementwise kernel stays two (the fusion pass merges them where they fit).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import ml_dtypes
import numpy as np

from kernelforge.graph.dtypes import E8M0_MAX, E8M0_MIN, NARROW, ROUND_MODES
from kernelforge.graph.onnx_context import Context, literal

__all__ = ["GRIDS", "Grid", "e8m0_table", "emit_e8m0", "emit_round"]

_FLT_MAX = float(np.finfo(np.float32).max)
_SCALE = 2.0**64
"""Lifts float8e8m0's subnormal bounds into float32's normal range before they are compared."""


@dataclass(frozen=True)
class Grid:
    """The values of one float8 or float4 type: ``mantissa`` stored bits, normal binades ``emin .. emax``."""

    name: str
    mantissa: int
    emin: int
    emax: int
    largest: float
    overflow: str
    """What a value beyond ``largest`` becomes without saturation: ``inf``, ``nan`` or ``clip`` (float4)."""

    def spacing(self, q: str) -> str:
        """Return the program of the grid spacing at ``|q|``: one nested ``where`` per binade above ``emin``."""
        a = f"abs({q})"
        text = literal(2.0 ** (self.emin - self.mantissa))
        for e in range(self.emin + 1, self.emax + 1):
            text = f"where(greater_equal({a}, {literal(2.0**e)}), {literal(2.0 ** (e - self.mantissa))}, {text})"
        return text

    def rounded(self, x: str, scale: str | None, u: str, saturate: bool) -> str:
        """Return the program of ``x / scale`` rounded onto the grid of spacing ``u`` (see the module)."""
        # the magnitude is rounded and the sign put back after: a negative value rounding to 0 gives -0
        divisor = f"(abs({scale}) * {u})" if scale is not None else u
        magnitude = f"round(abs({x}) / {divisor}) * {u}"
        negative = f"less({x}, 0.0)" if scale is None else f"logical_xor(less({x}, 0.0), less({scale}, 0.0))"
        largest = literal(self.largest)
        if saturate or self.overflow == "clip":
            y = f"min({magnitude}, {largest}) * where({negative}, -1.0, 1.0)"
        else:  # the type's overflow beyond its range: an infinity or a NaN of the value's sign
            special = _infinity(x) if self.overflow == "inf" else _nan(x)
            signed = f"where({negative}, -{special}, {special})"
            y = f"where(greater({magnitude}, {largest}), {signed}, {magnitude} * where({negative}, -1.0, 1.0))"
        # a zero stays itself, -0 included (as does a subnormal on a device that takes it for 0); NaN stays NaN
        # (float4e2m1 has none: 0, as ml_dtypes gives)
        kept = "0.0" if self.overflow == "clip" else x
        return f"where(equal({x}, {x}), where(equal({x}, 0.0), {x}, {y}), {kept})"


def _infinity(v: str) -> str:
    # pow(0, -1.5) is an explicit +inf in the templates (kf_pow), whatever the device does with 1 / 0
    return f"pow(0.0 * greater({v}, 0.0), -1.5)"


def _nan(v: str) -> str:
    # pow of a negative base to a non-integer exponent is an explicit NaN in the templates (kf_pow); abs makes
    # its sign positive everywhere (x86's default NaN, which numpy gives, is negative)
    return f"abs(pow(-1.0 - greater({v}, 0.0), 0.5))"


def _grid(name: str) -> Grid:
    info = ml_dtypes.finfo(NARROW[name])
    with np.errstate(over="ignore", invalid="ignore"):
        beyond = float(np.array(np.inf, np.float32).astype(NARROW[name]).astype(np.float32))
    overflow = "inf" if math.isinf(beyond) else "nan" if math.isnan(beyond) else "clip"
    return Grid(name, int(info.nmant), int(info.minexp), int(info.maxexp) - 1, float(info.max), overflow)


GRIDS: dict[str, Grid] = {
    name: _grid(name)
    for name in ("float8_e4m3fn", "float8_e4m3fnuz", "float8_e5m2", "float8_e5m2fnuz", "float4_e2m1fn")
    if name in NARROW
}
"""The float8 and float4 types rounded by :func:`emit_round`, by dtype name."""


def emit_round(ctx: Context, inputs: list[str], grid: Grid, saturate: bool, out: str) -> None:
    """Emit ``out`` = ONNX ``inputs`` (``[x]`` or ``[x, scale]``: ``x / scale``) rounded onto ``grid``.

    Two elementwise nodes: the grid spacing at the quotient, then the rounding (one kernel once fused).
    """
    u = ctx.fresh(f"{out}_spacing")
    quotient = (lambda v: f"{v[0]} / {v[1]}") if len(inputs) == 2 else (lambda v: v[0])
    ctx.elementwise(inputs, lambda v: grid.spacing(quotient(v)), u)

    def program(v: list[str]) -> str:
        return grid.rounded(v[0], v[1] if len(inputs) == 2 else None, v[-1], saturate)

    ctx.elementwise([*inputs, u], program, out)


def e8m0_table() -> np.ndarray:
    """Return float8e8m0's values ``2**-127 .. 2**127`` as float32, indexed by exponent + 127."""
    return np.ldexp(np.float32(1.0), np.arange(-127, 128)).astype(np.float32)


def emit_e8m0(ctx: Context, x: str, out: str, saturate: bool, round_mode: str) -> None:
    """Emit ``out`` = ONNX tensor ``x`` cast to float8e8m0 (see the module for the rules)."""
    if round_mode not in ROUND_MODES:
        raise ctx.fail(f"round_mode={round_mode!r} is not one of {', '.join(ROUND_MODES)}")
    x_ir = ctx.ir(x)
    shape = ctx.graph.values[x_ir].shape
    lo, hi = literal(2.0**-126), literal(E8M0_MAX)
    estimate = f"clip(floor(log(clip(abs(v0), {lo}, {hi})) * {literal(1 / math.log(2))}), -127.0, 127.0) + 127.0"
    index = ctx.emit("elementwise", [x_ir], {"expr": f"where(equal(v0, v0), {estimate}, 0.0)"}, shape)
    table = ctx.add_const(f"{out}_powers", e8m0_table())
    guess = ctx.emit("gather", [table, index], {"axis": 0})
    # the estimate is within one of floor(log2 |x|): halve or double it once to 2**floor(log2 |x|)
    power = "where(greater(v1, abs(v0)), v1 * 0.5, where(less_equal(v1 * 2.0, abs(v0)), v1 * 2.0, v1))"
    floor = ctx.emit("elementwise", [x_ir, guess], {"expr": power}, shape)
    ctx.emit("elementwise", [x_ir, floor], {"expr": _e8m0_program(saturate, round_mode)}, shape, out)


def _e8m0_program(saturate: bool, round_mode: str) -> str:
    """The cast of ``v0`` given ``v1`` = 2**floor(log2 |v0|), under ``round_mode`` and ``saturate``."""
    a = "abs(v0)"
    r = {
        "up": f"where(greater({a}, v1), v1 * 2.0, v1)",
        "down": "v1",
        "nearest": f"where(greater_equal({a}, v1 * 1.5), v1 * 2.0, v1)",  # ties up
    }[round_mode]
    y = f"clip({r}, {literal(E8M0_MIN)}, {literal(E8M0_MAX)})"
    if not saturate:
        # out of range: 0 rounding up, below 2**-127 otherwise (compared 2**64 times larger, as float32
        # normals), beyond 2**127 or infinite
        under = "equal(abs(v0), 0.0)" if round_mode == "up" else f"less({a} * {literal(_SCALE)}, {literal(2.0**-63)})"
        over = f"logical_or(greater({r}, {literal(E8M0_MAX)}), greater({a}, {literal(_FLT_MAX)}))"
        y = f"{y} * where(logical_or({under}, {over}), {_nan('v0')}, 1.0)"
    return f"where(equal(v0, v0), {y}, v0)"
