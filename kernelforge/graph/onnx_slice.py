"""ONNX Slice and Split on runtime tensors: one ``slice`` window copy per result, aliases where nothing moves.

Slice (every opset: ``starts/ends/axes`` attributes before opset 10, then ``starts, ends, axes?, steps?``
inputs, which must be constants) becomes one ``slice`` node, or an alias when it keeps the whole tensor.
Split (``split`` attribute before opset 13, then a constant ``split`` input; ``num_outputs`` from opset 18;
equal parts when neither is given) becomes one ``slice`` node per output that something reads. Slices and
Splits of constants are folded at import instead (:mod:`.onnx_fold`; :func:`fold_slice`, :func:`fold_split`), and
an empty result (a window or split size of 0) is an empty constant, whatever it is cut from.
"""

from __future__ import annotations

import numpy as np
import onnx

from kernelforge.graph.onnx_context import Context, Converter, norm_axis

__all__ = ["CONVERTERS", "fold_slice", "fold_split", "split_sizes"]


Window = tuple[list[int], list[int], list[int] | None, list[int] | None]
"""A Slice node's starts, ends, axes and steps (None: ONNX's defaults)."""


def _window(ctx: Context) -> Window:
    """Return the current Slice node's starts, ends, axes and steps (attributes before opset 10, then inputs)."""
    if ctx.opset < 10:
        starts, ends, axes, steps = ctx.attr("starts"), ctx.attr("ends"), ctx.attr("axes"), None
    else:
        starts, ends = ctx.const_ints(1, "starts"), ctx.const_ints(2, "ends")
        axes, steps = ctx.const_ints(3, "axes"), ctx.const_ints(4, "steps")
    if starts is None or ends is None:
        raise ctx.fail("Slice needs starts and ends")
    return [int(s) for s in starts], [int(e) for e in ends], axes, steps


def _index(window: Window, rank: int) -> tuple[slice, ...]:
    """Return a window as Python slices: they clamp out-of-range starts and ends exactly as ONNX does."""
    starts, ends, axes, steps = window
    index = [slice(None)] * rank
    axes = list(range(len(starts))) if axes is None else axes
    steps = [1] * len(starts) if steps is None else steps
    for start, end, axis, step in zip(starts, ends, axes, steps, strict=True):
        if not step:
            raise ValueError(f"slice: step 0 on axis {axis}")
        index[norm_axis(int(axis), rank, "slice: axis")] = slice(start, end, int(step))
    return tuple(index)


def _slice(ctx: Context, node: onnx.NodeProto) -> None:
    x = node.input[0]
    shape = ctx.shape(x)
    window = _window(ctx)
    kept = np.broadcast_to(np.float32(0), shape)[_index(window, len(shape))].shape  # a view of no data
    if 0 in kept:
        ctx.empty(node.output[0], kept)
        return
    starts, ends, axes, steps = window
    attrs = {
        "starts": tuple(starts),
        "ends": tuple(ends),
        "axes": None if axes is None else tuple(int(a) for a in axes),
        "steps": None if steps is None else tuple(int(s) for s in steps),
    }
    x_ir = ctx.ir(x)
    if ctx.kernel_problem("slice", [x_ir], attrs).identity:
        ctx.alias(node.output[0], x)
        return
    ctx.emit("slice", [x_ir], attrs, out=node.output[0])


def fold_slice(ctx: Context, node: onnx.NodeProto, inputs: list[np.ndarray]) -> list[np.ndarray]:
    """Slice a constant tensor (constant folding)."""
    return [inputs[0][_index(_window(ctx), inputs[0].ndim)]]


def split_sizes(ctx: Context, dim: int) -> list[int]:
    """Return the size of every output of the current Split node along its axis (of size ``dim``).

    Raises:
        GraphError: Naming the node when the sizes do not add up to ``dim`` or cannot split it evenly.
    """
    count = len(ctx.node.output)
    num_outputs = ctx.attr("num_outputs") if ctx.opset >= 18 else None
    if ctx.opset < 13:
        given = ctx.attr("split")
        sizes = None if given is None else [int(s) for s in given]
    else:
        sizes = ctx.const_ints(1, "split")
    if sizes is not None and num_outputs is not None:
        raise ctx.fail("Split takes either a split input or num_outputs, not both")
    if sizes is None:
        parts = count if num_outputs is None else int(num_outputs)
        if parts != count or parts < 1:
            raise ctx.fail(f"num_outputs={parts} but the node has {count} output(s)")
        if num_outputs is None and dim % parts:
            raise ctx.fail(f"an axis of {dim} does not split into {parts} equal parts (give split sizes)")
        # ONNX (opset 18): parts of ceil(dim / n), the last one smaller
        chunk = -(-dim // parts)
        if chunk * (parts - 1) >= dim:
            raise ctx.fail(f"an axis of {dim} does not split into {parts} parts of {chunk} and a smaller last one")
        sizes = [chunk] * (parts - 1) + [dim - chunk * (parts - 1)]
    if len(sizes) != count or any(s < 0 for s in sizes) or sum(sizes) != dim:
        raise ctx.fail(f"split sizes {sizes} must be {count} non-negative values adding up to the axis size {dim}")
    return sizes


def _split_axis(ctx: Context, shape: tuple[int, ...]) -> int:
    try:
        return norm_axis(int(ctx.attr("axis", 0)), len(shape))
    except ValueError as exc:
        raise ctx.fail(str(exc)) from None


def _split(ctx: Context, node: onnx.NodeProto) -> None:
    x = node.input[0]
    shape = ctx.shape(x)
    axis = _split_axis(ctx, shape)
    sizes = split_sizes(ctx, shape[axis])
    offset = 0
    for out, size in zip(node.output, sizes, strict=True):
        start, offset = offset, offset + size
        if not out or out not in ctx.used:
            continue  # nothing reads this part: no kernel
        if size == 0:  # no values: a constant (Concat skips it, other readers fold)
            ctx.empty(out, (*shape[:axis], 0, *shape[axis + 1 :]))
        elif size == shape[axis]:
            ctx.alias(out, x)
        else:
            attrs = {"starts": (start,), "ends": (start + size,), "axes": (axis,), "steps": None}
            ctx.emit("slice", [ctx.ir(x)], attrs, out=out)


def fold_split(ctx: Context, node: onnx.NodeProto, inputs: list[np.ndarray]) -> list[np.ndarray]:
    """Split a constant tensor (constant folding): one array per output, in order."""
    data = inputs[0]
    axis = _split_axis(ctx, data.shape)
    bounds = np.cumsum(split_sizes(ctx, data.shape[axis]))[:-1]
    return list(np.split(data, bounds, axis=axis))


CONVERTERS: dict[str, Converter] = {"Slice": _slice, "Split": _split}
"""ONNX op type -> converter, for Slice and Split (merged into :data:`kernelforge.graph.onnx_ops.CONVERTERS`)."""
