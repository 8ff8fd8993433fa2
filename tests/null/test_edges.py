"""Dtypes at graph edges: feeds converted to float32 exactly or refused, results converted back."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

from kernelforge.graph.edges import MAX_EXACT_INT, EdgeError, edge_dtype, from_compute, to_compute
from kernelforge.graph.onnx_import import import_model
from kernelforge.graph.reference import run_graph
from kernelforge.testing.models import MODELS


def test_onnx_types_map_to_numpy_names() -> None:
    assert edge_dtype(TensorProto.UNDEFINED) == "float32"
    assert edge_dtype(TensorProto.INT64) == "int64"
    assert edge_dtype(TensorProto.BOOL) == "bool"
    assert edge_dtype(TensorProto.FLOAT16) == "float16"
    assert edge_dtype(TensorProto.STRING) is None
    assert edge_dtype(TensorProto.FLOAT8E4M3FN) == "float8_e4m3fn"
    assert edge_dtype(TensorProto.FLOAT8E8M0) == "float8_e8m0fnu"
    assert edge_dtype(TensorProto.FLOAT6E2M3) is None


@pytest.mark.parametrize("dtype", ["int64", "int32", "uint8", "bool"])
def test_integer_feeds_convert_exactly(dtype: str) -> None:
    values = np.array([[0, 1], [-3 if dtype[0] == "i" else 3, MAX_EXACT_INT if dtype == "int64" else 7]])
    if dtype == "bool":
        values = values != 0
    out = to_compute("ids", values.astype(dtype), dtype)
    assert out.dtype == np.float32 and out.flags.c_contiguous
    np.testing.assert_array_equal(out, values.astype(np.float64))


def test_a_scalar_feed_stays_zero_dimensional() -> None:
    assert to_compute("t", np.float64(2.5), "float32").shape == ()


@pytest.mark.parametrize("value", [MAX_EXACT_INT + 1, -(MAX_EXACT_INT + 1), 2**62])
def test_integers_float32_cannot_hold_are_refused(value: int) -> None:
    ids = np.zeros((2, 3), np.int64)
    ids[1, 2] = value
    with pytest.raises(EdgeError, match=rf"input 'ids': value {value} at index \(1, 2\) is beyond \+-2\*\*24"):
        to_compute("ids", ids, "int64")


def test_kinds_are_checked() -> None:
    with pytest.raises(EdgeError, match=r"input 'ids': expected int64 data \(integers or bools\), got dtype float32"):
        to_compute("ids", np.zeros(3, np.float32), "int64")
    with pytest.raises(EdgeError, match=r"input 'x': expected float data, got dtype <U1"):
        to_compute("x", np.array(["a"]), "float32")
    # ints feed a float input (converted), as before
    np.testing.assert_array_equal(to_compute("x", np.arange(3), "float16"), [0, 1, 2])


def test_results_convert_back() -> None:
    data = np.array([-1.6, -0.5, 0.5, 2.5, 3.49, np.nan, np.inf, 1e10], np.float32)
    np.testing.assert_array_equal(from_compute(data, "int64"), [-2, 0, 0, 2, 3, 0, 0, 10**10])
    np.testing.assert_array_equal(from_compute(data, "int8"), [-2, 0, 0, 2, 3, 0, 0, 127])
    np.testing.assert_array_equal(from_compute(data, "bool"), [True, True, True, True, True, True, True, True])
    assert from_compute(np.zeros(2, np.float32), "bool").tolist() == [False, False]
    half = from_compute(data, "float16")
    assert half.dtype == np.float16 and half[0] == np.float16(-1.6)
    assert from_compute(data, "float32") is data


def test_the_reference_interpreter_converts_at_the_edges() -> None:
    graph = import_model(MODELS["masked_tokens"]())
    assert graph.dtypes == {"ids": "int64", "h": "float16", "y16": "float16", "mask": "bool", "twice": "int64"}
    ids = np.array([[0, 3, 1, 0, 7, 2, 0, 5]])
    feeds = {"ids": ids, "x": np.zeros((1, 8), np.float32), "h": np.ones((1, 8), np.float16)}
    out = run_graph(graph, feeds)
    assert out["twice"].dtype == np.int64 and out["twice"].tolist() == (ids * 2).tolist()
    assert out["mask"].tolist() == (ids > 0).tolist()
    assert out["y16"].dtype == np.float16


def test_an_integer_input_reaches_an_integer_output_exactly() -> None:
    # an int64 input that flows straight to an int64 output: the identity at the edges is exact
    node = helper.make_node("Identity", ["ids"], ["out"])
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, [4])],
        [helper.make_tensor_value_info("out", TensorProto.INT64, [4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    ids = np.array([5, -7, 0, MAX_EXACT_INT])
    out = run_graph(import_model(model), {"ids": ids})["out"]
    assert out.dtype == np.int64 and out.tolist() == ids.tolist()
