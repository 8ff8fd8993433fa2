"""ONNX CumSum (opsets 11 and 14), and the folding of CumSum, ArgMax and ArgMin over constants.

CumSum of a runtime tensor becomes one ``cumsum`` node (:mod:`kernelforge.ops.cumsum`); its ``axis`` input must
be a constant (every shape is static). ArgMax and ArgMin of a runtime tensor run as ``arg_reduce`` as they stand
(the spec's ``onnx_ops``); over constants all three fold here (:data:`FOLDERS`, merged into
:data:`kernelforge.graph.onnx_fold.FOLDERS`), integer results staying int64.
"""

from __future__ import annotations

import numpy as np
import onnx

from kernelforge.graph.onnx_context import Context, Converter, norm_axis
from kernelforge.ops import get_op
from kernelforge.ops.arg_reduce import arg_reduce_array
from kernelforge.ops.cumsum import cumsum_array

__all__ = ["CONST_INPUTS", "CONVERTERS", "FOLDERS"]


def _cumsum_axis(ctx: Context, rank: int, given: np.ndarray | None = None) -> int:
    """Return the CumSum node's axis (input 1, a constant scalar or 1-element tensor), normalised.

    Raises:
        GraphError: Naming the node for a missing, non-scalar or out-of-range axis.
    """
    values = ctx.const_ints(1, "axis") if given is None else [int(v) for v in given.reshape(-1)]
    if values is None or len(values) != 1:
        raise ctx.fail(f"axis must be one integer, got {values}")
    try:
        return norm_axis(values[0], rank)
    except ValueError as exc:
        raise ctx.fail(str(exc)) from None


def _flags(ctx: Context) -> tuple[bool, bool]:
    """Return the node's ``exclusive`` and ``reverse`` (0 or 1 each)."""
    flags = []
    for name in ("exclusive", "reverse"):
        value = int(ctx.attr(name, 0))
        if value not in (0, 1):
            raise ctx.fail(f"{name}={value} must be 0 or 1")
        flags.append(bool(value))
    return flags[0], flags[1]


def _cumsum(ctx: Context, node: onnx.NodeProto) -> None:
    x = ctx.input(0)
    shape = ctx.shape(x)
    if not shape:
        raise ctx.fail("x must have rank >= 1")
    axis = _cumsum_axis(ctx, len(shape))
    exclusive, reverse = _flags(ctx)
    if shape[axis] == 1 and not exclusive:  # each sum is its one element
        ctx.alias(node.output[0], x)
        return
    attrs = {"axis": axis, "exclusive": exclusive, "reverse": reverse}
    ctx.emit("cumsum", [ctx.ir(x)], attrs, out=node.output[0])


def _fold_cumsum(ctx: Context, node: onnx.NodeProto, inputs: list[np.ndarray]) -> list[np.ndarray]:
    data = inputs[0]
    exclusive, reverse = _flags(ctx)
    return [cumsum_array(data, _cumsum_axis(ctx, data.ndim, inputs[1]), exclusive, reverse)]


def _fold_arg(ctx: Context, node: onnx.NodeProto, inputs: list[np.ndarray]) -> list[np.ndarray]:
    given = {a.name: ctx.attr(a.name) for a in node.attribute}
    try:
        attrs = get_op("arg_reduce").from_onnx(node.op_type, ctx.opset, given)
        axis = norm_axis(attrs["axis"], inputs[0].ndim)
    except ValueError as exc:
        raise ctx.fail(str(exc)) from None
    return [arg_reduce_array(inputs[0], axis, attrs["kind"], attrs["last"], attrs["keepdims"])]


CONVERTERS: dict[str, Converter] = {"CumSum": _cumsum}
"""ONNX op type -> converter (merged into :data:`kernelforge.graph.onnx_ops.CONVERTERS`)."""

FOLDERS = {"CumSum": _fold_cumsum, "ArgMax": _fold_arg, "ArgMin": _fold_arg}
"""ONNX op type -> numpy evaluation when every input is a constant (merged into ``onnx_fold.FOLDERS``)."""

CONST_INPUTS: dict[str, tuple[int, ...]] = {"CumSum": (1,)}
"""CumSum's ``axis`` input must be a constant."""
