"""LayerNormalization on real adapters (WGSL and GLSL) against numpy, and in models against ONNX Runtime."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import kernelforge
from kernelforge.ops import get_op
from kernelforge.ops.layernorm import LayerNormProblem
from kernelforge.testing.ops import check_op, check_sampled_configs, quick_tune

from ..null.test_layernorm_spec import layernorm_model, mlp_layernorm_model

pytestmark = pytest.mark.device
SPEC = get_op("layernorm")

SHAPES = [
    "1",  # L=1: every output is B
    "1x1:nb",
    "300x1",  # many rows of one element
    "7",
    "5x3",  # L not a multiple of 4
    "9x37:nb",
    "128x384",
    "2x4096",  # one long row per workgroup
    "2x3x4x5:a2",  # the last two axes
    "2x3x4x5:a1:e0.001",  # the last three
    "6x5x7:a0:nb",  # everything: one row
    "3x1x6:a1",  # a size-1 normalised axis
    "65x10",  # rows not a multiple of rows_per_wg
]


@pytest.mark.parametrize("shape", SHAPES)
def test_wgsl_shapes_with_sampled_configs(wgsl_device, shape):
    configs = check_sampled_configs(wgsl_device, SPEC, SPEC.parse_problem(shape), 3, len(shape))
    assert len(configs) >= 2


@pytest.mark.parametrize("shape", SHAPES)
def test_glsl_shapes_with_sampled_configs(gl, shape):
    configs = check_sampled_configs(gl, SPEC, SPEC.parse_problem(shape), 3, len(shape))
    assert len(configs) >= 2


def test_wgsl_every_reduction_width(lavapipe):
    # each threads value with both statistics schemes: partial workgroups, idle lanes and every tree depth
    problem = SPEC.parse_problem("19x300")
    for threads, one_pass in itertools.product(SPEC.params("wgsl")[0].choices, (0, 1)):
        params = {"threads": threads, "rows_per_wg": max(1, 32 // threads), "one_pass": one_pass}
        check_op(lavapipe, SPEC, problem, params)


def test_glsl_every_config(gl):
    for shape in ("6x10", "4x3x8:a1:nb"):
        problem = SPEC.parse_problem(shape)
        for pack, square, one_pass in itertools.product((1, 4), (0, 1), (0, 1)):
            check_op(gl, SPEC, problem, {"pack": pack, "square": square, "one_pass": one_pass})


@pytest.mark.parametrize("language", ["wgsl", "glsl"])
def test_offset_and_constant_rows_stay_accurate(lavapipe, gl, language):
    backend = lavapipe if language == "wgsl" else gl
    rng = np.random.default_rng(4)
    x = (rng.uniform(-100, 100, (6, 1)) + rng.standard_normal((6, 257))).astype(np.float32)
    x[0] = 5.0  # a constant row: zero variance, the output is B
    x[1] = -3e4 + rng.standard_normal(257).astype(np.float32)  # |mean| >> std
    problem = LayerNormProblem(x.shape, -1, 1e-5, True)
    scale = rng.uniform(0.5, 1.5, 257).astype(np.float32)
    bias = rng.uniform(-1, 1, 257).astype(np.float32)
    if language == "glsl":
        configs = [{"pack": p, "square": 0, "one_pass": o} for p in (1, 4) for o in (0, 1)]
    else:
        configs = [{"threads": t, "rows_per_wg": 2, "one_pass": o} for t in (1, 64) for o in (0, 1)]
    for params in configs:
        out = check_op(backend, SPEC, problem, params, inputs=[x, scale, bias])
        assert np.all(np.isfinite(out))
        np.testing.assert_allclose(out[0], bias, rtol=0, atol=1e-6)


def test_tuner_smoke(tmp_path, lavapipe):
    problem = SPEC.parse_problem("128x384")
    result = quick_tune(lavapipe, SPEC, problem, tmp_path)
    assert result.record is not None and result.best_time <= result.default_time
    assert SPEC.constraints(problem, result.record.params, lavapipe.limits, "wgsl") is None
    check_op(lavapipe, SPEC, problem, result.record.params)


# --- models against ONNX Runtime ---------------------------------------------------------------------------------

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


@pytest.mark.parametrize("opset", [17, 18])
def test_matmul_layernorm_relu_matches_onnxruntime(device, opset):
    model = mlp_layernorm_model(opset)
    for seed in (0, 1):  # a second input flows through the same buffers
        x = np.random.default_rng(seed).standard_normal((2, 5, 8)).astype(np.float32)
        session = _check_model(model, {"x": x}, device)
    assert [s.call.op for s in session.steps].count("layernorm") == 1


@pytest.mark.parametrize("opset", [17, 18])
@pytest.mark.parametrize(
    "shape,axis,epsilon,bias,as_inputs",
    [
        ((2, 7, 64), -1, 1e-5, True, False),
        ((2, 3, 4, 5), 2, 1e-3, True, False),  # the last two axes
        ((3, 10), -1, 1e-12, False, False),
        ((4, 6, 5), -2, 1e-5, True, True),  # Scale and B fed at run time
        ((1, 4, 3), 1, 1e-5, False, True),
    ],
)
def test_layernorm_models_match_onnxruntime(device, opset, shape, axis, epsilon, bias, as_inputs):
    model, feeds = layernorm_model(shape, axis, epsilon, bias, opset, params_as_inputs=as_inputs)
    _check_model(model, feeds, device)
