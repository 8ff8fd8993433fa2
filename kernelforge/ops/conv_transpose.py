"""conv_transpose2d: ONNX ``ConvTranspose`` on NCHW tensors (strides, pads, output padding, groups, dilations).

``Y = act(conv_transpose(X, W) + bias)`` with W in ONNX's ``[C, M / group, KH, KW]``: input pixel ``(iy, ix)``
spreads ``X * W[.., ky, kx]`` to output pixel ``(iy * SY + ky * DY - PT, ix * SX + kx * DX - PL)``. The kernels
gather instead of scatter, so no two threads write one output and no atomics are needed: output pixel
``(oy, ox)`` sums the taps whose ``oy + PT - ky * DY`` is a multiple of ``SY`` (the input row is the quotient),
and likewise along x.

Layouts: like conv2d, both kernels take a ``layout`` tunable (NCHW or NHWC activations), and the graph's layout
pass treats conv_transpose2d as one of the kernels that follow their region's layout. NCHW alone would have been
simpler, but conv2d's kernels default to NHWC, so every upsampling of a U-Net would sit between two transpose
kernels; this way the whole level runs in one layout. Weights must be constants: they are rearranged once, at
load, in :meth:`ConvTransposeSpec.device_inputs`: ``[KH, KW, C, M / group]`` for WGSL (a group's output
channels contiguous, so a vec4 reads 4 of them), and per GLSL layout as conv2d's fragment kernel reads its own.

Node attributes (what :meth:`ConvTransposeSpec.from_onnx` makes of an ONNX node, 1-D ones lifted to 2-D over
``H = 1``): ``strides``, ``pads`` ``(t, l, b, r)``, ``dilations``, ``output_padding`` (all ``(y, x)`` pairs but
pads), ``group`` and ``activation``; optionally ``auto_pad``, ``output_shape`` ``(oh, ow)`` and
``kernel_shape``, which :meth:`ConvTransposeSpec.from_node` resolves against the shapes (ONNX's equations).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from kernelforge.errors import ShapeError
from kernelforge.ops._conv_transpose_attrs import MAX_EXTENT, SYNTAX, onnx_attrs, parse_shape, resolve_axis
from kernelforge.ops._epilogue import Activation
from kernelforge.ops.shapes import GRID_X
from kernelforge.ops.spec import (
    GlLaunch,
    Launch,
    Limits,
    OpSpec,
    Param,
    Params,
    input_shape,
    register_tile_problem,
)
from kernelforge.ops.texture import TexLayout, first_too_big

__all__ = ["DEFAULT_PARAMS", "GLSL_DEFAULT_PARAMS", "SPEC", "ConvTransposeProblem", "ConvTransposeSpec"]

NCHW, NHWC = 0, 1
NHWC_AXES = (0, 2, 3, 1)
"""The NCHW -> NHWC axis order."""
NARROW_ACCUMULATORS = 64
"""Accumulators per thread without ``Limits.wide_tiles`` (conv2d's cap)."""
MAX_UNROLLED_FMAS = 1024
NARROW_UNROLLED_FMAS = 512

# NHWC, 4 pixels of one stride phase x 8 output channels (two vec4s) per thread, 16x2 threads: in a 2x
# upsampling every pixel of a thread takes the same taps, so its channel loop runs without a wasted select
# (1.5-2.5x over phase=0 on lavapipe's U-Net-like layers; 8 channels a thread beat 4 there).
DEFAULT_PARAMS: Params = {
    "layout": NHWC,
    "phase": 1,
    "wg_x": 16,
    "wg_y": 2,
    "wpt_p": 4,
    "wpt_o": 8,
    "vec_width": 4,
    "tile_k": 4,
}
FALLBACKS: tuple[Params, ...] = (
    {**DEFAULT_PARAMS, "wg_y": 4, "wpt_o": 4},  # 4 or 12 output channels per group
    {**DEFAULT_PARAMS, "wg_x": 8, "wg_y": 4, "wpt_o": 2, "vec_width": 1},
    {**DEFAULT_PARAMS, "wg_x": 32, "wg_y": 1, "wpt_o": 1, "vec_width": 1},
    {**DEFAULT_PARAMS, "wg_x": 1, "wg_y": 1, "wpt_p": 8, "wpt_o": 1, "vec_width": 1, "tile_k": 1},
)
SEEDS: tuple[Params, ...] = (
    {**DEFAULT_PARAMS, "wg_y": 4, "wpt_o": 4},
    {**DEFAULT_PARAMS, "wg_x": 8, "wg_y": 2, "wpt_p": 8, "wpt_o": 8},
    {**DEFAULT_PARAMS, "tile_k": 8},
    {**DEFAULT_PARAMS, "layout": NCHW, "wpt_p": 8, "wpt_o": 4, "wg_y": 4},
    {**DEFAULT_PARAMS, "phase": 0, "wpt_p": 2},
)
GLSL_DEFAULT_PARAMS: Params = {"layout": NHWC, "c_unroll": 1, "square": 0}
GLSL_FALLBACKS: tuple[Params, ...] = (
    {**GLSL_DEFAULT_PARAMS, "square": 1},
    {"layout": NCHW, "c_unroll": 1, "square": 0},
    {"layout": NCHW, "c_unroll": 1, "square": 1},
)
GLSL_SEEDS: tuple[Params, ...] = ({**GLSL_DEFAULT_PARAMS, "c_unroll": 4}, {**GLSL_DEFAULT_PARAMS, "c_unroll": 2})


def _fit_tile_k(params: Params, problem: ConvTransposeProblem, language: str) -> Params:
    """Shrink the channel step to the group's input channels (1 for a depthwise layer)."""
    if language != "wgsl" or params["tile_k"] <= problem.cg:
        return dict(params)
    return {**params, "tile_k": max(k for k in (1, 2, 4, 8) if k <= problem.cg)}


@dataclass(frozen=True)
class ConvTransposeProblem:
    """One ConvTranspose call: X ``[n, c, h, w]``, W ``[c, m / group, kh, kw]`` -> Y ``[n, m, oh, ow]``.

    ``pads`` are ONNX's ``(top, left, bottom, right)``; ``strides``, ``dilations`` and ``output_padding`` are
    ``(y, x)``. Output padding may exceed ONNX's ``< stride`` bound here: an ``output_shape`` longer than the
    full result is expressed that way (the extra rows and columns get no taps).
    """

    n: int
    c: int
    h: int
    w: int
    m: int
    kh: int
    kw: int
    strides: tuple[int, int] = (1, 1)
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)
    dilations: tuple[int, int] = (1, 1)
    output_padding: tuple[int, int] = (0, 0)
    group: int = 1
    has_bias: bool = False
    activation: Activation = field(default_factory=Activation)

    def __post_init__(self) -> None:
        for name in ("n", "c", "h", "w", "m", "kh", "kw", "group"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value < MAX_EXTENT:
                raise ShapeError(f"conv_transpose2d: {name} must be an integer in [1, {MAX_EXTENT}), got {value!r}")
        for name, size, low in (("strides", 2, 1), ("pads", 4, 0), ("dilations", 2, 1), ("output_padding", 2, 0)):
            value = tuple(getattr(self, name))
            if len(value) != size or any(
                isinstance(v, bool) or not isinstance(v, int) or not low <= v < MAX_EXTENT for v in value
            ):
                raise ShapeError(
                    f"conv_transpose2d: {name} must be {size} integers in [{low}, {MAX_EXTENT}), got {value!r}"
                )
            object.__setattr__(self, name, value)
        if not isinstance(self.has_bias, bool) or not isinstance(self.activation, Activation):
            raise ShapeError(f"conv_transpose2d: has_bias must be a bool and activation an Activation, got {self}")
        if self.c % self.group or self.m % self.group:
            raise ShapeError(
                f"conv_transpose2d: group {self.group} must divide input channels {self.c} and outputs {self.m}"
            )
        if self.oh < 1 or self.ow < 1:
            raise ShapeError(
                f"conv_transpose2d: pads {self.pads} crop the whole {self.full_h}x{self.full_w} result "
                f"(output {self.oh}x{self.ow})"
            )

    @property
    def full_h(self) -> int:
        """Height of the uncropped result: the last input row's last tap lands on row ``full_h - 1``."""
        return self.strides[0] * (self.h - 1) + self.dilations[0] * (self.kh - 1) + 1

    @property
    def full_w(self) -> int:
        """Width of the uncropped result."""
        return self.strides[1] * (self.w - 1) + self.dilations[1] * (self.kw - 1) + 1

    @property
    def oh(self) -> int:
        """Output height (ONNX: stride * (h - 1) + output_padding + span - pad_top - pad_bottom)."""
        return self.full_h + self.output_padding[0] - self.pads[0] - self.pads[2]

    @property
    def ow(self) -> int:
        """Output width."""
        return self.full_w + self.output_padding[1] - self.pads[1] - self.pads[3]

    @property
    def cg(self) -> int:
        """Input channels per group."""
        return self.c // self.group

    @property
    def mg(self) -> int:
        """Output channels per group."""
        return self.m // self.group

    @property
    def depthwise(self) -> bool:
        """Whether each group maps one input channel to one output channel."""
        return self.cg == 1 and self.mg == 1


class ConvTransposeSpec(OpSpec[ConvTransposeProblem]):
    """The conv_transpose2d op."""

    name: ClassVar[str] = "conv_transpose2d"
    templates: ClassVar[dict[str, str]] = {
        "wgsl": "wgsl/conv_transpose.wgsl.j2",
        "glsl": "glsl/conv_transpose.frag.j2",
    }
    shape_syntax: ClassVar[str] = SYNTAX
    shape_separator: ClassVar[str] = ";"
    onnx_ops: ClassVar[tuple[str, ...]] = ("ConvTranspose",)
    spaces: ClassVar[dict[str, tuple[Param, ...]]] = {
        "wgsl": (
            Param("layout", (0, 1), "activations (X, Y): 0 NCHW, 1 NHWC"),
            Param(
                "phase",
                (0, 1),
                "a thread's pixels: 0 consecutive in row-major order (each tests its own taps), 1 one stride phase "
                "of a row (ox, ox + SX, ...: shared taps, consecutive input columns)",
            ),
            Param("wg_x", (1, 2, 4, 8, 16, 32, 64), "workgroup threads along output pixels"),
            Param("wg_y", (1, 2, 4, 8, 16), "workgroup threads along output channels"),
            Param("wpt_p", (1, 2, 4, 8, 16), "output pixels per thread"),
            Param("wpt_o", (1, 2, 4, 8, 16), "output channels per thread"),
            Param("vec_width", (1, 4), "vec4 accumulators, weights (and NHWC stores) along output channels"),
            Param("tile_k", (1, 2, 4, 8), "input channels per unrolled step"),
        ),
        "glsl": (
            Param("layout", (0, 1), "0 NCHW R32F textures (1 output per fragment), 1 NHWC RGBA32F (4 channels)"),
            Param("c_unroll", (1, 2, 4), "input-channel loop unroll"),
            Param("square", (0, 1), "textures row-aligned (0) or wrapped square-ish (1)"),
        ),
    }

    # --- problems ------------------------------------------------------------------------------------------

    def from_node(self, shapes: Sequence[tuple[int, ...] | None], attrs: Mapping[str, Any]) -> ConvTransposeProblem:
        """Build the problem of a node ``act(conv_transpose(x, w) + bias)``: inputs x, w, bias?.

        ``auto_pad`` and ``output_shape`` (when given) set the pads and output padding from the input size.

        Raises:
            ShapeError: When X or W is not 4-D, W's channels or kernel_shape disagree with X, or bias is not [M].
        """
        x, wt = input_shape(self.name, shapes, 0), input_shape(self.name, shapes, 1)
        bias = shapes[2] if len(shapes) > 2 else None
        if len(x) != 4 or len(wt) != 4:
            spatial = f" ({len(x) - 2}-D ConvTranspose is not supported)" if len(x) > 4 else ""
            raise ShapeError(
                f"{self.name}: X and W must be 4-D (NCHW, [C, M/group, KH, KW]), got {x} and {wt}{spatial}"
            )
        group = int(attrs.get("group", 1))
        n, c, h, w = x
        if wt[0] != c:
            raise ShapeError(f"{self.name}: W of shape {wt} must have X's {c} input channels first (X {x})")
        kernel = attrs.get("kernel_shape")
        if kernel is not None and tuple(kernel) != tuple(wt[2:]):
            raise ShapeError(f"{self.name}: kernel_shape {tuple(kernel)} differs from the weight's {tuple(wt[2:])}")
        m = wt[1] * group
        if bias is not None and tuple(bias) != (m,):
            raise ShapeError(f"{self.name}: bias of shape {tuple(bias)} must be [{m}]")
        strides = tuple(attrs.get("strides", (1, 1)))
        dilations = tuple(attrs.get("dilations", (1, 1)))
        pads = tuple(attrs.get("pads", (0, 0, 0, 0)))
        out_pad = tuple(attrs.get("output_padding", (0, 0)))
        auto_pad = str(attrs.get("auto_pad", "NOTSET"))
        out_shape = attrs.get("output_shape") or (0, 0)
        axes = [
            resolve_axis(size, k, s, d, (pads[a], pads[a + 2]), out_pad[a], auto_pad, int(out_shape[a]))
            for a, (size, k, s, d) in enumerate(zip((h, w), wt[2:], strides, dilations, strict=True))
        ]
        return ConvTransposeProblem(
            n=n,
            c=c,
            h=h,
            w=w,
            m=m,
            kh=wt[2],
            kw=wt[3],
            strides=strides,
            pads=(axes[0][0], axes[1][0], axes[0][1], axes[1][1]),
            dilations=dilations,
            output_padding=(axes[0][2], axes[1][2]),
            group=group,
            has_bias=bias is not None,
            activation=attrs.get("activation", Activation()),
        )

    def from_onnx(self, op_type: str, opset: int, attrs: Mapping[str, Any]) -> dict[str, Any]:
        """Return the node attributes of an ONNX ConvTranspose (1-D ones as 2-D over ``H = 1``).

        Raises:
            ValueError: Naming the attribute whose value is not supported (3-D windows among them).
        """
        return {**onnx_attrs(attrs), "activation": Activation()}

    def parse_problem(self, text: str) -> ConvTransposeProblem:
        """Parse ``NxCxHxW:MxKHxKW`` plus ``:s``, ``:p``, ``:o`` (output padding), ``:d`` and ``:g`` options."""
        return ConvTransposeProblem(**parse_shape(text))

    def problem_key(self, problem: ConvTransposeProblem) -> str:
        """Return the canonical shape text, e.g. ``1x64x32x32:32x2x2:s2x2:p0,0,0,0:o0x0:d1x1:g1``."""
        p = problem
        return (
            f"{p.n}x{p.c}x{p.h}x{p.w}:{p.m}x{p.kh}x{p.kw}:s{p.strides[0]}x{p.strides[1]}"
            f":p{','.join(map(str, p.pads))}:o{p.output_padding[0]}x{p.output_padding[1]}"
            f":d{p.dilations[0]}x{p.dilations[1]}:g{p.group}"
        )

    def shape_vector(self, problem: ConvTransposeProblem) -> tuple[float, ...]:
        """Return output pixels, output channels, input channels per group, kernel area, stride area."""
        p = problem
        return (p.n * p.oh * p.ow, p.m, p.cg, p.kh * p.kw, p.strides[0] * p.strides[1])

    def flops(self, problem: ConvTransposeProblem) -> float:
        """Return 2 * inputs * (M/group) * KH * KW: every input value meets every tap of its group's outputs."""
        p = problem
        return 2.0 * p.n * p.c * p.h * p.w * p.mg * p.kh * p.kw

    # --- params --------------------------------------------------------------------------------------------

    def default_params(self, problem: ConvTransposeProblem, limits: Limits, language: str) -> Params:
        """Return the language's default, or the first fallback that fits (NCHW for odd grouped GLSL)."""
        candidates = (GLSL_DEFAULT_PARAMS, *GLSL_FALLBACKS) if language == "glsl" else (DEFAULT_PARAMS, *FALLBACKS)
        fitted = (_fit_tile_k(p, problem, language) for p in candidates)
        return self.first_fitting(problem, fitted, limits, language)

    def seed_params(self, problem: ConvTransposeProblem, limits: Limits, language: str) -> list[Params]:
        """Return a few diverse register tiles and layouts (valid ones only)."""
        chosen = GLSL_SEEDS if language == "glsl" else SEEDS
        seeds = [_fit_tile_k(s, problem, language) for s in chosen]
        return [s for s in seeds if self.constraints(problem, s, limits, language) is None]

    def constraints(self, problem: ConvTransposeProblem, params: Params, limits: Limits, language: str) -> str | None:
        """Return why ``params`` cannot run ``problem`` on a device with ``limits``, or None."""
        q, p = problem, params
        if language == "glsl":
            if p["layout"] == NHWC and not q.depthwise and q.group > 1 and (q.cg % 4 or q.mg % 4):
                return "packed NHWC grouped conv_transpose needs C/group and M/group multiples of 4 (or depthwise)"
            if p["layout"] == NHWC and p["c_unroll"] > 1 and q.depthwise:
                return "depthwise NHWC fragments have no channel loop to unroll"
            launch = self.gl_launch(q, p)
            named = [*zip(launch.samplers, launch.inputs, strict=True), ("output", launch.targets[0])]
            return first_too_big(named, limits.max_texture_size)
        threads = p["wg_x"] * p["wg_y"]
        if p["wg_x"] > limits.max_wg_x or p["wg_y"] > limits.max_wg_y:
            return f"workgroup {p['wg_x']}x{p['wg_y']} exceeds the device's per-axis limits"
        if threads > limits.max_invocations:
            return f"{threads} invocations per workgroup > device limit {limits.max_invocations}"
        vw = p["vec_width"]
        if p["wpt_o"] % vw:
            return f"wpt_o={p['wpt_o']} is not a multiple of vec_width={vw}"
        if vw == 4 and q.mg % 4:
            return f"vec_width=4 needs output channels per group % 4 == 0 (got {q.mg})"
        if p["wpt_o"] > q.mg:
            return f"wpt_o={p['wpt_o']} > output channels per group {q.mg} (threads would repeat channels)"
        if p["tile_k"] > q.cg:
            return f"tile_k={p['tile_k']} > input channels per group {q.cg} (the unrolled step never runs)"
        tile = register_tile_problem(limits, "wpt_p", p["wpt_p"], p["wpt_p"] * p["wpt_o"], NARROW_ACCUMULATORS)
        if tile:
            return tile
        fmas = p["tile_k"] * p["wpt_p"] * (p["wpt_o"] // vw)
        cap = MAX_UNROLLED_FMAS if limits.wide_tiles else NARROW_UNROLLED_FMAS
        if fmas > cap:
            return f"unrolled body of {fmas} FMAs > {cap}"
        groups = self.launch(q, p).workgroups
        if max(groups) > limits.max_workgroups_per_dim:
            return f"dispatch {groups} exceeds {limits.max_workgroups_per_dim} workgroups per dimension"
        largest = 4 * max(q.n * q.c * q.h * q.w, q.n * q.m * q.oh * q.ow, q.c * q.mg * q.kh * q.kw)
        if largest > limits.max_storage_binding:
            return f"a {largest}-byte buffer exceeds the device's storage binding limit {limits.max_storage_binding}"
        return None

    # --- numbers -------------------------------------------------------------------------------------------

    def output_shape(self, problem: ConvTransposeProblem) -> tuple[int, ...]:
        """Return ``(n, m, oh, ow)``."""
        return (problem.n, problem.m, problem.oh, problem.ow)

    def make_inputs(self, problem: ConvTransposeProblem, rng: np.random.Generator) -> list[np.ndarray]:
        """Return X, W (and bias) with values in [-1, 1]."""
        q = problem
        arrays = [
            rng.uniform(-1, 1, (q.n, q.c, q.h, q.w)).astype(np.float32),
            rng.uniform(-1, 1, (q.c, q.mg, q.kh, q.kw)).astype(np.float32),
        ]
        if q.has_bias:
            arrays.append(rng.uniform(-1, 1, q.m).astype(np.float32))
        return arrays

    def reference(self, problem: ConvTransposeProblem, inputs: Sequence[np.ndarray]) -> np.ndarray:
        """Scatter every input pixel's taps into the full result in float64, then crop the pads (as float32).

        This is the operator's definition, written the other way round from the kernels' gather.
        """
        q = problem
        g = q.group
        x = np.asarray(inputs[0], np.float64).reshape(q.n, g, q.cg, q.h, q.w)
        w = np.asarray(inputs[1], np.float64).reshape(g, q.cg, q.mg, q.kh, q.kw)
        (sy, sx), (dy, dx), (top, left) = q.strides, q.dilations, q.pads[:2]
        rows, cols = max(q.full_h, top + q.oh), max(q.full_w, left + q.ow)
        full = np.zeros((q.n, g, q.mg, rows, cols))
        for ky in range(q.kh):
            for kx in range(q.kw):
                spread = np.einsum("ngchw,gcm->ngmhw", x, w[:, :, :, ky, kx])
                y0, x0 = ky * dy, kx * dx
                full[:, :, :, y0 : y0 + sy * (q.h - 1) + 1 : sy, x0 : x0 + sx * (q.w - 1) + 1 : sx] += spread
        y = full[:, :, :, top : top + q.oh, left : left + q.ow].reshape(q.n, q.m, q.oh, q.ow)
        if q.has_bias:
            y = y + np.asarray(inputs[2], np.float64).reshape(1, q.m, 1, 1)
        return q.activation.apply(y).astype(np.float32)

    # --- kernels -------------------------------------------------------------------------------------------

    def _phase_tiles(self, problem: ConvTransposeProblem, params: Params) -> int:
        """Return the thread tiles along pixels: per output row and stride phase, runs of wpt_p columns (phase=1)."""
        q = problem
        if not params["phase"]:
            return math.ceil(q.oh * q.ow / params["wpt_p"])
        return q.oh * q.strides[1] * self._row_tiles(problem, params)

    @staticmethod
    def _row_tiles(problem: ConvTransposeProblem, params: Params) -> int:
        """Return the tiles of one output row's stride phase: ceil(ceil(OW / SX) / wpt_p)."""
        return math.ceil(math.ceil(problem.ow / problem.strides[1]) / params["wpt_p"])

    def _pixel_grid(self, problem: ConvTransposeProblem, params: Params) -> tuple[int, int]:
        """Return the workgroups along x and how many z slices per image they spill into past :data:`GRID_X`."""
        groups = math.ceil(self._phase_tiles(problem, params) / params["wg_x"])
        grid_x = min(groups, GRID_X)
        return grid_x, math.ceil(groups / grid_x)

    def template_context(self, problem: ConvTransposeProblem, params: Params, language: str) -> dict[str, Any]:
        """Return validated params, the (baked-in) shapes and attributes, and the epilogue."""
        q, p = problem, params
        sizes = ("n", "c", "h", "w", "m", "kh", "kw", "oh", "ow", "group", "cg", "mg", "has_bias")
        context: dict[str, Any] = {**p, **{name: getattr(q, name) for name in sizes}, "act": q.activation}
        (context["sy"], context["sx"]), (context["dy"], context["dx"]) = q.strides, q.dilations
        context["pt"], context["pl"] = q.pads[:2]
        if language == "glsl":
            launch = self.gl_launch(q, p)
            context.update(
                {f"tex_{name.lower()}": t.context() for name, t in zip(launch.samplers, launch.inputs, strict=True)}
            )
            context["out"] = launch.targets[0].context()
            context["depthwise"] = q.depthwise
            return context
        context.update(
            {
                "tile_p": p["wg_x"] * p["wpt_p"],
                "tile_o": p["wg_y"] * p["wpt_o"],
                "nv": p["wpt_o"] // p["vec_width"],
                "o_tiles": math.ceil(q.mg / (p["wg_y"] * p["wpt_o"])),
                "row_tiles": self._row_tiles(q, p),
                "grid_x": self._pixel_grid(q, p)[0],
                "z_split": self._pixel_grid(q, p)[1],
            }
        )
        return context

    def launch(self, problem: ConvTransposeProblem, params: Params) -> Launch:
        """Return workgroups over (pixel tiles, group x channel tiles, batch x spill) and the uniforms (pixels, tiles).

        Pixel tiles past :data:`GRID_X` workgroups continue in further z slices of each image.
        """
        q = problem
        grid_x, z_split = self._pixel_grid(q, params)
        channel_groups = q.group * math.ceil(q.mg / (params["wg_y"] * params["wpt_o"]))
        return Launch((grid_x, channel_groups, q.n * z_split), (q.oh * q.ow, self._phase_tiles(q, params), 0, 0))

    def gl_launch(self, problem: ConvTransposeProblem, params: Params) -> GlLaunch:
        """Return the textures of the GLSL kernel.

        NCHW (``layout=0``): X ``[n*c*h, w]``, Y ``[n*m*oh, ow]``, R32F, one output per fragment; W is ONNX's
        ``[c, mg*kh*kw]``. NHWC (``layout=1``): X ``[n*h*w, c]`` and Y ``[n*oh*ow, m]`` packed 4 channels per
        RGBA32F texel; W is ``[kh*kw*cg, m]`` packed along output channels (row ``(ky*kw + kx)*cg + ci``,
        column ``g*mg + o``), so one texel fetch gives a tap's weights for 4 output channels.
        """
        q, square = problem, bool(params["square"])
        if params["layout"] == NHWC:
            x = TexLayout(q.n * q.h * q.w, q.c, 4, square)
            w = TexLayout(q.kh * q.kw * q.cg, q.m, 4, square)
            out = TexLayout(q.n * q.oh * q.ow, q.m, 4, square)
            bias = TexLayout(1, q.m, 4, False)
        else:
            x = TexLayout(q.n * q.c * q.h, q.w, 1, square)
            w = TexLayout(q.c, q.mg * q.kh * q.kw, 1, square)
            out = TexLayout(q.n * q.m * q.oh, q.ow, 1, square)
            bias = TexLayout(1, q.m, 1, False)
        inputs, samplers = [x, w], ["X", "W"]
        if q.has_bias:
            inputs.append(bias)
            samplers.append("BIAS")
        return GlLaunch(tuple(inputs), tuple(samplers), (out,), out.rows, out.cols)

    def device_inputs(
        self, problem: ConvTransposeProblem, params: Params, inputs: Sequence[np.ndarray]
    ) -> list[np.ndarray]:
        """Return X (and bias) in the kernel's layout and W rearranged as its kernel reads it.

        Raises:
            ShapeError: When the number of inputs is not 2 (3 with bias) or one has the wrong size.
        """
        q = problem
        count = 3 if q.has_bias else 2
        if len(inputs) != count:
            raise ShapeError(f"{self.name} {self.problem_key(q)}: {count} inputs expected, got {len(inputs)}")
        sizes = (q.n * q.c * q.h * q.w, q.c * q.mg * q.kh * q.kw, q.m)
        for what, array, size in zip(("X", "W", "bias"), inputs, sizes, strict=False):
            if np.asarray(array).size != size:
                raise ShapeError(f"{self.name} {self.problem_key(q)}: {what} has {np.asarray(array).size} values")
        nhwc = params["layout"] == NHWC
        x = np.asarray(inputs[0], np.float32).reshape(q.n, q.c, q.h, q.w)
        w = np.asarray(inputs[1], np.float32).reshape(q.c, q.mg, q.kh, q.kw)
        w_dev: np.ndarray
        if "c_unroll" not in params:
            w_dev = w.transpose(2, 3, 0, 1)  # [kh, kw, c, mg]: a group's output channels contiguous
        elif nhwc:
            w_dev = w.reshape(q.group, q.cg, q.mg, q.kh, q.kw).transpose(3, 4, 1, 0, 2).reshape(-1, q.m)
        else:
            w_dev = w.reshape(q.c, -1)
        arrays: list[np.ndarray] = [x.transpose(0, 2, 3, 1) if nhwc else x, w_dev]
        if q.has_bias:
            arrays.append(np.asarray(inputs[2], np.float32).reshape(q.m))
        return [np.ascontiguousarray(a, dtype=np.float32) for a in arrays]

    def device_output_shape(self, problem: ConvTransposeProblem, params: Params) -> tuple[int, ...]:
        """Return ``(n, oh, ow, m)`` for NHWC kernels, else the NCHW output shape."""
        q = problem
        return (q.n, q.oh, q.ow, q.m) if params["layout"] == NHWC else self.output_shape(q)

    def input_layouts(self, problem: ConvTransposeProblem, params: Params) -> tuple[tuple[int, ...] | None, ...]:
        """Return NHWC for X of ``layout=1`` kernels, and W's order as :meth:`device_inputs` makes it.

        W is ``[kh, kw, c, mg]`` (its ``(2, 3, 0, 1)`` transpose) for WGSL and for NHWC GLSL kernels without
        groups: a weight that is a runtime tensor is converted to it by a relayout.
        """
        nhwc = params["layout"] == NHWC
        glsl = "c_unroll" in params
        w = (2, 3, 0, 1) if not glsl or (nhwc and problem.group == 1) else None
        return (NHWC_AXES if nhwc else None, w, None)

    def output_layout(self, problem: ConvTransposeProblem, params: Params) -> tuple[int, ...] | None:
        """Return NHWC for ``layout=1`` kernels."""
        return NHWC_AXES if params["layout"] == NHWC else None

    def from_device(self, problem: ConvTransposeProblem, params: Params, data: np.ndarray) -> np.ndarray:
        """Return the NCHW output from what the kernel wrote."""
        out = np.asarray(data).reshape(self.device_output_shape(problem, params))
        return np.ascontiguousarray(out.transpose(0, 3, 1, 2)) if params["layout"] == NHWC else out


SPEC = ConvTransposeSpec()
