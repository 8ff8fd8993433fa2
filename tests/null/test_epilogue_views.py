"""Epilogues behind a view: ``nn.Linear`` on 3-D inputs and ``nn.Conv1d`` take their bias and activation too."""

from __future__ import annotations

import math

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from kernelforge.graph.onnx_import import import_model
from kernelforge.graph.passes import optimize
from kernelforge.graph.reference import run_graph


def _model(
    nodes: list[onnx.NodeProto], x: tuple[int, ...], consts: dict[str, np.ndarray], outputs: list[str]
) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "views",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x))],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in outputs],
        [numpy_helper.from_array(v.astype(np.float32), k) for k, v in consts.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _gelu(x: str, out: str) -> list[onnx.NodeProto]:
    """TorchScript's exact GELU: ``x * (1 + erf(x / sqrt(2))) * 0.5``."""
    return [
        helper.make_node("Div", [x, "sqrt2"], [f"{out}_d"]),
        helper.make_node("Erf", [f"{out}_d"], [f"{out}_e"]),
        helper.make_node("Add", [f"{out}_e", "one"], [f"{out}_a"]),
        helper.make_node("Mul", [x, f"{out}_a"], [f"{out}_m"]),
        helper.make_node("Mul", [f"{out}_m", "half"], [out]),
    ]


GELU_CONSTS = {"sqrt2": np.array(math.sqrt(2.0)), "one": np.array(1.0), "half": np.array(0.5)}


def _optimized(model: onnx.ModelProto, x_shape: tuple[int, ...]):
    graph = optimize(import_model(model))
    x = np.random.default_rng(0).standard_normal(x_shape).astype(np.float32)
    got = run_graph(graph, {"x": x})
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    for name, want in zip(graph.outputs, session.run(None, {"x": x}), strict=True):
        np.testing.assert_allclose(got[name], want, rtol=1e-5, atol=1e-5 * float(np.abs(want).max()))
    return graph


def _linear(bias: np.ndarray) -> tuple[onnx.ModelProto, tuple[int, ...]]:
    rng = np.random.default_rng(1)
    consts = {"w": rng.standard_normal((8, 12)), "b": bias, **GELU_CONSTS}
    nodes = [helper.make_node("MatMul", ["x", "w"], ["mm"]), helper.make_node("Add", ["mm", "b"], ["lin"])]
    return _model([*nodes, *_gelu("lin", "y")], (2, 5, 8), consts, ["y"]), (2, 5, 8)


def test_linear_on_3d_input_takes_bias_and_gelu():
    model, shape = _linear(np.linspace(-0.5, 0.5, 12))
    graph = _optimized(model, shape)
    assert [n.op for n in graph.nodes] == ["reshape", "gemm", "reshape"]
    gemm = graph.nodes[1]
    assert gemm.attrs["activation"].kind == "gelu" and graph.const(gemm.inputs[2]) is not None


@pytest.mark.parametrize("bias", [np.linspace(-0.5, 0.5, 5).reshape(5, 1), np.ones((2, 5, 12))])
def test_a_constant_that_is_not_per_output_column_stays_an_elementwise_kernel(bias):
    model, shape = _linear(bias * np.arange(1, 1 + bias.size).reshape(bias.shape))
    graph = _optimized(model, shape)
    assert "elementwise" in [n.op for n in graph.nodes]
    assert next(n for n in graph.nodes if n.op == "gemm").attrs["activation"].kind == "none"


def test_a_view_read_twice_keeps_its_epilogue_outside():
    rng = np.random.default_rng(2)
    consts = {"w": rng.standard_normal((8, 12)), "b": np.ones(12)}
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["mm"]),
        helper.make_node("Add", ["mm", "b"], ["y"]),
        helper.make_node("Relu", ["mm"], ["z"]),
    ]
    graph = _optimized(_model(nodes, (2, 5, 8), consts, ["y", "z"]), (2, 5, 8))
    assert [n.op for n in graph.nodes].count("elementwise") == 2


def test_conv1d_takes_a_per_channel_add_and_gelu():
    rng = np.random.default_rng(3)
    consts = {"w": rng.standard_normal((6, 4, 3)), "b": np.linspace(-1, 1, 6).reshape(6, 1), **GELU_CONSTS}
    conv = helper.make_node("Conv", ["x", "w"], ["c"], kernel_shape=[3], pads=[1, 1])
    nodes = [conv, helper.make_node("Add", ["c", "b"], ["cb"]), *_gelu("cb", "y")]
    graph = _optimized(_model(nodes, (1, 4, 10), consts, ["y"]), (1, 4, 10))
    (kernel,) = [n for n in graph.nodes if n.op != "reshape"]
    assert kernel.op == "conv2d" and kernel.attrs["activation"].kind == "gelu"
