"""The text families of :mod:`kernelforge.testing.families` in both exporter styles, and GPT-2 with a KV cache.

The dynamo forms are :mod:`kernelforge.testing.transformers`' builders at opset 18 (BERT's scores scaled on q
and Kᵀ, as the SDPA decomposition writes them). The legacy forms follow what the TorchScript exporter writes
for Hugging Face's models at opset 14: token-type and position ids sliced out of registered buffers by ends
read from ``Shape(input_ids)``, ``expand`` through ``Equal``/``Where``, heads split by runtime shapes, the
q/k/v of GPT-2's ``c_attn`` as three ``Slice``s, LayerNorm written out, and GPT-2's 4-D mask built by
``_prepare_4d_causal_attention_mask`` (``ConstantOfShape``, ``Range``, ``Less``, ``Where``, ``Cast`` to bool).
"""

from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import TensorProto, helper

from kernelforge.testing._exporter_styles import _Styled, scaled
from kernelforge.testing.transformers import _F32_MIN, bert_style, gpt2_style

__all__ = ["bert", "gpt2", "gpt2_kv"]


def bert(
    style: str = "dynamo",
    batch: int = 1,
    seq: int = 16,
    hidden: int = 64,
    heads: int = 4,
    layers: int = 2,
    vocab: int = 100,
) -> onnx.ModelProto:
    """A BERT encoder: ``input_ids``, ``attention_mask`` (int64 ``[batch, seq]``) -> ``hidden_states``."""
    if style == "dynamo":
        return bert_style(18, batch, seq, hidden, heads, layers, vocab=vocab, scale="split")
    b = _Styled("bert", style, seed=31)
    head_dim, dims, max_pos = hidden // heads, (batch, seq, hidden), 2 * seq
    length = b.dim("input_ids", 1)
    positions = b.node(
        "Slice", [b.const("position_ids", np.arange(max_pos)[None]), b.lit("starts", [0]), length, b.lit("axes", [1])]
    )
    buffered = b.node(
        "Slice",
        [b.const("token_type_ids", np.zeros((1, max_pos), np.int64)), b.lit("starts", [0]), length, b.lit("axes", [1])],
    )
    types = b.expand(buffered, [batch, seq], runtime={0: ("input_ids", 0), 1: ("input_ids", 1)})
    tables = [("word", vocab, "input_ids"), ("token_type", 2, types), ("position", max_pos, positions)]
    embedded = [
        b.node("Gather", [b.floats(f"{n}_embeddings", scaled(b.rng, (rows, hidden), 0.5)), i], n)
        for n, rows, i in tables
    ]
    h = b.layernorm(b.node("Add", [b.node("Add", embedded[:2], "embed"), embedded[2]], "embed"), hidden)
    mask = b.padding_mask("attention_mask", _F32_MIN)
    for _ in range(layers):
        q, k, v = (b.heads(b.linear(h, hidden, hidden, name), dims, heads) for name in ("query", "key", "value"))
        k_t = b.node("Transpose", [k], "key_t", perm=[0, 1, 3, 2])
        context = b.merge(b.attention(q, k_t, v, head_dim, mask, "div"), dims)
        attended = b.layernorm(b.node("Add", [b.linear(context, hidden, hidden, "attn_out"), h], "residual"), hidden)
        up = b.erf_gelu(b.linear(attended, hidden, 4 * hidden, "intermediate"))
        h = b.layernorm(b.node("Add", [b.linear(up, 4 * hidden, hidden, "output"), attended], "residual"), hidden)
    dtypes = {"input_ids": TensorProto.INT64, "attention_mask": TensorProto.INT64}
    return b.model([("input_ids", (batch, seq)), ("attention_mask", (batch, seq))], [(h, "hidden_states")], dtypes)


def _causal_4d(b: _Styled, batch: int, seq: int) -> str:
    """Add HF's ``_prepare_4d_causal_attention_mask`` of ``attention_mask``: 0 where attended, else finfo.min."""
    ids = "input_ids"
    length = b.scalar_dim(ids, 1)
    square = b.node("Concat", [b.dim(ids, 1), b.dim(ids, 1)], "square", axis=0)
    fill = helper.make_tensor("fill", TensorProto.FLOAT, [1], [_F32_MIN])
    full = b.node("ConstantOfShape", [square], "full", value=fill)
    steps = b.node("Range", [b.lit("start", 0), length, b.lit("delta", 1)], "arange")
    column = b.node("Reshape", [b.node("Add", [steps, b.lit("one", 1)], "next"), b.lit("col", [-1, 1])], "rows")
    causal = b.node("Where", [b.node("Less", [steps, column], "cond"), b.floats("zero", 0.0), full], "causal")
    runtime = {0: (ids, 0), 2: (ids, 1), 3: (ids, 1)}
    causal = b.expand(b.unsqueeze(causal, [0, 1]), [batch, 1, seq, seq], keep=(1,), runtime=runtime)
    m = b.node("Cast", [b.unsqueeze(b.unsqueeze("attention_mask", [1]), [2])], "mask_f", to=TensorProto.FLOAT)
    inverted = b.node("Sub", [b.floats("one_f", 1.0), b.expand(m, [batch, 1, seq, seq], keep=(1,), runtime=runtime)])
    as_bool = b.node("Cast", [inverted], "inverted_bool", to=TensorProto.BOOL)
    padding = b.node("Where", [as_bool, b.floats("min", _F32_MIN), inverted], "padding")
    blocked = b.node("Cast", [padding], "padding_bool", to=TensorProto.BOOL)
    return b.node("Where", [blocked, b.floats("min", _F32_MIN), causal], "mask_4d")


def gpt2(
    style: str = "dynamo",
    batch: int = 1,
    seq: int = 16,
    hidden: int = 64,
    heads: int = 4,
    layers: int = 2,
    vocab: int = 100,
) -> onnx.ModelProto:
    """A GPT-2 decoder: ``input_ids`` (legacy: and ``attention_mask``) -> ``hidden_states``.

    The dynamo form is ``gpt2_style`` at opset 18 (a constant causal ``Where`` select); the legacy form adds
    the 4-D causal-and-padding mask of the attention mask to the scores.
    """
    if style == "dynamo":
        return gpt2_style(18, batch, seq, hidden, heads, layers, vocab)
    b = _Styled("gpt2", style, seed=32)
    head_dim, dims = hidden // heads, (batch, seq, hidden)
    steps = b.node("Range", [b.lit("start", 0), b.scalar_dim("input_ids", 1), b.lit("delta", 1)], "positions")
    h = _embed(b, "input_ids", b.unsqueeze(steps, [0]), vocab, seq, hidden)
    mask = _causal_4d(b, batch, seq)
    for _ in range(layers):
        qkv = b.linear(b.layernorm(h, hidden), hidden, 3 * hidden, "c_attn")
        q, k, v = (b.heads(part, dims, heads) for part in b.split(qkv, [hidden] * 3, axis=2))
        k_t = b.node("Transpose", [k], "key_t", perm=[0, 1, 3, 2])
        context = b.merge(b.attention(q, k_t, v, head_dim, mask, "div"), dims)
        h = _mlp(b, b.node("Add", [h, b.linear(context, hidden, hidden, "c_proj")], "residual"), hidden)
    out = b.layernorm(h, hidden)
    dtypes = {"input_ids": TensorProto.INT64, "attention_mask": TensorProto.INT64}
    return b.model([("input_ids", (batch, seq)), ("attention_mask", (batch, seq))], [(out, "hidden_states")], dtypes)


def _embed(b: _Styled, ids: str, positions: str, vocab: int, max_pos: int, hidden: int) -> str:
    wte = b.floats("wte", scaled(b.rng, (vocab, hidden), 0.5))
    wpe = b.floats("wpe", scaled(b.rng, (max_pos, hidden), 0.1))
    return b.node("Add", [b.node("Gather", [wte, ids], "tokens"), b.node("Gather", [wpe, positions], "places")])


def _mlp(b: _Styled, h: str, hidden: int) -> str:
    up = b.tanh_gelu(b.linear(b.layernorm(h, hidden), hidden, 4 * hidden, "c_fc"))
    return b.node("Add", [h, b.linear(up, 4 * hidden, hidden, "mlp_proj")], "residual")


def gpt2_kv(
    style: str = "dynamo",
    new: int = 1,
    past: int = 16,
    batch: int = 1,
    hidden: int = 64,
    heads: int = 4,
    layers: int = 2,
    vocab: int = 100,
    positions: int = 64,
) -> onnx.ModelProto:
    """A GPT-2 decoder step with a KV cache, as optimum exports ``decoder_with_past_model.onnx``.

    Inputs: ``input_ids [batch, new]``, ``attention_mask [batch, past + new]`` and per layer ``i``
    ``past_key_values.i.key``/``.value [batch, heads, past, head_dim]``; outputs ``hidden_states`` and
    ``present.i.key``/``.value`` (the past concatenated with the new keys and values). The new tokens sit at
    positions ``past..past+new-1``; the causal mask is the ``[past:past+new, :past+new]`` window of a
    lower-triangular buffer (legacy: its bounds read from the shapes), selected by ``Where`` before the
    padding mask is added. The weights depend on the widths and ``positions`` (the position table's rows) only,
    so models of other lengths continue each other's caches.
    """
    head_dim, total, dims = hidden // heads, past + new, (batch, new, hidden)
    if total > positions:
        raise ValueError(f"gpt2_kv: past + new = {total} exceeds the {positions} positions")
    b = _Styled("gpt2_kv", style, seed=33)
    if b.legacy:
        start = b.scalar_dim("past_key_values.0.key", 2)
        end = b.node("Add", [start, b.scalar_dim("input_ids", 1)], "end")
        steps = b.node("Range", [start, end, b.lit("delta", 1)], "positions")
    else:
        steps = b.lit("positions", np.arange(past, total))
    h = _embed(b, "input_ids", b.unsqueeze(steps, [0]), vocab, positions, hidden)
    tril = np.tril(np.ones((positions, positions), bool))[None, None]
    padding = b.padding_mask("attention_mask", _F32_MIN)
    inputs: list[tuple[str, tuple[int, ...]]] = [("input_ids", (batch, new)), ("attention_mask", (batch, total))]
    outputs = []
    for layer in range(layers):
        cache = [f"past_key_values.{layer}.{kind}" for kind in ("key", "value")]
        inputs += [(name, (batch, heads, past, head_dim)) for name in cache]
        qkv = b.linear(b.layernorm(h, hidden), hidden, 3 * hidden, "c_attn")
        q, k, v = (b.heads(part, dims, heads) for part in b.split(qkv, [hidden] * 3, axis=2))
        k, v = (b.node("Concat", [old, fresh], "present", axis=2) for old, fresh in zip(cache, (k, v), strict=True))
        outputs += [(k, f"present.{layer}.key"), (v, f"present.{layer}.value")]
        if b.legacy:  # bias[:, :, key_length - query_length : key_length, :key_length]
            key_length, query_length = b.dim(k, 2), b.dim(q, 2)
            first = b.node("Sub", [key_length, query_length], "first")
            rows = b.node("Slice", [b.const("bias", tril), first, key_length, b.lit("axes", [2])], "rows")
            causal = b.node("Slice", [rows, b.lit("starts", [0]), key_length, b.lit("axes", [3])], "causal")
        else:
            causal = b.const("causal", tril[:, :, past:total, :total])
        scores = b.node("MatMul", [q, b.node("Transpose", [k], "key_t", perm=[0, 1, 3, 2])], "scores")
        scaled_scores = b.node("Div", [scores, b.floats("sqrt_d", math.sqrt(head_dim))], "scaled")
        masked = b.node("Where", [causal, scaled_scores, b.floats("mask_value", _F32_MIN)], "masked")
        probs = b.node("Softmax", [b.node("Add", [masked, padding], "padded")], "probs", axis=-1)
        context = b.merge(b.node("MatMul", [probs, v], "context"), dims)
        h = _mlp(b, b.node("Add", [h, b.linear(context, hidden, hidden, "c_proj")], "residual"), hidden)
    dtypes = {"input_ids": TensorProto.INT64, "attention_mask": TensorProto.INT64}
    return b.model(inputs, [(b.layernorm(h, hidden), "hidden_states"), *outputs], dtypes)
