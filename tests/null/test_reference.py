"""The numpy IR interpreter against direct numpy (and onnxruntime, once the importer exists)."""

from __future__ import annotations

import numpy as np
import pytest

from kernelforge.graph.ir import GraphError
from kernelforge.graph.reference import evaluate, run_graph
from kernelforge.ops._epilogue import Activation
from tests.null.test_passes import Builder


def test_batchnorm_and_reshape_match_numpy() -> None:
    b = Builder(30)
    x = b.input((2, 3, 4, 5))
    y = b.bn(x, eps=1e-2)
    flat = b.reshape(y, (2, 60))
    graph = b.output(flat)
    scale, shift, mean, var = (graph.value(n).data for n in graph.nodes[0].inputs[1:])
    assert scale is not None and shift is not None and mean is not None and var is not None

    def per_channel(p: np.ndarray) -> np.ndarray:
        return p.astype(np.float64).reshape(1, 3, 1, 1)

    xs = b.feeds[x].astype(np.float64)
    expected = (xs - per_channel(mean)) / np.sqrt(per_channel(var) + 1e-2) * per_channel(scale) + per_channel(shift)
    out = run_graph(graph, b.feeds)[flat]
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, expected.reshape(2, 60), rtol=1e-6)


def test_conv_gemm_elementwise_chain_matches_numpy() -> None:
    b = Builder(31)
    x = b.input((1, 3, 4, 4))
    conv = b.conv(x, 5, bias=True, activation=Activation("relu"))
    flat = b.reshape(conv, (1, 80))
    gemm = b.gemm(flat, 6, trans_b=True, bias=True)
    y = b.ew("v0 * sigmoid(v1) - 0.5", gemm, b.const((6,)))
    graph = b.output(y, conv)
    w, bias = (graph.value(n).data for n in graph.nodes[0].inputs[1:3])
    wb, gbias = (graph.value(n).data for n in graph.nodes[2].inputs[1:3])
    c = graph.value(graph.nodes[3].inputs[1]).data
    assert w is not None and bias is not None and wb is not None and gbias is not None and c is not None

    xs = b.feeds[x].astype(np.float64)
    conv_ref = np.maximum(np.einsum("nchw,mc->nmhw", xs, w[:, :, 0, 0]) + bias.reshape(1, 5, 1, 1), 0.0)
    gemm_ref = conv_ref.reshape(1, 80) @ wb.T.astype(np.float64) + gbias
    y_ref = gemm_ref * (1.0 / (1.0 + np.exp(-c.astype(np.float64)))) - 0.5
    out = run_graph(graph, b.feeds)
    np.testing.assert_allclose(out[conv], conv_ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out[y], y_ref, rtol=1e-5, atol=1e-6)


def test_data_movement_ops_match_numpy() -> None:
    b = Builder(32)
    x = b.input((1, 2, 4, 4))
    pooled = b.node(
        "pool2d",
        [x],
        (1, 2, 2, 2),
        {
            "mode": "max",
            "kernel_shape": (2, 2),
            "strides": (2, 2),
            "pads": (0, 0, 0, 0),
            "dilations": (1, 1),
            "ceil_mode": 0,
            "count_include_pad": 0,
            "global_": False,
        },
    )
    both = b.node("concat", [pooled, pooled], (1, 4, 2, 2), {"axis": 1})
    moved = b.node("transpose", [both], (1, 2, 2, 4), {"perm": (0, 2, 3, 1)})
    soft = b.node("softmax", [moved], (1, 2, 2, 4), {"axis": 3})
    padded = b.node("pad", [soft], (1, 2, 2, 6), {"pads": (0, 0, 0, 1, 0, 0, 0, 1), "mode": "constant"})
    graph = b.output(padded)

    pool_ref = b.feeds[x].reshape(1, 2, 2, 2, 2, 2).max(axis=(3, 5))
    moved_ref = np.concatenate([pool_ref, pool_ref], axis=1).transpose(0, 2, 3, 1).astype(np.float64)
    e = np.exp(moved_ref - moved_ref.max(axis=3, keepdims=True))
    soft_ref = e / e.sum(axis=3, keepdims=True)
    expected = np.pad(soft_ref, ((0, 0), (0, 0), (0, 0), (1, 1)))
    np.testing.assert_allclose(run_graph(graph, b.feeds)[padded], expected, rtol=1e-6, atol=1e-7)


def test_run_graph_rejects_bad_feeds_and_evaluate_missing_inputs() -> None:
    b = Builder(33)
    x = b.input((2, 3))
    y = b.ew("relu(v0)", x)
    graph = b.output(y)
    with pytest.raises(GraphError, match="no array fed"):
        run_graph(graph, {})
    with pytest.raises(GraphError, match=r"shape \(3, 2\)"):
        run_graph(graph, {x: np.zeros((3, 2), np.float32)})
    with pytest.raises(GraphError, match="no array for input"):
        evaluate(graph, graph.nodes[0], {})
    np.testing.assert_array_equal(run_graph(graph, b.feeds)[y], np.maximum(b.feeds[x], 0))


def test_import_conv_bn_relu_matches_onnxruntime() -> None:
    # onnx and onnxruntime are dev dependencies: a missing one is a broken set-up, not a reason to skip
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from kernelforge.graph import onnx_import as importer

    rng = np.random.default_rng(34)
    inits = {
        "w": rng.standard_normal((4, 3, 3, 3)).astype(np.float32),
        "b": rng.standard_normal(4).astype(np.float32),
        "scale": rng.uniform(0.5, 1.5, 4).astype(np.float32),
        "shift": rng.standard_normal(4).astype(np.float32),
        "mean": rng.standard_normal(4).astype(np.float32),
        "var": rng.uniform(0.5, 2.0, 4).astype(np.float32),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c", "scale", "shift", "mean", "var"], ["n"], name="bn"),
        helper.make_node("Relu", ["n"], ["y"], name="relu"),
    ]
    graph = helper.make_graph(
        nodes,
        "conv_bn_relu",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 6, 6])],
        [numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    x = rng.standard_normal((1, 3, 6, 6)).astype(np.float32)
    expected = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    ir = importer.import_model(model)
    out = run_graph(ir, {ir.inputs[0]: x})
    np.testing.assert_allclose(out[ir.outputs[0]], expected[0], rtol=1e-4, atol=1e-5)
