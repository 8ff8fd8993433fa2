"""Resize (ONNX opset 13-19) of NCHW tensors over H and W: nearest and linear modes; spec, reference, launch.

Semantics follow ``onnx.reference`` (the authority the tests check against): the output size is
``floor(input * scale)`` with the scale rounded to float32 (ONNX ``scales`` are a float tensor), or the given
``sizes`` with ``scale = size / input``; source coordinates come from ``coordinate_transformation_mode``
evaluated in float64 with that scale, so ``align_corners`` divides by ``scale * input - 1`` even when that is
fractional (onnxruntime uses the integer output length there and differs for such scales). Nearest picks
per ``nearest_mode``; linear blends the two neighbours; neighbour indices are clamped into the input.

Kernels do not evaluate the coordinate modes: the host computes, per output row and column, the two source
indices and the weight in float64 exactly as the reference does and passes them as a small table (one
vec4 ``(i0, i1, w, 0)`` per output coordinate, rows ``[0, H_out)`` for H, then ``[H_out, H_out + W_out)``
for W). So every mode and rounding rule is exact on every device (float32 shader arithmetic would flip
nearest ties), and one kernel per (mode, layout) serves all of them. The table is the kernel's second
device input.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from kernelforge.errors import ShapeError
from kernelforge.ops.spec import GlLaunch, Launch, Limits, OpSpec, Param, Params, input_shape
from kernelforge.ops.texture import TexLayout, first_too_big

MODES = ("nearest", "linear")
COORDINATE_MODES = ("half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric", "half_pixel_symmetric")
NEAREST_MODES = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")
# Indices travel as float32 in the table: exact below 2**24.
MAX_DIM = 1 << 24
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


def f32(value: float) -> float:
    """Round a scale to float32, as an ONNX ``scales`` tensor holds it."""
    return float(np.float32(value))


def _fmt(value: float) -> str:
    """Return the shortest text that reads back as the same float32 (``2``, ``0.3``)."""
    return np.format_float_positional(np.float32(value), trim="-")


def axis_table(
    size_in: int, size_out: int, scale: float, mode: str, coordinate_mode: str, nearest_mode: str
) -> np.ndarray:
    """Return ``(size_out, 3)`` float64 rows ``(i0, i1, w)``: output ``i`` is ``(1 - w) * in[i0] + w * in[i1]``.

    Mirrors ``onnx.reference``'s ``_interpolate_1d_along_axis`` operation for operation (float64), including
    its skip of axes whose scale is 1 and size unchanged.
    """
    table = np.zeros((size_out, 3))
    if math.isclose(scale, 1.0) and size_out == size_in:
        table[:, 0] = table[:, 1] = np.arange(size_out)
        return table
    output_width = scale * size_in
    y = np.arange(size_out, dtype=np.float64)
    if coordinate_mode == "align_corners":
        x = np.zeros(size_out) if output_width == 1 else y * (size_in - 1) / (output_width - 1)
    elif coordinate_mode == "asymmetric":
        x = y / scale
    elif coordinate_mode == "pytorch_half_pixel":
        x = np.full(size_out, -0.5) if output_width == 1 else (y + 0.5) / scale - 0.5
    elif coordinate_mode == "half_pixel":
        x = (y + 0.5) / scale - 0.5
    else:  # half_pixel_symmetric
        offset = size_in / 2 * (1 - size_out / output_width)
        x = offset + (y + 0.5) / scale - 0.5
    x_int = np.floor(x)
    ratio = np.where(x == x_int, 1.0, x - x_int)
    # the reference's 2-tap window: indices floor(x) - (1 if x is an integer) and the next one
    padded = x + 1
    start = np.floor(padded) + np.where(padded - np.floor(padded) == 0, -1, 0) - 1
    if mode == "nearest":
        whole = np.floor(ratio) == ratio
        second = {
            "round_prefer_floor": ratio > 0.5,
            "round_prefer_ceil": ratio >= 0.5,
            "floor": np.zeros(size_out, bool),
            "ceil": np.ones(size_out, bool),
        }[nearest_mode]
        pick = np.clip(start + (whole | second), 0, size_in - 1)
        table[:, 0] = table[:, 1] = pick
    else:
        table[:, 0] = np.clip(start, 0, size_in - 1)
        table[:, 1] = np.clip(start + 1, 0, size_in - 1)
        table[:, 2] = ratio
    return table


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
            for s in self.scales:
                if isinstance(s, bool) or not isinstance(s, (int, float)) or not (math.isfinite(s) and s > 0):
                    raise ShapeError(f"resize: scales must be finite numbers > 0, got {self.scales!r}")
            # ONNX scales are a float32 tensor: the rounded value decides output sizes and coordinates
            object.__setattr__(self, "scales", (f32(self.scales[0]), f32(self.scales[1])))
        if self.sizes is not None:
            if not isinstance(self.sizes, tuple) or len(self.sizes) != 2:
                raise ShapeError(f"resize: sizes must be a tuple (h_out, w_out), got {self.sizes!r}")
            if any(isinstance(s, bool) or not isinstance(s, int) or not 1 <= s < MAX_DIM for s in self.sizes):
                raise ShapeError(f"resize: sizes must be integers in [1, {MAX_DIM}), got {self.sizes!r}")
        if self.mode not in MODES:
            raise ShapeError(f"resize: mode must be one of {MODES} (cubic is not supported), got {self.mode!r}")
        if self.coordinate_transformation_mode not in COORDINATE_MODES:
            raise ShapeError(
                f"resize: coordinate_transformation_mode must be one of {COORDINATE_MODES} "
                f"(tf_crop_and_resize is not supported), got {self.coordinate_transformation_mode!r}"
            )
        if self.nearest_mode not in NEAREST_MODES:
            raise ShapeError(f"resize: nearest_mode must be one of {NEAREST_MODES}, got {self.nearest_mode!r}")
        ho, wo = self.out_hw
        if not (1 <= ho < MAX_DIM and 1 <= wo < MAX_DIM):
            raise ShapeError(f"resize: scales {self.scales} give an empty or too large output {ho}x{wo}")

    @property
    def scale_factors(self) -> tuple[float, float]:
        """Return the H and W scales the coordinate modes use (``size / input`` when sizes are given)."""
        if self.scales is not None:
            return self.scales
        assert self.sizes is not None
        return (self.sizes[0] / self.h, self.sizes[1] / self.w)

    @property
    def out_hw(self) -> tuple[int, int]:
        """Return the output height and width."""
        if self.sizes is not None:
            return self.sizes
        assert self.scales is not None
        return (math.floor(self.scales[0] * self.h), math.floor(self.scales[1] * self.w))

    def tables(self) -> tuple[np.ndarray, np.ndarray]:
        """Return the float64 :func:`axis_table` of H and of W."""
        ho, wo = self.out_hw
        sh, sw = self.scale_factors
        args = (self.mode, self.coordinate_transformation_mode, self.nearest_mode)
        return axis_table(self.h, ho, sh, *args), axis_table(self.w, wo, sw, *args)

    def table(self) -> np.ndarray:
        """Return the ``(H_out + W_out, 4)`` float32 coordinate table the kernels read (see the module doc)."""
        th, tw = self.tables()
        out = np.zeros((len(th) + len(tw), 4), np.float32)
        out[:, :3] = np.concatenate([th, tw])
        return out


class ResizeSpec(OpSpec[ResizeProblem]):
    """The Resize op (also ONNX Upsample: nearest/linear with ``asymmetric`` coordinates, see :func:`resize`)."""

    name: ClassVar[str] = "resize"
    templates: ClassVar[dict[str, str]] = {"wgsl": "wgsl/resize.wgsl.j2", "glsl": "glsl/resize.frag.j2"}
    shape_syntax: ClassVar[str] = (
        "NxCxHxW:sSH,SW|:oHO,WO[:nearest|linear][:COORD_MODE][:NEAREST_MODE] "
        "(1x64x28x28:s2,2:linear:half_pixel, 1x3x17x23:o8,40:nearest:asymmetric:floor)"
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
        """Parse ``NxCxHxW:sSH,SW`` or ``NxCxHxW:oHO,WO`` with optional ``:MODE``, ``:COORD_MODE``, ``:NEAREST_MODE``.

        ``s`` gives the H and W scales (N and C are not resized), ``o`` the output height and width. The
        mode words may come in any order: ``nearest`` (default) or ``linear``; a coordinate transformation
        mode (default ``half_pixel``); a nearest mode (default ``round_prefer_floor``). Examples:
        ``1x64x28x28:s2,2:linear:half_pixel``, ``1x3x17x23:o8,40:asymmetric:floor``.
        """
        parts = text.strip().lower().split(":")
        dims = _SHAPE.match(parts[0])
        if not dims or len(parts) < 2:
            raise ShapeError(f"resize shape {text!r} is not {self.shape_syntax}")
        n, c, h, w = (int(g) for g in dims.groups())
        found: dict[str, Any] = {}
        for part in parts[1:]:
            scales, sizes = _PAIR_F.match(part), _PAIR_I.match(part)
            key = (
                "size"
                if scales or sizes
                else "mode"
                if part in MODES
                else "coord"
                if part in COORDINATE_MODES
                else "nearest"
                if part in NEAREST_MODES
                else None
            )
            if key is None or key in found:
                raise ShapeError(f"resize shape {text!r}: bad or repeated field {part!r}")
            if scales:
                try:
                    found[key] = ("s", (f32(float(scales.group(1))), f32(float(scales.group(2)))))
                except ValueError:
                    raise ShapeError(f"resize shape {text!r}: scales {part!r} are not numbers") from None
            else:
                found[key] = ("o", (int(sizes.group(1)), int(sizes.group(2)))) if sizes else part
        if "size" not in found:
            raise ShapeError(f"resize shape {text!r}: needs scales (s2,2) or output sizes (o56,56)")
        kind, pair = found["size"]
        return ResizeProblem(
            n,
            c,
            h,
            w,
            scales=pair if kind == "s" else None,
            sizes=pair if kind == "o" else None,
            mode=found.get("mode", "nearest"),
            coordinate_transformation_mode=found.get("coord", "half_pixel"),
            nearest_mode=found.get("nearest", "round_prefer_floor"),
        )

    def problem_key(self, problem: ResizeProblem) -> str:
        """Return e.g. ``1x64x28x28:s2,2:linear:half_pixel`` or ``1x3x5x5:o7,3:nearest:asymmetric:floor``."""
        if problem.scales is not None:
            size = "s" + ",".join(_fmt(s) for s in problem.scales)
        else:
            assert problem.sizes is not None
            size = "o" + ",".join(map(str, problem.sizes))
        key = f"{problem.n}x{problem.c}x{problem.h}x{problem.w}:{size}:{problem.mode}"
        key += f":{problem.coordinate_transformation_mode}"
        if problem.mode == "nearest":
            key += f":{problem.nearest_mode}"
        return key

    def shape_vector(self, problem: ResizeProblem) -> tuple[float, ...]:
        """Return (N*C, H, W, H_out, W_out)."""
        ho, wo = problem.out_hw
        return (float(problem.n * problem.c), problem.h, problem.w, ho, wo)

    def flops(self, problem: ResizeProblem) -> float:
        """Return 6 per output for linear (three lerps), 1 for nearest (a copy: GFLOP/s reads as Gelem/s)."""
        ho, wo = problem.out_hw
        return (6.0 if problem.mode == "linear" else 1.0) * problem.n * problem.c * ho * wo

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
        """Resize H, then W, in float64 through the coordinate tables (separable, as ``onnx.reference``)."""
        x = np.asarray(inputs[0], np.float64).reshape(problem.n, problem.c, problem.h, problem.w)
        for axis, rows in zip((2, 3), problem.tables(), strict=True):
            i0, i1, w = rows[:, 0].astype(np.intp), rows[:, 1].astype(np.intp), rows[:, 2]
            shape = (-1, 1) if axis == 2 else (-1,)
            if problem.mode == "nearest":  # a pick, not a blend: a NaN or inf neighbour must not leak in as 0 * inf
                x = np.take(x, i0, axis=axis)  # nearest tables hold the pick in both columns
                continue
            x = np.take(x, i0, axis=axis) * (1 - w.reshape(shape)) + np.take(x, i1, axis=axis) * w.reshape(shape)
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
        context: dict[str, Any] = {
            **p,
            "linear": problem.mode == "linear",
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
        """Return the 2-D grid (y spills into z past 65535 workgroups) and uniforms (extents, y groups)."""
        xt, yt = self._extents(problem, params)
        gy = math.ceil(yt / params["wg_y"])
        gz = math.ceil(gy / GRID)
        gy = math.ceil(gy / gz)
        return Launch((math.ceil(xt / params["wg_x"]), gy, gz), (xt, yt, gy, 0))

    def gl_launch(self, problem: ResizeProblem, params: Params) -> GlLaunch:
        """Return X, the coordinate table and the output texture.

        NCHW: X ``[N*C*H, W]`` and the output ``[N*C*H_out, W_out]``, one value a texel; NHWC: X ``[N*H*W, C]``
        and the output ``[N*H_out*W_out, C]``, four channels a texel. The table is ``[H_out + W_out, 4]``.
        """
        square = bool(params["square"])
        n, c, h, w = problem.n, problem.c, problem.h, problem.w
        ho, wo = problem.out_hw
        table = TexLayout(ho + wo, 4, 4, square)
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
