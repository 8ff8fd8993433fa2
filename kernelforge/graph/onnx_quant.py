"""ONNX quantization ops: QuantizeLinear/DequantizeLinear, DynamicQuantizeLinear, MatMulInteger and ConvInteger.

Compute stays float32: integer tensors are carried as exact integer-valued floats, as everywhere in kernelforge.

- **Constants** (weights, biases): QuantizeLinear and DequantizeLinear fold at import with ONNX's semantics at
  every opset (10..28): per-tensor, per-axis (``axis``) and blocked (``block_size``) scales; int8, uint8,
  int16, uint16, int4, uint4, int2 and uint2 data (and int32 for DequantizeLinear), and the float8 and float4
  types (whose zero point must be 0: ONNX's reference ignores or refuses any other); rounding half to even and
  saturation as ONNX; float32 arithmetic as onnxruntime. A constant dequantized from int8/uint8/int4/uint4 keeps its
  integers (:class:`kernelforge.graph.quant.Quantized`), so a bundle stores it as int8.
- **Runtime tensors**: QuantizeLinear is ``clip(round(x / s) + zp, qmin, qmax)`` and DequantizeLinear
  ``(q - zp) * s``, elementwise programs that the passes fuse; a QuantizeLinear -> DequantizeLinear pair is the
  fake-quant ``(clip(round(x / s) + zp, qmin, qmax) - zp) * s``, whose ``round(x / s)`` rounds the float32
  quotient exactly on every device (``round_div`` in :mod:`kernelforge.ops._expr`). The pairs are kept: with
  them a model gives onnxruntime's QDQ run as written bit for bit (and its fused integer kernels to within one
  step of the output's quantization), while dropping them changes what the model computes, since onnxruntime's
  quantizer removes a Relu or relu6 Clip in front of a QuantizeLinear whose range does the clipping
  (``tests/null/test_onnx_quant.py`` measures both). To a float8 or float4 type, QuantizeLinear rounds
  ``x / s`` onto the type's grid (``saturate`` as ONNX), exactly (:mod:`.float_grids`).
- **DynamicQuantizeLinear** computes its scale and zero point on the device as onnxruntime does (range widened
  to include 0, scale 1 for an all-zero tensor, zero point rounded half to even): two global max pools (of x
  and -x) and three elementwise programs.
- **MatMulInteger / ConvInteger** subtract the zero points (elementwise, or folded into a constant operand) and
  run the float gemm/conv2d kernels. Products of 8-bit integers summed in float32 are exact while every partial
  sum stays within 2**24, so a node whose ``K * max|a - a_zp| * max|b - b_zp|`` could exceed it is refused.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import helper

from kernelforge.graph.dtypes import NARROW, NARROW_ELEMS, cast_array
from kernelforge.graph.float_grids import GRIDS, emit_round
from kernelforge.graph.onnx_context import Context, Converter, NodeUnsupported, norm_axis
from kernelforge.graph.quant import Quantized, relocate

__all__ = ["CHECKS", "CONST_INPUTS", "FOLDERS", "LOAD_TIME_INPUTS", "carry_quantized", "converters"]

RANGES: dict[str, tuple[int, int]] = {
    "int8": (-128, 127),
    "uint8": (0, 255),
    "int16": (-(2**15), 2**15 - 1),
    "uint16": (0, 2**16 - 1),
    "int4": (-8, 7),
    "uint4": (0, 15),
    "int2": (-2, 1),
    "uint2": (0, 3),
}
"""Integer dtypes QuantizeLinear produces and DequantizeLinear reads (DequantizeLinear also reads int32)."""
_DQ_DTYPES = (*RANGES, "int32", *GRIDS)
_Q_DTYPES = (*RANGES, *GRIDS)
_SCALE_DTYPES = ("float32", "float16", "bfloat16")
_ELEMS = {
    "int8": onnx.TensorProto.INT8,
    "uint8": onnx.TensorProto.UINT8,
    "int16": onnx.TensorProto.INT16,
    "uint16": onnx.TensorProto.UINT16,
    "int4": onnx.TensorProto.INT4,
    "uint4": onnx.TensorProto.UINT4,
    "float16": onnx.TensorProto.FLOAT16,
    "bfloat16": onnx.TensorProto.BFLOAT16,
    **{name: elem for elem, name in NARROW_ELEMS.items() if name in ("int2", "uint2") or name in GRIDS},  # int2: 1.20+
}
"""ONNX element types by name (never ``np.dtype(name)``: numpy reads ``"int4"`` as its own 4-byte int32)."""
_STORED = {"int8": np.int8, "uint8": np.uint8, "int4": np.int8, "uint4": np.uint8}
"""Data a bundle can keep as 8-bit integers: the 4-bit types widened."""
EXACT = 1 << 24
"""float32 holds every integer up to 2**24: the bound on an integer product sum."""


def _name(dtype: np.dtype[Any]) -> str:
    return dtype.name  # ml_dtypes names the 4-bit, 2-bit and float8 types: int4, float8_e4m3fn, ...


def _elem_name(elem: int) -> str:
    try:
        return _name(np.dtype(helper.tensor_dtype_to_np_dtype(elem)))
    except (KeyError, TypeError, ValueError):
        return onnx.TensorProto.DataType.Name(elem) if elem in onnx.TensorProto.DataType.values() else str(elem)


@dataclass(frozen=True)
class _Params:
    """A Q/DQ node's scale and zero point, each broadcastable to x (blocked scales expanded to x's shape)."""

    scale: np.ndarray
    zero_point: np.ndarray
    dtype: str
    axis: int | None
    blocked: bool


def _params(ctx: Context, shape: tuple[int, ...], scale: np.ndarray, zp: np.ndarray | None, dtype: str) -> _Params:
    """Check a Q/DQ node's scale and zero point against x's ``shape``; return them ready to broadcast.

    ``dtype`` is the integer type (the zero point's when given, which must agree with it).
    """
    if _name(scale.dtype) not in _SCALE_DTYPES:
        raise NodeUnsupported(f"scale of dtype {_name(scale.dtype)} is not supported ({', '.join(_SCALE_DTYPES)})")
    # a 1-element scale with a 0-d zero point is per tensor (onnxruntime's quantizer writes such biases)
    if zp is not None and zp.shape != scale.shape and not zp.size == scale.size == 1:
        raise ctx.fail(f"zero point of shape {zp.shape} and scale of shape {scale.shape} differ")
    if dtype in GRIDS and zp is not None and np.asarray(zp, np.float32).any():
        raise NodeUnsupported(f"a {dtype} zero point other than 0 is not supported (ONNX's reference ignores it)")
    s = scale.astype(np.float32)
    z = np.zeros(s.shape, np.int64) if zp is None else zp.astype(np.int64)
    block = int(ctx.attr("block_size", 0)) if ctx.opset >= 21 else 0
    if s.size == 1 and not block:  # a scalar or a 1-element vector: per tensor (as onnxruntime)
        return _Params(s.reshape(()), z.reshape(()), dtype, None, False)
    if ctx.opset < 13:
        raise ctx.fail(f"scale of shape {scale.shape}: opset {ctx.opset} quantizes per tensor only")
    try:
        axis = norm_axis(int(ctx.attr("axis", 1)), len(shape))
    except ValueError as exc:
        raise ctx.fail(str(exc)) from None
    if block:
        want = tuple(-(-d // block) if a == axis else d for a, d in enumerate(shape))
        if block < 0 or s.shape != want:
            raise ctx.fail(f"block_size={block}: scale of shape {s.shape} for x {shape} along axis {axis}; want {want}")
        s = np.repeat(s, block, axis=axis).take(range(shape[axis]), axis=axis)
        z = np.repeat(z, block, axis=axis).take(range(shape[axis]), axis=axis)
        return _Params(s, z, dtype, axis, True)
    if s.shape != (shape[axis],):
        raise ctx.fail(f"scale of shape {s.shape} for axis {axis} of x {shape}: want ({shape[axis]},)")
    view = [-1] + [1] * (len(shape) - axis - 1)
    return _Params(s.reshape(view), z.reshape(view), dtype, axis, False)


def _q_dtype(ctx: Context, zp: np.ndarray | None) -> str:
    """Return QuantizeLinear's output dtype: output_dtype (opset 21+), else the zero point's, else uint8."""
    given = int(ctx.attr("output_dtype", 0)) if ctx.opset >= 21 else 0
    dtype = _elem_name(given) if given else _name(zp.dtype) if zp is not None else "uint8"
    if zp is not None and _name(zp.dtype) != dtype:
        raise ctx.fail(f"output_dtype {dtype} and the zero point's dtype {_name(zp.dtype)} differ")
    if dtype not in _Q_DTYPES:
        raise NodeUnsupported(f"quantizing to {dtype} is not supported ({', '.join(_Q_DTYPES)})")
    return dtype


def _dq_dtype(ctx: Context, x: np.ndarray | None, zp: np.ndarray | None) -> str:
    """Return DequantizeLinear's input dtype (x's when it is a constant, else the zero point's, else int8)."""
    dtype = _name(x.dtype) if x is not None else _name(zp.dtype) if zp is not None else "int8"
    if dtype not in _DQ_DTYPES:
        raise NodeUnsupported(f"dequantizing {dtype} is not supported ({', '.join(_DQ_DTYPES)})")
    if zp is not None and _name(zp.dtype) != dtype:
        raise ctx.fail(f"zero point of dtype {_name(zp.dtype)} for data of dtype {dtype}")
    return dtype


def _output_dtype(ctx: Context, scale: np.ndarray) -> str:
    """DequantizeLinear's float output type: output_dtype (opset 23+), else the scale's."""
    given = int(ctx.attr("output_dtype", 0)) if ctx.opset >= 23 else 0
    return _elem_name(given) if given else _name(scale.dtype)


# --- folding constants --------------------------------------------------------------------------------------


def _fold_dequantize(ctx: Context, node: onnx.NodeProto, inputs: list[np.ndarray]) -> list[np.ndarray]:
    x, scale, zp = inputs[0], inputs[1], inputs[2] if len(inputs) > 2 else None
    dtype = _dq_dtype(ctx, x, zp)
    p = _params(ctx, x.shape, scale, zp, dtype)
    # float32(x - zp) * scale, one rounding, as onnxruntime (int64 so int32 data cannot wrap); a float8 or
    # float4 zero point is 0
    y = (x.astype(np.float32) if dtype in GRIDS else (x.astype(np.int64) - p.zero_point).astype(np.float32)) * p.scale
    out = _output_dtype(ctx, scale)
    if out in ("float16", "bfloat16"):  # rounded to the output type; compute goes on in float32
        return [y.astype(helper.tensor_dtype_to_np_dtype(_ELEMS[out])).astype(np.float32)]
    if out != "float32":
        raise NodeUnsupported(f"output_dtype {out} is not supported (float, float16, bfloat16)")
    stored = _STORED.get(dtype)
    if stored is not None and not p.blocked:
        points = p.zero_point.reshape(-1).astype(stored)
        ctx.quantized[node.output[0]] = Quantized(x.astype(stored), p.scale.reshape(-1), points, p.axis)
    return [y]


def _fold_quantize(ctx: Context, node: onnx.NodeProto, inputs: list[np.ndarray]) -> list[np.ndarray]:
    x, scale, zp = inputs[0], inputs[1], inputs[2] if len(inputs) > 2 else None
    _check_precision(ctx)
    dtype = _q_dtype(ctx, zp)
    p = _params(ctx, x.shape, scale, zp, dtype)
    if dtype in GRIDS:
        with np.errstate(all="ignore"):
            return [cast_array(x.astype(np.float32) / p.scale, NARROW[dtype], _saturate(ctx))]
    lo, hi = RANGES[dtype]
    with np.errstate(all="ignore"):
        y = np.rint(x.astype(np.float32) / p.scale) + p.zero_point  # rint: half to even
    return [np.clip(y, lo, hi).astype(helper.tensor_dtype_to_np_dtype(_ELEMS[dtype]))]  # saturated


def _saturate(ctx: Context) -> bool:
    """QuantizeLinear's ``saturate`` (opset 19+; float8 only, float4e2m1 always saturates)."""
    return bool(int(ctx.attr("saturate", 1))) if ctx.opset >= 19 else True


def _check_precision(ctx: Context) -> None:
    precision = int(ctx.attr("precision", 0)) if ctx.opset >= 23 else 0
    if precision not in (0, onnx.TensorProto.FLOAT):
        raise NodeUnsupported(f"precision={_elem_name(precision)} is not supported (compute is float32)")


# --- runtime tensors ----------------------------------------------------------------------------------------


def _runtime_params(ctx: Context, node: onnx.NodeProto) -> tuple[np.ndarray, np.ndarray | None]:
    scale = ctx.const(ctx.input(1))
    zp = ctx.const(ctx.input(2)) if ctx.input(2) else None
    if scale is None or (ctx.input(2) and zp is None):
        raise NodeUnsupported("scale and zero point need runtime values; only constants are supported")
    # blocked scales reach the kernel expanded to x's shape (one constant as large as x): activations are
    # seldom quantized in blocks, weights (constants) fold instead
    return scale, zp


def _constant_operands(ctx: Context, p: _Params) -> tuple[str, str]:
    """Register the scale and zero point as constants broadcasting against x; return their ONNX names.

    The zero point's name is ``""`` where it is all zeros: the program then leaves it out.
    """
    names = []
    for base, data in (("scale", p.scale), ("zero_point", p.zero_point)):
        if base == "zero_point" and not data.any():
            names.append("")
            continue
        name = ctx.fresh(f"{ctx.node.output[0]}_{base}")
        ctx.consts[name] = np.asarray(data, np.float32)
        names.append(name)
    return names[0], names[1]


def _computed_params(ctx: Context, node: onnx.NodeProto) -> tuple[str, str, str] | None:
    """Return (scale, zero point, integer dtype) of a Q/DQ node with a scale or zero point computed at run time.

    That is DynamicQuantizeLinear written out; None when both are constants.

    Only per-tensor ones (one value) run: the zero point's integer type comes from the model's type
    information, as its values are only known on the device. A float8 or float4 zero point must be a constant
    0 (it is then left out).
    """
    scale, zp = ctx.input(1), ctx.input(2)
    if ctx.const(scale) is not None and (not zp or ctx.const(zp) is not None):
        return None
    for name, what in ((scale, "scale"), (zp, "zero point")):
        if name and math.prod(ctx.shape(name)) != 1:
            raise NodeUnsupported(f"a {what} computed at run time must be one value, got shape {ctx.shape(name)}")
    if ctx.opset >= 21 and int(ctx.attr("block_size", 0)):
        raise NodeUnsupported(f"block_size={ctx.attr('block_size')} with a scale computed at run time")
    given = int(ctx.attr("output_dtype", 0)) if ctx.opset >= 21 and node.op_type == "QuantizeLinear" else 0
    if zp:
        data = ctx.const(zp)
        elem = ctx.types.get(zp, 0) if data is None else _ELEMS.get(_name(data.dtype), 0)
        dtype = _elem_name(elem) if elem else ""
    else:
        dtype = _elem_name(given) if given else "uint8"
    if dtype in GRIDS:
        data = ctx.const(zp) if zp else None
        if zp and (data is None or np.asarray(data, np.float32).any()):
            raise NodeUnsupported(f"a {dtype} zero point must be a constant 0 (ONNX's reference ignores it)")
        return scale, "", dtype
    if dtype not in RANGES:
        raise NodeUnsupported(f"a zero point of type {dtype or 'unknown'} is not supported ({', '.join(_Q_DTYPES)})")
    return scale, zp, dtype


def _quantize(ctx: Context, node: onnx.NodeProto) -> None:
    x = node.input[0]
    computed = _computed_params(ctx, node)
    if computed is not None:
        _check_precision(ctx)
        s, z, dtype = computed
    else:
        scale, zp = _runtime_params(ctx, node)
        _check_precision(ctx)
        dtype = _q_dtype(ctx, zp)
        s, z = _constant_operands(ctx, _params(ctx, ctx.shape(x), scale, zp, dtype))
    if dtype in GRIDS:  # its zero point is 0
        emit_round(ctx, [x, s], GRIDS[dtype], _saturate(ctx), node.output[0])
        return
    lo, hi = RANGES[dtype]

    def program(v: list[str]) -> str:
        steps = f"round({v[0]} / {v[1]}) + {v[2]}" if z else f"round({v[0]} / {v[1]})"
        return f"clip({steps}, {lo}, {hi})"

    ctx.elementwise([x, s, z] if z else [x, s], program, node.output[0])


def _dequantize(ctx: Context, node: onnx.NodeProto) -> None:
    x = node.input[0]
    computed = _computed_params(ctx, node)
    if computed is not None:
        s, z, _ = computed
    else:
        scale, zp = _runtime_params(ctx, node)
        p = _params(ctx, ctx.shape(x), scale, zp, _dq_dtype(ctx, None, zp))
        if _output_dtype(ctx, scale) not in _SCALE_DTYPES:
            raise NodeUnsupported(
                f"output_dtype {_output_dtype(ctx, scale)} is not supported (float, float16, bfloat16)"
            )
        s, z = _constant_operands(ctx, p)
    program = (lambda v: f"({v[0]} - {v[2]}) * {v[1]}") if z else (lambda v: f"{v[0]} * {v[1]}")
    ctx.elementwise([x, s, z] if z else [x, s], program, node.output[0])


def _global_max(ctx: Context, x_ir: str, shape: tuple[int, ...]) -> str:
    """Return the max over all of runtime tensor ``x_ir`` as a 0-d value: one global max pool over a 4-D view."""
    cols = shape[-1] if shape else 1
    view = ctx.reshape(x_ir, (1, 1, math.prod(shape) // cols, cols))
    fields: dict[str, Any] = {"kernel_shape": ctx.graph.values[view].shape[2:], "strides": (1, 1)}
    fields.update(pads=(0, 0, 0, 0), dilations=(1, 1), ceil_mode=0, count_include_pad=0, global_=True)
    pooled = ctx.emit("pool2d", [view], {"mode": "max", **fields}, (1, 1, 1, 1))
    return ctx.reshape(pooled, ())


def _dynamic_quantize(ctx: Context, node: onnx.NodeProto) -> None:
    """DynamicQuantizeLinear to uint8 as onnxruntime: range [min(x, 0), max(x, 0)] over 255 steps."""
    x = node.input[0]
    shape = ctx.shape(x)
    x_ir = ctx.ir(x)
    high = _global_max(ctx, x_ir, shape)
    low = _global_max(ctx, ctx.emit("elementwise", [x_ir], {"expr": "-v0"}, shape), shape)  # -min(x)
    outs = [name or None for name in (*node.output, "", "")[:3]]
    # max == min only when both are 0 (the range holds 0): onnxruntime then takes scale 1
    span = "relu(v0) + relu(v1)"
    expr = f"where(equal({span}, 0.0), 1.0, ({span}) / 255.0)"
    scale = ctx.emit("elementwise", [high, low], {"expr": expr}, (), outs[1])
    zp = ctx.emit("elementwise", [low, scale], {"expr": "clip(round(relu(v0) / v1), 0.0, 255.0)"}, (), outs[2])
    quantized = "clip(round(v0 / v1) + v2, 0.0, 255.0)"
    ctx.emit("elementwise", [x_ir, scale, zp], {"expr": quantized}, shape, outs[0])


def _centered(ctx: Context, k: int, zp_shape: Callable[[tuple[int, ...]], tuple[int, ...]]) -> tuple[str, int]:
    """Return an ONNX name holding input ``k`` minus its zero point (input ``k + 2``), and a bound on its size.

    A constant folds (keeping its integers for bundles); a runtime tensor gets an elementwise subtraction.
    ``zp_shape`` gives the shape a zero-point vector broadcasts as, from the input's shape.
    """
    name, zp_name = ctx.input(k), ctx.input(k + 2)
    data, zp = ctx.const(name), ctx.const(zp_name) if zp_name else None
    shape = ctx.shape(name)
    what = "A" if k == 0 else "B"
    for array, role in ((data, what), (zp, f"{what}'s zero point")):
        if array is not None and _name(array.dtype) not in ("int8", "uint8"):
            raise NodeUnsupported(f"{role} of dtype {_name(array.dtype)} is not supported (int8, uint8)")
    if zp is not None and zp.size > 1:
        zp = zp.reshape(zp_shape(shape)) if zp.ndim == 1 else zp
    if data is not None and (zp is not None or not zp_name):
        shift = np.zeros((), np.int64) if zp is None else zp.astype(np.int64)
        centered = data.astype(np.int64) - shift
        fresh = ctx.fresh(f"{name}_centered")
        ctx.consts[fresh] = centered.astype(np.float32)
        quant = _integers(data, zp)
        if quant is not None:
            ctx.quantized[fresh] = quant
        return fresh, int(np.abs(centered).max(initial=0))
    if not zp_name:
        return name, 255
    if zp is not None:
        fresh = ctx.fresh(f"{zp_name}_{what}")
        ctx.consts[fresh] = zp.astype(np.float32)
        zp_name = fresh
    elif len(zp_dims := ctx.shape(zp_name)) == 1 and zp_dims[0] > 1:
        # a runtime zero-point vector broadcasts along its axis (W's output channels), not along the last one
        target = tuple(zp_dims[0] if d == -1 else d for d in zp_shape(shape))
        fresh = ctx.fresh(f"{zp_name}_{what}")
        ctx.reshape(ctx.ir(zp_name), target, out=fresh)
        zp_name = fresh
    out = ctx.fresh(f"{name}_centered")
    ctx.elementwise([name, zp_name], lambda v: f"{v[0]} - {v[1]}", out)
    return out, 255  # |a - zp| of two 8-bit values of one type


def _integers(data: np.ndarray, zp: np.ndarray | None) -> Quantized | None:
    """Return ``data - zp`` as integers with scale 1 (per tensor, or per channel where zp varies on one axis)."""
    if zp is None or (zp == zp.reshape(-1)[0]).all():  # one zero point (the scales are all 1): per tensor
        point = np.zeros(1, data.dtype) if zp is None else zp.reshape(-1)[:1].astype(data.dtype)
        return Quantized(data, np.ones(1, np.float32), point)
    padded = (1,) * (data.ndim - zp.ndim) + zp.shape
    varying = [a for a, d in enumerate(padded) if d != 1]
    if len(varying) != 1 or padded[varying[0]] != data.shape[varying[0]]:
        return None
    points = zp.reshape(-1).astype(data.dtype)
    return Quantized(data, np.ones(points.size, np.float32), points, varying[0])


def _check_exact(ctx: Context, k: int, a: int, b: int) -> None:
    if k * a * b > EXACT:
        raise NodeUnsupported(
            f"K={k} products of up to {a} x {b} could sum to {k * a * b} > 2**24, beyond the integers float32 "
            f"holds exactly"
        )


def _delegate(ctx: Context, convert: Converter, op_type: str, inputs: list[str]) -> None:
    """Run ``convert`` (the float op's converter) on a node like the current one with ``inputs``."""
    node = ctx.node
    float_node = helper.make_node(op_type, inputs, [node.output[0]])
    float_node.attribute.extend(node.attribute)
    ctx.node = float_node
    try:
        convert(ctx, float_node)
    finally:
        ctx.node = node


def converters(matmul: Converter, conv: Converter) -> dict[str, Converter]:
    """Return the converters of this module; MatMulInteger and ConvInteger end in the float ops' converters.

    Args:
        matmul: The MatMul converter (batched and broadcast shapes as MatMul).
        conv: The Conv converter (attributes as Conv).
    """

    def matmul_integer(ctx: Context, node: onnx.NodeProto) -> None:
        a_shape = ctx.shape(node.input[0])
        # a per-row zero point of A [.., M, K] is [M] (2-D A); one per column of B [.., K, N] is [N]
        a, a_bound = _centered(ctx, 0, lambda s: (s[-2], 1) if len(s) >= 2 else (-1,))
        b, b_bound = _centered(ctx, 1, lambda s: (s[-1],))
        _check_exact(ctx, a_shape[-1] if a_shape else 1, a_bound, b_bound)
        _delegate(ctx, matmul, "MatMul", [a, b])

    def conv_integer(ctx: Context, node: onnx.NodeProto) -> None:
        w_shape = ctx.shape(node.input[1])
        x_zp = ctx.const(ctx.input(2))
        if x_zp is not None and x_zp.size != 1:
            raise NodeUnsupported(f"x_zero_point of shape {x_zp.shape}: only one value (per tensor) is supported")
        x, x_bound = _centered(ctx, 0, lambda s: (-1,))
        w, w_bound = _centered(ctx, 1, lambda s: (s[0], *([1] * (len(s) - 1))))
        _check_exact(ctx, math.prod(w_shape[1:]), x_bound, w_bound)
        _delegate(ctx, conv, "Conv", [x, w])

    return {
        "QuantizeLinear": _quantize,
        "DequantizeLinear": _dequantize,
        "DynamicQuantizeLinear": _dynamic_quantize,
        "MatMulInteger": matmul_integer,
        "ConvInteger": conv_integer,
    }


REARRANGING = ("Identity", "Dropout", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "Slice")
"""Folded ops that only move values: a quantized constant through them stays quantized."""


def carry_quantized(
    ctx: Context, node: onnx.NodeProto, fold: Callable[..., list[np.ndarray]], inputs: list[np.ndarray]
) -> None:
    """Keep the integers of a quantized constant that folded op ``node`` only rearranged (a transposed weight)."""
    quant = ctx.quantized.get(node.input[0]) if node.op_type in REARRANGING else None
    out = ctx.const(node.output[0])
    if quant is None or out is None or out.dtype != np.float32:
        return
    moved = relocate(quant, out, lambda probe: fold(ctx, node, [probe, *inputs[1:]])[0])
    if moved is not None:
        ctx.quantized[node.output[0]] = moved


FOLDERS = {"QuantizeLinear": _fold_quantize, "DequantizeLinear": _fold_dequantize}
"""Folding of Q/DQ nodes whose inputs are all constants (merged into :data:`.onnx_fold.FOLDERS`)."""
CONST_INPUTS: dict[str, tuple[int, ...]] = {}
"""No input must be a constant: scales and zero points computed at run time run per tensor (merged into
:data:`.onnx_fold.CONST_INPUTS`)."""
LOAD_TIME_INPUTS: dict[str, tuple[int, ...]] = {"QuantizeLinear": (1, 2), "DequantizeLinear": (1, 2)}
"""Inputs that run in every form only as constants: per-axis and blocked scales and zero points."""


def _check_qdq(node: onnx.NodeProto, opset: int, used: set[str]) -> str | None:
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    given = int(attrs.get("output_dtype", 0))
    if node.op_type == "QuantizeLinear" and given and _elem_name(given) not in _Q_DTYPES:
        return f"output_dtype {_elem_name(given)} is not supported ({', '.join(_Q_DTYPES)})"
    if node.op_type == "DequantizeLinear" and given and _elem_name(given) not in _SCALE_DTYPES:
        return f"output_dtype {_elem_name(given)} is not supported ({', '.join(_SCALE_DTYPES)})"
    precision = int(attrs.get("precision", 0))
    if precision not in (0, onnx.TensorProto.FLOAT):
        return f"precision={_elem_name(precision)} is not supported (compute is float32)"
    return None


CHECKS = {"QuantizeLinear": _check_qdq, "DequantizeLinear": _check_qdq}
"""Attribute checks of Q/DQ nodes on runtime tensors (merged into the importer's checks)."""
