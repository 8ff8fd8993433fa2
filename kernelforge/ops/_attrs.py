"""ONNX attribute rules shared by the windowed ops (conv, pooling): ``auto_pad`` resolution, 1-D windows."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kernelforge.errors import ShapeError

AUTO_PADS = ("NOTSET", "VALID", "SAME_UPPER", "SAME_LOWER")


def resolve_auto_pad(
    op: str, auto_pad: str, size: int, kernel: int, stride: int, dilation: int
) -> tuple[int, int] | None:
    """Return the (begin, end) pads ``auto_pad`` stands for on one axis, or None for ``NOTSET``.

    SAME pads to ``ceil(size / stride)`` outputs (the odd pad goes last for SAME_UPPER, first for
    SAME_LOWER); VALID pads nothing. Negative totals (a stride past the window) mean no padding.

    Raises:
        ShapeError: Naming ``op`` when ``auto_pad`` is not one of :data:`AUTO_PADS`.
    """
    if auto_pad not in AUTO_PADS:
        raise ShapeError(f"{op}: auto_pad must be one of {list(AUTO_PADS)}, got {auto_pad!r}")
    if auto_pad == "NOTSET":
        return None
    if auto_pad == "VALID":
        return (0, 0)
    out = -(-size // stride)
    total = max(0, (out - 1) * stride + (kernel - 1) * dilation + 1 - size)
    small, big = total // 2, total - total // 2
    return (small, big) if auto_pad == "SAME_UPPER" else (big, small)


_H_AXIS = {"kernel_shape": 1, "strides": 1, "dilations": 1, "output_padding": 0}
"""Per-axis attributes of the windowed ops and what the H axis of a 1-D window lifted to 2-D takes."""


def lift_1d_attrs(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """Return a 1-D windowed node's ONNX attributes as those of the same window over ``H = 1`` (2-D).

    Per-axis lists get H's neutral value in front (kernel, stride and dilation 1, output padding 0), ``pads``
    ``[begin, end]`` become ``[0, begin, 0, end]`` and ConvTranspose's ``output_shape`` ``[L]`` becomes
    ``[1, L]``; the other attributes are kept as they are. Values of the wrong length are kept too, for the
    2-D checks to name.
    """
    lifted = dict(attrs)
    for name, neutral in _H_AXIS.items():
        value = attrs.get(name)
        if value is not None and len(value) == 1:
            lifted[name] = [neutral, *value]
    pads = attrs.get("pads")
    if pads is not None and len(pads) == 2:
        lifted["pads"] = [0, pads[0], 0, pads[1]]
    shape = attrs.get("output_shape")
    if shape is not None and len(shape) == 1:
        lifted["output_shape"] = [1, *shape]
    return lifted
