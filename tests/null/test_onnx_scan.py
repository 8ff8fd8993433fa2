"""ONNX ArgMax, ArgMin and CumSum import: every attribute combination against onnxruntime, folding, errors."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from kernelforge.graph.ir import GraphError
from kernelforge.graph.onnx_import import UnsupportedModelError, import_model
from kernelforge.graph.reference import run_graph

from .test_onnx_import import check_numerics, ops


def one_node(
    op: str,
    shape: Sequence[int],
    out_type: int,
    opset: int,
    inputs: Sequence[str] = ("x",),
    inits: dict[str, np.ndarray] | None = None,
    x_type: int = TensorProto.FLOAT,
    **attrs: int,
) -> onnx.ModelProto:
    """Return a one-node model over x of ``shape`` (declared ``x_type``), its output typed ``out_type``."""
    graph = helper.make_graph(
        [helper.make_node(op, list(inputs), ["y"], name="node", **attrs)],
        "test",
        [helper.make_tensor_value_info("x", x_type, list(shape))],
        [helper.make_tensor_value_info("y", out_type, None)],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in (inits or {}).items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def ort_run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)


# --- ArgMax / ArgMin --------------------------------------------------------------------------------------------

ARG_CASES = [
    (op, axis, keepdims, last, opset)
    for op, axis, keepdims, last, opset in itertools.product(
        ("ArgMax", "ArgMin"), (None, 1, -1, -3), (None, 0, 1), (None, 0, 1), (11, 12, 13)
    )
    if not (last is not None and opset < 12)  # select_last_index exists from opset 12
]


def _arg_attrs(axis: int | None, keepdims: int | None, last: int | None) -> dict[str, int]:
    given = {"axis": axis, "keepdims": keepdims, "select_last_index": last}
    return {k: v for k, v in given.items() if v is not None}


@pytest.mark.parametrize(("op", "axis", "keepdims", "last", "opset"), ARG_CASES)
def test_arg_reduce_matches_onnxruntime(op, axis, keepdims, last, opset):
    model = one_node(op, (3, 4, 5), TensorProto.INT64, opset, **_arg_attrs(axis, keepdims, last))
    rng = np.random.default_rng(len(ARG_CASES))
    x = rng.integers(-3, 4, (3, 4, 5)).astype(np.float32)  # ties everywhere
    graph = check_numerics(model, {"x": x})
    assert ops(graph) == ["arg_reduce"]
    assert graph.dtype("y") == "int64"
    got = run_graph(graph, {"x": x})["y"]
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, ort_run(model, {"x": x})[0])


@pytest.mark.parametrize(("op", "last"), list(itertools.product(("ArgMax", "ArgMin"), (0, 1))))
def test_arg_reduce_nan_and_infinities_match_onnxruntime(op, last):
    nan, inf = np.nan, np.inf
    x = np.array(
        [
            [1, nan, 3, 3, 0, 2],
            [nan, 1, 2, 5, 5, 0],
            [nan, nan, nan, nan, nan, nan],
            [-inf, nan, -inf, nan, -inf, nan],
            [inf, 1, inf, -inf, nan, -inf],
            [2, 2, nan, 2, 2, 1],
        ],
        np.float32,
    )
    for axis, data in ((1, x), (0, np.ascontiguousarray(x.T))):
        model = one_node(op, data.shape, TensorProto.INT64, 13, axis=axis, select_last_index=last)
        graph = import_model(model)
        np.testing.assert_array_equal(run_graph(graph, {"x": data})["y"], ort_run(model, {"x": data})[0])


def test_arg_reduce_of_a_constant_folds():
    x = np.array([[3, 1, 3], [0, 7, 7]], np.float32)
    picked = helper.make_node("ArgMax", ["c"], ["i"], axis=1, keepdims=0, select_last_index=1)
    cast = helper.make_node("Cast", ["i"], ["f"], to=TensorProto.FLOAT)
    add = helper.make_node("Add", ["x", "f"], ["y"])
    graph = helper.make_graph(
        [picked, cast, add],
        "fold",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(x, "c")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    imported = check_numerics(model)
    assert "arg_reduce" not in ops(imported)


def test_arg_reduce_bad_attributes_are_named():
    with pytest.raises(UnsupportedModelError, match=r"ArgMax node 'node' \(opset 13\): select_last_index=2"):
        import_model(one_node("ArgMax", (2, 3), TensorProto.INT64, 13, select_last_index=2))
    with pytest.raises(GraphError, match=r"ArgMin node 'node' \(opset 13\): .*axis"):
        import_model(one_node("ArgMin", (2, 3), TensorProto.INT64, 13, axis=2))


# --- CumSum -----------------------------------------------------------------------------------------------------

CUMSUM_CASES = list(itertools.product((0, 1, -1, -3), (None, 0, 1), (None, 0, 1), (11, 14), (np.int32, np.int64)))


@pytest.mark.parametrize(("axis", "exclusive", "reverse", "opset", "axis_dtype"), CUMSUM_CASES)
def test_cumsum_matches_onnxruntime(axis, exclusive, reverse, opset, axis_dtype):
    attrs = {k: v for k, v in (("exclusive", exclusive), ("reverse", reverse)) if v is not None}
    inits = {"axis": np.array(axis, axis_dtype)}
    model = one_node("CumSum", (3, 4, 5), TensorProto.FLOAT, opset, ("x", "axis"), inits, **attrs)
    graph = check_numerics(model)
    assert ops(graph) == ["cumsum"]
    node = graph.nodes[0]
    assert node.attrs == {"axis": axis % 3, "exclusive": bool(exclusive), "reverse": bool(reverse)}


@pytest.mark.parametrize(("exclusive", "reverse"), list(itertools.product((0, 1), (0, 1))))
def test_cumsum_of_integers_is_exact(exclusive, reverse):
    inits = {"axis": np.array([-1], np.int64)}
    model = one_node(
        "CumSum", (2, 3000), TensorProto.INT64, 14, ("x", "axis"), inits, TensorProto.INT64,
        exclusive=exclusive, reverse=reverse,
    )  # fmt: skip
    x = np.random.default_rng(3).integers(0, 2, (2, 3000)).astype(np.int64)
    got = run_graph(import_model(model), {"x": x})["y"]
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, ort_run(model, {"x": x})[0])


def test_cumsum_over_a_size_one_axis_is_the_input_unless_exclusive():
    inits = {"axis": np.array(1, np.int64)}
    plain = one_node("CumSum", (3, 1), TensorProto.FLOAT, 14, ("x", "axis"), inits)
    assert "cumsum" not in ops(check_numerics(plain))
    model = one_node("CumSum", (3, 1), TensorProto.FLOAT, 14, ("x", "axis"), inits, exclusive=1)
    assert ops(check_numerics(model)) == ["cumsum"]


def test_cumsum_of_a_constant_folds():
    nodes = [
        helper.make_node("CumSum", ["c", "axis"], ["s"], exclusive=1),
        helper.make_node("Cast", ["s"], ["f"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["x", "f"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "fold",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [
            numpy_helper.from_array(np.array([[1, 2, 3], [4, 5, 6]], np.int64), "c"),
            numpy_helper.from_array(np.array(1, np.int64), "axis"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    model.ir_version = 8
    assert ops(check_numerics(model)) == ["elementwise"]


def test_cumsum_runtime_axis_and_bad_axis_are_named():
    graph = helper.make_graph(
        [helper.make_node("CumSum", ["x", "axis"], ["y"], name="node")],
        "runtime_axis",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3]),
            helper.make_tensor_value_info("axis", TensorProto.INT64, []),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    with pytest.raises(UnsupportedModelError, match=r"CumSum node 'node' .*axis.*needs a runtime value"):
        import_model(model)
    inits = {"axis": np.array(2, np.int64)}
    with pytest.raises(GraphError, match=r"CumSum node 'node' \(opset 14\): axis 2 is out of range for rank 2"):
        import_model(one_node("CumSum", (2, 3), TensorProto.FLOAT, 14, ("x", "axis"), inits))
    inits = {"axis": np.array([0, 1], np.int64)}
    with pytest.raises(GraphError, match=r"CumSum node 'node' \(opset 14\): axis must be one integer"):
        import_model(one_node("CumSum", (2, 3), TensorProto.FLOAT, 14, ("x", "axis"), inits))


# --- position ids as GPT-2 exports compute them ----------------------------------------------------------------


def position_ids_model(batch: int = 2, seq: int = 9, width: int = 6, cast: bool = True) -> onnx.ModelProto:
    """attention_mask (int64) -> [Cast] -> CumSum(-1) -> Sub 1 -> Where(mask == 0, 1, .) -> Gather(wpe).

    Hugging Face's ``position_ids = attention_mask.cumsum(-1) - 1; position_ids.masked_fill_(mask == 0, 1)``
    followed by the position embedding lookup; ``cast`` adds the float Cast some exports put first.
    """
    table = np.random.default_rng(5).standard_normal((seq + 2, width)).astype(np.float32)
    nodes = []
    mask = "attention_mask"
    if cast:
        nodes.append(helper.make_node("Cast", [mask], ["mask_f"], to=TensorProto.FLOAT))
        mask = "mask_f"
    nodes += [
        helper.make_node("CumSum", [mask, "last"], ["counts"]),
        helper.make_node("Sub", ["counts", "one"], ["positions"]),
        helper.make_node("Equal", [mask, "zero"], ["padded"]),
        helper.make_node("Where", ["padded", "one", "positions"], ["position_ids_f"]),
        helper.make_node("Cast", ["position_ids_f"], ["position_ids"], to=TensorProto.INT64),
        helper.make_node("Gather", ["wpe", "position_ids"], ["position_embeds"], axis=0),
    ]
    dtype = np.float32 if cast else np.int64
    graph = helper.make_graph(
        nodes,
        "position_ids",
        [helper.make_tensor_value_info("attention_mask", TensorProto.INT64, [batch, seq])],
        [
            helper.make_tensor_value_info("position_ids", TensorProto.INT64, None),
            helper.make_tensor_value_info("position_embeds", TensorProto.FLOAT, None),
        ],
        [
            numpy_helper.from_array(np.array(-1, np.int64), "last"),
            numpy_helper.from_array(np.array(1, dtype), "one"),
            numpy_helper.from_array(np.array(0, dtype), "zero"),
            numpy_helper.from_array(table, "wpe"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    model.ir_version = 8
    return model


def left_padded_mask(batch: int = 2, seq: int = 9) -> np.ndarray:
    mask = np.ones((batch, seq), np.int64)
    mask[0, :3] = 0  # left padding, as batched generation pads
    return mask


@pytest.mark.parametrize("cast", [True, False])
def test_position_ids_match_onnxruntime(cast):
    model = position_ids_model(cast=cast)
    graph = check_numerics(model, {"attention_mask": left_padded_mask()})
    assert "cumsum" in ops(graph) and "gather" in ops(graph)
    got = run_graph(graph, {"attention_mask": left_padded_mask()})
    want = ort_run(model, {"attention_mask": left_padded_mask()})
    np.testing.assert_array_equal(got["position_ids"], want[0])
