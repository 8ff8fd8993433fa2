"""GEMM and conv kernels reading float16 weights (halves, widened in the kernel) against the numpy reference."""

from __future__ import annotations

import numpy as np
import pytest

from kernelforge.ops import get_op
from kernelforge.testing.ops import check_op, check_sampled_configs

from .test_quant_weights import GEMM_CONFIGS

pytestmark = pytest.mark.device
GEMM = get_op("gemm")
CONV = get_op("conv2d")

# odd element counts (a half word of padding), trans_b, vec4 columns, one row
GEMM_SHAPES = ["33x20x71/qf16", "16x64x72t/qf16", "17x13x5t/qf16", "1x64x96/qf16"]
# plain, strided with asymmetric padding, pointwise, depthwise, grouped
CONV_SHAPES = [
    "1x8x9x9:8x3x3:s1:p1/qf16",
    "1x3x11x11:16x3x3:s2:p0,0,1,1/qf16",
    "1x16x5x5:12x1x1/qf16",
    "1x8x9x9:8x3x3:s2:p1:g8/qf16",
    "1x8x6x6:16x3x3:p1:g2/qf16",
]


def test_f16_problem_keys_and_errors() -> None:
    from kernelforge.errors import ShapeError

    assert GEMM.problem_key(GEMM.parse_problem("16x64x72t/qf16")) == "16x64x72t/qf16"
    key = CONV.problem_key(CONV.parse_problem(CONV_SHAPES[0]))
    assert key.endswith("/qf16") and CONV.problem_key(CONV.parse_problem(key)) == key
    for bad, match in [("8x8x8/qf16c", "no scales"), ("8x8x8/qf16g32", "int4 weights are")]:
        with pytest.raises(ShapeError, match=match):
            GEMM.parse_problem(bad)


def test_random_f16_weights_are_halves_without_qparams() -> None:
    from kernelforge.ops import _qweight

    problem = CONV.parse_problem(CONV_SHAPES[0])
    inputs = CONV.make_inputs(problem, np.random.default_rng(0))
    assert problem.wq is not None and not problem.wq.scaled and len(inputs) == 2
    half = _qweight.halves(inputs[1], "W")
    assert half.dtype == np.float16 and np.array_equal(half.astype(np.float32), inputs[1])
    with pytest.raises(ValueError, match="not float16"):
        _qweight.halves(inputs[1] + 1e-4, "W")
    device = CONV.device_inputs(problem, {"layout": 0, "w_layout": 0}, inputs)
    assert len(device) == 2 and device[1].dtype == np.float16


@pytest.mark.parametrize("shape", GEMM_SHAPES)
def test_f16_gemm_matches_the_reference(lavapipe, shape):
    problem = GEMM.parse_problem(shape)
    ran = 0
    for params in [GEMM.default_params(problem, lavapipe.limits, "wgsl"), *GEMM_CONFIGS]:
        if GEMM.constraints(problem, params, lavapipe.limits, "wgsl") is None:
            check_op(lavapipe, GEMM, problem, params)
            ran += 1
    assert ran >= 2, f"{shape}: too few configs were runnable"


@pytest.mark.parametrize("shape", CONV_SHAPES)
def test_f16_conv_sampled_configs(lavapipe, shape):
    problem = CONV.parse_problem(shape)
    configs = check_sampled_configs(lavapipe, CONV, problem, 5, len(shape))
    for w_layout in (0, 1):  # both weight layouts read halves
        for vec_width in (1, 4):
            params = {**configs[0], "w_layout": w_layout, "vec_width": vec_width}
            if CONV.constraints(problem, params, lavapipe.limits, "wgsl") is None:
                check_op(lavapipe, CONV, problem, params)


@pytest.mark.parametrize("shape", GEMM_SHAPES)
def test_f16_gemm_glsl_sampled_configs(gl, shape):
    check_sampled_configs(gl, GEMM, GEMM.parse_problem(shape), 5, len(shape))


@pytest.mark.parametrize("shape", CONV_SHAPES)
def test_f16_conv_glsl_sampled_configs(gl, shape):
    problem = CONV.parse_problem(shape)
    configs = check_sampled_configs(gl, CONV, problem, 4, len(shape))
    for layout in (0, 1):  # every texture layout the problem can take samples the half-float texture
        params = {**configs[0], "layout": layout}
        if CONV.constraints(problem, params, gl.limits, "glsl") is None:
            check_op(gl, CONV, problem, params)


@pytest.mark.parametrize(
    ("name", "backend"), [("small_cnn", "wgsl"), ("small_cnn", "glsl"), ("mlp", "wgsl"), ("mlp", "glsl")]
)
def test_a_float_model_loaded_with_f16_weights_computes_its_rounded_graph(lavapipe, gl, name, backend):
    import kernelforge
    from kernelforge.graph.prepare import prepare_graph
    from kernelforge.graph.reference import run_graph
    from kernelforge.testing.models import MODELS

    model = MODELS[name]()
    device = lavapipe if backend == "wgsl" else gl
    session = kernelforge.load(model, device=device.info.index, backend=backend, weights="fp16")
    feeds = {n: np.random.default_rng(0).standard_normal(s).astype(np.float32) for n, s in session.inputs}
    (got,) = session.run(feeds).values()
    graph = prepare_graph(model, weights="fp16")
    (want,) = run_graph(graph, feeds).values()
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * float(np.abs(want).max()))
    (fp32,) = run_graph(prepare_graph(model), feeds).values()
    assert np.abs(want - fp32).max() > 1e-7 * float(np.abs(fp32).max())  # the weights did change
    weighted = [n for n in session.graph.nodes if n.op in ("conv2d", "gemm")]
    assert weighted and all(n.attrs.get("weight_quant") == "float16" for n in weighted)
    for node in weighted:  # the graph's weights are halves: the reference computes with what the kernels read
        w = graph.value(node.inputs[1]).data
        assert w is not None and np.array_equal(w.astype(np.float16).astype(np.float32), w)
    # the device holds halves: the GEMM/conv weights take half their float32 bytes
    floats = kernelforge.load(model, device=device.info.index, backend=backend)
    assert 0 < session.program.constant_bytes < 0.6 * floats.program.constant_bytes
