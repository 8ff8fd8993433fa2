"""Softmax (ONNX opset 13) along one axis of an N-D tensor; spec, reference, space, launch.

The tensor is viewed as ``[outer, L, inner]`` with ``L`` the softmax axis: there are ``outer * inner`` rows of
``L`` elements each, a row's elements ``inner`` apart.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from kernelforge.errors import ShapeError
from kernelforge.ops.shapes import (
    AxisRows,
    check_axis,
    check_dims,
    linear_grid,
    next_pow2,
    parse_dims,
    row_reduction_problem,
)
from kernelforge.ops.spec import GlLaunch, Launch, Limits, OpSpec, Param, Params, input_shape
from kernelforge.ops.texture import TexLayout

_SHAPE = re.compile(r"^(?P<dims>[0-9x]+)(?::a(?P<axis>-?\d+))?$")

DEFAULT_PARAMS: Params = {"threads": 64, "rows_per_wg": 1, "online": 0}
# Tried in order when the size-based default breaks a constraint (tiny device limits).
_FALLBACKS: tuple[Params, ...] = (
    {"threads": 32, "rows_per_wg": 1, "online": 0},
    {"threads": 1, "rows_per_wg": 32, "online": 0},
    {"threads": 1, "rows_per_wg": 1, "online": 0},
)
GLSL_DEFAULT_PARAMS: Params = {"pack": 4, "square": 0, "online": 0}
_GLSL_FALLBACKS: tuple[Params, ...] = (
    {"pack": 4, "square": 1, "online": 0},
    {"pack": 1, "square": 1, "online": 0},
)


@dataclass(frozen=True)
class SoftmaxProblem(AxisRows):
    """One Softmax call: ``shape`` and the (normalised, ``0 .. rank-1``) ``axis``."""

    shape: tuple[int, ...]
    axis: int = -1

    def __post_init__(self) -> None:
        shape = check_dims("softmax", "shape", self.shape)
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "axis", check_axis("softmax", self.axis, len(shape)))


class SoftmaxSpec(OpSpec[SoftmaxProblem]):
    """The Softmax op."""

    name: ClassVar[str] = "softmax"
    templates: ClassVar[dict[str, str]] = {"wgsl": "wgsl/softmax.wgsl.j2", "glsl": "glsl/softmax.frag.j2"}
    shape_syntax: ClassVar[str] = "dims joined by x, optional ':a<axis>' (default -1): 8x1000:a-1, 2x64x7x7:a1"
    spaces: ClassVar[dict[str, tuple[Param, ...]]] = {
        "wgsl": (
            Param("threads", (1, 2, 4, 8, 16, 32, 64, 128, 256), "threads per row (1 = one thread owns a row)"),
            Param("rows_per_wg", (1, 2, 4, 8, 16, 32, 64, 128, 256), "rows per workgroup"),
            Param("online", (0, 1), "max and sum in one pass with a running rescale (1) or two passes (0)"),
        ),
        "glsl": (
            Param("pack", (1, 4), "outputs per fragment: R32F (1) or RGBA32F (4) input and output textures"),
            Param("square", (0, 1), "textures row-aligned (0) or wrapped square-ish (1)"),
            Param("online", (0, 1), "max and sum in one pass with a running rescale (1) or two passes (0)"),
        ),
    }

    def from_node(self, shapes: Sequence[tuple[int, ...] | None], attrs: Mapping[str, Any]) -> SoftmaxProblem:
        """Build the problem of a node normalising x along ``attrs["axis"]`` (ONNX-13 semantics: one axis)."""
        x = input_shape(self.name, shapes, 0)
        return SoftmaxProblem(x, int(attrs["axis"]))

    def parse_problem(self, text: str) -> SoftmaxProblem:
        """Parse ``dims[:a<axis>]``: ``8x1000`` (axis -1), ``8x1000:a-1``, ``2x64x7x7:a1``."""
        match = _SHAPE.match(text.strip().lower())
        if not match:
            raise ShapeError(f"softmax shape {text!r} is not dims[:a<axis>] (like 8x1000:a-1)")
        axis = int(match.group("axis")) if match.group("axis") is not None else -1
        return SoftmaxProblem(parse_dims("softmax", match.group("dims")), axis)

    def problem_key(self, problem: SoftmaxProblem) -> str:
        """Return e.g. ``8x1000:a1`` (the axis always normalised, so equal problems share a key)."""
        return "x".join(map(str, problem.shape)) + f":a{problem.axis}"

    def shape_vector(self, problem: SoftmaxProblem) -> tuple[float, ...]:
        """Return (outer, L, inner): the kernel only sees this 3-D view."""
        return (problem.outer, problem.length, problem.inner)

    def flops(self, problem: SoftmaxProblem) -> float:
        """Return 5 per element: max, subtract, exp, sum, scale."""
        return 5.0 * problem.size

    def default_params(self, problem: SoftmaxProblem, limits: Limits, language: str) -> Params:
        """Return a size-based default (short rows: a thread per row), or the first fallback that fits."""
        if language == "glsl":
            candidates: tuple[Params, ...] = (GLSL_DEFAULT_PARAMS, *_GLSL_FALLBACKS)
        else:
            # short rows: a thread per row; longer ones: about 4 elements per thread, up to 64 threads a row
            # (ORT WebGPU reduces a row with one workgroup); 64 threads per workgroup either way
            threads = 1 if problem.length <= 16 else min(64, next_pow2(math.ceil(problem.length / 4)))
            rows_per_wg = min(64 // threads, next_pow2(problem.rows))
            first = {"threads": threads, "rows_per_wg": rows_per_wg, "online": 0}
            candidates = (first, DEFAULT_PARAMS, *_FALLBACKS)
        return self.first_fitting(problem, candidates, limits, language)

    def constraints(self, problem: SoftmaxProblem, params: Params, limits: Limits, language: str) -> str | None:
        """Return why ``params`` cannot run ``problem`` on a device with ``limits``, or None."""
        if language == "glsl":
            layout = self.gl_launch(problem, params).inputs[0]
            return layout.too_big(limits.max_texture_size)
        groups = self.launch(problem, params).workgroups
        return row_reduction_problem(
            params["threads"], params["rows_per_wg"], problem.length, problem.rows, groups, problem.size, limits
        )

    def output_shape(self, problem: SoftmaxProblem) -> tuple[int, ...]:
        """Return the input shape."""
        return problem.shape

    def make_inputs(self, problem: SoftmaxProblem, rng: np.random.Generator) -> list[np.ndarray]:
        """Return x with values in [-8, 8] (wide enough that the max subtraction matters)."""
        return [rng.uniform(-8, 8, problem.shape).astype(np.float32)]

    def reference(self, problem: SoftmaxProblem, inputs: Sequence[np.ndarray]) -> np.ndarray:
        """Compute the numerically stable softmax in float64."""
        x = np.asarray(inputs[0], np.float64).reshape(problem.shape)
        e = np.exp(x - x.max(axis=problem.axis, keepdims=True))
        return (e / e.sum(axis=problem.axis, keepdims=True)).astype(np.float32)

    def _matrix(self, problem: SoftmaxProblem) -> tuple[int, int]:
        # Last axis: [outer, L], a fragment's texel holds pack elements of one row. Otherwise [outer*L, inner]:
        # a texel holds the same position of pack neighbouring rows, so pack=4 reduces 4 rows at once.
        if problem.inner == 1:
            return problem.outer, problem.length
        return problem.outer * problem.length, problem.inner

    def template_context(self, problem: SoftmaxProblem, params: Params, language: str) -> dict[str, Any]:
        """Return validated params plus the view sizes (GLSL) or the reduction steps (WGSL)."""
        p = params
        if language == "glsl":
            launch = self.gl_launch(problem, p)
            return {
                **p,
                "last_axis": problem.inner == 1,
                "length": problem.length,
                "x": launch.inputs[0].context(),
                "out": launch.targets[0].context(),
            }
        steps = []
        s = p["threads"] // 2
        while s:
            steps.append(s)
            s //= 2
        return {**p, "steps": steps}

    def launch(self, problem: SoftmaxProblem, params: Params) -> Launch:
        """Return one workgroup per ``rows_per_wg`` rows and the uniforms (rows, L, inner)."""
        groups = math.ceil(problem.rows / params["rows_per_wg"])
        return Launch(linear_grid(groups), (problem.rows, problem.length, problem.inner, 0))

    def gl_launch(self, problem: SoftmaxProblem, params: Params) -> GlLaunch:
        """Return the input and output textures: the same ``[rows, cols]`` view and layout."""
        rows, cols = self._matrix(problem)
        layout = TexLayout(rows, cols, params["pack"], bool(params["square"]))
        return GlLaunch((layout,), ("X",), (layout,), rows, cols)

    def device_inputs(self, problem: SoftmaxProblem, params: Params, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Return x as a contiguous float32 array."""
        return [np.ascontiguousarray(inputs[0], dtype=np.float32).reshape(problem.shape)]


SPEC = SoftmaxSpec()
