"""ONNX reductions and instance normalization: Reduce* (opsets 9-28) and InstanceNormalization.

Every Reduce* node becomes one ``reduce`` node (:mod:`kernelforge.ops.reduce`) over a run of adjacent axes;
other axis sets are transposed together first (kept axes, then reduced ones). A reduction over nothing (empty
axes with ``noop_with_empty_axes``, or axes of size 1) is the kind's value of one element: the tensor itself,
or ``abs``, ``v * v`` or ``log`` of it as a fusable elementwise program. Constant inputs fold here too
(:data:`FOLDERS`, merged into :data:`kernelforge.graph.onnx_fold.FOLDERS`).

InstanceNormalization normalises each (n, c) over the spatial axes with four kernels that each read their
tensor once: ``reduce`` (mean), ``x - mean``, ``reduce`` (sum of squares of that), then ``d / sqrt(ss / L + eps)
* scale[c] + B[c]``, an elementwise node that fuses with what follows. (One ``layernorm`` over the ``[N*C, H*W]``
view would walk each long row three times per output fragment in GLSL: 440 ms against 1.7 ms for a 1x64x64x64
input on llvmpipe.) PyTorch's GroupNorm export (``Reshape(N, G, -1) -> InstanceNormalization(ones, zeros) ->
Reshape -> Mul -> Add``) runs the same way, its unit scale and zero B left out.
"""

from __future__ import annotations

import math

import numpy as np
import onnx

from kernelforge.errors import ShapeError
from kernelforge.graph.onnx_context import Context, Converter, literal, norm_axis
from kernelforge.ops.reduce import ReduceProblem, reduce_array

__all__ = ["CONST_INPUTS", "CONVERTERS", "FOLDERS", "KINDS"]

KINDS: dict[str, str] = {
    "ReduceSum": "sum",
    "ReduceMean": "mean",
    "ReduceMax": "max",
    "ReduceMin": "min",
    "ReduceProd": "prod",
    "ReduceL1": "l1",
    "ReduceL2": "l2",
    "ReduceSumSquare": "sum_square",
    "ReduceLogSum": "log_sum",
    "ReduceLogSumExp": "log_sum_exp",
}
"""ONNX op type -> the ``reduce`` kind computing it."""

# a reduction over one element: the element itself, or this program of it
_ONE_ELEMENT = {"l1": "abs(v0)", "l2": "abs(v0)", "sum_square": "v0 * v0", "log_sum": "log(v0)"}


def _axes_since(op_type: str) -> int:
    """Return the opset from which ``op_type`` takes ``axes`` as an input (ReduceSum: 13, the others: 18)."""
    return 13 if op_type == "ReduceSum" else 18


def _reduction(ctx: Context, rank: int) -> tuple[list[int] | None, bool]:
    """Return the current Reduce* node's reduced axes (normalised, sorted; None: none) and ``keepdims``.

    Empty or absent axes mean every axis, or none with ``noop_with_empty_axes`` (opsets that have it).

    Raises:
        GraphError: Naming the node for an axis out of range.
    """
    since = _axes_since(ctx.node.op_type)
    axes = ctx.axes(1, since)
    keep = bool(ctx.attr("keepdims", 1))
    if not axes:
        if ctx.opset >= since and int(ctx.attr("noop_with_empty_axes", 0)):
            return None, keep
        return list(range(rank)), keep
    try:
        return sorted({norm_axis(a, rank) for a in axes}), keep
    except ValueError as exc:
        raise ctx.fail(str(exc)) from None


def _reduce(ctx: Context, node: onnx.NodeProto) -> None:
    kind = KINDS[node.op_type]
    x, out = node.input[0], node.output[0]
    shape = ctx.shape(x)
    axes, keep = _reduction(ctx, len(shape))
    reduced = axes or []
    out_shape = tuple(1 if i in reduced else d for i, d in enumerate(shape) if keep or i not in reduced)
    if math.prod(shape[a] for a in reduced) == 1:
        _one_element(ctx, x, kind, out_shape)
        return
    x_ir = ctx.ir(x)
    direct = True
    try:
        ReduceProblem(shape, tuple(reduced), kind)
    except ShapeError:  # not adjacent: kept axes first, reduced ones last
        kept = [a for a in range(len(shape)) if a not in reduced]
        perm = tuple(kept + reduced)
        shape = tuple(shape[a] for a in perm)
        x_ir = ctx.emit("transpose", [x_ir], {"perm": perm}, shape)
        reduced, direct = list(range(len(kept), len(shape))), False
    y = ctx.emit("reduce", [x_ir], {"axes": tuple(reduced), "kind": kind}, None, out if keep and direct else None)
    if not (keep and direct):  # the kept axes keep their order: placing the reduced ones is a view
        ctx.reshape(y, out_shape, out=out)


def _one_element(ctx: Context, x: str, kind: str, out_shape: tuple[int, ...]) -> None:
    """Reduce over axes of size 1 (or none): each output is the kind's value of one element."""
    out = ctx.node.output[0]
    same = out_shape == ctx.shape(x)
    if kind in _ONE_ELEMENT:
        program = _ONE_ELEMENT[kind]
        y = ctx.elementwise([x], lambda v: program.replace("v0", v[0]), out if same else None)
        if not same:
            ctx.reshape(y, out_shape, out=out)
    elif same:
        ctx.alias(out, x)
    else:
        ctx.reshape(ctx.ir(x), out_shape, out=out)


def _fold_reduce(ctx: Context, node: onnx.NodeProto, inputs: list[np.ndarray]) -> list[np.ndarray]:
    data = inputs[0]
    axes, keep = _reduction(ctx, data.ndim)
    kind = KINDS[node.op_type]
    if axes is None:  # a reduction over nothing: each element on its own
        return [reduce_array(data.reshape(*data.shape, 1), [data.ndim], kind, keepdims=False)]
    return [reduce_array(data, axes, kind, keepdims=keep)]


def _instance_norm(ctx: Context, node: onnx.NodeProto) -> None:
    x, scale, bias = ctx.input(0), ctx.input(1), ctx.input(2)
    out = node.output[0]
    shape = ctx.shape(x)
    if len(shape) < 3:
        raise ctx.fail(f"input must be (N, C, D1, ...), got {shape}")
    c, spatial = shape[1], tuple(range(2, len(shape)))
    for what, name in (("scale", scale), ("B", bias)):
        if not name or ctx.shape(name) != (c,):
            raise ctx.fail(f"{what} of shape {ctx.shape(name) if name else None} must be [{c}]")
    epsilon = float(ctx.attr("epsilon", 1e-5))
    if not (math.isfinite(epsilon) and epsilon >= 0):
        raise ctx.fail(f"epsilon={epsilon!r} must be finite and >= 0")
    # the mean, the deviations, their sum of squares: the variance of the centred values (as layernorm's
    # default) and every kernel reads its tensor once, where one layernorm walks each long row three times
    x_ir = ctx.ir(x)
    mean = ctx.emit("reduce", [x_ir], {"axes": spatial, "kind": "mean"})
    centred = ctx.emit("elementwise", [x_ir, mean], {"expr": "v0 - v1"}, shape)
    squares = ctx.emit("reduce", [centred], {"axes": spatial, "kind": "sum_square"})
    length = literal(float(math.prod(shape[2:])))
    expr = f"v0 / sqrt(v1 / {length} + {literal(epsilon)})"
    inputs = [centred, squares]
    s_data, b_data = ctx.const(scale), ctx.const(bias)
    channels = (c,) + (1,) * len(spatial)  # broadcasts over the spatial axes
    for name, data, op in ((scale, s_data, "*"), (bias, b_data, "+")):
        if data is not None and bool(np.all(data == (1 if op == "*" else 0))):
            continue  # GroupNorm's export: scale 1, B 0 (its affine follows as a Mul and an Add)
        inputs.append(ctx.reshape(ctx.ir(name), channels))
        expr = f"{expr} {op} v{len(inputs) - 1}"
    ctx.emit("elementwise", inputs, {"expr": expr}, shape, out)


def _log_softmax(ctx: Context, node: onnx.NodeProto) -> None:
    """LogSoftmax as x - logsumexp(x): the reduction subtracts the max first, so no exp overflows.

    Before opset 13 the input is viewed as 2-D at ``axis`` (default 1), which is the reduction over every axis
    from ``axis`` on; from 13, over ``axis`` (default -1) alone.
    """
    x = ctx.input(0)
    shape = ctx.shape(x)
    try:
        axis = norm_axis(int(ctx.attr("axis", -1 if ctx.opset >= 13 else 1)), len(shape))
    except ValueError as exc:
        raise ctx.fail(str(exc)) from None
    axes = (axis,) if ctx.opset >= 13 else tuple(range(axis, len(shape)))
    x_ir = ctx.ir(x)
    lse = ctx.emit("reduce", [x_ir], {"axes": axes, "kind": "log_sum_exp"})
    ctx.emit("elementwise", [x_ir, lse], {"expr": "v0 - v1"}, shape, node.output[0])


def _rms_norm(ctx: Context, node: onnx.NodeProto) -> None:
    """RMSNormalization (opset 23): x / sqrt(mean(x^2) + epsilon) * scale over the axes from ``axis`` on."""
    x, scale = ctx.input(0), ctx.input(1)
    shape = ctx.shape(x)
    try:
        axis = norm_axis(int(ctx.attr("axis", -1)), len(shape))
    except ValueError as exc:
        raise ctx.fail(str(exc)) from None
    if int(ctx.attr("stash_type", 1)) != 1:
        raise ctx.fail(f"stash_type={ctx.attr('stash_type')} is not supported (only 1: float32)")
    epsilon = float(ctx.attr("epsilon", 1e-5))
    if not (math.isfinite(epsilon) and epsilon >= 0):
        raise ctx.fail(f"epsilon={epsilon!r} must be finite and >= 0")
    axes = tuple(range(axis, len(shape)))
    x_ir = ctx.ir(x)
    squares = ctx.emit("reduce", [x_ir], {"axes": axes, "kind": "sum_square"})
    length = literal(float(math.prod(shape[axis:])))
    expr = f"v0 / sqrt(v1 / {length} + {literal(epsilon)}) * v2"
    ctx.emit("elementwise", [x_ir, squares, ctx.ir(scale)], {"expr": expr}, shape, node.output[0])


CONVERTERS: dict[str, Converter] = {
    **dict.fromkeys(KINDS, _reduce),
    "InstanceNormalization": _instance_norm,
    "LogSoftmax": _log_softmax,
    "RMSNormalization": _rms_norm,
}
"""ONNX op type -> converter (merged into :data:`kernelforge.graph.onnx_ops.CONVERTERS`)."""


def layernorm_statistics(ctx: Context, node: onnx.NodeProto) -> None:
    """Emit LayerNormalization's optional ``Mean`` and ``InvStdDev`` outputs, where the node names them.

    They are ``mean(x)`` and ``1 / sqrt(mean((x - mean)^2) + epsilon)`` over the normalised axes, kept as 1s
    (float32 statistics: ``stash_type`` 1). The ``layernorm`` kernel does not write them, so two mean
    reductions beside it do; a model that ignores them (every exported one) runs none of this.
    """
    names = [node.output[i] if len(node.output) > i else "" for i in (1, 2)]
    if not any(names):
        return
    x = node.input[0]
    shape = ctx.shape(x)
    axis = norm_axis(int(ctx.attr("axis", -1)), len(shape))  # in range: the layernorm node took it
    epsilon = float(np.float32(ctx.attr("epsilon", 1e-5)))
    axes = {"axes": tuple(range(axis, len(shape))), "kind": "mean"}
    x_ir = ctx.ir(x)
    mean = ctx.emit("reduce", [x_ir], axes, None, names[0] or None)
    if names[1]:
        squares = ctx.emit("elementwise", [x_ir, mean], {"expr": "(v0-v1)*(v0-v1)"}, shape)
        variance = ctx.emit("reduce", [squares], axes)
        expr = f"1.0/sqrt(v0+{literal(epsilon)})"
        ctx.emit("elementwise", [variance], {"expr": expr}, ctx.graph.values[variance].shape, names[1])


FOLDERS = dict.fromkeys(KINDS, _fold_reduce)
"""ONNX op type -> numpy evaluation when every input is a constant (merged into ``onnx_fold.FOLDERS``)."""

CONST_INPUTS: dict[str, tuple[int, ...]] = dict.fromkeys(KINDS, (1,))
"""The ``axes`` input must be a constant: every shape is static."""
