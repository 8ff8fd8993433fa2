"""GEMM: ``C = act(A . op(B) + bias + residual)``, optional batch and ``trans_b``; spec, reference, space, launch."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from kernelforge.errors import ShapeError
from kernelforge.ops import _qweight
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
    register_tile_problem,
)
from kernelforge.ops.texture import TexLayout, first_too_big

# Accumulators per thread and unrolled statements per kernel are capped: past these, drivers spill
# registers or spend seconds compiling, and no device we measured got faster (wide_tiles devices: 256).
NARROW_ACCUMULATORS = 128
MAX_UNROLLED_FMAS = 1024
MAX_LOADS_PER_THREAD = 64


# TF.js WebGPU's matmul shape (8x8 threads, 4x4 outputs each, vec4, 32-wide K tile) is the built-in WGSL
# default: what an untuned device gets, and what tuning must beat.
def _f32(*configs: Params) -> tuple[Params, ...]:
    """The configs with f32 arithmetic (``precision=0``): the tables below predate the tunable."""
    return tuple({**c, "precision": 0} for c in configs)


DEFAULT_PARAMS: Params = {
    "wg_x": 8,
    "wg_y": 8,
    "wpt_m": 4,
    "wpt_n": 4,
    "tile_k": 32,
    "vec_width": 4,
    "vec_a": 1,
    "staging": 1,
    "precision": 0,
}
# Tried in order when the default breaks a constraint (N not a multiple of 4, tiny device limits).
_FALLBACKS: tuple[Params, ...] = _f32(
    {**DEFAULT_PARAMS, "vec_width": 1},
    {"wg_x": 8, "wg_y": 8, "wpt_m": 1, "wpt_n": 1, "tile_k": 8, "vec_width": 1, "vec_a": 1, "staging": 0},
    {"wg_x": 1, "wg_y": 1, "wpt_m": 1, "wpt_n": 1, "tile_k": 1, "vec_width": 1, "vec_a": 1, "staging": 0},
)

# Configs that won 1024^3 on our software GPUs; the tuner tries them right after the default. lavapipe
# runs 8 invocations as one SIMD group and loads memory one lane at a time, so its best kernels are one SIMD
# group per workgroup with a tall 16x16 register tile (many FMAs per load); SwiftShader prefers 8x8 tiles.
_SEEDS: tuple[Params, ...] = _f32(
    {"wg_x": 8, "wg_y": 1, "wpt_m": 16, "wpt_n": 16, "tile_k": 8, "vec_width": 4, "vec_a": 4, "staging": 0},
    {"wg_x": 8, "wg_y": 8, "wpt_m": 8, "wpt_n": 16, "tile_k": 8, "vec_width": 4, "vec_a": 4, "staging": 0},
    {"wg_x": 32, "wg_y": 1, "wpt_m": 8, "wpt_n": 8, "tile_k": 4, "vec_width": 4, "vec_a": 1, "staging": 0},
)

# Matrix-vector products (M <= SMALL_M rows, a batch-1 Gemm or a classifier head) get their own seeds, tried
# first: one row per workgroup, K read as vec4 from global memory with no staging or barriers. Tuned from
# them, 1x128x64t, 1x64x128t, 1x10x64t and 1x10x16t ran 6.8-12.6x their default on SwiftShader and 4.5-6.1x
# on lavapipe (GPU timestamps); the staged records they replaced had one barrier pair per K step.
SMALL_M = 4
_SMALL_M_SEEDS: tuple[Params, ...] = _f32(
    {"wg_x": 8, "wg_y": 1, "wpt_m": 1, "wpt_n": 8, "tile_k": 4, "vec_width": 1, "vec_a": 4, "staging": 0},
    {"wg_x": 8, "wg_y": 1, "wpt_m": 1, "wpt_n": 1, "tile_k": 4, "vec_width": 1, "vec_a": 4, "staging": 0},
    {"wg_x": 8, "wg_y": 1, "wpt_m": 1, "wpt_n": 2, "tile_k": 4, "vec_width": 1, "vec_a": 4, "staging": 0},
    {"wg_x": 4, "wg_y": 1, "wpt_m": 1, "wpt_n": 8, "tile_k": 16, "vec_width": 1, "vec_a": 4, "staging": 0},
)

# GLSL default in the spirit of TF.js WebGL's packed matmul: RGBA32F textures throughout (4 values per
# texel and per fragment), no unrolling, one render target.
GLSL_DEFAULT_PARAMS: Params = {"pack_c": 4, "mrt": 1, "k_unroll": 1, "a_pack": 4, "b_pack": 4, "square": 0}
_GLSL_FALLBACKS: tuple[Params, ...] = (
    {**GLSL_DEFAULT_PARAMS, "square": 1},
    {"pack_c": 1, "mrt": 1, "k_unroll": 1, "a_pack": 1, "b_pack": 1, "square": 1},
)

_SHAPE = re.compile(r"^(?:(\d+)x)?(\d+)x(\d+)x(\d+)(t?)$")


@dataclass(frozen=True)
class GemmProblem:
    """One GEMM call: ``batch`` x (M x K) . op(B) -> ``batch`` x (M x N).

    ``batch_b`` is 1 when one B is shared by every batch (a weight matrix), else equal to ``batch``. ``wq``: B is
    int8/uint8 on the device, dequantized per column or per tensor where it is read (:mod:`._qweight`).
    """

    m: int
    n: int
    k: int
    batch: int = 1
    batch_b: int = 1
    trans_b: bool = False
    has_bias: bool = False
    activation: Activation = field(default_factory=Activation)
    wq: WeightQuant | None = None
    has_residual: bool = False

    def __post_init__(self) -> None:
        for name in ("m", "n", "k", "batch", "batch_b"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ShapeError(f"gemm: {name} must be an integer >= 1, got {value!r}")
        if self.batch_b not in (1, self.batch):
            raise ShapeError(f"gemm: B batch {self.batch_b} must be 1 or equal to A batch {self.batch}")
        if self.wq is not None and (self.batch_b != 1 or self.wq.channels not in (1, self.n)):
            raise ShapeError(f"gemm: quantized B needs one B and 1 or N={self.n} scales, got {self.wq}")


class GemmSpec(OpSpec[GemmProblem]):
    """The GEMM op."""

    name: ClassVar[str] = "gemm"
    templates: ClassVar[dict[str, str]] = {"wgsl": "wgsl/gemm.wgsl.j2", "glsl": "glsl/gemm.frag.j2"}
    shape_syntax: ClassVar[str] = (
        "MxNxK or BxMxNxK, trailing 't' for trans_b, '/qi8' or '/qu8' int8/uint8 B ('c': per column), "
        "'/qi4g32' int4 B (a scale per column and 32 K), '/qf16' float16 B (1024x1024x1024,64x64x64t,1x384x384/qi8c)"
    )
    spaces: ClassVar[dict[str, tuple[Param, ...]]] = {
        "wgsl": (
            Param("wg_x", (1, 2, 4, 8, 16, 32, 64), "workgroup threads along N"),
            Param("wg_y", (1, 2, 4, 8, 16, 32), "workgroup threads along M"),
            Param("wpt_m", (1, 2, 4, 8, 16), "output rows per thread"),
            Param("wpt_n", (1, 2, 4, 8, 16), "output columns per thread"),
            Param("tile_k", (1, 2, 4, 8, 16, 32), "K step per iteration, fully unrolled"),
            Param("vec_width", (1, 4), "vec4 loads/stores of B and C along N"),
            Param("vec_a", (1, 4), "vec4 loads of A along K (unstaged kernels)"),
            Param("staging", (0, 1), "stage A/B tiles in workgroup memory"),
            Param(
                "precision",
                (0, 1, 2),
                "0 f32; 1 f16 products and sums; 2 f16 workgroup tiles, f32 sums (staged); f32 buffers (shader-f16)",
                absent=0,
            ),
        ),
        "glsl": (
            Param("pack_c", (1, 4), "outputs per fragment along N: R32F (1) or RGBA32F (4) render targets"),
            Param("mrt", (1, 2, 4), "output rows per fragment, one render target each (reuses B fetches)"),
            Param("k_unroll", (1, 2, 4, 8), "K loop unroll factor"),
            Param("a_pack", (1, 4), "A texture: 1 value per texel, or 4 consecutive K per RGBA32F texel"),
            Param("b_pack", (1, 4), "B texture: 1 value per texel, or 4 along its fastest axis per texel"),
            Param("square", (0, 1), "input textures row-aligned (0) or wrapped square-ish (1)"),
            Param("precision", (0, 1), "render targets: 0 float32, 1 half floats (R16F/RGBA16F)", absent=0),
        ),
    }

    def from_node(self, shapes: Sequence[tuple[int, ...] | None], attrs: Mapping[str, Any]) -> GemmProblem:
        """Build the problem of a node ``act(a @ op(b) + bias)``: inputs a ``[m, k]`` or ``[batch, m, k]``, b, bias?.

        Inputs: a, b, bias?, residual? (the output's shape, added before the activation: a transformer's skip
        connection), qparams?. Attrs: trans_b (bool), activation, weight_quant (optional: B's integer dtype, with
        ``qparams``). A 3-D ``b`` has the same leading dim as ``a``.
        """
        a, b = input_shape(self.name, shapes, 0), input_shape(self.name, shapes, 1)
        bias, residual = [*shapes[2:], None, None][:2]
        trans_b = bool(attrs["trans_b"])
        m, k = a[-2:]
        n = b[-2] if trans_b else b[-1]
        return GemmProblem(
            m=m,
            n=n,
            k=k,
            batch=a[0] if len(a) == 3 else 1,
            batch_b=b[0] if len(b) == 3 else 1,
            trans_b=trans_b,
            has_bias=bias is not None,
            activation=attrs["activation"],
            wq=_qweight.from_node(attrs, shapes[4] if len(shapes) > 4 else None, n, self.name, k),
            has_residual=residual is not None,
        )

    def parse_problem(self, text: str) -> GemmProblem:
        """Parse ``MxNxK``, ``BxMxNxK``, with a trailing ``t`` for ``trans_b`` (``64x64x64t``) and ``/qi8[c]``."""
        shape, dtype, per_column, group = _qweight.split_key(text.strip().lower())
        match = _SHAPE.match(shape)
        if not match:
            raise ShapeError(f"gemm shape {text!r} is not MxNxK or BxMxNxK (optional trailing 't' = trans_b)")
        batch = 1 if dtype else int(match.group(1) or 1)
        if dtype and match.group(1) and int(match.group(1)) != 1:
            raise ShapeError(f"gemm shape {text!r}: quantized B is one weight matrix (no batch)")
        n = int(match.group(3))
        return GemmProblem(
            m=int(match.group(2)),
            n=n,
            k=int(match.group(4)),
            batch=batch,
            batch_b=batch,
            trans_b=bool(match.group(5)),
            wq=_qweight.parsed(dtype, per_column, n, group),
        )

    def problem_key(self, problem: GemmProblem) -> str:
        """Return e.g. ``1024x1024x1024``, ``4x64x64x64t`` or ``4x64x64x64/b1`` (shared B)."""
        key = f"{problem.m}x{problem.n}x{problem.k}"
        if problem.batch > 1:
            key = f"{problem.batch}x{key}"
        if problem.trans_b:
            key += "t"
        if problem.batch > 1 and problem.batch_b == 1:
            key += "/b1"
        return key + (problem.wq.key if problem.wq else "")

    def shape_vector(self, problem: GemmProblem) -> tuple[float, ...]:
        """Return (M, N, K, batch, trans_b) for nearest-shape lookup."""
        return (problem.m, problem.n, problem.k, problem.batch, 1.0 + problem.trans_b)

    def flops(self, problem: GemmProblem) -> float:
        """Return 2 * batch * M * N * K."""
        return 2.0 * problem.batch * problem.m * problem.n * problem.k

    def default_params(self, problem: GemmProblem, limits: Limits, language: str) -> Params:
        """Return the language's default, or the first fallback that fits the problem and device."""
        candidates = (DEFAULT_PARAMS, *_FALLBACKS) if language == "wgsl" else (GLSL_DEFAULT_PARAMS, *_GLSL_FALLBACKS)
        return self.first_fitting(problem, candidates, limits, language)

    def seed_params(self, problem: GemmProblem, limits: Limits, language: str) -> list[Params]:
        """Return the WGSL configs that won on our software GPUs (valid ones only), small-M ones first.

        Where the device has ``shader-f16``, f16 twins follow the first one: f16 arithmetic, and (of the first
        staged seed) f16 workgroup tiles with f32 sums. GLSL: the default's half-float twin, so the search times
        both render-target formats early.
        """
        if language != "wgsl":
            twin = {**self.default_params(problem, limits, language), "precision": 1}
            return [twin] if self.constraints(problem, twin, limits, language) is None else []
        seeds = (*_SMALL_M_SEEDS, *_SEEDS) if problem.m <= SMALL_M else _SEEDS
        valid = [s for s in seeds if self.constraints(problem, s, limits, language) is None]
        if limits.f16 and valid:  # the first seeds again in f16, early: the search then knows every precision
            staged = next((s for s in valid if s["staging"]), None)
            twins = [{**valid[0], "precision": 1}, *([{**staged, "precision": 2}] if staged is not None else [])]
            valid[1:1] = twins
        return valid

    def tolerance(self, problem: GemmProblem, params: Params) -> float:
        """Return the float32 bound, or :data:`F16_TOLERANCE` for f16 arithmetic or tiles (``precision`` 1, 2)."""
        return F16_TOLERANCE if params.get("precision", 0) else FLOAT32_TOLERANCE

    def constraints(self, problem: GemmProblem, params: Params, limits: Limits, language: str) -> str | None:
        """Return why ``params`` cannot run ``problem`` on a device with ``limits``, or None."""
        if language == "glsl":
            return self._glsl_constraints(problem, params, limits)
        p = params
        if p.get("precision", 0) and not limits.f16:
            return f"precision={p['precision']} (f16) needs a device with the shader-f16 feature"
        if p.get("precision", 0) == 2 and not p["staging"]:
            return "precision=2 (f16 workgroup tiles) needs staging=1"
        threads = p["wg_x"] * p["wg_y"]
        tile_m, tile_n = p["wg_y"] * p["wpt_m"], p["wg_x"] * p["wpt_n"]
        if p["wg_x"] > limits.max_wg_x or p["wg_y"] > limits.max_wg_y:
            return f"workgroup {p['wg_x']}x{p['wg_y']} exceeds the device's per-axis limits"
        if threads > limits.max_invocations:
            return f"{threads} invocations per workgroup > device limit {limits.max_invocations}"
        if p["wpt_n"] % p["vec_width"]:
            return f"wpt_n={p['wpt_n']} is not a multiple of vec_width={p['vec_width']}"
        if p["vec_width"] == 4 and problem.n % 4:
            return f"vec_width=4 needs N % 4 == 0 (N={problem.n})"
        if p["vec_a"] == 4:
            if p["staging"]:
                return "vec_a=4 applies to unstaged kernels only (staged tiles are read from workgroup memory)"
            if problem.k % 4 or p["tile_k"] % 4:
                return f"vec_a=4 needs K % 4 == 0 and tile_k % 4 == 0 (K={problem.k}, tile_k={p['tile_k']})"
        tile = register_tile_problem(limits, "wpt_m", p["wpt_m"], p["wpt_m"] * p["wpt_n"], NARROW_ACCUMULATORS)
        if tile:
            return tile
        nv = p["wpt_n"] // p["vec_width"]
        if p["tile_k"] * p["wpt_m"] * nv > MAX_UNROLLED_FMAS:
            return f"unrolled body of {p['tile_k'] * p['wpt_m'] * nv} FMAs > {MAX_UNROLLED_FMAS}"
        if p["staging"]:
            shared = (2 if p.get("precision", 0) == 2 else 4) * p["tile_k"] * (tile_m + tile_n)
            if shared > limits.max_workgroup_storage:
                return f"{shared} bytes of workgroup memory > device limit {limits.max_workgroup_storage}"
            loads = max(math.ceil(tile_m * p["tile_k"] / threads), math.ceil(tile_n * p["tile_k"] / threads))
            if loads > MAX_LOADS_PER_THREAD:
                return f"{loads} tile loads per thread > {MAX_LOADS_PER_THREAD}"
        groups = (math.ceil(problem.n / tile_n), math.ceil(problem.m / tile_m), problem.batch)
        if max(groups) > limits.max_workgroups_per_dim:
            return f"dispatch {groups} exceeds {limits.max_workgroups_per_dim} workgroups per dimension"
        largest = 4 * max(
            problem.batch * problem.m * problem.k,
            problem.batch_b * problem.k * problem.n,
            problem.batch * problem.m * problem.n,
        )
        if largest > limits.max_storage_binding:
            return f"a {largest}-byte buffer exceeds the device's storage binding limit {limits.max_storage_binding}"
        return None

    def _glsl_constraints(self, problem: GemmProblem, params: Params, limits: Limits) -> str | None:
        if params["mrt"] > limits.max_draw_buffers:
            return f"mrt={params['mrt']} render targets > MAX_DRAW_BUFFERS {limits.max_draw_buffers}"
        if problem.batch_b > 1 and problem.m % params["mrt"]:
            return f"mrt={params['mrt']} must divide M={problem.m} when B is batched (one B per fragment)"
        launch = self.gl_launch(problem, params)
        named = [*zip(launch.samplers, launch.inputs, strict=True), ("output", launch.targets[0])]
        return first_too_big(named, limits.max_texture_size)

    def output_shape(self, problem: GemmProblem) -> tuple[int, ...]:
        """Return (batch, M, N), or (M, N) when batch is 1."""
        return (problem.batch, problem.m, problem.n) if problem.batch > 1 else (problem.m, problem.n)

    def make_inputs(self, problem: GemmProblem, rng: np.random.Generator) -> list[np.ndarray]:
        """Return A, B (bias, residual) with values in [-1, 1]; a quantized B is made of integers, then qparams."""
        b_shape = (problem.n, problem.k) if problem.trans_b else (problem.k, problem.n)
        a = rng.uniform(-1, 1, (problem.batch, problem.m, problem.k)).astype(np.float32)
        if problem.wq is None:
            arrays = [a, rng.uniform(-1, 1, (problem.batch_b, *b_shape)).astype(np.float32)]
            qparams = None
        else:
            b, qparams = _qweight.random_weight(rng, b_shape, 0 if problem.trans_b else 1, problem.wq)
            arrays = [a, b]
        if problem.has_bias:
            arrays.append(rng.uniform(-1, 1, problem.n).astype(np.float32))
        if problem.has_residual:
            arrays.append(rng.uniform(-1, 1, self.output_shape(problem)).astype(np.float32))
        return arrays if qparams is None else [*arrays, qparams]

    def reference(self, problem: GemmProblem, inputs: Sequence[np.ndarray]) -> np.ndarray:
        """Compute act(A . op(B) + bias + residual) in float64 and return float32 of :meth:`output_shape`."""
        a = np.asarray(inputs[0], np.float64).reshape(problem.batch, problem.m, problem.k)
        b_shape = (problem.n, problem.k) if problem.trans_b else (problem.k, problem.n)
        b = np.asarray(inputs[1], np.float64).reshape(problem.batch_b, *b_shape)
        if problem.trans_b:
            b = b.transpose(0, 2, 1)
        out = a @ b
        if problem.has_bias:
            out = out + np.asarray(inputs[2], np.float64).reshape(problem.n)
        if problem.has_residual:
            out = out + np.asarray(inputs[2 + problem.has_bias], np.float64).reshape(out.shape)
        out = problem.activation.apply(out)
        return out.astype(np.float32).reshape(self.output_shape(problem))

    def template_context(self, problem: GemmProblem, params: Params, language: str) -> dict[str, Any]:
        """Return validated params plus the derived sizes, texture layouts and epilogue."""
        p = params
        if language == "glsl":
            launch = self.gl_launch(problem, p)
            return {
                **p,
                "m": problem.m,
                "n": problem.n,
                "k": problem.k,
                "rows": problem.batch * problem.m,
                "b_batched": problem.batch_b > 1,
                "trans_b": bool(problem.trans_b),
                "has_bias": bool(problem.has_bias),
                "has_residual": bool(problem.has_residual),
                "act": problem.activation,
                "a": launch.inputs[0].context(),
                "b": launch.inputs[1].context(),
                "bias": launch.inputs[2].context() if problem.has_bias else None,
                "res": launch.inputs[2 + problem.has_bias].context() if problem.has_residual else None,
                "out": launch.targets[0].context(),
                "qp": launch.inputs[-1].context() if problem.wq and problem.wq.scaled else None,
                **(problem.wq.context() if problem.wq else {"wq": ""}),
            }
        threads = p["wg_x"] * p["wg_y"]
        tile_m, tile_n = p["wg_y"] * p["wpt_m"], p["wg_x"] * p["wpt_n"]
        tile_nv = tile_n // p["vec_width"]
        return {
            **p,
            "tile_m": tile_m,
            "tile_n": tile_n,
            "tile_nv": tile_nv,
            "nv": p["wpt_n"] // p["vec_width"],
            "a_loads": math.ceil(tile_m * p["tile_k"] / threads),
            "b_loads": math.ceil(tile_nv * p["tile_k"] / threads),
            "vec4_b": p["vec_width"] == 4 and not problem.trans_b,
            # what the problem's shape makes certain (gemm.wgsl.j2 leaves out the guards it never needs)
            "m_even": problem.m % tile_m == 0,
            "n_even": (problem.n // p["vec_width"]) % tile_nv == 0,
            "k_even": problem.k % p["tile_k"] == 0,
            "trans_b": bool(problem.trans_b),
            "has_bias": bool(problem.has_bias),
            "has_residual": bool(problem.has_residual),
            "act": problem.activation,
            **(problem.wq.context() if problem.wq else {"wq": ""}),
        }

    def launch(self, problem: GemmProblem, params: Params) -> Launch:
        """Return one workgroup per TILE_M x TILE_N block per batch, and the Dims uniforms."""
        tile_m = params["wg_y"] * params["wpt_m"]
        tile_n = params["wg_x"] * params["wpt_n"]
        vw = params["vec_width"]
        b_elems = problem.k * problem.n
        if vw == 4 and not problem.trans_b:
            b_elems //= 4
        uniforms = (
            problem.m,
            problem.n,
            problem.k,
            problem.m * problem.k,
            b_elems if problem.batch_b > 1 else 0,
            problem.m * problem.n // vw,
            0,
            0,
        )
        groups = (math.ceil(problem.n / tile_n), math.ceil(problem.m / tile_m), problem.batch)
        return Launch(groups, uniforms)

    def gl_launch(self, problem: GemmProblem, params: Params) -> GlLaunch:
        """Return the textures and render targets of the GLSL kernel.

        A is ``[batch*M, K]``, B ``[batch_b*K, N]`` (``[batch_b*N, K]`` with trans_b), bias ``[1, N]``, the
        residual ``[batch*M, N]``, a quantized B's scales and zero points ``[2, 4 * ceil(channels / 4)]`` (int4:
        its scales, ``[groups, 4 * ceil(channels / 4)]``); the
        output is ``mrt`` targets of ``pack_c`` values per texel, row-aligned or square-ish like the inputs.
        """
        square = bool(params["square"])
        rows = problem.batch * problem.m
        b_rows = problem.batch_b * (problem.n if problem.trans_b else problem.k)
        b_cols = problem.k if problem.trans_b else problem.n
        inputs = [
            TexLayout(rows, problem.k, params["a_pack"], square),
            TexLayout(b_rows, b_cols, params["b_pack"], square),
        ]
        samplers = ["A", "B"]
        if problem.has_bias:
            inputs.append(TexLayout(1, problem.n, params["pack_c"], False))
            samplers.append("BIAS")
        if problem.has_residual:  # the whole output matrix, laid out like the targets' rows
            inputs.append(TexLayout(rows, problem.n, params["pack_c"], square))
            samplers.append("RES")
        if problem.wq and problem.wq.scaled:  # scales, zero points [2, channels] (int4: [groups, channels]) 4 a texel
            qp_rows = problem.wq.groups(problem.k) if problem.wq.group else 2
            inputs.append(TexLayout(qp_rows, 4 * math.ceil(problem.wq.channels / 4), 4, False))
            samplers.append("QP")
        target = TexLayout(math.ceil(rows / params["mrt"]), problem.n, params["pack_c"], square)
        half = params.get("precision", 0) == 1
        return GlLaunch(tuple(inputs), tuple(samplers), (target,) * params["mrt"], rows, problem.n, half)

    def device_inputs(self, problem: GemmProblem, params: Params, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Return A, B (bias, residual) as contiguous float32 arrays; a quantized B as its integers, then qparams.

        A float16 B is its halves, with no qparams.
        """
        count = 2 + problem.has_bias + problem.has_residual
        arrays = [np.ascontiguousarray(x, dtype=np.float32) for x in inputs[:count]]
        if problem.wq is None:
            return arrays
        b_shape = (problem.n, problem.k) if problem.trans_b else (problem.k, problem.n)
        if not problem.wq.scaled:  # float16: the halves (two a WGSL word, a half-float texture in GLSL)
            arrays[1] = _qweight.halves(arrays[1].reshape(b_shape), "B")
            return arrays
        qparams = np.asarray(inputs[count], np.float32)
        glsl = "pack_c" in params
        arrays[1] = _qweight.integers(arrays[1].reshape(b_shape), qparams, int(not problem.trans_b), problem.wq, "B")
        if problem.wq.dtype == "int4" and not glsl:  # WGSL reads 8 values a word; GLSL one a byte of its texture
            arrays[1] = _qweight.pack_int4(arrays[1])
        return [*arrays, _qweight.device_qparams(qparams, problem.wq, glsl)]


SPEC = GemmSpec()
