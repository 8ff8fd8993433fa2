"""Sizes are checked before anything is allocated: a tiny model cannot ask for gigabytes."""

from __future__ import annotations

import tracemalloc

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from kernelforge.graph.ir import MAX_ELEMENTS, GraphError
from kernelforge.graph.onnx_import import import_model


def _model(nodes, inputs, outputs, inits=(), opset=17) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "bomb", inputs, outputs, list(inits))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _imports_without_allocating(model: onnx.ModelProto, match: str) -> None:
    tracemalloc.start()
    try:
        with pytest.raises(GraphError, match=match):
            import_model(model)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 << 20, f"{peak} bytes allocated while refusing the model"


def test_a_constant_of_shape_bomb_is_refused_naming_node_and_shape():
    shape = numpy_helper.from_array(np.array([50000, 50000], np.int64), "shape")
    one = helper.make_tensor("v", TensorProto.FLOAT, [1], [1.0])
    nodes = [
        helper.make_node("ConstantOfShape", ["shape"], ["big"], name="bomb", value=one),
        helper.make_node("Add", ["x", "big"], ["y"], name="add"),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [50000, 50000])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    model = _model(nodes, [x], [y], [shape])
    assert len(model.SerializeToString()) < 400
    _imports_without_allocating(model, r"input 'x'.*\[50000, 50000\]")
    # the same constant fed by a small input: the folding itself is what must stop
    x_small = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    small = _model(nodes, [x_small], [y], [shape])
    _imports_without_allocating(small, r"ConstantOfShape node 'bomb'.*\[50000, 50000\]")


def test_a_broadcast_bomb_of_constants_is_refused():
    a = numpy_helper.from_array(np.ones((40000, 1), np.float32), "a")
    b = numpy_helper.from_array(np.ones((1, 40000), np.float32), "b")
    nodes = [helper.make_node("Mul", ["a", "b"], ["ab"], name="outer"), helper.make_node("Add", ["x", "ab"], ["y"])]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    with pytest.raises(GraphError, match=r"Mul node 'outer'.*\[40000, 40000\]"):
        import_model(_model(nodes, [x], [y], [a, b]))


def test_a_huge_runtime_tensor_is_refused_before_any_buffer():
    w = numpy_helper.from_array(np.ones((4, 100000), np.float32), "w")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["y"], name="wide")]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [30000, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    with pytest.raises(GraphError, match=r"MatMul node 'wide'.*\[30000, 100000\]"):
        import_model(_model(nodes, [x], [y], [w]))


def test_input_shapes_are_bounded_too():
    nodes = [helper.make_node("Relu", ["x"], ["y"])]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    with pytest.raises(GraphError, match="input 'x'"):
        import_model(_model(nodes, [x], [y]), input_shapes={"x": [MAX_ELEMENTS, 8]})
