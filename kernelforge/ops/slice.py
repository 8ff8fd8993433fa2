"""Slice (ONNX, every opset) and each used output of Split: a strided window copy of a rank 1..8 tensor.

``out[i_0, .., i_{r-1}] = x[start_0 + i_0 * step_0, .., start_{r-1} + i_{r-1} * step_{r-1}]`` for
``0 <= i_k < size_k``: per axis a first index, a (non-zero, possibly negative) step and an output size, all
resolved at load from ONNX ``starts, ends, axes, steps`` by :func:`window` (ONNX's clamping: a start or end
past either bound is clamped, a negative one counts from the back).

Node attributes (what the ONNX converters in ``graph/onnx_slice.py`` write): ``starts`` and ``ends`` (ints,
ONNX values), ``axes`` (ints, or None for ``0 .. len(starts)-1``), ``steps`` (ints, or None for all 1).

Kernels see the *collapsed* window: output axes of size 1 only add to the first read offset, and neighbouring
axes whose reads continue each other (an axis kept whole, step 1, inside one walked with step 1) merge, so
the second half of a ``[1, 64, 80, 80]`` channel split is one contiguous run of 204800 values. The offset of
an output element is then ``base + sum(i_k * stride_k)`` over the collapsed axes (strides signed).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from kernelforge.errors import ShapeError
from kernelforge.ops.shapes import check_dims, linear_grid, parse_dims
from kernelforge.ops.spec import GlLaunch, Launch, Limits, OpSpec, Param, Params, input_shape
from kernelforge.ops.texture import TexLayout, first_too_big

_INTS = re.compile(r"^-?\d+(?:,-?\d+)*$")

GLSL_DEFAULT_PARAMS: Params = {"pack": 4, "in_pack": 4, "square": 0}
_GLSL_FALLBACKS: tuple[Params, ...] = (
    {"pack": 4, "in_pack": 4, "square": 1},
    {"pack": 1, "in_pack": 1, "square": 1},
)

Axis = tuple[int, int]
"""A collapsed output axis: ``(size, stride)``, the stride in input elements (negative for a negative step)."""


def _ints(field: str, values: Any) -> tuple[int, ...]:
    if isinstance(values, (str, bytes)) or not isinstance(values, (Sequence, np.ndarray)):
        raise ShapeError(f"slice: {field} must be a sequence of integers, got {values!r}")
    out = []
    for v in values:
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
            raise ShapeError(f"slice: {field} must hold integers, got {v!r}")
        out.append(int(v))
    return tuple(out)


@dataclass(frozen=True)
class SliceProblem:
    """One window copy: input ``shape``, and per axis the first index, the step and the output size.

    Every read index ``start + i * step`` (``i < size``) lies inside its axis: :func:`window` resolves ONNX
    values into such a window.
    """

    shape: tuple[int, ...]
    starts: tuple[int, ...]
    steps: tuple[int, ...]
    sizes: tuple[int, ...]

    def __post_init__(self) -> None:
        shape = check_dims("slice", "shape", self.shape)
        rank = len(shape)
        fields = {"starts": self.starts, "steps": self.steps, "sizes": self.sizes}
        clean = {name: _ints(name, values) for name, values in fields.items()}
        for name, values in clean.items():
            if len(values) != rank:
                raise ShapeError(f"slice: {name} needs {rank} values (one per axis of {shape}), got {len(values)}")
        for axis, (dim, start, step, size) in enumerate(
            zip(shape, clean["starts"], clean["steps"], clean["sizes"], strict=True)
        ):
            last = start + (size - 1) * step
            if step == 0 or size < 1 or not (0 <= start < dim and 0 <= last < dim):
                raise ShapeError(
                    f"slice: axis {axis} of size {dim} cannot read {size} value(s) from {start} in steps of {step}"
                )
        object.__setattr__(self, "shape", shape)
        for name, values in clean.items():
            object.__setattr__(self, name, values)

    @property
    def out_shape(self) -> tuple[int, ...]:
        """The output's shape (``sizes``)."""
        return self.sizes

    @property
    def identity(self) -> bool:
        """Whether the window is the whole tensor in order (a Slice that is an alias)."""
        return self.sizes == self.shape and all(s == 0 for s in self.starts) and all(t == 1 for t in self.steps)

    @property
    def in_strides(self) -> tuple[int, ...]:
        """Row-major strides of the input, in elements."""
        return tuple(math.prod(self.shape[k + 1 :]) for k in range(len(self.shape)))

    @property
    def base(self) -> int:
        """The input offset of the first output element."""
        return sum(s * st for s, st in zip(self.starts, self.in_strides, strict=True))

    def collapse(self, keep_last: bool = False) -> tuple[Axis, ...]:
        """Return the collapsed output axes ``(size, stride)``, outermost first (see the module docstring).

        Args:
            keep_last: Keep the last axis apart, as is (GLSL kernels walk the input's last axis per row);
                only the axes before it are dropped and merged.
        """
        strides = self.in_strides
        axes = [(n, t * s) for n, t, s in zip(self.sizes, self.steps, strides, strict=True)]
        last = axes.pop() if keep_last else None
        merged: list[Axis] = []
        for size, stride in axes:
            if size == 1:
                continue  # its start is in `base`
            if merged and merged[-1][1] == size * stride:  # the outer axis steps exactly over this one
                merged[-1] = (merged[-1][0] * size, stride)
            else:
                merged.append((size, stride))
        if last is not None:
            merged.append(last)
        return tuple(merged) or ((1, 1),)

    def vec4_problem(self) -> str | None:
        """Return why the WGSL kernel cannot copy vec4s (every read run aligned, 4 values at a time), or None."""
        axes = self.collapse()
        size, stride = axes[-1]
        if stride != 1:
            return f"the innermost collapsed axis reads with stride {stride}, not 1"
        if size % 4:
            return f"rows of {size} values are not a multiple of 4"
        if self.base % 4 or any(s % 4 for _, s in axes[:-1]):
            return f"rows do not start on a multiple of 4 (first offset {self.base}, strides {[s for _, s in axes]})"
        return None


def window(
    shape: Sequence[int],
    starts: Sequence[int],
    ends: Sequence[int],
    axes: Sequence[int] | None = None,
    steps: Sequence[int] | None = None,
) -> SliceProblem:
    """Resolve ONNX Slice values into a window of ``shape`` (every opset: axes and steps default as in ONNX).

    A negative start or end counts from the back; then starts are clamped into ``[0, dim]`` (``[0, dim-1]``
    for a negative step) and ends into ``[0, dim]`` (``[-1, dim-1]``), so ``x[::-1]`` reads every value.

    Raises:
        ShapeError: Naming the argument: lengths that differ, an axis out of range or repeated, a zero step,
            or a window with no values (the importer makes an empty slice a constant, never a kernel).
    """
    dims = check_dims("slice", "shape", tuple(shape))
    rank = len(dims)
    start_v, end_v = _ints("starts", starts), _ints("ends", ends)
    axis_v = tuple(range(len(start_v))) if axes is None else _ints("axes", axes)
    step_v = (1,) * len(start_v) if steps is None else _ints("steps", steps)
    if not len(start_v) == len(end_v) == len(axis_v) == len(step_v):
        raise ShapeError(
            f"slice: starts, ends, axes and steps must have one value per sliced axis, got "
            f"{len(start_v)}, {len(end_v)}, {len(axis_v)} and {len(step_v)}"
        )
    out_starts, out_steps, sizes = [0] * rank, [1] * rank, list(dims)
    seen: set[int] = set()
    for start, end, axis, step in zip(start_v, end_v, axis_v, step_v, strict=True):
        if not -rank <= axis < rank:
            raise ShapeError(f"slice: axis {axis} is out of range for rank {rank}")
        a = axis % rank
        if a in seen:
            raise ShapeError(f"slice: axes {list(axis_v)} repeat axis {a}")
        seen.add(a)
        if step == 0:
            raise ShapeError(f"slice: step 0 on axis {axis}")
        dim = dims[a]
        start, end = start + dim if start < 0 else start, end + dim if end < 0 else end
        if step > 0:
            start, end = min(max(start, 0), dim), min(max(end, 0), dim)
        else:
            start, end = min(max(start, 0), dim - 1), min(max(end, -1), dim - 1)
        size = max(0, -(-(end - start) // step))
        if size == 0:
            raise ShapeError(f"slice: axis {axis} of size {dim} keeps no values ({start} to {end} in steps of {step})")
        out_starts[a], out_steps[a], sizes[a] = start, step, size
    return SliceProblem(dims, tuple(out_starts), tuple(out_steps), tuple(sizes))


def _outer(axes: Sequence[Axis], width: int) -> list[dict[str, int]]:
    """Return the template's view of the axes that index rows: size, stride in ``width``-value units, and div.

    ``div`` is the product of the sizes after the axis: a row index divided by it, modulo the size, is the
    axis's coordinate.
    """
    return [
        {"size": n, "stride": s // width, "div": math.prod(m for m, _ in axes[k + 1 :])}
        for k, (n, s) in enumerate(axes)
    ]


class SliceSpec(OpSpec[SliceProblem]):
    """The Slice op (and the outputs of Split)."""

    name: ClassVar[str] = "slice"
    templates: ClassVar[dict[str, str]] = {"wgsl": "wgsl/slice.wgsl.j2", "glsl": "glsl/slice.frag.j2"}
    shape_syntax: ClassVar[str] = (
        "DIMS:sSTARTS:eENDS[:aAXES][:tSTEPS] as ONNX Slice (clamped, negatives count from the back; axes "
        "default 0.., steps 1): 1x197x2304:s768:e1536:a2, 8x10:s-1:e-11:a1:t-1"
    )
    # the syntax uses commas inside a shape: several shapes in one --shape value are split on ";" only
    shape_separator: ClassVar[str] = ";"
    spaces: ClassVar[dict[str, tuple[Param, ...]]] = {
        "wgsl": (
            Param("wg_size", (32, 64, 128, 256), "invocations per workgroup (1-D)"),
            Param("ept", (1, 2, 4, 8), "outputs (or vec4s) per invocation along a row, a row's thread count apart"),
            Param("vec4", (0, 1), "copy vec4s (rows of step-1 reads, aligned to 4 values) or scalars"),
        ),
        "glsl": (
            Param("pack", (1, 4), "outputs per fragment: R32F (1) or RGBA32F (4) output texture"),
            Param("in_pack", (1, 4), "input texture: 1 value per texel, or 4 consecutive values per texel"),
            Param("square", (0, 1), "textures row-aligned (0) or wrapped square-ish (1)"),
        ),
    }

    # --- problems ------------------------------------------------------------------------------------------

    def from_node(self, shapes: Sequence[tuple[int, ...] | None], attrs: Mapping[str, Any]) -> SliceProblem:
        """Build the problem of a node slicing x by ONNX ``starts``, ``ends``, ``axes`` and ``steps`` (or None)."""
        x = input_shape(self.name, shapes, 0)
        return window(x, attrs["starts"], attrs["ends"], attrs.get("axes"), attrs.get("steps"))

    def parse_problem(self, text: str) -> SliceProblem:
        """Parse ``DIMS:sSTARTS:eENDS[:aAXES][:tSTEPS]`` (ONNX values joined by ``,``).

        Examples: ``1x197x2304:s768:e1536:a2`` (the k of a fused qkv), ``1x64x80x80:s32:e64:a1``,
        ``4x6:s-1,0:e-100,6:t-1,2`` (rows reversed, every other column).
        """
        parts = text.strip().lower().split(":")
        if len(parts) < 3:
            raise ShapeError(f"slice shape {text!r} is not {self.shape_syntax}")
        fields: dict[str, tuple[int, ...]] = {}
        for part in parts[1:]:
            key, values = part[:1], part[1:]
            if key not in ("s", "e", "a", "t") or key in fields or not _INTS.match(values):
                raise ShapeError(f"slice shape {text!r}: bad or repeated field {part!r}")
            fields[key] = tuple(int(v) for v in values.split(","))
        if "s" not in fields or "e" not in fields:
            raise ShapeError(f"slice shape {text!r}: needs starts (s...) and ends (e...)")
        dims = parse_dims("slice", parts[0])
        return window(dims, fields["s"], fields["e"], fields.get("a"), fields.get("t"))

    def problem_key(self, problem: SliceProblem) -> str:
        """Return e.g. ``1x197x2304:s768:e1536:a2``: the sliced axes only, resolved (parses back to the problem).

        Ends are exclusive and tight; a negative step that reads down to index 0 ends at ``-dim-1``, which ONNX
        clamps to "before the first value" (``-1`` would count from the back).
        """
        per_axis = self._axes(problem)
        axes = [a for a, (dim, s, t, n) in enumerate(per_axis) if (s, t, n) != (0, 1, dim)] or [0]
        starts, ends, steps = [], [], []
        for a in axes:
            dim, start, step, size = per_axis[a]
            end = start + (size - 1) * step + (1 if step > 0 else -1)
            starts.append(start)
            ends.append(end if end >= 0 else -dim - 1)
            steps.append(step)
        key = "x".join(map(str, problem.shape))
        key += ":s" + ",".join(map(str, starts)) + ":e" + ",".join(map(str, ends)) + ":a" + ",".join(map(str, axes))
        return key + (":t" + ",".join(map(str, steps)) if any(t != 1 for t in steps) else "")

    @staticmethod
    def _axes(problem: SliceProblem) -> list[tuple[int, int, int, int]]:
        return list(zip(problem.shape, problem.starts, problem.steps, problem.sizes, strict=True))

    def shape_vector(self, problem: SliceProblem) -> tuple[float, ...]:
        """Return (output elements, input elements, innermost collapsed run, its |stride|)."""
        size, stride = problem.collapse()[-1]
        return (float(math.prod(problem.sizes)), float(math.prod(problem.shape)), float(size), float(abs(stride)))

    def flops(self, problem: SliceProblem) -> float:
        """Return 0: a copy (bandwidth-bound)."""
        return 0.0

    # --- params --------------------------------------------------------------------------------------------

    def default_params(self, problem: SliceProblem, limits: Limits, language: str) -> Params:
        """Return vec4 copies where they apply, 4 per invocation (fewer for short rows), or a fallback that fits."""
        if language == "glsl":
            candidates: tuple[Params, ...] = (GLSL_DEFAULT_PARAMS, *_GLSL_FALLBACKS)
        else:
            vec4 = int(problem.vec4_problem() is None)
            cols = problem.collapse()[-1][0] // (4 if vec4 else 1)
            ept = min(4, 1 << (cols.bit_length() - 1))  # at most the row's length
            candidates = (
                {"wg_size": 64, "ept": ept, "vec4": vec4},
                {"wg_size": 32, "ept": ept, "vec4": vec4},
                {"wg_size": 32, "ept": 1, "vec4": 0},
            )
        return self.first_fitting(problem, candidates, limits, language)

    def constraints(self, problem: SliceProblem, params: Params, limits: Limits, language: str) -> str | None:
        """Return why ``params`` cannot run ``problem`` on a device with ``limits``, or None."""
        if language == "glsl":
            launch = self.gl_launch(problem, params)
            return first_too_big([("input", launch.inputs[0]), ("output", launch.targets[0])], limits.max_texture_size)
        wg, ept = params["wg_size"], params["ept"]
        if wg > limits.max_invocations or wg > limits.max_wg_x:
            return f"workgroup of {wg} invocations exceeds the device limits"
        if params["vec4"]:
            reason = problem.vec4_problem()
            if reason:
                return f"vec4=1: {reason}"
        cols = self._cols(problem, params)
        if ept > cols:
            return f"ept={ept} leaves invocations idle on rows of {cols} {'vec4s' if params['vec4'] else 'values'}"
        groups = self.launch(problem, params).workgroups
        if max(groups) > limits.max_workgroups_per_dim:
            return f"dispatch {groups} exceeds {limits.max_workgroups_per_dim} workgroups per dimension"
        largest = 4 * max(math.prod(problem.shape), math.prod(problem.sizes))
        if largest > limits.max_storage_binding:
            return f"a {largest}-byte buffer exceeds the device's storage binding limit {limits.max_storage_binding}"
        return None

    # --- numbers -------------------------------------------------------------------------------------------

    def output_shape(self, problem: SliceProblem) -> tuple[int, ...]:
        """Return the window's shape."""
        return problem.sizes

    def make_inputs(self, problem: SliceProblem, rng: np.random.Generator) -> list[np.ndarray]:
        """Return x with values in [-1, 1]."""
        return [rng.uniform(-1, 1, problem.shape).astype(np.float32)]

    def reference(self, problem: SliceProblem, inputs: Sequence[np.ndarray]) -> np.ndarray:
        """Gather every axis's window indices in numpy (float64, as float32: a copy is exact)."""
        out = np.asarray(inputs[0], np.float64).reshape(problem.shape)
        for axis, (_, start, step, size) in enumerate(self._axes(problem)):
            out = np.take(out, start + step * np.arange(size), axis=axis)
        return out.astype(np.float32)

    # --- kernels -------------------------------------------------------------------------------------------

    def _cols(self, problem: SliceProblem, params: Params) -> int:
        """Return the WGSL kernel's row length, in vec4s when it copies vec4s."""
        return problem.collapse()[-1][0] // (4 if params["vec4"] else 1)

    def template_context(self, problem: SliceProblem, params: Params, language: str) -> dict[str, Any]:
        """Return validated params plus the collapsed window: first offset, outer axes, row length and step.

        WGSL walks the fully collapsed window, in vec4 units when ``vec4=1``; GLSL keeps the input's last axis
        apart (its textures are ``[rows, last dim]`` matrices) and collapses only the axes before it.
        """
        p = params
        if language == "glsl":
            axes = problem.collapse(keep_last=True)
            launch = self.gl_launch(problem, p)
            cols, in_cols, step = problem.sizes[-1], problem.shape[-1], problem.steps[-1]
            return {
                **p,
                "base": problem.base,
                "outer": _outer(axes[:-1], 1),
                "rows": launch.rows,
                "cols": cols,
                "in_cols": in_cols,
                "step": step,
                # every output texel is one input texel: step 1, rows and their first column on texel bounds
                "vec_copy": p["pack"] == 4
                and p["in_pack"] == 4
                and step == 1
                and cols % 4 == 0
                and in_cols % 4 == 0
                and problem.starts[-1] % 4 == 0,
                "x": launch.inputs[0].context(),
                "out": launch.targets[0].context(),
            }
        width = 4 if p["vec4"] else 1
        axes = problem.collapse()
        cols = axes[-1][0] // width
        return {
            **p,
            "base": problem.base // width,
            "outer": _outer(axes[:-1], width),
            "cols": cols,
            "cblocks": math.ceil(cols / p["ept"]),
            "step": axes[-1][1],
        }

    def launch(self, problem: SliceProblem, params: Params) -> Launch:
        """Return a 1-D grid of ``rows * ceil(cols / ept)`` invocations (spilling into y) and that count."""
        cols = self._cols(problem, params)
        rows = math.prod(n for n, _ in problem.collapse()[:-1])
        threads = rows * math.ceil(cols / params["ept"])
        return Launch(linear_grid(math.ceil(threads / params["wg_size"])), (threads, 0, 0, 0))

    def gl_launch(self, problem: SliceProblem, params: Params) -> GlLaunch:
        """Return x as ``[size / last dim, last dim]`` and the output as ``[rows, last output dim]``."""
        square = bool(params["square"])
        in_cols, cols = problem.shape[-1], problem.sizes[-1]
        source = TexLayout(math.prod(problem.shape) // in_cols, in_cols, params["in_pack"], square)
        rows = math.prod(problem.sizes) // cols
        target = TexLayout(rows, cols, params["pack"], square)
        return GlLaunch((source,), ("X",), (target,), rows, cols)

    def device_inputs(self, problem: SliceProblem, params: Params, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Return x as a contiguous float32 array of its shape.

        Raises:
            ShapeError: When x does not hold the input's values.
        """
        data = np.ascontiguousarray(inputs[0], dtype=np.float32)
        if data.size != math.prod(problem.shape):
            raise ShapeError(f"slice {self.problem_key(problem)}: x has {data.size} values, not {problem.shape}")
        return [data.reshape(problem.shape)]


SPEC = SliceSpec()
