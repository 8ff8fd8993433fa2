"""ONNX op converters: one function per ONNX op type, lowering a node to IR nodes of :mod:`.graph`.

:data:`CONVERTERS` is the table :mod:`kernelforge.graph.onnx_import` dispatches on. Semantics follow ONNX
opsets 9-28, including the attributes that became inputs (Clip, Pad, Squeeze/Unsqueeze, Reduce*, Resize).
Attribute values no converter supports are rejected earlier, by the importer's checks over the whole model.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import onnx
from onnx import helper

from kernelforge.errors import ShapeError
from kernelforge.graph.onnx_attention import CONVERTERS as ATTENTION
from kernelforge.graph.onnx_batchnorm import batchnorm_training
from kernelforge.graph.onnx_context import (
    Context,
    Converter,
    NodeUnsupported,
    flatten_shape,
    literal,
    norm_axis,
    reshape_target,
    squeeze_shape,
    unsqueeze_shape,
)
from kernelforge.graph.onnx_elementwise import CONVERTERS as ELEMENTWISE
from kernelforge.graph.onnx_gather import CONVERTERS as GATHER
from kernelforge.graph.onnx_pool_indices import with_indices
from kernelforge.graph.onnx_quant import converters as quant_converters
from kernelforge.graph.onnx_reduce import CONVERTERS as REDUCE
from kernelforge.graph.onnx_reduce import layernorm_statistics
from kernelforge.graph.onnx_resize import CONVERTERS as RESIZE
from kernelforge.graph.onnx_scan import CONVERTERS as SCAN
from kernelforge.graph.onnx_slice import CONVERTERS as SLICING
from kernelforge.graph.onnx_windows import lift_windows
from kernelforge.ops import OPS, get_op
from kernelforge.ops._attrs import resolve_auto_pad
from kernelforge.ops._epilogue import Activation
from kernelforge.ops._expr import broadcast_shape


def _shape_op(ctx: Context, compute: Callable[[tuple[int, ...]], tuple[int, ...]]) -> None:
    x = ctx.input(0)
    try:
        shape = compute(ctx.shape(x))
    except ValueError as exc:
        raise ctx.fail(str(exc)) from None
    if shape == ctx.shape(x):
        ctx.alias(ctx.node.output[0], x)
    else:
        ctx.reshape(ctx.ir(x), shape, out=ctx.node.output[0])


def _reshape_shape(ctx: Context) -> tuple[int, ...]:
    """Return the Reshape node's static output shape."""
    target = ctx.const_ints(1, "shape")
    if target is None:
        raise ctx.fail("Reshape needs its shape input")
    try:
        return reshape_target(ctx.shape(ctx.input(0)), target, int(ctx.attr("allowzero", 0)))
    except ValueError as exc:
        raise ctx.fail(str(exc)) from None


def _reshape(ctx: Context, node: onnx.NodeProto) -> None:
    out = _reshape_shape(ctx)
    _shape_op(ctx, lambda s: out)


def _flatten(ctx: Context, node: onnx.NodeProto) -> None:
    _shape_op(ctx, lambda s: flatten_shape(s, int(ctx.attr("axis", 1))))


def _squeeze(ctx: Context, node: onnx.NodeProto) -> None:
    axes = ctx.axes(1, 13)
    _shape_op(ctx, lambda s: squeeze_shape(s, axes))


def _unsqueeze(ctx: Context, node: onnx.NodeProto) -> None:
    axes = ctx.axes(1, 13)
    if axes is None:
        raise ctx.fail("Unsqueeze needs axes")
    _shape_op(ctx, lambda s: unsqueeze_shape(s, axes))


def _identity(ctx: Context, node: onnx.NodeProto) -> None:
    ctx.alias(node.output[0], node.input[0])


# --- dense ops -----------------------------------------------------------------------------------------------


def _gemm(ctx: Context, node: onnx.NodeProto) -> None:
    a, b, c = ctx.input(0), ctx.input(1), ctx.input(2)
    alpha, beta = float(ctx.attr("alpha", 1.0)), float(ctx.attr("beta", 1.0))
    trans_a, trans_b = bool(ctx.attr("transA", 0)), bool(ctx.attr("transB", 0))
    a_shape, b_shape = ctx.shape(a), ctx.shape(b)
    if len(a_shape) != 2 or len(b_shape) != 2:
        raise ctx.fail(f"Gemm needs 2-D A and B, got {a_shape} and {b_shape}")
    m, k = a_shape[::-1] if trans_a else a_shape
    n, kb = b_shape if trans_b else b_shape[::-1]
    if k != kb:
        raise ctx.fail(f"A {a_shape} (transA={int(trans_a)}) and B {b_shape} (transB={int(trans_b)}) disagree on K")
    a_data, b_data, c_data = ctx.const(a), ctx.const(b), ctx.const(c)
    if a_data is not None and trans_a:
        a_ir = ctx.add_const(a, a_data.T)
    elif trans_a:
        a_ir = ctx.emit("transpose", [ctx.ir(a)], {"perm": (1, 0)}, (m, k))
    else:
        a_ir = ctx.ir(a)
    scaled = alpha == 1.0 or b_data is not None
    b_ir = ctx.add_const(b, b_data * alpha) if b_data is not None and alpha != 1.0 else ctx.ir(b)
    bias, rest = "", ""
    if c and beta != 0.0:
        c_shape = ctx.shape(c)
        if c_data is not None:
            c_data = np.asarray(c_data, np.float64) * beta
            row_const = len(c_shape) < 2 or c_shape[0] == 1
            if scaled and row_const:
                bias = ctx.add_const(c, np.broadcast_to(c_data, (m, n))[0])
            else:
                rest = ctx.add_const(c, c_data)
        else:
            rest = ctx.ir(c)
    out = node.output[0]
    plain = (scaled and not rest) or None
    inputs = [a_ir, b_ir, bias] if bias else [a_ir, b_ir]
    attrs = {"trans_b": trans_b, "activation": Activation()}
    y = ctx.emit("gemm", inputs, attrs, (m, n), out if plain else None)
    if plain:
        return
    parts = ["v0" if scaled else f"v0 * {literal(alpha)}"]
    if rest:
        parts.append("v1" if c_data is not None or beta == 1.0 else f"v1 * {literal(beta)}")
    shape = broadcast_shape({"y": (m, n), "c": ctx.graph.values[rest].shape}) if rest else (m, n)
    if shape != (m, n):
        raise ctx.fail(f"C of shape {ctx.shape(c)} does not broadcast to the {m}x{n} output")
    ctx.emit("elementwise", [y, rest] if rest else [y], {"expr": " + ".join(parts)}, shape, out)


def _broadcast_ir(ctx: Context, x_ir: str, shape: tuple[int, ...], target: tuple[int, ...]) -> str:
    """Return IR value ``x_ir`` (logically of ``shape``) broadcast to ``target``: x + zeros of the grown axes."""
    if tuple(shape) == tuple(target):
        return x_ir
    padded = (1,) * (len(target) - len(shape)) + tuple(shape)
    x4 = ctx.reshape(x_ir, padded)
    zeros = np.zeros([t if p == 1 else 1 for p, t in zip(padded, target, strict=True)], np.float32)
    grow = ctx.add_const(f"{ctx.node.output[0]}_broadcast", zeros)
    return ctx.emit("elementwise", [x4, grow], {"expr": "v0 + v1"}, target)


def _matmul(ctx: Context, node: onnx.NodeProto) -> None:
    a, b = ctx.input(0), ctx.input(1)
    a_shape, b_shape = ctx.shape(a), ctx.shape(b)
    if not a_shape or not b_shape:
        raise ctx.fail(f"MatMul inputs must have rank >= 1, got {a_shape} and {b_shape}")
    a2 = (1, *a_shape) if len(a_shape) == 1 else a_shape
    b2 = (*b_shape, 1) if len(b_shape) == 1 else b_shape
    if a2[-1] != b2[-2]:
        raise ctx.fail(f"MatMul shapes {a_shape} and {b_shape} disagree on K")
    m, k, n = a2[-2], a2[-1], b2[-1]
    a_lead, b_lead = a2[:-2], b2[:-2]
    lead = broadcast_shape({"a": a_lead, "b": b_lead}) if a_lead or b_lead else ()
    out_shape = (*lead, m, n)
    if len(a_shape) == 1:
        out_shape = out_shape[:-2] + out_shape[-1:]
    if len(b_shape) == 1:
        out_shape = out_shape[:-1]
    out = node.output[0]
    a_ir, b_ir = ctx.ir(a), ctx.ir(b)
    attrs = {"trans_b": False, "activation": Activation()}
    if math.prod(b_lead) == 1:
        rows = math.prod(a2[:-1])
        inputs = [ctx.reshape(a_ir, (rows, k)), ctx.reshape(b_ir, (k, n))]
        shape: tuple[int, ...] = (rows, n)
    else:
        # batch dims broadcast: an operand with fewer (or size-1) batch dims is expanded first
        batch = math.prod(lead)
        a_full = _broadcast_ir(ctx, a_ir, a2, (*lead, m, k))
        b_full = _broadcast_ir(ctx, b_ir, b2, (*lead, k, n))
        inputs, shape = [ctx.reshape(a_full, (batch, m, k)), ctx.reshape(b_full, (batch, k, n))], (batch, m, n)
    direct = shape == out_shape
    y = ctx.emit("gemm", inputs, attrs, shape, out if direct else None)
    if not direct:
        ctx.reshape(y, out_shape, out=out)


# --- windowed ops --------------------------------------------------------------------------------------------


def _pair(ctx: Context, name: str, default: int) -> tuple[int, int]:
    value = ctx.attr(name)
    if value is None:
        return (default, default)
    if len(value) != 2:
        raise NodeUnsupported(f"{name}={list(value)}: only 2-D windows are supported")
    return (int(value[0]), int(value[1]))


def _window_pads(
    ctx: Context, hw: tuple[int, int], kernel: tuple[int, int], strides: tuple[int, int], dils: tuple[int, int]
) -> tuple[int, int, int, int]:
    """Return ``(t, l, b, r)`` from ``auto_pad`` (SAME/VALID) or the ``pads`` attribute."""
    auto_pad = ctx.attr("auto_pad", "NOTSET")
    try:
        spans = [resolve_auto_pad(ctx.origin, auto_pad, *axis) for axis in zip(hw, kernel, strides, dils, strict=True)]
    except ShapeError as exc:
        raise NodeUnsupported(str(exc)) from None
    if spans[0] is not None and spans[1] is not None:
        (t, b), (left, r) = spans[0], spans[1]
        return (t, left, b, r)
    pads = [int(p) for p in ctx.attr("pads", [0, 0, 0, 0])]
    if len(pads) != 4:
        raise NodeUnsupported(f"pads={pads}: only 2-D windows are supported")
    return (pads[0], pads[1], pads[2], pads[3])


def _rank4(ctx: Context, name: str) -> tuple[int, int, int, int]:
    shape = ctx.shape(name)
    if len(shape) != 4:
        raise NodeUnsupported(f"input {name!r} has shape {shape}: only 4-D (2-D spatial) tensors are supported")
    return (shape[0], shape[1], shape[2], shape[3])


def _conv(ctx: Context, node: onnx.NodeProto) -> None:
    x, w, bias = ctx.input(0), ctx.input(1), ctx.input(2)
    _, c, h, wd = _rank4(ctx, x)
    m, cg, kh, kw = _rank4(ctx, w)
    kernel = _pair(ctx, "kernel_shape", 0)
    if kernel != (0, 0) and kernel != (kh, kw):
        raise ctx.fail(f"kernel_shape {kernel} differs from the weight's {(kh, kw)}")
    strides, dils, group = _pair(ctx, "strides", 1), _pair(ctx, "dilations", 1), int(ctx.attr("group", 1))
    pads = _window_pads(ctx, (h, wd), (kh, kw), strides, dils)
    if cg * group != c:
        raise ctx.fail(f"weight {ctx.shape(w)} with group {group} does not fit {c} input channels")
    if bias and ctx.shape(bias) != (m,):
        raise ctx.fail(f"bias of shape {ctx.shape(bias)} must be [{m}]")
    attrs = {"strides": strides, "pads": pads, "dilations": dils, "group": group, "activation": Activation()}
    inputs = [ctx.ir(x), ctx.ir(w)] + ([ctx.ir(bias)] if bias else [])
    ctx.emit("conv2d", inputs, attrs, out=node.output[0])


def _pool(ctx: Context, node: onnx.NodeProto) -> None:
    x = ctx.input(0)
    _, _, h, w = _rank4(ctx, x)
    mode = "max" if "Max" in node.op_type else "avg"
    if node.op_type.startswith("Global"):
        fields: dict[str, Any] = {"kernel_shape": (h, w), "strides": (1, 1), "pads": (0, 0, 0, 0)}
        fields.update(dilations=(1, 1), ceil_mode=0, count_include_pad=0, global_=True)
    else:
        kernel = _pair(ctx, "kernel_shape", 0)
        strides, dils = _pair(ctx, "strides", 1), _pair(ctx, "dilations", 1)
        fields = {"kernel_shape": kernel, "strides": strides, "pads": _window_pads(ctx, (h, w), kernel, strides, dils)}
        cip = int(ctx.attr("count_include_pad", 0)) if mode == "avg" else 0
        fields.update(dilations=dils, ceil_mode=int(ctx.attr("ceil_mode", 0)), count_include_pad=cip, global_=False)
    ctx.emit("pool2d", [ctx.ir(x)], {"mode": mode, **fields}, out=node.output[0])


def _batchnorm(ctx: Context, node: onnx.NodeProto) -> None:
    x = ctx.input(0)
    shape = ctx.shape(x)
    if len(shape) < 2:
        raise ctx.fail(f"input of shape {shape} has no channel axis")
    for k in range(1, 5):
        if ctx.shape(ctx.input(k)) != (shape[1],):
            raise ctx.fail(f"input {k} of shape {ctx.shape(ctx.input(k))} must be [{shape[1]}]")
    if int(ctx.attr("training_mode", 0)):
        batchnorm_training(ctx, node)
        return
    inputs = [ctx.ir(ctx.input(k)) for k in range(5)]
    ctx.emit("batchnorm", inputs, {"epsilon": float(ctx.attr("epsilon", 1e-5))}, shape, node.output[0])


def _lrn(ctx: Context, node: onnx.NodeProto) -> None:
    x = node.input[0]
    n, c, h, w = _rank4(ctx, x)
    size = int(ctx.attr("size", 0))
    if size < 1:
        raise ctx.fail(f"size={size} must be >= 1")
    alpha, beta, bias = float(ctx.attr("alpha", 1e-4)), float(ctx.attr("beta", 0.75)), float(ctx.attr("bias", 1.0))
    # ONNX's window of output channel i: input channels i - floor((size-1)/2) .. i + ceil((size-1)/2)
    lo, hi = (size - 1) // 2, -(-(size - 1) // 2)
    out_c, in_c = np.meshgrid(np.arange(c), np.arange(c), indexing="ij")
    band = ((in_c >= out_c - lo) & (in_c <= out_c + hi)).astype(np.float32).reshape(c, c, 1, 1)
    x_ir = ctx.ir(x)
    sq = ctx.emit("elementwise", [x_ir], {"expr": "v0 * v0"}, (n, c, h, w))
    attrs = {"strides": (1, 1), "pads": (0, 0, 0, 0), "dilations": (1, 1), "group": 1, "activation": Activation()}
    s = ctx.emit("conv2d", [sq, ctx.add_const(f"{node.output[0]}_band", band)], attrs, (n, c, h, w))
    expr = f"v0 / pow({literal(bias)} + {literal(alpha / size)} * v1, {literal(beta)})"
    ctx.emit("elementwise", [x_ir, s], {"expr": expr}, (n, c, h, w), node.output[0])


# --- data movement -------------------------------------------------------------------------------------------


def _dropout(ctx: Context, node: onnx.NodeProto) -> None:
    """Inference Dropout: the input itself, and a mask of all True; training with a ratio > 0 is random."""
    ratio = ctx.const(ctx.input(1))
    training = ctx.const(ctx.input(2))
    if training is not None and bool(training) and (ratio is None or float(ratio) > 0):
        raise NodeUnsupported("training_mode=1 with a ratio > 0 (random dropout) is not supported")
    _identity(ctx, node)
    if len(node.output) > 1 and node.output[1]:
        ctx.consts[node.output[1]] = np.ones(ctx.shape(node.input[0]), bool)


def _tile(ctx: Context, node: onnx.NodeProto) -> None:
    """Tile of a runtime tensor: per repeated axis, a concat of copies (repeats is a constant)."""
    repeats = ctx.const_ints(1, "repeats")
    shape = ctx.shape(node.input[0])
    if repeats is None or len(repeats) != len(shape) or min(repeats, default=1) < 1:
        raise ctx.fail(f"Tile repeats {repeats} must be one integer >= 1 per axis of {shape}")
    current, todo = ctx.ir(node.input[0]), [(a, r) for a, r in enumerate(repeats) if r > 1]
    if not todo:
        ctx.alias(node.output[0], node.input[0])
        return
    for k, (axis, r) in enumerate(todo):
        last = k == len(todo) - 1
        current = ctx.emit("concat", [current] * r, {"axis": axis}, out=node.output[0] if last else None)


def _concat(ctx: Context, node: onnx.NodeProto) -> None:
    inputs = [i for i in node.input if i and math.prod(ctx.shape(i)) > 0]
    shapes = tuple(ctx.shape(i) for i in inputs)
    if len(inputs) == 1:
        ctx.alias(node.output[0], inputs[0])
        return
    try:
        axis = norm_axis(int(ctx.attr("axis", 0)), len(shapes[0]))
    except ValueError as exc:
        raise ctx.fail(str(exc)) from None
    ctx.emit("concat", [ctx.ir(i) for i in inputs], {"axis": axis}, out=node.output[0])


def _transpose(ctx: Context, node: onnx.NodeProto) -> None:
    x, perm = node.input[0], ctx.attr("perm")
    x_ir = ctx.ir(x)
    axes = ctx.kernel_problem("transpose", [x_ir], {"perm": perm}).axes
    if axes == tuple(range(len(axes))):
        ctx.alias(node.output[0], x)
        return
    ctx.emit("transpose", [x_ir], {"perm": axes}, out=node.output[0])


def _softmax(ctx: Context, node: onnx.NodeProto) -> None:
    x = node.input[0]
    shape = ctx.shape(x)
    try:
        axis = norm_axis(int(ctx.attr("axis", -1 if ctx.opset >= 13 else 1)), len(shape))
    except ValueError as exc:
        raise ctx.fail(str(exc)) from None
    x_ir = ctx.ir(x)
    if ctx.opset >= 13 or axis == len(shape) - 1:
        ctx.emit("softmax", [x_ir], {"axis": axis}, out=node.output[0])
        return
    # opset < 13 normalises over all axes from `axis` on: a softmax of the 2-D view's rows
    rows = (math.prod(shape[:axis]), math.prod(shape[axis:]))
    y = ctx.emit("softmax", [ctx.reshape(x_ir, rows)], {"axis": 1}, rows)
    ctx.reshape(y, shape, out=node.output[0])


def _pad(ctx: Context, node: onnx.NodeProto) -> None:
    x = node.input[0]
    shape = ctx.shape(x)
    mode = ctx.attr("mode", "constant")
    if ctx.opset < 11:
        pads, value = [int(p) for p in ctx.attr("pads", [])], float(ctx.attr("value", 0.0))
    else:
        pads = ctx.const_ints(1, "pads") or []
        data = ctx.const(ctx.input(2))
        if ctx.input(2) and data is None:
            raise NodeUnsupported("constant_value needs a runtime value; only a constant is supported")
        value = 0.0 if data is None or data.size == 0 else float(data.reshape(-1)[0])
        axes = ctx.const_ints(3, "axes")
        if axes is not None:
            full = [0] * (2 * len(shape))
            for j, a in enumerate(axes):
                full[a % len(shape)], full[a % len(shape) + len(shape)] = pads[j], pads[j + len(axes)]
            pads = full
    x_ir = ctx.ir(x)
    attrs = {"pads": tuple(pads), "mode": mode, "constant_value": value}
    ctx.kernel_problem("pad", [x_ir], attrs)  # checks the pads before an all-zero one becomes an alias
    if not any(pads):
        ctx.alias(node.output[0], x)
        return
    ctx.emit("pad", [x_ir], attrs, out=node.output[0])


# --- ops that run as they stand ------------------------------------------------------------------------------


def node_attrs(node: onnx.NodeProto) -> dict[str, Any]:
    """Return a node's attributes as Python values (strings decoded)."""
    attrs: dict[str, Any] = {}
    for attribute in node.attribute:
        value = helper.get_attribute_value(attribute)
        attrs[attribute.name] = value.decode() if isinstance(value, bytes) else value
    return attrs


def _direct(op: str) -> Converter:
    """Return the converter of an ONNX op that one registered op runs as it stands (its spec's ``onnx_ops``)."""

    def convert(ctx: Context, node: onnx.NodeProto) -> None:
        try:
            attrs = get_op(op).from_onnx(node.op_type, ctx.opset, node_attrs(node))
        except ValueError as exc:
            raise NodeUnsupported(str(exc)) from None
        ctx.emit(op, [ctx.ir(name) if name else "" for name in node.input], attrs, out=node.output[0])

    return convert


def _layernorm(ctx: Context, node: onnx.NodeProto) -> None:
    _direct("layernorm")(ctx, node)
    layernorm_statistics(ctx, node)  # Mean and InvStdDev, where the node names them


DIRECT: dict[str, str] = {onnx_op: name for name in OPS for onnx_op in get_op(name).onnx_ops}
"""ONNX op type -> the registered op that runs it as it stands (from each spec's ``onnx_ops``)."""

# --- the table -----------------------------------------------------------------------------------------------

CONVERTERS: dict[str, Converter] = {
    **ELEMENTWISE,
    **GATHER,
    **SLICING,
    **REDUCE,
    **SCAN,
    **ATTENTION,
    "Conv": _conv,
    "Gemm": _gemm,
    "MatMul": _matmul,
    "BatchNormalization": _batchnorm,
    **dict.fromkeys(("MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool"), _pool),
    "Concat": _concat,
    "Tile": _tile,
    "Reshape": _reshape,
    "Flatten": _flatten,
    "Squeeze": _squeeze,
    "Unsqueeze": _unsqueeze,
    "Transpose": _transpose,
    "Softmax": _softmax,
    "Dropout": _dropout,
    "Identity": _identity,
    "LRN": _lrn,
    "Pad": _pad,
    **RESIZE,
    "LayerNormalization": _layernorm,
    **quant_converters(matmul=_matmul, conv=_conv),
}
CONVERTERS.update({onnx_op: _direct(op) for onnx_op, op in DIRECT.items() if onnx_op not in CONVERTERS})
CONVERTERS.update(lift_windows(CONVERTERS))  # 1-D windows run as 2-D ones over H = 1
CONVERTERS["MaxPool"] = with_indices(CONVERTERS["MaxPool"])  # its Indices output, where read
"""ONNX op type -> converter; ops that only fold to constants live in onnx_import's folder table."""
