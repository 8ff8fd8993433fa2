"""The attention pass: which exported patterns become one attention node, which do not, and their numerics."""

from __future__ import annotations

import math

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from kernelforge.graph.fuse_attention import fuse_attention
from kernelforge.graph.onnx_import import import_model
from kernelforge.graph.passes import optimize
from kernelforge.graph.reference import run_graph
from kernelforge.testing.transformers import TRANSFORMERS, token_feeds

F32_MIN = float(np.finfo(np.float32).min)


class _Chain:
    """Builds one attention chain the way exporters write it, node by node."""

    def __init__(self, b: int, h: int, sq: int, skv: int, d: int, dv: int) -> None:
        self.dims = (b, h, sq, skv, d, dv)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self.outputs = ["y"]
        self.feeds: dict[str, np.ndarray] = {}
        self.rng = np.random.default_rng(0)

    def input(self, name: str, shape: tuple[int, ...], dtype: int = TensorProto.FLOAT) -> str:
        self.inputs.append(helper.make_tensor_value_info(name, dtype, list(shape)))
        if dtype == TensorProto.INT64:
            data = np.ones(shape, np.int64)
            data[..., -2:] = 0  # padding on the last two keys
            self.feeds[name] = data
        else:
            self.feeds[name] = self.rng.standard_normal(shape).astype(np.float32)
        return name

    def const(self, name: str, data: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(np.asarray(data), name))
        return name

    def node(self, op: str, inputs: list[str], out: str, **attrs: object) -> str:
        self.nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        return out

    def model(self, opset: int = 17) -> onnx.ModelProto:
        outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in self.outputs]
        graph = helper.make_graph(self.nodes, "attention_chain", self.inputs, outs, self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
        return onnx.shape_inference.infer_shapes(model)


def chain_model(
    scale: str = "div",
    mask: str | None = None,
    k_layout: str = "bhsd",
    rank: int = 4,
    extra: str | None = None,
    dims: tuple[int, int, int, int, int, int] = (2, 3, 5, 7, 8, 6),
) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """Return ``softmax(scale(Q Kᵀ) + mask) V`` and its feeds; ``dims`` are ``(b, h, sq, skv, d, dv)``.

    ``scale``: div, mul, split (``d^-1/4`` on Q and on Kᵀ), early (on Q and K before the transpose), none.
    ``mask``: runtime (BERT's ``(1 - mask) * -10000`` from int64 ``attention_mask``), causal (``Where(Trilu,
    0, -inf)``, folded at load), where / where_inverted (HF GPT-2's ``Where(causal, scores, finfo.min)``),
    where_runtime (``Where(ids > 0, scores, -1e4)``). ``k_layout``: bhsd (``Transpose(K, 0132)``), bshd
    (``Transpose(K, 0231)`` of ``[b, s, h, d]``), bhds (Kᵀ given). ``rank`` 3: heads folded into the batch
    (``bmm``). ``extra`` puts something in the way (see the tests that do not fire).
    """
    b, h, sq, skv, d, dv = dims
    c = _Chain(b, h, sq, skv, d, dv)
    q = c.input("q", (b, h, sq, d))
    v = c.input("v", (b, h, skv, dv))
    if k_layout == "bhsd":
        k = c.input("k", (b, h, skv, d))
        if scale == "early":
            k = c.node("Mul", [k, c.const("k_root", np.float32(d**-0.25))], "k_early")
        k_t = c.node("Transpose", [k], "k_t", perm=[0, 1, 3, 2])
    elif k_layout == "bshd":
        k_t = c.node("Transpose", [c.input("k", (b, skv, h, d))], "k_t", perm=[0, 2, 3, 1])
    else:
        k_t = c.input("k_t", (b, h, d, skv))
    if scale == "early":
        q = c.node("Mul", [q, c.const("q_root", np.float32(d**-0.25))], "q_early")
    if rank == 3:
        q = c.node("Reshape", [q, c.const("q3", np.array([b * h, sq, d]))], "q_3d")
        k_t = c.node("Reshape", [k_t, c.const("k3", np.array([b * h, d, skv]))], "k_3d")
        v = c.node("Reshape", [v, c.const("v3", np.array([b * h, skv, dv]))], "v_3d")
    if scale == "split":
        q = c.node("Mul", [q, c.const("q_root", np.float32(d**-0.25))], "q_scaled")
        k_t = c.node("Mul", [k_t, c.const("k_root", np.float32(d**-0.25))], "k_scaled")
    s = c.node("MatMul", [q, k_t], "scores")
    if extra == "runtime_scale":
        s = c.node("Mul", [s, c.input("alpha", (1,))], "s_alpha")
    if extra == "output":
        c.outputs.append(s)
    if mask in ("runtime", "where_runtime") and rank == 3:
        raise ValueError("a per-batch padding mask does not broadcast over 3-D [b * h, s, s] scores")
    if extra == "mask_first":
        s = c.node("Add", [s, c.const("bias", np.float32(-3.0) * np.triu(np.ones((sq, skv), np.float32), 1))], "biased")
    if scale == "div":
        s = c.node("Div", [s, c.const("sqrt_d", np.float32(math.sqrt(d)))], "scaled")
    elif scale == "mul":
        s = c.node("Mul", [c.const("inv_sqrt_d", np.float32(d**-0.5)), s], "scaled")
    if extra == "relu":
        s = c.node("Relu", [s], "relu")
    lower = c.node("Trilu", [c.const("ones", np.ones((sq, skv), np.float32))], "lower", upper=0)
    causal = c.node("Cast", [lower], "causal", to=TensorProto.BOOL)
    if mask == "runtime":
        ids = c.input("attention_mask", (b, skv), TensorProto.INT64)
        m = c.node("Unsqueeze", [ids, c.const("axes", np.array([1, 2]))], "m4")
        m = c.node("Cast", [m], "mf", to=TensorProto.FLOAT)
        m = c.node("Sub", [c.const("one", np.float32(1.0)), m], "inv")
        m = c.node("Mul", [m, c.const("big", np.float32(-10000.0))], "additive")
        s = c.node("Add", [s, m], "masked")
    elif mask == "causal":
        bias = c.node("Where", [causal, c.const("zero", np.float32(0.0)), c.const("ninf", np.float32(-np.inf))], "cb")
        s = c.node("Add", [bias, s], "masked")
    elif mask == "where":
        s = c.node("Where", [causal, s, c.const("fmin", np.float32(F32_MIN))], "masked")
    elif mask == "where_inverted":
        future = c.node("Not", [causal], "future")
        s = c.node("Where", [future, c.const("fmin", np.float32(F32_MIN)), s], "masked")
    elif mask == "where_runtime":
        ids = c.input("ids", (b, 1, 1, skv), TensorProto.INT64)
        keep = c.node("Greater", [ids, c.const("zero_i", np.array(0, np.int64))], "keep")
        s = c.node("Where", [keep, s, c.const("neg", np.float32(-1e4))], "masked")
    if extra == "two_adds":
        s = c.node("Add", [s, c.const("bias2", np.full((skv,), -0.5, np.float32))], "biased2")
    p = c.node("Softmax", [s], "probs", axis=2 if extra == "axis" else -1)
    if extra == "probs_output":
        c.outputs.append(p)
    y = c.node("MatMul", [p, v], "y" if rank == 4 else "y_3d")
    if rank == 3:
        c.node("Reshape", [y, c.const("y4", np.array([b, h, sq, dv]))], "y")
    return c.model(), c.feeds


def _check(model: onnx.ModelProto, feeds: dict[str, np.ndarray], attentions: int) -> dict:
    graph = optimize(import_model(model))
    assert [n.op for n in graph.nodes].count("attention") == attentions
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
    got = run_graph(graph, feeds)
    for name, expected in zip([o.name for o in model.graph.output], want, strict=True):
        np.testing.assert_array_equal(np.isnan(got[name]), np.isnan(expected), err_msg=name)
        np.testing.assert_allclose(got[name], expected, rtol=1e-5, atol=1e-5, err_msg=name)
    return {n.name: n for n in graph.nodes}


FIRES = [
    {"scale": "div"},
    {"scale": "mul"},
    {"scale": "split"},
    {"scale": "early"},
    {"scale": "none"},
    {"mask": "runtime"},
    {"mask": "causal", "scale": "mul", "rank": 3},
    {"mask": "causal"},
    {"mask": "where"},
    {"mask": "where_inverted"},
    {"mask": "where_runtime", "scale": "split"},
    {"k_layout": "bshd", "mask": "causal"},
    {"k_layout": "bhds", "mask": "runtime"},
    {"rank": 3},
    {"extra": "mask_first", "scale": "none"},  # a constant bias and no scale: one additive mask
]


@pytest.mark.parametrize("case", FIRES, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
def test_the_pass_fires_on_each_exported_pattern_and_matches_onnxruntime(case):
    model, feeds = chain_model(**case)
    nodes = _check(model, feeds, 1)
    (node,) = [n for n in nodes.values() if n.op == "attention"]
    assert not [n for n in nodes.values() if n.op in ("softmax", "gemm")]
    if case.get("scale", "div") != "none":
        assert math.isclose(node.attrs["scale"], 8**-0.5, rel_tol=1e-6)
    assert node.attrs["k_transposed"] == (case.get("k_layout") == "bhds")
    assert bool(node.inputs[3]) == (case.get("mask") in ("runtime", "causal") or "extra" in case)
    assert bool(node.inputs[4]) == (case.get("mask", "").startswith("where"))
    if case.get("mask", "").startswith("where"):
        assert node.attrs["fill"] == (-1e4 if case["mask"] == "where_runtime" else F32_MIN)


def test_a_transpose_of_k_that_moves_other_axes_keeps_them_without_the_swap():
    model, feeds = chain_model(k_layout="bshd")
    fused = fuse_attention(import_model(model))
    (transpose,) = [n for n in fused.nodes if n.op == "transpose" and n.name == "k_t"]
    assert transpose.attrs["perm"] == (0, 2, 1, 3)
    # which the head pass then folds into the node: K is read sequence-major
    nodes = _check(model, feeds, 1)
    assert not [n for n in nodes.values() if n.op == "transpose"]
    (node,) = [n for n in nodes.values() if n.op == "attention"]
    assert node.attrs["seq_major"] == "k"


def test_a_plain_transpose_of_k_is_dropped():
    model, feeds = chain_model(mask="where_inverted")
    nodes = _check(model, feeds, 1)
    assert not [n for n in nodes.values() if n.op == "transpose"]
    # the negated causal condition was a constant: it folded, no logical_not node is left
    assert [n.op for n in nodes.values()] == ["attention"]


@pytest.mark.parametrize(
    "case",
    [
        {"extra": "relu"},  # an activation between the scale and the softmax
        {"extra": "axis"},  # a softmax over the queries
        {"extra": "output"},  # the scores are also a graph output
        {"extra": "probs_output"},  # the probabilities are too
        {"extra": "mask_first"},  # a mask added before the scale (the scale would scale it)
        {"extra": "two_adds", "mask": "runtime"},  # two additive masks
        {"extra": "runtime_scale"},  # a scale that is no constant
    ],
    ids=lambda c: c["extra"],
)
def test_the_pass_does_not_fire_when_something_in_between_cannot_be_expressed(case):
    model, feeds = chain_model(**case)
    _check(model, feeds, 0)


def test_fully_masked_rows_stay_nan_as_the_unfused_softmax_makes_them():
    model, feeds = chain_model(mask="causal")
    model.graph.initializer[-1].CopyFrom(numpy_helper.from_array(np.float32(-np.inf), "ninf"))
    # a causal pattern whose first row keeps no key: Trilu with k = -1
    (trilu,) = [n for n in model.graph.node if n.op_type == "Trilu"]
    trilu.input.append("minus_one")
    model.graph.initializer.append(numpy_helper.from_array(np.array(-1, np.int64), "minus_one"))
    graph = optimize(import_model(model))
    assert [n.op for n in graph.nodes] == ["attention"]
    got = run_graph(graph, feeds)["y"]
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    assert np.isnan(want[:, :, 0]).all() and np.isfinite(want[:, :, 1:]).all()
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("family", sorted(TRANSFORMERS))
@pytest.mark.parametrize("opset", [14, 17])
def test_transformer_layers_get_one_attention_node_per_layer(family, opset):
    model = TRANSFORMERS[family](opset=opset, layers=2, batch=2, seq=9)
    graph = optimize(import_model(model))
    assert [n.op for n in graph.nodes].count("attention") == 2
    assert "softmax" not in [n.op for n in graph.nodes]
    feeds = token_feeds(model, padding=3)
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    np.testing.assert_allclose(run_graph(graph, feeds)["hidden_states"], want, rtol=1e-4, atol=1e-4)


def test_gpt2_masks_both_ways_and_bert_scales_every_way():
    for mask in ("where", "add"):
        graph = optimize(import_model(TRANSFORMERS["gpt2_style"](mask=mask)))
        (node,) = [n for n in graph.nodes if n.op == "attention"]
        assert bool(node.inputs[4]) == (mask == "where") and bool(node.inputs[3]) == (mask == "add")
    for scale in ("div", "mul", "split"):
        graph = optimize(import_model(TRANSFORMERS["bert_style"](scale=scale)))
        (node,) = [n for n in graph.nodes if n.op == "attention"]
        assert math.isclose(node.attrs["scale"], 0.25, rel_tol=1e-6)


def test_the_pass_alone_keeps_a_valid_graph_and_runs_twice():
    model, feeds = chain_model(mask="runtime")
    graph = import_model(model)
    fused = fuse_attention(fuse_attention(graph))
    fused.validate()
    assert [n.op for n in fused.nodes].count("attention") == 1
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    np.testing.assert_allclose(run_graph(fused, feeds)["y"], want, rtol=1e-5, atol=1e-5)
