"""Attention: ``out = softmax(scale * Q·Kᵀ (masked)) · V`` in one kernel that never holds the [Sq, Skv] scores.

The problem, its masks and NaN rules, the ``--shape`` syntax and the float64 reference live in
:mod:`kernelforge.ops._attention_problem`. The WGSL kernel is a flash-attention style loop: a workgroup owns
``q_per_wg * q_per_thread`` query rows of one head and walks the keys in tiles of ``tile_kv`` (staged in
workgroup memory or read straight from the buffers), keeping per row a running max, a running sum and an
output accumulator that is rescaled whenever the max grows (Milakov & Gimelshein 2018; Dao et al. 2022).
``threads_per_q`` threads share a row, each owning a slice of D and of Dv (partial dot products meet in
workgroup memory, or by ``subgroupAdd``); ``vec4`` reads Q, K and V four values at a time; ``sg_share`` lets
the lanes of a subgroup share each K/V row's loads (software GPUs load lane by lane). The GLSL kernel (WebGL2
fragments) gives each fragment ``mrt`` texels of one query's output (one per render target) and walks every
key with the same online softmax; ``key_block`` scores four keys per step.

Node inputs: ``q, k, v, add_mask, select_mask`` (either mask ``""`` when absent). Node attributes:
``scale`` (float), ``k_transposed`` (bool), ``causal`` (int offset or None), ``fill`` (float, may be -inf),
``zero_empty`` (bool), ``seq_major`` (letters of ``qkvo``: those tensors are ``[B, S, H, D]``; the graph
pass ``graph/fuse_heads.py`` sets it when it drops the head transposes around the node).
:meth:`AttentionSpec.from_onnx` reads an ONNX ``Attention`` node's attributes (the graph layer's converter
handles its 3-D form, boolean masks and the inputs it cannot run); the graph pass
``graph/fuse_attention.py`` builds these nodes from the unfused MatMul/Softmax/MatMul pattern.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from kernelforge.errors import ShapeError
from kernelforge.ops._attention_problem import (
    AttentionProblem,
    attention_key,
    attention_reference,
    mask_strides,
    parse_attention,
)
from kernelforge.ops.shapes import linear_grid, next_pow2
from kernelforge.ops.spec import GlLaunch, Launch, Limits, OpSpec, Param, Params, input_shape, register_tile_problem
from kernelforge.ops.texture import TexLayout, first_too_big

__all__ = ["SPEC", "AttentionProblem", "AttentionSpec"]

NARROW_REGISTERS = 128
"""Floats of Q slices and accumulators a thread may hold without ``wide_tiles`` (two 64-wide heads)."""
MAX_UNROLLED = 512
"""Unrolled statements per key (dot products, reductions, accumulator updates) a kernel may have."""
_SG_CHOICES = (4, 8, 16, 32)
"""The ``sg_share`` values besides 0: subgroup sizes a kernel may assume."""
NAN_BITS = 0x7FC00000
"""A quiet NaN's bits: WGSL constants may not be NaN or infinite, so such values reach kernels as uniform bits."""


def _f32_bits(value: float) -> int:
    return int(np.array(value, np.float32).view(np.uint32))


def _subgroup_problem(params: Params, limits: Limits) -> str | None:
    """Return why subgroup-shared K/V loads (``sg_share``) cannot run on the device, or None."""
    s = params["sg_share"]
    if not s:
        return None
    if s != limits.subgroup_size:
        have = f"subgroups of {limits.subgroup_size}" if limits.subgroup_size else "no fixed-size subgroups"
        return f"sg_share={s} needs subgroups of exactly {s} lanes; the device has {have}"
    # every lane of a subgroup must read the same K/V rows (all lanes of a workgroup share the head) and exist
    # (a broadcast from a missing lane is undefined: a 1-D workgroup of a multiple of S threads gets full
    # subgroups); with threads_per_q = S the workgroup is the one subgroup of one query row's threads
    if params["stage_kv"]:
        return f"sg_share={s} reads K and V from the buffers (stage_kv=0)"
    if params["threads_per_q"] == 1:
        return None if params["q_per_wg"] % s == 0 else f"sg_share={s} needs q_per_wg a multiple of {s}"
    if params["threads_per_q"] != s or params["q_per_wg"] != 1:
        return f"sg_share={s} needs threads_per_q=1, or threads_per_q={s} with q_per_wg=1"
    return None


class AttentionSpec(OpSpec[AttentionProblem]):
    """The attention op."""

    name: ClassVar[str] = "attention"
    templates: ClassVar[dict[str, str]] = {"wgsl": "wgsl/attention.wgsl.j2", "glsl": "glsl/attention.frag.j2"}
    shape_syntax: ClassVar[str] = (
        "BxHxSqxD, then options: ':kv<Skv>', ':dv<Dv>', ':g<kv heads>', ':kt' (K given as Kᵀ), ':s<scale>', "
        "':m<dims>' (additive mask), ':w<dims>' (select mask) with ':f<fill>' (default -inf), ':c' or ':c<offset>' "
        "(causal), ':lb<offset>' (keys j < i + offset take no part), ':cap<softcap>', ':z' (empty rows give 0), "
        "':l<letters of qkvo>' (those tensors [B, S, H, D]): "
        "1x12x128x64:m1x1x1x128, 1x12x1x64:kv128, 2x8x197x64:c:z, 1x12x128x64:lqkvo"
    )
    onnx_ops: ClassVar[tuple[str, ...]] = ("Attention",)
    spaces: ClassVar[dict[str, tuple[Param, ...]]] = {
        "wgsl": (
            Param("q_per_wg", (1, 2, 4, 8, 16, 32, 64), "query rows of threads per workgroup"),
            Param("q_per_thread", (1, 2, 4), "queries each thread computes (K and V loads shared between them)"),
            Param("tile_kv", (4, 8, 16, 32, 64), "keys per tile (staged together, reduced together)"),
            Param("threads_per_q", (1, 2, 4, 8, 16), "threads sharing a query, each owning a slice of D and Dv"),
            Param("vec4", (0, 1), "read Q, K and V as vec4 (D and Dv multiples of 4 per thread)"),
            Param("stage_kv", (0, 1), "stage each K/V tile in workgroup memory (1) or read the buffers (0)"),
            Param(
                "sg_share",
                (0, *_SG_CHOICES),
                "subgroup lanes that share each K/V row's loads: threads_per_q=1: S queries subgroupBroadcast() "
                "them; threads_per_q=S: one query's D split, subgroupAdd() of the partial dot products; 0: none",
            ),
        ),
        "glsl": (
            Param("pack", (1, 4), "output dims per texel: R32F (1) or RGBA32F (4) output and V textures"),
            Param("mrt", (1, 2, 4), "render targets: texels of one query's output per fragment"),
            Param("key_block", (1, 4), "keys scored per step (4: a vec4 of scores)"),
            Param("square", (0, 1), "textures row-aligned (0) or wrapped square-ish (1)"),
        ),
    }

    # --- problems ------------------------------------------------------------------------------------------

    def from_node(self, shapes: Sequence[tuple[int, ...] | None], attrs: Mapping[str, Any]) -> AttentionProblem:
        """Build the problem of a node ``(q, k, v, add_mask?, select_mask?)`` (see the module docstring).

        Raises:
            ShapeError: When the inputs are not 4-D or disagree on a size.
        """
        q, k, v = (input_shape(self.name, shapes, i) for i in range(3))
        if len(q) != 4 or len(k) != 4 or len(v) != 4:
            raise ShapeError(f"attention: q, k and v must be 4-D, got {q}, {k} and {v}")
        seq_major = str(attrs.get("seq_major", ""))
        # the problem's fields are of the [B, H, S, D] view; a sequence-major tensor swaps its middle axes
        q, k, v = ((x[0], x[2], x[1], x[3]) if c in seq_major else x for x, c in zip((q, k, v), "qkv", strict=True))
        transposed = bool(attrs.get("k_transposed", False))
        kv_len, k_dim = (k[3], k[2]) if transposed else (k[2], k[3])
        if k[:2] != v[:2] or k[0] != q[0] or kv_len != v[2] or k_dim != q[3]:
            what = "Kᵀ" if transposed else "K"
            raise ShapeError(f"attention: q {q}, {what} {k} and v {v} disagree on batch, heads, keys or head size")
        add = shapes[3] if len(shapes) > 3 else None
        select = shapes[4] if len(shapes) > 4 else None
        return AttentionProblem(
            q[0], q[1], q[2], q[3], kv_len, v[3], k[1], transposed,
            attrs.get("scale"), add, select, attrs.get("fill", -math.inf), attrs.get("causal"),
            bool(attrs.get("zero_empty", False)), lower=attrs.get("lower"), softcap=attrs.get("softcap"),
            seq_major=seq_major,
        )  # fmt: skip

    def from_onnx(self, op_type: str, opset: int, attrs: Mapping[str, Any]) -> dict[str, Any]:
        """Return the node attributes of an ONNX ``Attention`` node (opset 23+), refusing what no kernel runs.

        The causal limit and a sliding window (``left_window_size``/``right_window_size``, opset 24+) become
        ``causal`` and ``lower`` for a query at position ``i``; with a KV cache the graph layer shifts both by
        the past's length.

        Raises:
            ValueError: Naming a negative ``softcap``, ``softmax_precision`` other than float32, or a window
                size below -1.
        """
        cap = float(attrs.get("softcap", 0.0))
        if cap < 0.0 or not math.isfinite(cap):
            raise ValueError(f"softcap={attrs['softcap']} is not a finite number >= 0")
        precision = int(attrs.get("softmax_precision", 1))
        if precision not in (0, 1):
            raise ValueError(f"softmax_precision={precision} is not supported (only float32)")
        left, right = (int(attrs.get(side, -1)) for side in ("left_window_size", "right_window_size"))
        for side, size in (("left_window_size", left), ("right_window_size", right)):
            if size < -1:
                raise ValueError(f"{side}={size} is not -1 or a size >= 0")
        causal = attrs.get("is_causal", 0)
        if causal not in (0, 1):
            raise ValueError(f"is_causal={causal!r} is not 0 or 1")
        uppers = ([0] if causal else []) + ([right] if right >= 0 else [])
        scale = attrs.get("scale")
        out: dict[str, Any] = {"k_transposed": False, "causal": min(uppers) if uppers else None, "zero_empty": True}
        if left >= 0:
            out["lower"] = -left
        if cap > 0.0:
            out["softcap"] = cap
        if scale is not None:
            if not math.isfinite(float(scale)):
                raise ValueError(f"scale={scale!r} is not finite")
            out["scale"] = float(scale)
        return out

    def parse_problem(self, text: str) -> AttentionProblem:
        """Parse ``BxHxSqxD[:options]`` (see :attr:`shape_syntax`)."""
        return parse_attention(text)

    def problem_key(self, problem: AttentionProblem) -> str:
        """Return e.g. ``1x12x128x64:m1x1x1x128`` (only options that differ from their defaults)."""
        return attention_key(problem)

    def shape_vector(self, problem: AttentionProblem) -> tuple[float, ...]:
        """Return (B*H, Sq, Skv, D, Dv)."""
        p = problem
        return (float(p.bh), float(p.q_len), float(p.skv), float(p.head_dim), float(p.dv))

    def flops(self, problem: AttentionProblem) -> float:
        """Return ``2 * B*H * Sq * Skv * (D + Dv)`` (the two products; the softmax is a few more per score)."""
        p = problem
        return 2.0 * p.bh * p.q_len * p.skv * (p.head_dim + p.dv)

    # --- params --------------------------------------------------------------------------------------------

    def _wgsl_candidates(self, problem: AttentionProblem, limits: Limits) -> list[Params]:
        """Return the device-neutral kernels in order of preference (the default is the first that fits)."""
        p = problem
        rows = next_pow2(p.q_len)
        base = {"q_per_wg": 1, "q_per_thread": 1, "tile_kv": 4, "threads_per_q": 1, "vec4": 0, "stage_kv": 0}
        out = []
        # a flash-attention tile: K/V tiles staged, about 16 floats of Q and of the accumulator per thread
        for tile in sorted({max(4, min(t, next_pow2(p.skv))) for t in (16, 8, 4)}, reverse=True):
            for threads in (max(1, min(16, p.head_dim // 16)), 4, 2, 1, 8, 16):
                for vec4 in (1, 0):
                    q_per_wg = max(1, min(64 // threads, rows))
                    out.append({**base, "q_per_wg": q_per_wg, "tile_kv": tile, "threads_per_q": threads,
                                "vec4": vec4, "stage_kv": 1, "sg_share": 0})  # fmt: skip
        # then K and V read from the buffers by one row of threads (wide heads: split between up to 16 threads)
        out += [{**base, "threads_per_q": threads, "sg_share": 0} for threads in (1, 2, 4, 8, 16)]
        return out

    def _shared_candidates(self, problem: AttentionProblem, limits: Limits) -> list[Params]:
        """Return the kernels whose subgroup lanes share each K/V row's loads (devices with fixed-size subgroups)."""
        sg = limits.subgroup_size
        if sg not in _SG_CHOICES:
            return []
        base = {"q_per_wg": 1, "q_per_thread": 1, "tile_kv": 4, "threads_per_q": 1, "vec4": 0, "stage_kv": 0}
        # software GPUs load lane by lane: the lanes of a subgroup share each K/V row (queries that split its
        # loads, or one query's lanes for a decoder step): 7.0 ms for 1x12x128x64 on lavapipe, the unshared
        # kernels 96-150 ms; two queries a thread and vec4 loads (where registers allow: wide tiles) 3.4 ms
        if next_pow2(problem.q_len) >= sg:
            return [{**base, "q_per_wg": sg, "q_per_thread": 2, "vec4": 1, "sg_share": sg},
                    {**base, "q_per_wg": sg, "sg_share": sg}]  # fmt: skip
        return [{**base, "threads_per_q": sg, "sg_share": sg}]

    def default_params(self, problem: AttentionProblem, limits: Limits, language: str) -> Params:
        """Return a size-based default, or the first fallback that fits the problem and the device.

        The WGSL default assumes nothing of subgroups: the kernels that share loads across subgroup lanes win
        on CPU rasterisers, which load lane by lane, a cost real GPUs do not have, so they are seeds that the
        tuner measures first rather than what every untuned device runs.
        """
        if language == "glsl":
            # square-ish textures first: the output is only Dv / (4 * mrt) texels wide, and llvmpipe shades a
            # row-aligned one in mostly idle 4x4 blocks (MiniLM's heads: 29 ms row-aligned, 12 ms square)
            candidates = [
                {"pack": 4, "mrt": mrt, "key_block": 4, "square": square} for mrt in (4, 2, 1) for square in (1, 0)
            ] + [{"pack": 1, "mrt": 1, "key_block": 1, "square": 1}]
        else:
            candidates = self._wgsl_candidates(problem, limits)
        return self.first_fitting(problem, candidates, limits, language)

    def seed_params(self, problem: AttentionProblem, limits: Limits, language: str) -> list[Params]:
        """Return the subgroup-sharing kernels that fit, and their neighbours (vec widths, rows, workgroups).

        The space is large and most of it (the unshared kernels) is an order of magnitude slower on the devices
        that share loads, so random trials seldom land near these; the tuner measures them first.
        """
        if language != "wgsl":
            return []
        sg = limits.subgroup_size
        fits = [
            p for p in self._shared_candidates(problem, limits) if not self.constraints(problem, p, limits, language)
        ]
        if not fits:
            return []
        first = fits[0]
        seeds = [*fits, {**first, "vec4": 1 - first["vec4"]}, {**first, "q_per_thread": 1, "vec4": 1}]
        seeds += [{**first, "q_per_wg": 2 * sg}, {**first, "q_per_wg": 2 * sg, "q_per_thread": 1}]
        seeds += [{**first, "q_per_thread": 2, "vec4": 0}, {**first, "q_per_wg": 4 * sg, "q_per_thread": 1}]
        valid = [p for p in seeds if self.constraints(problem, p, limits, language) is None]
        return list({tuple(sorted(p.items())): p for p in valid}.values())

    def constraints(self, problem: AttentionProblem, params: Params, limits: Limits, language: str) -> str | None:
        """Return why ``params`` cannot run ``problem`` on a device with ``limits``, or None."""
        if language == "glsl":
            return self._glsl_constraints(problem, params, limits)
        p, t = problem, params["threads_per_q"]
        bq, qt, tk = params["q_per_wg"], params["q_per_thread"], params["tile_kv"]
        if t > limits.max_wg_x or bq > limits.max_wg_y:
            return f"workgroup {t}x{bq} exceeds the device's per-axis limits"
        if t * bq > limits.max_invocations:
            return f"{t * bq} invocations per workgroup > device limit {limits.max_invocations}"
        sharing = _subgroup_problem(params, limits)
        if sharing:
            return sharing
        width = 4 * t if params["vec4"] else t
        if p.head_dim % width or p.dv % width:
            return f"D={p.head_dim} and Dv={p.dv} must be multiples of {width} (threads_per_q x vec width)"
        if bq * qt > next_pow2(p.q_len):
            return f"{bq * qt} queries per workgroup leave rows idle with Sq={p.q_len}"
        if tk > max(4, next_pow2(p.skv)):
            return f"tile_kv={tk} is longer than the {p.skv} keys"
        shared_sum = t > 1 and not params["sg_share"]
        if not params["stage_kv"] and not shared_sum and tk != 4:
            return "tile_kv only matters with stage_kv=1 or threads_per_q > 1 summing in workgroup memory (use 4)"
        tile = register_tile_problem(limits, "q_per_thread", qt, qt * (p.head_dim + p.dv) // t, NARROW_REGISTERS)
        if tile:
            return tile
        units = (p.head_dim + p.dv) // width
        if qt * (units + t) > MAX_UNROLLED:
            return f"{qt * (units + t)} unrolled statements per key > {MAX_UNROLLED}"
        shared = 4 * (tk * (p.head_dim + p.dv) if params["stage_kv"] else 0)
        shared += 4 * (bq * qt * tk * t if shared_sum else 0)
        if shared > limits.max_workgroup_storage:
            return f"{shared} bytes of workgroup memory > device limit {limits.max_workgroup_storage}"
        groups = self.launch(p, params).workgroups
        if max(groups) > limits.max_workgroups_per_dim:
            return f"dispatch {groups} exceeds {limits.max_workgroups_per_dim} workgroups per dimension"
        for what, shape in (("q", p.q_shape), ("k", p.k_shape), ("v", p.v_shape), ("output", p.out_shape)):
            if 4 * math.prod(shape) > limits.max_storage_binding:
                return f"{what}: {4 * math.prod(shape)} bytes exceed the storage binding limit"
        return None

    def _glsl_constraints(self, problem: AttentionProblem, params: Params, limits: Limits) -> str | None:
        if params["mrt"] > limits.max_draw_buffers:
            return f"mrt={params['mrt']} render targets > MAX_DRAW_BUFFERS {limits.max_draw_buffers}"
        if problem.dv % params["mrt"]:
            return f"mrt={params['mrt']} must divide Dv={problem.dv}"
        launch = self.gl_launch(problem, params)
        named = [*zip(launch.samplers, launch.inputs, strict=True), ("output", launch.targets[0])]
        return first_too_big(named, limits.max_texture_size)

    # --- numbers -------------------------------------------------------------------------------------------

    def output_shape(self, problem: AttentionProblem) -> tuple[int, ...]:
        """Return ``[B, H, Sq, Dv]``."""
        return problem.out_shape

    def make_inputs(self, problem: AttentionProblem, rng: np.random.Generator) -> list[np.ndarray]:
        """Return Q, K, V from N(0, 1) (K as Kᵀ when transposed), then the masks.

        The additive mask is in [-2, 0] with a fifth of it at -10000 (padding); the select mask keeps four
        fifths of the keys and always key 0, so no row is empty.
        """
        p = problem
        arrays = [rng.standard_normal(shape).astype(np.float32) for shape in (p.q_shape, p.k_shape, p.v_shape)]
        if p.add_mask is not None:
            add = rng.uniform(-2, 0, p.add_mask)
            arrays.append(np.where(rng.random(p.add_mask) < 0.2, -10000.0, add).astype(np.float32))
        if p.select_mask is not None:
            keep = (rng.random(p.select_mask) < 0.8).astype(np.float32)
            keep[..., 0] = 1.0
            arrays.append(keep)
        return arrays

    def reference(self, problem: AttentionProblem, inputs: Sequence[np.ndarray]) -> np.ndarray:
        """Compute the attention in float64 (NaN and empty rows as the module docstring says), as float32."""
        return attention_reference(problem, inputs)

    # --- kernels -------------------------------------------------------------------------------------------

    def template_context(self, problem: AttentionProblem, params: Params, language: str) -> dict[str, Any]:
        """Return the params plus the problem's constants (sizes in vector units, masks, causal offset, scale)."""
        p = problem
        common = {
            **params,
            "scale": p.scale,
            "k_transposed": p.k_transposed,
            "has_add": p.add_mask is not None,
            "has_select": p.select_mask is not None,
            "causal": p.causal,
            "lower": p.lower,
            "softcap": p.softcap,
            "zero_empty": p.zero_empty,
            "head_dim": p.head_dim,
            "v_dim": p.dv,
        }
        if language == "glsl":
            launch = self.gl_launch(p, params)
            layouts = dict(zip(launch.samplers, launch.inputs, strict=True))
            return {
                **common,
                "rows": p.bh * p.q_len,
                "heads": p.heads,
                "group": p.group,
                "hkv": p.hkv,
                "q_len": p.q_len,
                "kv_len": p.skv,
                "fill_bits": _f32_bits(p.fill),
                "cols": p.dv // params["mrt"],
                "v_wide": (p.dv // params["mrt"]) % params["pack"] == 0,
                "q": layouts["Q"].context(),
                "k": layouts["K"].context(),
                "v": layouts["V"].context(),
                "am": layouts["AM"].context() if "AM" in layouts else None,
                "sm": layouts["SM"].context() if "SM" in layouts else None,
                "am_shape": p.add_mask,
                "sm_shape": p.select_mask,
                "out": launch.targets[0].context(),
                "out_seq_major": "o" in p.seq_major,
                "rows_q": p.row_strides("q"),
                "rows_k": p.row_strides("k"),
                "rows_v": p.row_strides("v"),
            }
        width = 4 if params["vec4"] else 1
        return {**common, "du": p.head_dim // width, "dvu": p.dv // width, "vw": width}

    def subgroup_size(self, params: Params) -> int:
        """Return ``sg_share``: the kernel's K/V loads assume subgroups of that many lanes (0: none)."""
        return int(params.get("sg_share", 0))

    def launch(self, problem: AttentionProblem, params: Params) -> Launch:
        """Return one workgroup per ``q_per_wg * q_per_thread`` queries of each head, and the uniforms.

        Uniforms: ``B*H, H, H/Hkv, Sq, Skv, query blocks, fill bits, NaN bits``, then the additive and the
        select mask's strides along (b, h, q, k), then the row strides of Q, K, V and the output along (b, h, s)
        (each padded to four): the layout (heads first or sequence first) is data, so one shader serves both.
        """
        p = problem
        blocks = math.ceil(p.q_len / (params["q_per_wg"] * params["q_per_thread"]))
        rows = [x for c in "qkvo" for x in (*p.row_strides(c), 0)]
        uniforms = (
            p.bh, p.heads, p.group, p.q_len, p.skv, blocks, _f32_bits(p.fill), NAN_BITS,
            *mask_strides(p.add_mask), *mask_strides(p.select_mask), *rows,
        )  # fmt: skip
        return Launch(linear_grid(p.bh * blocks), uniforms)

    def gl_launch(self, problem: AttentionProblem, params: Params) -> GlLaunch:
        """Return the textures of the GLSL kernel and its ``mrt`` render targets.

        Q is ``[B*H*Sq, D]`` and K ``[B*Hkv*Skv, D]`` (Kᵀ ``[B*Hkv*D, Skv]``), 4 values per texel. The output is
        ``[B*H*Sq*mrt, Dv/mrt]`` (row ``q*mrt + t`` holds dims ``t*Dv/mrt ..`` of query ``q``: target ``t`` of its
        fragment) and V ``[B*Hkv*Skv, Dv]``, ``pack`` values per texel; where ``Dv/mrt`` is not a multiple of
        ``pack`` (a target's texels would not start on a texel of V), V is ``[B*Hkv*Skv*mrt, Dv/mrt]`` instead.
        Masks are their 4-D shapes as ``[b*h*q, k]``, 4 values per texel.
        """
        p, square, mrt = problem, bool(params["square"]), params["mrt"]
        cols = p.dv // mrt
        k_rows = p.batch * p.hkv * (p.head_dim if p.k_transposed else p.skv)
        v_rows = p.batch * p.hkv * p.skv
        v_view = (v_rows, p.dv) if cols % params["pack"] == 0 else (v_rows * mrt, cols)
        inputs = [
            TexLayout(p.bh * p.q_len, p.head_dim, 4, square),
            TexLayout(k_rows, p.skv if p.k_transposed else p.head_dim, 4, square),
            TexLayout(*v_view, params["pack"], square),
        ]
        samplers = ["Q", "K", "V"]
        for sampler, mask in (("AM", p.add_mask), ("SM", p.select_mask)):
            if mask is not None:
                inputs.append(TexLayout(mask[0] * mask[1] * mask[2], mask[3], 4, square))
                samplers.append(sampler)
        target = TexLayout(p.bh * p.q_len, cols, params["pack"], square)
        return GlLaunch(tuple(inputs), tuple(samplers), (target,) * mrt, p.bh * p.q_len * mrt, cols)

    def device_inputs(
        self, problem: AttentionProblem, params: Params, inputs: Sequence[np.ndarray]
    ) -> list[np.ndarray]:
        """Return Q, K, V and the masks as float32 row-major arrays of their (4-D) shapes.

        Raises:
            ShapeError: When the count of inputs or an input's size is not what the problem needs.
        """
        p = problem
        shapes = [p.q_shape, p.k_shape, p.v_shape, *p.masks]
        if len(inputs) != len(shapes):
            raise ShapeError(f"attention {attention_key(p)}: {len(shapes)} inputs expected, got {len(inputs)}")
        out = []
        for k, (array, shape) in enumerate(zip(inputs, shapes, strict=True)):
            data = np.ascontiguousarray(array, dtype=np.float32)
            if data.size != math.prod(shape):
                raise ShapeError(f"attention {attention_key(p)}: input {k} has {data.size} values, not {shape}")
            out.append(data.reshape(shape))
        return out


SPEC = AttentionSpec()
