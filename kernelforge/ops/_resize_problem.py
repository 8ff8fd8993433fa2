"""The Resize problem: sizes, modes and attributes of one call, and the coordinate tables its kernels read.

See :mod:`kernelforge.ops.resize` for the semantics and the table layouts, :mod:`._resize_axis` for the
per-axis math.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from kernelforge.errors import ShapeError
from kernelforge.ops._resize_axis import (
    axis_table,
    axis_taps,
    is_identity,
    kept_range,
    source_coords,
    window_width,
)

MODES = ("nearest", "linear", "cubic")
COORDINATE_MODES = (
    "half_pixel",
    "pytorch_half_pixel",
    "align_corners",
    "asymmetric",
    "half_pixel_symmetric",
    "tf_crop_and_resize",
)
NEAREST_MODES = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")
POLICIES = ("stretch", "not_larger", "not_smaller")
CUBIC_COEFF_A = -0.75
FULL_HW_ROI = (0.0, 0.0, 1.0, 1.0)
# Indices travel as float32 in the table: exact below 2**24.
MAX_DIM = 1 << 24


def f32(value: float) -> float:
    """Round a value to float32, as ONNX holds ``scales``, ``roi`` and float attributes."""
    return float(np.float32(value))


def _number(value: object) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float))


@dataclass(frozen=True)
class ResizeProblem:
    """One Resize call on an ``(n, c, h, w)`` tensor, by ``scales`` or ``sizes`` (H, W; exactly one)."""

    n: int
    c: int
    h: int
    w: int
    scales: tuple[float, float] | None = None
    """H and W scales, float32-rounded values (ONNX's ``scales`` are float32)."""
    sizes: tuple[int, int] | None = None
    mode: str = "nearest"
    coordinate_transformation_mode: str = "half_pixel"
    nearest_mode: str = "round_prefer_floor"
    cubic_coeff_a: float = CUBIC_COEFF_A
    """Keys' cubic coefficient (cubic mode only), float32-rounded."""
    exclude_outside: bool = False
    """Drop taps outside the input and renormalise the rest (linear and cubic)."""
    antialias: bool = False
    """Widen the linear or cubic filter by ``1 / scale`` when downsampling."""
    roi: tuple[float, float, float, float] = FULL_HW_ROI
    """``tf_crop_and_resize``'s region ``(start_h, start_w, end_h, end_w)`` in normalised input coordinates."""
    extrapolation_value: float = 0.0
    """``tf_crop_and_resize``'s value where the source coordinate is outside the input, float32-rounded."""
    keep_aspect_ratio_policy: str = "stretch"
    """With ``sizes``: ``not_larger``/``not_smaller`` resize H and W by one scale (see :attr:`scale_factors`)."""

    def __post_init__(self) -> None:
        for name in ("n", "c", "h", "w"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value < MAX_DIM:
                raise ShapeError(f"resize: {name} must be an integer in [1, {MAX_DIM}), got {value!r}")
        if (self.scales is None) == (self.sizes is None):
            raise ShapeError("resize: give exactly one of scales and sizes")
        if self.scales is not None:
            if not isinstance(self.scales, tuple) or len(self.scales) != 2:
                raise ShapeError(f"resize: scales must be a tuple (scale_h, scale_w), got {self.scales!r}")
            if any(not _number(s) or not (math.isfinite(s) and s > 0) for s in self.scales):
                raise ShapeError(f"resize: scales must be finite numbers > 0, got {self.scales!r}")
            # ONNX scales are a float32 tensor: the rounded value decides output sizes and coordinates
            object.__setattr__(self, "scales", (f32(self.scales[0]), f32(self.scales[1])))
        if self.sizes is not None:
            if not isinstance(self.sizes, tuple) or len(self.sizes) != 2:
                raise ShapeError(f"resize: sizes must be a tuple (h_out, w_out), got {self.sizes!r}")
            if any(isinstance(s, bool) or not isinstance(s, int) or not 1 <= s < MAX_DIM for s in self.sizes):
                raise ShapeError(f"resize: sizes must be integers in [1, {MAX_DIM}), got {self.sizes!r}")
        self._check_modes()
        self._check_attributes()
        ho, wo = self.out_hw
        if not (1 <= ho < MAX_DIM and 1 <= wo < MAX_DIM):
            raise ShapeError(f"resize: scales {self.scale_factors} give an empty or too large output {ho}x{wo}")

    def _check_modes(self) -> None:
        if self.mode not in MODES:
            raise ShapeError(f"resize: mode must be one of {MODES}, got {self.mode!r}")
        if self.coordinate_transformation_mode not in COORDINATE_MODES:
            raise ShapeError(
                f"resize: coordinate_transformation_mode must be one of {COORDINATE_MODES}, "
                f"got {self.coordinate_transformation_mode!r}"
            )
        if self.nearest_mode not in NEAREST_MODES:
            raise ShapeError(f"resize: nearest_mode must be one of {NEAREST_MODES}, got {self.nearest_mode!r}")
        if self.keep_aspect_ratio_policy not in POLICIES:
            raise ShapeError(
                f"resize: keep_aspect_ratio_policy must be one of {POLICIES}, got {self.keep_aspect_ratio_policy!r}"
            )
        if self.keep_aspect_ratio_policy != "stretch" and self.sizes is None:
            raise ShapeError("resize: keep_aspect_ratio_policy applies to sizes, not scales")

    def _check_attributes(self) -> None:
        for name in ("exclude_outside", "antialias"):
            value = getattr(self, name)
            if value not in (0, 1) or not isinstance(value, (bool, int)):
                raise ShapeError(f"resize: {name} must be a bool (or 0/1), got {value!r}")
            object.__setattr__(self, name, bool(value))
        if self.mode == "nearest" and (self.antialias or self.exclude_outside):
            raise ShapeError("resize: antialias and exclude_outside apply to linear and cubic modes, not nearest")
        if not _number(self.cubic_coeff_a) or not math.isfinite(self.cubic_coeff_a):
            raise ShapeError(f"resize: cubic_coeff_a must be a finite number, got {self.cubic_coeff_a!r}")
        object.__setattr__(self, "cubic_coeff_a", f32(self.cubic_coeff_a))
        if self.mode != "cubic" and self.cubic_coeff_a != CUBIC_COEFF_A:
            raise ShapeError(f"resize: cubic_coeff_a applies to cubic mode, not {self.mode}")
        if not isinstance(self.roi, tuple) or len(self.roi) != 4 or not all(map(_number, self.roi)):
            raise ShapeError(f"resize: roi must be a tuple (start_h, start_w, end_h, end_w), got {self.roi!r}")
        if not all(math.isfinite(r) for r in self.roi):
            raise ShapeError(f"resize: roi must be finite, got {self.roi!r}")
        object.__setattr__(self, "roi", tuple(f32(r) for r in self.roi))
        if not _number(self.extrapolation_value):
            raise ShapeError(f"resize: extrapolation_value must be a number, got {self.extrapolation_value!r}")
        object.__setattr__(self, "extrapolation_value", float(np.float32(self.extrapolation_value)))
        if not self.crop and (self.roi != FULL_HW_ROI or self.extrapolation_bits):
            raise ShapeError("resize: roi and extrapolation_value apply to tf_crop_and_resize only")

    @property
    def crop(self) -> bool:
        """True for ``tf_crop_and_resize`` (extrapolated outputs take ``extrapolation_value``)."""
        return self.coordinate_transformation_mode == "tf_crop_and_resize"

    @property
    def taps(self) -> bool:
        """True when the kernel sums tap tables (cubic, antialias, linear with ``exclude_outside``)."""
        return self.mode == "cubic" or self.antialias or self.exclude_outside

    @property
    def extrapolation_bits(self) -> int:
        """Return the float32 bit pattern of ``extrapolation_value`` (exact for -0.0, inf and nan)."""
        return int(np.array(self.extrapolation_value, np.float32).view(np.uint32))

    @property
    def scale_factors(self) -> tuple[float, float]:
        """Return the H and W scales the coordinate modes use.

        ``size / input`` when sizes are given; under ``keep_aspect_ratio_policy`` the smaller (``not_larger``)
        or larger (``not_smaller``) of the two, for both axes.
        """
        if self.scales is not None:
            return self.scales
        assert self.sizes is not None
        ratios = (self.sizes[0] / self.h, self.sizes[1] / self.w)
        if self.keep_aspect_ratio_policy == "stretch":
            return ratios
        scale = min(ratios) if self.keep_aspect_ratio_policy == "not_larger" else max(ratios)
        return (scale, scale)

    @property
    def out_hw(self) -> tuple[int, int]:
        """Return the output height and width."""
        if self.scales is not None:
            return (math.floor(self.scales[0] * self.h), math.floor(self.scales[1] * self.w))
        assert self.sizes is not None
        if self.keep_aspect_ratio_policy == "stretch":
            return self.sizes
        scale = self.scale_factors[0]
        return (int(scale * self.h + 0.5), int(scale * self.w + 0.5))  # round half up, as ONNX defines

    def _axes(self) -> tuple[tuple[int, int, float, tuple[float, float]], ...]:
        """Return per axis (H, W): input size, output size, scale and region of interest."""
        ho, wo = self.out_hw
        sh, sw = self.scale_factors
        r = self.roi
        return ((self.h, ho, sh, (r[0], r[2])), (self.w, wo, sw, (r[1], r[3])))

    def tables(self) -> tuple[np.ndarray, np.ndarray]:
        """Return the float64 ``axis_table`` of H and of W (nearest and linear)."""
        mode = (self.mode, self.coordinate_transformation_mode, self.nearest_mode)
        th, tw = (axis_table(size, out, scale, *mode, roi) for size, out, scale, roi in self._axes())
        return th, tw

    def tap_tables(self) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
        """Return the ``(indices, weights)`` of ``axis_taps`` for H and for W (tap modes)."""
        attrs = (self.cubic_coeff_a, self.exclude_outside, self.antialias)
        coord = self.coordinate_transformation_mode
        th, tw = (axis_taps(size, out, scale, self.mode, coord, roi, *attrs) for size, out, scale, roi in self._axes())
        return th, tw

    def extrapolated(self) -> tuple[np.ndarray | None, np.ndarray | None]:
        """Return, per axis, which outputs ``tf_crop_and_resize`` extrapolates (None: none of them)."""
        coord = self.coordinate_transformation_mode
        masks = [
            None if is_identity(size, out, scale, coord, roi) else source_coords(size, out, scale, coord, roi)[1]
            for size, out, scale, roi in self._axes()
        ]
        return masks[0], masks[1]

    def kept(self) -> tuple[tuple[int, int], tuple[int, int]]:
        """Return the ``[lo, hi)`` output rows and columns that are not extrapolated."""
        mh, mw = self.extrapolated()
        ho, wo = self.out_hw
        return kept_range(mh, ho), kept_range(mw, wo)

    def tap_counts(self) -> tuple[int, int]:
        """Return the window widths of H and W in tap modes (2 for an axis the reference leaves as it is)."""
        coord = self.coordinate_transformation_mode
        widths = [
            2 if is_identity(size, out, scale, coord, roi) else window_width(scale, self.mode, self.antialias)
            for size, out, scale, roi in self._axes()
        ]
        return widths[0], widths[1]

    def table(self) -> np.ndarray:
        """Return the float32 coordinate table the kernels read (see the layouts in :mod:`.resize`)."""
        if not self.taps:
            th, tw = self.tables()
            out = np.zeros((len(th) + len(tw), 4), np.float32)
            out[:, :3] = np.concatenate([th, tw])
            return out
        rows = []
        for index, weight in self.tap_tables():
            pairs = np.stack([index, weight], axis=-1)  # (out, n, 2): tap k's (index, weight)
            rows.append(pairs.reshape(len(index), -1, 4).reshape(-1, 4))  # n / 2 vec4 pairs per output
        return np.concatenate(rows).astype(np.float32)
