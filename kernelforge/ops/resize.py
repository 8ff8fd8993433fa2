"""Resize (ONNX opset 11-19) of NCHW tensors over H and W: nearest, linear and cubic; spec, reference, launch.

Semantics follow ``onnx.reference`` (the authority the tests check against): the output size is
``floor(input * scale)`` with the scale rounded to float32 (ONNX ``scales`` are a float tensor), or the given
``sizes`` with ``scale = size / input``; ``keep_aspect_ratio_policy`` (``not_larger``/``not_smaller``) turns
``sizes`` into one scale for H and W, the smaller or larger of ``size / input``, and the output into
``round(scale * input)``. Source coordinates come from ``coordinate_transformation_mode`` evaluated in float64
with that scale, so ``align_corners`` and ``tf_crop_and_resize`` divide by ``scale * input - 1`` even when that
is fractional (onnxruntime uses the integer output length there and differs for such scales).
``tf_crop_and_resize`` maps the output onto the ``roi`` region of the input and writes ``extrapolation_value``
where the source coordinate falls outside the input. Nearest picks per ``nearest_mode``; linear blends the
two neighbours; cubic weighs four with Keys' kernel (``cubic_coeff_a``); ``antialias`` widens the linear or
cubic filter by ``1 / scale`` when downsampling; ``exclude_outside`` drops the taps outside the input and
renormalises. Neighbour indices are clamped into the input (:mod:`._resize_axis` has the per-axis math).

Kernels do not evaluate the coordinate modes: the host computes, per output row and column, the source
indices and weights in float64 exactly as the reference does and passes them as a small table, the kernel's
second device input. Nearest and linear: one vec4 ``(i0, i1, w, 0)`` per output coordinate, rows
``[0, H_out)`` for H, then ``[H_out, H_out + W_out)`` for W. Tap modes (cubic, antialias, linear with
``exclude_outside``): ``KH / 2`` vec4 tap pairs ``(i, w, i', w')`` per output row, then ``KW / 2`` per output
column, ``KH`` and ``KW`` the window widths of the two axes. So every mode and rounding rule is exact on every
device (float32 shader arithmetic would flip nearest ties), and one kernel per (mode, layout) serves all of
them. ``tf_crop_and_resize`` adds the ``[lo, hi)`` output rows and columns that are not extrapolated.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from kernelforge.errors import ShapeError
from kernelforge.ops._resize_axis import axis_table
from kernelforge.ops._resize_problem import (
    COORDINATE_MODES,
    CUBIC_COEFF_A,
    FULL_HW_ROI,
    MODES,
    NEAREST_MODES,
    POLICIES,
    ResizeProblem,
    f32,
)
from kernelforge.ops.spec import GlLaunch, Launch, Limits, OpSpec, Param, Params, input_shape
from kernelforge.ops.texture import TexLayout, first_too_big

__all__ = [
    "COORDINATE_MODES",
    "MODES",
    "NEAREST_MODES",
    "POLICIES",
    "SPEC",
    "ResizeProblem",
    "ResizeSpec",
    "axis_table",
    "f32",
]

GRID = 65535

DEFAULT_PARAMS: Params = {"wg_x": 16, "wg_y": 4, "opt": 1, "layout": 0}
# Tried in order when the default breaks a constraint (tiny device limits).
_FALLBACKS: tuple[Params, ...] = (
    {"wg_x": 8, "wg_y": 8, "opt": 1, "layout": 0},
    {"wg_x": 1, "wg_y": 1, "opt": 1, "layout": 0},
)
GLSL_DEFAULT_PARAMS: Params = {"layout": 0, "square": 0}
_GLSL_FALLBACKS: tuple[Params, ...] = ({"layout": 0, "square": 1}, {"layout": 1, "square": 1})

_SHAPE = re.compile(r"^(\d+)x(\d+)x(\d+)x(\d+)$")
_PAIR_F = re.compile(r"^s([0-9.e+-]+),([0-9.e+-]+)$")
_PAIR_I = re.compile(r"^o(\d+),(\d+)$")
_ROI = re.compile(r"^r([0-9.e+-]+),([0-9.e+-]+),([0-9.e+-]+),([0-9.e+-]+)$")


def _fmt(value: float) -> str:
    """Return the shortest text that reads back as the same float32 (``2``, ``0.3``)."""
    return np.format_float_positional(np.float32(value), trim="-")


def _table_rows(problem: ResizeProblem) -> int:
    """Return the coordinate table's vec4 rows (see the module docstring)."""
    ho, wo = problem.out_hw
    if not problem.taps:
        return ho + wo
    kh, kw = problem.tap_counts()
    return ho * kh // 2 + wo * kw // 2


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ShapeError(f"resize: {text!r} is not a number") from None


def _field(part: str) -> tuple[str, Any] | None:
    """Return the problem field and value one ``:``-separated part of a shape string sets, or None."""
    words: dict[str, tuple[str, Any]] = {
        **{m: ("mode", m) for m in MODES},
        **{m: ("coordinate_transformation_mode", m) for m in COORDINATE_MODES},
        **{m: ("nearest_mode", m) for m in NEAREST_MODES},
        **{m: ("keep_aspect_ratio_policy", m) for m in POLICIES},
        "exclude": ("exclude_outside", True),
        "antialias": ("antialias", True),
    }
    if part in words:
        return words[part]
    if m := _PAIR_F.match(part):
        return "scales", (f32(_float(m.group(1))), f32(_float(m.group(2))))
    if m := _PAIR_I.match(part):
        return "sizes", (int(m.group(1)), int(m.group(2)))
    if m := _ROI.match(part):
        return "roi", tuple(_float(g) for g in m.groups())
    if part[:1] in ("a", "e") and len(part) > 1:
        return ("cubic_coeff_a" if part[0] == "a" else "extrapolation_value"), _float(part[1:])
    return None


class ResizeSpec(OpSpec[ResizeProblem]):
    """The Resize op (also ONNX Upsample: nearest/linear with ``asymmetric`` coordinates, see :func:`resize`)."""

    name: ClassVar[str] = "resize"
    templates: ClassVar[dict[str, str]] = {"wgsl": "wgsl/resize.wgsl.j2", "glsl": "glsl/resize.frag.j2"}
    shape_syntax: ClassVar[str] = (
        "NxCxHxW:sSH,SW|:oHO,WO[:nearest|linear|cubic][:COORD_MODE][:NEAREST_MODE][:aA][:exclude][:antialias]"
        "[:rH0,W0,H1,W1][:eVALUE][:not_larger|not_smaller] (1x64x28x28:s2,2:linear:half_pixel, "
        "1x3x17x23:o8,40:nearest:asymmetric:floor, 1x3x8x8:s0.5,0.5:cubic:half_pixel:a-0.5:antialias)"
    )
    # the syntax uses commas inside a shape: several shapes in one --shape value are split on ";" only
    shape_separator: ClassVar[str] = ";"
    spaces: ClassVar[dict[str, tuple[Param, ...]]] = {
        "wgsl": (
            Param("wg_x", (1, 2, 4, 8, 16, 32, 64), "workgroup threads along W blocks (x channel groups in NHWC)"),
            Param("wg_y", (1, 2, 4, 8, 16), "workgroup threads along output rows"),
            Param("opt", (1, 2, 4, 8), "outputs per thread along W (strided by the thread count)"),
            Param("layout", (0, 1), "0 NCHW; 1 NHWC (vec4 over channels when C % 4 == 0), converted on the host"),
        ),
        "glsl": (
            Param("layout", (0, 1), "0 NCHW R32F [N*C*H, W]; 1 NHWC RGBA32F [N*H*W, ceil(C/4)] (4 channels a texel)"),
            Param("square", (0, 1), "textures row-aligned (0) or wrapped square-ish (1)"),
        ),
    }

    def from_node(self, shapes: Sequence[tuple[int, ...] | None], attrs: Mapping[str, Any]) -> ResizeProblem:
        """Build the problem of a node resizing x ``[n, c, h, w]``: attrs are the other fields of the problem."""
        x = input_shape(self.name, shapes, 0)
        n, c, h, w = x
        return ResizeProblem(n=n, c=c, h=h, w=w, **attrs)

    def parse_problem(self, text: str) -> ResizeProblem:
        """Parse ``NxCxHxW:sSH,SW`` or ``NxCxHxW:oHO,WO`` followed by optional fields in any order.

        ``s`` gives the H and W scales (N and C are not resized), ``o`` the output height and width. Fields: the
        mode (``nearest``, the default, ``linear`` or ``cubic``); a coordinate transformation mode (default
        ``half_pixel``); a nearest mode (default ``round_prefer_floor``); ``aA`` the cubic coefficient (default
        -0.75); ``exclude`` (exclude_outside) and ``antialias``; ``rH0,W0,H1,W1`` the ``tf_crop_and_resize``
        region (default ``r0,0,1,1``) and ``eVALUE`` its extrapolation value (default 0); ``not_larger`` or
        ``not_smaller`` (keep_aspect_ratio_policy, with ``o``). Examples: ``1x64x28x28:s2,2:linear:half_pixel``,
        ``1x3x17x23:o8,40:asymmetric:floor``, ``1x1x4x4:o3,3:linear:tf_crop_and_resize:r0.4,0.6,0.6,0.8:e10``.
        """
        parts = text.strip().lower().split(":")
        dims = _SHAPE.match(parts[0])
        if not dims or len(parts) < 2:
            raise ShapeError(f"resize shape {text!r} is not {self.shape_syntax}")
        n, c, h, w = (int(g) for g in dims.groups())
        found: dict[str, Any] = {}
        for part in parts[1:]:
            field = _field(part)
            if field is None or field[0] in found:
                raise ShapeError(f"resize shape {text!r}: bad or repeated field {part!r}")
            found[field[0]] = field[1]
        if "scales" not in found and "sizes" not in found:
            raise ShapeError(f"resize shape {text!r}: needs scales (s2,2) or output sizes (o56,56)")
        return ResizeProblem(n, c, h, w, **found)

    def problem_key(self, problem: ResizeProblem) -> str:
        """Return e.g. ``1x64x28x28:s2,2:linear:half_pixel`` or ``1x3x5x5:o7,3:nearest:asymmetric:floor``.

        Fields at their defaults beyond the mode and coordinate mode are left out.
        """
        p = problem
        if p.scales is not None:
            size = "s" + ",".join(_fmt(s) for s in p.scales)
        else:
            assert p.sizes is not None
            size = "o" + ",".join(map(str, p.sizes))
        key = f"{p.n}x{p.c}x{p.h}x{p.w}:{size}:{p.mode}:{p.coordinate_transformation_mode}"
        if p.mode == "nearest":
            key += f":{p.nearest_mode}"
        if p.cubic_coeff_a != CUBIC_COEFF_A:
            key += f":a{_fmt(p.cubic_coeff_a)}"
        key += ":exclude" * p.exclude_outside + ":antialias" * p.antialias
        if p.roi != FULL_HW_ROI:
            key += ":r" + ",".join(_fmt(r) for r in p.roi)
        if p.extrapolation_bits:
            key += f":e{p.extrapolation_value!r}"
        if p.keep_aspect_ratio_policy != "stretch":
            key += f":{p.keep_aspect_ratio_policy}"
        return key

    def shape_vector(self, problem: ResizeProblem) -> tuple[float, ...]:
        """Return (N*C, H, W, H_out, W_out)."""
        ho, wo = problem.out_hw
        return (float(problem.n * problem.c), problem.h, problem.w, ho, wo)

    def flops(self, problem: ResizeProblem) -> float:
        """Return per output 2 per (row tap, column tap) in tap modes, 6 for linear (three lerps), 1 for nearest.

        Nearest is a copy: GFLOP/s reads as Gelem/s.
        """
        ho, wo = problem.out_hw
        if problem.taps:
            kh, kw = problem.tap_counts()
            per = 2.0 * kh * kw
        else:
            per = 6.0 if problem.mode == "linear" else 1.0
        return per * problem.n * problem.c * ho * wo

    def default_params(self, problem: ResizeProblem, limits: Limits, language: str) -> Params:
        """Return the language's default, or the first fallback that fits the problem and device."""
        candidates = (DEFAULT_PARAMS, *_FALLBACKS) if language == "wgsl" else (GLSL_DEFAULT_PARAMS, *_GLSL_FALLBACKS)
        return self.first_fitting(problem, candidates, limits, language)

    def constraints(self, problem: ResizeProblem, params: Params, limits: Limits, language: str) -> str | None:
        """Return why ``params`` cannot run ``problem`` on a device with ``limits``, or None."""
        if language == "glsl":
            launch = self.gl_launch(problem, params)
            named = [("input", launch.inputs[0]), ("table", launch.inputs[1]), ("output", launch.targets[0])]
            return first_too_big(named, limits.max_texture_size)
        p = params
        if p["wg_x"] > limits.max_wg_x or p["wg_y"] > limits.max_wg_y:
            return f"workgroup {p['wg_x']}x{p['wg_y']} exceeds the device's per-axis limits"
        if p["wg_x"] * p["wg_y"] > limits.max_invocations:
            return f"{p['wg_x'] * p['wg_y']} invocations per workgroup > device limit {limits.max_invocations}"
        groups = self.launch(problem, p).workgroups
        if max(groups) > limits.max_workgroups_per_dim:
            return f"dispatch {groups} exceeds {limits.max_workgroups_per_dim} workgroups per dimension"
        ho, wo = problem.out_hw
        largest = 4 * problem.n * problem.c * max(problem.h * problem.w, ho * wo)
        if largest > limits.max_storage_binding:
            return f"a {largest}-byte buffer exceeds the device's storage binding limit {limits.max_storage_binding}"
        return None

    def make_inputs(self, problem: ResizeProblem, rng: np.random.Generator) -> list[np.ndarray]:
        """Return X with values in [-1, 1]."""
        return [rng.uniform(-1, 1, (problem.n, problem.c, problem.h, problem.w)).astype(np.float32)]

    def reference(self, problem: ResizeProblem, inputs: Sequence[np.ndarray]) -> np.ndarray:
        """Resize H, then W, in float64 through the coordinate tables (separable, as ``onnx.reference``).

        ``tf_crop_and_resize`` outputs extrapolated along either axis are ``extrapolation_value`` as it is, as
        onnxruntime writes them (``onnx.reference`` blends the value of rows extrapolated along H through the W
        weights: the same value up to rounding when finite, NaN or a saturated value when not).
        """
        x: np.ndarray = np.asarray(inputs[0], np.float64).reshape(problem.n, problem.c, problem.h, problem.w)
        if problem.taps:
            for axis, (index, weight) in zip((2, 3), problem.tap_tables(), strict=True):
                shape = (-1, 1) if axis == 2 else (-1,)
                taps = [np.take(x, index[:, k], axis=axis) * weight[:, k].reshape(shape) for k in range(index.shape[1])]
                x = np.sum(taps, axis=0)
        else:
            for axis, rows in zip((2, 3), problem.tables(), strict=True):
                i0, i1, w = rows[:, 0].astype(np.intp), rows[:, 1].astype(np.intp), rows[:, 2]
                if problem.mode == "nearest":  # a pick, not a blend: a NaN or inf neighbour must not leak as 0 * inf
                    x = np.take(x, i0, axis=axis)  # nearest tables hold the pick in both columns
                else:
                    w = w.reshape((-1, 1) if axis == 2 else (-1,))
                    x = np.take(x, i0, axis=axis) * (1 - w) + np.take(x, i1, axis=axis) * w
        if problem.crop:
            ho, wo = problem.out_hw
            (ylo, yhi), (xlo, xhi) = problem.kept()
            rows_out, cols_out = np.arange(ho), np.arange(wo)
            outside = ((rows_out < ylo) | (rows_out >= yhi))[:, None] | ((cols_out < xlo) | (cols_out >= xhi))[None, :]
            x = np.where(outside, problem.extrapolation_value, x)
        return x.astype(np.float32)

    def output_shape(self, problem: ResizeProblem) -> tuple[int, ...]:
        """Return (N, C, H_out, W_out)."""
        return (problem.n, problem.c, *problem.out_hw)

    def device_output_shape(self, problem: ResizeProblem, params: Params) -> tuple[int, ...]:
        """Return the output as written: NCHW, or NHWC with ``layout=1``."""
        ho, wo = problem.out_hw
        return (problem.n, ho, wo, problem.c) if params["layout"] else (problem.n, problem.c, ho, wo)

    def input_layouts(self, problem: ResizeProblem, params: Params) -> tuple[tuple[int, ...] | None, ...]:
        """Return NHWC for X of ``layout=1`` kernels."""
        return ((0, 2, 3, 1) if params["layout"] else None,)

    def output_layout(self, problem: ResizeProblem, params: Params) -> tuple[int, ...] | None:
        """Return NHWC for ``layout=1`` kernels."""
        return (0, 2, 3, 1) if params["layout"] else None

    def from_device(self, problem: ResizeProblem, params: Params, data: np.ndarray) -> np.ndarray:
        """Return the NCHW output from what the kernel wrote (NHWC with ``layout=1``)."""
        out = np.asarray(data).reshape(self.device_output_shape(problem, params))
        return np.ascontiguousarray(out.transpose(0, 3, 1, 2)) if params["layout"] else out

    def template_context(self, problem: ResizeProblem, params: Params, language: str) -> dict[str, Any]:
        """Return validated params plus the sizes, the vector width and (GLSL) the texture layouts."""
        p = params
        ho, wo = problem.out_hw
        (ylo, yhi), (xlo, xhi) = problem.kept() if problem.crop else ((0, ho), (0, wo))
        kh, kw = problem.tap_counts() if problem.taps else (2, 2)
        context: dict[str, Any] = {
            **p,
            "linear": problem.mode == "linear" and not problem.taps,
            "taps": problem.taps,
            "kh2": kh // 2,
            "kw2": kw // 2,
            "crop": problem.crop,
            "ylo": ylo,
            "yhi": yhi,
            "xlo": xlo,
            "xhi": xhi,
            "extrap_bits": problem.extrapolation_bits,
            "c": problem.c,
            "hi": problem.h,
            "wi": problem.w,
            "ho": ho,
            "wo": wo,
        }
        if language == "glsl":
            launch = self.gl_launch(problem, p)
            context.update(
                rows=launch.rows,
                x=launch.inputs[0].context(),
                t=launch.inputs[1].context(),
                out=launch.targets[0].context(),
            )
        else:
            vw = 4 if p["layout"] and problem.c % 4 == 0 else 1
            context.update(vw=vw, cv=problem.c // vw if p["layout"] else 1, wblocks=math.ceil(wo / p["opt"]))
        return context

    def _extents(self, problem: ResizeProblem, params: Params) -> tuple[int, int]:
        """Return the thread grid: x over W blocks (x channel vectors in NHWC), y over output rows."""
        ho, wo = problem.out_hw
        wblocks = math.ceil(wo / params["opt"])
        if params["layout"]:
            cv = problem.c // 4 if problem.c % 4 == 0 else problem.c
            return wblocks * cv, problem.n * ho
        return wblocks, problem.n * problem.c * ho

    def launch(self, problem: ResizeProblem, params: Params) -> Launch:
        """Return the 2-D grid (y spills into z past 65535 workgroups) and uniforms.

        Uniforms: the extents, y groups per z slice and the float32 bits of ``extrapolation_value`` (a uniform,
        so inf and nan need no literal; 0 outside ``tf_crop_and_resize``).
        """
        xt, yt = self._extents(problem, params)
        gy = math.ceil(yt / params["wg_y"])
        gz = math.ceil(gy / GRID)
        gy = math.ceil(gy / gz)
        return Launch((math.ceil(xt / params["wg_x"]), gy, gz), (xt, yt, gy, problem.extrapolation_bits))

    def gl_launch(self, problem: ResizeProblem, params: Params) -> GlLaunch:
        """Return X, the coordinate table and the output texture.

        NCHW: X ``[N*C*H, W]`` and the output ``[N*C*H_out, W_out]``, one value a texel; NHWC: X ``[N*H*W, C]``
        and the output ``[N*H_out*W_out, C]``, four channels a texel. The table is ``[rows, 4]``, its rows as in
        the module docstring.
        """
        square = bool(params["square"])
        n, c, h, w = problem.n, problem.c, problem.h, problem.w
        ho, wo = problem.out_hw
        table = TexLayout(_table_rows(problem), 4, 4, square)
        if params["layout"]:
            x, out = TexLayout(n * h * w, c, 4, square), TexLayout(n * ho * wo, c, 4, square)
        else:
            x, out = TexLayout(n * c * h, w, 1, square), TexLayout(n * c * ho, wo, 1, square)
        return GlLaunch((x, table), ("X", "T"), (out,), out.rows, out.cols)

    def device_inputs(self, problem: ResizeProblem, params: Params, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Return X in the kernel's layout (NHWC transposed on the host for ``layout=1``) and the table."""
        x = np.asarray(inputs[0], np.float32).reshape(problem.n, problem.c, problem.h, problem.w)
        if params["layout"]:
            x = x.transpose(0, 2, 3, 1)
        return [np.ascontiguousarray(x), problem.table()]


SPEC = ResizeSpec()
