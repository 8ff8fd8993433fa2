"""conv2d: ONNX ``Conv`` on NCHW tensors (groups, depthwise, dilations, asymmetric pads) with a fused epilogue.

``Y = act(conv(X, W) + bias + residual)``: bias per output channel, an optional residual of Y's shape (the
ResNet/MobileNet skip connection) added before the activation, so a whole block tail is one kernel.

The algorithm and the data layouts are tunables, not fixed rules: ``algo`` picks a direct register-blocked
kernel, an implicit GEMM that stages im2col tiles in workgroup memory (the im2col matrix is never
materialised), or one of two depthwise kernels (per pixel, or a row window that loads each input column once
per kernel row); ``layout`` picks NCHW or NHWC activations and ``w_layout`` OIHW or
HWIO weights. Inputs are converted to the chosen layouts in :meth:`ConvSpec.device_inputs` (weights
once, at load, in a graph) and the output back in :meth:`ConvSpec.from_device`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from kernelforge.errors import ShapeError
from kernelforge.ops import _qweight
from kernelforge.ops._conv_params import (
    DEFAULT_PARAMS,
    DEPTHWISE,
    DEPTHWISE_ALGOS,
    DEPTHWISE_DEFAULT,
    DEPTHWISE_ROWS,
    DIRECT,
    FALLBACKS,
    GLSL_DEFAULT_PARAMS,
    GLSL_FALLBACKS,
    GLSL_SEEDS,
    HWIO,
    IMPLICIT_GEMM,
    MAX_UNROLLED_FMAS,
    NARROW_ACCUMULATORS,
    NARROW_UNROLLED_FMAS,
    NCHW,
    NHWC,
    NHWC_AXES,
    OIHW,
    POINTWISE_SEEDS,
    SEEDS,
    SUBGROUP_SEEDS,
    fit_tile_k,
    fitted,
    subgroup_problem,
)
from kernelforge.ops._conv_shape import SYNTAX, parse_shape
from kernelforge.ops._epilogue import Activation
from kernelforge.ops._qweight import WeightQuant
from kernelforge.ops.spec import (
    F16_TOLERANCE,
    FLOAT32_TOLERANCE,
    GlLaunch,
    Launch,
    Limits,
    OpSpec,
    Param,
    Params,
    input_shape,
    register_cap,
    register_tile_problem,
)
from kernelforge.ops.texture import TexLayout, first_too_big

__all__ = [
    "DEFAULT_PARAMS",
    "DEPTHWISE",
    "DEPTHWISE_DEFAULT",
    "DEPTHWISE_ROWS",
    "DIRECT",
    "HWIO",
    "IMPLICIT_GEMM",
    "NCHW",
    "NHWC",
    "OIHW",
    "SPEC",
    "ConvProblem",
    "ConvSpec",
]


def _row_window(problem: ConvProblem, params: Params) -> list[int]:
    """Return the input columns (from the first pixel's leftmost tap) a row-window thread loads per kernel row."""
    if params["algo"] != DEPTHWISE_ROWS:
        return []
    sx, dx = problem.strides[1], problem.dilations[1]
    return sorted({i * sx + kx * dx for i in range(params["wpt_p"]) for kx in range(problem.kw)})


@dataclass(frozen=True)
class ConvProblem:
    """One conv call: X ``[n, c, h, w]``, W ``[m, c / group, kh, kw]`` -> Y ``[n, m, oh, ow]``.

    ``pads`` are ONNX's ``(top, left, bottom, right)``; ``strides`` and ``dilations`` are ``(y, x)``. ``wq``: W is
    int8/uint8 on the device, dequantized per output channel (or per tensor) where it is read (:mod:`._qweight`).
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
    group: int = 1
    has_bias: bool = False
    has_residual: bool = False
    activation: Activation = field(default_factory=Activation)
    wq: WeightQuant | None = None

    def __post_init__(self) -> None:
        for name in ("n", "c", "h", "w", "m", "kh", "kw", "group"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ShapeError(f"conv2d: {name} must be an integer >= 1, got {value!r}")
        for name, size in (("strides", 2), ("pads", 4), ("dilations", 2)):
            value = getattr(self, name)
            if len(value) != size or any(isinstance(v, bool) or not isinstance(v, int) for v in value):
                raise ShapeError(f"conv2d: {name} must be {size} integers, got {value!r}")
        if min(self.strides) < 1 or min(self.dilations) < 1 or min(self.pads) < 0:
            raise ShapeError(f"conv2d: strides/dilations must be >= 1 and pads >= 0, got {self}")
        if self.c % self.group or self.m % self.group:
            raise ShapeError(f"conv2d: group {self.group} must divide input channels {self.c} and outputs {self.m}")
        if self.oh < 1 or self.ow < 1:
            raise ShapeError(
                f"conv2d: a {self.kh}x{self.kw} kernel (dilations {self.dilations}) does not fit the padded "
                f"{self.h}x{self.w} input (pads {self.pads})"
            )
        if self.wq is not None and self.wq.channels not in (1, self.m):
            raise ShapeError(f"conv2d: quantized W needs 1 or M={self.m} scales, got {self.wq.channels}")

    @property
    def oh(self) -> int:
        """Output height."""
        span = self.dilations[0] * (self.kh - 1) + 1
        return (self.h + self.pads[0] + self.pads[2] - span) // self.strides[0] + 1

    @property
    def ow(self) -> int:
        """Output width."""
        span = self.dilations[1] * (self.kw - 1) + 1
        return (self.w + self.pads[1] + self.pads[3] - span) // self.strides[1] + 1

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
        """Whether every output channel reads one input channel (group == c)."""
        return self.cg == 1


class ConvSpec(OpSpec[ConvProblem]):
    """The conv2d op."""

    name: ClassVar[str] = "conv2d"
    templates: ClassVar[dict[str, str]] = {"wgsl": "wgsl/conv2d.wgsl.j2", "glsl": "glsl/conv2d.frag.j2"}
    shape_syntax: ClassVar[str] = SYNTAX
    shape_separator: ClassVar[str] = ";"
    spaces: ClassVar[dict[str, tuple[Param, ...]]] = {
        "wgsl": (
            Param(
                "algo",
                (0, 1, 2, 3),
                "0 direct, 1 implicit GEMM (im2col tiles in workgroup memory), 2 depthwise, 3 depthwise row window",
            ),
            Param("layout", (0, 1), "activations (X, Y, residual): 0 NCHW, 1 NHWC"),
            Param("w_layout", (0, 1), "weights: 0 OIHW, 1 HWIO (output channels contiguous)"),
            Param("wg_x", (1, 2, 4, 8, 16, 32, 64), "workgroup threads along output pixels"),
            Param("wg_y", (1, 2, 4, 8, 16), "workgroup threads along output channels"),
            Param("wpt_p", (1, 2, 4, 8, 16), "output pixels per thread"),
            Param("wpt_o", (1, 2, 4, 8, 16), "output channels per thread"),
            Param("tile_k", (1, 2, 4, 8, 16), "input channels per unrolled step (direct) / K tile (implicit GEMM)"),
            Param("vec_width", (1, 4), "vec4 accumulators, weights and stores along output channels"),
            Param("vec_c", (1, 4), "vec4 loads of 4 input channels (direct kernel, NHWC)"),
            Param(
                "sg_share",
                (0, 4, 8, 16, 32),
                "subgroup lanes that share their X loads via subgroupBroadcast (direct kernel, wg_x=1); 0: none",
                absent=0,
            ),
            Param(
                "precision",
                (0, 1, 2),
                "0 f32; 1 f16 products and sums; 2 f16 workgroup tiles, f32 sums (implicit GEMM); f32 buffers "
                "(shader-f16)",
                absent=0,
            ),
        ),
        "glsl": (
            Param("layout", (0, 1), "0 NCHW R32F textures (1 output per fragment), 1 NHWC RGBA32F (4 channels)"),
            Param("c_unroll", (1, 2, 4), "input-channel loop unroll"),
            Param("square", (0, 1), "textures row-aligned (0) or wrapped square-ish (1)"),
            Param("precision", (0, 1), "render target: 0 float32, 1 half floats (R16F/RGBA16F)", absent=0),
        ),
    }

    def from_node(self, shapes: Sequence[tuple[int, ...] | None], attrs: Mapping[str, Any]) -> ConvProblem:
        """Build the problem of a node ``act(conv(x, w) + bias + residual)``: inputs x, w, bias?, residual?.

        Attrs: strides ``(sy, sx)``, pads ``(t, l, b, r)``, dilations ``(dy, dx)``, group, activation, and
        weight_quant (optional: W's integer dtype, with ``qparams`` as input 4).
        """
        x, w = input_shape(self.name, shapes, 0), input_shape(self.name, shapes, 1)
        bias, residual = [*shapes[2:], None, None][:2]
        return ConvProblem(
            n=x[0],
            c=x[1],
            h=x[2],
            w=x[3],
            m=w[0],
            kh=w[2],
            kw=w[3],
            strides=tuple(attrs["strides"]),
            pads=tuple(attrs["pads"]),
            dilations=tuple(attrs["dilations"]),
            group=int(attrs["group"]),
            has_bias=bias is not None,
            has_residual=residual is not None,
            activation=attrs["activation"],
            wq=_qweight.from_node(attrs, shapes[4] if len(shapes) > 4 else None, w[0], self.name, w[1] * w[2] * w[3]),
        )

    def parse_problem(self, text: str) -> ConvProblem:
        """Parse ``NxCxHxW:MxKHxKW`` plus ``:s`` strides, ``:p`` pads, ``:d`` dilations, ``:g`` group options.

        A trailing ``/qi8`` or ``/qu8`` (``c``: per output channel) makes W int8/uint8 on the device, ``/qi4g32``
        int4 (a scale per output channel and 32 values of its input channels x kh x kw).
        """
        shape, dtype, per_channel, group = _qweight.split_key(text)
        fields = parse_shape(shape)
        return ConvProblem(**fields, wq=_qweight.parsed(dtype, per_channel, int(fields["m"]), group))

    def problem_key(self, problem: ConvProblem) -> str:
        """Return the canonical shape text (parseable back), e.g. ``1x64x56x56:64x3x3:s1x1:p1,1,1,1:d1x1:g1``."""
        p = problem
        return (
            f"{p.n}x{p.c}x{p.h}x{p.w}:{p.m}x{p.kh}x{p.kw}:s{p.strides[0]}x{p.strides[1]}"
            f":p{','.join(map(str, p.pads))}:d{p.dilations[0]}x{p.dilations[1]}:g{p.group}"
        ) + (p.wq.key if p.wq else "")

    def shape_vector(self, problem: ConvProblem) -> tuple[float, ...]:
        """Return output pixels, output channels, reduction length, kernel area, stride, depthwise-ness."""
        p = problem
        return (p.n * p.oh * p.ow, p.m, p.cg * p.kh * p.kw, p.kh * p.kw, p.strides[0], 1.0 + 8 * p.depthwise)

    def flops(self, problem: ConvProblem) -> float:
        """Return 2 * outputs * (C/group) * KH * KW."""
        p = problem
        return 2.0 * p.n * p.m * p.oh * p.ow * p.cg * p.kh * p.kw

    def default_params(self, problem: ConvProblem, limits: Limits, language: str) -> Params:
        """Return the language's default (depthwise kernel for depthwise convs) or the first fallback that fits."""
        if language == "glsl":
            candidates: tuple[Params, ...] = (GLSL_DEFAULT_PARAMS, *GLSL_FALLBACKS)
        else:
            first = (DEPTHWISE_DEFAULT, {**DEPTHWISE_DEFAULT, "vec_width": 1}) if problem.depthwise else ()
            candidates = (*first, DEFAULT_PARAMS, *FALLBACKS)
        fits = (f for p in candidates for f in (fitted(p, problem, language), fit_tile_k(p, problem, language)))
        return self.first_fitting(problem, fits, limits, language)

    def seed_params(self, problem: ConvProblem, limits: Limits, language: str) -> list[Params]:
        """Return the configs that won on our software GPUs for ResNet/MobileNet layers (valid ones only)."""
        q = problem
        pointwise = (q.kh, q.kw, q.strides, q.pads, q.group) == (1, 1, (1, 1), (0, 0, 0, 0), 1)
        wgsl = SUBGROUP_SEEDS + SEEDS + (POINTWISE_SEEDS if pointwise else ())
        chosen = GLSL_SEEDS if language == "glsl" else wgsl
        seeds: list[Params] = []
        for seed in chosen:
            fits = (fitted(seed, problem, language), fit_tile_k(seed, problem, language))
            fit = next((f for f in fits if self.constraints(problem, f, limits, language) is None), None)
            if fit is not None and fit not in seeds:
                seeds.append(fit)
        if (language == "glsl" or limits.f16) and seeds:  # the first seed in f16 next: the search knows both early
            twins = [{**seeds[0], "precision": 1}]
            staged = next((s for s in seeds if s.get("algo") == 1), None) if language == "wgsl" else None
            if staged is not None:  # and the first implicit GEMM's f16 tiles with f32 sums
                twins.append({**staged, "precision": 2})
            seeds[1:1] = [t for t in twins if self.constraints(problem, t, limits, language) is None]
        return seeds

    def tolerance(self, problem: ConvProblem, params: Params) -> float:
        """Return the float32 bound, or :data:`F16_TOLERANCE` for f16 arithmetic or tiles (``precision`` 1, 2)."""
        return F16_TOLERANCE if params.get("precision", 0) else FLOAT32_TOLERANCE

    def constraints(self, problem: ConvProblem, params: Params, limits: Limits, language: str) -> str | None:
        """Return why ``params`` cannot run ``problem`` on a device with ``limits``, or None."""
        if language == "glsl":
            return self._glsl_constraints(problem, params, limits)
        p, q = params, problem
        if p.get("precision", 0) and not limits.f16:
            return f"precision={p['precision']} (f16) needs a device with the shader-f16 feature"
        if p.get("precision", 0) == 2 and p["algo"] != 1:
            return "precision=2 (f16 workgroup tiles) needs algo=1 (the implicit GEMM stages the tiles)"
        threads = p["wg_x"] * p["wg_y"]
        if p["wg_x"] > limits.max_wg_x or p["wg_y"] > limits.max_wg_y:
            return f"workgroup {p['wg_x']}x{p['wg_y']} exceeds the device's per-axis limits"
        if threads > limits.max_invocations:
            return f"{threads} invocations per workgroup > device limit {limits.max_invocations}"
        if p["wpt_o"] % p["vec_width"]:
            return f"wpt_o={p['wpt_o']} is not a multiple of vec_width={p['vec_width']}"
        tile = register_tile_problem(limits, "wpt_p", p["wpt_p"], p["wpt_p"] * p["wpt_o"], NARROW_ACCUMULATORS)
        if tile:
            return tile
        fma_cap = MAX_UNROLLED_FMAS if limits.wide_tiles else NARROW_UNROLLED_FMAS
        vw = p["vec_width"]
        sharing = subgroup_problem(p, limits)
        if sharing:
            return sharing
        if p["algo"] in DEPTHWISE_ALGOS:
            if not q.depthwise:
                return f"the depthwise kernel needs group == input channels (group={q.group}, c={q.c})"
            if vw == 4 and (q.m % 4 or q.mg != 1 or p["layout"] != NHWC):
                return "depthwise vec4 needs NHWC, M % 4 == 0 and one output per input channel"
            if p["vec_c"] != 1 or p["tile_k"] != 1 or p["w_layout"] != HWIO:
                return "the depthwise kernel has no vec_c/tile_k and reads HWIO weights (use 1, 1, 1)"
            if p["algo"] == DEPTHWISE_ROWS:
                window = len(_row_window(q, p)) * p["wpt_o"]
                if window > register_cap(limits, NARROW_ACCUMULATORS):
                    return f"a row window of {window} input values per thread is too many registers"
                if q.kw * p["wpt_p"] * p["wpt_o"] // vw > fma_cap:
                    return f"unrolled body of {q.kw * p['wpt_p'] * p['wpt_o'] // vw} FMAs > {fma_cap}"
        else:
            if vw == 4 and q.mg % 4:
                return f"vec_width=4 needs output channels per group % 4 == 0 (got {q.mg})"
            if p["vec_c"] == 4 and (p["algo"] != DIRECT or p["layout"] != NHWC or q.cg % 4 or p["tile_k"] % 4):
                return "vec_c=4 needs the direct NHWC kernel, C/group % 4 == 0 and tile_k % 4 == 0"
            nv = p["wpt_o"] // vw
            if p["algo"] == DIRECT and p["tile_k"] * p["wpt_p"] * nv > fma_cap:
                return f"unrolled body of {p['tile_k'] * p['wpt_p'] * nv} FMAs > {fma_cap}"
            if p["algo"] == DIRECT and p["tile_k"] > q.cg:
                return f"tile_k={p['tile_k']} > input channels per group {q.cg} (the unrolled step never runs)"
            if p["algo"] == IMPLICIT_GEMM:
                tile_p, tile_o = p["wg_x"] * p["wpt_p"], p["wg_y"] * p["wpt_o"]
                shared = (2 if p.get("precision", 0) == 2 else 4) * p["tile_k"] * (tile_p + tile_o)
                if shared > limits.max_workgroup_storage:
                    return f"{shared} bytes of workgroup memory > device limit {limits.max_workgroup_storage}"
                if p["tile_k"] * p["wpt_p"] * nv > fma_cap:
                    return f"unrolled body of {p['tile_k'] * p['wpt_p'] * nv} FMAs > {fma_cap}"
                if max(tile_p, tile_o) * p["tile_k"] > 16 * threads:
                    return "more than 16 tile loads per thread"
        launch = self.launch(problem, params)
        if max(launch.workgroups) > limits.max_workgroups_per_dim:
            return f"dispatch {launch.workgroups} exceeds {limits.max_workgroups_per_dim} workgroups per dimension"
        largest = 4 * max(q.n * q.c * q.h * q.w, q.n * q.m * q.oh * q.ow, q.m * q.cg * q.kh * q.kw)
        if largest > limits.max_storage_binding:
            return f"a {largest}-byte buffer exceeds the device's storage binding limit {limits.max_storage_binding}"
        return None

    def _glsl_constraints(self, problem: ConvProblem, params: Params, limits: Limits) -> str | None:
        q = problem
        if params["layout"] == NHWC and not (q.depthwise and q.mg == 1) and (q.cg % 4 or q.mg % 4) and q.group > 1:
            return "packed NHWC grouped conv needs C/group and M/group multiples of 4 (or depthwise, or group 1)"
        if params["layout"] == NHWC and params["c_unroll"] > 1 and q.depthwise:
            return "depthwise NHWC fragments have no channel loop to unroll"
        launch = self.gl_launch(problem, params)
        named = [*zip(launch.samplers, launch.inputs, strict=True), ("output", launch.targets[0])]
        return first_too_big(named, limits.max_texture_size)

    def output_shape(self, problem: ConvProblem) -> tuple[int, ...]:
        """Return ``(n, m, oh, ow)``."""
        return (problem.n, problem.m, problem.oh, problem.ow)

    def make_inputs(self, problem: ConvProblem, rng: np.random.Generator) -> list[np.ndarray]:
        """Return X, W (and bias, residual) with values in [-1, 1]; a quantized W is integers, then its qparams."""
        q = problem
        x = rng.uniform(-1, 1, (q.n, q.c, q.h, q.w)).astype(np.float32)
        qparams = None
        if q.wq is None:
            arrays = [x, rng.uniform(-1, 1, (q.m, q.cg, q.kh, q.kw)).astype(np.float32)]
        else:
            w, qparams = _qweight.random_weight(rng, (q.m, q.cg, q.kh, q.kw), 0, q.wq)
            arrays = [x, w]
        if q.has_bias:
            arrays.append(rng.uniform(-1, 1, q.m).astype(np.float32))
        if q.has_residual:
            arrays.append(rng.uniform(-1, 1, self.output_shape(q)).astype(np.float32))
        return arrays if qparams is None else [*arrays, qparams]

    def reference(self, problem: ConvProblem, inputs: Sequence[np.ndarray]) -> np.ndarray:
        """Compute ``act(conv + bias + residual)`` in float64 (one einsum per kernel tap) as float32."""
        q = problem
        x = np.asarray(inputs[0], np.float64).reshape(q.n, q.c, q.h, q.w)
        w = np.asarray(inputs[1], np.float64).reshape(q.group, q.mg, q.cg, q.kh, q.kw)
        xp = np.pad(x, ((0, 0), (0, 0), (q.pads[0], q.pads[2]), (q.pads[1], q.pads[3])))
        xp = xp.reshape(q.n, q.group, q.cg, *xp.shape[2:])
        out = np.zeros((q.n, q.group, q.mg, q.oh, q.ow))
        (sy, sx), (dy, dx) = q.strides, q.dilations
        for ky in range(q.kh):
            for kx in range(q.kw):
                y0, x0 = ky * dy, kx * dx
                window = xp[:, :, :, y0 : y0 + sy * (q.oh - 1) + 1 : sy, x0 : x0 + sx * (q.ow - 1) + 1 : sx]
                out += np.einsum("ngchw,gmc->ngmhw", window, w[:, :, :, ky, kx])
        result = out.reshape(q.n, q.m, q.oh, q.ow)
        index = 2
        if q.has_bias:
            result = result + np.asarray(inputs[index], np.float64).reshape(1, q.m, 1, 1)
            index += 1
        if q.has_residual:
            result = result + np.asarray(inputs[index], np.float64).reshape(result.shape)
        return q.activation.apply(result).astype(np.float32)

    def template_context(self, problem: ConvProblem, params: Params, language: str) -> dict[str, Any]:
        """Return validated params, the (baked-in) shapes and attributes, and the epilogue."""
        p, q = params, problem
        sizes = ("n", "c", "h", "w", "m", "kh", "kw", "oh", "ow", "group", "cg", "mg", "has_bias", "has_residual")
        context: dict[str, Any] = {**p, **{name: getattr(q, name) for name in sizes}, "act": q.activation}
        context.update(q.wq.context() if q.wq else {"wq": ""})
        (context["sy"], context["sx"]), (context["dy"], context["dx"]) = q.strides, q.dilations
        context["pt"], context["pl"] = q.pads[:2]
        if language == "glsl":
            launch = self.gl_launch(q, p)
            context.update(
                {f"tex_{name.lower()}": t.context() for name, t in zip(launch.samplers, launch.inputs, strict=True)}
            )
            context["out"] = launch.targets[0].context()
            context.setdefault("tex_qp", None)
            context["depthwise"] = q.depthwise and q.mg == 1
            return context
        vw = p["vec_width"]
        context.update(
            {
                "tile_p": p["wg_x"] * p["wpt_p"],
                "tile_o": p["wg_y"] * p["wpt_o"],
                "nv": p["wpt_o"] // vw,
                "o_tiles": math.ceil((q.m if p["algo"] in DEPTHWISE_ALGOS else q.mg) / (p["wg_y"] * p["wpt_o"])),
                "kk": q.cg * q.kh * q.kw,
                "row_tiles": math.ceil(q.ow / p["wpt_p"]),
                "dw_cols": _row_window(q, p),
            }
        )
        return context

    def subgroup_size(self, params: Params) -> int:
        """Return ``sg_share``: the direct kernel's X loads assume subgroups of that many lanes (0: none)."""
        return int(params.get("sg_share", 0))

    def launch(self, problem: ConvProblem, params: Params) -> Launch:
        """Return workgroups over (pixel tiles, group x channel tiles, batch); shapes are baked in the kernel."""
        q = problem
        tile_p, tile_o = params["wg_x"] * params["wpt_p"], params["wg_y"] * params["wpt_o"]
        depthwise = params["algo"] in DEPTHWISE_ALGOS
        channel_groups = math.ceil(q.m / tile_o) if depthwise else q.group * math.ceil(q.mg / tile_o)
        if params["algo"] == DEPTHWISE_ROWS:  # one thread per WPT_P pixels of a row, rows not merged
            pixel_groups = math.ceil(q.oh * math.ceil(q.ow / params["wpt_p"]) / params["wg_x"])
        else:
            pixel_groups = math.ceil(q.oh * q.ow / tile_p)
        return Launch((pixel_groups, channel_groups, q.n), (q.oh * q.ow, 0, 0, 0))

    def gl_launch(self, problem: ConvProblem, params: Params) -> GlLaunch:
        """Return the textures of the GLSL kernel.

        NCHW (``layout=0``): X ``[n*c*h, w]``, Y ``[n*m*oh, ow]``, R32F, one output per fragment; W is
        ``[m, cg*kh*kw]`` (OIHW rows). NHWC (``layout=1``): X ``[n*h*w, c]`` and Y ``[n*oh*ow, m]`` packed 4
        channels per RGBA32F texel; W is ``[kh*kw*cg, m]`` packed along output channels (for depthwise,
        ``[kh*kw, m]``), so one texel fetch gives the weights of 4 output channels.
        """
        q, square = problem, bool(params["square"])
        if params["layout"] == NHWC:
            x = TexLayout(q.n * q.h * q.w, q.c, 4, square)
            wrows = q.kh * q.kw if (q.depthwise and q.mg == 1) else q.kh * q.kw * q.cg
            w = TexLayout(wrows, q.m, 4, square)
            out = TexLayout(q.n * q.oh * q.ow, q.m, 4, square)
            bias = TexLayout(1, q.m, 4, False)
        else:
            x = TexLayout(q.n * q.c * q.h, q.w, 1, square)
            w = TexLayout(q.m, q.cg * q.kh * q.kw, 1, square)
            out = TexLayout(q.n * q.m * q.oh, q.ow, 1, square)
            bias = TexLayout(1, q.m, 1, False)
        inputs, samplers = [x, w], ["X", "W"]
        if q.has_bias:
            inputs.append(bias)
            samplers.append("BIAS")
        if q.has_residual:
            inputs.append(out)
            samplers.append("RES")
        if q.wq and q.wq.scaled:  # scales, zero points [2, channels] (int4: [groups, channels]) 4 channels a texel
            qp_rows = q.wq.groups(q.cg * q.kh * q.kw) if q.wq.group else 2
            inputs.append(TexLayout(qp_rows, 4 * math.ceil(q.wq.channels / 4), 4, False))
            samplers.append("QP")
        return GlLaunch(tuple(inputs), tuple(samplers), (out,), out.rows, out.cols, params.get("precision", 0) == 1)

    def device_inputs(self, problem: ConvProblem, params: Params, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Return X, W (and bias, residual) converted to the kernel's layouts."""
        q = problem
        nhwc = params["layout"] == NHWC
        x = np.asarray(inputs[0], np.float32).reshape(q.n, q.c, q.h, q.w)
        w = np.asarray(inputs[1], np.float32).reshape(q.m, q.cg, q.kh, q.kw)
        qparams = None
        if q.wq is not None and not q.wq.scaled:  # float16: the halves, no qparams
            w = _qweight.halves(w, "W")
        elif q.wq is not None:
            qparams = np.asarray(inputs[2 + q.has_bias + q.has_residual], np.float32)
            w = _qweight.integers(w, qparams, 0, q.wq, "W")
        glsl = "c_unroll" in params
        w_dev: np.ndarray
        if glsl:
            if nhwc and q.depthwise and q.mg == 1:
                w_dev = w.reshape(q.m, q.kh * q.kw).T  # [kh*kw, m]
            elif nhwc:
                # [kh, kw, cg, m]: row (ky*kw + kx)*cg + c holds the weights of every output channel
                w_dev = w.transpose(2, 3, 1, 0).reshape(q.kh * q.kw * q.cg, q.m)
            else:
                w_dev = w.reshape(q.m, -1)
        elif params["w_layout"] == HWIO:
            # [kh, kw, cg, m]: output channels contiguous (a group's are a contiguous run of mg)
            w_dev = w.transpose(2, 3, 1, 0)
        else:
            w_dev = w
        if q.wq is not None and q.wq.dtype == "int4" and not glsl:  # 8 values a word; GLSL: one a texture byte
            w_dev = _qweight.pack_int4(w_dev)
        arrays: list[np.ndarray] = [x.transpose(0, 2, 3, 1) if nhwc else x, w_dev]
        index = 2
        if q.has_bias:
            arrays.append(np.asarray(inputs[index], np.float32).reshape(q.m))
            index += 1
        if q.has_residual:
            res = np.asarray(inputs[index], np.float32).reshape(self.output_shape(q))
            arrays.append(res.transpose(0, 2, 3, 1) if nhwc else res)
        device = [np.ascontiguousarray(a, dtype=a.dtype if a is w_dev else np.float32) for a in arrays]
        if qparams is None or q.wq is None:
            return device
        return [*device, _qweight.device_qparams(qparams, q.wq, glsl)]

    def device_output_shape(self, problem: ConvProblem, params: Params) -> tuple[int, ...]:
        """Return ``(n, oh, ow, m)`` for NHWC kernels, else the NCHW output shape."""
        q = problem
        return (q.n, q.oh, q.ow, q.m) if params["layout"] == NHWC else self.output_shape(q)

    def input_layouts(self, problem: ConvProblem, params: Params) -> tuple[tuple[int, ...] | None, ...]:
        """Return NHWC for X and the residual of ``layout=1`` kernels, and W's order as :meth:`device_inputs` makes it.

        W is HWIO (``[kh, kw, cg, m]``, the ``(2, 3, 1, 0)`` transpose of OIHW) for WGSL ``w_layout=1`` and for
        NHWC GLSL kernels: a weight that is a runtime tensor (a graph input) is converted to it by a relayout.
        """
        nhwc = NHWC_AXES if params["layout"] == NHWC else None
        glsl = "c_unroll" in params
        hwio = (glsl and params["layout"] == NHWC) or (not glsl and params["w_layout"] == HWIO)
        w = (2, 3, 1, 0) if hwio else None
        return (nhwc, w, None, nhwc) if problem.has_bias else (nhwc, w, nhwc)

    def output_layout(self, problem: ConvProblem, params: Params) -> tuple[int, ...] | None:
        """Return NHWC for ``layout=1`` kernels."""
        return NHWC_AXES if params["layout"] == NHWC else None

    def from_device(self, problem: ConvProblem, params: Params, data: np.ndarray) -> np.ndarray:
        """Return the NCHW output from what the kernel wrote."""
        out = np.asarray(data).reshape(self.device_output_shape(problem, params))
        return np.ascontiguousarray(out.transpose(0, 3, 1, 2)) if params["layout"] == NHWC else out


SPEC = ConvSpec()
