"""Gather (ONNX): ``y = take(data, indices, axis)``; spec, reference, space, launch.

``data`` is viewed as ``[outer, dim, inner]`` (``dim`` its size along the axis, ``inner`` the product of the
dims after it: a contiguous block) and ``indices`` as ``count`` values; the output is ``[outer, count, inner]``
with ``y[o, k, :] = data[o, j(indices[k]), :]``, shaped ``data[:axis] + indices + data[axis+1:]`` (a scalar
index removes the axis).

Indices are float32 tensors holding exact integers (kernelforge's integer tensors; exact up to 2^24). An index
``v`` picks row ``j = trunc(clip(v, -dim, dim - 1))``, plus ``dim`` when negative (ONNX's count from the end).
ONNX Runtime raises on an index outside ``[-dim, dim - 1]``; a kernel cannot, so such an index reads the
nearest row (``dim - 1`` above the range, ``0`` below it) and never reads out of bounds. A NaN index reads
some row in range (which one is the device's choice). Constant indices are checked at ONNX import instead.

Node attributes (what :meth:`GatherSpec.from_onnx` makes of an ONNX node): ``axis`` (int, may be negative).
Inputs: data, then indices (either may be a constant: an embedding table is a constant data input).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from kernelforge.errors import ShapeError
from kernelforge.ops.shapes import MAX_RANK, check_axis, check_dims, linear_grid, parse_dims
from kernelforge.ops.spec import GlLaunch, Launch, Limits, OpSpec, Param, Params, input_shape
from kernelforge.ops.texture import TexLayout, first_too_big

MAX_INDEX = 1 << 24
"""Largest axis size an index can address: float32 holds every integer up to 2^24 exactly."""

_SHAPE = re.compile(r"^(?P<dims>[0-9x]+):i(?P<indices>s|[0-9x]+)(?::a(?P<axis>-?\d+))?$")

DEFAULT_PARAMS: Params = {"wg": 64, "ept": 1, "vec_width": 4}
# Tried in order when the default breaks a constraint (a block not a multiple of 4, tiny device limits).
_FALLBACKS: tuple[Params, ...] = (
    {"wg": 64, "ept": 1, "vec_width": 1},
    {"wg": 32, "ept": 1, "vec_width": 1},
    {"wg": 32, "ept": 8, "vec_width": 1},
)
GLSL_DEFAULT_PARAMS: Params = {"pack": 4, "in_pack": 4, "square": 0}
_GLSL_FALLBACKS: tuple[Params, ...] = (
    {"pack": 4, "in_pack": 4, "square": 1},
    {"pack": 1, "in_pack": 1, "square": 1},
)


@dataclass(frozen=True)
class GatherProblem:
    """One Gather call: ``data``'s shape, the ``indices`` shape (``()``: a scalar index) and the ``axis``.

    The axis is normalised to ``0 .. rank-1``.
    """

    data: tuple[int, ...]
    indices: tuple[int, ...]
    axis: int = 0

    def __post_init__(self) -> None:
        data = check_dims("gather", "data", self.data)
        if isinstance(self.indices, (str, bytes)) or not isinstance(self.indices, Sequence):
            raise ShapeError(f"gather: indices must be a sequence of integers, got {self.indices!r}")
        indices = check_dims("gather", "indices", self.indices) if len(self.indices) else ()
        axis = check_axis("gather", self.axis, len(data))
        if len(data) - 1 + len(indices) > MAX_RANK:
            raise ShapeError(
                f"gather: output rank {len(data) - 1 + len(indices)} (data {data}, indices {indices}) "
                f"is over {MAX_RANK}"
            )
        if data[axis] > MAX_INDEX:
            raise ShapeError(
                f"gather: data axis {axis} has {data[axis]} entries; float32 indices address at most {MAX_INDEX}"
            )
        object.__setattr__(self, "data", data)
        object.__setattr__(self, "indices", indices)
        object.__setattr__(self, "axis", axis)

    @property
    def outer(self) -> int:
        """Product of the data dims before the axis."""
        return math.prod(self.data[: self.axis])

    @property
    def dim(self) -> int:
        """Data's size along the axis: how many rows an index chooses from."""
        return self.data[self.axis]

    @property
    def inner(self) -> int:
        """Product of the data dims after the axis: the contiguous block one index copies."""
        return math.prod(self.data[self.axis + 1 :])

    @property
    def count(self) -> int:
        """Number of indices."""
        return math.prod(self.indices)

    @property
    def rows(self) -> int:
        """Blocks of the output: ``outer * count``."""
        return self.outer * self.count

    @property
    def size(self) -> int:
        """Number of output elements."""
        return self.rows * self.inner


def source_rows(indices: np.ndarray, dim: int) -> np.ndarray:
    """Return the row each index reads, as int64: negatives count from the end, out-of-range ones clamp.

    ``trunc(clip(v, -dim, dim - 1))``, plus ``dim`` when negative: exactly what the kernels compute.
    """
    v = np.trunc(np.clip(np.asarray(indices, np.float64), -dim, dim - 1))
    return np.where(v < 0, v + dim, v).astype(np.int64)


class GatherSpec(OpSpec[GatherProblem]):
    """The Gather op."""

    name: ClassVar[str] = "gather"
    templates: ClassVar[dict[str, str]] = {"wgsl": "wgsl/gather.wgsl.j2", "glsl": "glsl/gather.frag.j2"}
    shape_syntax: ClassVar[str] = (
        "data dims joined by x, ':i<indices dims>' (':is': one scalar index), optional ':a<axis>' (default 0): "
        "30522x384:i8x128, 1x128x768:is:a1"
    )
    onnx_ops: ClassVar[tuple[str, ...]] = ("Gather",)
    spaces: ClassVar[dict[str, tuple[Param, ...]]] = {
        "wgsl": (
            Param("wg", (32, 64, 128, 256), "invocations per workgroup"),
            Param("ept", (1, 2, 4, 8), "output elements (or vec4s) per invocation, a workgroup apart"),
            Param("vec_width", (1, 4), "copy vec4s (the inner block a multiple of 4) or scalars"),
        ),
        "glsl": (
            Param("pack", (1, 4), "outputs per fragment: R32F (1) or RGBA32F (4) output texture"),
            Param("in_pack", (1, 4), "data texture: 1 value per texel, or 4 consecutive values per texel"),
            Param("square", (0, 1), "data and output textures row-aligned (0) or wrapped square-ish (1)"),
        ),
    }

    # --- problems ------------------------------------------------------------------------------------------

    def from_node(self, shapes: Sequence[tuple[int, ...] | None], attrs: Mapping[str, Any]) -> GatherProblem:
        """Build the problem of a node ``(data, indices)`` taking rows along ``attrs["axis"]``."""
        data = input_shape(self.name, shapes, 0)
        indices = input_shape(self.name, shapes, 1)
        return GatherProblem(data, indices, attrs["axis"])

    def from_onnx(self, op_type: str, opset: int, attrs: Mapping[str, Any]) -> dict[str, Any]:
        """Return ``{"axis"}`` of a Gather node (ONNX default 0; checked against the rank with the shapes).

        Raises:
            ValueError: For an axis that is not an integer.
        """
        axis = attrs.get("axis", 0)
        if isinstance(axis, bool) or not isinstance(axis, int):
            raise ValueError(f"axis={axis!r} is not an integer")
        return {"axis": axis}

    def parse_problem(self, text: str) -> GatherProblem:
        """Parse ``dims:i<dims>[:a<axis>]``: ``30522x384:i8x128``, ``1x128x768:is:a1`` (a scalar index)."""
        match = _SHAPE.match(text.strip().lower())
        if not match:
            raise ShapeError(
                f"gather shape {text!r} is not dims:i<indices dims or s>[:a<axis>] (like 30522x384:i8x128)"
            )
        data = parse_dims("gather", match.group("dims"))
        given = match.group("indices")
        indices = () if given == "s" else parse_dims("gather", given)
        axis = int(match.group("axis")) if match.group("axis") is not None else 0
        return GatherProblem(data, indices, axis)

    def problem_key(self, problem: GatherProblem) -> str:
        """Return e.g. ``30522x384:i8x128:a0``, ``1x128x768:is:a1`` (the axis always normalised)."""
        indices = "x".join(map(str, problem.indices)) or "s"
        return "x".join(map(str, problem.data)) + f":i{indices}:a{problem.axis}"

    def shape_vector(self, problem: GatherProblem) -> tuple[float, ...]:
        """Return (outer, dim, count, inner): the kernels only see this view."""
        return (float(problem.outer), float(problem.dim), float(problem.count), float(problem.inner))

    def flops(self, problem: GatherProblem) -> float:
        """Return 0: a copy (bandwidth-bound)."""
        return 0.0

    # --- params --------------------------------------------------------------------------------------------

    def default_params(self, problem: GatherProblem, limits: Limits, language: str) -> Params:
        """Return the language's default (vec4 copies of the inner block where it allows), or a fallback."""
        if language == "glsl":
            candidates: tuple[Params, ...] = (GLSL_DEFAULT_PARAMS, *_GLSL_FALLBACKS)
        else:
            candidates = (DEFAULT_PARAMS, *_FALLBACKS)
        return self.first_fitting(problem, candidates, limits, language)

    def constraints(self, problem: GatherProblem, params: Params, limits: Limits, language: str) -> str | None:
        """Return why ``params`` cannot run ``problem`` on a device with ``limits``, or None."""
        if language == "glsl":
            launch = self.gl_launch(problem, params)
            named = [("data", launch.inputs[0]), ("indices", launch.inputs[1]), ("output", launch.targets[0])]
            return first_too_big(named, limits.max_texture_size)
        if params["wg"] > limits.max_wg_x or params["wg"] > limits.max_invocations:
            return f"workgroup of {params['wg']} exceeds the device limits"
        if params["vec_width"] == 4 and problem.inner % 4:
            return f"vec_width=4 needs the inner block a multiple of 4 (it is {problem.inner})"
        groups = self.launch(problem, params).workgroups
        if max(groups) > limits.max_workgroups_per_dim:
            return f"dispatch {groups} exceeds {limits.max_workgroups_per_dim} workgroups per dimension"
        for what, count in (("data", math.prod(problem.data)), ("output", problem.size)):
            if 4 * count > limits.max_storage_binding:
                return (
                    f"{what}: a {4 * count}-byte buffer exceeds the storage binding limit {limits.max_storage_binding}"
                )
        return None

    # --- numbers -------------------------------------------------------------------------------------------

    def output_shape(self, problem: GatherProblem) -> tuple[int, ...]:
        """Return ``data[:axis] + indices + data[axis+1:]``."""
        axis = problem.axis
        return (*problem.data[:axis], *problem.indices, *problem.data[axis + 1 :])

    def make_inputs(self, problem: GatherProblem, rng: np.random.Generator) -> list[np.ndarray]:
        """Return data in [-1, 1] and in-range indices, negative ones included (float32 integers)."""
        data = rng.uniform(-1, 1, problem.data).astype(np.float32)
        indices = rng.integers(-problem.dim, problem.dim, problem.indices).astype(np.float32)
        return [data, np.asarray(indices, np.float32)]

    def reference(self, problem: GatherProblem, inputs: Sequence[np.ndarray]) -> np.ndarray:
        """Take the rows in numpy (out-of-range indices clamped, see :func:`source_rows`)."""
        data = np.asarray(inputs[0], np.float32).reshape(problem.data)
        rows = source_rows(np.asarray(inputs[1]).reshape(problem.indices), problem.dim)
        return np.take(data, rows, axis=problem.axis)

    # --- kernels -------------------------------------------------------------------------------------------

    def template_context(self, problem: GatherProblem, params: Params, language: str) -> dict[str, Any]:
        """Return the params and the view's constants (the inner block in vectors of vec_width for WGSL)."""
        common = {**params, "count": problem.count, "dim": problem.dim}
        if language == "glsl":
            launch = self.gl_launch(problem, params)
            return {
                **common,
                "inner": problem.inner,
                "rows": problem.rows,
                # both sides hold 4 values per texel and rows start on a texel: copy whole texels
                "aligned": params["pack"] == 4 and params["in_pack"] == 4,
                "x": launch.inputs[0].context(),
                "idx": launch.inputs[1].context(),
                "out": launch.targets[0].context(),
            }
        return {**common, "inner": problem.inner // params["vec_width"]}

    def launch(self, problem: GatherProblem, params: Params) -> Launch:
        """Return ``ceil(count / (wg * ept))`` workgroups and the uniform (outputs in vectors of vec_width)."""
        count = problem.size // params["vec_width"]
        groups = math.ceil(count / (params["wg"] * params["ept"]))
        return Launch(linear_grid(groups), (count, 0, 0, 0))

    def gl_launch(self, problem: GatherProblem, params: Params) -> GlLaunch:
        """Return data as ``[outer * dim, inner]``, the indices flat and the ``[outer * count, inner]`` output.

        The indices are stored like a model input (4 per texel, square-ish), so ids fed to a model need no
        relayout pass, and a long list never outgrows ``MAX_TEXTURE_SIZE``.
        """
        square = bool(params["square"])
        data = TexLayout(problem.outer * problem.dim, problem.inner, params["in_pack"], square)
        indices = TexLayout(1, problem.count, 4, True)
        target = TexLayout(problem.rows, problem.inner, params["pack"], square)
        return GlLaunch((data, indices), ("X", "I"), (target,), problem.rows, problem.inner)

    def device_inputs(self, problem: GatherProblem, params: Params, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Return data as ``[outer * dim, inner]`` and the indices as ``[count]``, float32 row-major views.

        Raises:
            ShapeError: When an input does not hold the values its view needs.
        """
        if len(inputs) != 2:
            raise ShapeError(f"gather {self.problem_key(problem)}: 2 inputs expected, got {len(inputs)}")
        views = [(problem.outer * problem.dim, problem.inner), (problem.count,)]
        out = []
        for what, array, view in zip(("data", "indices"), inputs, views, strict=True):
            values = np.ascontiguousarray(array, dtype=np.float32)
            if values.size != math.prod(view):
                raise ShapeError(f"gather {self.problem_key(problem)}: {what} has {values.size} values, not {view}")
            out.append(values.reshape(view))
        return out


SPEC = GatherSpec()
