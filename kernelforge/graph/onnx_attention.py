"""ONNX ``Attention`` (opset 23+) as one ``attention`` node.

4-D Q, K, V ``[batch, heads, seq, head_size]`` run as they stand, K/V with fewer heads than Q too (grouped-query
attention: query head ``h`` reads K/V head ``h // (q_heads / kv_heads)``); 3-D ones ``[batch, seq, heads *
head_size]`` (``q_num_heads``, ``kv_num_heads``) are split into heads with a reshape and a transpose, and the
output merged back. ``is_causal`` (upper-left aligned, as ONNX defines it without a cache) and ``scale``
(default ``1/sqrt(head_size)``) map to the node's attributes. ``attn_mask`` is additive when it is a float
tensor and selects (False: ``-inf``) when it is a boolean one; a row with no key left gives 0, as ONNX defines.

A KV cache: ``past_key``/``past_value`` ``[batch, kv_heads, past, size]`` are concatenated before the new K
and V along the sequence (one ``concat`` node each, which is also what the ``present_key``/``present_value``
outputs are), and ``is_causal`` then aligns to the bottom right (query ``i`` sees keys up to ``past + i``). A
mask shorter than the keys is padded with -inf (False), as ONNX defines.

An external cache (``nonpad_kv_seqlen``: each batch's valid keys first) becomes a select mask computed on the
device. ``softcap`` and sliding windows (``left_window_size``, ``right_window_size``, aligned like
``is_causal``) run in the kernel. A node that uses the ``qk_matmul_output`` output or asks for another
``softmax_precision`` than float32, which one fused kernel cannot give, runs as the function body ONNX defines
for it instead (:mod:`.onnx_functions`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx

from kernelforge.graph.onnx_context import Context, Converter, NodeUnsupported
from kernelforge.ops import _expr, get_op

_BOOLEAN_OPS = {"equal", "less", "greater", "less_equal", "greater_equal", "logical_and", "logical_or",
                "logical_xor", "logical_not"}  # fmt: skip
_DATA_MOVES = {"reshape": 1, "transpose": 1, "slice": 1, "gather": 1, "concat": 0}
"""IR ops that move values without changing them -> how many leading inputs carry data (0: all)."""


def _boolean_ir(ctx: Context, name: str, depth: int = 0) -> bool:
    """Return whether an IR value holds a boolean tensor (0.0 / 1.0).

    That is a bool graph input, or a tensor moved or computed by a comparison or logic op from one. Other values
    are taken as float: an ``attn_mask`` is bool or float.
    """
    graph = ctx.graph
    if name in graph.inputs:
        return graph.dtype(name) == "bool"
    producer = next((n for n in reversed(graph.nodes) if name in n.outputs), None)
    if producer is None or depth > 64:
        return False
    if producer.op in _DATA_MOVES:
        data = producer.inputs[: _DATA_MOVES[producer.op] or len(producer.inputs)]
        return all(_boolean_ir(ctx, i, depth + 1) for i in data if i)
    if producer.op != "elementwise":
        return False
    try:
        tree, names = _expr.parse(producer.attrs["expr"])
    except _expr.ExpressionError:
        return False
    inputs = {f"v{k}": i for k, i in enumerate(producer.inputs)}

    def boolean(t: _expr.Node) -> bool:
        if t[0] == "in":
            return _boolean_ir(ctx, inputs[names[t[1][0]]], depth + 1)
        if t[0] in _BOOLEAN_OPS:
            return True
        if t[0] == "where":
            return boolean(t[3]) and boolean(t[4])
        if t[0] == "add":  # Expand broadcasts by adding zeros
            for this, other in ((t[2], t[3]), (t[3], t[2])):
                data = graph.const(inputs[names[other[1][0]]]) if other[0] == "in" else None
                if data is not None and not np.any(data):
                    return boolean(this)
        return False

    return boolean(tree)


def _is_boolean(ctx: Context, name: str) -> bool:
    data = ctx.const(name)
    if data is not None:
        return data.dtype == bool
    return _boolean_ir(ctx, ctx.ir(name))


def _heads(ctx: Context, name: str, heads: int, what: str) -> str:
    """Split a 3-D ``[batch, seq, heads * size]`` input into ``[batch, heads, seq, size]``."""
    b, s, width = ctx.shape(name)
    if heads < 1 or width % heads:
        raise ctx.fail(f"{what} of shape {(b, s, width)} does not split into {heads} heads")
    split = ctx.reshape(ctx.ir(name), (b, s, heads, width // heads))
    return ctx.emit("transpose", [split], {"perm": (0, 2, 1, 3)}, (b, heads, s, width // heads))


def _with_past(ctx: Context, past: str, new: str, what: str, out: str) -> str:
    """Return ``concat(past, new)`` along the sequence (written to ``out`` when that output is used)."""
    if not past:
        if out:  # present_* without a past: the new K or V as it stands
            ctx.emit("reshape", [new], {}, ctx.graph.values[new].shape, out=out)
        return new
    p, n = ctx.shape(past), ctx.graph.values[new].shape
    if len(p) != 4 or p[:2] != n[:2] or p[3] != n[3]:
        raise ctx.fail(f"past_{what} of shape {p} does not extend {what} of shape {n} along its sequence axis")
    return ctx.emit("concat", [ctx.ir(past), new], {"axis": 2}, out=out or None)


def _padded_mask(ctx: Context, mask: str, kv_len: int, boolean: bool) -> str:
    """Return ``mask`` padded along its last axis to ``kv_len`` keys with -inf (False: 0), as ONNX pads it."""
    shape = ctx.shape(mask)
    if shape[-1] > kv_len:
        raise ctx.fail(f"attn_mask of shape {shape} is longer than the {kv_len} keys along its last axis")
    if shape[-1] == kv_len:
        return ctx.ir(mask)
    fill = np.full((*shape[:-1], kv_len - shape[-1]), 0.0 if boolean else -np.inf, np.float32)
    return ctx.emit("concat", [ctx.ir(mask), ctx.add_const(f"{mask}_padding", fill)], {"axis": len(shape) - 1})


def _cache_mask(ctx: Context, lengths: str, attrs: dict[str, Any], scores: tuple[int, ...], select: str) -> str:
    """Return the select mask of an external KV cache: keys ``j < nonpad_kv_seqlen[b]`` (and ``select``'s).

    The cache holds each sequence's ``n = nonpad_kv_seqlen[b]`` keys first; its queries are the last ``Sq`` of
    them, so the causal limit and a window's edges align to ``n - Sq`` per batch: computed on the device, they
    move from the node's attributes into the mask (``attrs`` is updated).
    """
    b, _, sq, skv = scores
    if ctx.shape(lengths) != (b,):
        raise ctx.fail(f"nonpad_kv_seqlen of shape {ctx.shape(lengths)} is not one length per batch ({b},)")
    n = ctx.reshape(ctx.ir(lengths), (b, 1, 1, 1))
    keys = ctx.add_const("kv_positions", np.arange(skv, dtype=np.float32).reshape(1, 1, 1, skv))
    inputs = [n, keys]
    expr = "less(v1, v0)"
    limits = [(attrs.pop("causal", None), "less_equal"), (attrs.pop("lower", None), "greater_equal")]
    for offset, compare in limits:
        if offset is not None:
            if len(inputs) == 2:
                inputs.append(ctx.add_const("q_positions", np.arange(sq, dtype=np.float32).reshape(1, 1, sq, 1)))
            expr = f"logical_and({expr}, {compare}(v1, v2 + v0 + {float(offset - sq)!r}))"
    attrs["causal"] = None
    if select:
        inputs.append(select)
        expr = f"logical_and({expr}, v{len(inputs) - 1})"
    return ctx.emit("elementwise", inputs, {"expr": expr})  # [b, 1, 1 or sq, skv]


def _attention(ctx: Context, node: onnx.NodeProto) -> None:
    lengths = ctx.input(6)
    past_key, past_value = ctx.input(4), ctx.input(5)
    if bool(past_key) != bool(past_value):
        raise ctx.fail("past_key and past_value must be given together")
    if lengths and past_key:
        raise ctx.fail("nonpad_kv_seqlen (an external KV cache) cannot be combined with past_key and past_value")
    try:
        given = {a.name: ctx.attr(a.name) for a in node.attribute}
        attrs = get_op("attention").from_onnx(node.op_type, ctx.opset, given)
    except ValueError as exc:
        raise NodeUnsupported(str(exc)) from None
    q, k, v, mask = (ctx.input(i) for i in range(4))
    ranks = {len(ctx.shape(n)) for n in (q, k, v)}
    if ranks == {3}:
        q_heads, kv_heads = ctx.attr("q_num_heads"), ctx.attr("kv_num_heads")
        if q_heads is None or kv_heads is None:
            raise ctx.fail("3-D Q, K and V need the q_num_heads and kv_num_heads attributes")
        counts = (int(q_heads), int(kv_heads), int(kv_heads))
        inputs = [_heads(ctx, name, n, what) for name, n, what in zip((q, k, v), counts, "QKV", strict=True)]
    elif ranks == {4}:
        inputs = [ctx.ir(q), ctx.ir(k), ctx.ir(v)]
    else:
        raise ctx.fail(f"Q, K and V must be all 3-D or all 4-D, got {ctx.shape(q)}, {ctx.shape(k)}, {ctx.shape(v)}")
    presents = [node.output[i] if len(node.output) > i else "" for i in (1, 2)]
    inputs[1] = _with_past(ctx, past_key, inputs[1], "key", presents[0])
    inputs[2] = _with_past(ctx, past_value, inputs[2], "value", presents[1])
    past = ctx.shape(past_key)[2] if past_key else 0
    for limit in ("causal", "lower"):  # bottom-right aligned: query i is at position past + i
        if attrs.get(limit) is not None:
            attrs[limit] += past
    kv_len = ctx.graph.values[inputs[1]].shape[2]
    add = select = ""
    if mask:
        if _is_boolean(ctx, mask):
            select = _padded_mask(ctx, mask, kv_len, True)
        else:
            add = _padded_mask(ctx, mask, kv_len, False)
    if lengths:
        q_shape = ctx.graph.values[inputs[0]].shape
        select = _cache_mask(ctx, lengths, attrs, (q_shape[0], q_shape[1], q_shape[2], kv_len), select)
    out = node.output[0]
    if ranks == {4}:
        ctx.emit("attention", [*inputs, add, select], attrs, out=out)
        return
    y = ctx.emit("attention", [*inputs, add, select], attrs)
    b, heads, sq, dv = ctx.graph.values[y].shape
    merged = ctx.emit("transpose", [y], {"perm": (0, 2, 1, 3)}, (b, sq, heads, dv))
    ctx.reshape(merged, (b, sq, heads * dv), out=out)


CONVERTERS: dict[str, Converter] = {"Attention": _attention}
"""ONNX op type -> converter (merged into :data:`kernelforge.graph.onnx_ops.CONVERTERS`)."""
