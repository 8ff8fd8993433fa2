"""BatchNormalization with training_mode=1 on real adapters (WGSL and GLSL) against ONNX Runtime."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import kernelforge

from .test_session import assert_matches_ort

pytestmark = pytest.mark.device


def _model(shape, conv: bool):
    """x -> [Conv ->] BatchNormalization(training_mode=1) -> Relu, with the running statistics as outputs."""
    c = shape[1]
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.uniform(0.5, 2.0, c).astype(np.float32), n) for n in ("s", "b", "m", "v")]
    nodes = []
    bn_input = "x"
    if conv:
        inits.append(numpy_helper.from_array(rng.standard_normal((c, c, 3, 3)).astype(np.float32) * 0.3, "w"))
        nodes.append(helper.make_node("Conv", ["x", "w"], ["h"], pads=[1, 1, 1, 1]))
        bn_input = "h"
    nodes.append(
        helper.make_node(
            "BatchNormalization", [bn_input, "s", "b", "m", "v"], ["z", "rm", "rv"], training_mode=1, momentum=0.7
        )
    )
    nodes.append(helper.make_node("Relu", ["z"], ["y"]))
    outputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("y", "rm", "rv")]
    graph = helper.make_graph(
        nodes, "bn_train", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)], outputs, inits
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)])
    model.ir_version = 8
    return model


@pytest.mark.parametrize("language", ["wgsl", "glsl"])
@pytest.mark.parametrize(
    ("shape", "conv"),
    [((2, 3, 4, 5), False), ((1, 4, 6, 6), False), ((8, 5), False), ((3, 2, 7), False), ((2, 4, 8, 8), True)],
)
def test_training_mode_matches_onnxruntime(lavapipe, gl, language, shape, conv):
    backend = lavapipe if language == "wgsl" else gl
    model = _model(list(shape), conv)
    session = kernelforge.load(model, device=backend.info.index, backend=language)
    feeds = {"x": (np.random.default_rng(1).standard_normal(shape) * 2 + 0.5).astype(np.float32)}
    assert_matches_ort(model, session.run(feeds), feeds)
