"""3-D MaxPool and AveragePool as two 2-D pools (over H, W, then over D), against onnxruntime."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from kernelforge.graph.onnx_import import UnsupportedModelError, import_model
from kernelforge.graph.reference import run_graph

CASES = [
    ("MaxPool", {"kernel_shape": [2, 3, 2]}),
    ("MaxPool", {"kernel_shape": [3, 2, 2], "strides": [2, 1, 2], "pads": [1, 0, 1, 1, 1, 0], "dilations": [1, 2, 1]}),
    ("MaxPool", {"kernel_shape": [2, 2, 3], "strides": [2, 2, 2], "ceil_mode": 1}),
    ("AveragePool", {"kernel_shape": [2, 2, 2]}),
    ("AveragePool", {"kernel_shape": [3, 3, 2], "pads": [1, 1, 0, 1, 1, 1], "count_include_pad": 0}),
    ("AveragePool", {"kernel_shape": [3, 3, 2], "pads": [1, 1, 0, 1, 1, 1], "count_include_pad": 1}),
    ("AveragePool", {"kernel_shape": [2, 3, 3], "strides": [2, 2, 2], "ceil_mode": 1, "count_include_pad": 0}),
    ("AveragePool", {"kernel_shape": [3, 3, 3], "auto_pad": "SAME_UPPER", "strides": [2, 1, 2]}),
]


@pytest.mark.parametrize(("op", "attrs"), CASES)
def test_3d_pool_is_two_2d_pools(op: str, attrs: dict[str, object]) -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 7, 6, 5])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    graph = helper.make_graph([helper.make_node(op, ["x"], ["y"], **attrs)], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    imported = import_model(model)
    assert [n.op for n in imported.nodes].count("pool2d") == 2
    feeds = {"x": np.random.default_rng(len(str(attrs))).uniform(-2, 2, (2, 3, 7, 6, 5)).astype(np.float32)}
    (want,) = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
    got = run_graph(imported, feeds)["y"]
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_a_3d_conv_is_still_refused_naming_the_window() -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4, 4])
    w = helper.make_tensor("w", TensorProto.FLOAT, [3, 2, 2, 2, 2], np.ones(48, np.float32))
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[2, 2, 2])], "g", [x], [y], [w])
    with pytest.raises(UnsupportedModelError, match=r"kernel_shape=\[2, 2, 2\]: only 1-D and 2-D windows"):
        import_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)]))
