"""The constants of a bundle: deduplicated, aligned, fp32 or fp16 in one ``weights.bin``; quantized ones int8/int4.

A GEMM or conv weight that a kernel reads as int8/uint8 (:mod:`kernelforge.ops._qweight`) is stored as those
bytes, and the runtime uploads them as they are; an int4 one two values a byte (low nibble first), which the
runtime uploads as they are to a WGSL buffer and widens to an int8 texture for GLSL; a float16 one as its halves
(``dtype: "float16"``), uploaded as they are (a WGSL buffer, a half-float texture for GLSL). Any other constant a
quantized model dequantized from int8/uint8 (:class:`~kernelforge.graph.quant.Quantized`) is stored as those
integers, one byte each, with its scales and zero points in the manifest: the runtime widens it at load to exactly
the float32 values a native session binds.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np

from kernelforge.errors import ExportError
from kernelforge.graph.quant import Quantized
from kernelforge.ops._qweight import pack_int4

ALIGN = 16
"""Byte alignment of every constant (lets a runtime view fp32 data in place and keeps offsets tidy)."""
FP16_MAX = 65504.0
INLINE_SCALES = 256
"""Scales a quantized constant lists in the manifest; with more (all its zero points 0), they are a constant."""


class Constants:
    """Collects the arrays plans bind; identical arrays (by content) are stored once."""

    def __init__(self, dtype: str = "fp32", halves: bool = False) -> None:
        """Collect constants stored as ``dtype`` (``fp32`` or ``fp16``).

        ``halves``: store a float constant that float16 holds exactly as halves, widened at load (an int4
        bundle's kernel scales, which its weights were rounded with: an eighth of int4's bytes, not a quarter).
        """
        if dtype not in ("fp32", "fp16"):
            raise ExportError(f"--weights must be fp32 or fp16, got {dtype!r}")
        self.dtype = dtype
        self.halves = halves
        self._index: dict[str, int] = {}
        self._entries: list[dict[str, Any]] = []
        self._chunks: list[bytes] = []
        self._size = 0

    def add(self, array: np.ndarray, what: str, quant: Quantized | None = None, int4: bool = False) -> int:
        """Store an array (float32, int8/uint8/float16 a kernel reads, or the integers of ``quant``); return its index.

        Args:
            array: The values as a kernel binds them.
            what: Where it comes from, for error messages (node and input).
            quant: The integers ``array`` dequantizes from, in its order (stored instead of the floats).
            int4: ``array`` is a kernel's int4 weight: packed bytes (WGSL, two values each) or int8 values (GLSL).

        Raises:
            ExportError: For fp16 weights beyond fp16's range, non-finite values, or an int4 weight of another dtype.
        """
        if int4:  # packed two a byte: a WGSL buffer's bytes as they are (an odd count's last nibble is 0)
            if array.dtype == np.uint8:
                raw, count = np.ascontiguousarray(array).tobytes(), 2 * array.size
            elif array.dtype == np.int8:
                raw, count = pack_int4(array).tobytes(), array.size
            else:
                raise ExportError(f"{what}: int4 weights are bytes or int8 values, not {array.dtype}")
            return self._store(raw, {"dtype": "int4"}, count)
        if array.dtype in (np.int8, np.uint8):  # integers a kernel reads itself: their bytes, no scales
            return self._store(np.ascontiguousarray(array).tobytes(), {"dtype": array.dtype.name}, array.size)
        if array.dtype == np.float16:  # halves a kernel reads itself, whatever weights.bin's dtype
            if not np.isfinite(array).all():
                raise ExportError(f"{what}: constant has non-finite values")
            return self._store(np.ascontiguousarray(array, "<f2").tobytes(), {"dtype": "float16"}, array.size)
        data = np.ascontiguousarray(array, dtype=np.float32).reshape(-1)
        key = hashlib.sha256(data.tobytes()).hexdigest() + ("/q" if quant is not None else "")
        if key in self._index:
            return self._index[key]
        if not np.isfinite(data).all():
            raise ExportError(f"{what}: constant has non-finite values")
        entry: dict[str, Any] = {}
        if quant is not None:
            if quant.q.size != data.size:
                raise ExportError(f"{what}: {quant.q.size} quantized values for a constant of {data.size}")
            raw = np.ascontiguousarray(quant.q).tobytes()
            scales = None
            if len(quant.scale) > INLINE_SCALES and not quant.zero_point.any() and self.dtype == "fp32":
                # an embedding table's row scales: float32 in weights.bin, not as JSON text (~23 bytes each; an
                # fp16 bundle's plain constants are halves, which would round them)
                scales = self.add(quant.scale, f"{what} scales")
            entry.update(quant_entry(quant, scales))
        elif self.halves and self.dtype == "fp32" and np.array_equal(data.astype(np.float16).astype(np.float32), data):
            raw = data.astype("<f2").tobytes()  # exact: the widened halves are the constant, bit for bit
            entry.update(dtype="float16", scale=[1.0], zero_point=[0])
        elif self.dtype == "fp16":
            big = float(np.abs(data).max(initial=0.0))
            if big > FP16_MAX:
                raise ExportError(f"{what}: |value| {big:g} exceeds fp16's range; export with --weights fp32")
            raw = data.astype("<f2").tobytes()
        else:
            raw = data.astype("<f4").tobytes()
        return self._store(raw, entry, data.size, key)

    def _store(self, raw: bytes, entry: dict[str, Any], count: int, key: str = "") -> int:
        """Append ``raw`` (a constant of ``count`` values described by ``entry``) unless it is stored already."""
        key = key or hashlib.sha256(raw).hexdigest() + "/" + str(entry.get("dtype"))
        if key in self._index:
            return self._index[key]
        self._index[key] = len(self._entries)
        self._entries.append({"offset": self._size, "count": int(count), **entry})
        pad = -len(raw) % ALIGN
        self._chunks.append(raw + b"\0" * pad)
        self._size += len(raw) + pad
        return self._index[key]

    @property
    def table(self) -> list[dict[str, Any]]:
        """The manifest's ``constants`` list."""
        return list(self._entries)

    def meta(self, file: str) -> dict[str, Any]:
        """The manifest's ``weights`` entry."""
        return {"file": file, "bytes": self._size, "dtype": self.dtype}

    def data(self) -> bytes:
        """The contents of ``weights.bin``."""
        return b"".join(self._chunks)


def quant_entry(quant: Quantized, scales: int | None = None) -> dict[str, Any]:
    """Return a quantized constant's manifest fields: dtype, scale, zero_point (and axis and shape per channel).

    ``scales``: the index of a constant holding the scales (zero points all 0), named instead of listed.
    """
    entry: dict[str, Any] = {"dtype": quant.dtype}
    if scales is not None:
        entry["scale"] = {"constant": scales}
    else:
        # float32 scales as the exact doubles they are: JSON numbers that every reader parses back bit for bit
        entry.update(scale=[float(s) for s in quant.scale], zero_point=[int(z) for z in quant.zero_point])
    if quant.axis is not None:
        entry.update(axis=quant.axis, shape=[int(d) for d in quant.q.shape])
    return entry


def compact(text: str) -> str:
    """Return shader text without comments, indentation and blank lines (what the driver needs, ~3x smaller).

    Only ``//`` comments occur in the templates; neither WGSL nor GLSL has string literals that could hold one.
    """
    lines = (line.split("//", 1)[0].strip() for line in text.splitlines())
    return "\n".join(line for line in lines if line) + "\n"


class Shaders:
    """Shader texts of a bundle (compacted), each stored once."""

    def __init__(self) -> None:
        self._index: dict[str, int] = {}
        self.texts: list[str] = []

    @staticmethod
    def _bytes(text: str) -> int:
        """Bytes of a stored text in the manifest: a JSON string and its separator."""
        return len(json.dumps(text)) + 1

    def new_bytes(self, text: str) -> int:
        """Return the bytes adding ``text`` would add to the manifest (0 when it is in the table already)."""
        text = compact(text)
        return 0 if text in self._index else self._bytes(text)

    @property
    def size(self) -> int:
        """The bytes the texts take in the manifest."""
        return sum(map(self._bytes, self.texts))

    def add(self, text: str) -> int:
        """Return the index of a shader text, adding it when new."""
        text = compact(text)
        if text not in self._index:
            self._index[text] = len(self.texts)
            self.texts.append(text)
        return self._index[text]
