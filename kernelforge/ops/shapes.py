"""Shape helpers the tensor ops share: dims strings, rank/axis checks and 1-D dispatch grids."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from kernelforge.errors import ShapeError

MAX_RANK = 8
# WebGPU's default maxComputeWorkgroupsPerDimension: 1-D kernels spill their workgroups into y past it.
GRID_X = 65535

_DIMS = re.compile(r"^\d+(?:x\d+)*$")


def parse_dims(op: str, text: str) -> tuple[int, ...]:
    """Parse ``AxBxC`` into a tuple of ints (each >= 1 is checked by the problem).

    Raises:
        ShapeError: Naming ``op`` when ``text`` is not dims joined by ``x``.
    """
    if not _DIMS.match(text):
        raise ShapeError(f"{op}: dims {text!r} are not integers joined by 'x' (like 8x1000)")
    return tuple(int(d) for d in text.split("x"))


def check_dims(op: str, field: str, dims: Any, max_rank: int = MAX_RANK) -> tuple[int, ...]:
    """Return ``dims`` as a tuple of plain ints after checking rank and sizes.

    Raises:
        ShapeError: Naming the op and field.
    """
    if isinstance(dims, (str, bytes)) or not isinstance(dims, Sequence):
        raise ShapeError(f"{op}: {field} must be a sequence of integers, got {dims!r}")
    out = []
    for d in dims:
        if isinstance(d, bool) or not isinstance(d, (int, np.integer)) or int(d) < 1:
            raise ShapeError(f"{op}: {field} sizes must be integers >= 1, got {tuple(dims)!r}")
        out.append(int(d))
    if not 1 <= len(out) <= max_rank:
        raise ShapeError(f"{op}: {field} rank must be 1..{max_rank}, got {len(out)}")
    return tuple(out)


def check_axis(op: str, axis: Any, rank: int) -> int:
    """Return ``axis`` normalised to ``0 .. rank-1`` (ONNX allows ``-rank .. rank-1``).

    Raises:
        ShapeError: Naming the op when the axis is not an integer in range.
    """
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)) or not -rank <= int(axis) < rank:
        raise ShapeError(f"{op}: axis must be an integer in [{-rank}, {rank - 1}], got {axis!r}")
    return int(axis) % rank


def linear_grid(groups: int) -> tuple[int, int, int]:
    """Return a dispatch of at least ``groups`` workgroups, spilling into y past :data:`GRID_X`.

    Kernels recover the linear workgroup index as ``wid.y * num_workgroups.x + wid.x`` and skip indices past
    their work.
    """
    gx = max(1, min(groups, GRID_X))
    return (gx, max(1, math.ceil(groups / gx)), 1)
