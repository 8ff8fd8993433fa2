"""Resize along one axis: source coordinates, neighbour windows and interpolation weights, in float64.

``onnx.reference`` resizes one axis at a time; these functions reproduce its per-axis arithmetic operation for
operation (same operand order, same float32 steps where its float32 ``roi`` scalars make them float32), so the
tables the kernels read, and the numpy reference built on them, round and tie exactly as it does:

- a source coordinate ``x`` per output index from ``coordinate_transformation_mode`` (``tf_crop_and_resize``
  also flags the outputs whose ``x`` falls outside ``[0, size_in - 1]``: they take ``extrapolation_value``);
- an ``n``-tap window of consecutive input indices around ``x`` (``n`` is 2 for nearest and linear, 4 for
  cubic, wider for antialiased downsampling), clamped into the input as edge padding would;
- the weights: linear ``(1 - r, r)``, Keys' cubic with coefficient ``a``, or, with ``antialias``, the linear or
  cubic filter stretched by ``1 / scale`` when downsampling and normalised to sum 1; ``exclude_outside`` zeroes
  the taps outside the input and renormalises.
"""

from __future__ import annotations

import math

import numpy as np

FULL_ROI = (0.0, 1.0)
"""An axis's ``(start, end)`` region of interest that crops nothing."""


def is_identity(size_in: int, size_out: int, scale: float, coordinate_mode: str, roi: tuple[float, float]) -> bool:
    """Return True for an axis ``onnx.reference`` leaves as it is (scale 1, same size, a full region of interest)."""
    full = coordinate_mode != "tf_crop_and_resize" or (math.isclose(roi[0], 0.0) and math.isclose(roi[1], 1.0))
    return math.isclose(scale, 1.0) and size_out == size_in and full


def source_coords(
    size_in: int, size_out: int, scale: float, coordinate_mode: str, roi: tuple[float, float] = FULL_ROI
) -> tuple[np.ndarray, np.ndarray | None]:
    """Return every output index's source coordinate and, for ``tf_crop_and_resize``, which are extrapolated."""
    output_width = scale * size_in
    y = np.arange(size_out, dtype=np.float64)
    extrapolated = None
    if coordinate_mode == "align_corners":
        x = np.zeros(size_out) if output_width == 1 else y * (size_in - 1) / (output_width - 1)
    elif coordinate_mode == "asymmetric":
        x = y / scale
    elif coordinate_mode == "pytorch_half_pixel":
        x = np.full(size_out, -0.5) if output_width == 1 else (y + 0.5) / scale - 0.5
    elif coordinate_mode == "half_pixel":
        x = (y + 0.5) / scale - 0.5
    elif coordinate_mode == "half_pixel_symmetric":
        offset = size_in / 2 * (1 - size_out / output_width)
        x = offset + (y + 0.5) / scale - 0.5
    else:  # tf_crop_and_resize: roi is a float32 tensor, so its difference and offset are float32 products
        start, end = np.float32(roi[0]), np.float32(roi[1])
        if output_width == 1:
            x = np.full(size_out, (end - start) * (size_in - 1) / 2, dtype=np.float64)
        else:
            x = y * (end - start) * (size_in - 1) / (output_width - 1)
        x = x + start * (size_in - 1)
        extrapolated = (x < 0) | (x > size_in - 1)
    return x, extrapolated


def window(x: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Return the ratio in ``(0, 1]`` of every coordinate and the first index of its ``n``-tap window (unclamped).

    The window holds the ``n`` indices nearest ``x``, ties to the smaller ones, so an integer ``x`` has ratio 1
    and sits at tap ``n / 2`` (``onnx.reference`` finds it on the edge-padded axis, ``x + n / 2``).
    """
    if n % 2:
        raise ValueError(f"resize: windows have an even number of taps, got {n}")
    ratio = np.where(x == np.floor(x), 1.0, x - np.floor(x))
    padded = x + n // 2
    whole = np.floor(padded)
    start = whole + np.where(padded - whole == 0, -(n // 2), -(n // 2) + 1) - n // 2
    return ratio, start.astype(np.int64)


def _cubic(ratio: np.ndarray, a: float) -> np.ndarray:
    """Keys' cubic weights of the 4 taps around a coordinate with ``ratio`` (as ``onnx.reference`` writes them)."""
    r, s = ratio, 1 - ratio
    return np.stack(
        [
            ((a * (r + 1) - 5 * a) * (r + 1) + 8 * a) * (r + 1) - 4 * a,
            ((a + 2) * r - (a + 3)) * r * r + 1,
            ((a + 2) * s - (a + 3)) * s * s + 1,
            ((a * (s + 1) - 5 * a) * (s + 1) + 8 * a) * (s + 1) - 4 * a,
        ],
        axis=-1,
    )


def _keys(t: np.ndarray, a: float) -> np.ndarray:
    """Keys' cubic kernel at distances ``t``."""
    t = np.abs(t)
    t2 = t * t
    t3 = t * t2
    near = (a + 2) * t3 - (a + 3) * t2 + 1
    far = a * t3 - 5 * a * t2 + 8 * a * t - 4 * a
    return np.where(t <= 1, near, np.where(t < 2, far, 0.0))


def _normalised(coeffs: np.ndarray) -> np.ndarray:
    """Divide each row by its sum, accumulated tap by tap (Python's ``sum``, as the reference does)."""
    total = np.zeros(coeffs.shape[0])
    for k in range(coeffs.shape[1]):
        total = total + coeffs[:, k]
    return coeffs / total[:, None]


def window_width(scale: float, mode: str, antialias: bool) -> int:
    """Return the taps of a ``linear`` or ``cubic`` window: 2 or 4.

    Antialiasing a downsampling widens it by ``1 / scale``: ``2 * ceil(1 / scale)`` (linear) or
    ``2 * ceil(2 / scale)`` (cubic) taps.
    """
    reach = 2 if mode == "cubic" else 1
    if not antialias:
        return 2 * reach
    return 2 - 2 * int(np.floor(-reach / min(scale, 1.0)) + 1)


def weights(ratio: np.ndarray, scale: float, mode: str, cubic_coeff_a: float, antialias: bool) -> np.ndarray:
    """Return ``(len(ratio), n)`` tap weights of ``linear`` or ``cubic`` interpolation (``n``: :func:`window_width`).

    With ``antialias`` the filter's support widens by ``1 / scale`` when downsampling (``scale < 1``) and the
    weights are normalised to sum 1.
    """
    if not antialias:
        return _cubic(ratio, cubic_coeff_a) if mode == "cubic" else np.stack([1 - ratio, ratio], axis=-1)
    s = min(scale, 1.0)
    first = 1 - window_width(scale, mode, antialias) // 2
    taps = np.arange(first, 2 - first, dtype=np.float64)
    if mode == "cubic":
        return _normalised(_keys(s * (taps[None, :] - ratio[:, None]), cubic_coeff_a))
    return _normalised(np.clip(1 - np.abs((taps[None, :] - ratio[:, None]) * s), 0, 1))


def axis_table(
    size_in: int,
    size_out: int,
    scale: float,
    mode: str,
    coordinate_mode: str,
    nearest_mode: str,
    roi: tuple[float, float] = FULL_ROI,
) -> np.ndarray:
    """Return ``(size_out, 3)`` float64 rows ``(i0, i1, w)``: output ``i`` is ``(1 - w) * in[i0] + w * in[i1]``.

    For ``nearest`` and ``linear`` without antialias or excluded taps; an identity axis maps ``i`` to itself.
    """
    table = np.zeros((size_out, 3))
    if is_identity(size_in, size_out, scale, coordinate_mode, roi):
        table[:, 0] = table[:, 1] = np.arange(size_out)
        return table
    x, _ = source_coords(size_in, size_out, scale, coordinate_mode, roi)
    ratio, start = window(x, 2)
    if mode == "nearest":
        whole = np.floor(ratio) == ratio
        second = {
            "round_prefer_floor": ratio > 0.5,
            "round_prefer_ceil": ratio >= 0.5,
            "floor": np.zeros(size_out, bool),
            "ceil": np.ones(size_out, bool),
        }[nearest_mode]
        table[:, 0] = table[:, 1] = np.clip(start + (whole | second), 0, size_in - 1)
    else:
        table[:, 0] = np.clip(start, 0, size_in - 1)
        table[:, 1] = np.clip(start + 1, 0, size_in - 1)
        table[:, 2] = ratio
    return table


def axis_taps(
    size_in: int,
    size_out: int,
    scale: float,
    mode: str,
    coordinate_mode: str,
    roi: tuple[float, float],
    cubic_coeff_a: float,
    exclude_outside: bool,
    antialias: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(size_out, n)`` input indices (clamped) and float64 weights: output ``i`` is ``sum w * in[idx]``.

    An identity axis is one tap pair ``(i, 1), (i, 0)``.
    """
    if is_identity(size_in, size_out, scale, coordinate_mode, roi):
        index = np.repeat(np.arange(size_out)[:, None], 2, axis=1)
        return index, np.tile([1.0, 0.0], (size_out, 1))
    x, _ = source_coords(size_in, size_out, scale, coordinate_mode, roi)
    ratio, _ = window(x, 2)
    coeffs = weights(ratio, scale, mode, cubic_coeff_a, antialias)
    n = coeffs.shape[1]
    _, start = window(x, n)
    index = start[:, None] + np.arange(n)[None, :]
    if exclude_outside:
        coeffs = np.where((index < 0) | (index >= size_in), 0.0, coeffs)
        total = coeffs.sum(axis=-1, keepdims=True)
        coeffs = coeffs / np.where(total == 0, 1.0, total)
    return np.clip(index, 0, size_in - 1), coeffs


def kept_range(extrapolated: np.ndarray | None, size_out: int) -> tuple[int, int]:
    """Return the ``[lo, hi)`` output indices that are not extrapolated (all of them when none are).

    Source coordinates are monotonic in the output index, so the extrapolated ones are a prefix and a suffix.
    """
    if extrapolated is None:
        return 0, size_out
    kept = np.flatnonzero(~extrapolated)
    if kept.size == 0:
        return 0, 0
    lo, hi = int(kept[0]), int(kept[-1]) + 1
    if hi - lo != kept.size:  # cannot happen for a monotonic coordinate map; guards the kernels' range test
        raise ValueError(f"resize: extrapolated outputs are not a prefix and suffix: {extrapolated}")
    return lo, hi
