"""Small transformer models for tests and benchmarks, built with ``onnx.helper`` as ``torch.onnx.export`` writes them.

Each family copies the node pattern its exporter emits for one architecture, narrow and on a few tokens, with
float32 weights from a seeded rng (the same arguments give the same model byte for byte):

* :func:`bert_style`: a post-LayerNorm encoder (BERT, MiniLM): int64 ``input_ids`` and ``attention_mask``,
  token and position embeddings, per layer q/k/v MatMul + bias, heads split by Reshape and Transpose, scores
  ``MatMul(q, Transpose(k)) / sqrt(d)`` plus the additive padding mask ``(1 - mask) * -10000``, Softmax,
  ``MatMul(·, v)``, heads merged, output projection, residual, LayerNorm, an Erf-GELU MLP, residual, LayerNorm.
* :func:`gpt2_style`: a pre-LayerNorm decoder (GPT-2): one fused c_attn projection split into q/k/v, scores
  divided by ``sqrt(d)``, a causal mask built from ``Trilu`` and ``Where`` (folded to a constant at load)
  either added to the scores or selecting them (``Where(causal, scores, finfo.min)``, HF's form), the tanh
  GELU MLP and a final LayerNorm.

LayerNormalization is one node from opset 17 on and the ReduceMean/Sub/Pow/Sqrt/Div decomposition the exporter
writes before it. More families (ViT's patch embedding, say) are a function here and a row of
:data:`TRANSFORMERS`.

    from kernelforge.testing.transformers import TRANSFORMERS
    model = TRANSFORMERS["bert_style"](hidden=384, heads=12, seq=128)   # one MiniLM-shaped layer
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import onnx
from onnx import TensorProto

from kernelforge.testing.models import _Builder

_F32_MIN = float(np.finfo(np.float32).min)
"""What HF fills masked scores with since transformers 4.2x (``torch.finfo(dtype).min``)."""


class _Transformer(_Builder):
    """A model builder with the layers transformer exports are made of."""

    def linear(self, x: str, k: int, n: int, base: str) -> str:
        """Add ``MatMul(x, W[k, n]) + b``: the export of ``nn.Linear`` on a 3-D input."""
        w = self.const(f"{base}_w", self.rng.standard_normal((k, n)).astype(np.float32) * np.float32(k**-0.5))
        b = self.floats(f"{base}_b", self.rng.uniform(-0.1, 0.1, n))
        return self.node("Add", [self.node("MatMul", [x, w], f"{base}_mm"), b], base)

    def layernorm(self, x: str, width: int) -> str:
        """Add LayerNormalization over the last axis (opset 17+) or its decomposition (older opsets)."""
        gamma = self.floats("ln_gamma", self.rng.uniform(0.8, 1.2, width))
        beta = self.floats("ln_beta", self.rng.uniform(-0.1, 0.1, width))
        if self.opset >= 17:
            return self.node("LayerNormalization", [x, gamma, beta], "ln", axis=-1, epsilon=1e-12)
        mean = self._reduce_mean(x)
        centred = self.node("Sub", [x, mean], "ln_sub")
        var = self._reduce_mean(self.node("Pow", [centred, self.floats("ln_two", 2.0)], "ln_pow"))
        std = self.node("Sqrt", [self.node("Add", [var, self.floats("ln_eps", 1e-12)], "ln_add")], "ln_sqrt")
        scaled = self.node("Mul", [self.node("Div", [centred, std], "ln_div"), gamma], "ln_mul")
        return self.node("Add", [scaled, beta], "ln")

    def _reduce_mean(self, x: str) -> str:
        if self.opset < 18:
            return self.node("ReduceMean", [x], "ln_mean", axes=[-1], keepdims=1)
        return self.node("ReduceMean", [x, self.ints("ln_axes", [-1])], "ln_mean", keepdims=1)

    def unsqueeze(self, x: str, axes: list[int]) -> str:
        """Add Unsqueeze (``axes`` an attribute before opset 13, an input from 13 on)."""
        return self.squeeze("Unsqueeze", x, axes)

    def embed(self, ids: str, vocab: int, seq: int, hidden: int) -> str:
        """Add token embeddings (Gather of a table by int64 ids) plus learned position embeddings."""
        table = self.const("wte", self.rng.standard_normal((vocab, hidden)).astype(np.float32) * np.float32(0.5))
        positions = self.const("wpe", self.rng.standard_normal((1, seq, hidden)).astype(np.float32) * np.float32(0.1))
        return self.node("Add", [self.node("Gather", [table, ids], "embed", axis=0), positions], "embed_pos")

    def split_heads(self, x: str, heads: int, head_dim: int, perm: list[int]) -> str:
        """Add ``Reshape(x, [0, 0, heads, head_dim])`` then Transpose ``perm`` (``[0, 2, 1, 3]``: [b, h, s, d])."""
        shaped = self.node("Reshape", [x, self.ints("heads_shape", [0, 0, heads, head_dim])], "split_heads")
        return self.node("Transpose", [shaped], "heads", perm=perm)

    def merge_heads(self, x: str, hidden: int) -> str:
        """Add Transpose ``[0, 2, 1, 3]`` and ``Reshape(·, [0, 0, hidden])``: heads back to [b, s, hidden]."""
        moved = self.node("Transpose", [x], "merge_heads", perm=[0, 2, 1, 3])
        return self.node("Reshape", [moved, self.ints("merged_shape", [0, 0, hidden])], "merged")

    def erf_gelu(self, x: str) -> str:
        """Add ``x * 0.5 * (1 + erf(x / sqrt(2)))``: BERT's exact GELU."""
        inner = self.node("Erf", [self.node("Div", [x, self.floats("sqrt2", math.sqrt(2.0))], "gelu_div")], "erf")
        half = self.node("Mul", [x, self.floats("half", 0.5)], "gelu_half")
        return self.node("Mul", [half, self.node("Add", [inner, self.floats("one", 1.0)], "gelu_add")], "gelu")

    def tanh_gelu(self, x: str) -> str:
        """Add GPT-2's ``0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))``."""
        cube = self.node("Pow", [x, self.floats("three", 3.0)], "gelu_pow")
        inner = self.node("Add", [x, self.node("Mul", [cube, self.floats("c", 0.044715)], "gelu_c")], "gelu_in")
        scaled = self.node("Mul", [inner, self.floats("k", math.sqrt(2.0 / math.pi))], "gelu_k")
        gate = self.node("Add", [self.node("Tanh", [scaled], "tanh"), self.floats("one", 1.0)], "gelu_gate")
        return self.node("Mul", [self.node("Mul", [x, self.floats("half", 0.5)], "gelu_half"), gate], "gelu")

    def attention(self, q: str, k_t: str, v: str, head_dim: int, mask: str | None, scale: str) -> str:
        """Add ``Softmax(scale(MatMul(q, k_t)) (+ mask), -1) @ v`` on [b, h, s, d] heads.

        ``scale`` is ``div`` (``/ sqrt(d)``, BERT and GPT-2), ``mul`` (``* 1/sqrt(d)``) or ``split``
        (``d^-1/4`` applied to q and to k_t each, as some exporters write it).
        """
        if scale == "split":
            root = self.floats("scale_root", head_dim**-0.25)
            q = self.node("Mul", [q, root], "q_scaled")
            k_t = self.node("Mul", [k_t, root], "k_scaled")
        scores = self.node("MatMul", [q, k_t], "scores")
        if scale == "div":
            scores = self.node("Div", [scores, self.floats("sqrt_d", math.sqrt(head_dim))], "scaled")
        elif scale == "mul":
            scores = self.node("Mul", [scores, self.floats("inv_sqrt_d", head_dim**-0.5)], "scaled")
        if mask is not None:
            scores = self.node("Add", [scores, mask], "masked")
        probs = self.node("Softmax", [scores], "probs", axis=-1)
        return self.node("MatMul", [probs, v], "context")


def bert_style(
    opset: int = 17,
    batch: int = 1,
    seq: int = 16,
    hidden: int = 64,
    heads: int = 4,
    layers: int = 1,
    ffn: int | None = None,
    vocab: int = 100,
    scale: str = "div",
) -> onnx.ModelProto:
    """An encoder of ``layers`` post-LayerNorm layers: ``input_ids``, ``attention_mask`` -> ``hidden_states``.

    Args:
        opset: Operator set (LayerNormalization is one node from 17 on).
        batch: Sequences per run.
        seq: Tokens per sequence.
        hidden: Model width (``heads * head_dim``).
        heads: Attention heads.
        layers: Encoder layers.
        ffn: MLP width (default ``4 * hidden``).
        vocab: Token table rows.
        scale: How the scores are scaled: ``div``, ``mul`` or ``split`` (see ``_Transformer.attention``).
    """
    if hidden % heads:
        raise ValueError(f"bert_style: hidden={hidden} is not a multiple of heads={heads}")
    b = _Transformer("bert_style", opset, seed=11)
    head_dim = hidden // heads
    h = b.layernorm(b.embed("input_ids", vocab, seq, hidden), hidden)
    # the extended mask [b, 1, 1, s]: 0 where attended, -10000 on padding, as HF BERT builds it
    m = b.unsqueeze(b.node("Cast", ["attention_mask"], "mask_f", to=TensorProto.FLOAT), [1, 2])
    inverted = b.node("Sub", [b.floats("mask_one", 1.0), m], "mask_inv")
    mask = b.node("Mul", [inverted, b.floats("mask_fill", -10000.0)], "mask_add")
    for _ in range(layers):
        q = b.split_heads(b.linear(h, hidden, hidden, "query"), heads, head_dim, [0, 2, 1, 3])
        k = b.split_heads(b.linear(h, hidden, hidden, "key"), heads, head_dim, [0, 2, 1, 3])
        v = b.split_heads(b.linear(h, hidden, hidden, "value"), heads, head_dim, [0, 2, 1, 3])
        k_t = b.node("Transpose", [k], "key_t", perm=[0, 1, 3, 2])
        context = b.merge_heads(b.attention(q, k_t, v, head_dim, mask, scale), hidden)
        attended = b.layernorm(b.node("Add", [b.linear(context, hidden, hidden, "attn_out"), h], "residual"), hidden)
        width = ffn or 4 * hidden
        up = b.erf_gelu(b.linear(attended, hidden, width, "ffn_up"))
        h = b.layernorm(b.node("Add", [b.linear(up, width, hidden, "ffn_down"), attended], "residual"), hidden)
    dtypes = {"input_ids": TensorProto.INT64, "attention_mask": TensorProto.INT64}
    return b.model([("input_ids", (batch, seq)), ("attention_mask", (batch, seq))], [(h, "hidden_states")], dtypes)


def gpt2_style(
    opset: int = 17,
    batch: int = 1,
    seq: int = 16,
    hidden: int = 64,
    heads: int = 4,
    layers: int = 1,
    vocab: int = 100,
    mask: str = "where",
) -> onnx.ModelProto:
    """A causal decoder of ``layers`` pre-LayerNorm blocks: ``input_ids`` -> ``hidden_states``.

    Args:
        opset: Operator set (13+: Split takes its sizes as an input).
        batch: Sequences per run.
        seq: Tokens per sequence.
        hidden: Model width (``heads * head_dim``).
        heads: Attention heads.
        layers: Decoder blocks.
        vocab: Token table rows.
        mask: ``where`` (``Where(causal, scores, finfo.min)``, HF GPT-2) or ``add`` (an additive
            ``Where(causal, 0, -inf)`` constant added to the scores).
    """
    if hidden % heads:
        raise ValueError(f"gpt2_style: hidden={hidden} is not a multiple of heads={heads}")
    if opset < 13:
        raise ValueError(f"gpt2_style needs opset >= 13 (Split's sizes input), got {opset}")
    b = _Transformer("gpt2_style", opset, seed=12)
    head_dim = hidden // heads
    h = b.embed("input_ids", vocab, seq, hidden)
    # the causal pattern [1, 1, s, s] from Trilu of ones: constant, folded at load
    lower = b.node("Trilu", [b.floats("ones", np.ones((seq, seq), np.float32))], "tril", upper=0)
    causal = b.unsqueeze(b.node("Cast", [lower], "causal", to=TensorProto.BOOL), [0, 1])
    if mask == "add":
        bias = b.node("Where", [causal, b.floats("zero", 0.0), b.floats("neg_inf", -np.inf)], "causal_bias")
    elif mask != "where":
        raise ValueError(f"gpt2_style: mask={mask!r} is not 'where' or 'add'")
    for _ in range(layers):
        qkv = b.linear(b.layernorm(h, hidden), hidden, 3 * hidden, "c_attn")
        sizes = b.ints("qkv_sizes", [hidden] * 3)
        parts = [b.fresh(name) for name in ("q", "k", "v")]
        b.nodes.append(onnx.helper.make_node("Split", [qkv, sizes], parts, name=b.fresh("split"), axis=2))
        q, k, v = (b.split_heads(p, heads, head_dim, [0, 2, 1, 3]) for p in parts)
        k_t = b.node("Transpose", [k], "key_t", perm=[0, 1, 3, 2])
        if mask == "add":
            context = b.attention(q, k_t, v, head_dim, bias, "div")
        else:
            scores = b.node("MatMul", [q, k_t], "scores")
            scaled = b.node("Div", [scores, b.floats("sqrt_d", math.sqrt(head_dim))], "scaled")
            masked = b.node("Where", [causal, scaled, b.floats("mask_value", _F32_MIN)], "masked")
            context = b.node("MatMul", [b.node("Softmax", [masked], "probs", axis=-1), v], "context")
        projected = b.linear(b.merge_heads(context, hidden), hidden, hidden, "c_proj")
        h = b.node("Add", [h, projected], "residual")
        up = b.tanh_gelu(b.linear(b.layernorm(h, hidden), hidden, 4 * hidden, "c_fc"))
        h = b.node("Add", [h, b.linear(up, 4 * hidden, hidden, "mlp_proj")], "residual")
    out = b.layernorm(h, hidden)
    return b.model([("input_ids", (batch, seq))], [(out, "hidden_states")], {"input_ids": TensorProto.INT64})


TRANSFORMERS: dict[str, Callable[..., onnx.ModelProto]] = {"bert_style": bert_style, "gpt2_style": gpt2_style}
"""Builder per family; each takes ``opset``, ``batch``, ``seq``, ``hidden``, ``heads`` and ``layers`` keywords."""


def token_feeds(model: onnx.ModelProto, seed: int = 0, vocab: int = 100, padding: int = 0) -> dict[str, np.ndarray]:
    """Return int64 feeds for a family's inputs: random ``input_ids`` and an ``attention_mask`` of ones.

    ``padding`` zeroes the mask on the last tokens of the sequence (BERT's padded batches).
    """
    rng = np.random.default_rng(seed)
    feeds: dict[str, np.ndarray] = {}
    for value in model.graph.input:
        shape = tuple(d.dim_value for d in value.type.tensor_type.shape.dim)
        if value.name == "input_ids":
            feeds[value.name] = rng.integers(0, vocab, shape).astype(np.int64)
        elif value.name == "attention_mask":
            attention = np.ones(shape, np.int64)
            if padding:
                attention[..., -padding:] = 0
            feeds[value.name] = attention
    return feeds
