"""conv_transpose2d's text and ONNX forms: the ``--shape`` syntax, ONNX attributes, output size and pads.

``NxCxHxW:MxKHxKW`` (M: output channels) plus ``:s`` strides, ``:p`` pads, ``:o`` output padding, ``:d``
dilations and ``:g`` group options, e.g. ``1x64x32x32:32x2x2:s2`` (a U-Net's 2x upsampling).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from kernelforge.errors import ShapeError
from kernelforge.ops._attrs import AUTO_PADS, lift_1d_attrs

SYNTAX = (
    "NxCxHxW:MxKHxKW[:sS|:sSYxSX][:pP|:pT,L,B,R][:oP|:oPYxPX][:dD|:dDYxDX][:gG], M output channels "
    "(1x64x32x32:32x2x2:s2, 1x16x7x6:8x3x3:s3x2:p1:o1:g2); shapes are separated by ';'"
)
MAX_EXTENT = 1 << 24
"""Largest size, stride, pad or dilation accepted: keeps every shader index inside i32/u32."""

_SHAPE = re.compile(r"^(\d+)x(\d+)x(\d+)x(\d+):(\d+)x(\d+)x(\d+)((?::[a-z]+[0-9x,]*)*)$")
_OPTION = re.compile(r"^([a-z]+)([0-9x,]*)$")
_OP = "conv_transpose2d"
_PER_AXIS = ("kernel_shape", "strides", "dilations", "output_padding", "pads", "output_shape")


def _numbers(text: str, counts: tuple[int, ...], what: str, source: str) -> list[int]:
    values = [int(v) for v in re.split(r"[x,]", text)]
    if len(values) not in counts:
        raise ShapeError(f"{_OP} shape {source!r}: {what} needs {' or '.join(map(str, counts))} numbers, got {text!r}")
    return values


def parse_shape(text: str) -> dict[str, Any]:
    """Return the problem fields a shape text names (sizes, and the options it gives).

    Strides, output padding and dilations take one number or ``YxX``; pads one number or ``top,left,bottom,right``.

    Raises:
        ShapeError: Naming the text and what is wrong with it.
    """
    match = _SHAPE.match(text.strip().lower())
    if not match:
        raise ShapeError(f"{_OP} shape {text!r} is not NxCxHxW:MxKHxKW[:sS][:pP][:oP][:dD][:gG] ({SYNTAX})")
    names = ("n", "c", "h", "w", "m", "kh", "kw")
    fields: dict[str, Any] = dict(zip(names, (int(match.group(i)) for i in range(1, 8)), strict=True))
    keys = {"s": "strides", "o": "output_padding", "d": "dilations"}
    seen: set[str] = set()
    for part in filter(None, match.group(8).split(":")):
        option = _OPTION.match(part)
        if not option or option.group(1) not in ("s", "p", "o", "d", "g") or option.group(1) in seen:
            raise ShapeError(f"{_OP} shape {text!r}: bad or repeated option {part!r}")
        key, value = option.group(1), option.group(2)
        seen.add(key)
        if not value:
            raise ShapeError(f"{_OP} shape {text!r}: option {part!r} has no value")
        if key == "p":
            pads = _numbers(value, (1, 4), "pads (top,left,bottom,right)", text)
            fields["pads"] = tuple(pads * 4 if len(pads) == 1 else pads)
        elif key == "g":
            fields["group"] = _numbers(value, (1,), "group", text)[0]
        else:
            pair = _numbers(value, (1, 2), keys[key], text)
            fields[keys[key]] = (pair[0], pair[-1])
    return fields


# --- ONNX attributes -------------------------------------------------------------------------------------------


def _ints(name: str, value: Any, count: int, low: int) -> tuple[int, ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != count:
        raise ValueError(f"{name}={_show(value)} must be {count} integers")
    if any(isinstance(v, bool) or not isinstance(v, int) or not low <= v < MAX_EXTENT for v in value):
        raise ValueError(f"{name}={_show(value)}: every value must be an integer in [{low}, {MAX_EXTENT})")
    return tuple(value)


def _show(value: Any) -> Any:
    return list(value) if isinstance(value, Sequence) and not isinstance(value, (str, bytes)) else value


def spatial_rank(attrs: Mapping[str, Any]) -> int:
    """Return how many spatial axes a ConvTranspose's attributes describe (2 when none says).

    Raises:
        ValueError: When they disagree.
    """
    ranks = {len(attrs[k]) for k in ("kernel_shape", "strides", "dilations", "output_padding") if k in attrs}
    if "pads" in attrs:
        ranks.add(len(attrs["pads"]) // 2 if len(attrs["pads"]) % 2 == 0 else -1)
    if "output_shape" in attrs:
        ranks.add(len(attrs["output_shape"]))
    if len(ranks) > 1 or -1 in ranks:
        shown = {k: _show(attrs[k]) for k in sorted(attrs) if k in _PER_AXIS}
        raise ValueError(f"the per-axis attributes disagree on the number of spatial axes: {shown}")
    # NOTE: output_shape holds the spatial sizes only (ONNX Runtime refuses one that includes N and C)
    return ranks.pop() if ranks else 2


def _spatial_rank(attrs: Mapping[str, Any]) -> int:
    """Return the attributes' spatial rank, 1 or 2: the kernel's (3-D ones run as 2-D ones, ``onnx_windows``)."""
    rank = spatial_rank(attrs)
    if rank not in (1, 2):
        raise ValueError(f"{rank}-D ConvTranspose is not supported (only 1-D and 2-D)")
    return rank


def onnx_attrs(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """Return the node attributes of an ONNX ConvTranspose (1-D attributes lifted to 2-D over ``H = 1``).

    Raises:
        ValueError: Naming the attribute whose value is not supported (3-D windows, a bad ``auto_pad``...).
    """
    if _spatial_rank(attrs) == 1:
        attrs = lift_1d_attrs(attrs)
    auto_pad = attrs.get("auto_pad", "NOTSET")
    if auto_pad not in AUTO_PADS:
        raise ValueError(f"auto_pad={auto_pad!r} (supported: {', '.join(AUTO_PADS)})")
    group = attrs.get("group", 1)
    if isinstance(group, bool) or not isinstance(group, int) or group < 1:
        raise ValueError(f"group={group!r} must be an integer >= 1")
    kernel = attrs.get("kernel_shape")
    shape = attrs.get("output_shape")
    return {
        "strides": _ints("strides", attrs.get("strides", [1, 1]), 2, 1),
        "pads": _ints("pads", attrs.get("pads", [0, 0, 0, 0]), 4, 0),
        "dilations": _ints("dilations", attrs.get("dilations", [1, 1]), 2, 1),
        "output_padding": _ints("output_padding", attrs.get("output_padding", [0, 0]), 2, 0),
        "group": group,
        "auto_pad": auto_pad,
        "kernel_shape": None if kernel is None else _ints("kernel_shape", kernel, 2, 1),
        "output_shape": None if shape is None else _ints("output_shape", shape, 2, 1),
    }


def resolve_axis(
    size: int, kernel: int, stride: int, dilation: int, pads: tuple[int, int], out_pad: int, auto_pad: str, out: int
) -> tuple[int, int, int]:
    """Return one axis's ``(pad_begin, pad_end, output_padding)`` as ONNX defines them.

    The output is ``stride * (size - 1) + output_padding + (kernel - 1) * dilation + 1 - pad_begin - pad_end``.
    A requested size ``out`` (``output_shape``; 0 when not given) or ``auto_pad`` SAME (``size * stride``)
    sets the pads from their total: SAME_UPPER puts an odd one at the end, the others at the begin. An
    ``output_shape`` longer than the full result gets zeros past its end (no tap reaches them), as in ONNX
    Runtime and the ONNX reference: that is more output padding, not negative pads. VALID means no pads.

    Raises:
        ShapeError: For SAME with a window narrower than the stride (the runtimes disagree on its output).
    """
    full = stride * (size - 1) + out_pad + (kernel - 1) * dilation + 1
    same = out == 0 and auto_pad in ("SAME_UPPER", "SAME_LOWER")
    if same:
        out = size * stride
    if out == 0:
        return (0, 0, out_pad) if auto_pad == "VALID" else (pads[0], pads[1], out_pad)
    total = full - out
    if total < 0 and same:
        # ONNX Runtime clamps the pads at 0 (a shorter output), onnx.reference pads negatively on both sides
        raise ShapeError(
            f"{_OP}: auto_pad={auto_pad} with a {kernel}-tap window (dilation {dilation}) narrower than stride "
            f"{stride} is not supported: the full result ({full}) is shorter than input * stride ({out}), and "
            f"ONNX Runtime and the ONNX reference disagree on that output"
        )
    if total < 0:
        return (0, 0, out_pad - total)
    begin = total // 2 if auto_pad == "SAME_UPPER" else total - total // 2
    return (begin, total - begin, out_pad)
