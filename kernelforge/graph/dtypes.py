"""The narrow dtypes ONNX defines beyond numpy's: bfloat16, 8- and 4-bit floats, 4- and 2-bit integers.

numpy has no such types; ``ml_dtypes`` (what onnx itself reads and writes them with) gives them numpy dtypes,
named as here: ``bfloat16``, ``float8_e4m3fn``, ``float8_e4m3fnuz``, ``float8_e5m2``, ``float8_e5m2fnuz``,
``float4_e2m1fn``, ``int4``, ``uint4``, ``int2`` and ``uint2`` (each where the installed onnx defines its element
type). float32 holds every value of each exactly, so kernels never see them: a graph input of such a type is
widened to float32, a result is rounded to it at the output (:mod:`.edges`), a constant is widened at load.

Never ``np.dtype(name)`` for these names: numpy reads ``"int4"`` as its own 4-byte int32. Use
:func:`numpy_dtype`.
"""

from __future__ import annotations

from typing import Any

import ml_dtypes
import numpy as np
import onnx

__all__ = [
    "NARROW",
    "NARROW_ELEMS",
    "SATURATING",
    "cast_array",
    "finite_max",
    "int_range",
    "is_narrow",
    "kind",
    "numpy_dtype",
]

_NARROW_FLOATS: dict[str, Any] = {
    "bfloat16": ml_dtypes.bfloat16,
    "float8_e4m3fn": ml_dtypes.float8_e4m3fn,
    "float8_e4m3fnuz": ml_dtypes.float8_e4m3fnuz,
    "float8_e5m2": ml_dtypes.float8_e5m2,
    "float8_e5m2fnuz": ml_dtypes.float8_e5m2fnuz,
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
    "float4_e2m1fn": "FLOAT4E2M1",
    "int4": "INT4",
    "uint4": "UINT4",
    "int2": "INT2",
    "uint2": "UINT2",
}

NARROW_ELEMS: dict[int, str] = {
    int(getattr(onnx.TensorProto, elem)): name
    for name, elem in _ONNX_NAMES.items()
    if hasattr(onnx.TensorProto, elem)  # INT2/UINT2 came in onnx 1.20, FLOAT4E2M1 in 1.18
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
"""The types ONNX's Cast ``saturate`` attribute applies to (the float8 types)."""


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


def cast_array(x: np.ndarray, target: np.dtype[Any], saturate: bool = True) -> np.ndarray:
    """Return a constant cast to numpy dtype ``target`` as ONNX's Cast does.

    Floats round to nearest even. To a float8 type with ``saturate``, a value beyond the type's range
    (infinities too) becomes its largest finite value of that sign and NaN stays NaN; without it, the type's
    own overflow: infinity for float8e5m2, NaN for the others. float4e2m1 has neither, so it always
    saturates. Floats to the 4- and 2-bit integers truncate toward zero (0 where out of range, as ONNX's
    reference); integers to them keep the low bits (two's complement).
    """
    target = np.dtype(target)
    data = x.astype(np.float32) if kind(x.dtype) == "f" and is_narrow(x.dtype) else x
    with np.errstate(all="ignore"):
        if target.name in SATURATING and saturate:
            bound = finite_max(target.name)
            data = np.clip(data, -bound, bound)  # np.clip keeps NaN
        return data.astype(target)
