"""ONNX Reduce* and InstanceNormalization import: IR structure, folding, errors, numerics against onnxruntime."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from kernelforge.db.records import Lookup
from kernelforge.devices import DeviceInfo
from kernelforge.export import export
from kernelforge.graph.build import build_program
from kernelforge.graph.ir import GraphError
from kernelforge.graph.onnx_import import UnsupportedModelError, import_model
from kernelforge.graph.onnx_reduce import KINDS
from kernelforge.graph.plan import plan_graph
from kernelforge.graph.prepare import prepare_graph
from kernelforge.graph.reference import run_graph
from kernelforge.ops import Limits, get_op

from .test_onnx_import import check_numerics, make_model, ops

REDUCE_OPS = sorted(KINDS)
REPO_DB = Path(__file__).resolve().parents[2] / "tuning_db"


def reduce_model(
    op: str, shape: Sequence[int], axes: Sequence[int] | None, keepdims: int = 1, opset: int = 18, **attrs: int
) -> onnx.ModelProto:
    """Return a one-node ``op`` model over x of ``shape``: axes as an attribute or an input, as the opset has it."""
    since = 13 if op == "ReduceSum" else 18
    inits: dict[str, np.ndarray] = {}
    if opset >= since:
        names = ["x"]
        if axes is not None:
            names.append("axes")
            inits["axes"] = np.array(list(axes), np.int64)
        node = helper.make_node(op, names, ["y"], keepdims=keepdims, name="reduce", **attrs)
    else:
        extra = {} if axes is None else {"axes": list(axes)}
        node = helper.make_node(op, ["x"], ["y"], keepdims=keepdims, name="reduce", **extra, **attrs)
    return make_model([node], {"x": list(shape)}, ["y"], inits, opset)


def instance_norm_model(
    shape: Sequence[int], epsilon: float = 1e-5, params_as_inputs: bool = False, opset: int = 13
) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """Return x -> InstanceNormalization(scale, B) -> Relu, and its feeds (scale/B inputs or initializers)."""
    rng = np.random.default_rng(7)
    c = shape[1]
    params = {"scale": rng.uniform(0.5, 1.5, c).astype(np.float32), "bias": rng.uniform(-1, 1, c).astype(np.float32)}
    offsets = rng.uniform(-3, 3, (shape[0], c) + (1,) * (len(shape) - 2))
    feeds = {"x": (offsets + rng.standard_normal(shape)).astype(np.float32)}
    nodes = [
        helper.make_node("InstanceNormalization", ["x", "scale", "bias"], ["n"], epsilon=epsilon, name="in"),
        helper.make_node("Relu", ["n"], ["y"], name="relu"),
    ]
    inputs: dict[str, Sequence[int] | None] = {"x": list(shape)}
    inits: dict[str, np.ndarray] = {}
    if params_as_inputs:
        inputs.update({k: [c] for k in params})
        feeds.update(params)
    else:
        inits = params
    return make_model(nodes, inputs, ["y"], inits, opset), feeds


def group_norm_model(
    shape: Sequence[int] = (2, 3, 12, 12), channels: int = 8, groups: int = 4, opset: int = 13
) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """Return Conv -> GroupNorm as PyTorch exports it -> SiLU, and its feeds.

    GroupNorm: ``Reshape(N, G, -1) -> InstanceNormalization(ones(G), zeros(G)) -> Reshape(Shape(h)) -> Mul(gamma)
    -> Add(beta)``, gamma and beta of shape ``[C, 1, 1]``.
    """
    rng = np.random.default_rng(8)
    inits = {
        "w": (rng.standard_normal((channels, shape[1], 3, 3)) * 0.3).astype(np.float32),
        "b": rng.uniform(-1, 1, channels).astype(np.float32),
        "groups_shape": np.array([0, groups, -1], np.int64),
        "ones": np.ones(groups, np.float32),
        "zeros": np.zeros(groups, np.float32),
        "gamma": rng.uniform(0.5, 1.5, (channels, 1, 1)).astype(np.float32),
        "beta": rng.uniform(-1, 1, (channels, 1, 1)).astype(np.float32),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["h"], pads=[1, 1, 1, 1], name="conv"),
        helper.make_node("Reshape", ["h", "groups_shape"], ["grouped"], name="to_groups"),
        helper.make_node("InstanceNormalization", ["grouped", "ones", "zeros"], ["normed"], epsilon=1e-5, name="in"),
        helper.make_node("Shape", ["h"], ["h_shape"], name="shape"),
        helper.make_node("Reshape", ["normed", "h_shape"], ["back"], name="from_groups"),
        helper.make_node("Mul", ["back", "gamma"], ["scaled"], name="gamma"),
        helper.make_node("Add", ["scaled", "beta"], ["gn"], name="beta"),
        helper.make_node("Sigmoid", ["gn"], ["gate"], name="sigmoid"),
        helper.make_node("Mul", ["gn", "gate"], ["y"], name="silu"),
    ]
    feeds = {"x": np.random.default_rng(9).standard_normal(shape).astype(np.float32)}
    return make_model(nodes, {"x": list(shape)}, ["y"], inits, opset), feeds


def squeeze_excite_model() -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """Conv -> Relu -> ReduceMean over H, W -> 1x1 convs -> Sigmoid -> Mul (a squeeze-and-excite block), and
    ReduceMax over channels and ReduceL2 over H, W of the excited map."""
    rng = np.random.default_rng(4)
    inits = {
        "w": (rng.standard_normal((16, 3, 3, 3)) * 0.3).astype(np.float32),
        "w1": (rng.standard_normal((4, 16, 1, 1)) * 0.3).astype(np.float32),
        "w2": (rng.standard_normal((16, 4, 1, 1)) * 0.3).astype(np.float32),
        "hw": np.array([2, 3], np.int64),
        "c": np.array([1], np.int64),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["h0"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["h0"], ["h"]),
        helper.make_node("ReduceMean", ["h", "hw"], ["squeezed"], keepdims=1),
        helper.make_node("Conv", ["squeezed", "w1"], ["s1"]),
        helper.make_node("Relu", ["s1"], ["s2"]),
        helper.make_node("Conv", ["s2", "w2"], ["s3"]),
        helper.make_node("Sigmoid", ["s3"], ["gate"]),
        helper.make_node("Mul", ["h", "gate"], ["excited"]),
        helper.make_node("ReduceMax", ["excited", "c"], ["channel_max"], keepdims=0),
        helper.make_node("ReduceL2", ["excited", "hw"], ["norms"], keepdims=0),
    ]
    x = np.random.default_rng(5).standard_normal((2, 3, 10, 10)).astype(np.float32)
    return make_model(nodes, {"x": [2, 3, 10, 10]}, ["channel_max", "norms"], inits, 18), {"x": x}


def _feeds(op: str, shape: Sequence[int]) -> dict[str, np.ndarray]:
    low = 0.1 if op == "ReduceLogSum" else -2.0  # a log of a negative sum is NaN on both sides: tests nothing
    return {"x": np.random.default_rng(0).uniform(low, 2.0, shape).astype(np.float32)}


# --- Reduce* ------------------------------------------------------------------------------------------------------

AXES = [
    ([0], ["reduce"]),  # first
    ([1], ["reduce"]),  # middle
    ([-1], ["reduce"]),  # last
    ([1, 2], ["reduce"]),  # several, adjacent
    ([0, 2], ["transpose", "reduce", "reshape"]),  # several, not adjacent: gathered first
    (None, ["reduce"]),  # all
]


@pytest.mark.parametrize("opset", [13, 18])
@pytest.mark.parametrize("op", REDUCE_OPS)
def test_every_reduce_op_imports_and_matches_onnxruntime(op, opset):
    for axes, expected in AXES:
        for keepdims in (0, 1):
            model = reduce_model(op, (3, 4, 5), axes, keepdims, opset)
            graph = check_numerics(model, _feeds(op, (3, 4, 5)))
            structure = expected if keepdims or expected[-1] == "reshape" else [*expected, "reshape"]
            assert ops(graph) == structure, (axes, keepdims)
            (node,) = [n for n in graph.nodes if n.op == "reduce"]
            assert node.attrs["kind"] == KINDS[op] and node.origin.startswith(f"{op} node 'reduce' (opset {opset})")


@pytest.mark.parametrize("opset", [9, 11])
@pytest.mark.parametrize("op", ["ReduceSum", "ReduceMean", "ReduceMax", "ReduceLogSumExp"])
def test_old_opsets_take_axes_as_an_attribute(op, opset):
    for axes in ([2, 3], [1], None):
        graph = check_numerics(reduce_model(op, (2, 3, 4, 5), axes, 0, opset), _feeds(op, (2, 3, 4, 5)))
        assert ops(graph) == ["reduce", "reshape"]


def test_squeeze_excite_block_imports_its_reductions():
    model, feeds = squeeze_excite_model()
    graph = check_numerics(model, feeds)
    assert ops(graph).count("reduce") == 3


def test_spatial_mean_of_a_feature_map_is_one_reduce():
    graph = check_numerics(reduce_model("ReduceMean", (1, 16, 7, 7), [2, 3], 1, 13))
    assert ops(graph) == ["reduce"] and graph.nodes[0].attrs == {"axes": (2, 3), "kind": "mean"}


@pytest.mark.parametrize("op", REDUCE_OPS)
def test_noop_with_empty_axes_is_the_kind_of_one_element(op):
    for axes in ([], None):  # an empty axes input, or none at all
        model = reduce_model(op, (2, 3), axes, 1, 18, noop_with_empty_axes=1)
        graph = check_numerics(model, _feeds(op, (2, 3)))
        program = {"ReduceL1": "abs", "ReduceL2": "abs", "ReduceSumSquare": "v0 * v0", "ReduceLogSum": "log"}
        if op in program:
            assert ops(graph) == ["elementwise"] and program[op] in graph.nodes[0].attrs["expr"]
        else:
            assert ops(graph) == ["reshape"] and graph.producers()["y"].inputs == ["x"]  # the output aliases x
    # without the flag, empty axes reduce everything
    graph = check_numerics(reduce_model(op, (2, 3), [], 0, 18), _feeds(op, (2, 3)))
    assert ops(graph) == ["reduce", "reshape"] and graph.values["y"].shape == ()


@pytest.mark.parametrize("op", ["ReduceMax", "ReduceSumSquare", "ReduceLogSum"])
def test_reducing_size_one_axes_reduces_nothing(op):
    for keepdims, structure in ((1, {"reshape", "elementwise"}), (0, {"reshape", "elementwise"})):
        graph = check_numerics(reduce_model(op, (3, 1, 4), [1], keepdims), _feeds(op, (3, 1, 4)))
        assert "reduce" not in ops(graph) and set(ops(graph)) <= structure


def test_reduce_sum_opset_13_reads_axes_as_an_input():
    graph = check_numerics(reduce_model("ReduceSum", (2, 3, 4), [1], 0, 13))
    assert ops(graph) == ["reduce", "reshape"]
    graph = check_numerics(reduce_model("ReduceSum", (2, 3, 4), [1], 0, 12))
    assert ops(graph) == ["reduce", "reshape"]


def test_all_constant_reductions_fold():
    # ReduceProd(Shape(x)): the element count, a shape computation exporters emit
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("ReduceProd", ["s"], ["count"], keepdims=1),
        helper.make_node("Reshape", ["x", "count"], ["flat"]),
        helper.make_node("ReduceMax", ["w", "ax"], ["wmax"], keepdims=0),
        helper.make_node("Add", ["flat", "wmax"], ["y"]),
    ]
    inits = {"w": np.array([[1.0, 5.0], [-2.0, 3.0]], np.float32), "ax": np.array([0, 1], np.int64)}
    graph = check_numerics(make_model(nodes, {"x": [2, 3, 4]}, ["y"], inits, 18))
    assert ops(graph) == ["reshape", "elementwise"] and graph.values["flat"].shape == (24,)
    assert "5.0" in graph.nodes[1].attrs["expr"]


@pytest.mark.parametrize("op", ["ReduceMax", "ReduceMin"])
def test_a_nan_makes_max_and_min_nan(op):
    # ONNX Runtime's CPU kernels (1.32) give NaN for a NaN in a row's first place but drop one further on (its
    # max of [0, NaN, 2, 3] is 2); kernelforge gives NaN wherever it is, as numpy, ONNX's reference evaluator and
    # ONNX Runtime's elementwise Max/Min do
    x = np.array([[np.nan, 1, 2, 3], [0, np.nan, 2, 3], [0, 1, 2, np.nan]], np.float32)
    model = reduce_model(op, x.shape, [1], 0, 18)
    got = run_graph(import_model(model), {"x": x})["y"]
    assert np.isnan(got).all()
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    assert np.isnan(want[0])


def test_runtime_axes_and_bad_axes_are_refused_naming_the_node():
    nodes = [
        helper.make_node("Cast", ["a"], ["axes"], to=TensorProto.INT64),
        helper.make_node("ReduceMax", ["x", "axes"], ["y"], name="reduce"),
    ]
    model = make_model(nodes, {"x": [2, 3], "a": [1]}, ["y"], opset=18)
    with pytest.raises(UnsupportedModelError, match=r"ReduceMax node 'reduce' \(opset 18\): input 1 \('axes'\)"):
        import_model(model)
    with pytest.raises(GraphError, match=r"ReduceL2 node 'reduce' \(opset 13\): axis 3 is out of range"):
        import_model(reduce_model("ReduceL2", (2, 3), [3], 1, 13))


# --- InstanceNormalization and GroupNorm ------------------------------------------------------------------------------


@pytest.mark.parametrize("shape,as_inputs", [((2, 3, 5, 6), False), ((1, 4, 7), True), ((2, 2, 3, 2, 4), False)])
def test_instance_norm_is_two_reductions_and_two_elementwise_nodes(shape, as_inputs):
    model, feeds = instance_norm_model(shape, 1e-3, as_inputs)
    graph = check_numerics(model, feeds)
    kernels = ["reduce", "elementwise", "reduce", "elementwise", "elementwise"]  # mean, x - mean, squares, y, Relu
    assert [op for op in ops(graph) if op != "reshape"] == kernels
    spatial = tuple(range(2, len(shape)))
    assert [(n.attrs["axes"], n.attrs["kind"]) for n in graph.nodes if n.op == "reduce"] == [
        (spatial, "mean"),
        (spatial, "sum_square"),
    ]
    optimized = prepare_graph(model)
    assert [n.op for n in optimized.nodes if n.op != "reshape"] == kernels[:-1]  # Relu fused into y
    assert optimized.nodes[-1].attrs["expr"].startswith("relu(v0/sqrt(v1/")


def test_instance_norm_checks_its_inputs():
    model, _ = instance_norm_model((2, 3, 4, 4))
    model.graph.initializer[0].CopyFrom(numpy_helper.from_array(np.ones(4, np.float32), "scale"))
    with pytest.raises(GraphError, match=r"InstanceNormalization node 'in' .*scale of shape \(4,\) must be \[3\]"):
        import_model(model)
    model, _ = instance_norm_model((3, 5))  # no spatial axis (ONNX Runtime refuses it too)
    with pytest.raises(GraphError, match=r"InstanceNormalization node 'in' .*\(N, C, D1, ...\), got \(3, 5\)"):
        import_model(model)


def test_group_norm_export_runs_without_its_unit_affine():
    model, feeds = group_norm_model()
    graph = check_numerics(model, feeds)
    (norm,) = [n for n in graph.nodes if n.op == "elementwise" and "sqrt" in n.attrs["expr"]]
    assert len(norm.inputs) == 2  # scale 1 and B 0 are left out
    optimized = prepare_graph(model)
    kernels = [n.op for n in optimized.nodes if n.op != "reshape"]
    # conv, mean, x - mean, squares, the normalisation, then Mul(gamma), Add(beta) and SiLU fused
    assert kernels == ["conv2d", "reduce", "elementwise", "reduce", "elementwise", "elementwise"]
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    np.testing.assert_allclose(run_graph(optimized, feeds)["y"], want, rtol=1e-4, atol=1e-4)


def test_export_writes_reduce_steps_for_both_languages(tmp_path):
    model = reduce_model("ReduceLogSumExp", (2, 6, 5), [1], 0, 18)
    export(model, tmp_path / "bundle", db=REPO_DB)
    manifest = json.loads((tmp_path / "bundle" / "manifest.json").read_text())
    languages = set()
    for target in manifest["targets"]:
        (step,) = [s for s in target["plan"]["steps"] if s["op"] == "reduce"]
        assert step["node"] == "reduce:0", target["id"]  # keepdims=0: then a reshape, "reduce:1"
        assert "exp(v - " in manifest["shaders"][step["shader"]]  # the sum of exp(x - m)
        languages.add(target["language"])
    assert languages == {"wgsl", "glsl"}


# --- layouts ---------------------------------------------------------------------------------------------------------


class _ChannelsLastConvs:
    """A tuning database whose conv records all chose NHWC; every other kernel gets its default."""

    def params_for(self, info: DeviceInfo, op: str, problem: Any, language: str, limits: Limits) -> Lookup:
        params = get_op(op).default_params(problem, limits, language)
        return Lookup({**params, "layout": 1} if op == "conv2d" else params, "tuned" if op == "conv2d" else "default")


def test_spatial_reductions_join_a_channels_last_region():
    model, feeds = squeeze_excite_model()
    graph = prepare_graph(model)
    info = DeviceInfo(0, "wgpu", "wgsl", "vulkan", "test", "mesa", 0, 0, "1", "CPU", "cpu", "test", Limits())
    plan = plan_graph(graph, info, "wgsl", Limits(), _ChannelsLastConvs())  # type: ignore[arg-type]
    layouts = {s.node.name: s.params["layout"] for s in plan.steps if s.call.op == "reduce"}
    # the spatial mean and L2 norms read the NHWC feature map as it is, the channel max too (its last axis)
    assert sorted(layouts.values()) == [1, 1, 1], layouts
    assert [s.call.op for s in plan.steps].count("transpose") == 1  # only the model input is converted
    build_program(plan, "native")  # every kernel's layouts checked against the tensors it reads and writes
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
    got = run_graph(plan.graph, feeds)
    for name, expected in zip(("channel_max", "norms"), want, strict=True):
        np.testing.assert_allclose(got[name], expected, rtol=1e-4, atol=1e-4)
