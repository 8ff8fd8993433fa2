"""GEMM and conv kernels reading int8/uint8 weights (dequantized in the kernel) against the numpy reference."""

from __future__ import annotations

import pytest

from kernelforge.ops import get_op
from kernelforge.ops.spec import Params
from kernelforge.testing.ops import check_op, check_sampled_configs

pytestmark = pytest.mark.device
GEMM = get_op("gemm")
CONV = get_op("conv2d")

GEMM_SHAPES = ["33x20x17/qi8", "64x48x40/qi8c", "29x44x36/qu8c", "16x64x32t/qi8c", "17x13x5t/qu8", "1x64x32/qi8c"]
GEMM_CONFIGS: list[Params] = [
    {"wg_x": 8, "wg_y": 8, "wpt_m": 4, "wpt_n": 4, "tile_k": 32, "vec_width": 4, "vec_a": 1, "staging": 1},
    {"wg_x": 8, "wg_y": 8, "wpt_m": 8, "wpt_n": 8, "tile_k": 4, "vec_width": 4, "vec_a": 4, "staging": 0},
    {"wg_x": 4, "wg_y": 2, "wpt_m": 2, "wpt_n": 1, "tile_k": 2, "vec_width": 1, "vec_a": 1, "staging": 0},
    {"wg_x": 2, "wg_y": 32, "wpt_m": 2, "wpt_n": 2, "tile_k": 16, "vec_width": 1, "vec_a": 1, "staging": 1},
]


@pytest.mark.parametrize("shape", GEMM_SHAPES)
def test_quantized_gemm_matches_the_reference_bit_for_bit_in_its_weights(lavapipe, shape):
    problem = GEMM.parse_problem(shape)
    ran = 0
    for params in [GEMM.default_params(problem, lavapipe.limits, "wgsl"), *GEMM_CONFIGS]:
        if GEMM.constraints(problem, params, lavapipe.limits, "wgsl") is None:
            check_op(lavapipe, GEMM, problem, params)
            ran += 1
    assert ran >= 2, f"{shape}: too few configs were runnable"


CONV_SHAPES = [
    "1x3x11x11:16x3x3:s2:p0,0,1,1/qi8c",  # RGB stem, asymmetric pads
    "1x8x9x9:8x3x3:s1:p1/qu8",
    "1x16x5x5:12x1x1/qi8c",  # pointwise
    "1x13x7x7:7x1x1/qu8c",  # primes: no word holds one channel's run
    "1x8x9x9:8x3x3:s2:p1:g8/qi8c",  # depthwise strided
    "1x6x9x9:12x3x3:s1:p1:g6/qu8c",  # depthwise with multiplier 2
    "1x8x6x6:16x3x3:p1:g2/qi8",  # grouped
]


@pytest.mark.parametrize("shape", CONV_SHAPES)
def test_quantized_conv_sampled_configs(lavapipe, shape):
    check_sampled_configs(lavapipe, CONV, CONV.parse_problem(shape), 8, len(shape))


# every conv algorithm and layout with int8 and uint8 weights: tests/device/test_conv.py's
# test_every_algorithm_and_layout (its weights parameter)


@pytest.mark.parametrize("shape", GEMM_SHAPES)
def test_quantized_gemm_glsl_sampled_configs(gl, shape):
    check_sampled_configs(gl, GEMM, GEMM.parse_problem(shape), 8, len(shape))


@pytest.mark.parametrize("shape", CONV_SHAPES)
def test_quantized_conv_glsl_sampled_configs(gl, shape):
    problem = CONV.parse_problem(shape)
    configs = check_sampled_configs(gl, CONV, problem, 6, len(shape))
    layouts = {c["layout"] for c in configs}
    for layout in (0, 1):  # every texture layout the problem can take reads quantized weights
        params = {**configs[0], "layout": layout}
        if layout not in layouts and CONV.constraints(problem, params, gl.limits, "glsl") is None:
            check_op(gl, CONV, problem, params)


@pytest.mark.parametrize("backend", ["wgsl", "glsl"])
def test_a_float_model_loaded_with_int8_weights_computes_its_quantized_graph(lavapipe, gl, backend):
    import numpy as np

    import kernelforge
    from kernelforge.errors import KernelforgeError
    from kernelforge.graph.prepare import prepare_graph
    from kernelforge.graph.reference import run_graph
    from kernelforge.testing.models import MODELS

    model = MODELS["mobilenet_v2_style"]()
    device = lavapipe if backend == "wgsl" else gl
    session = kernelforge.load(model, device=device.info.index, backend=backend, weights="int8")
    x = np.random.default_rng(0).standard_normal(dict(session.inputs)["x"]).astype(np.float32)
    (got,) = session.run({"x": x}).values()
    (want,) = run_graph(prepare_graph(model, weights="int8"), {"x": x}).values()
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * float(np.abs(want).max()))
    steps = [s for s in session.program.steps if s.op in ("conv2d", "gemm")]
    assert steps and all(s.params is not None for s in steps)
    assert all("weight_quant" in n.attrs for n in session.graph.nodes if n.op in ("conv2d", "gemm"))
    # the device holds the integers: the constants take well under the float model's bytes, as summary() says
    floats = kernelforge.load(model, device=device.info.index, backend=backend)
    assert 0 < session.program.constant_bytes < 0.6 * floats.program.constant_bytes
    assert f"constants {session.program.constant_bytes / 2**20:.2f} MiB" in session.summary()
    with pytest.raises(KernelforgeError, match="weights must be 'fp32', 'fp16', 'int8' or 'int4', got 'int2'"):
        kernelforge.load(model, device=device.info.index, backend=backend, weights="int2")
