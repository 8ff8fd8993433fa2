"""Quantized weights read by GEMM and conv kernels: int8/uint8 on the device, dequantized where they are read.

A GEMM's B or a conv's W that a model stores as int8/uint8 integers (ONNX ``DequantizeLinear`` of a constant,
``MatMulInteger``/``ConvInteger``) stays in that form in GPU memory: four values per 32-bit word (WGSL) or one
per byte of an integer texture (GLSL). The kernel computes ``(q - zero_point[c]) * scale[c]`` in float32 when it
loads a value, ``c`` the output channel (or one pair for the whole tensor). Both factors are exact small
integers before the one rounding of the product, so the kernel sees exactly the floats DequantizeLinear makes:
results match the float32 path bit for bit, for a quarter of the memory and the bandwidth.

A quantized node has one more input after its optional ones: ``qparams``, float32 ``[2, channels]`` (row 0 the
scales, row 1 the zero points), and the attribute ``weight_quant`` (``"int8"``/``"uint8"``). The weight input
itself stays the float32 constant: :func:`integers` recovers the integers from it and fails unless they
dequantize back to it bit for bit.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from kernelforge.errors import ShapeError

__all__ = [
    "QUANT_RANGES",
    "WeightQuant",
    "device_qparams",
    "from_node",
    "integers",
    "parsed",
    "random_weight",
    "split_key",
]

QUANT_RANGES = {"int8": (-128, 127), "uint8": (0, 255)}
"""Integer weight dtypes kernels read, with their ranges."""
_SUFFIX = re.compile(r"^(.*)/q(i8|u8)(c?)$")
_SHORT = {"int8": "i8", "uint8": "u8"}


@dataclass(frozen=True)
class WeightQuant:
    """How a kernel's weight is stored: ``dtype`` integers with ``channels`` scale/zero-point pairs (1: per tensor)."""

    dtype: str
    channels: int = 1

    def __post_init__(self) -> None:
        if self.dtype not in QUANT_RANGES:
            raise ShapeError(f"quantized weights must be int8 or uint8, not {self.dtype!r}")
        if isinstance(self.channels, bool) or not isinstance(self.channels, int) or self.channels < 1:
            raise ShapeError(f"quantized weights need >= 1 scale, got {self.channels!r}")

    @property
    def per_channel(self) -> bool:
        """Whether each output channel has its own scale and zero point."""
        return self.channels > 1

    @property
    def key(self) -> str:
        """The suffix of a problem key: ``/qi8`` per tensor, ``/qi8c`` per channel (``u8`` for uint8)."""
        return f"/q{_SHORT[self.dtype]}{'c' * self.per_channel}"

    def context(self) -> dict[str, object]:
        """What the templates need: the dtype, per-channel-ness and the vec4 count of each parameter row."""
        return {"wq": self.dtype, "wq_channel": self.per_channel, "wq_rows": math.ceil(self.channels / 4)}


def from_node(attrs: Mapping[str, Any], qparams: tuple[int, ...] | None, channels: int, op: str) -> WeightQuant | None:
    """Return the node's :class:`WeightQuant` (attribute ``weight_quant``, qparams ``[2, 1 | channels]``), or None."""
    dtype = attrs.get("weight_quant", "")
    if not dtype:
        return None
    if qparams is None or len(qparams) != 2 or qparams[0] != 2 or qparams[1] not in (1, channels):
        raise ShapeError(f"{op}: quantized weights need qparams of shape (2, 1) or (2, {channels}), got {qparams}")
    return WeightQuant(str(dtype), int(qparams[1]))


def split_key(text: str) -> tuple[str, str, bool]:
    """Split a ``--shape`` text into the shape, the weights' dtype (``""``: float) and per-channel-ness.

    The suffix is what :attr:`WeightQuant.key` writes: ``/qi8``, ``/qu8``, ``/qi8c``, ``/qu8c``.
    """
    match = _SUFFIX.match(text.strip())
    if not match:
        return text, "", False
    return match.group(1), "int8" if match.group(2) == "i8" else "uint8", bool(match.group(3))


def parsed(dtype: str, per_channel: bool, channels: int) -> WeightQuant | None:
    """Return the :class:`WeightQuant` a parsed key names for a weight of ``channels`` output channels."""
    return WeightQuant(dtype, channels if per_channel else 1) if dtype else None


def _channel_values(values: np.ndarray, shape: tuple[int, ...], axis: int) -> np.ndarray:
    """``values`` (one per channel, or one) shaped to broadcast along ``axis`` of ``shape``."""
    if values.size == 1:
        return values.reshape(())
    return values.reshape([-1 if a == axis else 1 for a in range(len(shape))])


def integers(weight: np.ndarray, qparams: np.ndarray, axis: int, wq: WeightQuant, what: str) -> np.ndarray:
    """Return the integers ``weight`` was dequantized from (channels along ``axis``), in ``wq.dtype``.

    ``(q - z) * s`` rounds once, and ``|q - z| <= 255``, so ``round(w / s) + z`` recovers ``q`` exactly;
    the result is checked to dequantize back to ``weight`` bit for bit.

    Raises:
        ValueError: Naming ``what`` when the weight is not made of such integers.
    """
    w = np.asarray(weight, np.float32)
    qp = np.asarray(qparams, np.float32).reshape(2, -1)
    scale, zero = _channel_values(qp[0], w.shape, axis), _channel_values(qp[1], w.shape, axis)
    lo, hi = QUANT_RANGES[wq.dtype]
    with np.errstate(divide="ignore", invalid="ignore"):
        shifted = np.where(scale == 0, 0.0, np.round(w.astype(np.float64) / scale))
    q = np.clip(shifted + zero, lo, hi).astype(np.int32)
    back = (q - zero.astype(np.int32)).astype(np.float32) * scale
    if not np.array_equal(np.asarray(back, np.float32).view(np.uint32), w.view(np.uint32)):
        raise ValueError(f"{what}: the weight is not {wq.dtype} integers dequantized by its qparams")
    return q.astype(wq.dtype)


def device_qparams(qparams: np.ndarray, wq: WeightQuant, glsl: bool = False) -> np.ndarray:
    """Return the scales, then the zero points, each padded to whole vec4s.

    WGSL's ``qp`` binds them flat; GLSL's ``QP`` texture is the ``[2, 4 * rows]`` matrix (``glsl``).
    """
    qp = np.asarray(qparams, np.float32).reshape(2, -1)
    if qp.shape[1] != wq.channels:
        raise ValueError(f"qparams for {qp.shape[1]} channels, the kernel has {wq.channels}")
    rows = math.ceil(wq.channels / 4) * 4
    out = np.zeros((2, rows), np.float32)
    out[:, : wq.channels] = qp
    return out if glsl else out.reshape(-1)


def random_weight(
    rng: np.random.Generator, shape: tuple[int, ...], axis: int, wq: WeightQuant
) -> tuple[np.ndarray, np.ndarray]:
    """Return a float32 weight made of random ``wq`` integers (magnitudes about 1) and its qparams."""
    lo, hi = QUANT_RANGES[wq.dtype]
    channels = shape[axis] if wq.per_channel else 1
    q = rng.integers(lo, hi + 1, size=shape)
    scale = rng.uniform(0.5, 1.5, channels).astype(np.float32) / 128
    middle = (lo + hi + 1) // 2
    zero = rng.integers(middle - 8, middle + 9, size=channels).astype(np.float32)
    qp = np.stack([scale, zero])
    w = (q - _channel_values(zero, shape, axis)).astype(np.float32) * _channel_values(scale, shape, axis)
    return np.asarray(w, np.float32), qp
