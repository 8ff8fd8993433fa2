"""The narrow dtypes ONNX defines beyond numpy's: bfloat16, 8- and 4-bit floats, 4- and 2-bit integers.

numpy has no such types; ``ml_dtypes`` (what onnx itself reads and writes them with) gives them numpy dtypes,
named as here: ``bfloat16``, ``float8_e4m3fn``, ``float8_e4m3fnuz``, ``float8_e5m2``, ``float8_e5m2fnuz``,
``float8_e8m0fnu`` (ONNX's FLOAT8E8M0: the powers of two 2**-127..2**127 and NaN), ``float4_e2m1fn``, ``int4``,
``uint4``, ``int2`` and ``uint2`` (each where the installed onnx defines its element type). float32 holds every
value of each exactly, so kernels never see them: a graph input of such a type is widened to float32, a result
is rounded to it at the output (:mod:`.edges`), a constant is widened at load, and a Cast or QuantizeLinear to a
float8, float4 or float8e8m0 type rounds onto its grid inside the graph (:mod:`.float_grids`).

Never ``np.dtype(name)`` for these names: numpy reads ``"int4"`` as its own 4-byte int32. Use
:func:`numpy_dtype`.
"""

from __future__ import annotations

from typing import Any

import ml_dtypes
import numpy as np
import onnx

__all__ = [
    "E8M0",
    "E8M0_MAX",
    "E8M0_MIN",
    "NARROW",
    "NARROW_ELEMS",
    "SATURATING",
    "cast_array",
    "finite_max",
    "int_range",
    "is_narrow",
    "kind",
    "numpy_dtype",
    "ROUND_MODES",
    "to_e8m0",
]

_NARROW_FLOATS: dict[str, Any] = {
    "bfloat16": ml_dtypes.bfloat16,
    "float8_e4m3fn": ml_dtypes.float8_e4m3fn,
    "float8_e4m3fnuz": ml_dtypes.float8_e4m3fnuz,
    "float8_e5m2": ml_dtypes.float8_e5m2,
    "float8_e5m2fnuz": ml_dtypes.float8_e5m2fnuz,
    "float8_e8m0fnu": ml_dtypes.float8_e8m0fnu,
    "float4_e2m1fn": ml_dtypes.float4_e2m1fn,
}
_NARROW_INTS: dict[str, Any] = {
    "int4": ml_dtypes.int4,
    "uint4": ml_dtypes.uint4,
    "int2": ml_dtypes.int2,
    "uint2": ml_dtypes.uint2,
}
_ONNX_NAMES = {
    "bfloat16": "BFLOAT16",
    "float8_e4m3fn": "FLOAT8E4M3FN",
    "float8_e4m3fnuz": "FLOAT8E4M3FNUZ",
    "float8_e5m2": "FLOAT8E5M2",
    "float8_e5m2fnuz": "FLOAT8E5M2FNUZ",
    "float8_e8m0fnu": "FLOAT8E8M0",
    "float4_e2m1fn": "FLOAT4E2M1",
    "int4": "INT4",
    "uint4": "UINT4",
    "int2": "INT2",
    "uint2": "UINT2",
}

NARROW_ELEMS: dict[int, str] = {
    int(getattr(onnx.TensorProto, elem)): name
    for name, elem in _ONNX_NAMES.items()
    if hasattr(onnx.TensorProto, elem)  # INT2/UINT2 came in onnx 1.20, FLOAT4E2M1 and FLOAT8E8M0 in 1.18
}
"""ONNX element type -> dtype name, for the narrow types the installed onnx defines."""
NARROW: dict[str, np.dtype[Any]] = {
    name: np.dtype({**_NARROW_FLOATS, **_NARROW_INTS}[name]) for name in NARROW_ELEMS.values()
}
"""Dtype name -> its ``ml_dtypes`` numpy dtype."""
_BY_DTYPE: dict[np.dtype[Any], str] = {
    dtype: "f" if name in _NARROW_FLOATS else name[0] for name, dtype in NARROW.items()
}
"""Narrow dtype -> numpy's kind letter it stands for (``f``, ``i`` or ``u``)."""
SATURATING = frozenset(n for n in ("float8_e4m3fn", "float8_e4m3fnuz", "float8_e5m2", "float8_e5m2fnuz") if n in NARROW)
"""The types ONNX's Cast ``saturate`` attribute clips to their largest value (the float8 types but float8e8m0)."""
E8M0 = "float8_e8m0fnu"
E8M0_MIN, E8M0_MAX = 2.0**-127, 2.0**127
"""float8e8m0's smallest and largest values (the smallest is a float32 subnormal)."""
ROUND_MODES = ("up", "down", "nearest")
"""Cast's ``round_mode`` values (opset 24+), which apply to float8e8m0 only."""


def numpy_dtype(name: str) -> np.dtype[Any]:
    """Return the numpy dtype of an edge dtype name (a narrow one's ``ml_dtypes`` dtype)."""
    return NARROW.get(name) or np.dtype(name)


def is_narrow(dtype: np.dtype[Any]) -> bool:
    """Return whether a numpy dtype is one of the narrow ``ml_dtypes`` types."""
    return dtype in _BY_DTYPE


def kind(dtype: np.dtype[Any]) -> str:
    """Return numpy's kind letter of a dtype, ``f``/``i``/``u`` for the narrow ones (numpy says ``V``)."""
    return _BY_DTYPE.get(dtype, dtype.kind)


def int_range(name: str) -> tuple[int, int]:
    """Return the smallest and largest value of an integer dtype name (narrow or numpy)."""
    info = ml_dtypes.iinfo(NARROW[name]) if name in NARROW else np.iinfo(np.dtype(name))
    return int(info.min), int(info.max)


def finite_max(name: str) -> float:
    """Return the largest finite value of a narrow float dtype name."""
    return float(ml_dtypes.finfo(NARROW[name]).max)


def cast_array(x: np.ndarray, target: np.dtype[Any], saturate: bool = True, round_mode: str = "up") -> np.ndarray:
    """Return a constant cast to numpy dtype ``target`` as ONNX's Cast does.

    Floats round to nearest even. To a float8 type with ``saturate``, a value beyond the type's range
    (infinities too) becomes its largest finite value of that sign and NaN stays NaN; without it, the type's
    own overflow: infinity for float8e5m2, NaN for the others. float4e2m1 has neither, so it always
    saturates. float8e8m0 rounds by ``round_mode`` (:func:`to_e8m0`). Floats to the 4- and 2-bit integers
    truncate toward zero (0 where out of range, as ONNX's reference); integers to them keep the low bits (two's
    complement).
    """
    target = np.dtype(target)
    data = x.astype(np.float32) if kind(x.dtype) == "f" and is_narrow(x.dtype) else x
    if target.name == E8M0:
        return to_e8m0(data, saturate, round_mode)
    with np.errstate(all="ignore"):
        if target.name in SATURATING and saturate:
            bound = finite_max(target.name)
            data = np.clip(data, -bound, bound)  # np.clip keeps NaN
        return data.astype(target)


def to_e8m0(x: Any, saturate: bool = True, round_mode: str = "up") -> np.ndarray:
    """Return ``x`` cast to float8e8m0 as ONNX's Cast specifies, computed in float64.

    ``round_mode`` ``up`` and ``down`` round |x| to the power of two above or below it, ``nearest`` to the
    nearer one (ties up). The sign is ignored, as ONNX's reference does (the spec leaves negative values
    undefined). Out of range, as the spec's table: an infinity or a result beyond ``2**127`` gives ``2**127``
    with ``saturate``, NaN without; so does a value below ``2**-127`` (0 only, rounding up) give ``2**-127`` or
    NaN. NaN stays NaN. (ONNX's reference implementation differs there: it maps infinities to NaN and keeps 0
    as ``2**-127``.)
    """
    if round_mode not in ROUND_MODES:
        raise ValueError(f"round_mode={round_mode!r} is not one of {', '.join(ROUND_MODES)}")
    a = np.abs(np.asarray(x, np.float64))
    with np.errstate(all="ignore"):
        low = np.where(a > 0, np.ldexp(1.0, np.frexp(a)[1] - 1), 0.0)  # 2**floor(log2 a), 0 for 0
        up = {"up": a > low, "down": np.zeros(a.shape, bool), "nearest": a >= 1.5 * low}[round_mode]
        r = np.where(np.isinf(a), np.inf, np.where(up, 2 * low, low))
        if not saturate:
            under = a == 0 if round_mode == "up" else a < E8M0_MIN
            r = np.where(under | (r > E8M0_MAX), np.nan, r)
        r = np.where(np.isnan(a), np.nan, np.clip(r, E8M0_MIN, E8M0_MAX))  # np.clip keeps NaN
    return r.astype(np.float32).astype(NARROW[E8M0])
