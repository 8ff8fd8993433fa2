"""A token model with a symbolic sequence length, for shape variants (``export --variant``, ``--dim seq=N``)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def seq_attention(vocab: int = 32, width: int = 16, opset: int = 13) -> onnx.ModelProto:
    """One self-attention block over token ids whose inputs are ``[batch, seq]``: both dims symbolic.

    Inputs: ``ids`` int64 (a Gather from a ``[vocab, width]`` embedding table) and ``mask`` float32 (1 for a
    token, 0 for padding, which gets -1e4 before the Softmax over the sequence). Output ``y`` float32
    ``[batch, seq, width]``: ``softmax(q kᵀ / 4 + bias) v wo + bo``. No constant depends on ``seq``, so
    variants of any lengths bind the same weights.
    """
    rng = np.random.default_rng(5)
    weights: dict[str, tuple[int, ...]] = {"table": (vocab, width), "wq": (width, width), "wk": (width, width)}
    weights |= {"wv": (width, width), "wo": (width, width), "bo": (width,)}
    inits = [numpy_helper.from_array((rng.standard_normal(s) * 0.5).astype(np.float32), n) for n, s in weights.items()]
    inits += [
        numpy_helper.from_array(np.array(0.25, np.float32), "scale"),
        numpy_helper.from_array(np.array(1.0, np.float32), "one"),
        numpy_helper.from_array(np.array(1e4, np.float32), "big"),
        numpy_helper.from_array(np.array([1], np.int64), "axis1"),
    ]
    node = helper.make_node
    nodes = [
        node("Gather", ["table", "ids"], ["emb"], name="embed"),
        node("MatMul", ["emb", "wq"], ["q"], name="q"),
        node("MatMul", ["emb", "wk"], ["k"], name="k"),
        node("MatMul", ["emb", "wv"], ["v"], name="v"),
        node("Transpose", ["k"], ["kt"], perm=[0, 2, 1], name="kt"),
        node("MatMul", ["q", "kt"], ["s"], name="scores"),
        node("Mul", ["s", "scale"], ["scaled"], name="scaled"),
        node("Unsqueeze", ["mask", "axis1"], ["m"], name="mask_rows"),
        node("Sub", ["m", "one"], ["pad"], name="pad"),
        node("Mul", ["pad", "big"], ["bias"], name="bias"),
        node("Add", ["scaled", "bias"], ["masked"], name="masked"),
        node("Softmax", ["masked"], ["attention"], axis=-1, name="softmax"),
        node("MatMul", ["attention", "v"], ["context"], name="context"),
        node("MatMul", ["context", "wo"], ["o"], name="out"),
        node("Add", ["o", "bo"], ["y"], name="y"),
    ]
    graph = helper.make_graph(
        nodes,
        "seq_attention",
        [
            helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", "seq"]),
            helper.make_tensor_value_info("mask", TensorProto.FLOAT, ["batch", "seq"]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "seq", width])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def seq_feeds(seq: int, vocab: int = 32, seed: int = 0) -> dict[str, np.ndarray]:
    """Feeds of :func:`seq_attention` for one sequence of ``seq`` tokens, the last quarter of them padding."""
    rng = np.random.default_rng(seed + seq)
    mask = np.ones((1, seq), np.float32)
    mask[:, seq - seq // 4 :] = 0
    return {"ids": rng.integers(0, vocab, (1, seq)).astype(np.int64), "mask": mask}
