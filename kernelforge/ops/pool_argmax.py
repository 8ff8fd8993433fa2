"""MaxPool's Indices output (ONNX MaxPool, second output) over NCHW: spec, reference, launch.

Each output is the position of the input element a 2-D max pooling window picks, as an index into the flattened
input: ``((n*C + c)*H + h)*W + w`` (``storage_order=0``, row-major) or ``(n*C + c)*H*W + h + w*H``
(``storage_order=1``: column-major within each (n, c) plane, as ONNX Runtime counts it). The index travels as
an exact float32 value, so the input may hold at most 2^24 elements.

The window and its attributes are :class:`kernelforge.ops.pool.PoolProblem`'s (max, windowed). Taps are visited
row by row and the first maximum wins, as in ONNX Runtime (onnx.reference's unit-stride path ignores
``storage_order`` and breaks ties otherwise). The index locates the value the ``pool2d`` kernel writes: a
window with a NaN tap gives its first NaN (max pooling keeps NaN), and a window without a single input tap
gives -1 (onnx.reference's strided path; its max is 0). 1-D windows are 2-D ones over H = 1: both orders then
give ``(n*C + c)*W + w``.

This is an op of its own, not a flag of ``pool2d``: MaxPool's values keep their tuned kernel and records, and
the indices run as a second kernel only where a model reads them.

Node attributes: those of a windowed ``pool2d`` node (``kernel_shape``, ``strides``, ``pads`` as ``(t, l, b,
r)``, ``dilations``, ``ceil_mode``; ``mode`` may be left out or be ``max``) and ``storage_order`` (0 or 1).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, ClassVar

import numpy as np

from kernelforge.errors import ShapeError
from kernelforge.ops.pool import SPEC as POOL
from kernelforge.ops.pool import PoolProblem, dispatch_fits
from kernelforge.ops.spec import GlLaunch, Launch, Limits, OpSpec, Param, Params, input_shape
from kernelforge.ops.texture import TexLayout, first_too_big

MAX_ELEMENTS = 1 << 24
"""Most input elements: every index up to 2^24 - 1 is an exact float32 value."""

DEFAULT_PARAMS: Params = {"wg_size": 64, "wpt_w": 1}
_FALLBACKS: tuple[Params, ...] = (
    {"wg_size": 32, "wpt_w": 1},
    {"wg_size": 8, "wpt_w": 4},  # fewer workgroups when a dispatch would be too large
)
GLSL_DEFAULT_PARAMS: Params = {"pack": 1, "square": 0}
_GLSL_FALLBACKS: tuple[Params, ...] = ({"pack": 4, "square": 1}, {"pack": 1, "square": 1})


@dataclass(frozen=True)
class PoolArgmaxProblem(PoolProblem):
    """A windowed max pooling (see :class:`PoolProblem`) whose picked positions are wanted, in ``storage_order``."""

    storage_order: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.mode != "max" or self.global_:
            raise ShapeError("pool2d_argmax: only windowed max pooling has indices")
        if self.storage_order not in (0, 1) or isinstance(self.storage_order, bool):
            raise ShapeError(f"pool2d_argmax: storage_order must be 0 or 1, got {self.storage_order!r}")
        size = self.n * self.c * self.h * self.w
        if size > MAX_ELEMENTS:
            raise ShapeError(
                f"pool2d_argmax: an input of {self.n}x{self.c}x{self.h}x{self.w} ({size} elements) has indices "
                f"past 2^24, which float32 cannot hold exactly"
            )

    @property
    def pool(self) -> PoolProblem:
        """The max pooling whose windows these are (the ``pool2d`` problem of the values)."""
        return PoolProblem(**{f.name: getattr(self, f.name) for f in fields(PoolProblem)})


def argmax_indices(problem: PoolArgmaxProblem, x: np.ndarray) -> np.ndarray:
    """Return the index each window picks (module docstring) as int64 of the pooled shape.

    The one numpy definition of the op: a channel block of windows gathered at once, their taps in row order.
    """
    p = problem
    planes = np.asarray(x, np.float64).reshape(p.n * p.c, p.h, p.w)
    (oh, ow), (kh, kw) = p.out_hw, p.kernel_shape
    axes = []
    for o, k, s, d, begin, size in (
        (oh, kh, p.strides[0], p.dilations[0], p.pads[0], p.h),
        (ow, kw, p.strides[1], p.dilations[1], p.pads[1], p.w),
    ):
        pos = np.arange(o)[:, None] * s - begin + np.arange(k)[None, :] * d  # (outputs, taps)
        axes.append((pos, np.clip(pos, 0, size - 1), (pos >= 0) & (pos < size)))
    (ph, ih, vh), (pw, iw, vw) = axes
    valid = (vh[:, None, :, None] & vw[None, :, None, :]).reshape(oh, ow, kh * kw)  # taps in row order
    rows = np.broadcast_to(ph[:, None, :, None], (oh, ow, kh, kw)).reshape(oh, ow, kh * kw)
    cols = np.broadcast_to(pw[None, :, None, :], (oh, ow, kh, kw)).reshape(oh, ow, kh * kw)
    out = np.empty((p.n * p.c, oh, ow), np.int64)
    block = max(1, (1 << 23) // valid.size)
    for start in range(0, p.n * p.c, block):
        win = planes[start : start + block][:, ih][:, :, :, iw]  # (block, oh, kh, ow, kw)
        win = win.transpose(0, 1, 3, 2, 4).reshape(-1, oh, ow, kh * kw)
        nan = np.isnan(win) & valid
        best = np.where(valid & ~nan, win, -np.inf).max(axis=-1, keepdims=True)
        hit = np.where(nan.any(axis=-1, keepdims=True), nan, valid & ~nan & (win == best))
        tap = np.argmax(hit, axis=-1)
        h = np.take_along_axis(np.broadcast_to(rows, hit.shape), tap[..., None], -1)[..., 0]
        w = np.take_along_axis(np.broadcast_to(cols, hit.shape), tap[..., None], -1)[..., 0]
        plane = np.arange(start, start + win.shape[0])[:, None, None] * (p.h * p.w)
        index = plane + (h * p.w + w if p.storage_order == 0 else h + w * p.h)
        out[start : start + block] = np.where(hit.any(axis=-1), index, -1)
    return out.reshape(p.n, p.c, oh, ow)


class PoolArgmaxSpec(OpSpec[PoolArgmaxProblem]):
    """MaxPool's indices: where each max pooling window's maximum is."""

    name: ClassVar[str] = "pool2d_argmax"
    templates: ClassVar[dict[str, str]] = {"wgsl": "wgsl/pool_argmax.wgsl.j2", "glsl": "glsl/pool_argmax.frag.j2"}
    shape_syntax: ClassVar[str] = (
        "max:NxCxHxW:kK[xK][:sS[xS]][:pP|PhxPw|TxLxBxR][:dD[xD]][:ceil][:col] as pool2d's, :col for "
        "storage_order=1 (max:1x64x112x112:k3:s2:p1, max:1x1x5x5:k2:s2:col)"
    )
    spaces: ClassVar[dict[str, tuple[Param, ...]]] = {
        "wgsl": (
            Param("wg_size", (8, 16, 32, 64, 128, 256), "threads per workgroup"),
            Param("wpt_w", (1, 2, 4), "outputs per thread along W"),
        ),
        "glsl": (
            Param("pack", (1, 4), "R32F output (1) or RGBA32F: 4 outputs along W per fragment (4)"),
            Param("square", (0, 1), "textures row-aligned (0) or wrapped square-ish (1)"),
        ),
    }

    # --- problems ------------------------------------------------------------------------------------------

    def from_node(self, shapes: Sequence[tuple[int, ...] | None], attrs: Mapping[str, Any]) -> PoolArgmaxProblem:
        """Build the problem of a node over x ``[n, c, h, w]`` (attributes: the module docstring's)."""
        if attrs.get("mode", "max") != "max":
            raise ShapeError(f"pool2d_argmax: mode must be 'max', got {attrs['mode']!r}")
        n, c, h, w = input_shape(self.name, shapes, 0)
        return PoolArgmaxProblem(
            n=n,
            c=c,
            h=h,
            w=w,
            kernel_shape=tuple(attrs["kernel_shape"]),
            strides=tuple(attrs["strides"]),
            pads=tuple(attrs["pads"]),
            dilations=tuple(attrs["dilations"]),
            ceil_mode=int(attrs["ceil_mode"]),
            storage_order=int(attrs.get("storage_order", 0)),
        )

    def parse_problem(self, text: str) -> PoolArgmaxProblem:
        """Parse pool2d's windowed ``max:`` syntax, with ``:col`` for ``storage_order=1``: ``max:1x1x5x5:k2:col``."""
        tokens = text.strip().lower().split(":")
        order = int("col" in tokens)
        pool = POOL.parse_problem(":".join(t for t in tokens if t != "col"))
        if pool.mode != "max" or pool.global_:
            raise ShapeError(f"pool2d_argmax shape {text!r}: only windowed max pooling (max:...) has indices")
        return PoolArgmaxProblem(**{f.name: getattr(pool, f.name) for f in fields(PoolProblem)}, storage_order=order)

    def problem_key(self, problem: PoolArgmaxProblem) -> str:
        """Return pool2d's key, ``:col`` added for ``storage_order=1`` (parses back)."""
        return POOL.problem_key(problem.pool) + (":col" if problem.storage_order else "")

    def shape_vector(self, problem: PoolArgmaxProblem) -> tuple[float, ...]:
        """Return pool2d's (N*C, H, W, kernel taps, stride area, global)."""
        return POOL.shape_vector(problem.pool)

    def flops(self, problem: PoolArgmaxProblem) -> float:
        """Return one compare per output and kernel tap."""
        return POOL.flops(problem.pool)

    # --- params --------------------------------------------------------------------------------------------

    def default_params(self, problem: PoolArgmaxProblem, limits: Limits, language: str) -> Params:
        """Return the language's default, or the first fallback that fits the problem and device."""
        candidates = (DEFAULT_PARAMS, *_FALLBACKS) if language == "wgsl" else (GLSL_DEFAULT_PARAMS, *_GLSL_FALLBACKS)
        return self.first_fitting(problem, candidates, limits, language)

    def constraints(self, problem: PoolArgmaxProblem, params: Params, limits: Limits, language: str) -> str | None:
        """Return why ``params`` cannot run ``problem`` on a device with ``limits``, or None."""
        if language == "glsl":
            launch = self.gl_launch(problem, params)
            return first_too_big([("input", launch.inputs[0]), ("output", launch.targets[0])], limits.max_texture_size)
        if params["wg_size"] > min(limits.max_invocations, limits.max_wg_x):
            return f"{params['wg_size']} threads per workgroup exceed the device's workgroup limits"
        return dispatch_fits(self.launch(problem, params).workgroups, problem, limits)

    # --- numbers -------------------------------------------------------------------------------------------

    def output_shape(self, problem: PoolArgmaxProblem) -> tuple[int, ...]:
        """Return (N, C, OH, OW)."""
        return (problem.n, problem.c, *problem.out_hw)

    def make_inputs(self, problem: PoolArgmaxProblem, rng: np.random.Generator) -> list[np.ndarray]:
        """Return X of small integers (-4 .. 4), so that windows have ties and the first maximum matters."""
        return [rng.integers(-4, 5, (problem.n, problem.c, problem.h, problem.w)).astype(np.float32)]

    def reference(self, problem: PoolArgmaxProblem, inputs: Sequence[np.ndarray]) -> np.ndarray:
        """Return the indices (:func:`argmax_indices`) as float32."""
        return argmax_indices(problem, inputs[0]).astype(np.float32)

    # --- kernels -------------------------------------------------------------------------------------------

    def template_context(self, problem: PoolArgmaxProblem, params: Params, language: str) -> dict[str, Any]:
        """Return the params, the window as ints, the storage order and (GLSL) the shapes and textures."""
        (kh, kw), (sh, sw), (pt, pl, _, _), (dh, dw) = (
            problem.kernel_shape,
            problem.strides,
            problem.pads,
            problem.dilations,
        )
        ctx: dict[str, Any] = {
            **params,
            "col_major": bool(problem.storage_order),
            **dict(kh=kh, kw=kw, sh=sh, sw=sw, pt=pt, pl=pl, dh=dh, dw=dw),
        }
        if language == "wgsl":
            return ctx
        launch = self.gl_launch(problem, params)
        oh, ow = problem.out_hw
        return {
            **ctx,
            **dict(h=problem.h, w=problem.w, oh=oh, ow=ow, rows=launch.rows),
            "inp": launch.inputs[0].context(),
            "out": launch.targets[0].context(),
        }

    def launch(self, problem: PoolArgmaxProblem, params: Params) -> Launch:
        """Return one thread per ``wpt_w`` outputs along W of an (n, c, oh) row, 2-D grid (x up to 65535)."""
        p = problem
        oh, ow = p.out_hw
        owb = math.ceil(ow / params["wpt_w"])
        total = p.n * p.c * oh * owb
        needed = math.ceil(total / params["wg_size"])
        gx = min(needed, 65535)
        return Launch((gx, math.ceil(needed / gx), 1), (p.h, p.w, oh, ow, owb, total, 0, 0))

    def gl_launch(self, problem: PoolArgmaxProblem, params: Params) -> GlLaunch:
        """Return X as the NCHW matrix ``[N*C*H, W]`` (R32F) and the output ``[N*C*OH, OW]`` (R32F or RGBA32F)."""
        p, square = problem, bool(params["square"])
        oh, ow = p.out_hw
        inp = TexLayout(p.n * p.c * p.h, p.w, 1, square)
        target = TexLayout(p.n * p.c * oh, ow, params["pack"], square)
        return GlLaunch((inp,), ("X",), (target,), target.rows, target.cols)

    def device_inputs(
        self, problem: PoolArgmaxProblem, params: Params, inputs: Sequence[np.ndarray]
    ) -> list[np.ndarray]:
        """Return X as NCHW float32."""
        return [np.ascontiguousarray(inputs[0], np.float32).reshape(problem.n, problem.c, problem.h, problem.w)]


SPEC = PoolArgmaxSpec()
