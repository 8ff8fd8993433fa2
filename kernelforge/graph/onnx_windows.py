"""Windowed ONNX ops beyond the 2-D converters of :mod:`.onnx_ops`: ConvTranspose, every window in 1-D, 3-D pools.

ConvTranspose becomes one ``conv_transpose2d`` node (its attributes read by the op spec's ``from_onnx``); the
kernels read its weights rearranged (at load for constants, by a relayout kernel for weights computed at run
time). A grouped one whose weights are computed at run time runs as one ungrouped node per group over slices of
X's channels and W's first axis, concatenated: the grouped NHWC GLSL kernel's weight order is no permutation of
W's axes, so no relayout gives it.

1-D windows (Conv, ConvTranspose, MaxPool, AveragePool and the global pools over ``[N, C, L]``) run as their
2-D kernels over ``H = 1``: X is reshaped to ``[N, C, 1, L]`` (a view), 3-D weights ``[O, I, K]`` become
``[O, I, 1, K]`` (folded, when constant), the attributes get a neutral H axis
(:func:`kernelforge.ops._attrs.lift_1d_attrs`), the op's 2-D converter runs on that node, and its output is
reshaped back to 3-D. Audio models (Conv1d front ends, keyword spotters) then run on the tuned 2-D kernels.

3-D MaxPool and AveragePool (``[N, C, D, H, W]``) run as two 2-D pools: over (H, W) of ``[N, C*D, H, W]``,
then over (D, 1) of ``[N, C, D, OH*OW]``. A box window is the product of its axes' windows, so the maximum of the
maxima is the maximum, and an average's divisor (the window's padded or valid elements, clipped by ``ceil_mode``)
is the product of each axis's: the average of the averages is the average.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import onnx
from onnx import helper

from kernelforge.graph.onnx_context import Context, Converter, NodeUnsupported
from kernelforge.ops import get_op
from kernelforge.ops._attrs import lift_1d_attrs
from kernelforge.ops._conv_transpose_attrs import spatial_rank

WINDOWED = ("Conv", "ConvTranspose", "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool")
"""ONNX op types whose 1-D form runs through their 2-D converter."""
_WEIGHTED = ("Conv", "ConvTranspose")
"""Of those, the ones whose input 1 is a weight tensor with the window's axes."""


def _attrs(node: onnx.NodeProto) -> dict[str, Any]:
    """Return a node's attributes as Python values (strings decoded)."""
    values = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    return {k: v.decode() if isinstance(v, bytes) else v for k, v in values.items()}


def _conv_transpose(ctx: Context, node: onnx.NodeProto) -> None:
    """Convert a 2-D ConvTranspose: ``conv_transpose2d`` over X, W and the optional bias (3-D: see below)."""
    rank = len(ctx.shape(node.input[0]))
    if rank == 5:
        _conv_transpose_3d(ctx, node)
        return
    if rank != 4:
        raise NodeUnsupported(f"X of rank {rank}: only 1-D, 2-D and 3-D windows are supported")
    try:
        attrs = get_op("conv_transpose2d").from_onnx(node.op_type, ctx.opset, _attrs(node))
    except ValueError as exc:
        raise NodeUnsupported(str(exc)) from None
    inputs = [ctx.ir(name) if name else "" for name in node.input]
    group = int(attrs.get("group", 1))
    if group == 1 or ctx.const(node.input[1]) is not None:
        ctx.emit("conv_transpose2d", inputs, attrs, out=node.output[0])
        return
    c, m = ctx.shape(node.input[0])[1], ctx.shape(node.input[1])[1] * group
    if c % group:
        raise ctx.fail(f"group={group} must divide X's {c} channels")
    step = c // group

    def part(name: str, axis: int, start: int, size: int) -> str:
        return ctx.emit("slice", [name], {"starts": (start,), "ends": (start + size,), "axes": (axis,), "steps": None})

    b = inputs[2] if len(inputs) > 2 else ""
    pieces = []
    for g in range(group):
        x_g, w_g = part(inputs[0], 1, g * step, step), part(inputs[1], 0, g * step, step)
        b_g = part(b, 0, g * (m // group), m // group) if b else ""
        pieces.append(ctx.emit("conv_transpose2d", [x_g, w_g, b_g], {**attrs, "group": 1}))
    ctx.emit("concat", pieces, {"axis": 1}, out=node.output[0])


def split_3d_attrs(attrs: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Return a 3-D ConvTranspose's attributes as those of its (H, W) pass and of its depth pass.

    Raises:
        ValueError: For ``auto_pad`` or ``output_shape`` (explicit pads only), or per-axis attributes of other
            lengths than 3 values (6 pads).
    """
    if attrs.get("auto_pad", "NOTSET") != "NOTSET" or "output_shape" in attrs:
        raise ValueError("a 3-D ConvTranspose takes explicit pads only (no auto_pad or output_shape)")
    strides = list(attrs.get("strides", [1] * 3))
    dilations = list(attrs.get("dilations", [1] * 3))
    pads = list(attrs.get("pads", [0] * 6))
    out_pad = list(attrs.get("output_padding", [0] * 3))
    kernel = list(attrs.get("kernel_shape", [1] * 3))
    if (len(strides), len(dilations), len(pads), len(out_pad), len(kernel)) != (3, 3, 6, 3, 3):
        raise ValueError(f"strides {strides}, dilations {dilations}, pads {pads}, output_padding {out_pad} and "
                         f"kernel_shape {kernel} of a 3-D ConvTranspose must have 3, 3, 6, 3 and 3 values")  # fmt: skip
    plane = {"strides": strides[1:], "dilations": dilations[1:], "pads": [pads[1], pads[2], pads[4], pads[5]],
             "output_padding": out_pad[1:], "group": int(attrs.get("group", 1))}  # fmt: skip
    depth = {"strides": [strides[0], 1], "dilations": [dilations[0], 1], "pads": [pads[0], 0, pads[3], 0],
             "output_padding": [out_pad[0], 0]}  # fmt: skip
    return plane, depth


def is_3d(attrs: Mapping[str, Any]) -> bool:
    """Whether a ConvTranspose's per-axis attributes describe three spatial axes.

    Raises:
        ValueError: When they disagree on the number.
    """
    return spatial_rank(attrs) == 3


def _conv_transpose_3d(ctx: Context, node: onnx.NodeProto) -> None:
    """Convert a 3-D ConvTranspose as 2-D ones: one over (H, W) per depth tap, then one that places depth.

    X ``[N, C, D, H, W]`` is viewed as ``N*D`` images of C channels; tap ``kd`` of W (``[C, M/g, KH, KW]``)
    transposes them to ``z_kd`` ``[N*D, M, OH, OW]``. Output depth ``od`` sums ``z_kd`` at input depth ``d``
    where ``od = d * stride + kd * dilation - pad``: that is a grouped ConvTranspose over (D, OH*OW) of the
    ``M * KD`` channels ``(m, kd)``, group ``M``, whose constant weight picks tap ``kd`` (1 at ``[m*KD + kd, 0,
    kd, 0]``), with the depth axis's stride, dilation, pads and output padding, and the bias.
    """
    try:
        plane, depth = split_3d_attrs(_attrs(node))
    except ValueError as exc:
        raise NodeUnsupported(str(exc)) from None
    n, c, d, h, w = ctx.shape(node.input[0])
    wc, mg, kd_size, kh, kw = ctx.shape(node.input[1])
    m = mg * int(plane.get("group", 1))
    # the N*D images of C channels
    x_t = ctx.emit("transpose", [ctx.ir(node.input[0])], {"perm": (0, 2, 1, 3, 4)})
    images = _onnx_name(ctx, f"{node.output[0]}_images")
    ctx.names[images] = ctx.reshape(x_t, (n * d, c, h, w))
    weight = ctx.const(node.input[1])
    taps = []
    for kd in range(kd_size):
        tap = _onnx_name(ctx, f"{node.input[1]}_tap{kd}")
        if weight is not None:
            ctx.consts[tap] = weight[:, :, kd]
        else:
            window = {"starts": (kd,), "ends": (kd + 1,), "axes": (2,), "steps": None}
            ctx.names[tap] = ctx.reshape(ctx.emit("slice", [ctx.ir(node.input[1])], window), (wc, mg, kh, kw))
        z = _convert_as(ctx, _conv_transpose, node, [images, tap], plane, f"_tap{kd}")
        oh, ow = ctx.shape(z)[2:]
        taps.append(ctx.reshape(ctx.ir(z), (n, d, m, 1, oh * ow)))
    stacked = ctx.emit("concat", taps, {"axis": 3}) if kd_size > 1 else taps[0]
    by_tap = ctx.emit("transpose", [stacked], {"perm": (0, 2, 3, 1, 4)})
    columns = _onnx_name(ctx, f"{node.output[0]}_columns")
    ctx.names[columns] = ctx.reshape(by_tap, (n, m * kd_size, d, oh * ow))
    pick = np.zeros((m * kd_size, 1, kd_size, 1), np.float32)
    for k in range(kd_size):
        pick[k::kd_size, 0, k, 0] = 1.0
    picker = _onnx_name(ctx, f"{node.output[0]}_depth_taps")
    ctx.consts[picker] = pick
    depth["group"] = m
    bias = [node.input[2]] if len(node.input) > 2 and node.input[2] else []
    placed = _convert_as(ctx, _conv_transpose, node, [columns, picker, *bias], depth, "_depth")
    ctx.reshape(ctx.ir(placed), (n, m, ctx.shape(placed)[2], oh, ow), out=node.output[0])


def _onnx_name(ctx: Context, base: str) -> str:
    """Return a fresh ONNX-level name: no later IR value may take it."""
    name = ctx.fresh(base)
    ctx.reserved.add(name)
    return name


def _view(ctx: Context, name: str, shape: tuple[int, ...], suffix: str = "_view") -> str:
    """Return an ONNX-level name for tensor ``name`` viewed as ``shape`` (a constant is reshaped at load)."""
    viewed = _onnx_name(ctx, f"{name}{suffix}")
    data = ctx.const(name)
    if data is not None:
        ctx.consts[viewed] = data.reshape(shape)
    else:
        ctx.names[viewed] = ctx.reshape(ctx.ir(name), shape)
    return viewed


def _convert_as(
    ctx: Context, convert: Converter, node: onnx.NodeProto, inputs: list[str], attrs: dict[str, Any], suffix: str
) -> str:
    """Run ``convert`` on a node of ``node``'s kind over ``inputs`` with ``attrs``; return its ONNX-level output."""
    out = _onnx_name(ctx, f"{node.output[0]}{suffix}")
    flat = helper.make_node(node.op_type, inputs, [out], name=node.name, **attrs)
    ctx.node = flat  # the 2-D converter reads its attributes from the context's node
    try:
        convert(ctx, flat)
    finally:
        ctx.node = node
    return out


def _lifted(ctx: Context, name: str, what: str) -> str:
    """Return an ONNX-level name for tensor ``name`` (``[a, b, L]``) viewed as ``[a, b, 1, L]``."""
    shape = ctx.shape(name)
    if len(shape) != 3:
        raise ctx.fail(f"{what} {name!r} of shape {shape} must be 3-D in a 1-D {ctx.node.op_type}")
    return _view(ctx, name, (shape[0], shape[1], 1, shape[2]), "_2d")


def lift_1d(convert: Converter) -> Converter:
    """Return a converter that runs a 1-D node (3-D input) through ``convert`` over ``H = 1``, others as they are."""

    def convert_any(ctx: Context, node: onnx.NodeProto) -> None:
        if len(ctx.shape(node.input[0])) != 3:
            convert(ctx, node)
            return
        inputs = list(node.input)
        inputs[0] = _lifted(ctx, inputs[0], "input")
        if node.op_type in _WEIGHTED and len(inputs) > 1 and inputs[1]:
            inputs[1] = _lifted(ctx, inputs[1], "weight")
        out = _convert_as(ctx, convert, node, inputs, lift_1d_attrs(_attrs(node)), "_2d")
        n, c, _, length = ctx.shape(out)
        ctx.reshape(ctx.ir(out), (n, c, length), out=node.output[0])

    return convert_any


def split_3d(convert: Converter) -> Converter:
    """Return a pool converter that runs a 3-D pool (5-D input) as two 2-D pools through ``convert``."""

    def convert_any(ctx: Context, node: onnx.NodeProto) -> None:
        shape = ctx.shape(node.input[0])
        if len(shape) != 5:
            convert(ctx, node)
            return
        n, c, d, h, w = shape
        attrs = _attrs(node)
        kernel = list(attrs.get("kernel_shape", []))
        if len(kernel) != 3:
            raise ctx.fail(f"kernel_shape={kernel} of a 5-D input: expected 3 sizes")
        strides, dilations = list(attrs.get("strides", [1] * 3)), list(attrs.get("dilations", [1] * 3))
        pads = list(attrs.get("pads", [0] * 6))
        if len(strides) != 3 or len(dilations) != 3 or len(pads) != 6:
            raise ctx.fail(f"strides {strides}, dilations {dilations} and pads {pads} must have 3, 3 and 6 values")
        common = {k: v for k, v in attrs.items() if k not in ("kernel_shape", "strides", "dilations", "pads")}
        over_hw = {**common, "kernel_shape": kernel[1:], "strides": strides[1:], "dilations": dilations[1:],
                   "pads": [pads[1], pads[2], pads[4], pads[5]]}  # fmt: skip
        plane = _convert_as(ctx, convert, node, [_view(ctx, node.input[0], (n, c * d, h, w))], over_hw, "_pass")
        oh, ow = ctx.shape(plane)[2:]
        over_d = {**common, "kernel_shape": [kernel[0], 1], "strides": [strides[0], 1], "dilations": [dilations[0], 1],
                  "pads": [pads[0], 0, pads[3], 0]}  # fmt: skip
        depth = _convert_as(ctx, convert, node, [_view(ctx, plane, (n, c, d, oh * ow))], over_d, "_pass")
        od = ctx.shape(depth)[2]
        ctx.reshape(ctx.ir(depth), (n, c, od, oh, ow), out=node.output[0])

    return convert_any


def lift_windows(converters: Mapping[str, Converter]) -> dict[str, Converter]:
    """Return the :data:`WINDOWED` ops' converters, taking 1-D nodes too (:func:`lift_1d`), 3-D pools too.

    Each wraps the 2-D converter in ``converters``, except ConvTranspose's, which is this module's.
    """
    two_d = {**converters, "ConvTranspose": _conv_transpose}
    lifted = {op: lift_1d(two_d[op]) for op in WINDOWED if op in two_d}
    return {op: split_3d(convert) if op in ("MaxPool", "AveragePool") else convert for op, convert in lifted.items()}
