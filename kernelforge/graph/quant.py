"""Quantized constants: the int8/uint8 integers, scales and zero points a float32 constant was dequantized from.

A constant that comes from ONNX ``DequantizeLinear`` of an int8/uint8 initializer (or is the integer weight of
``MatMulInteger``/``ConvInteger``) keeps its float32 ``data`` (what every kernel reads) and, in
:attr:`kernelforge.graph.ir.Value.quant`, the integers it is made of. Kernels never see the integers: a bundle
stores them instead of the floats (``export/FORMAT.md``), four times smaller, and the runtime dequantizes them at
load to exactly the same float32 values.

Kernels bind constants in their own layouts (a conv's weights as ``[kh, kw, cg, m]``, a GLSL matrix, ...), so
:func:`relocate` finds where each integer went by running the kernel's own input conversion on index probes,
and keeps the result only when it dequantizes to the bound floats bit for bit.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

__all__ = ["QUANT_DTYPES", "Quantized", "relocate"]

QUANT_DTYPES = {"int8": (-128, 127), "uint8": (0, 255)}
"""Integer dtypes a :class:`Quantized` holds, with their ranges (int4/uint4 data is held widened)."""
_PROBE = 1 << 12
"""Index probes go in two parts below ``2**12`` each (plus one), so every probe value is an exact float32."""


@dataclass(frozen=True, eq=False)
class Quantized:
    """Integers whose ONNX dequantization ``(q - zero_point) * scale`` (in float32) is a constant's data.

    Attributes:
        q: int8 or uint8 values, in the constant's shape.
        scale: float32, shape ``(1,)`` per tensor or ``(q.shape[axis],)`` per channel; finite.
        zero_point: q's dtype, the shape of ``scale``.
        axis: The channel axis of ``q``; None per tensor.
    """

    q: np.ndarray
    scale: np.ndarray
    zero_point: np.ndarray
    axis: int | None = None

    def __post_init__(self) -> None:
        if self.q.dtype.name not in QUANT_DTYPES:
            raise ValueError(f"quantized data must be int8 or uint8, not {self.q.dtype}")
        channels = 1 if self.axis is None else self.q.shape[self.axis] if 0 <= self.axis < self.q.ndim else -1
        if channels < 0:
            raise ValueError(f"axis {self.axis} is out of range for quantized data of shape {self.q.shape}")
        if self.scale.shape != (channels,) or self.zero_point.shape != (channels,):
            raise ValueError(
                f"scale {self.scale.shape} and zero point {self.zero_point.shape} must have shape ({channels},)"
            )
        if self.scale.dtype != np.float32 or not np.isfinite(self.scale).all():
            raise ValueError("quantization scales must be finite float32 values")
        if self.zero_point.dtype != self.q.dtype:
            raise ValueError(f"zero point of dtype {self.zero_point.dtype} for {self.q.dtype} data")

    @property
    def dtype(self) -> str:
        """``"int8"`` or ``"uint8"``."""
        return self.q.dtype.name

    def _channel(self, values: np.ndarray) -> np.ndarray:
        """``values`` (one per channel) shaped to broadcast against ``q``."""
        if self.axis is None:
            return values.reshape(())
        return values.reshape([-1 if a == self.axis else 1 for a in range(self.q.ndim)])

    def dequantize(self) -> np.ndarray:
        """Return the float32 values: ``float32(q - zero_point) * scale``, rounded once, as DequantizeLinear."""
        shifted = self.q.astype(np.int32) - self._channel(self.zero_point).astype(np.int32)
        return shifted.astype(np.float32) * self._channel(self.scale)


def relocate(quant: Quantized, bound: np.ndarray, convert: Callable[[np.ndarray], np.ndarray]) -> Quantized | None:
    """Return ``quant`` laid out as a kernel binds its constant, or None when the bound array is not made of it.

    Args:
        quant: The constant's integers (in the constant's logical shape).
        bound: The float32 array the kernel binds, built from the constant by ``convert``.
        convert: The kernel's conversion of the constant (reshapes, transposes, slices), applied to any array
            of the constant's shape; it must move values, not compute with them.

    Returns:
        Integers of ``bound``'s shape with per-tensor scales, or per-channel ones along the one axis of ``bound``
        that the channel follows; None when ``convert`` computes with values, pads, mixes channels over several
        axes or repeats them, or when the result would not dequantize to ``bound`` bit for bit.
    """
    shape, size = quant.q.shape, quant.q.size
    index = np.arange(size, dtype=np.int64)
    parts = []
    for part in (index % _PROBE, index // _PROBE):
        probed = np.asarray(convert((part + 1).astype(np.float32).reshape(shape)), np.float64)
        if probed.shape != bound.shape or not np.array_equal(probed, np.round(probed)) or (probed < 1).any():
            return None
        parts.append(probed.astype(np.int64) - 1)
    source = parts[1] * _PROBE + parts[0]
    if (source >= size).any():
        return None
    q = quant.q.reshape(-1)[source]
    if quant.axis is None:
        moved = Quantized(q, quant.scale, quant.zero_point)
    else:
        inner = math.prod(shape[quant.axis + 1 :])
        found = _channel_axis((source // inner) % shape[quant.axis])
        if found is None or found[1].size > shape[quant.axis]:  # more scales than channels: no smaller
            return None
        axis, line = found
        moved = Quantized(q, quant.scale[line], quant.zero_point[line], axis)
    if not np.array_equal(moved.dequantize().view(np.uint32), np.asarray(bound, np.float32).view(np.uint32)):
        return None
    return moved


def _channel_axis(channel: np.ndarray) -> tuple[int, np.ndarray] | None:
    """Return the axis along which alone ``channel`` (each element's channel) varies, and its channels in order."""
    for axis in range(channel.ndim):
        index: list[slice | int] = [0] * channel.ndim
        index[axis] = slice(None)
        line = channel[tuple(index)]
        shape = [1] * channel.ndim
        shape[axis] = channel.shape[axis]
        if np.array_equal(channel, np.broadcast_to(line.reshape(shape), channel.shape)):
            return axis, line
    return None
