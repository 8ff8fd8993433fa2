"""Ops that ONNX defines as functions, expanded into their bodies where kernelforge refuses the op's own form."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

from kernelforge.graph.onnx_import import UnsupportedModelError, import_model
from kernelforge.graph.reference import run_graph


def _attention(outputs: list[str], **attrs: object) -> onnx.ModelProto:
    q = helper.make_tensor_value_info("q", TensorProto.FLOAT, [1, 2, 3, 4])
    kv = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 2, 5, 4]) for n in ("k", "v")]
    mask = helper.make_tensor_value_info("mask", TensorProto.FLOAT, [3, 5])
    node = helper.make_node("Attention", ["q", "k", "v", "mask"], outputs, **attrs)
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in outputs if n]
    graph = helper.make_graph([node], "g", [q, *kv, mask], outs)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 23)])


def _feeds(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    shapes = {"q": (1, 2, 3, 4), "k": (1, 2, 5, 4), "v": (1, 2, 5, 4), "mask": (3, 5)}
    return {n: rng.uniform(-2, 2, s).astype(np.float32) for n, s in shapes.items()}


# softcap with modes 2 and 3 only: for modes 0 and 1 onnx's reference evaluator returns the softcapped scores,
# while the function body (and the operator's documentation) returns them before the softcap
@pytest.mark.parametrize(("mode", "softcap"), [(0, 0.0), (1, 0.0), (2, 3.0), (3, 3.0)])
def test_attention_with_its_qk_output_runs_as_the_function_onnx_defines(mode: int, softcap: float) -> None:
    model = _attention(["y", "", "", "qk"], qk_matmul_output_mode=mode, softcap=softcap)
    graph = import_model(model)
    assert "attention" not in {n.op for n in graph.nodes}  # the scores are a tensor of their own
    feeds = _feeds(mode)
    got = run_graph(graph, feeds)
    want = ReferenceEvaluator(model).run(None, feeds)
    for name, expected in zip(("y", "qk"), want, strict=True):
        np.testing.assert_allclose(got[name], expected, rtol=1e-5, atol=1e-5, err_msg=name)


def test_attention_without_the_qk_output_stays_one_fused_node() -> None:
    graph = import_model(_attention(["y"], softcap=3.0))
    assert [n.op for n in graph.nodes] == ["attention"]


def test_a_refused_op_without_a_function_body_keeps_its_own_reason() -> None:
    # BatchNormalization's running statistics outside training mode: ONNX defines no body for it
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])
    stats = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2]) for n in ("s", "b", "m", "v")]
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("y", "rm")]
    node = helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y", "rm"])
    graph = helper.make_graph([node], "g", [x, *stats], outs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    with pytest.raises(UnsupportedModelError, match="its training statistics output 'rm' is used"):
        import_model(model)


def test_castlike_of_a_constant_folds_whatever_tensor_gives_the_type() -> None:
    # the type input is a runtime tensor: only its element type is read, so the cast folds and Pad gets a constant
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])
    inf = helper.make_tensor("inf", TensorProto.DOUBLE, [], [-np.inf])
    nodes = [
        helper.make_node("CastLike", ["inf", "x"], ["fill"]),
        helper.make_node("Pad", ["x", "pads", "fill"], ["y"]),
    ]
    pads = helper.make_tensor("pads", TensorProto.INT64, [4], [0, 1, 0, 2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    graph = helper.make_graph(nodes, "g", [x], [y], [inf, pads])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    imported = import_model(model)
    feeds = {"x": np.arange(6, dtype=np.float32).reshape(2, 3)}
    np.testing.assert_array_equal(run_graph(imported, feeds)["y"], ReferenceEvaluator(model).run(None, feeds)[0])


@pytest.mark.parametrize(
    ("op", "attrs", "shape", "opset"),
    [  # ONNX gives DepthToSpace and SpaceToDepth function bodies in their opset-28 versions (none before)
        ("DepthToSpace", {"blocksize": 2, "mode": "CRD"}, (1, 8, 3, 4), 28),
        ("SpaceToDepth", {"blocksize": 2}, (1, 2, 4, 6), 28),
        ("CenterCropPad", {}, (5, 7), 21),
    ],
)
def test_ops_without_a_converter_run_as_their_function_bodies(
    op: str, attrs: dict[str, object], shape: tuple[int, ...], opset: int
) -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))
    inputs, consts = ["x"], []
    if op == "CenterCropPad":  # crop 5 -> 3 rows, pad 7 -> 9 columns
        consts.append(helper.make_tensor("crop", TensorProto.INT64, [2], [3, 9]))
        inputs.append("crop")
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    graph = helper.make_graph([helper.make_node(op, inputs, ["y"], **attrs)], "g", [x], [y], consts)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    imported = import_model(model)
    assert op.lower() not in {n.op for n in imported.nodes}
    feeds = {"x": np.random.default_rng(3).uniform(-2, 2, shape).astype(np.float32)}
    np.testing.assert_array_equal(run_graph(imported, feeds)["y"], ReferenceEvaluator(model).run(None, feeds)[0])


def test_an_op_version_without_a_function_body_is_refused_saying_so() -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 3, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    node = helper.make_node("DepthToSpace", ["x"], ["y"], blocksize=2)
    model = helper.make_model(helper.make_graph([node], "g", [x], [y]), opset_imports=[helper.make_opsetid("", 13)])
    with pytest.raises(UnsupportedModelError, match=r"DepthToSpace node .*: ONNX gives no function body"):
        import_model(model)
