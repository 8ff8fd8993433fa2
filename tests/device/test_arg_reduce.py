"""ArgMax/ArgMin on real adapters (WGSL and GLSL) against the numpy reference: ties, NaN and infinities."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import kernelforge
from kernelforge.ops import get_op
from kernelforge.ops.arg_reduce import ArgReduceProblem
from kernelforge.testing.ops import check_op, check_sampled_configs

from .test_session import assert_matches_ort

pytestmark = pytest.mark.device
SPEC = get_op("arg_reduce")

SHAPES = [
    "1:a0",
    "7:a0:min",
    "3000:a0:last",  # one long row
    "2x5000:a1:min:last:k0",  # a token pick over a vocabulary-sized row
    "5x2000:a0",  # rows of 5, 2000 apart
    "3x5x7:a1:last",
    "3x5x7:a2:min:k0",
    "13x1x7:a1",  # a size-1 axis: every index is 0
    "2x3x4x5:a3:min",
    "31x37:a0:max:last",
]


@pytest.mark.parametrize("shape", SHAPES)
def test_wgsl_shapes_with_sampled_configs(lavapipe, shape):
    check_sampled_configs(lavapipe, SPEC, SPEC.parse_problem(shape), 4, len(shape), rtol=0.0)


@pytest.mark.parametrize("shape", SHAPES)
def test_glsl_shapes_with_sampled_configs(gl, shape):
    configs = check_sampled_configs(gl, SPEC, SPEC.parse_problem(shape), 3, len(shape), rtol=0.0)
    assert len(configs) >= 2


def test_wgsl_every_thread_count(lavapipe):
    # each threads value: partial workgroups, idle threads (no element kept) and the merge of every width
    for threads, last in itertools.product(SPEC.params("wgsl")[0].choices, (False, True)):
        problem = ArgReduceProblem((19, 300), 1, "min", last)
        check_op(lavapipe, SPEC, problem, {"threads": threads, "outputs_per_wg": max(1, 32 // threads)}, rtol=0.0)


def _special_rows() -> np.ndarray:
    """Rows where ONNX Runtime's in-order scan is easy to get wrong: NaN, infinities, ties at both ends."""
    nan, inf = np.nan, np.inf
    rows = [
        [1, nan, 3, 3, 0, 2, 3, 1],
        [nan, 1, 2, 5, 5, 0, -1, 4],  # a NaN first element: 0
        [1, 2, nan, 2, 1, 0, 2, nan],
        [nan] * 8,
        [-inf] * 8,
        [inf, 1, inf, -inf, nan, inf, 0, -inf],
        [-inf, nan, -inf, nan, -inf, nan, -inf, nan],
        [5, 5, 1, 5, 1, 1, 5, 1],
    ]
    return np.array(rows, np.float32)


@pytest.mark.parametrize("language", ["wgsl", "glsl"])
@pytest.mark.parametrize(("kind", "last"), [("max", False), ("max", True), ("min", False), ("min", True)])
def test_nan_ties_and_infinities_follow_onnxruntime(lavapipe, gl, language, kind, last):
    backend = lavapipe if language == "wgsl" else gl
    rows = _special_rows()
    cases = [(rows, 1), (np.ascontiguousarray(rows.T), 0)]  # contiguous rows and strided columns
    for x, axis in cases:
        problem = ArgReduceProblem(x.shape, axis, kind, last)
        if language == "wgsl":
            configs = [{"threads": t, "outputs_per_wg": 1} for t in (1, 2, 4, 8)]
        else:
            configs = [{"pack": p, "square": s} for p in (1, 4) for s in (0, 1)]
        for params in configs:
            out = check_op(backend, SPEC, problem, params, rtol=0.0, inputs=[x])
            assert np.all(np.isfinite(out))


@pytest.mark.parametrize(("op", "last"), [("ArgMax", 0), ("ArgMin", 1)])
@pytest.mark.parametrize("language", ["wgsl", "glsl"])
def test_classifier_head_matches_onnxruntime(lavapipe, gl, language, op, last):
    # logits = x @ W, then the index of the best class per row as an int64 graph output
    backend = lavapipe if language == "wgsl" else gl
    rng = np.random.default_rng(2)
    weights = rng.standard_normal((32, 1000)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w"], ["logits"]),
            helper.make_node(op, ["logits"], ["label"], axis=-1, keepdims=0, select_last_index=last),
        ],
        "head",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 32])],
        [helper.make_tensor_value_info("label", TensorProto.INT64, [4])],
        [numpy_helper.from_array(weights, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    session = kernelforge.load(model, device=backend.info.index, backend=language)
    feeds = {"x": rng.standard_normal((4, 32)).astype(np.float32)}
    out = session.run(feeds)
    assert out["label"].dtype == np.int64
    assert_matches_ort(model, out, feeds)


def test_every_wgsl_device_runs_arg_reduce(wgsl_device):
    # the NaN, infinity and tie rows on every WGSL adapter: its compiler must not fold the NaN tests away
    x = np.ascontiguousarray(_special_rows().T).reshape(2, 4, 8)
    for kind, last in itertools.product(("max", "min"), (False, True)):
        problem = ArgReduceProblem(x.shape, 2, kind, last)
        for params in (SPEC.default_params(problem, wgsl_device.limits, "wgsl"), {"threads": 4, "outputs_per_wg": 2}):
            check_op(wgsl_device, SPEC, problem, params, rtol=0.0, inputs=[x])
