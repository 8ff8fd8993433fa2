"""The attention problem: its fields, the ``--shape`` syntax and key, and the float64 reference.

``out = softmax(scale * Q·Kᵀ (masked)) · V`` per (batch, head, query row). Q is ``[B, H, Sq, D]``, K
``[B, Hkv, Skv, D]`` (``[B, Hkv, D, Skv]`` when ``k_transposed``), V ``[B, Hkv, Skv, Dv]``; query head ``h``
reads K/V head ``h // (H / Hkv)`` (grouped-query attention when ``Hkv < H``). The scores of a row are, in order:

1. ``scale * q·k``;
2. with a select mask (broadcastable to ``[B, H, Sq, Skv]``): ``fill`` where the mask is 0, the score elsewhere
   (``Where(mask, scores, fill)``; ONNX Attention's boolean ``attn_mask`` is this with ``fill = -inf``);
3. with an additive mask (broadcastable likewise): plus the mask;
4. with ``causal = c``: keys ``j > i + c`` take no part at all (ONNX Attention's ``is_causal`` is ``c = 0``);
   with ``lower = w``: keys ``j < i + w`` take no part either (a sliding window's left edge).

With ``softcap = t``, step 1 is ``t * tanh(scale * q·k / t)`` (Gemma 2's logit soft-capping, ONNX Attention's
``softcap``).

A row whose max is NaN or +inf gives NaN (a NaN score, or ``inf - inf`` in the softmax, as ONNX Runtime's
Softmax). A row with no key left, or only scores of -inf, gives NaN like an unfused Softmax of -inf, or 0 with
``zero_empty`` (what ONNX Attention defines and ONNX Runtime computes).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from kernelforge.errors import ShapeError
from kernelforge.ops.shapes import check_dims, parse_dims

Shape4 = tuple[int, int, int, int]

_DIMS4 = re.compile(r"^\d+x\d+x\d+x\d+$")
_OPTION = re.compile(r"^(kv|dv|kt|cap|lb|g|s|m|w|f|c|z|l)(.*)$")
SEQ_MAJOR = "qkvo"
"""The tensors that may be laid out sequence-major, ``[B, S, H, D]``, in this order: Q, K, V and the output."""


def f32_number(value: Any, what: str, finite: bool = True) -> float:
    """Return ``value`` as the shortest decimal that reads back as the same float32 (``inf`` kept when allowed).

    Raises:
        ShapeError: When it is not a number, is NaN, or is infinite where ``finite`` is asked.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ShapeError(f"attention: {what} must be a number, got {value!r}")
    number = float(np.float32(value))
    if math.isnan(number) or (finite and not math.isfinite(number)):
        raise ShapeError(f"attention: {what} must be {'finite' if finite else 'a number, not NaN'}, got {value!r}")
    return number if math.isinf(number) else float(str(np.float32(number)))


def _mask_shape(shape: Any, full: Shape4, what: str) -> Shape4 | None:
    """Return a mask shape left-padded to 4-D after checking that it broadcasts to ``full``."""
    if shape is None:
        return None
    dims = check_dims("attention", what, shape, max_rank=4)
    padded = (1,) * (4 - len(dims)) + dims
    if any(d not in (1, f) for d, f in zip(padded, full, strict=True)):
        raise ShapeError(f"attention: {what} of shape {dims} does not broadcast to the scores {full}")
    return (padded[0], padded[1], padded[2], padded[3])


@dataclass(frozen=True)
class AttentionProblem:
    """One attention call (see the module docstring); ``None`` fields take their defaults in ``__post_init__``.

    Attributes:
        batch, heads, q_len, head_dim: Q's shape ``[B, H, Sq, D]``.
        kv_len: Keys per row, ``Skv`` (default ``Sq``).
        v_dim: V's last axis, ``Dv`` (default ``D``).
        kv_heads: K/V heads, ``Hkv``, a divisor of ``H`` (default ``H``).
        k_transposed: K arrives as ``[B, Hkv, D, Skv]`` (Kᵀ already laid out).
        scale: Multiplies ``q·k`` (default ``1/sqrt(D)``), a float32 decimal.
        add_mask: The additive mask's shape, left-padded to 4-D, or None.
        select_mask: The select mask's shape, left-padded to 4-D, or None.
        fill: The score where the select mask is 0 (``-inf`` allowed).
        causal: Keys ``j <= i + causal`` are attended (None: no causal limit).
        lower: Keys ``j >= i + lower`` are attended (None: no lower limit).
        softcap: Scores are soft-capped to ``(-softcap, softcap)`` (None: not capped), a positive float32.
        zero_empty: A row with no attendable key gives 0 instead of NaN.
        seq_major: The tensors (letters of ``qkvo``) laid out ``[B, S, H, D]`` (heads inside the sequence, as a
            projection writes them) instead of ``[B, H, S, D]``: the kernels read and write them in place, so
            the transposes exporters put around attention (``split_heads``/``merge_heads``) cost nothing.
    """

    batch: int
    heads: int
    q_len: int
    head_dim: int
    kv_len: int | None = None
    v_dim: int | None = None
    kv_heads: int | None = None
    k_transposed: bool = False
    scale: float | None = None
    add_mask: tuple[int, ...] | None = None
    select_mask: tuple[int, ...] | None = None
    fill: float = -math.inf
    causal: int | None = None
    zero_empty: bool = False
    lower: int | None = None
    softcap: float | None = None
    seq_major: str = ""

    def __post_init__(self) -> None:
        dims = check_dims("attention", "shape", (self.batch, self.heads, self.q_len, self.head_dim))
        kv_len = self.q_len if self.kv_len is None else self.kv_len
        v_dim = self.head_dim if self.v_dim is None else self.v_dim
        kv_heads = self.heads if self.kv_heads is None else self.kv_heads
        extra = check_dims("attention", "kv_len, v_dim and kv_heads", (kv_len, v_dim, kv_heads))
        object.__setattr__(self, "kv_len", extra[0])
        object.__setattr__(self, "v_dim", extra[1])
        object.__setattr__(self, "kv_heads", extra[2])
        if dims[1] % extra[2]:
            raise ShapeError(f"attention: kv_heads={extra[2]} must divide heads={dims[1]}")
        for flag in ("k_transposed", "zero_empty"):
            if not isinstance(getattr(self, flag), (bool, np.bool_)):
                raise ShapeError(f"attention: {flag} must be a bool, got {getattr(self, flag)!r}")
            object.__setattr__(self, flag, bool(getattr(self, flag)))
        scale = 1.0 / math.sqrt(dims[3]) if self.scale is None else self.scale
        object.__setattr__(self, "scale", f32_number(scale, "scale"))
        object.__setattr__(self, "fill", f32_number(self.fill, "fill", finite=False))
        full = (dims[0], dims[1], dims[2], extra[0])
        object.__setattr__(self, "add_mask", _mask_shape(self.add_mask, full, "add_mask"))
        object.__setattr__(self, "select_mask", _mask_shape(self.select_mask, full, "select_mask"))
        causal = self.causal
        if causal is not None and (isinstance(causal, bool) or not isinstance(causal, (int, np.integer))):
            raise ShapeError(f"attention: causal must be an integer offset or None, got {causal!r}")
        object.__setattr__(self, "causal", None if causal is None else int(causal))
        lower = self.lower
        if lower is not None and (isinstance(lower, bool) or not isinstance(lower, (int, np.integer))):
            raise ShapeError(f"attention: lower must be an integer offset or None, got {lower!r}")
        object.__setattr__(self, "lower", None if lower is None else int(lower))
        if self.softcap is not None:
            cap = f32_number(self.softcap, "softcap")
            if cap <= 0.0:
                raise ShapeError(f"attention: softcap must be positive, got {self.softcap!r}")
            object.__setattr__(self, "softcap", cap)
        if not isinstance(self.seq_major, str) or not set(self.seq_major) <= set(SEQ_MAJOR):
            raise ShapeError(f"attention: seq_major must be letters of {SEQ_MAJOR!r}, got {self.seq_major!r}")
        object.__setattr__(self, "seq_major", "".join(c for c in SEQ_MAJOR if c in self.seq_major))
        if self.k_transposed and "k" in self.seq_major:
            raise ShapeError("attention: K given transposed ([B, Hkv, D, Skv]) cannot also be sequence-major")

    # every field is an int after __post_init__; these spell it out for the type checker
    @property
    def skv(self) -> int:
        """Keys per row."""
        assert self.kv_len is not None
        return self.kv_len

    @property
    def dv(self) -> int:
        """V's head size."""
        assert self.v_dim is not None
        return self.v_dim

    @property
    def hkv(self) -> int:
        """K/V heads."""
        assert self.kv_heads is not None
        return self.kv_heads

    @property
    def group(self) -> int:
        """Query heads per K/V head."""
        return self.heads // self.hkv

    @property
    def bh(self) -> int:
        """Query heads over the batch: ``B * H``."""
        return self.batch * self.heads

    def _laid_out(self, tensor: str, heads: int, seq: int, dim: int) -> Shape4:
        if tensor in self.seq_major:
            return (self.batch, seq, heads, dim)
        return (self.batch, heads, seq, dim)

    @property
    def q_shape(self) -> Shape4:
        """Q's shape as it arrives: ``[B, H, Sq, D]``, or ``[B, Sq, H, D]`` when sequence-major."""
        return self._laid_out("q", self.heads, self.q_len, self.head_dim)

    @property
    def k_shape(self) -> Shape4:
        """K's shape as it arrives (transposed, sequence-major or neither)."""
        if self.k_transposed:
            return (self.batch, self.hkv, self.head_dim, self.skv)
        return self._laid_out("k", self.hkv, self.skv, self.head_dim)

    @property
    def v_shape(self) -> Shape4:
        """V's shape as it arrives."""
        return self._laid_out("v", self.hkv, self.skv, self.dv)

    @property
    def out_shape(self) -> Shape4:
        """The output's shape: ``[B, H, Sq, Dv]``, or ``[B, Sq, H, Dv]`` when sequence-major."""
        return self._laid_out("o", self.heads, self.q_len, self.dv)

    def row_strides(self, tensor: str) -> tuple[int, int, int]:
        """Return the rows (of D or Dv values) between neighbours along (batch, head, sequence) of ``tensor``.

        ``tensor`` is a letter of ``qkvo``; K's are those of its ``[B, Hkv, Skv, D]`` rows (not of Kᵀ).
        """
        heads, seq = (self.hkv, self.skv) if tensor in "kv" else (self.heads, self.q_len)
        if tensor in self.seq_major:
            return (seq * heads, 1, heads)
        return (heads * seq, seq, 1)

    @property
    def masks(self) -> tuple[Shape4, ...]:
        """The shapes of the masks given, in input order (additive, then select)."""
        return tuple(m for m in (self.add_mask, self.select_mask) if m is not None)  # type: ignore[misc]


def mask_strides(shape: Sequence[int] | None) -> tuple[int, int, int, int]:
    """Return the element strides of a 4-D mask along (b, h, q, k), 0 along broadcast (size-1) axes."""
    if shape is None:
        return (0, 0, 0, 0)
    strides, acc = [0, 0, 0, 0], 1
    for axis in (3, 2, 1, 0):
        strides[axis] = acc if shape[axis] > 1 else 0
        acc *= shape[axis]
    return (strides[0], strides[1], strides[2], strides[3])


# --- the shape syntax ------------------------------------------------------------------------------------------


def _number(text: str, what: str, spec: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ShapeError(f"attention shape {spec!r}: {what} {text!r} is not a number") from None


def _int(text: str, what: str, spec: str) -> int:
    if not re.fullmatch(r"-?\d+", text):
        raise ShapeError(f"attention shape {spec!r}: {what} {text!r} is not an integer")
    return int(text)


def parse_attention(text: str) -> AttentionProblem:
    """Parse ``BxHxSqxD`` and ``:``-separated options (see ``AttentionSpec.shape_syntax``)."""
    spec = text.strip().lower()
    head, *options = spec.split(":")
    if not _DIMS4.match(head):
        raise ShapeError(f"attention shape {text!r} does not start with BxHxSqxD (like 1x12x128x64)")
    b, h, sq, d = parse_dims("attention", head)
    fields: dict[str, Any] = {}
    seen: set[str] = set()
    for option in options:
        match = _OPTION.match(option)
        if match is None:
            raise ShapeError(f"attention shape {text!r}: unknown option {option!r}")
        name, value = match.groups()
        if name in seen:
            raise ShapeError(f"attention shape {text!r}: option {name!r} given twice")
        seen.add(name)
        if name in ("kt", "z") and value:
            raise ShapeError(f"attention shape {text!r}: option {name!r} takes no value")
        if name == "kv":
            fields["kv_len"] = _int(value, "kv length", text)
        elif name == "dv":
            fields["v_dim"] = _int(value, "v head size", text)
        elif name == "g":
            fields["kv_heads"] = _int(value, "kv heads", text)
        elif name == "kt":
            fields["k_transposed"] = True
        elif name == "s":
            fields["scale"] = _number(value, "scale", text)
        elif name in ("m", "w"):
            fields["add_mask" if name == "m" else "select_mask"] = parse_dims("attention", value)
        elif name == "f":
            fields["fill"] = _number(value, "fill", text)
        elif name == "c":
            fields["causal"] = _int(value, "causal offset", text) if value else 0
        elif name == "l":
            fields["seq_major"] = value
        elif name == "lb":
            fields["lower"] = _int(value, "lower offset", text)
        elif name == "cap":
            fields["softcap"] = _number(value, "softcap", text)
        else:
            fields["zero_empty"] = True
    if "fill" in fields and "select_mask" not in fields:
        raise ShapeError(f"attention shape {text!r}: ':f<fill>' needs a select mask ':w<dims>'")
    return AttentionProblem(b, h, sq, d, **fields)


def _fill_text(fill: float) -> str:
    return "-inf" if fill == -math.inf else "inf" if fill == math.inf else repr(fill)


def attention_key(p: AttentionProblem) -> str:
    """Return the canonical key: dims, then only the options that differ from their defaults."""
    key = f"{p.batch}x{p.heads}x{p.q_len}x{p.head_dim}"
    if p.skv != p.q_len:
        key += f":kv{p.skv}"
    if p.dv != p.head_dim:
        key += f":dv{p.dv}"
    if p.hkv != p.heads:
        key += f":g{p.hkv}"
    if p.k_transposed:
        key += ":kt"
    if p.scale != AttentionProblem(1, 1, 1, p.head_dim).scale:
        key += f":s{p.scale!r}"
    if p.add_mask is not None:
        key += ":m" + "x".join(map(str, p.add_mask))
    if p.select_mask is not None:
        key += ":w" + "x".join(map(str, p.select_mask))
        if p.fill != -math.inf:
            key += f":f{_fill_text(p.fill)}"
    if p.causal is not None:
        key += ":c" if p.causal == 0 else f":c{p.causal}"
    if p.lower is not None:
        key += f":lb{p.lower}"
    if p.softcap is not None:
        key += f":cap{p.softcap!r}"
    key += ":z" if p.zero_empty else ""
    return key + (f":l{p.seq_major}" if p.seq_major else "")


# --- the reference ---------------------------------------------------------------------------------------------


def _products(a: np.ndarray, b: np.ndarray, keep: np.ndarray | None = None) -> np.ndarray:
    """Return ``a @ b`` over the last two axes, with IEEE products (``0 * inf = NaN``) when an input is not finite.

    ``keep`` ([..., m, k] booleans) drops terms entirely (keys that take no part) instead of adding ``0 * b``;
    it only matters where ``b`` is not finite (``a`` is 0 at those terms).
    """
    if np.all(np.isfinite(a)) and np.all(np.isfinite(b)):
        return np.matmul(a, b)
    out = np.empty((*a.shape[:-1], b.shape[-1]))
    for lead in np.ndindex(*a.shape[:-2]):  # one head at a time: [m, k, n] terms stay small
        terms = a[lead][:, :, None] * b[lead][None, :, :]
        if keep is not None:
            terms = np.where(keep[lead][:, :, None], terms, 0.0)
        out[lead] = terms.sum(axis=1)
    return out


def attention_reference(p: AttentionProblem, inputs: Sequence[np.ndarray]) -> np.ndarray:
    """Compute the attention of :class:`AttentionProblem` in float64 (see the module docstring), as float32."""
    q, k, v = (
        _heads_first(np.asarray(x, np.float64).reshape(shape), c in p.seq_major)
        for x, shape, c in zip(inputs[:3], (p.q_shape, p.k_shape, p.v_shape), "qkv", strict=True)
    )
    rest = list(inputs[3:])
    add = np.asarray(rest.pop(0), np.float64).reshape(p.add_mask) if p.add_mask is not None else None
    select = np.asarray(rest.pop(0), np.float64).reshape(p.select_mask) if p.select_mask is not None else None
    k = k if p.k_transposed else k.swapaxes(-1, -2)  # [B, Hkv, D, Skv]
    k, v = np.repeat(k, p.group, axis=1), np.repeat(v, p.group, axis=1)
    keep = None
    if p.causal is not None or p.lower is not None:
        rows, cols = np.arange(p.q_len)[:, None], np.arange(p.skv)[None, :]
        upper = cols <= rows + p.causal if p.causal is not None else True
        lower = cols >= rows + p.lower if p.lower is not None else True
        keep = np.broadcast_to(upper & lower, (p.batch, p.heads, p.q_len, p.skv))
    with np.errstate(all="ignore"):
        s = _products(q, k) * p.scale
        if p.softcap is not None:
            s = p.softcap * np.tanh(s / p.softcap)
        if select is not None:
            s = np.where(select != 0.0, s, p.fill)
        if add is not None:
            s = s + add
        considered = s if keep is None else np.where(keep, s, -np.inf)
        m = considered.max(axis=-1, keepdims=True)
        finite_m = np.where(np.isfinite(m), m, 0.0)
        e = np.exp(considered - finite_m)
        bad = np.isnan(m) | (m == np.inf)
        empty = m == -np.inf
        # rows whose output is decided below get zero weights, so they do not slow the products down
        probs = np.where(bad | empty, 0.0, e / e.sum(axis=-1, keepdims=True))
        out = _products(probs, v, keep)
    out = np.where(empty, 0.0 if p.zero_empty else np.nan, out)
    return _heads_first(np.where(bad, np.nan, out), "o" in p.seq_major).astype(np.float32)


def _heads_first(x: np.ndarray, seq_major: bool) -> np.ndarray:
    """``[B, S, H, D]`` as ``[B, H, S, D]`` when ``seq_major`` (and back: the swap is its own inverse)."""
    return x.swapaxes(1, 2) if seq_major else x
