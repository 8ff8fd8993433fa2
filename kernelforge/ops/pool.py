"""2-D pooling (ONNX MaxPool, AveragePool, GlobalMaxPool, GlobalAveragePool on NCHW): spec, reference, API.

Semantics are ONNX's: output ``o`` along an axis reads input positions ``o*stride - pad_begin + k*dilation``
for ``k < kernel``; positions outside the input are padding. ``ceil_mode`` rounds the output size up but
drops a last window that would start past the input and its begin padding. Average pooling divides by the
taps inside the input (``count_include_pad=0``) or inside input plus explicit padding (``1``; the extra
positions a ceil-mode window reaches past the end padding never count). A window without a single input tap
gives what ``onnx.reference`` gives: 0 for max, NaN for average with ``count_include_pad=0``, 0 with ``1``.
1-D pooling is 2-D pooling with H = 1.
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

MAX_EXTENT = 1 << 24
"""Largest size, stride, pad or dilation accepted: keeps every shader index inside i32/u32."""
NAN_BITS = 0x7FC00000
"""A quiet NaN: what an average over a window with no input taps is (0 / 0, as in onnx.reference)."""

# ORT web's pooling shape: one output per thread, 64 threads, NCHW. Global pools: one workgroup per (n, c).
DEFAULT_PARAMS: Params = {"wg_size": 64, "wpt_w": 1, "layout": 0}
_FALLBACKS: tuple[Params, ...] = (
    {"wg_size": 32, "wpt_w": 1, "layout": 0},
    {"wg_size": 8, "wpt_w": 1, "layout": 0},
    {"wg_size": 8, "wpt_w": 4, "layout": 0},  # fewer workgroups when a dispatch would be too large
)
GLSL_DEFAULT_PARAMS: Params = {"layout": 0, "square": 0, "unroll": 1}
_GLSL_FALLBACKS: tuple[Params, ...] = (
    {"layout": 0, "square": 1, "unroll": 1},
    {"layout": 1, "square": 1, "unroll": 1},
)

_MODES = {"max": ("max", False), "avg": ("avg", False), "gmax": ("max", True), "gavg": ("avg", True)}
_SHAPE = re.compile(r"^(max|avg|gmax|gavg):(\d+)x(\d+)x(\d+)x(\d+)((?::[a-z0-9]+)*)$")
_PAIR = re.compile(r"^(\d+)(?:x(\d+))?$")
_PADS = re.compile(r"^(\d+)(?:x(\d+)(?:x(\d+)x(\d+))?)?$")


def _int(op: str, name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not low <= int(value) < MAX_EXTENT:
        raise ShapeError(f"{op}: {name} must be an integer in [{low}, {MAX_EXTENT}), got {value!r}")
    return int(value)


def ints(op: str, name: str, value: Any, count: int, low: int) -> tuple[int, ...]:
    """Return ``count`` integers of at least ``low`` (window sizes, strides, pads), naming ``op`` and ``name``."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence | np.ndarray) or len(value) != count:
        raise ShapeError(f"{op}: {name} must be {count} integers, got {value!r}")
    return tuple(_int(op, name, v, low) for v in value)


def output_size(size: int, kernel: int, stride: int, begin: int, end: int, dilation: int, ceil_mode: int) -> int:
    """Return the output length of one axis (ONNX; 0 or less means the window does not fit)."""
    span = size + begin + end - ((kernel - 1) * dilation + 1)
    if span < 0:
        return 0
    if not ceil_mode:
        return span // stride + 1
    out = -(-span // stride) + 1
    # ONNX (and onnx.reference): the last window must start inside the input or its begin padding
    if (out - 1) * stride >= size + begin:
        out -= 1
    return out


@dataclass(frozen=True)
class PoolProblem:
    """One pooling call on an ``(n, c, h, w)`` float32 input; attributes as in ONNX (pads: t, l, b, r).

    Global pools (``global_``) reduce all of H x W: their ``kernel_shape`` is set to ``(h, w)`` and every
    other attribute must keep its default. ``count_include_pad`` applies to average pooling only.
    """

    n: int
    c: int
    h: int
    w: int
    mode: str = "max"
    kernel_shape: tuple[int, int] = (1, 1)
    strides: tuple[int, int] = (1, 1)
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)
    dilations: tuple[int, int] = (1, 1)
    ceil_mode: int = 0
    count_include_pad: int = 0
    global_: bool = False

    def __post_init__(self) -> None:
        for name in ("n", "c", "h", "w"):
            _int("pool2d", name, getattr(self, name), 1)
        if self.n * self.c * self.h * self.w >= 1 << 31:
            raise ShapeError(f"pool2d: input of {self.n}x{self.c}x{self.h}x{self.w} has 2^31 or more elements")
        if self.mode not in ("max", "avg"):
            raise ShapeError(f"pool2d: mode must be 'max' or 'avg', got {self.mode!r}")
        if not isinstance(self.global_, bool):
            raise ShapeError(f"pool2d: global_ must be a bool, got {self.global_!r}")
        if self.global_ and self.kernel_shape in ((1, 1), (self.h, self.w)):
            object.__setattr__(self, "kernel_shape", (self.h, self.w))
        for name, count, low in (("kernel_shape", 2, 1), ("strides", 2, 1), ("pads", 4, 0), ("dilations", 2, 1)):
            object.__setattr__(self, name, ints("pool2d", name, getattr(self, name), count, low))
        for name in ("ceil_mode", "count_include_pad"):
            if getattr(self, name) not in (0, 1) or isinstance(getattr(self, name), bool):
                raise ShapeError(f"pool2d: {name} must be 0 or 1, got {getattr(self, name)!r}")
        if self.mode == "max" and self.count_include_pad:
            raise ShapeError("pool2d: count_include_pad applies to average pooling only")
        if self.global_ and (
            self.kernel_shape != (self.h, self.w)
            or (self.strides, self.pads, self.dilations) != ((1, 1), (0, 0, 0, 0), (1, 1))
            or self.ceil_mode
            or self.count_include_pad
        ):
            raise ShapeError("pool2d: a global pool takes no kernel_shape, strides, pads, dilations or modes")
        oh, ow = self.out_hw
        if oh < 1 or ow < 1:
            raise ShapeError(
                f"pool2d: kernel_shape {self.kernel_shape} with dilations {self.dilations} does not fit the "
                f"{self.h}x{self.w} input padded by {self.pads}"
            )

    @property
    def out_hw(self) -> tuple[int, int]:
        """Output (height, width)."""
        (kh, kw), (sh, sw), (pt, pl, pb, pr), (dh, dw) = self.kernel_shape, self.strides, self.pads, self.dilations
        return (
            output_size(self.h, kh, sh, pt, pb, dh, self.ceil_mode),
            output_size(self.w, kw, sw, pl, pr, dw, self.ceil_mode),
        )


def dispatch_fits(groups: tuple[int, ...], problem: PoolProblem, limits: Limits) -> str | None:
    """Return why a pooling kernel's dispatch or buffers exceed the device's limits (pool2d's and its argmax's)."""
    if max(groups) > limits.max_workgroups_per_dim:
        return f"dispatch {groups} exceeds {limits.max_workgroups_per_dim} workgroups per dimension"
    largest = 4 * problem.n * problem.c * max(problem.h * problem.w, math.prod(problem.out_hw))
    if largest > limits.max_storage_binding:
        return f"a {largest}-byte buffer exceeds the device's storage binding limit {limits.max_storage_binding}"
    return None


def _pair(text: str, what: str) -> tuple[int, int]:
    match = _PAIR.match(text)
    if not match:
        raise ShapeError(f"pool2d shape: {what} {text!r} is not N or NxM")
    first = int(match.group(1))
    return first, int(match.group(2) or first)


class PoolSpec(OpSpec[PoolProblem]):
    """The pooling op: windowed max/average and global max/average over H x W."""

    name: ClassVar[str] = "pool2d"
    templates: ClassVar[dict[str, str]] = {"wgsl": "wgsl/pool.wgsl.j2", "glsl": "glsl/pool.frag.j2"}
    shape_syntax: ClassVar[str] = (
        "max|avg:NxCxHxW:kK[xK][:sS[xS]][:pP|PhxPw|TxLxBxR][:dD[xD]][:ceil][:cip], or gmax|gavg:NxCxHxW "
        "(max:1x64x112x112:k3:s2:p1, gavg:1x512x7x7)"
    )
    spaces: ClassVar[dict[str, tuple[Param, ...]]] = {
        "wgsl": (
            Param("wg_size", (8, 16, 32, 64, 128, 256), "threads per workgroup (global pools: reduction width)"),
            Param("wpt_w", (1, 2, 4), "outputs per thread along W; global pools: loads per thread and loop step"),
            Param("layout", (0, 1), "activations NCHW (0) or NHWC with vec4 over channels (1, C % 4 == 0)"),
        ),
        "glsl": (
            Param("layout", (0, 1), "NCHW R32F [N*C*H, W] (0) or NHWC RGBA32F [N*H*W, ceil(C/4)] (1)"),
            Param("square", (0, 1), "textures row-aligned (0) or wrapped square-ish (1)"),
            Param("unroll", (1, 2, 4, 8), "unroll of the innermost per-fragment loop (kernel W / H*W)"),
        ),
    }

    def from_node(self, shapes: Sequence[tuple[int, ...] | None], attrs: Mapping[str, Any]) -> PoolProblem:
        """Build the problem of a pooling node over x ``[n, c, h, w]``.

        Attrs: mode (``max``/``avg``), kernel_shape, strides, pads ``(t, l, b, r)``, dilations, ceil_mode,
        count_include_pad, global_ (bool; the window attrs are then ignored).
        """
        x = input_shape(self.name, shapes, 0)
        n, c, h, w = x
        mode = {"average": "avg"}.get(attrs["mode"], attrs["mode"])  # ONNX's word, or pool2d's
        if attrs.get("global_"):
            return PoolProblem(n=n, c=c, h=h, w=w, mode=mode, global_=True)
        return PoolProblem(
            n=n,
            c=c,
            h=h,
            w=w,
            mode=mode,
            kernel_shape=tuple(attrs["kernel_shape"]),
            strides=tuple(attrs["strides"]),
            pads=tuple(attrs["pads"]),
            dilations=tuple(attrs["dilations"]),
            ceil_mode=int(attrs["ceil_mode"]),
            count_include_pad=int(attrs["count_include_pad"]),
        )

    def parse_problem(self, text: str) -> PoolProblem:
        """Parse a pooling shape string.

        Syntax: ``MODE:NxCxHxW`` then ``:``-separated attributes. ``MODE`` is ``max`` or ``avg`` (windowed;
        ``kK`` or ``kKHxKW`` is required) or ``gmax`` / ``gavg`` (global, no attributes). Attributes:
        ``sS``/``sSHxSW`` strides (default 1), ``pP`` (all sides), ``pPHxPW`` (top=bottom, left=right) or
        ``pTxLxBxR`` (ONNX order) pads (default 0), ``dD``/``dDHxDW`` dilations (default 1), ``ceil``
        (ceil_mode=1) and ``cip`` (count_include_pad=1, avg only). Examples: ``max:1x64x112x112:k3:s2:p1``,
        ``avg:2x3x7x7:k3x2:s2:p0x0x1x1:ceil:cip``, ``gavg:1x512x7x7``.
        """
        match = _SHAPE.match(text.strip().lower())
        if not match:
            raise ShapeError(f"pool2d shape {text!r} is not MODE:NxCxHxW[:attrs]; see {self.shape_syntax}")
        mode, global_ = _MODES[match.group(1)]
        n, c, h, w = (int(match.group(i)) for i in range(2, 6))
        tokens = [t for t in match.group(6).split(":") if t]
        if global_:
            if tokens:
                raise ShapeError(f"pool2d shape {text!r}: global pools take no attributes")
            return PoolProblem(n, c, h, w, mode, global_=True)
        attrs: dict[str, Any] = {}
        for token in tokens:
            key = token if token in ("ceil", "cip") else token[0]
            if key in attrs:
                raise ShapeError(f"pool2d shape {text!r}: attribute {key!r} given twice")
            if key in ("ceil", "cip"):
                attrs[key] = 1
            elif key in "ksd":
                attrs[key] = _pair(token[1:], key)
            elif key == "p" and (pm := _PADS.match(token[1:])):
                values = [int(v) for v in pm.groups() if v is not None]
                attrs[key] = tuple(values * (4 // len(values)))
            else:
                raise ShapeError(f"pool2d shape {text!r}: unknown attribute {token!r}")
        if "k" not in attrs:
            raise ShapeError(f"pool2d shape {text!r}: windowed pools need a kernel (k3, k3x2)")
        return PoolProblem(
            n,
            c,
            h,
            w,
            mode,
            kernel_shape=attrs["k"],
            strides=attrs.get("s", (1, 1)),
            pads=attrs.get("p", (0, 0, 0, 0)),
            dilations=attrs.get("d", (1, 1)),
            ceil_mode=attrs.get("ceil", 0),
            count_include_pad=attrs.get("cip", 0),
        )

    def problem_key(self, problem: PoolProblem) -> str:
        """Return e.g. ``max:1x64x112x112:k3x3:s2x2:p1x1x1x1`` or ``gavg:1x512x7x7`` (parses back)."""
        p = problem
        shape = f"{p.n}x{p.c}x{p.h}x{p.w}"
        if p.global_:
            return f"g{p.mode}:{shape}"
        key = f"{p.mode}:{shape}:k{p.kernel_shape[0]}x{p.kernel_shape[1]}:s{p.strides[0]}x{p.strides[1]}"
        key += ":p" + "x".join(str(v) for v in p.pads)
        if p.dilations != (1, 1):
            key += f":d{p.dilations[0]}x{p.dilations[1]}"
        return key + (":ceil" if p.ceil_mode else "") + (":cip" if p.count_include_pad else "")

    def shape_vector(self, problem: PoolProblem) -> tuple[float, ...]:
        """Return (N*C, H, W, kernel taps, stride area, global) for nearest-shape lookup."""
        (kh, kw), (sh, sw) = problem.kernel_shape, problem.strides
        return (problem.n * problem.c, problem.h, problem.w, kh * kw, sh * sw, 1.0 + problem.global_)

    def flops(self, problem: PoolProblem) -> float:
        """Return one compare or add per output and kernel tap."""
        oh, ow = problem.out_hw
        return float(problem.n * problem.c * oh * ow * problem.kernel_shape[0] * problem.kernel_shape[1])

    def default_params(self, problem: PoolProblem, limits: Limits, language: str) -> Params:
        """Return the language's default, or the first fallback that fits the problem and device."""
        candidates = (DEFAULT_PARAMS, *_FALLBACKS) if language == "wgsl" else (GLSL_DEFAULT_PARAMS, *_GLSL_FALLBACKS)
        return self.first_fitting(problem, candidates, limits, language)

    def constraints(self, problem: PoolProblem, params: Params, limits: Limits, language: str) -> str | None:
        """Return why ``params`` cannot run ``problem`` on a device with ``limits``, or None."""
        if language == "glsl":
            launch = self.gl_launch(problem, params)
            return first_too_big([("input", launch.inputs[0]), ("output", launch.targets[0])], limits.max_texture_size)
        p = params
        if p["wg_size"] > min(limits.max_invocations, limits.max_wg_x):
            return f"{p['wg_size']} threads per workgroup exceed the device's workgroup limits"
        if p["layout"] == 1 and problem.c % 4:
            return f"layout=1 (NHWC vec4) needs C % 4 == 0 (C={problem.c})"
        if problem.global_:
            shared = 4 * p["wg_size"] * (4 if p["layout"] else 1)
            if shared > limits.max_workgroup_storage:
                return f"{shared} bytes of workgroup memory > device limit {limits.max_workgroup_storage}"
        return dispatch_fits(self.launch(problem, p).workgroups, problem, limits)

    def output_shape(self, problem: PoolProblem) -> tuple[int, ...]:
        """Return (N, C, OH, OW)."""
        return (problem.n, problem.c, *problem.out_hw)

    def make_inputs(self, problem: PoolProblem, rng: np.random.Generator) -> list[np.ndarray]:
        """Return X with values in [-1, 1]."""
        return [rng.uniform(-1, 1, (problem.n, problem.c, problem.h, problem.w)).astype(np.float32)]

    def reference(self, problem: PoolProblem, inputs: Sequence[np.ndarray]) -> np.ndarray:
        """Pool in float64 (every window gathered at once, a channel block at a time) and return float32."""
        p = problem
        x = np.asarray(inputs[0], np.float64).reshape(p.n * p.c, p.h, p.w)
        if p.global_:
            flat = x.reshape(p.n * p.c, -1)
            out = flat.max(axis=1) if p.mode == "max" else flat.mean(axis=1)
            return out.astype(np.float32).reshape(self.output_shape(p))
        (oh, ow), (pt, pl, pb, pr) = p.out_hw, p.pads
        taps = []
        for o, k, s, d, begin, end, size in (
            (oh, p.kernel_shape[0], p.strides[0], p.dilations[0], pt, pb, p.h),
            (ow, p.kernel_shape[1], p.strides[1], p.dilations[1], pl, pr, p.w),
        ):
            pos = np.arange(o)[:, None] * s - begin + np.arange(k)[None, :] * d  # (outputs, taps)
            taps.append((np.clip(pos, 0, size - 1), (pos >= 0) & (pos < size), pos < size + end))
        (ih, vh, ph), (iw, vw, pw) = taps
        valid = vh[:, :, None, None] & vw[None, None]  # (oh, kh, ow, kw)
        counted = valid if p.count_include_pad == 0 else ph[:, :, None, None] & pw[None, None]
        count = counted.sum(axis=(1, 3))
        out = np.empty((p.n * p.c, oh, ow))
        block = max(1, (1 << 23) // valid.size)
        for start in range(0, p.n * p.c, block):
            win = x[start : start + block][:, ih][:, :, :, iw]  # (block, oh, kh, ow, kw)
            if p.mode == "max":
                best = np.where(valid, win, -np.inf).max(axis=(2, 4))
                out[start : start + block] = np.where(valid.any(axis=(1, 3)), best, 0.0)
            else:
                total = np.where(valid, win, 0.0).sum(axis=(2, 4))
                with np.errstate(invalid="ignore", divide="ignore"):
                    out[start : start + block] = np.where(count > 0, total / np.maximum(count, 1), np.nan)
        return out.astype(np.float32).reshape(self.output_shape(p))

    def template_context(self, problem: PoolProblem, params: Params, language: str) -> dict[str, Any]:
        """Return validated params, the attributes as ints and (GLSL) the shapes and texture layouts."""
        p = params
        (kh, kw), (sh, sw), (pt, pl, pb, pr), (dh, dw) = (
            problem.kernel_shape,
            problem.strides,
            problem.pads,
            problem.dilations,
        )
        ctx: dict[str, Any] = {
            **p,
            "is_global": problem.global_,
            "is_max": problem.mode == "max",
            "cip": bool(problem.count_include_pad),
            **dict(kh=kh, kw=kw, sh=sh, sw=sw, pt=pt, pl=pl, pb=pb, pr=pr, dh=dh, dw=dw),
        }
        if language == "wgsl":
            # tree-reduction strides of a global pool: wg/2, wg/4, ..., 1
            ctx["red_steps"] = [p["wg_size"] >> i for i in range(1, p["wg_size"].bit_length())]
            return ctx
        launch = self.gl_launch(problem, p)
        oh, ow = problem.out_hw
        return {
            **ctx,
            **dict(n=problem.n, c=problem.c, h=problem.h, w=problem.w, oh=oh, ow=ow, rows=launch.rows),
            "c4": math.ceil(problem.c / 4),
            "inp": launch.inputs[0].context(),
            "out": launch.targets[0].context(),
        }

    def launch(self, problem: PoolProblem, params: Params) -> Launch:
        """Return a 2-D grid of workgroups (x up to 65535, WebGPU's minimum limit) and the Dims uniforms.

        Windowed pools run one thread per ``wpt_w`` outputs along W of one (n, c, oh) row, or of one
        (n, oh, 4 channels) with NHWC; global pools one workgroup per (n, c) or (n, 4 channels).
        """
        p = problem
        cu = p.c // 4 if params["layout"] else p.c  # channel units: vec4s with NHWC
        oh, ow = p.out_hw
        owb = math.ceil(ow / params["wpt_w"])
        if p.global_:
            total = p.n * cu
            needed = total
        else:
            total = p.n * cu * oh * owb
            needed = math.ceil(total / params["wg_size"])
        gx = min(needed, 65535)
        uniforms = (p.n, cu, p.h, p.w, oh, ow, owb, total, p.h * p.w, NAN_BITS, 0, 0)
        return Launch((gx, math.ceil(needed / gx), 1), uniforms)

    def gl_launch(self, problem: PoolProblem, params: Params) -> GlLaunch:
        """Return the input texture and the render target of the GLSL kernel.

        NCHW input is ``[N*C*H, W]`` in R32F, NHWC ``[N*H*W, C]`` in RGBA32F (4 channels per texel). The
        output is ``[N*C*OH, OW]`` or ``[N*OH*OW, C]`` likewise; global pools write ``[N, C]`` either way.
        """
        p, square = problem, bool(params["square"])
        oh, ow = p.out_hw
        if params["layout"]:
            inp = TexLayout(p.n * p.h * p.w, p.c, 4, square)
            rows, cols = (p.n, p.c) if p.global_ else (p.n * oh * ow, p.c)
        else:
            inp = TexLayout(p.n * p.c * p.h, p.w, 1, square)
            rows, cols = (p.n, p.c) if p.global_ else (p.n * p.c * oh, ow)
        target = TexLayout(rows, cols, 4 if params["layout"] else 1, square)
        return GlLaunch((inp,), ("X",), (target,), rows, cols)

    def device_inputs(self, problem: PoolProblem, params: Params, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Return X as float32, transposed to NHWC for ``layout=1``."""
        x = np.asarray(inputs[0], np.float32).reshape(problem.n, problem.c, problem.h, problem.w)
        return [np.ascontiguousarray(x.transpose(0, 2, 3, 1) if params["layout"] else x)]

    def device_output_shape(self, problem: PoolProblem, params: Params) -> tuple[int, ...]:
        """Return (N, OH, OW, C) for windowed NHWC kernels, else :meth:`output_shape`."""
        if params["layout"] and not problem.global_:
            return (problem.n, *problem.out_hw, problem.c)
        return self.output_shape(problem)

    def input_layouts(self, problem: PoolProblem, params: Params) -> tuple[tuple[int, ...] | None, ...]:
        """Return NHWC for X of ``layout=1`` kernels."""
        return ((0, 2, 3, 1) if params["layout"] else None,)

    def output_layout(self, problem: PoolProblem, params: Params) -> tuple[int, ...] | None:
        """Return NHWC for ``layout=1`` kernels (a global pool's ``[n, 1, 1, c]`` is its NCHW output too)."""
        return (0, 2, 3, 1) if params["layout"] else None

    def from_device(self, problem: PoolProblem, params: Params, data: np.ndarray) -> np.ndarray:
        """Return the NCHW output, transposing what a windowed NHWC kernel wrote."""
        out = np.asarray(data).reshape(self.device_output_shape(problem, params))
        if params["layout"] and not problem.global_:
            out = np.ascontiguousarray(out.transpose(0, 3, 1, 2))
        return out


SPEC = PoolSpec()
