"""Dtypes at a model's edges: graph inputs and outputs that are not float32.

Kernels compute in float32 only; integer tensors are carried as exact float values and booleans as 0.0/1.0. So
a graph input of type int64 (token ids), int32, bool or float16 is converted to float32 when it is fed, and a
graph output of such a type is converted back when it is read. float32 holds every integer up to 2**24 exactly:
a larger integer input is refused, naming the input and the value, rather than silently rounded (token ids and
positions are far below that; a vocabulary of 16.7 million is not).

The narrow types of :mod:`.dtypes` (bfloat16, the float8 and float4 types, float8e8m0, int4/uint4/int2/uint2)
are edge dtypes too: float32 holds each of their values exactly, so an input widens exactly, and an output is
rounded as ONNX's Cast rounds (to nearest even; overflow as the type's own: infinity, NaN or, for float4e2m1,
its largest value). Inside a graph, a Cast or QuantizeLinear to a float8, float4 or float8e8m0 type rounds onto
its grid already (:mod:`.float_grids`); one to bfloat16 or float16 is the tensor itself.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx

from kernelforge.graph.dtypes import E8M0, E8M0_MIN, NARROW_ELEMS, int_range, kind, numpy_dtype

__all__ = ["EDGE_DTYPES", "MAX_EXACT_INT", "EdgeError", "edge_dtype", "from_compute", "to_compute"]

MAX_EXACT_INT = 1 << 24
"""The largest magnitude of an integer input that float32 compute holds exactly."""

EDGE_DTYPES: dict[int, str] = {
    onnx.TensorProto.FLOAT: "float32",
    onnx.TensorProto.FLOAT16: "float16",
    onnx.TensorProto.DOUBLE: "float64",
    onnx.TensorProto.INT64: "int64",
    onnx.TensorProto.INT32: "int32",
    onnx.TensorProto.INT16: "int16",
    onnx.TensorProto.INT8: "int8",
    onnx.TensorProto.UINT8: "uint8",
    onnx.TensorProto.UINT16: "uint16",
    onnx.TensorProto.UINT32: "uint32",
    onnx.TensorProto.UINT64: "uint64",
    onnx.TensorProto.BOOL: "bool",
    **NARROW_ELEMS,
}
"""ONNX element type -> the dtype name a graph input or output of that type is fed and read as (the narrow types
by their ``ml_dtypes`` names: :func:`.dtypes.numpy_dtype` gives the numpy dtype)."""


class EdgeError(ValueError):
    """A feed cannot be converted to its input's dtype exactly (or is not of a compatible kind)."""


def edge_dtype(elem_type: int) -> str | None:
    """Return the dtype name of an ONNX element type at a graph edge (UNDEFINED: float32), None if unsupported."""
    if elem_type == onnx.TensorProto.UNDEFINED:
        return "float32"
    return EDGE_DTYPES.get(elem_type)


def to_compute(name: str, array: Any, dtype: str) -> np.ndarray:
    """Return ``array``, fed for input ``name`` of dtype ``dtype``, as the float32 the kernels compute on.

    Float inputs take any real numbers (as ONNX Runtime, a float feed for an integer input is refused); a feed
    of the input's own narrow float type widens exactly. Integer and bool inputs take integers or bools, each
    within ``MAX_EXACT_INT``, and within the type's range for the 4- and 2-bit integers.

    Raises:
        EdgeError: Naming the input, the dtypes and the first value that does not convert exactly.
    """
    data = np.asarray(array)
    floating = kind(numpy_dtype(dtype)) == "f"
    have = kind(data.dtype)
    kinds = "fiub" if floating else "iub"
    if have not in kinds:
        want = "float data" if floating else f"{dtype} data (integers or bools)"
        raise EdgeError(f"input {name!r}: expected {want}, got dtype {data.dtype}")
    if not floating and have in "iu" and data.size:
        lo, hi = int_range(dtype) if dtype in NARROW_ELEMS.values() else (-MAX_EXACT_INT, MAX_EXACT_INT)
        wide = data.astype(np.float64)  # float64: no int overflow
        bad = np.flatnonzero((wide < lo) | (wide > hi))
        if bad.size:
            at = np.unravel_index(int(bad[0]), data.shape)
            where = f"input {name!r}: value {data[at]} at index {tuple(int(i) for i in at)}"
            if hi < MAX_EXACT_INT:
                raise EdgeError(f"{where} is outside {dtype}'s range [{lo}, {hi}]")
            raise EdgeError(f"{where} is beyond +-2**24 ({MAX_EXACT_INT}), the integers float32 compute holds exactly")
    return data.astype(np.float32, order="C", copy=False)  # ascontiguousarray would make a 0-d feed 1-d


def from_compute(data: np.ndarray, dtype: str) -> np.ndarray:
    """Return a float32 result as output dtype ``dtype``.

    Integers are rounded to the nearest (NaN and infinities become 0, as in ``kernelforge.js``) and clipped to
    the type's range; bools are True where not 0; floats are rounded to nearest even (beyond the type's range:
    infinity, or NaN for a float8 type without infinities, or float4e2m1's largest value). A 0 read as
    float8e8m0, which has no 0, is its smallest value ``2**-127`` flushed by the device (a float32 subnormal).
    """
    target = numpy_dtype(dtype)
    if target == np.float32:
        return data
    if target.kind == "b":
        return data != 0
    if kind(target) in "iu":
        lo, hi = int_range(dtype)
        rounded = np.where(np.isfinite(data), np.rint(data), 0.0)
        return np.clip(rounded, lo, hi).astype(target)
    if dtype == E8M0:
        data = np.where(data == 0, np.float32(E8M0_MIN), data)
    with np.errstate(over="ignore", invalid="ignore"):  # beyond the type's range: as a cast gives
        return data.astype(target)
