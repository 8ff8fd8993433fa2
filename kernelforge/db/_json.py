"""Bounded JSON reading for files that may have come from anywhere (tuning databases, tuning reports).

A file is refused, with a reason, before it can cost memory or recursion: past a size, past a nesting depth,
with an integer of more digits than any real value has, or with NaN/Infinity.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

MAX_BYTES = 64 << 20
"""Largest file read (the shipped device files are 40-70 KB)."""
MAX_DEPTH = 32
"""Deepest nesting of arrays and objects (a device file nests 5 deep)."""
MAX_DIGITS = 24
"""Most digits in an integer literal (Python refuses 4300 and more only after reading them)."""


class BoundsError(ValueError):
    """A JSON text is over a bound; the message says which."""


def _depth(text: str) -> int:
    """Return the deepest nesting of ``[`` and ``{`` outside strings (a linear scan, no recursion)."""
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def _int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_DIGITS:
        raise BoundsError(f"an integer of {len(text.lstrip('-'))} digits (at most {MAX_DIGITS})")
    return int(text)


def _float(text: str) -> float:
    if len(text) > 64:
        raise BoundsError(f"a number of {len(text)} characters")
    return float(text)


def _constant(name: str) -> Any:
    raise BoundsError(f"{name} is not a number JSON allows")


def loads(text: str) -> Any:
    """Parse JSON text within the bounds.

    Raises:
        BoundsError: Naming the bound a text breaks (depth, digits, NaN/Infinity).
        json.JSONDecodeError: For text that is not JSON.
    """
    depth = _depth(text)
    if depth > MAX_DEPTH:
        raise BoundsError(f"nesting {depth} deep (at most {MAX_DEPTH})")
    return json.loads(text, parse_int=_int, parse_float=_float, parse_constant=_constant)


def read(path: Path) -> Any:
    """Read and parse a JSON file within the bounds.

    Raises:
        BoundsError: For a file over :data:`MAX_BYTES` or text over a bound.
        OSError, UnicodeDecodeError, json.JSONDecodeError: As reading and parsing raise them.
    """
    size = path.stat().st_size
    if size > MAX_BYTES:
        raise BoundsError(f"{size} bytes (at most {MAX_BYTES})")
    return loads(path.read_text(encoding="utf-8"))
