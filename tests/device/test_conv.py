"""conv2d on real adapters (WGSL and GLSL) against the numpy reference."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import kernelforge.api as kops
from kernelforge.errors import ShapeError
from kernelforge.ops import get_op
from kernelforge.ops._epilogue import ACTIVATIONS, Activation
from kernelforge.ops.conv import (
    DEFAULT_PARAMS,
    DEPTHWISE,
    DEPTHWISE_DEFAULT,
    DEPTHWISE_ROWS,
    DIRECT,
    IMPLICIT_GEMM,
    ConvProblem,
)
from kernelforge.runtime.kernel import prepare
from kernelforge.testing.ops import check_op, check_sampled_configs, sampled_configs
from kernelforge.tuner.objective import verify

pytestmark = pytest.mark.device
SPEC = get_op("conv2d")

SHAPES = [
    "1x1x1x1:1x1x1",
    "1x3x11x11:16x3x3:s2:p0,0,1,1",  # RGB stem, asymmetric pads
    "2x6x7x5:10x3x2:s2x1:p1,0,0,1:d1x2",  # batch, non-square kernel, dilation
    "1x8x9x9:8x3x3:s1:p1",
    "1x16x5x5:12x1x1",  # pointwise
    "1x13x7x7:7x1x1",  # primes
    "1x8x9x9:8x3x3:s2:p1:g8",  # depthwise strided
    "1x6x9x9:12x3x3:s1:p1:g6",  # depthwise with multiplier 2
    "1x12x7x7:12x5x5:p2:g12",  # depthwise 5x5
    "1x8x6x6:16x3x3:p1:g2",  # grouped
    "1x12x6x6:8x3x3:p1:g4",  # grouped, 3 in / 2 out per group
    "1x4x17x3:4x3x3:s3:d2:p2",
]


@pytest.mark.parametrize("shape", SHAPES)
def test_wgsl_sampled_configs(lavapipe, shape):
    check_sampled_configs(lavapipe, SPEC, SPEC.parse_problem(shape), 10, len(shape))


@pytest.mark.parametrize("shape", SHAPES)
def test_glsl_sampled_configs(gl, shape):
    check_sampled_configs(gl, SPEC, SPEC.parse_problem(shape), 6, len(shape))


@pytest.mark.parametrize("algo", [DIRECT, IMPLICIT_GEMM])
@pytest.mark.parametrize("layout", [0, 1])
@pytest.mark.parametrize("w_layout", [0, 1])
@pytest.mark.parametrize("weights", ["", "/qi8c", "/qu8"])  # float, and int8/uint8 dequantized in the kernel
def test_every_algorithm_and_layout(lavapipe, algo, layout, w_layout, weights):
    problem = SPEC.parse_problem(f"1x8x7x9:12x3x3:s1:p1,0,1,2{weights}")
    base = {**DEFAULT_PARAMS, "algo": algo, "layout": layout, "w_layout": w_layout, "vec_c": 1}
    for extra in ({}, {"vec_width": 1, "wpt_o": 2, "wpt_p": 1, "tile_k": 8}):
        params = {**base, **extra}
        assert SPEC.constraints(problem, params, lavapipe.limits, "wgsl") is None
        check_op(lavapipe, SPEC, problem, params)


@pytest.mark.parametrize(
    "shape",
    [
        "1x8x9x9:8x3x3:s2:p1:g8",
        "1x6x9x9:12x3x3:s1:p1:g6",  # channel multiplier 2 (scalar loads only)
        "1x12x7x7:12x5x5:p2:g12",
        "1x4x17x3:4x3x3:s3:d2:p2:g4",  # rows narrower than the pixels per thread
        "1x8x7x11:8x3x3:s1:p1,0,1,2:g8",  # asymmetric pads
        "2x8x5x13:8x3x2:s2x1:p1,0,0,1:d1x2:g8",  # batch, dilated non-square kernel
        "1x16x9x9:16x1x1:s2:g16",  # stride 2, 1x1: every other input column is never loaded
    ],
)
def test_depthwise_row_window(wgsl_device, shape):
    problem = SPEC.parse_problem(shape)
    variants = (
        {},
        {"vec_width": 1},
        {"wpt_p": 8, "wg_x": 4},
        {"wpt_p": 1},
        {"wpt_p": 2, "wpt_o": 8, "wg_y": 1},
        {"vec_width": 1, "wpt_o": 1},
        {"vec_width": 1, "layout": 0, "wpt_p": 4},
        {"vec_width": 1, "layout": 0, "wpt_p": 2},
    )
    ran = 0
    for extra in variants:
        params = {**DEPTHWISE_DEFAULT, "algo": DEPTHWISE_ROWS, **extra}
        if SPEC.constraints(problem, params, wgsl_device.limits, "wgsl") is None:
            check_op(wgsl_device, SPEC, problem, params)
            ran += 1
    assert ran >= 4


def _subgroup_size(device) -> int:
    size = device.limits.subgroup_size
    if device.info.api == "vulkan":  # SwiftShader runs 4 lanes, lavapipe 8 (256-bit AVX2)
        assert size in (4, 8), f"{device.info.slug}: the subgroup probe gave {size}"
    return size


@pytest.mark.parametrize(
    "shape",
    [
        "1x16x5x5:12x1x1",  # pointwise, 25 pixels: the last thread's pixels run past the end
        "1x8x9x9:8x3x3:s1:p1",
        "1x3x11x11:16x3x3:s2:p0,0,1,1",  # RGB stem, asymmetric pads
        "2x6x7x5:8x3x2:s2x1:p1,0,0,1:d1x2",  # batch, non-square kernel, dilation
        "1x8x6x6:16x3x3:p1:g2",  # grouped
        "1x16x7x7:8x1x1:s2",  # strided 1x1
    ],
)
def test_subgroup_shared_x_loads(wgsl_device, shape):
    size = _subgroup_size(wgsl_device)
    problem = SPEC.parse_problem(shape)
    if not size:  # wgpu's GL backend: the kernels are refused before they reach the driver
        params = {**DEFAULT_PARAMS, "wg_x": 1, "wg_y": 4, "wpt_p": 4, "sg_share": 4}
        assert "no fixed-size subgroups" in (SPEC.constraints(problem, params, wgsl_device.limits, "wgsl") or "")
        return
    base = {**DEFAULT_PARAMS, "wg_x": 1, "wg_y": size, "wpt_p": size, "wpt_o": 4, "tile_k": 1, "sg_share": size}
    variants = (
        {},
        {"layout": 0},
        {"layout": 0, "w_layout": 0, "wg_y": 2 * size},
        {"vec_width": 1, "wpt_o": 2, "tile_k": 2},
        {"wpt_p": 2 * size, "wpt_o": 4},
    )
    ran = 0
    for extra in variants:
        params = {**base, **extra}
        if SPEC.constraints(problem, params, wgsl_device.limits, "wgsl") is None:
            check_op(wgsl_device, SPEC, problem, params)
            ran += 1
    assert ran >= 3


def test_subgroup_shared_loads_with_the_fused_epilogue(wgsl_device):
    size = _subgroup_size(wgsl_device)
    base = SPEC.parse_problem("1x8x7x7:12x3x3:p1")
    problem = ConvProblem(
        **{**base.__dict__, "has_bias": True, "has_residual": True, "activation": Activation.parse("relu")}
    )
    lanes = size or 4
    params = {**DEFAULT_PARAMS, "wg_x": 1, "wg_y": lanes, "wpt_p": lanes, "wpt_o": 4, "tile_k": 2, "sg_share": lanes}
    if not size:  # wgpu's GL backend
        assert "no fixed-size subgroups" in (SPEC.constraints(problem, params, wgsl_device.limits, "wgsl") or "")
        return
    check_op(wgsl_device, SPEC, problem, params)


def test_every_wgsl_device_runs_the_defaults(wgsl_device):
    for shape in ("1x8x9x9:16x3x3:s2:p1", "1x8x9x9:8x3x3:p1:g8"):
        problem = SPEC.parse_problem(shape)
        for params in sampled_configs(SPEC, problem, wgsl_device.limits, "wgsl", 1, 5):
            check_op(wgsl_device, SPEC, problem, params)


@pytest.mark.parametrize(
    "shape", ["1x3x17x17:8x3x3:s2:p1", "1x8x9x9:8x3x3:p1:g8", "1x8x9x9:4x1x1", "1x8x6x6:16x3x3:p1:g4"]
)
def test_defaults_and_seeds_narrowed_to_few_channels(wgsl_device, shape):
    # threads moved from channels to pixels must still cover every output: checked against numpy
    problem = SPEC.parse_problem(shape)
    configs = [SPEC.default_params(problem, wgsl_device.limits, "wgsl")]
    configs += SPEC.seed_params(problem, wgsl_device.limits, "wgsl")
    assert configs[0]["wg_x"] > DEFAULT_PARAMS["wg_x"]
    for params in configs:
        check_op(wgsl_device, SPEC, problem, params)


@pytest.mark.parametrize("kind", sorted(ACTIVATIONS))
@pytest.mark.parametrize("shape", ["1x8x7x7:8x3x3:p1:g8", "1x8x7x7:12x1x1"])
def test_fused_bias_activation_residual_is_one_kernel(lavapipe, gl, kind, shape):
    base = SPEC.parse_problem(shape)
    act = Activation.parse({"clip": "clip(-0.5,0.25)", "leaky_relu": "leaky_relu(0.2)"}.get(kind, kind))
    problem = ConvProblem(**{**base.__dict__, "has_bias": True, "has_residual": True, "activation": act})
    for backend in (lavapipe, gl):
        params = SPEC.default_params(problem, backend.limits, backend.language)
        if backend.language == "wgsl" and problem.depthwise:
            assert params["algo"] == DEPTHWISE
        inputs = SPEC.make_inputs(problem, np.random.default_rng(1))
        kernel = prepare(backend, SPEC, problem, params, inputs)
        # one kernel: a single entry point computes conv, bias, residual and activation
        assert kernel.source.count("fn main(") + kernel.source.count("void main(") == 1
        verdict = verify(kernel.run(), SPEC.reference(problem, inputs))
        assert verdict.ok, f"{kind} {backend.language}: {verdict}"


def test_api_matches_reference_on_both_languages(lavapipe, gl):
    rng = np.random.default_rng(7)
    x = rng.uniform(-1, 1, (2, 6, 9, 8)).astype(np.float32)
    w = rng.uniform(-1, 1, (4, 3, 3, 3)).astype(np.float32)
    b = rng.uniform(-1, 1, 4).astype(np.float32)
    problem = ConvProblem(
        n=2,
        c=6,
        h=9,
        w=8,
        m=4,
        kh=3,
        kw=3,
        strides=(2, 1),
        pads=(1, 0, 1, 2),
        group=2,
        has_bias=True,
        activation=Activation.parse("relu"),
    )
    ref = SPEC.reference(problem, [x, w, b])
    for device, language in (("lavapipe", "wgsl"), ("auto", "glsl")):
        out = kops.conv2d(
            x, w, b, strides=(2, 1), pads=(1, 0, 1, 2), group=2, activation="relu", device=device, backend=language
        )
        assert verify(out, ref).ok
    same = kops.conv2d(x, w[:, :, :, :], None, auto_pad="SAME_UPPER", group=2, device="lavapipe")
    assert same.shape == (2, 4, 9, 8)


def test_api_errors_name_the_argument(lavapipe):
    x = np.zeros((1, 4, 5, 5), np.float32)
    with pytest.raises(ShapeError, match="4-D"):
        kops.conv2d(x[0], np.zeros((2, 4, 3, 3)), device="lavapipe")
    with pytest.raises(ShapeError, match="channels"):
        kops.conv2d(x, np.zeros((2, 3, 3, 3)), device="lavapipe")
    with pytest.raises(ShapeError, match="bias"):
        kops.conv2d(x, np.zeros((2, 4, 3, 3)), np.zeros(3), device="lavapipe")
    with pytest.raises(ShapeError, match="residual"):
        kops.conv2d(x, np.zeros((2, 4, 3, 3)), residual=np.zeros((1, 2, 5, 5)), device="lavapipe")
    with pytest.raises(ShapeError, match="pads"):
        kops.conv2d(x, np.zeros((2, 4, 3, 3)), pads=(1, 1), device="lavapipe")
    with pytest.raises(ShapeError, match="auto_pad"):
        kops.conv2d(x, np.zeros((2, 4, 3, 3)), auto_pad="SAME", device="lavapipe")


def _case(shape: str):
    """The conv spec, a problem, random inputs (seed 0) and their reference."""
    spec = get_op("conv2d")
    problem = spec.parse_problem(shape)
    inputs = spec.make_inputs(problem, np.random.default_rng(0))
    return spec, problem, inputs, spec.reference(problem, inputs)


@pytest.mark.parametrize(
    "shape", ["1x16x14x14:32x3x3:p1", "1x32x14x14:32x3x3:p1:g32", "1x64x7x7:64x1x1", "1x3x32x32:16x3x3:s2:p1"]
)
def test_f16_arithmetic_is_within_its_bound_in_every_algorithm(lavapipe, shape):
    spec, problem, _, reference = _case(shape)
    limits = lavapipe.limits
    algos = set()
    for base in [spec.default_params(problem, limits, "wgsl"), *spec.seed_params(problem, limits, "wgsl")]:
        params = {**base, "precision": 1}
        if spec.constraints(problem, params, limits, "wgsl") is None:
            out = check_op(lavapipe, spec, problem, params)  # the op's f16 bound
            assert not verify(out, reference, 1e-6).ok  # f16 shows: it is not the float32 kernel
            algos.add((params["algo"], params.get("sg_share", 0)))
    assert len(algos) >= 2, algos
    no_f16 = dataclasses.replace(limits, f16=False)
    assert "shader-f16" in (spec.constraints(problem, params, no_f16, "wgsl") or "")


@pytest.mark.parametrize("shape", ["1x16x12x12:32x3x3:s1:p1", "1x32x14x14:64x1x1", "2x8x9x9:12x3x3:s2:p1:g2"])
def test_f16_tiles_with_f32_sums_are_within_their_bound(lavapipe, shape):
    from kernelforge.templates import render

    spec, problem, inputs, reference = _case(shape)
    limits = lavapipe.limits
    base = {**spec.default_params(problem, limits, "wgsl"), "algo": 1, "wpt_p": 2, "wpt_o": 2, "tile_k": 4}
    base = {**base, "vec_width": 1, "vec_c": 1, "sg_share": 0}
    params = {**base, "precision": 2}
    assert spec.constraints(problem, params, limits, "wgsl") is None
    assert "var<workgroup> a_tile: array<f16," in render(spec, "wgsl", problem, params)
    out = check_op(lavapipe, spec, problem, params)  # the op's f16 bound
    # f16 tiles round X and W once: not within the float32 bound, yet closer than f16 sums
    assert not verify(out, reference, 1e-6).ok
    f16_sums = prepare(lavapipe, spec, problem, {**base, "precision": 1}, inputs).run()
    assert np.abs(out - reference).max() <= np.abs(f16_sums - reference).max()
    direct = {**base, "algo": 0, "precision": 2}
    assert "needs algo=1" in (spec.constraints(problem, direct, limits, "wgsl") or "")
