"""Gather on real adapters (WGSL and GLSL) against numpy, and in models against ONNX Runtime."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import pytest

import kernelforge
from kernelforge.ops import get_op
from kernelforge.ops.gather import GatherProblem
from kernelforge.runtime.kernel import prepare
from kernelforge.testing.ops import check_op, check_sampled_configs, quick_tune, valid_configs

from ..null.test_gather_spec import cls_gemm_model, embedding_model, ort_run, runtime_indices_model

pytestmark = pytest.mark.device
SPEC = get_op("gather")

SHAPES = [
    "1000x64:i2x7",  # an embedding lookup
    "5:is",  # a scalar out of a vector
    "1x12x16:is:a1",  # the [CLS] pick
    "2x9x3x4:i5x2:a1",  # 2-D indices into a middle axis, blocks of 12
    "4x5x6:i2x3:a-1",  # the last axis: blocks of one value
    "3x10x5:i4:a-2",  # blocks of 5: vec4 copies impossible
    "7x3:i9x2x2",  # more indices than rows (repeats)
    "300x8:i1",
]
# every config of these on lavapipe and llvmpipe-GL (the WGSL space is 32 points, the GLSL one 8)
EVERY = ["1000x64:i2x7", "4x5x6:i2x3:a-1", "2x9x3x4:i5x2:a1", "5:is"]


@pytest.mark.parametrize("shape", SHAPES)
def test_wgsl_shapes_with_sampled_configs(wgsl_device, shape):
    configs = check_sampled_configs(wgsl_device, SPEC, SPEC.parse_problem(shape), 3, len(shape), rtol=0.0)
    assert len(configs) >= 2


@pytest.mark.parametrize("shape", SHAPES)
def test_glsl_shapes_with_sampled_configs(gl, shape):
    configs = check_sampled_configs(gl, SPEC, SPEC.parse_problem(shape), 3, len(shape), rtol=0.0)
    assert len(configs) >= 2


@pytest.mark.parametrize("language", ["wgsl", "glsl"])
def test_every_valid_config(lavapipe, gl, language):
    backend = lavapipe if language == "wgsl" else gl
    count = 0
    for shape in EVERY:
        problem = SPEC.parse_problem(shape)
        for params in valid_configs(SPEC, problem, backend.limits, language):
            check_op(backend, SPEC, problem, params, rtol=0.0)
            count += 1
    assert count >= (70 if language == "wgsl" else 32)


def _configs(language: str, problem: GatherProblem) -> list[dict[str, int]]:
    """A scalar and a vector (or texel-copying) config, square textures once."""
    if language == "glsl":
        return [{"pack": 4, "in_pack": 4, "square": 0}, {"pack": 1, "in_pack": 4, "square": 1}]
    vec = 4 if problem.inner % 4 == 0 else 1
    return [{"wg": 64, "ept": 1, "vec_width": vec}, {"wg": 32, "ept": 4, "vec_width": 1}]


@pytest.mark.parametrize("language", ["wgsl", "glsl"])
def test_negative_fractional_and_out_of_range_indices_clamp(lavapipe, gl, language):
    backend = lavapipe if language == "wgsl" else gl
    problem = GatherProblem((3, 6, 8), (12,), 1)
    data = np.random.default_rng(5).standard_normal(problem.data).astype(np.float32)
    # in range, negative, truncated toward zero, and past either end (ONNX Runtime raises; the kernel clamps)
    indices = np.array([0, 5, -1, -6, 2.7, -0.5, -2.5, 6, 1000, -7, 3e9, -1e30], np.float32)
    for params in _configs(language, problem):
        out = check_op(backend, SPEC, problem, params, rtol=0.0, inputs=[data, indices])
        rows = [0, 5, 5, 0, 2, 0, 4, 5, 5, 0, 5, 0]
        np.testing.assert_array_equal(out, data[:, rows])


@pytest.mark.parametrize("language", ["wgsl", "glsl"])
def test_nan_index_reads_a_row_in_range_and_nan_data_flows(lavapipe, gl, language):
    backend = lavapipe if language == "wgsl" else gl
    problem = GatherProblem((5, 4), (3,), 0)
    data = np.arange(20, dtype=np.float32).reshape(5, 4)
    data[2, 1] = np.nan
    data[4, 3] = np.inf
    indices = np.array([np.nan, 2, -1], np.float32)
    for params in _configs(language, problem):
        out = prepare(backend, SPEC, problem, params, [data, indices]).run()
        assert any(np.array_equal(out[0], row, equal_nan=True) for row in data), out[0]
        np.testing.assert_array_equal(out[1:], data[[2, 4]])  # NaN and inf copied as they are


@pytest.mark.parametrize("language", ["wgsl", "glsl"])
def test_large_embedding_table(lavapipe, gl, language):
    # BERT-sized rows out of a table too tall for a row-aligned texture (the GLSL default wraps it)
    backend = lavapipe if language == "wgsl" else gl
    problem = SPEC.parse_problem("20000x384:i2x16")
    params = SPEC.default_params(problem, backend.limits, language)
    check_op(backend, SPEC, problem, params, rtol=0.0)


def test_tuner_smoke(tmp_path, lavapipe):
    problem = SPEC.parse_problem("1000x64:i8x32")
    result = quick_tune(lavapipe, SPEC, problem, tmp_path)
    assert result.record is not None and result.best_time <= result.default_time
    assert SPEC.constraints(problem, result.record.params, lavapipe.limits, "wgsl") is None
    check_op(lavapipe, SPEC, problem, result.record.params, rtol=0.0)


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
    got, want = session.run(feeds), ort_run(model, feeds)
    assert sorted(got) == sorted(want)
    for name, expected in want.items():
        assert got[name].shape == expected.shape, name
        scale = max(float(np.abs(expected).max()), 1e-6)
        np.testing.assert_allclose(got[name], expected, rtol=0, atol=RTOL * scale, err_msg=f"{language} {name}")
    return session


@pytest.mark.parametrize("opset", [11, 13])
def test_embedding_of_ids_computed_in_graph(device, opset):
    model, feeds = embedding_model(ids_in_graph=True, opset=opset)
    session = _check_model(model, feeds, device)
    assert [s.call.op for s in session.steps].count("gather") == 1
    # other ids flow through the same buffers
    feeds["ids_f"] = np.array([[1, 2, 3, 4, 5, 6, 7], [-7, -6, -5, -4, -3, -2, -1]], np.float32)
    _check_model(model, feeds, device)


def test_embedding_of_initializer_ids_folds(device):
    model, feeds = embedding_model(ids_in_graph=False)
    session = _check_model(model, feeds, device)
    assert "gather" not in [s.call.op for s in session.steps]


def test_cls_pick_feeds_a_gemm(device):
    model, feeds = cls_gemm_model()
    session = _check_model(model, feeds, device)
    assert [s.call.op for s in session.steps].count("gather") == 1


def test_runtime_data_and_runtime_indices(device):
    model, feeds = runtime_indices_model()
    session = _check_model(model, feeds, device)
    assert [s.call.op for s in session.steps].count("gather") == 2


def test_embedding_of_int64_input_ids(device):
    # token ids as the model's own int64 input, as exporters write BERT and GPT-2
    from onnx import TensorProto, helper, numpy_helper

    table = np.random.default_rng(13).standard_normal((500, 32)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "input_ids"], ["emb"], name="embed")],
        "g",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, [2, 6])],
        [helper.make_tensor_value_info("emb", TensorProto.FLOAT, [2, 6, 32])],
        [numpy_helper.from_array(table, "table")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    ids = np.array([[101, 75, 208, 102, 0, 0], [101, 499, 3, 250, 3, 102]])
    session = _check_model(model, {"input_ids": ids.astype(np.int64)}, device)
    assert session.dtypes["input_ids"] == "int64"
    np.testing.assert_array_equal(session.run({"input_ids": ids})["emb"], table[ids])
