"""conv2d's parameter tables (algorithms and layouts by number, defaults, fallbacks, tuner seeds) and seed fitting."""

from __future__ import annotations

from typing import Any

from kernelforge.ops.spec import Limits, Params

DIRECT, IMPLICIT_GEMM, DEPTHWISE, DEPTHWISE_ROWS = 0, 1, 2, 3
DEPTHWISE_ALGOS = (DEPTHWISE, DEPTHWISE_ROWS)
NCHW, NHWC = 0, 1
NHWC_AXES = (0, 2, 3, 1)
"""The NCHW -> NHWC axis order."""
OIHW, HWIO = 0, 1

# Caps without Limits.wide_tiles (_spec.register_tile_problem): SwiftShader took 33 s on a 32-accumulator conv
NARROW_ACCUMULATORS = 64
MAX_UNROLLED_FMAS = 1024
NARROW_UNROLLED_FMAS = 512

# A default in the spirit of TF.js WebGPU's conv2d (NHWC, 4x4 outputs per thread over an 8x8 workgroup, vec4
# over output channels): what an untuned device gets. Depthwise convs get TF.js's depthwise shape.
DEFAULT_PARAMS: Params = {
    "algo": DIRECT,
    "layout": NHWC,
    "w_layout": HWIO,
    "wg_x": 8,
    "wg_y": 8,
    "wpt_p": 4,
    "wpt_o": 4,
    "tile_k": 4,
    "vec_width": 4,
    "vec_c": 1,
    "sg_share": 0,
}
DEPTHWISE_DEFAULT: Params = {
    **DEFAULT_PARAMS,
    "algo": DEPTHWISE,
    "wg_x": 16,
    "wg_y": 4,
    "wpt_p": 2,
    "wpt_o": 4,
    "tile_k": 1,
}
FALLBACKS: tuple[Params, ...] = (
    {**DEFAULT_PARAMS, "vec_width": 1},
    {**DEFAULT_PARAMS, "vec_width": 1, "wpt_o": 1, "wg_x": 64, "wg_y": 1},
    {**DEFAULT_PARAMS, "vec_width": 1, "wpt_o": 1, "wpt_p": 1, "tile_k": 1, "wg_x": 1, "wg_y": 1},
)
GLSL_DEFAULT_PARAMS: Params = {"layout": NHWC, "c_unroll": 1, "square": 0}
GLSL_FALLBACKS: tuple[Params, ...] = (
    {**GLSL_DEFAULT_PARAMS, "square": 1},
    {"layout": NCHW, "c_unroll": 1, "square": 0},
    {"layout": NCHW, "c_unroll": 1, "square": 1},
)

# Tuner starting points: register-blocked NHWC direct kernels with vec4 input-channel loads won on lavapipe
# (4x over the default on 3x3 layers); the staged implicit GEMM and NCHW variants keep the search diverse.
SEEDS: tuple[Params, ...] = (
    {**DEFAULT_PARAMS, "wg_x": 8, "wg_y": 1, "wpt_p": 16, "wpt_o": 16, "vec_c": 4},
    {**DEFAULT_PARAMS, "wpt_p": 8, "wpt_o": 8, "vec_c": 4},
    {**DEFAULT_PARAMS, "wg_x": 16, "wg_y": 4, "wpt_p": 4, "wpt_o": 8, "vec_c": 4, "tile_k": 8},
    {**DEFAULT_PARAMS, "wg_y": 2, "wpt_p": 8, "wpt_o": 16, "tile_k": 4, "vec_c": 4},
    {**DEFAULT_PARAMS, "algo": IMPLICIT_GEMM, "wg_x": 16, "wg_y": 8, "tile_k": 8},
    {**DEFAULT_PARAMS, "layout": NCHW, "wpt_p": 8, "wpt_o": 4},
    {**DEPTHWISE_DEFAULT, "wg_x": 8, "wg_y": 8, "wpt_p": 4, "wpt_o": 4},
    {**DEPTHWISE_DEFAULT, "wg_x": 32, "wg_y": 2, "wpt_p": 4, "wpt_o": 8},
    {**DEPTHWISE_DEFAULT, "algo": DEPTHWISE_ROWS, "wg_x": 8, "wg_y": 4, "wpt_p": 8, "wpt_o": 4},
    {**DEPTHWISE_DEFAULT, "algo": DEPTHWISE_ROWS, "wg_x": 16, "wg_y": 2, "wpt_p": 4, "wpt_o": 8},
)
# Pointwise only (3x3 8x8 tiles compile 15-33 s on SwiftShader): 1-2 pixel threads per workgroup put a SIMD group
# along output channels as in GEMM's kernel (uniform X, contiguous W loads): 1.55-1.73x vs 1.33x on SwiftShader.
POINTWISE_SEEDS: tuple[Params, ...] = (
    {**DEFAULT_PARAMS, "wg_x": 2, "wg_y": 8, "wpt_p": 8, "wpt_o": 8, "tile_k": 2},
    {**DEFAULT_PARAMS, "layout": NCHW, "wg_x": 1, "wg_y": 8, "wpt_p": 8, "wpt_o": 8, "tile_k": 2},
)
# Subgroup-shared X loads (tried first where the device has fixed-size subgroups): one pixel column of 8 channel
# threads per workgroup. SwiftShader: 1.2x over the same tile unshared and 3x3 compiles in 0.1-0.3 s, not 16-19 s;
# lavapipe: 16-pixel tiles of 8 lanes, 3.1-3.7x the default on 1x1 and 3x3 layers.
SUBGROUP_SEEDS: tuple[Params, ...] = (
    {**DEFAULT_PARAMS, "layout": NCHW, "wg_x": 1, "wg_y": 8, "wpt_p": 8, "wpt_o": 8, "tile_k": 2, "sg_share": 4},
    {**DEFAULT_PARAMS, "wg_x": 1, "wg_y": 8, "wpt_p": 8, "wpt_o": 8, "tile_k": 2, "sg_share": 4},
    {**DEFAULT_PARAMS, "layout": NCHW, "wg_x": 1, "wg_y": 8, "wpt_p": 16, "wpt_o": 8, "tile_k": 1, "sg_share": 8},
    {**DEFAULT_PARAMS, "wg_x": 1, "wg_y": 8, "wpt_p": 16, "wpt_o": 8, "tile_k": 1, "sg_share": 8},
    {**DEFAULT_PARAMS, "wg_x": 1, "wg_y": 8, "wpt_p": 8, "wpt_o": 8, "tile_k": 2, "sg_share": 8},
    # 32 output channels per workgroup, for the narrow layers (MobileNetV2's 24 and 32)
    {**DEFAULT_PARAMS, "wg_x": 1, "wg_y": 4, "wpt_p": 8, "wpt_o": 8, "tile_k": 2, "sg_share": 4},
    {**DEFAULT_PARAMS, "wg_x": 1, "wg_y": 8, "wpt_p": 8, "wpt_o": 4, "tile_k": 2, "sg_share": 4},
)
GLSL_SEEDS: tuple[Params, ...] = ({**GLSL_DEFAULT_PARAMS, "c_unroll": 4}, {**GLSL_DEFAULT_PARAMS, "c_unroll": 2})


def fit_tile_k(params: Params, problem: Any, language: str) -> Params:
    """Shrink a direct kernel's channel step to the group's input channels (3 for an RGB stem), keeping vec_c."""
    fitted = dict(params)
    if language == "wgsl" and fitted["algo"] == DIRECT and fitted["tile_k"] > problem.cg:
        fitted["tile_k"] = max(k for k in (1, 2, 4, 8, 16) if k <= problem.cg)
        if fitted["tile_k"] < 4:
            fitted["vec_c"] = 1
    return fitted


def _fit_out_channels(params: Params, problem: Any, language: str) -> Params:
    """Narrow a workgroup's channel threads to the channels there are, moving them to pixels (threads kept).

    A workgroup covers ``wg_y * wpt_o`` output channels (of a group; of all, for depthwise). With fewer (an
    8-channel stem under the default's 32), the threads past the last channel only return: 3 in 4 idle on any
    GPU. Each halving of ``wg_y`` doubles ``wg_x``. Subgroup-shared kernels keep their lanes along channels.
    """
    fitted = dict(params)
    if language != "wgsl" or fitted["algo"] == IMPLICIT_GEMM or fitted.get("sg_share", 0):
        return fitted
    channels = problem.m if fitted["algo"] in DEPTHWISE_ALGOS else problem.mg
    need = -(-channels // fitted["vec_width"]) * fitted["vec_width"]
    while fitted["wg_y"] > 1 and fitted["wg_y"] // 2 * fitted["wpt_o"] >= need and fitted["wg_x"] < 64:
        fitted["wg_y"] //= 2
        fitted["wg_x"] *= 2
    return fitted


def fitted(params: Params, problem: Any, language: str) -> Params:
    """A seed fitted to the problem: its channel step and its workgroup's channel threads."""
    return _fit_out_channels(fit_tile_k(params, problem, language), problem, language)


def subgroup_problem(params: Params, limits: Limits) -> str | None:
    """Return why a direct kernel's subgroup-shared X loads (``sg_share``) cannot run on the device, or None."""
    s = params.get("sg_share", 0)
    if not s:
        return None
    if params["algo"] != DIRECT:
        return f"sg_share={s} needs the direct kernel (algo 0)"
    if s != limits.subgroup_size:
        have = f"subgroups of {limits.subgroup_size}" if limits.subgroup_size else "no fixed-size subgroups"
        return f"sg_share={s} needs subgroups of exactly {s} lanes; the device has {have}"
    # a subgroup's lanes must own the same pixels (one pixel column per workgroup), every lane must exist (a
    # broadcast from a missing lane is undefined: a 1-D workgroup of a multiple of S threads gets full subgroups,
    # as Vulkan guarantees for SPIR-V 1.6) and each load serves S pixels
    if params["wg_x"] != 1 or params["wg_y"] % s or params["wpt_p"] % s or params["vec_c"] != 1:
        return f"sg_share={s} needs wg_x=1, wg_y and wpt_p multiples of {s} and vec_c=1"
    return None
