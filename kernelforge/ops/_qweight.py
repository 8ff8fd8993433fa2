"""Narrow weights read by GEMM and conv kernels: int8/uint8/int4/float16 on the device, widened where they are read.

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

``int4`` weights are symmetric values in [-7, 7] with one scale per (output channel, group of ``group``
consecutive values along the reduction axis K; the last group of a K that is not a multiple is shorter). K is a
GEMM B's reduction axis, and a conv's (input channels per group) x kh x kw in W's OIHW order. Their ``qparams``
is float32 ``[ceil(K / group), channels]`` (the scales; no zero points) and the node's ``weight_group``
attribute is ``group``. WGSL kernels read them packed eight to a 32-bit word (value ``e`` in bits
``4 * (e % 8)`` of word ``e / 8``, two's complement: :func:`pack_int4`), GLSL kernels one per byte of an int8
texture. ``q * scale`` rounds once, so they too see their float weights bit for bit.

``float16`` weights have no qparams: the weight input is float32 holding values that float16 represents exactly,
and the half is the weight. WGSL kernels read them two to a 32-bit word (value ``e`` in bits ``16 * (e % 2)`` of
word ``e / 2``) with ``unpack2x16float``, core WGSL that needs no ``shader-f16``; GLSL kernels sample a half-float
texture as any float texture. Widening a half is exact, so the kernels see their float weights bit for bit too.
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
    "FLOAT16",
    "QUANT_RANGES",
    "WeightQuant",
    "device_qparams",
    "from_node",
    "halves",
    "int4_expand",
    "int4_scale",
    "int4_scales",
    "integers",
    "pack_int4",
    "parsed",
    "random_weight",
    "split_key",
]

QUANT_RANGES = {"int8": (-128, 127), "uint8": (0, 255), "int4": (-7, 7)}
"""Integer weight dtypes kernels read, with their ranges (int4: symmetric, -8 unused)."""
FLOAT16 = "float16"
"""The weight dtype kernels read as halves (no scales)."""
_SUFFIX = re.compile(r"^(.*)/q(i8|u8|i4|f16)(c?)(?:g(\d+))?$")
_SHORT = {"int8": "i8", "uint8": "u8", "int4": "i4", FLOAT16: "f16"}
_LONG = {v: k for k, v in _SHORT.items()}


@dataclass(frozen=True)
class WeightQuant:
    """How a kernel's weight is stored: ``dtype`` integers with ``channels`` scale/zero-point pairs (1: per tensor).

    ``group`` (int4 only, a multiple of 4): the K values that share a channel's scale. ``float16``: halves, with
    no scales (``channels`` 1).
    """

    dtype: str
    channels: int = 1
    group: int = 0

    def __post_init__(self) -> None:
        if self.dtype not in QUANT_RANGES and self.dtype != FLOAT16:
            raise ShapeError(f"quantized weights must be int8, uint8, int4 or float16, not {self.dtype!r}")
        if self.dtype == FLOAT16 and self.channels != 1:
            raise ShapeError(f"float16 weights have no scales, got {self.channels} channels")
        if isinstance(self.channels, bool) or not isinstance(self.channels, int) or self.channels < 1:
            raise ShapeError(f"quantized weights need >= 1 scale, got {self.channels!r}")
        # a multiple of 4: the four K values of a GLSL vec4 fetch (k % 4 == 0) then share one group
        if self.dtype == "int4" and (not isinstance(self.group, int) or self.group < 4 or self.group % 4):
            raise ShapeError(f"int4 weights need a group size that is a multiple of 4, got {self.group!r}")
        if self.dtype != "int4" and self.group:
            raise ShapeError(f"{self.dtype} weights have no groups, got group {self.group}")

    def groups(self, k: int) -> int:
        """The number of K groups of an int4 weight whose reduction length is ``k`` (1 for int8/uint8)."""
        return math.ceil(k / self.group) if self.group else 1

    @property
    def scaled(self) -> bool:
        """Whether the kernel binds scales (a ``qparams`` input): every dtype but float16."""
        return self.dtype != FLOAT16

    @property
    def per_channel(self) -> bool:
        """Whether each output channel has its own scale and zero point."""
        return self.channels > 1

    @property
    def key(self) -> str:
        """A problem key's suffix: ``/qi8``, ``/qi8c`` per channel (``u8``: uint8), ``/qi4g32``, ``/qf16``."""
        if self.group:
            return f"/q{_SHORT[self.dtype]}g{self.group}"
        return f"/q{_SHORT[self.dtype]}{'c' * self.per_channel}"

    def context(self) -> dict[str, object]:
        """What the templates need: the dtype, per-channel-ness, the vec4 count of each parameter row, int4's group."""
        context: dict[str, object] = {
            "wq": self.dtype,
            "wq_channel": self.per_channel,
            "wq_rows": math.ceil(self.channels / 4),
        }
        if self.group:  # only int4 kernels read it: float and int8 contexts stay as they were
            context["wq_group"] = self.group
        return context


def from_node(
    attrs: Mapping[str, Any], qparams: tuple[int, ...] | None, channels: int, op: str, k: int = 0
) -> WeightQuant | None:
    """Return the node's :class:`WeightQuant` (attribute ``weight_quant``, qparams ``[2, 1 | channels]``), or None.

    int4 (attribute ``weight_group``): qparams ``[ceil(k / group), channels]``, ``k`` the weight's reduction length.
    """
    dtype = attrs.get("weight_quant", "")
    if not dtype:
        return None
    if dtype == FLOAT16:
        if qparams is not None:
            raise ShapeError(f"{op}: float16 weights have no qparams, got {qparams}")
        return WeightQuant(FLOAT16)
    if dtype == "int4":
        wq = WeightQuant("int4", channels, int(attrs.get("weight_group", 0)))
        if qparams is None or tuple(qparams) != (wq.groups(k), channels):
            raise ShapeError(f"{op}: int4 weights need scales of shape ({wq.groups(k)}, {channels}), got {qparams}")
        return wq
    if qparams is None or len(qparams) != 2 or qparams[0] != 2 or qparams[1] not in (1, channels):
        raise ShapeError(f"{op}: quantized weights need qparams of shape (2, 1) or (2, {channels}), got {qparams}")
    return WeightQuant(str(dtype), int(qparams[1]))


def split_key(text: str) -> tuple[str, str, bool, int]:
    """Split a ``--shape`` text into the shape, the weights' dtype (``""``: float), per-channel-ness and group.

    The suffix is what :attr:`WeightQuant.key` writes: ``/qi8``, ``/qu8``, ``/qi8c``, ``/qu8c``, ``/qi4g32``, ``/qf16``.

    Raises:
        ShapeError: For int4 without a group (``/qi4g32``), or a group with int8/uint8.
    """
    match = _SUFFIX.match(text.strip())
    if not match:
        return text, "", False, 0
    dtype, group = _LONG[match.group(2)], int(match.group(4) or 0)
    if (dtype == "int4") != bool(group) or (dtype == "int4" and match.group(3)):
        raise ShapeError(f"{text!r}: int4 weights are '/qi4g<group>' (per channel), int8/uint8 ones have no group")
    if dtype == FLOAT16 and match.group(3):
        raise ShapeError(f"{text!r}: float16 weights are '/qf16' (no scales)")
    return match.group(1), dtype, bool(match.group(3)) or dtype == "int4", group


def parsed(dtype: str, per_channel: bool, channels: int, group: int = 0) -> WeightQuant | None:
    """Return the :class:`WeightQuant` a parsed key names for a weight of ``channels`` output channels."""
    return WeightQuant(dtype, channels if per_channel else 1, group) if dtype else None


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
    if wq.dtype == FLOAT16:
        return halves(w, what)
    if wq.dtype == "int4":
        return _int4_integers(w, np.asarray(qparams, np.float32), axis, wq, what)
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


def halves(weight: np.ndarray, what: str) -> np.ndarray:
    """Return ``weight`` as float16, checked to widen back to it bit for bit (the kernel reads these halves).

    Raises:
        ValueError: Naming ``what`` when a value is not a half (rounding would change what the kernel computes).
    """
    w = np.asarray(weight, np.float32)
    half = w.astype(np.float16)
    if not np.array_equal(half.astype(np.float32).view(np.uint32), w.view(np.uint32)):
        raise ValueError(f"{what}: the weight is not float16 values")
    return half


def device_qparams(qparams: np.ndarray, wq: WeightQuant, glsl: bool = False) -> np.ndarray:
    """Return the scales, then the zero points, each padded to whole vec4s.

    WGSL's ``qp`` binds them flat; GLSL's ``QP`` texture is the ``[2, 4 * rows]`` matrix (``glsl``). int4: the
    ``[groups, 4 * rows]`` scales, a group's channels padded to whole vec4s (a vec4 read gets 4 channels' scales).
    """
    qp = np.asarray(qparams, np.float32)
    qp = qp.reshape(qp.shape[0] if wq.dtype == "int4" else 2, -1)
    if qp.shape[1] != wq.channels:
        raise ValueError(f"qparams for {qp.shape[1]} channels, the kernel has {wq.channels}")
    rows = math.ceil(wq.channels / 4) * 4
    out = np.zeros((qp.shape[0], rows), np.float32)
    out[:, : wq.channels] = qp
    return out if glsl else out.reshape(-1)


def pack_int4(q: np.ndarray) -> np.ndarray:
    """Return int4 values (int8 in [-8, 7], in order) packed two per byte: value ``2i`` in byte i's low nibble.

    Written little-endian into 32-bit words, value ``e`` lands in bits ``4 * (e % 8)`` of word ``e / 8``.
    """
    flat = np.ascontiguousarray(q, np.int8).reshape(-1).view(np.uint8) & 15
    if flat.size % 2:
        flat = np.concatenate([flat, np.zeros(1, np.uint8)])
    return np.asarray(flat[0::2] | (flat[1::2] << 4), np.uint8)


def int4_scales(weight: np.ndarray, axis: int, group: int) -> np.ndarray:
    """Return symmetric int4 scales ``[groups, channels]``: a group's largest magnitude / 7 (all zero: 1)."""
    kc = k_by_channel(np.asarray(weight, np.float32), axis)
    k, channels = kc.shape
    padded = np.zeros((math.ceil(k / group) * group, channels), np.float32)
    padded[:k] = np.abs(kc)  # zeros never raise a group's peak, so the short last group is exact
    return int4_scale(padded.reshape(-1, group, channels).max(axis=1))


def int4_scale(peak: np.ndarray) -> np.ndarray:
    """Return the int4 scales of groups whose largest magnitudes are ``peak``: ``peak / 7`` rounded up to float16.

    A bundle stores such scales as halves (an eighth of int4's 4 bits a value with groups of 32, not a quarter), so
    every reference computes with the halves; rounding up keeps ``|w| / scale`` within 7. An all-zero group gets
    scale 1; a peak beyond float16's range keeps its float32 scale (the bundle then stores float32 scales).
    """
    s = np.where(peak > 0, np.asarray(peak, np.float32) / np.float32(7), np.float32(1)).astype(np.float32)
    with np.errstate(over="ignore"):
        half = s.astype(np.float16)
    low = half.astype(np.float32) < s
    half[low] = np.nextafter(half[low], np.float16(np.inf))
    return np.where(np.isfinite(half), half.astype(np.float32), s)


def int4_expand(scales: np.ndarray, shape: tuple[int, ...], axis: int, group: int) -> np.ndarray:
    """Return each value's scale for a weight of ``shape`` (channels along ``axis``), from ``[groups, channels]``."""
    k = math.prod(shape) // shape[axis]
    per_k = np.repeat(np.asarray(scales, np.float32), group, axis=0)[:k]  # [k, channels]
    return from_k_by_channel(per_k, shape, axis)


def k_by_channel(w: np.ndarray, axis: int) -> np.ndarray:
    """``w`` as ``[K, channels]``: the channel axis last, the others flattened in order (OIHW: (c, kh, kw))."""
    return np.moveaxis(w, axis, -1).reshape(-1, w.shape[axis])


def from_k_by_channel(kc: np.ndarray, shape: tuple[int, ...], axis: int) -> np.ndarray:
    """The inverse of :func:`k_by_channel`: ``[K, channels]`` back to a weight of ``shape``."""
    moved = [d for a, d in enumerate(shape) if a != axis]
    return np.moveaxis(kc.reshape(*moved, shape[axis]), -1, axis)


def _int4_integers(w: np.ndarray, scales: np.ndarray, axis: int, wq: WeightQuant, what: str) -> np.ndarray:
    """int4 :func:`integers`: ``q * scale`` rounds once and ``|q| <= 7``, so ``round(w / scale)`` recovers ``q``."""
    if scales.shape != (wq.groups(math.prod(w.shape) // w.shape[axis]), wq.channels):
        raise ValueError(f"{what}: int4 scales of shape {scales.shape} do not fit a weight of shape {w.shape}")
    full = int4_expand(scales, w.shape, axis, wq.group)
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.clip(np.where(full == 0, 0.0, np.round(w.astype(np.float64) / full)), -7, 7).astype(np.int8)
    if not np.array_equal((q.astype(np.float32) * full).view(np.uint32), w.view(np.uint32)):
        raise ValueError(f"{what}: the weight is not int4 values dequantized by its group scales")
    return q


def random_weight(
    rng: np.random.Generator, shape: tuple[int, ...], axis: int, wq: WeightQuant
) -> tuple[np.ndarray, np.ndarray | None]:
    """Return a float32 weight made of random ``wq`` integers (magnitudes about 1) and its qparams (float16: None)."""
    if wq.dtype == FLOAT16:  # halves in [-1, 1]: every bit of the 10-bit mantissa in use
        return rng.uniform(-1, 1, shape).astype(np.float16).astype(np.float32), None
    lo, hi = QUANT_RANGES[wq.dtype]
    if wq.dtype == "int4":  # scales [groups, channels]; a per-group spread tests that kernels pick the right one
        groups = wq.groups(math.prod(shape) // shape[axis])
        scales = (rng.uniform(0.5, 1.5, (groups, shape[axis])) / 8).astype(np.float32)
        q4 = rng.integers(lo, hi + 1, size=shape).astype(np.float32)
        return np.asarray(q4 * int4_expand(scales, shape, axis, wq.group), np.float32), scales
    channels = shape[axis] if wq.per_channel else 1
    q = rng.integers(lo, hi + 1, size=shape)
    scale = rng.uniform(0.5, 1.5, channels).astype(np.float32) / 128
    middle = (lo + hi + 1) // 2
    zero = rng.integers(middle - 8, middle + 9, size=channels).astype(np.float32)
    qp = np.stack([scale, zero])
    w = (q - _channel_values(zero, shape, axis)).astype(np.float32) * _channel_values(scale, shape, axis)
    return np.asarray(w, np.float32), qp
