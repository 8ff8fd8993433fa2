"""Empty tensors (a dim of 0) at import: constants known at load, folded into what reads them, never a kernel."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from kernelforge.export import export
from kernelforge.graph.ir import GraphError
from kernelforge.graph.onnx_import import ModelError, import_model
from kernelforge.graph.reference import run_graph
from kernelforge.ops.reduce import reduce_array

from .test_gather_spec import ort_run

REPO_DB = Path(__file__).resolve().parents[2] / "tuning_db"


def empty_pieces_model(extremes: bool = True) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """A runtime ``x [2, 6]`` meeting empty tensors; the model and its feeds.

    ``y = (Concat(a, x) + ReduceSum(a)) * x + b`` where ``a, b = Split(x, [0, 6])``: an empty piece beside a
    runtime tensor and a reduction over an empty axis (zeros); with ``extremes``, ``* Max(x, ReduceMax(a))``
    too (ReduceMax over no values is -inf; a bundle refuses non-finite constants). Empty outputs: ``e``, a
    Slice window of nothing cut from ``x``; ``w = e * x[:, :1]``, elementwise on it; ``s``, ``Shape`` from
    past the last axis (int64).
    """
    ints = {
        "split": [0, 6],
        "axes": [1],
        "e_starts": [4],
        "e_ends": [2],
        "col_starts": [0],
        "col_ends": [1],
    }
    nodes = [helper.make_node("Split", ["x", "split"], ["a", "b"], axis=1)]
    if extremes:
        nodes += [
            helper.make_node("ReduceMax", ["a", "axes"], ["m"], keepdims=1),
            helper.make_node("Max", ["x", "m"], ["xm"]),
        ]
    nodes += [
        helper.make_node("Concat", ["a", "x"], ["c"], axis=1),
        helper.make_node("ReduceSum", ["a", "axes"], ["r"], keepdims=1),
        helper.make_node("Add", ["c", "r"], ["cr"]),
        helper.make_node("Mul", ["cr", "xm" if extremes else "x"], ["crx"]),
        helper.make_node("Add", ["crx", "b"], ["y"]),
        helper.make_node("Slice", ["x", "e_starts", "e_ends", "axes"], ["e"]),
        helper.make_node("Slice", ["x", "col_starts", "col_ends", "axes"], ["col"]),
        helper.make_node("Mul", ["e", "col"], ["w"]),
        helper.make_node("Shape", ["x"], ["s"], start=2),
    ]
    float_out = [
        helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in (("y", [2, 6]), ("e", [2, 0]), ("w", [2, 0]))
    ]
    graph = helper.make_graph(
        nodes,
        "empty_pieces",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 6])],
        [*float_out, helper.make_tensor_value_info("s", TensorProto.INT64, [0])],
        [numpy_helper.from_array(np.array(v, np.int64), k) for k, v in ints.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 10
    onnx.checker.check_model(model, full_check=True)
    x = np.random.default_rng(3).uniform(-2, 2, (2, 6)).astype(np.float32)
    return model, {"x": x}


@pytest.mark.parametrize("extremes", [True, False])
def test_empty_pieces_fold_and_match_onnxruntime(extremes: bool) -> None:
    model, feeds = empty_pieces_model(extremes)
    graph = import_model(model)
    for name, shape in (("e", (2, 0)), ("w", (2, 0)), ("s", (0,))):
        value = graph.value(name)
        assert value.shape == shape and value.data is not None and value.data.shape == shape, name
    # every empty tensor folded: no node reads or writes one
    assert all(0 not in graph.value(v).shape for n in graph.nodes for v in (*n.inputs, *n.outputs) if v)
    assert graph.dtype("s") == "int64"
    got = run_graph(graph, feeds)
    for name, want in ort_run(model, feeds).items():
        assert got[name].shape == want.shape, name
        np.testing.assert_allclose(got[name], want, rtol=1e-6, atol=1e-6, err_msg=name)


@pytest.mark.parametrize(
    ("dtype", "kind", "want"),
    [
        (np.float32, "max", -np.inf),
        (np.float32, "min", np.inf),
        (np.bool_, "max", False),
        (np.bool_, "min", True),
        (np.int64, "max", np.iinfo(np.int64).min),
        (np.int64, "min", np.iinfo(np.int64).max),
        (np.uint8, "max", 0),
        (np.float32, "sum", 0.0),
        (np.float32, "prod", 1.0),
        (np.float32, "log_sum_exp", -np.inf),
    ],
)
def test_reductions_over_no_values_give_the_identity(dtype: type, kind: str, want: float) -> None:
    # as ONNX's reference: the lowest value of the dtype for max, the highest for min (int64's exactly)
    got = reduce_array(np.zeros((2, 0, 3), dtype), [1], kind)
    assert got.shape == (2, 1, 3) and got.dtype == np.dtype(dtype)
    assert (got == want).all(), got


def test_a_reduction_over_an_empty_axis_keeps_the_other_axes_empty() -> None:
    got = reduce_array(np.zeros((2, 0, 3), np.float32), [2], "max")
    assert got.shape == (2, 0, 1)


def test_slice_windows_clamp_like_numpy_at_import() -> None:
    x = np.arange(20, dtype=np.float32).reshape(4, 5)
    cases = [([0, 9], [2, 12], [0, 1], [1, 1]), ([3], [0], [1], [-1]), ([-100], [100], [-1], [2]), ([2], [2], [0], [1])]
    for starts, ends, axes, steps in cases:
        inits = {
            k: np.array(v, np.int64) for k, v in zip(("st", "en", "ax", "sp"), (starts, ends, axes, steps), strict=True)
        }
        node = helper.make_node("Slice", ["x", "st", "en", "ax", "sp"], ["y"])
        graph = helper.make_graph(
            [node],
            "slice",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 5])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
            [numpy_helper.from_array(v, k) for k, v in inits.items()],
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
        model.ir_version = 8
        want = ort_run(model, {"x": x})["y"]
        imported = import_model(model)
        assert imported.value("y").shape == want.shape, (starts, ends, axes, steps)
        np.testing.assert_array_equal(run_graph(imported, {"x": x})["y"], want)


def test_a_kernel_reading_an_empty_constant_is_named() -> None:
    # Pad of an empty constant has values (the pad value) but reads none: refused naming the node and input
    nodes = [
        helper.make_node("Slice", ["x", "st", "en", "ax"], ["e"]),
        helper.make_node("Pad", ["e", "pads"], ["p"]),
        helper.make_node("Add", ["p", "x"], ["y"]),
    ]
    inits = {"st": [3], "en": [3], "ax": [1], "pads": [0, 2, 0, 0]}
    graph = helper.make_graph(
        nodes,
        "pad_empty",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.array(v, np.int64), k) for k, v in inits.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    with pytest.raises(GraphError, match=r"Pad node 'Pad_1' \(opset 13\): pad input 0 \('e(_\d+)?'\) is empty"):
        import_model(model)


def test_an_empty_input_shape_is_refused_naming_the_input() -> None:
    model, _ = empty_pieces_model(False)
    with pytest.raises(ModelError, match=r"input_shapes\['x'\] = \[2, 0\] is empty \(a dim of 0\)"):
        import_model(model, {"x": [2, 0]})


def test_an_empty_constant_output_exports(tmp_path: Path) -> None:
    model, _ = empty_pieces_model(False)
    export(model, tmp_path, db=REPO_DB)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    shapes = {o["name"]: o["shape"] for o in manifest["model"]["outputs"]}
    assert shapes == {"y": [2, 6], "e": [2, 0], "w": [2, 0], "s": [0]}
    for target in manifest["targets"]:
        outputs = {o["name"]: o for o in target["plan"]["outputs"]}
        for name in ("e", "w", "s"):
            assert manifest["constants"][outputs[name]["constant"]]["count"] == 0, (target["id"], name)
