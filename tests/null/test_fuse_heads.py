"""The head-transpose pass: attention reads and writes sequence-major tensors, and the graph still matches ORT."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from kernelforge.graph.fuse_attention import fuse_attention
from kernelforge.graph.fuse_heads import fold_head_transposes
from kernelforge.graph.ir import Node
from kernelforge.graph.onnx_import import import_model
from kernelforge.graph.passes import optimize
from kernelforge.graph.reference import run_graph
from kernelforge.ops import get_op
from kernelforge.testing.transformers import TRANSFORMERS, token_feeds


def _ort(model, feeds):
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)[0]


@pytest.mark.parametrize("family", sorted(TRANSFORMERS))
def test_split_and_merge_heads_transposes_vanish_and_the_graph_matches_onnxruntime(family):
    model = TRANSFORMERS[family](layers=2, batch=2, seq=9)
    fused = fuse_attention(import_model(model))
    before = [n.op for n in fused.nodes].count("transpose")
    assert before >= 2 * 4  # per layer: Q, K and V split into heads, the context merged back
    graph = optimize(import_model(model))
    attentions = [n for n in graph.nodes if n.op == "attention"]
    assert len(attentions) == 2 and all(n.attrs["seq_major"] == "qkvo" for n in attentions)
    assert "transpose" not in [n.op for n in graph.nodes]
    graph.validate()
    feeds = token_feeds(model, padding=3)
    np.testing.assert_allclose(run_graph(graph, feeds)["hidden_states"], _ort(model, feeds), rtol=1e-4, atol=1e-4)


def _swap(name: str, source: str) -> Node:
    return Node(name, "transpose", [source], [name], {"perm": (0, 2, 1, 3)})


def test_a_transpose_read_elsewhere_or_a_graph_output_stays():
    model = TRANSFORMERS["bert_style"](batch=1, seq=5)
    graph = fuse_attention(import_model(model))
    (node,) = [n for n in graph.nodes if n.op == "attention"]
    producers = graph.producers()
    q_split = producers[node.inputs[0]]
    assert q_split.op == "transpose"
    # the split Q is also a graph output, and the context is too: both transposes of theirs must stay
    graph.outputs += [q_split.output, node.output]
    feeds = token_feeds(model, padding=1)
    want = run_graph(graph, feeds)
    fold_head_transposes(graph)
    graph.validate()
    assert node.attrs["seq_major"] == "qkv"  # Q still read from before its transpose; the output is not moved
    assert q_split in graph.nodes
    got = run_graph(graph, feeds)
    for name in graph.outputs:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-6, err_msg=name)


def test_the_problem_reads_sequence_major_shapes_and_keys_them():
    spec = get_op("attention")
    shapes = [(2, 7, 3, 16), (2, 9, 3, 16), (2, 3, 9, 8), (1, 1, 1, 9)]
    problem = spec.from_node(shapes, {"seq_major": "kq"})
    assert (problem.batch, problem.heads, problem.q_len, problem.kv_len, problem.v_dim) == (2, 3, 7, 9, 8)
    assert problem.seq_major == "qk" and spec.problem_key(problem).endswith(":lqk")
    assert spec.parse_problem(spec.problem_key(problem)) == problem
    assert problem.out_shape == (2, 3, 7, 8) and problem.row_strides("q") == (21, 1, 3)
    rng = np.random.default_rng(0)
    inputs = spec.make_inputs(problem, rng)
    assert [x.shape for x in inputs] == shapes
    plain = spec.parse_problem(spec.problem_key(problem).replace(":lqk", ""))
    heads_first = [inputs[0].swapaxes(1, 2), inputs[1].swapaxes(1, 2), inputs[2], inputs[3]]
    np.testing.assert_array_equal(spec.reference(problem, inputs), spec.reference(plain, heads_first))
    with pytest.raises(Exception, match="cannot also be sequence-major"):
        spec.parse_problem("1x2x3x4:kt:lk")
    with pytest.raises(Exception, match="seq_major must be letters"):
        spec.parse_problem("1x2x3x4:lx")
