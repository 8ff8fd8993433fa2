"""GEMM and conv kernels reading int4 weights (group scales, dequantized in the kernel) against the numpy reference."""

from __future__ import annotations

import numpy as np
import pytest

from kernelforge.ops import get_op
from kernelforge.testing.ops import check_op, check_sampled_configs

from .test_quant_weights import GEMM_CONFIGS

pytestmark = pytest.mark.device
GEMM = get_op("gemm")
CONV = get_op("conv2d")

# K not a multiple of the group (a short last group), K under one group, trans_b, vec4 columns, groups of 16
GEMM_SHAPES = ["33x20x70/qi4g32", "64x48x40/qi4g16", "16x64x72t/qi4g32", "17x13x5t/qi4g32", "1x64x96/qi4g32"]
# K = cg * kh * kw: 72 (groups of 32 with a short last one), 16 (pointwise), 9 (depthwise), 36 (grouped)
CONV_SHAPES = [
    "1x8x9x9:8x3x3:s1:p1/qi4g32",
    "1x3x11x11:16x3x3:s2:p0,0,1,1/qi4g16",
    "1x16x5x5:12x1x1/qi4g4",
    "1x8x9x9:8x3x3:s2:p1:g8/qi4g32",
    "1x8x6x6:16x3x3:p1:g2/qi4g32",
]


def test_int4_problem_keys_and_errors() -> None:
    from kernelforge.errors import ShapeError

    assert GEMM.problem_key(GEMM.parse_problem("16x64x72t/qi4g32")) == "16x64x72t/qi4g32"
    key = CONV.problem_key(CONV.parse_problem(CONV_SHAPES[0]))
    assert key.endswith("/qi4g32") and CONV.problem_key(CONV.parse_problem(key)) == key
    for bad, match in [
        ("8x8x8/qi4", "int4 weights are"),
        ("8x8x8/qi8g32", "int4 weights are"),
        ("8x8x8/qi4g6", "multiple of 4"),
    ]:
        with pytest.raises(ShapeError, match=match):
            GEMM.parse_problem(bad)


def test_random_int4_weights_are_group_scaled_integers() -> None:
    from kernelforge.ops import _qweight

    problem = CONV.parse_problem(CONV_SHAPES[0])
    inputs = CONV.make_inputs(problem, np.random.default_rng(0))
    w, scales = inputs[1], inputs[-1]
    assert problem.wq is not None and scales.shape == (3, 8)  # K = 72: groups of 32, 32, 8
    q = _qweight.integers(w, scales, 0, problem.wq, "W")
    assert q.dtype == np.int8 and np.abs(q).max() <= 7
    flat = q.reshape(8, 72)
    np.testing.assert_array_equal(flat[:, 40].astype(np.float32) * scales[1], w.reshape(8, 72)[:, 40])
    packed = _qweight.pack_int4(q.reshape(-1)[:3])
    assert packed.tolist() == [(int(q.flat[0]) & 15) | (int(q.flat[1]) & 15) << 4, int(q.flat[2]) & 15]
    with pytest.raises(ValueError, match="not int4 values"):
        _qweight.integers(w + 1e-3, scales, 0, problem.wq, "W")


@pytest.mark.parametrize("shape", GEMM_SHAPES)
def test_int4_gemm_matches_the_reference(lavapipe, shape):
    problem = GEMM.parse_problem(shape)
    ran = 0
    for params in [GEMM.default_params(problem, lavapipe.limits, "wgsl"), *GEMM_CONFIGS]:
        if GEMM.constraints(problem, params, lavapipe.limits, "wgsl") is None:
            check_op(lavapipe, GEMM, problem, params)
            ran += 1
    assert ran >= 2, f"{shape}: too few configs were runnable"


@pytest.mark.parametrize("shape", CONV_SHAPES)
def test_int4_conv_sampled_configs(lavapipe, shape):
    problem = CONV.parse_problem(shape)
    configs = check_sampled_configs(lavapipe, CONV, problem, 5, len(shape))
    for w_layout in (0, 1):  # both weight layouts read int4 words
        params = {**configs[0], "w_layout": w_layout}
        if CONV.constraints(problem, params, lavapipe.limits, "wgsl") is None:
            check_op(lavapipe, CONV, problem, params)


@pytest.mark.parametrize("shape", GEMM_SHAPES)
def test_int4_gemm_glsl_sampled_configs(gl, shape):
    check_sampled_configs(gl, GEMM, GEMM.parse_problem(shape), 5, len(shape))


@pytest.mark.parametrize("shape", CONV_SHAPES)
def test_int4_conv_glsl_sampled_configs(gl, shape):
    problem = CONV.parse_problem(shape)
    configs = check_sampled_configs(gl, CONV, problem, 4, len(shape))
    for layout in (0, 1):  # every texture layout the problem can take reads int4 weights
        params = {**configs[0], "layout": layout}
        if CONV.constraints(problem, params, gl.limits, "glsl") is None:
            check_op(gl, CONV, problem, params)


@pytest.mark.parametrize(
    ("name", "backend"), [("small_cnn", "wgsl"), ("small_cnn", "glsl"), ("mlp", "wgsl"), ("mlp", "glsl")]
)
def test_a_float_model_loaded_with_int4_weights_computes_its_quantized_graph(lavapipe, gl, name, backend):
    import kernelforge
    from kernelforge.graph.prepare import prepare_graph
    from kernelforge.graph.quant_weights import INT4_GROUP
    from kernelforge.graph.reference import run_graph
    from kernelforge.testing.models import MODELS

    model = MODELS[name]()
    device = lavapipe if backend == "wgsl" else gl
    session = kernelforge.load(model, device=device.info.index, backend=backend, weights="int4")
    feeds = {n: np.random.default_rng(0).standard_normal(s).astype(np.float32) for n, s in session.inputs}
    (got,) = session.run(feeds).values()
    (want,) = run_graph(prepare_graph(model, weights="int4"), feeds).values()
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * float(np.abs(want).max()))
    (fp32,) = run_graph(prepare_graph(model), feeds).values()
    assert np.abs(want - fp32).max() > 1e-6 * float(np.abs(fp32).max())  # the weights did change
    quantized = [n for n in session.graph.nodes if n.op in ("conv2d", "gemm")]
    for node in quantized:  # int4 where a channel has a whole group of K values, int8 below that
        w = session.graph.value(node.inputs[1]).data
        k = w.size // w.shape[0 if node.op == "conv2d" or node.attrs.get("trans_b") else 1]
        assert node.attrs.get("weight_quant") == ("int4" if k >= INT4_GROUP else "int8"), (node.name, k)
    assert any(n.attrs.get("weight_quant") == "int4" for n in quantized)
    # WGSL holds 4-bit weights, under an int8 session's constants; GLSL a byte a value (and more scales than int8)
    int8 = kernelforge.load(model, device=device.info.index, backend=backend, weights="int8")
    most = 0.8 if backend == "wgsl" else 1.2
    assert 0 < session.program.constant_bytes < most * int8.program.constant_bytes


@pytest.mark.parametrize(("name", "backend"), [("mobilenet_v2_style", "wgsl"), ("resnet18_style", "glsl")])
def test_int4_weights_rounded_against_calibration_inputs_run_as_their_graph_and_err_less(lavapipe, gl, name, backend):
    import kernelforge
    from kernelforge.graph.prepare import prepare_graph
    from kernelforge.graph.reference import run_graph
    from kernelforge.testing.models import MODELS

    model = MODELS[name](size=32)
    device = lavapipe if backend == "wgsl" else gl
    rng = np.random.default_rng(7)
    calibration = [{"x": rng.standard_normal((1, 3, 32, 32)).astype(np.float32)} for _ in range(8)]
    session = kernelforge.load(
        model, device=device.info.index, backend=backend, weights="int4", calibration=calibration
    )
    graph = prepare_graph(model, weights="int4", calibration=calibration)
    nearest, fp32 = prepare_graph(model, weights="int4"), prepare_graph(model)
    errors = {"gptq": 0.0, "nearest": 0.0}
    for seed in range(4):  # inputs the rounding never saw
        feeds = {"x": np.random.default_rng(seed).standard_normal((1, 3, 32, 32)).astype(np.float32)}
        (got,) = session.run(feeds).values()
        (want,) = run_graph(graph, feeds).values()
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * float(np.abs(want).max()))
        (exact,) = run_graph(fp32, feeds).values()
        scale = float(np.abs(exact).max())
        errors["gptq"] = max(errors["gptq"], float(np.abs(want - exact).max()) / scale)
        errors["nearest"] = max(
            errors["nearest"], float(np.abs(run_graph(nearest, feeds)["logits"] - exact).max()) / scale
        )
    assert errors["gptq"] < 0.6 * errors["nearest"], errors
