"""ONNX elementwise converters: every op that becomes (part of) one fused elementwise program.

Unary and binary arithmetic, activations, comparisons and logic (1.0 / 0.0 results: a boolean tensor is a
float tensor of 0 and 1 inside kernelforge), Where, Expand (a broadcast), Clip and Cast (compute stays float32:
only a cast to a float8, float4 or float8e8m0 type rounds, see :func:`_cast_to`).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import onnx

from kernelforge.errors import ShapeError
from kernelforge.graph.dtypes import E8M0, int_range, kind, numpy_dtype
from kernelforge.graph.edges import EDGE_DTYPES
from kernelforge.graph.float_grids import GRIDS, emit_e8m0, emit_round
from kernelforge.graph.onnx_context import Context, Converter, NodeUnsupported, literal
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
    if op == "/" and ctx.is_integer(node.input[0]):  # integer Div truncates toward zero
        ctx.elementwise(node.input[:2], lambda v: f"trunc({v[0]} / {v[1]})", node.output[0])
        return
    ctx.elementwise(node.input[:2], lambda v: f"{v[0]} {op} {v[1]}", node.output[0])


def _gelu(ctx: Context, node: onnx.NodeProto) -> None:
    if ctx.attr("approximate", "none") == "tanh":  # ONNX's tanh approximation, written out
        c = literal(math.sqrt(2.0 / math.pi))
        ctx.elementwise(
            [node.input[0]],
            lambda v: f"0.5 * {v[0]} * (1 + tanh({c} * ({v[0]} + 0.044715 * pow({v[0]}, 3))))",
            node.output[0],
        )
        return
    ctx.elementwise([node.input[0]], lambda v: f"gelu({v[0]})", node.output[0])


def _trilu(ctx: Context, node: onnx.NodeProto) -> None:
    """Trilu of a runtime tensor: where(mask, x, 0) with the triangle as a constant 0/1 mask over the last two axes."""
    x, shape = node.input[0], ctx.shape(node.input[0])
    if len(shape) < 2:
        raise ctx.fail(f"Trilu needs a tensor of rank >= 2, got shape {shape}")
    k = ctx.const_ints(1, "k")
    diagonal = int(k[0]) if k else 0
    ones = np.ones(shape[-2:], np.float32)
    mask = np.triu(ones, diagonal) if int(ctx.attr("upper", 1)) else np.tril(ones, diagonal)
    name = ctx.fresh(f"{node.output[0]}_mask")
    ctx.consts[name] = mask
    ctx.elementwise([name, x], lambda v: f"where({v[0]}, {v[1]}, 0)", node.output[0])


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

    A mask of [1, 1, s, s] expanded to [b, h, s, s] adds a [b, h, 1, 1] constant.
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


def _cast_to(ctx: Context, node: onnx.NodeProto, to: int) -> None:
    """Cast input 0 to ONNX element type ``to``; compute stays float32.

    To an integer type: truncation toward zero (as ONNX). To int4/uint4/int2/uint2, as ONNX's reference: an
    integer keeps its low bits (two's complement), a float out of the type's range gives 0. To bool: 1.0 where
    not 0. To a float8, float4e2m1 or float8e8m0 type: rounded onto its grid, ``saturate`` and ``round_mode``
    as ONNX (:mod:`.float_grids`). To bfloat16, float16 or float64: unchanged; those round only where the result
    is a graph output (:func:`kernelforge.graph.edges.from_compute`).
    """
    x, out = node.input[0], node.output[0]
    name = EDGE_DTYPES.get(to)
    if name is None:
        supported = ", ".join(sorted(set(EDGE_DTYPES.values())))
        raise NodeUnsupported(f"casting to {_type_name(to)} is not supported ({supported})")
    target = numpy_dtype(name)
    if to in _INT_TYPES:
        ctx.elementwise([x], lambda v: f"trunc({v[0]})", out)
    elif to == onnx.TensorProto.BOOL:
        ctx.elementwise([x], lambda v: f"logical_not(logical_not({v[0]}))", out)
    elif kind(target) in "iu":
        integer = ctx.is_integer(x)
        ctx.elementwise([x], lambda v: _narrow_int(v[0], name, integer), out)
    elif name in GRIDS:
        emit_round(ctx, [x], GRIDS[name], bool(int(ctx.attr("saturate", 1))), out)
    elif name == E8M0:
        emit_e8m0(ctx, x, out, bool(int(ctx.attr("saturate", 1))), str(ctx.attr("round_mode", "up")))
    else:
        _identity(ctx, node)  # float16/bfloat16/double: compute stays float32


def _narrow_int(v: str, name: str, integer: bool) -> str:
    """Return the expression casting ``v`` (integer-valued when ``integer``) to 4- or 2-bit integer type ``name``."""
    lo, hi = int_range(name)
    if integer:  # the low bits: v modulo 2**bits, shifted into [lo, hi]
        return f"mod({v}, {hi - lo + 1})" if lo == 0 else f"mod({v} + {-lo}, {hi - lo + 1}) - {-lo}"
    return f"where(logical_and(greater({v}, {lo - 1}), less({v}, {hi + 1})), trunc({v}), 0)"


def _type_name(to: int) -> str:
    return onnx.TensorProto.DataType.Name(to) if to in onnx.TensorProto.DataType.values() else str(to)


def _cast(ctx: Context, node: onnx.NodeProto) -> None:
    """Cast a runtime tensor (see :func:`_cast_to`)."""
    _cast_to(ctx, node, int(ctx.attr("to", 0)))


def _cast_like(ctx: Context, node: onnx.NodeProto) -> None:
    """CastLike: Cast to the element type of input 1 (only its type is read), ``saturate`` as Cast's."""
    like = ctx.const(node.input[1])
    to = int(onnx.helper.np_dtype_to_tensor_dtype(like.dtype)) if like is not None else ctx.types.get(node.input[1])
    if to is None:
        raise ctx.fail(f"the element type of {node.input[1]!r} is unknown")
    _cast_to(ctx, node, to)


# activations written with the expression language's primitives: ONNX op -> (attributes with defaults, build)
def _softplus(v: str) -> str:
    """Return log(1 + exp(x)) as max(x, 0) + log1p(exp(-|x|)).

    No overflow for large x, and log1p by its series where 1 + u would round u away (float32 has no log1p).
    """
    u = f"exp(-abs({v}))"
    return f"max({v}, 0) + where(less({u}, 0.0001), {u} - {u} * {u} / 2, log(1 + {u}))"


_COMPOSED: dict[str, tuple[dict[str, float], Callable[[str, dict[str, str]], str]]] = {
    "Elu": ({"alpha": 1.0}, lambda x, a: f"where(greater({x}, 0), {x}, {a['alpha']} * (exp({x}) - 1))"),
    "Selu": (
        {"alpha": 1.67326319217681884765625, "gamma": 1.05070102214813232421875},
        lambda x, a: f"{a['gamma']} * where(greater({x}, 0), {x}, {a['alpha']} * (exp({x}) - 1))",
    ),
    "Celu": ({"alpha": 1.0}, lambda x, a: f"max({x}, 0) + min(0, {a['alpha']} * (exp({x} / {a['alpha']}) - 1))"),
    "ThresholdedRelu": ({"alpha": 1.0}, lambda x, a: f"where(greater({x}, {a['alpha']}), {x}, 0)"),
    "Softsign": ({}, lambda x, a: f"{x} / (1 + abs({x}))"),
    "Softplus": ({}, lambda x, a: _softplus(x)),
    "Mish": ({}, lambda x, a: f"{x} * tanh({_softplus(x)})"),
    "Swish": ({"alpha": 1.0}, lambda x, a: f"{x} * sigmoid({a['alpha']} * {x})"),
    "Shrink": (
        {"bias": 0.0, "lambd": 0.5},
        lambda x, a: (
            f"where(less({x}, -{a['lambd']}), {x} + {a['bias']}, "
            f"where(greater({x}, {a['lambd']}), {x} - {a['bias']}, 0))"
        ),
    ),
    "Tan": ({}, lambda x, a: f"sin({x}) / cos({x})"),
    "IsNaN": ({}, lambda x, a: f"logical_not(equal({x}, {x}))"),
}


def _composed(ctx: Context, node: onnx.NodeProto) -> None:
    defaults, build = _COMPOSED[node.op_type]
    attrs = {k: f"({literal(float(ctx.attr(k, d)))})" for k, d in defaults.items()}
    ctx.elementwise([node.input[0]], lambda v: build(v[0], attrs), node.output[0])


def _is_inf(ctx: Context, node: onnx.NodeProto) -> None:
    """IsInf: beyond float32's largest finite value (NaN compares false), on the sides asked for."""
    big = literal(_FLT_MAX)
    positive, negative = int(ctx.attr("detect_positive", 1)), int(ctx.attr("detect_negative", 1))
    if not positive and not negative:
        ctx.consts[node.output[0]] = np.zeros(ctx.shape(node.input[0]), bool)
        return

    def build(v: list[str]) -> str:
        tests = ([f"greater({v[0]}, {big})"] if positive else []) + ([f"less({v[0]}, -{big})"] if negative else [])
        return tests[0] if len(tests) == 1 else f"logical_or({tests[0]}, {tests[1]})"

    ctx.elementwise([node.input[0]], build, node.output[0])


def _prelu(ctx: Context, node: onnx.NodeProto) -> None:
    ctx.elementwise(node.input[:2], lambda v: f"where(less({v[0]}, 0), {v[1]} * {v[0]}, {v[0]})", node.output[0])


def _mean(ctx: Context, node: onnx.NodeProto) -> None:
    n = len(node.input)
    ctx.elementwise(list(node.input), lambda v: f"({' + '.join(v)}) / {n}", node.output[0])


CONVERTERS: dict[str, Converter] = {
    **dict.fromkeys(_COMPOSED, _composed),
    "IsInf": _is_inf,
    "PRelu": _prelu,
    "Mean": _mean,
    "CastLike": _cast_like,
    **dict.fromkeys(_UNARY, _unary),
    **dict.fromkeys(_INFIX, _binary),
    **dict.fromkeys(_FUNCTION2, _function2),
    **dict.fromkeys(("Sum", "Max", "Min"), _variadic),
    "Mod": _mod,
    "Where": _where,
    "Gelu": _gelu,
    "Trilu": _trilu,
    "Expand": _expand,
    "Pow": _pow,
    "Clip": _clip,
    "LeakyRelu": _leaky_relu,
    "HardSigmoid": _hard_sigmoid,
    "Cast": _cast,
}
"""ONNX op type -> converter, for the elementwise family (merged into :data:`kernelforge.graph.onnx_ops.CONVERTERS`)."""
