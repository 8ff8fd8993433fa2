"""MaxPool's second output, Indices: a ``pool2d_argmax`` kernel beside the values' ``pool2d``, where a model reads it.

The values keep their own (tuned) ``pool2d`` kernel, through whichever converter runs MaxPool; the indices are a
second kernel over the same input and window (:mod:`kernelforge.ops.pool_argmax`), emitted only when a live node
or a graph output reads them. A 1-D window runs over ``H = 1`` of the ``[N, C, 1, L]`` view (its index is the
same in either ``storage_order``). 3-D pools, which run as two 2-D passes, have no indices.
"""

from __future__ import annotations

import onnx

from kernelforge.errors import ShapeError
from kernelforge.graph.onnx_context import Context, Converter, NodeUnsupported
from kernelforge.ops._attrs import resolve_auto_pad

__all__ = ["with_indices"]


def _indices(ctx: Context, node: onnx.NodeProto, out: str) -> None:
    """Emit the ``pool2d_argmax`` node writing ONNX output ``out`` (the node's checked 1-D or 2-D window)."""
    x = ctx.input(0)
    shape = ctx.shape(x)
    spatial = shape[2:]
    rank = len(spatial)
    kernel = [int(k) for k in ctx.attr("kernel_shape", [])]
    strides = [int(v) for v in ctx.attr("strides", [1] * rank)]
    dilations = [int(v) for v in ctx.attr("dilations", [1] * rank)]
    pads = [int(v) for v in ctx.attr("pads", [0] * 2 * rank)]
    if (len(kernel), len(strides), len(dilations), len(pads)) != (rank, rank, rank, 2 * rank):
        raise ctx.fail(
            f"kernel_shape {kernel}, strides {strides}, dilations {dilations} and pads {pads} must have "
            f"{rank}, {rank}, {rank} and {2 * rank} values for a {rank}-D window"
        )
    auto_pad = ctx.attr("auto_pad", "NOTSET")
    begins, ends = pads[:rank], pads[rank:]
    for a in range(rank):
        try:
            span = resolve_auto_pad(ctx.origin, auto_pad, spatial[a], kernel[a], strides[a], dilations[a])
        except ShapeError as exc:
            raise NodeUnsupported(str(exc)) from None
        if span is not None:
            begins[a], ends[a] = span
    x_ir = ctx.ir(x)
    if rank == 1:  # the window over H = 1 of the [N, C, 1, L] view
        x_ir = ctx.reshape(x_ir, (shape[0], shape[1], 1, shape[2]))
        kernel, strides, dilations = [1, *kernel], [1, *strides], [1, *dilations]
        begins, ends = [0, *begins], [0, *ends]
    attrs = {
        "kernel_shape": tuple(kernel),
        "strides": tuple(strides),
        "pads": (begins[0], begins[1], ends[0], ends[1]),
        "dilations": tuple(dilations),
        "ceil_mode": int(ctx.attr("ceil_mode", 0)),
        "storage_order": int(ctx.attr("storage_order", 0)),
    }
    index = ctx.emit("pool2d_argmax", [x_ir], attrs, None, out if rank == 2 else None)
    if rank == 1:
        n, c, _, length = ctx.graph.values[index].shape
        ctx.reshape(index, (n, c, length), out=out)


def with_indices(convert: Converter) -> Converter:
    """Return a MaxPool converter that runs ``convert`` for the values and adds the indices where they are read."""

    def convert_any(ctx: Context, node: onnx.NodeProto) -> None:
        out = node.output[1] if len(node.output) > 1 else ""
        wanted = bool(out) and out in ctx.used
        rank = len(ctx.shape(node.input[0])) - 2
        if wanted and rank not in (1, 2):
            raise NodeUnsupported(f"its indices output {out!r} of a {rank}-D pool is not supported (only 1-D and 2-D)")
        convert(ctx, node)
        if wanted:
            _indices(ctx, node, out)

    return convert_any
