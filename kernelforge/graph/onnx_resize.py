"""ONNX Resize and Upsample: the attribute check and the converter to the ``resize`` op (H and W of NCHW).

The ONNX inputs that are not data (``scales``, ``sizes``, and ``roi`` where ``tf_crop_and_resize`` reads it)
must be constants. ``axes`` and the
full-rank forms both reach the op as H and W values; resizing or cropping N or C is refused.
``keep_aspect_ratio_policy`` is kept on the op, which derives the one scale of H and W from ``sizes``: the
policy picks over every axis it is given, so an axis N or C that wins it (scale 1) leaves the tensor as it is.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import onnx
from onnx import helper

from kernelforge.graph.onnx_context import Context, Converter, NodeUnsupported
from kernelforge.ops.resize import COORDINATE_MODES, MODES, NEAREST_MODES, POLICIES

__all__ = ["CONVERTERS", "check_resize"]

RANK = 4


def _attr(node: onnx.NodeProto, name: str, default: Any = None) -> Any:
    for attribute in node.attribute:
        if attribute.name == name:
            value = helper.get_attribute_value(attribute)
            return value.decode() if isinstance(value, bytes) else value
    return default


def check_resize(node: onnx.NodeProto, opset: int, used: set[str]) -> str | None:
    """Return why a Resize or Upsample node's attributes are not supported, or None."""
    mode = _attr(node, "mode", "nearest")
    if mode not in MODES:
        return f"mode={mode!r} (supported: {', '.join(MODES)})"
    coord = _attr(node, "coordinate_transformation_mode", "half_pixel")
    if coord not in COORDINATE_MODES:
        return f"coordinate_transformation_mode={coord!r} (supported: {', '.join(COORDINATE_MODES)})"
    nearest = _attr(node, "nearest_mode", "round_prefer_floor")
    if nearest not in NEAREST_MODES:
        return f"nearest_mode={nearest!r} (supported: {', '.join(NEAREST_MODES)})"
    for name in ("antialias", "exclude_outside"):
        if mode == "nearest" and _attr(node, name, 0):
            return f"{name}=1 applies to linear and cubic modes, not nearest"
    policy = _attr(node, "keep_aspect_ratio_policy", "stretch")
    return None if policy in POLICIES else f"keep_aspect_ratio_policy={policy!r} (supported: {', '.join(POLICIES)})"


def _full(ctx: Context, values: list[Any], axes: list[int] | None, default: list[Any], what: str) -> list[Any]:
    """Return per-axis ``values`` (given for ``axes``, or for every axis) as values for all 4 axes."""
    if axes is None:
        if len(values) != RANK:
            raise ctx.fail(f"needs 4 {what} for a 4-D input, got {values}")
        return values
    if len(values) != len(axes):
        raise ctx.fail(f"{what} {values} do not match axes {axes}")
    full = list(default)
    for a, value in zip(axes, values, strict=True):
        full[a] = value
    return full


def _axes(ctx: Context) -> list[int] | None:
    axes = ctx.attr("axes")
    if axes is None:
        return None
    if any(not -RANK <= int(a) < RANK for a in axes) or len({int(a) % RANK for a in axes}) != len(axes):
        raise ctx.fail(f"axes {list(axes)} must be distinct axes of a 4-D input")
    return [int(a) % RANK for a in axes]


def _roi(ctx: Context, axes: list[int] | None) -> tuple[float, float, float, float]:
    """Return the H and W region of interest ``(start_h, start_w, end_h, end_w)`` of ``tf_crop_and_resize``."""
    name = ctx.input(1)
    data = ctx.const(name)
    if name and data is None:
        raise NodeUnsupported("roi needs a runtime value; only a constant is supported")
    if data is None or data.size == 0:
        return (0.0, 0.0, 1.0, 1.0)
    values = [float(v) for v in data.reshape(-1)]
    if len(values) % 2:
        raise ctx.fail(f"roi {values} must hold starts then ends: an even number of values")
    half = len(values) // 2
    starts = _full(ctx, values[:half], axes, [0.0] * RANK, "roi starts")
    ends = _full(ctx, values[half:], axes, [1.0] * RANK, "roi ends")
    if any(not (math.isclose(starts[a], 0.0) and math.isclose(ends[a], 1.0)) for a in (0, 1)):
        raise NodeUnsupported(f"roi {values}: cropping the N or C axis is not supported; only H and W")
    return (starts[2], starts[3], ends[2], ends[3])


def _policy(
    ctx: Context, sizes: list[int], axes: list[int] | None, dims: tuple[int, ...], policy: str
) -> tuple[tuple[int, int], bool] | None:
    """Return the H and W sizes for the op and whether it keeps the policy; None when the tensor stays as it is.

    The policy's scale is the smallest or largest ``size / input`` over the node's axes. With H and W both
    among them the op applies the policy itself; with one, that axis's own size and scale are the result. A
    scale from N or C is 1 (their sizes may only keep them), so every axis keeps its size. An N or C of size 1
    kept at 1 by another scale is a blend of one element with itself: left as it is.
    """
    chosen = list(range(RANK)) if axes is None else axes
    ratios = {a: sizes[a] / dims[a] for a in chosen}
    scale = min(ratios.values()) if policy == "not_larger" else max(ratios.values())
    for a in (0, 1):
        if a in chosen and (int(scale * dims[a] + 0.5) != dims[a] or (dims[a] > 1 and not math.isclose(scale, 1.0))):
            raise NodeUnsupported(f"keep_aspect_ratio_policy={policy!r} resizes the N or C axis; only H and W")
    spatial = [a for a in (2, 3) if a in chosen]
    if scale not in [ratios[a] for a in spatial]:
        return None
    hw = (sizes[2] if 2 in chosen else dims[2], sizes[3] if 3 in chosen else dims[3])
    return hw, len(spatial) == 2


def resize(ctx: Context, node: onnx.NodeProto) -> None:
    """Convert Resize (opset 10-19) and Upsample (opset 7-9) of a 4-D tensor over H and W."""
    x = node.input[0]
    dims = ctx.shape(x)
    if len(dims) != RANK:
        raise NodeUnsupported(f"input {x!r} has shape {dims}: only 4-D (2-D spatial) tensors are supported")
    n, c = dims[0], dims[1]
    mode = ctx.attr("mode", "nearest")
    fields: dict[str, Any] = {"mode": mode}
    if node.op_type == "Upsample" or ctx.opset < 11:
        # Upsample and Resize-10: asymmetric coordinates; nearest truncates up and rounds up down (onnxruntime)
        scales_in = ctx.attr("scales") if ctx.attr("scales") is not None else ctx.const(ctx.input(1))
        if scales_in is None:
            raise NodeUnsupported("scales need a runtime value; only constant scales are supported")
        scales: list[float] | None = [float(s) for s in np.asarray(scales_in).reshape(-1)]
        sizes: list[int] | None = None
        fields["coordinate_transformation_mode"] = "asymmetric"
        fields["nearest_mode"] = "floor" if min(scales or [1.0]) >= 1.0 else "ceil"
    else:
        coord = ctx.attr("coordinate_transformation_mode", "half_pixel")
        fields["coordinate_transformation_mode"] = coord
        fields["nearest_mode"] = ctx.attr("nearest_mode", "round_prefer_floor")
        scale_data, size_data = ctx.const(ctx.input(2)), ctx.const(ctx.input(3))
        if (ctx.input(2) and scale_data is None) or (ctx.input(3) and size_data is None):
            raise NodeUnsupported("scales/sizes need a runtime value; only constant ones are supported")
        scales = [float(s) for s in scale_data.reshape(-1)] if scale_data is not None and scale_data.size else None
        sizes = [int(s) for s in size_data.reshape(-1)] if size_data is not None and size_data.size else None
        axes = _axes(ctx)
        if scales is not None:
            scales = _full(ctx, scales, axes, [1.0] * RANK, "scales")
        if sizes is not None:
            sizes = _full(ctx, sizes, axes, list(dims), "sizes")
        # the op's other fields only where they differ from its defaults (nearest was checked without them)
        if mode == "cubic" and ctx.attr("cubic_coeff_a") is not None:
            fields["cubic_coeff_a"] = float(ctx.attr("cubic_coeff_a"))
        for name in ("exclude_outside", "antialias"):
            if ctx.attr(name, 0):
                fields[name] = True
        if coord == "tf_crop_and_resize":
            fields["roi"] = _roi(ctx, axes)
            fields["extrapolation_value"] = float(ctx.attr("extrapolation_value", 0.0))
        policy = ctx.attr("keep_aspect_ratio_policy", "stretch")
        if sizes is not None and scales is None and policy != "stretch":
            found = _policy(ctx, sizes, axes, dims, policy)
            if found is None:
                ctx.alias(node.output[0], x)
                return
            hw, keep = found
            sizes = [n, c, *hw]
            if keep:
                fields["keep_aspect_ratio_policy"] = policy
    given = scales if scales is not None else sizes
    if given is None or len(given) != RANK:
        raise ctx.fail(f"needs 4 scales or sizes for a 4-D input, got {given}")
    if (scales is not None and scales[:2] != [1.0, 1.0]) or (sizes is not None and sizes[:2] != [n, c]):
        raise NodeUnsupported(f"resizing the N or C axis ({given}) is not supported; only H and W")
    fields["scales"] = None if scales is None else (scales[2], scales[3])
    fields["sizes"] = None if sizes is None else (sizes[2], sizes[3])
    ctx.emit("resize", [ctx.ir(x)], fields, out=node.output[0])


CONVERTERS: dict[str, Converter] = {"Resize": resize, "Upsample": resize}
