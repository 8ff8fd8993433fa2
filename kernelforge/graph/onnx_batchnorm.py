"""BatchNormalization in training mode (opset 14+, ``training_mode=1``): batch statistics and running averages.

Y normalises x with the batch's own statistics per channel (axis 1), taken over every other axis: the mean and
the population variance, as onnx.reference computes them. The optional outputs ``running_mean`` and
``running_var`` are ``input_mean * momentum + batch_mean * (1 - momentum)`` and likewise for the variance.

x is viewed as ``[N, C, S]`` (S the product of the spatial axes: a free view), so each statistic is a
reduction over N and S: one ``reduce`` kernel where those axes are adjacent once size-1 axes are left out (N or
S of 1, or C of 1), else one over S then one over N of its ``[N, C, 1]`` result (equal counts, so the mean of
the means is the mean). The kernels: the mean, ``d = x - mean``, the sum of squares of d (the variance of the
centred values, as the instance norm's), then ``Y = d / sqrt(ss / count + epsilon) * scale + B``, an
elementwise node that fuses with what follows, and one small elementwise kernel per running statistic the
model reads.
"""

from __future__ import annotations

import math

import onnx

from kernelforge.errors import ShapeError
from kernelforge.graph.onnx_context import Context, literal
from kernelforge.ops.reduce import ReduceProblem

__all__ = ["batchnorm_training"]


def _over_batch(ctx: Context, value: str, shape: tuple[int, int, int], kind: str, then: str) -> str:
    """Reduce IR value ``value`` of ``[N, C, S]`` over N and S to ``[1, C, 1]``.

    One ``kind`` reduction where the kernel takes both axes at once; else ``kind`` over S, then ``then`` over N.
    """
    try:
        ReduceProblem(shape, (0, 2), kind)
    except ShapeError:  # N and S both above 1 around C above 1: not adjacent
        per_sample = ctx.emit("reduce", [value], {"axes": (2,), "kind": kind})
        return ctx.emit("reduce", [per_sample], {"axes": (0,), "kind": then})
    return ctx.emit("reduce", [value], {"axes": (0, 2), "kind": kind})


def batchnorm_training(ctx: Context, node: onnx.NodeProto) -> None:
    """Convert a ``training_mode=1`` node whose five inputs the caller checked (x ``[N, C, ...]``, four ``[C]``)."""
    x = ctx.input(0)
    shape = ctx.shape(x)
    n, c, s = shape[0], shape[1], math.prod(shape[2:])
    epsilon, momentum = float(ctx.attr("epsilon", 1e-5)), float(ctx.attr("momentum", 0.9))
    for name, value in (("epsilon", epsilon), ("momentum", momentum)):
        if not math.isfinite(value):
            raise ctx.fail(f"{name}={value!r} must be finite")
    view = (n, c, s)
    x3 = ctx.reshape(ctx.ir(x), view)
    mean = _over_batch(ctx, x3, view, "mean", "mean")
    centred = ctx.emit("elementwise", [x3, mean], {"expr": "v0 - v1"}, view)
    squares = _over_batch(ctx, centred, view, "sum_square", "sum")
    count = literal(float(n * s))
    channels = [ctx.reshape(ctx.ir(ctx.input(k)), (c, 1)) for k in (1, 2)]  # scale and B over [N, C, S]
    expr = f"v0 / sqrt(v1 / {count} + {literal(epsilon)}) * v2 + v3"
    direct = tuple(shape) == view
    y = ctx.emit("elementwise", [centred, squares, *channels], {"expr": expr}, view, node.output[0] if direct else None)
    if not direct:
        ctx.reshape(y, shape, out=node.output[0])
    keep, take = literal(momentum), literal(1.0 - momentum)
    for k, batch, expr in (
        (1, mean, f"v0 * {keep} + v1 * {take}"),
        (2, squares, f"v0 * {keep} + v1 / {count} * {take}"),
    ):
        out = node.output[k] if k < len(node.output) else ""
        if out and out in ctx.used:
            inputs = [ctx.ir(ctx.input(k + 2)), ctx.reshape(batch, (c,))]  # input_mean or input_var
            ctx.emit("elementwise", inputs, {"expr": expr}, (c,), out)
