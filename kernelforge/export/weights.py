"""The constants of a bundle: deduplicated, aligned, fp32 or fp16 in one ``weights.bin``."""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from kernelforge.errors import ExportError

ALIGN = 16
"""Byte alignment of every constant (lets a runtime view fp32 data in place and keeps offsets tidy)."""
FP16_MAX = 65504.0


class Constants:
    """Collects the arrays plans bind; identical arrays (by content) are stored once."""

    def __init__(self, dtype: str = "fp32") -> None:
        if dtype not in ("fp32", "fp16"):
            raise ExportError(f"--weights must be fp32 or fp16, got {dtype!r}")
        self.dtype = dtype
        self._index: dict[str, int] = {}
        self._entries: list[dict[str, int]] = []
        self._chunks: list[bytes] = []
        self._size = 0

    def add(self, array: np.ndarray, what: str) -> int:
        """Store an array (flattened to float32) and return its constant index.

        Args:
            array: The values as a kernel binds them.
            what: Where it comes from, for error messages (node and input).

        Raises:
            ExportError: For fp16 weights beyond fp16's range, or non-finite values.
        """
        data = np.ascontiguousarray(array, dtype=np.float32).reshape(-1)
        key = hashlib.sha256(data.tobytes()).hexdigest()
        if key in self._index:
            return self._index[key]
        if not np.isfinite(data).all():
            raise ExportError(f"{what}: constant has non-finite values")
        if self.dtype == "fp16":
            big = float(np.abs(data).max(initial=0.0))
            if big > FP16_MAX:
                raise ExportError(f"{what}: |value| {big:g} exceeds fp16's range; export with --weights fp32")
            raw = data.astype("<f2").tobytes()
        else:
            raw = data.astype("<f4").tobytes()
        self._index[key] = len(self._entries)
        self._entries.append({"offset": self._size, "count": int(data.size)})
        pad = -len(raw) % ALIGN
        self._chunks.append(raw + b"\0" * pad)
        self._size += len(raw) + pad
        return self._index[key]

    @property
    def table(self) -> list[dict[str, int]]:
        """The manifest's ``constants`` list."""
        return list(self._entries)

    def meta(self, file: str) -> dict[str, Any]:
        """The manifest's ``weights`` entry."""
        return {"file": file, "bytes": self._size, "dtype": self.dtype}

    def data(self) -> bytes:
        """The contents of ``weights.bin``."""
        return b"".join(self._chunks)


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

    def add(self, text: str) -> int:
        """Return the index of a shader text, adding it when new."""
        text = compact(text)
        if text not in self._index:
            self._index[text] = len(self.texts)
            self.texts.append(text)
        return self._index[text]
