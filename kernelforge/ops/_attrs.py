"""ONNX attribute rules shared by the windowed ops (conv, pooling): ``auto_pad`` resolution."""

from __future__ import annotations

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
