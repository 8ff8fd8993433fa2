"""pool2d on real adapters (WGSL on lavapipe and friends, GLSL on llvmpipe) against numpy and onnx.reference."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import kernelforge.api as kops
from kernelforge.ops import get_op
from kernelforge.ops.pool import PoolProblem
from kernelforge.runtime.kernel import prepare
from kernelforge.testing.ops import every_config, quick_tune, sampled_configs
from kernelforge.tuner.objective import verify

pytestmark = pytest.mark.device
SPEC = get_op("pool2d")

SHAPES = [
    "max:1x1x1x1:k1",
    "avg:1x1x1x1:k1:cip",
    "max:1x8x13x11:k3:s2:p1",
    "avg:2x5x7x9:k3x2:s2x1:p0x1x1x0:cip",  # C not a multiple of 4, asymmetric pads
    "avg:1x4x7x7:k7",  # kernel == input
    "max:2x12x17x19:k3:s2:ceil",  # primes, ceil_mode
    "avg:1x8x11x13:k2x3:s3x2:p1x0x0x1:ceil",
    "avg:1x8x11x13:k2x3:s3x2:p1x0x0x1:ceil:cip",
    "max:1x4x9x10:k3x2:s1:p2x1:d2x3",  # dilations
    "avg:3x4x8x5:k2:s1:p1:d3x2:cip",
    "avg:1x3x1x7:k2x3:s1:p1:d2x1",  # windows without an input tap: NaN
    "max:1x3x1x7:k2x3:s1:p1:d2x1",  # ... and 0
    "gavg:2x12x7x5",
    "gmax:1x8x3x3",
    "gmax:3x5x1x1",
    "gavg:1x3x31x37",
    "gmax:1x16x1x300",
]


def _assert_matches(out, ref, what):
    """verify() against the reference; NaN (averages of windows without input taps) must match exactly."""
    nan = np.isnan(ref)
    assert np.array_equal(np.isnan(out), nan), f"{what}: NaN positions differ"
    verdict = verify(np.where(nan, 0, out), np.where(nan, 0, ref))
    assert verdict.ok, f"{what}: max error {verdict.max_error} > {verdict.tolerance}"


def _check(backend, problem, params, seed=0):
    inputs = SPEC.make_inputs(problem, np.random.default_rng(seed))
    out = prepare(backend, SPEC, problem, params, inputs).run()
    _assert_matches(out, SPEC.reference(problem, inputs), f"{SPEC.problem_key(problem)} {params}")


def _configs(problem, limits, language, count, seed):
    # the default, then sampled configs other than the default
    default, *picks = sampled_configs(SPEC, problem, limits, language, count, seed)
    return [default, *(p for p in picks if p != default)]


@pytest.mark.parametrize("shape", SHAPES)
def test_wgsl_shapes_with_sampled_configs(lavapipe, shape):
    problem = SPEC.parse_problem(shape)
    configs = _configs(problem, lavapipe.limits, "wgsl", 3, len(shape))
    assert len(configs) >= 3
    for params in configs:
        _check(lavapipe, problem, params)


@pytest.mark.parametrize("shape", SHAPES)
def test_glsl_shapes_with_sampled_configs(gl, shape):
    problem = SPEC.parse_problem(shape)
    configs = _configs(problem, gl.limits, "glsl", 3, len(shape))
    assert len(configs) >= 3
    for params in configs:
        _check(gl, problem, params)


def test_wgsl_nhwc_and_multi_output_threads(lavapipe):
    # every NHWC vec4 config on a channel count of 8 and an output width no wpt_w divides
    for shape in ("max:2x8x9x11:k3:s2:p1x0x1x1:ceil", "avg:1x8x5x7:k2:s1:p1:cip", "gavg:2x8x5x3"):
        problem = SPEC.parse_problem(shape)
        for params in every_config(SPEC, "wgsl"):
            wanted = params["layout"] == 1 and params["wg_size"] in (8, 256)
            if wanted and SPEC.constraints(problem, params, lavapipe.limits, "wgsl") is None:
                _check(lavapipe, problem, params)


@pytest.mark.parametrize("shape", ["avg:2x5x7x9:k3x2:s2x1:p0x1x1x0:ceil:cip", "gmax:2x5x7x9", "gavg:1x6x1x13"])
def test_glsl_whole_space_on_odd_shapes(gl, shape):
    # C = 5 or 6 leaves a partial RGBA texel; no unroll factor divides the loops
    problem = SPEC.parse_problem(shape)
    for params in every_config(SPEC, "glsl"):
        _check(gl, problem, params)


@pytest.mark.parametrize("shape", ["max:1x5x13x11:k3:s2:p1", "gavg:2x8x6x7"])
def test_every_wgsl_device(wgsl_device, shape):
    problem = SPEC.parse_problem(shape)
    _check(wgsl_device, problem, SPEC.default_params(problem, wgsl_device.limits, "wgsl"))


# --- the public API against onnx.reference on single-node graphs ----------------------------------------

ONNX_CASES = [
    ("MaxPool", (1, 3, 7, 7), dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])),
    ("MaxPool", (2, 5, 9, 8), dict(kernel_shape=[3, 2], strides=[2, 3], pads=[0, 1, 2, 0], ceil_mode=1)),
    ("MaxPool", (1, 2, 6, 7), dict(kernel_shape=[2, 3], strides=[2, 2], dilations=[2, 2], pads=[1, 1, 1, 1])),
    ("MaxPool", (1, 2, 8, 6), dict(kernel_shape=[3, 3], strides=[2, 2], auto_pad="SAME_UPPER")),
    ("AveragePool", (1, 3, 8, 6), dict(kernel_shape=[2, 3], strides=[2, 2], auto_pad="SAME_LOWER")),
    ("MaxPool", (2, 3, 11), dict(kernel_shape=[3], strides=[2], pads=[1, 0])),
    ("AveragePool", (1, 3, 7, 7), dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], count_include_pad=1)),
    ("AveragePool", (2, 3, 5, 6), dict(kernel_shape=[2, 3], pads=[1, 0, 0, 2])),
    ("AveragePool", (1, 2, 8, 9), dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1)),
    ("AveragePool", (1, 2, 6, 6), dict(kernel_shape=[2, 2], strides=[2, 2], dilations=[2, 1], pads=[1, 1, 1, 1])),
    ("AveragePool", (1, 3, 7, 5), dict(kernel_shape=[3, 2], strides=[2, 1], auto_pad="SAME_UPPER")),
    ("AveragePool", (1, 3, 7, 5), dict(kernel_shape=[3, 2], strides=[2, 2], auto_pad="VALID")),
    ("AveragePool", (2, 4, 10), dict(kernel_shape=[4], strides=[3], count_include_pad=1, pads=[2, 1])),
    ("GlobalAveragePool", (2, 6, 5, 7), {}),
    ("GlobalMaxPool", (1, 5, 3, 4), {}),
    ("GlobalAveragePool", (2, 3, 9), {}),
    ("GlobalAveragePool", (1, 2, 3, 4, 5), {}),
]
# Where onnx.reference (1.23) is wrong and onnxruntime follows the spec: MaxPool SAME_LOWER pads like
# SAME_UPPER, MaxPool with unit strides reads 4 pads as (t, b, l, r) and mis-sizes ceil_mode, AveragePool in
# ceil_mode shifts every window when the last one overhangs by 2+, GlobalMaxPool reduces the wrong axes
# unless the input is 4-D.
ORT_CASES = [
    ("MaxPool", (1, 3, 8, 7), dict(kernel_shape=[2, 3], strides=[2, 2], auto_pad="SAME_LOWER")),
    ("MaxPool", (1, 2, 5, 6), dict(kernel_shape=[2, 2], pads=[0, 1, 0, 0])),
    ("MaxPool", (1, 2, 5, 6), dict(kernel_shape=[3, 2], pads=[1, 0, 1, 1], ceil_mode=1)),
    ("AveragePool", (1, 2, 4, 13), dict(kernel_shape=[3, 3], strides=[3, 3], ceil_mode=1)),
    ("GlobalMaxPool", (2, 3, 7), {}),
    ("GlobalMaxPool", (1, 2, 3, 4, 5), {}),
]
_API = {
    "MaxPool": kops.max_pool,
    "AveragePool": kops.average_pool,
    "GlobalAveragePool": kops.global_average_pool,
    "GlobalMaxPool": kops.global_max_pool,
}


def _model(op, x, attrs):
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node(op, ["x"], ["y"], **attrs)],
        "pool",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10  # what the installed onnxruntime reads
    return model


def _run_api(op, x, attrs, backend):
    return _API[op](x, **attrs, device="lavapipe" if backend == "wgsl" else "auto", backend=backend)


@pytest.mark.parametrize("backend", ["wgsl", "glsl"])
@pytest.mark.parametrize("case", range(len(ONNX_CASES)))
def test_api_matches_onnx_reference(lavapipe, gl, backend, case):
    import onnx.reference as reference

    op, shape, attrs = ONNX_CASES[case]
    x = np.random.default_rng(case).uniform(-2, 2, shape).astype(np.float32)
    model = _model(op, x, attrs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        expected = reference.ReferenceEvaluator(model).run(None, {"x": x})[0]
    out = _run_api(op, x, attrs, backend)
    assert out.shape == expected.shape
    _assert_matches(out, expected.astype(np.float64), f"{op} {shape} {attrs} on {backend}")


@pytest.mark.parametrize("backend", ["wgsl", "glsl"])
@pytest.mark.parametrize("case", range(len(ORT_CASES)))
def test_api_matches_onnxruntime_where_onnx_reference_errs(lavapipe, gl, backend, case):
    import onnxruntime as ort

    op, shape, attrs = ORT_CASES[case]
    x = np.random.default_rng(case).uniform(-2, 2, shape).astype(np.float32)
    session = ort.InferenceSession(_model(op, x, attrs).SerializeToString(), providers=["CPUExecutionProvider"])
    expected = session.run(None, {"x": x})[0]
    out = _run_api(op, x, attrs, backend)
    assert out.shape == expected.shape
    _assert_matches(out, expected.astype(np.float64), f"{op} {shape} {attrs} on {backend}")


def test_api_windows_without_input_taps(lavapipe, gl):
    x = np.arange(1, 4, dtype=np.float32).reshape(1, 1, 3)
    for device, backend in (("lavapipe", "wgsl"), ("auto", "glsl")):
        kw = dict(kernel_shape=[2], strides=[2], pads=[3, 3], device=device, backend=backend)
        np.testing.assert_array_equal(kops.max_pool(x, **kw).ravel(), [0, 1, 3, 0])
        np.testing.assert_array_equal(kops.average_pool(x, **kw).ravel(), [np.nan, 1, 2.5, np.nan])
        np.testing.assert_array_equal(kops.average_pool(x, **kw, count_include_pad=1).ravel(), [0, 0.5, 2.5, 0])


def test_api_keeps_infinities(lavapipe):
    x = np.full((1, 4, 3, 3), -np.inf, np.float32)
    x[0, 1, 1, 1] = 2.0
    out = kops.max_pool(x, [2, 2], device="lavapipe", backend="wgsl")
    assert np.isneginf(out[0, 0]).all() and (out[0, 1] == 2.0).all()
    assert np.isneginf(kops.global_max_pool(x, device="lavapipe", backend="wgsl")[0, [0, 2, 3]]).all()


# --- the tuner on one small problem ------------------------------------------------------------------------


@pytest.mark.parametrize("fixture", ["lavapipe", "gl"])
def test_tuner_smoke(tmp_path, request, fixture):
    from kernelforge.db import TuningDB

    backend = request.getfixturevalue(fixture)
    problem = PoolProblem(1, 8, 9, 9, "avg", (3, 3), (2, 2), (1, 1, 1, 1), count_include_pad=1)
    result = quick_tune(backend, SPEC, problem, tmp_path)
    assert result.record is not None
    records = TuningDB(tmp_path).load(tmp_path / f"{backend.info.slug}.json").records
    rec = records[result.record.key]
    language = backend.language
    assert SPEC.validate_params(rec.params, language) == rec.params
    assert SPEC.constraints(problem, rec.params, backend.limits, language) is None
    _check(backend, problem, rec.params)
