"""BatchNormalization with training_mode=1 imported and run in numpy against ONNX Runtime: no device needed."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper
from onnx.reference import ReferenceEvaluator

from kernelforge.graph.onnx_import import UnsupportedModelError, import_model
from kernelforge.graph.reference import run_graph

from .test_onnx_import import check_numerics, make_model, ops

CHANNEL_INPUTS = ("scale", "bias", "mean", "var")


def _model(shape, outputs=("y", "running_mean", "running_var"), opset=15, **attrs):
    c = shape[1]
    node = helper.make_node(
        "BatchNormalization", ["x", *CHANNEL_INPUTS], list(outputs), name="bn", training_mode=1, **attrs
    )
    inputs = {"x": list(shape), **{name: [c] for name in CHANNEL_INPUTS}}
    return make_model([node], inputs, [o for o in outputs if o], opset=opset)


def _feeds(shape, seed=0):
    rng = np.random.default_rng(seed)
    c = shape[1]
    feeds = {"x": (rng.standard_normal(shape) * 3 + 1).astype(np.float32)}
    feeds.update({name: rng.uniform(0.5, 2.0, c).astype(np.float32) for name in CHANNEL_INPUTS})
    return feeds


@pytest.mark.parametrize(
    ("shape", "reduces"),
    [
        ((2, 3, 4, 5), 4),  # N and the spatial axes around C: each statistic over S, then over N
        ((1, 3, 4, 5), 2),  # N = 1: one reduction per statistic
        ((6, 3), 2),  # no spatial axes
        ((2, 1, 6), 2),  # C = 1: N and S adjacent
        ((3, 2, 2, 3, 2), 4),
        ((1, 4), 2),  # one value per channel: variance 0
    ],
)
def test_training_mode_matches_onnxruntime(shape, reduces):
    graph = check_numerics(_model(shape, momentum=0.8, epsilon=1e-3), _feeds(shape))
    assert ops(graph).count("reduce") == reduces


def test_matches_onnx_reference_with_default_attributes():
    shape = (2, 3, 4, 5)
    model, feeds = _model(shape), _feeds(shape, seed=1)
    got = run_graph(import_model(model), feeds)
    for name, want in zip(
        ("y", "running_mean", "running_var"), ReferenceEvaluator(model).run(None, feeds), strict=True
    ):
        np.testing.assert_allclose(got[name], want, rtol=1e-5, atol=1e-5, err_msg=name)


def test_unread_running_statistics_run_no_kernel():
    graph = import_model(_model((2, 3, 4), outputs=("y", "", "")))
    assert ops(graph).count("elementwise") == 2  # the deviations and Y


def test_inference_mode_statistics_outputs_stay_refused():
    node = helper.make_node("BatchNormalization", ["x", *CHANNEL_INPUTS], ["y", "m"], name="bn")
    inputs = {"x": [2, 3, 4], **{name: [3] for name in CHANNEL_INPUTS}}
    with pytest.raises(UnsupportedModelError, match=r"BatchNormalization node 'bn'.*training statistics output 'm'"):
        import_model(make_model([node], inputs, ["y", "m"], opset=15))
