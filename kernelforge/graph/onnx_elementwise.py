"""ONNX elementwise converters: every op that becomes (part of) one fused elementwise program.

Unary and binary arithmetic, activations, comparisons and logic (1.0 / 0.0 results: a boolean tensor is a
float tensor of 0 and 1 inside kernelforge), Where, Expand (a broadcast), Clip and Cast (compute stays float32).
"""

from __future__ import annotations

import math

import numpy as np
import onnx

from kernelforge.errors import ShapeError
from kernelforge.graph.onnx_context import Context, Converter, literal
from kernelforge.ops._expr import broadcast_shape

# float32's largest value: opset < 11 Clip uses +-FLT_MAX for "no bound"
_FLT_MAX = float(np.finfo(np.float32).max)


def _identity(ctx: Context, node: onnx.NodeProto) -> None:
    ctx.alias(node.output[0], node.input[0])


_UNARY = {
    "Relu": "relu",
    "Sigmoid": "sigmoid",
    "Tanh": "tanh",
    "HardSwish": "hardswish",
    "Sqrt": "sqrt",
    "Exp": "exp",
    "Reciprocal": "reciprocal",
    "Neg": "neg",
    "Abs": "abs",
    "Gelu": "gelu",
    "Erf": "erf",
    "Floor": "floor",
    "Ceil": "ceil",
    "Round": "round",
    "Sign": "sign",
    "Log": "log",
    "Sin": "sin",
    "Cos": "cos",
    "Not": "logical_not",
}
_INFIX = {"Add": "+", "Sub": "-", "Mul": "*", "Div": "/"}
# comparisons and logic: 1.0 / 0.0 results (a boolean tensor is a float tensor of 0 and 1 inside kernelforge)
_FUNCTION2 = {
    "Equal": "equal",
    "Less": "less",
    "Greater": "greater",
    "LessOrEqual": "less_equal",
    "GreaterOrEqual": "greater_equal",
    "And": "logical_and",
    "Or": "logical_or",
    "Xor": "logical_xor",
}


def _unary(ctx: Context, node: onnx.NodeProto) -> None:
    fn = _UNARY[node.op_type]
    ctx.elementwise([node.input[0]], lambda v: f"{fn}({v[0]})", node.output[0])


def _binary(ctx: Context, node: onnx.NodeProto) -> None:
    op = _INFIX[node.op_type]
    ctx.elementwise(node.input[:2], lambda v: f"{v[0]} {op} {v[1]}", node.output[0])


def _function2(ctx: Context, node: onnx.NodeProto) -> None:
    fn = _FUNCTION2[node.op_type]
    ctx.elementwise(node.input[:2], lambda v: f"{fn}({v[0]}, {v[1]})", node.output[0])


def _mod(ctx: Context, node: onnx.NodeProto) -> None:
    fn = "fmod" if int(ctx.attr("fmod", 0)) else "mod"
    ctx.elementwise(node.input[:2], lambda v: f"{fn}({v[0]}, {v[1]})", node.output[0])


def _where(ctx: Context, node: onnx.NodeProto) -> None:
    ctx.elementwise(node.input[:3], lambda v: f"where({v[0]}, {v[1]}, {v[2]})", node.output[0])


def _expand(ctx: Context, node: onnx.NodeProto) -> None:
    """Expand as a broadcast: x + zeros, the zeros only as large as the axes that grow.

    A mask of [1, 1, s, s]
    expanded to [b, h, s, s] adds a [b, h, 1, 1] constant.
    """
    x = node.input[0]
    shape = ctx.const_ints(1, "shape")
    if shape is None:
        raise ctx.fail("Expand needs its shape input")
    src = ctx.shape(x)
    try:
        out = broadcast_shape({"x": src, "shape": tuple(int(d) for d in shape)})
    except ShapeError as exc:
        raise ctx.fail(str(exc)) from None
    if out == src:
        ctx.alias(node.output[0], x)
        return
    padded = (1,) * (len(out) - len(src)) + src
    zeros = np.zeros([o if p == 1 and o != 1 else 1 for p, o in zip(padded, out, strict=True)], np.float32)
    grow = ctx.fresh(f"{node.output[0]}_expand")
    ctx.consts[grow] = zeros
    ctx.elementwise([x, grow], lambda v: f"{v[0]} + {v[1]}", node.output[0])


def _variadic(ctx: Context, node: onnx.NodeProto) -> None:
    inputs = list(node.input)
    if len(inputs) == 1:
        _identity(ctx, node)
        return

    def build(v: list[str]) -> str:
        if node.op_type == "Sum":
            return " + ".join(v)
        fn = node.op_type.lower()
        expr = v[0]
        for operand in v[1:]:
            expr = f"{fn}({expr}, {operand})"
        return expr

    ctx.elementwise(inputs, build, node.output[0])


def _pow(ctx: Context, node: onnx.NodeProto) -> None:
    ctx.elementwise(node.input[:2], lambda v: f"pow({v[0]}, {v[1]})", node.output[0])


def _leaky_relu(ctx: Context, node: onnx.NodeProto) -> None:
    alpha = literal(ctx.attr("alpha", 0.01))
    ctx.elementwise([node.input[0]], lambda v: f"leaky_relu({v[0]}, {alpha})", node.output[0])


def _hard_sigmoid(ctx: Context, node: onnx.NodeProto) -> None:
    alpha, beta = literal(ctx.attr("alpha", 0.2)), literal(ctx.attr("beta", 0.5))
    ctx.elementwise([node.input[0]], lambda v: f"hardsigmoid({v[0]}, {alpha}, {beta})", node.output[0])


def _clip(ctx: Context, node: onnx.NodeProto) -> None:
    bounds: list[str | float | None] = []
    if ctx.opset < 11:
        for name, default in (("min", -_FLT_MAX), ("max", _FLT_MAX)):
            value = float(ctx.attr(name, default))
            bounds.append(None if abs(value) >= _FLT_MAX else value)
    else:
        for k in (1, 2):
            name = ctx.input(k)
            data = ctx.const(name)
            if data is not None:
                value = float(np.asarray(data).reshape(-1)[0])
                bounds.append(None if not math.isfinite(value) or abs(value) >= _FLT_MAX else value)
            else:
                bounds.append(name or None)
    lo, hi = bounds
    if isinstance(lo, float) and isinstance(hi, float):
        ctx.elementwise([node.input[0]], lambda v: f"clip({v[0]}, {literal(lo)}, {literal(hi)})", node.output[0])
        return
    inputs = [node.input[0]] + [b for b in bounds if isinstance(b, str)]

    def build(v: list[str]) -> str:
        expr, rest = v[0], iter(v[1:])
        for bound, fn in ((lo, "max"), (hi, "min")):
            if bound is not None:
                expr = f"{fn}({expr}, {next(rest) if isinstance(bound, str) else literal(bound)})"
        return expr

    if lo is None and hi is None:
        _identity(ctx, node)
    else:
        ctx.elementwise(inputs, build, node.output[0])


_INT_TYPES = {
    onnx.TensorProto.INT8,
    onnx.TensorProto.INT16,
    onnx.TensorProto.INT32,
    onnx.TensorProto.INT64,
    onnx.TensorProto.UINT8,
    onnx.TensorProto.UINT16,
    onnx.TensorProto.UINT32,
    onnx.TensorProto.UINT64,
}


def _cast(ctx: Context, node: onnx.NodeProto) -> None:
    """Cast a runtime tensor; compute stays float32.

    A cast to a float type is the tensor itself, one to an integer type truncates toward zero (as ONNX), one to
    bool is 1.0 where the value is not 0.
    """
    to = int(ctx.attr("to", 0))
    if to in _INT_TYPES:
        ctx.elementwise([node.input[0]], lambda v: f"trunc({v[0]})", node.output[0])
    elif to == onnx.TensorProto.BOOL:
        ctx.elementwise([node.input[0]], lambda v: f"logical_not(logical_not({v[0]}))", node.output[0])
    else:
        _identity(ctx, node)  # float16/double: compute stays float32 (CHECKS refused other targets)


CONVERTERS: dict[str, Converter] = {
    **dict.fromkeys(_UNARY, _unary),
    **dict.fromkeys(_INFIX, _binary),
    **dict.fromkeys(_FUNCTION2, _function2),
    **dict.fromkeys(("Sum", "Max", "Min"), _variadic),
    "Mod": _mod,
    "Where": _where,
    "Expand": _expand,
    "Pow": _pow,
    "Clip": _clip,
    "LeakyRelu": _leaky_relu,
    "HardSigmoid": _hard_sigmoid,
    "Cast": _cast,
}
"""ONNX op type -> converter, for the elementwise family (merged into :data:`kernelforge.graph.onnx_ops.CONVERTERS`)."""
