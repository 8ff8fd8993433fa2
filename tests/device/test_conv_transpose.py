"""conv_transpose2d on real adapters (WGSL and GLSL) against numpy, and 1-D/2-D models against ONNX Runtime."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import kernelforge
from kernelforge.ops import get_op
from kernelforge.ops._epilogue import Activation
from kernelforge.ops.conv_transpose import DEFAULT_PARAMS, ConvTransposeProblem
from kernelforge.testing.ops import check_op, check_sampled_configs, quick_tune, valid_configs

from ..null.test_conv_transpose_spec import audio_model, conv_transpose_model, unet_model

pytestmark = pytest.mark.device
SPEC = get_op("conv_transpose2d")

SHAPES = [
    "1x1x1x1:1x1x1",
    "1x8x6x5:8x2x2:s2",  # U-Net upsampling, k = s
    "2x3x7x6:4x3x3:s3x2:p1:o1",  # batch, stride 3, output padding
    "1x5x4x7:6x3x3:s1:p1",  # stride 1: a plain (flipped) convolution
    "1x6x4x5:6x3x3:s2:p0,1,2,0:d2x1:g3",  # groups, asymmetric pads, dilation
    "1x8x5x5:8x4x4:s2:p1:g8",  # depthwise
    "1x4x4x4:8x3x3:s2:g4",  # depthwise, multiplier 2
    "1x12x3x9:8x2x5:s3x1:p0,2,1,0:o2x0:g2",  # non-square kernel, grouped 6 -> 4
    "1x16x1x21:8x1x5:s1x4:p0,2,0,1:o0x3",  # a lifted 1-D layer
]


@pytest.mark.parametrize("shape", SHAPES)
def test_wgsl_sampled_configs(wgsl_device, shape):
    check_sampled_configs(wgsl_device, SPEC, SPEC.parse_problem(shape), 4, len(shape))


@pytest.mark.parametrize("shape", SHAPES)
def test_glsl_sampled_configs(gl, shape):
    check_sampled_configs(gl, SPEC, SPEC.parse_problem(shape), 4, len(shape))


@pytest.mark.parametrize("layout", [0, 1])
@pytest.mark.parametrize("phase", [0, 1])
@pytest.mark.parametrize("vec_width", [1, 4])
def test_every_layout_phase_and_width(lavapipe, layout, phase, vec_width):
    # 13x14 output: pixel tiles and phases run past the edges; 8 channels in 2 groups of 4 outputs
    problem = SPEC.parse_problem("2x8x5x6:8x3x4:s3x2:p1,2,0,1:o1x0:d1x2:g2")
    for extra in ({"wpt_o": 4, "wg_y": 1}, {"wpt_p": 1, "wpt_o": 4, "tile_k": 1, "wg_x": 4}):
        params = {**DEFAULT_PARAMS, "layout": layout, "phase": phase, "vec_width": vec_width, **extra}
        assert SPEC.constraints(problem, params, lavapipe.limits, "wgsl") is None, params
        check_op(lavapipe, SPEC, problem, params)


def test_wgsl_tall_register_tiles(lavapipe):
    problem = SPEC.parse_problem("1x16x3x5:32x2x2:s2")
    for params in (
        {**DEFAULT_PARAMS, "wpt_p": 16, "wpt_o": 16, "wg_x": 2, "wg_y": 2, "tile_k": 8},
        {**DEFAULT_PARAMS, "wpt_p": 16, "wpt_o": 2, "vec_width": 1, "phase": 0},
    ):
        if SPEC.constraints(problem, params, lavapipe.limits, "wgsl") is None:
            check_op(lavapipe, SPEC, problem, params)


def test_glsl_every_config(gl):
    for shape in ("1x6x3x4:8x3x3:s2:p1:o1", "1x8x4x4:8x3x3:s2:g8", "1x8x3x3:8x2x3:s2x3:g2"):
        problem = SPEC.parse_problem(shape)
        configs = valid_configs(SPEC, problem, gl.limits, "glsl")
        assert len(configs) >= 4
        for params in configs:
            check_op(gl, SPEC, problem, params)


@pytest.mark.parametrize("language", ["wgsl", "glsl"])
@pytest.mark.parametrize("activation", ["relu", "leaky_relu(0.2)", "sigmoid", "clip(-0.5,0.5)"])
def test_bias_and_activation_epilogue(lavapipe, gl, language, activation):
    backend = lavapipe if language == "wgsl" else gl
    plain = SPEC.parse_problem("1x8x4x5:8x3x3:s2:p1:o1")
    problem = ConvTransposeProblem(**{**plain.__dict__, "has_bias": True, "activation": Activation.parse(activation)})
    params = DEFAULT_PARAMS if language == "wgsl" else SPEC.default_params(problem, gl.limits, "glsl")
    out = check_op(backend, SPEC, problem, params)
    assert np.all(np.isfinite(out))


def test_large_dispatch_spills_into_z(lavapipe):
    # 1 x 1-pixel tiles of a 513x512 output: 262656 workgroups along x spill into a second z slice per image
    problem = SPEC.parse_problem("2x1x171x256:1x3x2:s3x2:o0x0")
    params = {**DEFAULT_PARAMS, "wg_x": 1, "wg_y": 1, "wpt_p": 1, "wpt_o": 1, "vec_width": 1, "tile_k": 1}
    launch = SPEC.launch(problem, params)
    assert launch.workgroups[0] == 65535 and launch.workgroups[2] == 2 * 5
    check_op(lavapipe, SPEC, problem, params)


def test_tuner_smoke(tmp_path, lavapipe):
    problem = SPEC.parse_problem("1x16x8x8:8x2x2:s2")
    result = quick_tune(lavapipe, SPEC, problem, tmp_path)
    assert result.record is not None and result.best_time <= result.default_time
    assert SPEC.constraints(problem, result.record.params, lavapipe.limits, "wgsl") is None
    check_op(lavapipe, SPEC, problem, result.record.params)


# --- models against ONNX Runtime -----------------------------------------------------------------------------

RTOL = 1e-4  # of the output's largest magnitude


@pytest.fixture(scope="module", params=["wgsl", "glsl"])
def device(request: pytest.FixtureRequest) -> tuple[Any, str]:
    """(device info, language): lavapipe for WGSL, llvmpipe-GL for GLSL."""
    backend = request.getfixturevalue("lavapipe" if request.param == "wgsl" else "gl")
    return backend.info, request.param


def _check_model(model: onnx.ModelProto, feeds: dict[str, np.ndarray], device: tuple[Any, str]) -> Any:
    info, language = device
    session = kernelforge.load(model, device=info.index, backend=language)
    got = session.run(feeds)
    ort_session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    want = dict(zip([o.name for o in ort_session.get_outputs()], ort_session.run(None, feeds), strict=True))
    assert sorted(got) == sorted(want)
    for name, expected in want.items():
        assert got[name].shape == expected.shape, name
        scale = max(float(np.abs(expected).max()), 1e-6)
        np.testing.assert_allclose(got[name], expected, rtol=0, atol=RTOL * scale, err_msg=f"{language} {name}")
    return session


@pytest.mark.parametrize("opset", [11, 22])
def test_unet_level_matches_onnxruntime(device, opset):
    model = unet_model(opset)
    for seed in (0, 1):  # a second input flows through the same buffers
        x = np.random.default_rng(seed).standard_normal((1, 8, 12, 10)).astype(np.float32)
        session = _check_model(model, {"x": x}, device)
    ops = [s.call.op for s in session.steps]
    assert ops.count("conv_transpose2d") == 1 and ops.count("elementwise") == 0  # bias and Relu fused
    if device[1] == "wgsl":  # one layout for the whole level: conversions only at the model's input and output
        assert ops.count("transpose") <= 2, ops


@pytest.mark.parametrize("opset", [11, 22])
def test_audio_front_end_matches_onnxruntime(device, opset):
    model = audio_model(opset)
    x = np.random.default_rng(2).standard_normal((2, 4, 40)).astype(np.float32)
    session = _check_model(model, {"x": x}, device)
    ops = [s.call.op for s in session.steps]
    assert ops.count("conv2d") == 2 and ops.count("pool2d") == 1


@pytest.mark.parametrize(
    "x,w,attrs",
    [
        ((1, 16, 8, 8), (16, 8, 2, 2), {"strides": [2, 2]}),
        ((2, 6, 5, 4), (6, 2, 3, 3), {"strides": [2, 2], "pads": [1, 0, 1, 1], "output_padding": [1, 1], "group": 3}),
        ((1, 4, 5, 5), (4, 1, 4, 4), {"strides": [2, 2], "auto_pad": "SAME_UPPER", "group": 4}),
        ((1, 3, 4, 6), (3, 5, 3, 3), {"strides": [3, 2], "output_shape": [12, 13], "dilations": [1, 2]}),
        ((2, 4, 20), (4, 3, 4), {"strides": [2], "pads": [1, 1]}),  # 1-D
        ((1, 8, 16), (8, 2, 5), {"strides": [4], "auto_pad": "SAME_LOWER", "group": 2}),  # 1-D, grouped
        # 3-D: one 2-D kernel per depth tap and one placing depth
        ((1, 2, 3, 4, 5), (2, 3, 3, 3, 3), {}),
        (
            (2, 4, 3, 4, 3),
            (4, 2, 2, 3, 2),
            {
                "strides": [2, 1, 2],
                "pads": [1, 0, 1, 0, 1, 1],
                "output_padding": [1, 0, 1],
                "dilations": [2, 1, 1],
                "group": 2,
            },
        ),
    ],
)
def test_conv_transpose_models_match_onnxruntime(device, x, w, attrs):
    model, feeds = conv_transpose_model(x, w, **attrs)
    _check_model(model, feeds, device)
