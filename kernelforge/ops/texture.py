"""Tensor <-> texture bookkeeping for GLSL kernels: one module owns every layout rule.

A tensor is viewed as a 2-D matrix ``[rows, cols]``. Its texture holds either one value per texel (R32F,
``pack=1``) or four consecutive values of a row per texel (RGBA32F, ``pack=4``; a row's last texel is
zero-padded). The texels of the matrix are laid out either row-aligned (texture row y = matrix row y, the
cheapest addressing) or wrapped into a square-ish texture (``square``), which fits tall matrices under
``MAX_TEXTURE_SIZE``. Templates address a texel through ``common/texture.glsl.j2`` with the numbers from
:meth:`TexLayout.context`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class TexLayout:
    """Where each element of a ``[rows, cols]`` matrix lives in a float texture."""

    rows: int
    cols: int
    pack: int = 1
    square: bool = False

    def __post_init__(self) -> None:
        if self.pack not in (1, 4):
            raise ValueError(f"texture pack must be 1 or 4, got {self.pack}")
        if self.rows < 1 or self.cols < 1:
            raise ValueError(f"texture layout of an empty matrix {self.rows}x{self.cols}")

    @property
    def row_texels(self) -> int:
        """Texels per matrix row."""
        return math.ceil(self.cols / self.pack)

    @property
    def texels(self) -> int:
        """Texels holding the matrix."""
        return self.rows * self.row_texels

    @property
    def width(self) -> int:
        """Texture width."""
        if not self.square:
            return self.row_texels
        return max(1, math.ceil(math.sqrt(self.texels)))

    @property
    def height(self) -> int:
        """Texture height."""
        return math.ceil(self.texels / self.width)

    def too_big(self, max_size: int) -> str | None:
        """Return why the texture exceeds ``max_size``, or None."""
        if self.width > max_size or self.height > max_size:
            return f"a {self.width}x{self.height} texture exceeds MAX_TEXTURE_SIZE {max_size}"
        return None

    def pack_array(self, matrix: np.ndarray) -> np.ndarray:
        """Return the ``(height, width, pack)`` texture data of a ``[rows, cols]`` matrix (int8/uint8/float16 kept)."""
        given = np.asarray(matrix)
        dtype = given.dtype if given.dtype in (np.int8, np.uint8, np.float16) else np.float32
        m = np.asarray(given, dtype).reshape(self.rows, self.cols)
        padded = np.zeros((self.rows, self.row_texels * self.pack), dtype)
        padded[:, : self.cols] = m
        flat = np.zeros(self.width * self.height * self.pack, dtype)
        flat[: padded.size] = padded.reshape(-1)
        return flat.reshape(self.height, self.width, self.pack)

    def unpack(self, data: np.ndarray) -> np.ndarray:
        """Return the ``[rows, cols]`` matrix stored in texture data (the inverse of :meth:`pack_array`)."""
        flat = np.asarray(data, np.float32).reshape(-1)[: self.texels * self.pack]
        return flat.reshape(self.rows, self.row_texels * self.pack)[:, : self.cols]

    def context(self) -> dict[str, Any]:
        """Return what the texture macros need to address a texel."""
        return {
            "pack": self.pack,
            "square": self.square,
            "width": self.width,
            "row_texels": self.row_texels,
            "cols": self.cols,
        }


def interleave_rows(parts: list[np.ndarray], rows: int) -> np.ndarray:
    """Reassemble rows dealt round-robin to render targets: row ``r`` is row ``r // n`` of part ``r % n``."""
    n = len(parts)
    out = np.empty((rows, parts[0].shape[1]), np.float32)
    for t, part in enumerate(parts):
        count = len(range(t, rows, n))
        out[t::n] = part[:count]
    return out


def first_too_big(layouts: Iterable[tuple[str, TexLayout]], max_size: int) -> str | None:
    """Return ``"<what>: <why>"`` for the first named layout whose texture exceeds ``max_size``, or None.

    Args:
        layouts: ``(what, layout)`` pairs, named as the error should name them (``"input"``, ``"output"``).
        max_size: The device's ``MAX_TEXTURE_SIZE``.
    """
    for what, layout in layouts:
        reason = layout.too_big(max_size)
        if reason:
            return f"{what}: {reason}"
    return None
