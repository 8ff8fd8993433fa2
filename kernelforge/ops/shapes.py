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


class AxisRows:
    """The rows of a problem along one axis of its ``shape``: ``outer`` x ``length`` x ``inner`` elements.

    A mixin for frozen problem dataclasses with ``shape`` and a normalised ``axis`` (softmax, cumsum,
    ArgMax/ArgMin): a row is the ``length`` elements ``inner`` apart that one output or one scan reads.
    """

    shape: tuple[int, ...]
    axis: int

    @property
    def outer(self) -> int:
        """Product of the dims before the axis."""
        return math.prod(self.shape[: self.axis])

    @property
    def length(self) -> int:
        """The size of the axis (a row's length)."""
        return self.shape[self.axis]

    @property
    def inner(self) -> int:
        """Product of the dims after the axis: the stride between a row's elements."""
        return math.prod(self.shape[self.axis + 1 :])

    @property
    def rows(self) -> int:
        """Number of independent rows (``outer * inner``)."""
        return self.outer * self.inner

    @property
    def size(self) -> int:
        """Number of elements."""
        return math.prod(self.shape)


def linear_grid(groups: int) -> tuple[int, int, int]:
    """Return a dispatch of at least ``groups`` workgroups, spilling into y past :data:`GRID_X`.

    Kernels recover the linear workgroup index as ``wid.y * num_workgroups.x + wid.x`` and skip indices past
    their work.
    """
    gx = max(1, min(groups, GRID_X))
    return (gx, max(1, math.ceil(groups / gx)), 1)


def next_pow2(n: int) -> int:
    """Return the smallest power of two >= ``n`` (1 for ``n <= 1``)."""
    return 1 << max(0, (n - 1).bit_length())


def row_reduction_problem(
    threads: int, rows_per_wg: int, length: int, rows: int, groups: tuple[int, int, int], size: int, limits: Any
) -> str | None:
    """Return why a WGSL row reduction cannot run, or None (softmax, layernorm: rows of ``length`` elements).

    A workgroup holds ``threads`` x ``rows_per_wg`` invocations, ``threads`` per row reducing through workgroup
    memory (8 bytes each); ``groups`` is the dispatch, ``size`` the tensor's element count.
    """
    t, r = threads, rows_per_wg
    if t > limits.max_wg_x or r > limits.max_wg_y:
        return f"workgroup {t}x{r} exceeds the device's per-axis limits"
    if t * r > limits.max_invocations:
        return f"{t * r} invocations per workgroup > device limit {limits.max_invocations}"
    if t > next_pow2(length):
        return f"threads={t} per row leaves threads idle on rows of {length}"
    if r > next_pow2(rows):
        return f"rows_per_wg={r} leaves rows idle with {rows} rows"
    if t > 1 and 8 * t * r > limits.max_workgroup_storage:
        return f"{8 * t * r} bytes of workgroup memory > device limit {limits.max_workgroup_storage}"
    if max(groups) > limits.max_workgroups_per_dim:
        return f"dispatch {groups} exceeds {limits.max_workgroups_per_dim} workgroups per dimension"
    if 4 * size > limits.max_storage_binding:
        return f"a {4 * size}-byte buffer exceeds the storage binding limit {limits.max_storage_binding}"
    return None
