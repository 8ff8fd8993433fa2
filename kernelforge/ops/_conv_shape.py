"""The text form of a conv2d problem, as ``kernelforge tune --shape`` and the database keys use it.

``NxCxHxW:MxKHxKW`` plus ``:s`` strides, ``:p`` pads, ``:d`` dilations and ``:g`` group options, e.g.
``1x64x56x56:64x3x3:s1:p1``.
"""

from __future__ import annotations

import re
from typing import Any

from kernelforge.errors import ShapeError

SYNTAX = (
    "NxCxHxW:MxKHxKW[:sS|:sSYxSX][:pP|:pT,L,B,R][:dD|:dDYxDX][:gG] (1x64x56x56:64x3x3:s1:p1, "
    "1x32x112x112:32x3x3:s2:p0,0,1,1:g32); a trailing /qi8, /qu8 (c: per channel), /qi4g32 or /qf16 stores W "
    "as int8, uint8, int4 or float16 on the device; shapes are separated by ';'"
)
_SHAPE = re.compile(r"^(\d+)x(\d+)x(\d+)x(\d+):(\d+)x(\d+)x(\d+)((?::[a-z]+[0-9x,]*)*)$")
_OPTION = re.compile(r"^([a-z]+)([0-9x,]*)$")


def _pair(text: str, what: str) -> tuple[int, int]:
    values = [int(v) for v in re.split(r"[x,]", text)]
    if len(values) == 1:
        return values[0], values[0]
    if len(values) == 2:
        return values[0], values[1]
    raise ShapeError(f"conv2d shape: {what} needs 1 or 2 numbers, got {text!r}")


def parse_shape(text: str) -> dict[str, Any]:
    """Return the ConvProblem fields a shape text names (sizes, and strides/pads/dilations/group if given).

    Strides and dilations take one number or ``YxX``; pads one number or ``top,left,bottom,right``.

    Raises:
        ShapeError: Naming the text and what is wrong with it.
    """
    match = _SHAPE.match(text.strip().lower())
    if not match:
        raise ShapeError(f"conv2d shape {text!r} is not NxCxHxW:MxKHxKW[:sS][:pP][:dD][:gG] ({SYNTAX})")
    sizes = dict(zip(("n", "c", "h", "w", "m", "kh", "kw"), (int(match.group(i)) for i in range(1, 8)), strict=True))
    options: dict[str, Any] = {}
    seen: set[str] = set()
    for part in filter(None, match.group(8).split(":")):
        opt = _OPTION.match(part)
        if not opt or opt.group(1) not in ("s", "p", "d", "g") or opt.group(1) in seen:
            raise ShapeError(f"conv2d shape {text!r}: bad or repeated option {part!r}")
        key, value = opt.group(1), opt.group(2)
        seen.add(key)
        if not value:
            raise ShapeError(f"conv2d shape {text!r}: option {part!r} has no value")
        if key == "p":
            numbers = [int(v) for v in re.split(r"[x,]", value)]
            if len(numbers) not in (1, 4):
                raise ShapeError(f"conv2d shape {text!r}: pads need 1 or 4 numbers (top,left,bottom,right)")
            options["pads"] = tuple(numbers * 4 if len(numbers) == 1 else numbers)
        elif key == "g":
            options["group"] = int(value)
        else:
            options["strides" if key == "s" else "dilations"] = _pair(value, key)
    return {**sizes, **options}
