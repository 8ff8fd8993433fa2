"""Pad (ONNX opset 19): constant, reflect, edge and wrap padding of a rank 1..6 tensor, negative pads crop.

Every axis maps an output index ``o`` to an input index the same way: the input is first cropped by the
negative pads to ``[lo, lo + kept)``, then padded by the positive ones. With ``j = o - max(begin, 0)``,
``constant`` reads ``lo + j`` when ``0 <= j < kept`` (else the value), ``edge`` clamps ``j`` into the kept
range, ``reflect`` folds it back with period ``2 * (kept - 1)`` (numpy's and ``onnx.reference``'s
``reflect``, which also covers pads of ``kept`` or more; onnxruntime rejects those) and ``wrap`` takes it
modulo ``kept`` (numpy's ``wrap``: the kept range repeats, as onnxruntime also crops before wrapping). The
output is viewed as ``[rows, cols]`` with ``cols`` the last axis: kernels decode a row once and then map its
columns.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from kernelforge.errors import ShapeError
from kernelforge.ops.spec import GlLaunch, Launch, Limits, OpSpec, Param, Params, input_shape
from kernelforge.ops.texture import TexLayout, first_too_big

MAX_RANK = 6
MODES = ("constant", "reflect", "edge", "wrap")
# WebGPU's default maxComputeWorkgroupsPerDimension: the 1-D grid spills into y past it.
GRID_X = 65535

DEFAULT_PARAMS: Params = {"wg_size": 64, "ept": 4}
# Tried in order when the default breaks a constraint (tiny devices, huge tensors).
_FALLBACKS: tuple[Params, ...] = (
    {"wg_size": 256, "ept": 8},
    {"wg_size": 32, "ept": 1},
    {"wg_size": 1, "ept": 1},
)
GLSL_DEFAULT_PARAMS: Params = {"pack": 4, "square": 0}
_GLSL_FALLBACKS: tuple[Params, ...] = ({"pack": 4, "square": 1}, {"pack": 1, "square": 1})

_DIMS = re.compile(r"^\d+(?:x\d+)*$")
_INTS = re.compile(r"^-?\d+(?:,-?\d+)*$")


def _ints(op: str, field: str, values: Any) -> tuple[int, ...]:
    if isinstance(values, (str, bytes)) or not isinstance(values, (Sequence, np.ndarray)):
        raise ShapeError(f"{op}: {field} must be a sequence of integers, got {values!r}")
    out = []
    for v in values:
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
            raise ShapeError(f"{op}: {field} must hold integers, got {v!r}")
        out.append(int(v))
    return tuple(out)


def full_pads(shape: Sequence[int], pads: Any, axes: Any = None) -> tuple[int, ...]:
    """Return ONNX ``pads`` for the axes ``axes`` (default: all) as full-rank ``[begins..., ends...]``.

    Raises:
        ShapeError: When pads or axes do not fit the rank (naming the argument).
    """
    rank = len(shape)
    pad_values = _ints("pad", "pads", pads)
    if axes is None:
        axis_list = list(range(rank))
    else:
        axis_list = []
        for a in _ints("pad", "axes", axes):
            if not -rank <= a < rank:
                raise ShapeError(f"pad: axes entry {a} is out of range for rank {rank}")
            axis_list.append(a % rank)
        if len(set(axis_list)) != len(axis_list):
            raise ShapeError(f"pad: axes {list(axes)} repeat an axis")
    if len(pad_values) != 2 * len(axis_list):
        raise ShapeError(f"pad: pads needs {2 * len(axis_list)} values (begins then ends), got {len(pad_values)}")
    out = [0] * (2 * rank)
    for i, a in enumerate(axis_list):
        out[a], out[rank + a] = pad_values[i], pad_values[len(axis_list) + i]
    return tuple(out)


@dataclass(frozen=True)
class AxisMap:
    """How one axis maps output indices to input indices (see the module docstring)."""

    size_in: int
    size_out: int
    pad_begin: int
    """Positive part of the begin pad: output indices before it are padding."""
    lo: int
    """First kept input index (the negative part of the begin pad)."""
    kept: int
    """Input indices kept after cropping."""

    @property
    def identity(self) -> bool:
        """True when the axis is neither padded nor cropped."""
        return self.size_in == self.size_out == self.kept and self.pad_begin == self.lo == 0

    def index(self, mode: str) -> tuple[np.ndarray, np.ndarray]:
        """Return the input index of every output index and whether it is inside (constant mode)."""
        j = np.arange(self.size_out) - self.pad_begin
        inside = (j >= 0) & (j < self.kept)
        if mode == "edge":
            j = np.clip(j, 0, self.kept - 1)
        elif mode == "reflect":
            period = 2 * (self.kept - 1)
            j = np.mod(j, period) if period else np.zeros_like(j)
            j = np.where(j >= self.kept, period - j, j)
        elif mode == "wrap":
            j = np.mod(j, self.kept)
        # constant mode: outside indices are clamped to any valid element (masked by `inside`)
        return np.clip(self.lo + j, 0, self.size_in - 1), inside

    def context(self) -> dict[str, int | bool]:
        """Return the numbers the templates use for this axis.

        ``roff`` (``woff``) is a multiple of the reflect ``period`` (of ``kept``, for wrap) that makes
        ``o - pb + roff`` non-negative for every output index, so kernels take a remainder of a non-negative
        number (GLSL's ``%`` of a negative int is undefined).
        """
        period = 2 * (self.kept - 1)
        roff = period * math.ceil(self.pad_begin / period) if period > 0 else 0
        woff = self.kept * math.ceil(self.pad_begin / self.kept) if self.kept > 0 else 0
        return {
            "pb": self.pad_begin,
            "lo": self.lo,
            "kept": self.kept,
            "size_in": self.size_in,
            "period": period,
            "roff": roff,
            "woff": woff,
            "identity": self.identity,
        }


@dataclass(frozen=True)
class PadProblem:
    """One Pad call: input ``shape``, full-rank ONNX ``pads`` (begins then ends), ``mode``, ``constant_value``."""

    shape: tuple[int, ...]
    pads: tuple[int, ...]
    mode: str = "constant"
    constant_value: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.shape, tuple) or not 1 <= len(self.shape) <= MAX_RANK:
            raise ShapeError(f"pad: shape must be a tuple of 1..{MAX_RANK} dims, got {self.shape!r}")
        for d in self.shape:
            if isinstance(d, bool) or not isinstance(d, int) or d < 1:
                raise ShapeError(f"pad: shape dims must be integers >= 1, got {self.shape!r}")
        if not isinstance(self.pads, tuple) or len(self.pads) != 2 * len(self.shape):
            raise ShapeError(f"pad: pads must be a tuple of {2 * len(self.shape)} integers, got {self.pads!r}")
        if any(isinstance(p, bool) or not isinstance(p, int) for p in self.pads):
            raise ShapeError(f"pad: pads must be integers, got {self.pads!r}")
        if self.mode not in MODES:
            raise ShapeError(f"pad: mode must be one of {MODES}, got {self.mode!r}")
        if isinstance(self.constant_value, bool) or not isinstance(self.constant_value, (int, float)):
            raise ShapeError(f"pad: constant_value must be a number, got {self.constant_value!r}")
        for axis, m in enumerate(self.axes):
            if m.kept < 0:
                raise ShapeError(f"pad: pads crop more than axis {axis} holds ({self.shape[axis]}): {self.pads}")
            if m.size_out < 1:
                raise ShapeError(f"pad: pads leave axis {axis} empty: {self.pads}")
            if m.kept == 0 and self.mode != "constant":
                raise ShapeError(f"pad: {self.mode} mode needs at least one element left on axis {axis}")

    @property
    def axes(self) -> tuple[AxisMap, ...]:
        """Return the index map of every axis."""
        rank = len(self.shape)
        maps = []
        for axis, size in enumerate(self.shape):
            begin, end = self.pads[axis], self.pads[rank + axis]
            lo = max(0, -begin)
            maps.append(AxisMap(size, size + begin + end, max(0, begin), lo, size - lo - max(0, -end)))
        return tuple(maps)

    @property
    def out_shape(self) -> tuple[int, ...]:
        """Return the padded shape."""
        return tuple(m.size_out for m in self.axes)

    @property
    def value_bits(self) -> int:
        """Return the float32 bit pattern of the constant (exact for -0.0, inf and nan)."""
        return int(np.array(self.constant_value, np.float32).view(np.uint32))


def _matrix(dims: Sequence[int]) -> tuple[int, int]:
    """Return ``[rows, cols]`` of a tensor viewed as rows of its last axis."""
    return math.prod(dims[:-1]), dims[-1]


class PadSpec(OpSpec[PadProblem]):
    """The Pad op."""

    name: ClassVar[str] = "pad"
    templates: ClassVar[dict[str, str]] = {"wgsl": "wgsl/pad.wgsl.j2", "glsl": "glsl/pad.frag.j2"}
    shape_syntax: ClassVar[str] = (
        "DIMS:pPADS[:MODE][:vVALUE][:aAXES], pads as ONNX (begins then ends, negative crops), MODE constant|"
        "reflect|edge|wrap (1x3x224x224:p0,0,1,1,0,0,1,1:reflect, 5x7:p-1,2:constant:v1.5:a1)"
    )
    # the syntax uses commas inside a shape: several shapes in one --shape value are split on ";" only
    shape_separator: ClassVar[str] = ";"
    spaces: ClassVar[dict[str, tuple[Param, ...]]] = {
        "wgsl": (
            Param("wg_size", (1, 32, 64, 128, 256), "threads per workgroup (1-D)"),
            Param("ept", (1, 2, 4, 8), "output elements per thread along the last axis (strided, coalesced)"),
        ),
        "glsl": (
            Param("pack", (1, 4), "values per texel of input and output: R32F (1) or RGBA32F (4)"),
            Param("square", (0, 1), "textures row-aligned (0) or wrapped square-ish (1)"),
        ),
    }

    def from_node(self, shapes: Sequence[tuple[int, ...] | None], attrs: Mapping[str, Any]) -> PadProblem:
        """Build the problem of a node padding x: attrs pads (``begin..., end...`` per axis), mode, constant_value."""
        x = input_shape(self.name, shapes, 0)
        return PadProblem(x, tuple(attrs["pads"]), str(attrs["mode"]), float(attrs.get("constant_value", 0.0)))

    def parse_problem(self, text: str) -> PadProblem:
        """Parse ``DIMS:pPADS[:MODE][:vVALUE][:aAXES]``.

        ``DIMS`` are sizes joined by ``x``; ``PADS`` are ONNX pads (all begins, then all ends) joined by ``,``
        and may be negative (crop); ``MODE`` is ``constant`` (default), ``reflect``, ``edge`` or ``wrap``; ``vVALUE`` is
        the constant (a float, ``inf``/``-inf`` allowed; default 0); ``aAXES`` lists the axes the pads refer
        to (negative counts from the back). Examples: ``1x3x224x224:p0,0,1,1,0,0,1,1:reflect``,
        ``5x7:p-1,2:v1.5:a1``.
        """
        parts = text.strip().lower().split(":")
        if len(parts) < 2 or not _DIMS.match(parts[0]):
            raise ShapeError(f"pad shape {text!r} is not {self.shape_syntax}")
        shape = tuple(int(d) for d in parts[0].split("x"))
        fields: dict[str, str] = {}
        mode = None
        for part in parts[1:]:
            if part in MODES and mode is None:
                mode = part
            elif part[:1] in ("p", "v", "a") and part[:1] not in fields:
                fields[part[:1]] = part[1:]
            else:
                raise ShapeError(f"pad shape {text!r}: bad or repeated field {part!r}")
        if "p" not in fields or not _INTS.match(fields["p"]):
            raise ShapeError(f"pad shape {text!r}: needs pads like p0,0,1,1")
        axes = None
        if "a" in fields:
            if not _INTS.match(fields["a"]):
                raise ShapeError(f"pad shape {text!r}: axes must be integers like a2,3")
            axes = [int(a) for a in fields["a"].split(",")]
        value = 0.0
        if "v" in fields:
            try:
                value = float(fields["v"])
            except ValueError:
                raise ShapeError(f"pad shape {text!r}: constant value {fields['v']!r} is not a number") from None
        if len(shape) > MAX_RANK:
            raise ShapeError(f"pad shape {text!r}: rank {len(shape)} > {MAX_RANK}")
        pads = full_pads(shape, [int(p) for p in fields["p"].split(",")], axes)
        return PadProblem(shape, pads, mode or "constant", value)

    def problem_key(self, problem: PadProblem) -> str:
        """Return e.g. ``1x3x8x8:p0,0,1,1,0,0,1,1:reflect`` or ``5x7:p0,-1,0,2:constant:v1.5`` (full-rank pads)."""
        key = "x".join(map(str, problem.shape)) + ":p" + ",".join(map(str, problem.pads)) + ":" + problem.mode
        if problem.mode == "constant" and problem.value_bits != 0:
            key += f":v{float(problem.constant_value)!r}"
        return key

    def shape_vector(self, problem: PadProblem) -> tuple[float, ...]:
        """Return (output rows, output cols, input elements, rank)."""
        rows, cols = _matrix(problem.out_shape)
        return (float(rows), float(cols), float(math.prod(problem.shape)), float(len(problem.shape)))

    def flops(self, problem: PadProblem) -> float:
        """Return one per output element (a pure data movement op: GFLOP/s reads as Gelem/s)."""
        return float(math.prod(problem.out_shape))

    def default_params(self, problem: PadProblem, limits: Limits, language: str) -> Params:
        """Return the language's default, or the first fallback that fits the problem and device."""
        candidates = (DEFAULT_PARAMS, *_FALLBACKS) if language == "wgsl" else (GLSL_DEFAULT_PARAMS, *_GLSL_FALLBACKS)
        return self.first_fitting(problem, candidates, limits, language)

    def constraints(self, problem: PadProblem, params: Params, limits: Limits, language: str) -> str | None:
        """Return why ``params`` cannot run ``problem`` on a device with ``limits``, or None."""
        if language == "glsl":
            launch = self.gl_launch(problem, params)
            return first_too_big([("input", launch.inputs[0]), ("output", launch.targets[0])], limits.max_texture_size)
        wg = params["wg_size"]
        if wg > limits.max_invocations or wg > limits.max_wg_x:
            return f"workgroup of {wg} threads exceeds the device limits"
        groups = self.launch(problem, params).workgroups
        if max(groups) > limits.max_workgroups_per_dim:
            return f"dispatch {groups} exceeds {limits.max_workgroups_per_dim} workgroups per dimension"
        largest = 4 * max(math.prod(problem.shape), math.prod(problem.out_shape))
        if largest > limits.max_storage_binding:
            return f"a {largest}-byte buffer exceeds the device's storage binding limit {limits.max_storage_binding}"
        return None

    def make_inputs(self, problem: PadProblem, rng: np.random.Generator) -> list[np.ndarray]:
        """Return the data tensor with values in [-1, 1]."""
        return [rng.uniform(-1, 1, problem.shape).astype(np.float32)]

    def reference(self, problem: PadProblem, inputs: Sequence[np.ndarray]) -> np.ndarray:
        """Gather every axis through its index map; constant-mode padding is filled with the value."""
        out = np.asarray(inputs[0], np.float64).reshape(problem.shape)
        inside = np.ones((), bool)
        for axis, m in enumerate(problem.axes):
            index, ok = m.index(problem.mode)
            out = np.take(out, index, axis=axis)
            inside = inside & ok.reshape((-1,) + (1,) * (len(problem.shape) - axis - 1))
        if problem.mode == "constant":
            out = np.where(inside, out, np.float32(problem.constant_value))
        return out.astype(np.float32)

    def output_shape(self, problem: PadProblem) -> tuple[int, ...]:
        """Return the padded shape."""
        return problem.out_shape

    def template_context(self, problem: PadProblem, params: Params, language: str) -> dict[str, Any]:
        """Return validated params plus the per-axis maps (outer axes decode a row, the last one columns)."""
        p = params
        axes = problem.axes
        out_rows, cols = _matrix(problem.out_shape)
        outer = []
        out_stride, in_stride = 1, 1
        for m in reversed(axes[:-1]):
            outer.append({**m.context(), "size_out": m.size_out, "out_stride": out_stride, "in_stride": in_stride})
            out_stride *= m.size_out
            in_stride *= m.size_in
        context: dict[str, Any] = {
            **p,
            "mode": problem.mode,
            "outer": outer[::-1],
            "last": axes[-1].context(),
            "rows": out_rows,
            "cols": cols,
            "in_cols": problem.shape[-1],
            "value_bits": problem.value_bits,
        }
        if language == "glsl":
            launch = self.gl_launch(problem, p)
            context.update(x=launch.inputs[0].context(), out=launch.targets[0].context())
        else:
            context["cblocks"] = math.ceil(cols / p["ept"])
        return context

    def launch(self, problem: PadProblem, params: Params) -> Launch:
        """Return a 1-D grid of ``rows * ceil(cols / ept)`` threads (spilling into y), and its uniforms.

        Uniforms: thread count, threads per grid row, the constant's float32 bits (a uniform, so inf and nan
        need no literal and one kernel serves every value).
        """
        rows, cols = _matrix(problem.out_shape)
        threads = rows * math.ceil(cols / params["ept"])
        groups = math.ceil(threads / params["wg_size"])
        gx = min(groups, GRID_X)
        return Launch((gx, math.ceil(groups / gx), 1), (threads, gx * params["wg_size"], problem.value_bits, 0))

    def gl_launch(self, problem: PadProblem, params: Params) -> GlLaunch:
        """Return the input ``[rows_in, cols_in]`` and output ``[rows, cols]`` textures, ``pack`` values a texel."""
        square = bool(params["square"])
        in_layout = TexLayout(*_matrix(problem.shape), params["pack"], square)
        rows, cols = _matrix(problem.out_shape)
        target = TexLayout(rows, cols, params["pack"], square)
        return GlLaunch((in_layout,), ("X",), (target,), rows, cols)

    def device_inputs(self, problem: PadProblem, params: Params, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Return the data as a contiguous float32 array."""
        return [np.ascontiguousarray(inputs[0], dtype=np.float32)]


SPEC = PadSpec()
