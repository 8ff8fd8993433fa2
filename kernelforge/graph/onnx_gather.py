"""ONNX Gather on runtime tensors: one ``gather`` kernel (a Gather whose inputs are all constants folds instead).

Token embeddings (a constant table, runtime ids), the ``[CLS]`` pick and q/k/v selects (a runtime tensor, a
constant index) and fully runtime gathers all become one ``gather`` node. The kernel clamps an index it cannot
use (see :mod:`kernelforge.ops.gather`); constant indices are checked here instead, so a model whose constant
index is out of range fails at load, naming the node, as ONNX Runtime would fail when it runs.
"""

from __future__ import annotations

import numpy as np
import onnx

from kernelforge.graph.onnx_context import Context, Converter, NodeUnsupported, norm_axis
from kernelforge.ops import get_op


def _gather(ctx: Context, node: onnx.NodeProto) -> None:
    data, indices = ctx.input(0), ctx.input(1)
    try:
        attrs = get_op("gather").from_onnx(node.op_type, ctx.opset, {"axis": ctx.attr("axis", 0)})
    except ValueError as exc:
        raise NodeUnsupported(str(exc)) from None
    shape = ctx.shape(data)
    try:
        axis = norm_axis(int(attrs["axis"]), len(shape))
    except ValueError as exc:
        raise ctx.fail(str(exc)) from None
    values = ctx.const(indices)
    if values is not None:
        dim = shape[axis]
        flat = np.asarray(values).reshape(-1)
        if flat.dtype.kind not in "iu":
            raise ctx.fail(f"indices {indices!r} have dtype {flat.dtype}; Gather takes int32 or int64 indices")
        bad = flat[(flat < -dim) | (flat >= dim)]
        if bad.size:
            raise ctx.fail(f"index {int(bad[0])} of {indices!r} is out of range [{-dim}, {dim - 1}] for axis {axis}")
    index_ir = ctx.ir(indices)
    out = node.output[0]
    if ctx.graph.values[index_ir].shape == ctx.shape(indices):
        ctx.emit("gather", [ctx.ir(data), index_ir], {"axis": axis}, out=out)
        return
    # a scalar constant index is a [1] IR constant: gather it as such, then drop the axis (a free view)
    y = ctx.emit("gather", [ctx.ir(data), index_ir], {"axis": axis})
    ctx.reshape(y, (*shape[:axis], *ctx.shape(indices), *shape[axis + 1 :]), out=out)


CONVERTERS: dict[str, Converter] = {"Gather": _gather}
"""ONNX op type -> converter (merged into :data:`kernelforge.graph.onnx_ops.CONVERTERS`)."""
