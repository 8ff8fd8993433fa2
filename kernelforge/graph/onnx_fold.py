"""Constant folding at import: numpy evaluation of every node whose inputs are all static.

Every shape is fixed at load, so the shape arithmetic exporters emit (``Shape -> Gather -> Concat -> Reshape``,
masks built from ``Range``/``Trilu``/``Equal``/``Where``, ``Expand`` of constants) is evaluated here and never
reaches a kernel. Each folded result is size-checked (:func:`check_size`) before it is built.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from kernelforge.graph.dtypes import cast_array
from kernelforge.graph.ir import check_size
from kernelforge.graph.onnx_context import Context, flatten_shape, reshape_target, squeeze_shape, unsqueeze_shape
from kernelforge.graph.onnx_quant import CONST_INPUTS as QUANT_CONST_INPUTS
from kernelforge.graph.onnx_quant import FOLDERS as QUANT_FOLDERS
from kernelforge.graph.onnx_quant import LOAD_TIME_INPUTS as QUANT_LOAD_TIME_INPUTS
from kernelforge.graph.onnx_reduce import CONST_INPUTS as REDUCE_CONST_INPUTS
from kernelforge.graph.onnx_reduce import FOLDERS as REDUCE_FOLDERS
from kernelforge.graph.onnx_scan import CONST_INPUTS as SCAN_CONST_INPUTS
from kernelforge.graph.onnx_scan import FOLDERS as SCAN_FOLDERS
from kernelforge.graph.onnx_slice import fold_slice, fold_split

__all__ = ["ALWAYS_FOLD", "CONSTANT_VALUES", "CONST_INPUTS", "FOLDERS", "LOAD_TIME_INPUTS", "Folder", "value_inputs"]

Folder = Callable[[Context, onnx.NodeProto, list[np.ndarray]], list[np.ndarray]]


def _constant(ctx: Context, node: onnx.NodeProto, inputs: list[np.ndarray]) -> list[np.ndarray]:
    for key, dtype in (("value_float", np.float32), ("value_floats", np.float32)):
        if ctx.attr(key) is not None:
            return [np.array(ctx.attr(key), dtype)]
    for key in ("value_int", "value_ints"):
        if ctx.attr(key) is not None:
            return [np.array(ctx.attr(key), np.int64)]
    return [numpy_helper.to_array(ctx.attr("value"))]


def _constant_of_shape(ctx: Context, node: onnx.NodeProto, inputs: list[np.ndarray]) -> list[np.ndarray]:
    value = ctx.attr("value")
    fill = numpy_helper.to_array(value).reshape(-1) if value is not None else np.zeros(1, np.float32)
    shape = tuple(int(d) for d in inputs[0].reshape(-1))
    check_size(shape, ctx.origin)  # before numpy allocates it: a 220-byte model can ask for 10 GB
    return [np.full(shape, fill[0], fill.dtype)]


def _shape(ctx: Context, node: onnx.NodeProto, inputs: list[np.ndarray]) -> list[np.ndarray]:
    start, end = int(ctx.attr("start", 0)), ctx.attr("end")
    shape = ctx.shape(node.input[0])
    return [np.array(shape[start : None if end is None else int(end)], np.int64)]


def _div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if a.dtype.kind in "iu" and b.dtype.kind in "iu":
        return np.trunc(a / b).astype(np.result_type(a, b))  # ONNX integer Div truncates
    return np.divide(a, b)


def _elementwise(fn: Callable[..., np.ndarray]) -> Folder:
    def fold(ctx: Context, node: onnx.NodeProto, inputs: list[np.ndarray]) -> list[np.ndarray]:
        try:
            shape = np.broadcast_shapes(*(x.shape for x in inputs))
        except ValueError as exc:
            raise ctx.fail(f"inputs do not broadcast: {exc}") from None
        check_size(shape, ctx.origin)  # broadcasting [n, 1] against [1, n] makes n * n
        return [np.asarray(functools.reduce(fn, inputs) if len(inputs) > 1 else fn(*inputs))]

    return fold


def _unary(fn: Callable[[np.ndarray], np.ndarray]) -> Folder:
    return lambda ctx, node, inputs: [np.asarray(fn(inputs[0])).astype(inputs[0].dtype)]


def _expand(ctx: Context, node: onnx.NodeProto, inputs: list[np.ndarray]) -> list[np.ndarray]:
    shape = np.broadcast_shapes(inputs[0].shape, tuple(int(d) for d in inputs[1].reshape(-1)))
    check_size(shape, ctx.origin)
    return [np.broadcast_to(inputs[0], shape).copy()]


def _range(ctx: Context, node: onnx.NodeProto, inputs: list[np.ndarray]) -> list[np.ndarray]:
    start, limit, delta = (x.reshape(-1)[0] for x in inputs)
    if delta == 0:
        raise ctx.fail("Range with delta 0")
    count = max(int(np.ceil((limit - start) / delta)), 0)
    check_size((count,), ctx.origin)
    return [np.asarray(start + delta * np.arange(count), dtype=np.result_type(*inputs))]


def _tile(ctx: Context, node: onnx.NodeProto, inputs: list[np.ndarray]) -> list[np.ndarray]:
    repeats = tuple(int(r) for r in inputs[1].reshape(-1))
    check_size(tuple(d * r for d, r in zip(inputs[0].shape, repeats, strict=False)), ctx.origin)
    return [np.tile(inputs[0], repeats)]


def _trilu(ctx: Context, node: onnx.NodeProto, inputs: list[np.ndarray]) -> list[np.ndarray]:
    k = int(inputs[1].reshape(-1)[0]) if len(inputs) > 1 else 0
    return [np.triu(inputs[0], k) if int(ctx.attr("upper", 1)) else np.tril(inputs[0], k)]


def _compare(fn: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> Folder:
    return _elementwise(lambda a, b: np.asarray(fn(a, b), bool))


FOLDERS: dict[str, Folder] = {
    "Constant": _constant,
    "ConstantOfShape": _constant_of_shape,
    "Shape": _shape,
    "Gather": lambda ctx, node, x: [np.take(x[0], x[1].astype(np.int64), axis=int(ctx.attr("axis", 0)))],
    "Slice": fold_slice,
    "Split": fold_split,
    "Concat": lambda ctx, node, x: [np.concatenate(x, axis=int(ctx.attr("axis", 0)))],
    "Unsqueeze": lambda ctx, node, x: [x[0].reshape(unsqueeze_shape(x[0].shape, ctx.axes(1, 13) or []))],
    "Squeeze": lambda ctx, node, x: [x[0].reshape(squeeze_shape(x[0].shape, ctx.axes(1, 13)))],
    "Reshape": lambda ctx, node, x: [
        x[0].reshape(reshape_target(x[0].shape, [int(d) for d in x[1]], int(ctx.attr("allowzero", 0))))
    ],
    "Flatten": lambda ctx, node, x: [x[0].reshape(flatten_shape(x[0].shape, int(ctx.attr("axis", 1))))],
    "Transpose": lambda ctx, node, x: [np.ascontiguousarray(np.transpose(x[0], ctx.attr("perm")))],
    "Cast": lambda ctx, node, x: [
        cast_array(
            x[0],
            helper.tensor_dtype_to_np_dtype(int(ctx.attr("to"))),
            bool(ctx.attr("saturate", 1)),
            str(ctx.attr("round_mode", "up")),
        )
    ],
    "CastLike": lambda ctx, node, x: [
        cast_array(x[0], _like(ctx, node, x), bool(ctx.attr("saturate", 1)), str(ctx.attr("round_mode", "up")))
    ],
    "Identity": lambda ctx, node, x: [x[0]],
    "Dropout": lambda ctx, node, x: [x[0], np.ones(x[0].shape, bool)],
    "Add": _elementwise(np.add),
    "Sub": _elementwise(np.subtract),
    "Mul": _elementwise(np.multiply),
    "Div": _elementwise(_div),
    "Pow": lambda ctx, node, x: [np.power(x[0], x[1]).astype(x[0].dtype)],
    "Sum": _elementwise(np.add),
    "Max": _elementwise(np.maximum),
    "Min": _elementwise(np.minimum),
    "Neg": _unary(np.negative),
    "Abs": _unary(np.abs),
    "Sqrt": _unary(np.sqrt),
    "Exp": _unary(np.exp),
    "Reciprocal": _unary(lambda x: 1.0 / x),
    "Relu": _unary(lambda x: np.maximum(x, 0)),
    "Sigmoid": _unary(lambda x: 1.0 / (1.0 + np.exp(-x))),
    "Tanh": _unary(np.tanh),
    "Floor": _unary(np.floor),
    "Ceil": _unary(np.ceil),
    "Round": _unary(np.round),
    "Sign": _unary(np.sign),
    "Log": _unary(np.log),
    "Equal": _compare(np.equal),
    "Less": _compare(np.less),
    "Greater": _compare(np.greater),
    "LessOrEqual": _compare(np.less_equal),
    "GreaterOrEqual": _compare(np.greater_equal),
    "And": _compare(np.logical_and),
    "Or": _compare(np.logical_or),
    "Xor": _compare(np.logical_xor),
    "Not": lambda ctx, node, x: [np.logical_not(x[0])],
    "Where": lambda ctx, node, x: [np.where(x[0].astype(bool), x[1], x[2])],
    "Mod": lambda ctx, node, x: [(np.fmod if int(ctx.attr("fmod", 0)) else np.mod)(x[0], x[1])],
    "Expand": _expand,
    "Range": _range,
    "Tile": _tile,
    "Trilu": _trilu,
    "Size": lambda ctx, node, x: [np.array(int(np.prod(ctx.shape(node.input[0]))), np.int64)],
    **REDUCE_FOLDERS,
    **SCAN_FOLDERS,
    **QUANT_FOLDERS,
}
"""ONNX op type -> numpy evaluation of a node whose inputs are all constants (Shape: whatever its input)."""

CONST_INPUTS: dict[str, tuple[int, ...]] = {
    "Trilu": (1,),
    "Dropout": (1, 2),
    "Tile": (1,),
    "Expand": (1,),
    "Reshape": (1,),
    "Squeeze": (1,),
    "Unsqueeze": (1,),
    "Pad": (1, 2, 3),
    "Resize": (2, 3),
    "Upsample": (1,),
    "Slice": (1, 2, 3, 4),
    "Split": (1,),
    **REDUCE_CONST_INPUTS,
    **SCAN_CONST_INPUTS,
    **QUANT_CONST_INPUTS,
}
"""Inputs (shapes, axes, pads, scales) a converted node needs as constants: every shape is static."""
LOAD_TIME_INPUTS: dict[str, tuple[int, ...]] = {**QUANT_LOAD_TIME_INPUTS, "Resize": (1,)}
"""Inputs that run in every form only as constants, though a runtime one runs in some (a Resize roi matters
only to ``tf_crop_and_resize``; see :data:`.onnx_quant.LOAD_TIME_INPUTS`)."""
CONSTANT_VALUES = {"value", "value_float", "value_floats", "value_int", "value_ints"}
ALWAYS_FOLD = ("Shape", "Size")
"""Ops that fold whatever their input: every shape is static."""
TYPE_ONLY_INPUTS = {"CastLike": 1}
"""ONNX op type -> the input of which only the element type is read (a runtime tensor there still folds)."""


def value_inputs(node: onnx.NodeProto) -> list[str]:
    """Return the inputs whose values a node reads: what must be constant for it to fold."""
    skip = TYPE_ONLY_INPUTS.get(node.op_type, -1)
    return [name for k, name in enumerate(node.input) if k != skip]


def _like(ctx: Context, node: onnx.NodeProto, x: Sequence[np.ndarray]) -> np.dtype[Any]:
    """CastLike's target: the dtype of input 1, a constant or a runtime tensor of a known element type."""
    if len(x) > 1:
        return x[1].dtype
    to = ctx.types.get(node.input[1])
    if to is None:
        raise ValueError(f"the element type of {node.input[1]!r} is unknown")
    return np.dtype(helper.tensor_dtype_to_np_dtype(to))
