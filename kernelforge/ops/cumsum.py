"""CumSum (ONNX opsets 11 and 14) along one axis: spec, reference, launch.

x is viewed as ``[outer, L, inner]`` with ``L`` the summed axis: ``outer * inner`` rows of ``L`` elements
``inner`` apart, each replaced by its running sums. ``exclusive`` leaves the element itself out of its sum (the
first is 0), ``reverse`` sums from the end of the row. The output has x's shape.

The kernels are plain scans, for the rows models hold (an attention mask's ``cumsum(-1)`` for position ids, a
few thousand elements at most): WGSL gives each row one invocation that walks it once in order (``O(L)`` a row,
rows in parallel); GLSL, whose fragments each write their own outputs, sums each output's prefix on its own
(``O(L)`` an output, ``O(L^2)`` a row: 4 million fetches for a row of 2,048). Sums accumulate in float32 in the
row's order, one value at a time, in both kernels, so they agree bit for bit and integer inputs (an attention
mask's) stay exact up to 2**24.

Node attributes (what :mod:`kernelforge.graph.onnx_scan` emits): ``axis`` (int), ``exclusive`` and ``reverse``
(bools).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from kernelforge.errors import ShapeError
from kernelforge.ops.shapes import AxisRows, check_axis, check_dims, linear_grid, parse_dims
from kernelforge.ops.spec import GlLaunch, Launch, Limits, OpSpec, Param, Params, input_shape
from kernelforge.ops.texture import TexLayout

_SHAPE = re.compile(r"^(?P<dims>[0-9x]+)(?::a(?P<axis>-?\d+))?(?P<flags>(?::(?:excl|rev))*)$")

DEFAULT_PARAMS: Params = {"rows_per_wg": 64}
_FALLBACKS: tuple[Params, ...] = ({"rows_per_wg": 32}, {"rows_per_wg": 1})
GLSL_DEFAULT_PARAMS: Params = {"pack": 4, "square": 0}
_GLSL_FALLBACKS: tuple[Params, ...] = ({"pack": 4, "square": 1}, {"pack": 1, "square": 1})


@dataclass(frozen=True)
class CumSumProblem(AxisRows):
    """One CumSum: x's ``shape``, the (normalised) ``axis``, ``exclusive`` and ``reverse``."""

    shape: tuple[int, ...]
    axis: int = -1
    exclusive: bool = False
    reverse: bool = False

    def __post_init__(self) -> None:
        shape = check_dims("cumsum", "shape", self.shape)
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "axis", check_axis("cumsum", self.axis, len(shape)))
        object.__setattr__(self, "exclusive", bool(self.exclusive))
        object.__setattr__(self, "reverse", bool(self.reverse))


def cumsum_array(x: np.ndarray, axis: int, exclusive: bool = False, reverse: bool = False) -> np.ndarray:
    """Return ONNX CumSum of ``x`` along ``axis``, summed in float64 (integers exactly), in x's dtype.

    The one numpy definition of the op: the reference and constant folding use it.
    """
    data = np.asarray(x)
    wide = data.astype(np.int64 if data.dtype.kind in "iub" else np.float64)
    v = np.moveaxis(wide, axis, -1)
    v = v[..., ::-1] if reverse else v
    out = np.cumsum(v, axis=-1)
    if exclusive:  # the sums shifted by one: no subtraction, so no rounding the scan did not do
        out = np.concatenate([np.zeros_like(out[..., :1]), out[..., :-1]], axis=-1)
    out = np.moveaxis(out[..., ::-1] if reverse else out, -1, axis)
    return out.astype(data.dtype if data.dtype.kind in "iuf" else np.float32)


class CumSumSpec(OpSpec[CumSumProblem]):
    """The CumSum op."""

    name: ClassVar[str] = "cumsum"
    templates: ClassVar[dict[str, str]] = {"wgsl": "wgsl/cumsum.wgsl.j2", "glsl": "glsl/cumsum.frag.j2"}
    shape_syntax: ClassVar[str] = (
        "dims joined by x, optional ':a<axis>' (default -1), optional ':excl' (exclusive) and ':rev' (reverse): "
        "1x2048, 4x16x8:a1:excl:rev"
    )
    spaces: ClassVar[dict[str, tuple[Param, ...]]] = {
        "wgsl": (Param("rows_per_wg", (1, 2, 4, 8, 16, 32, 64, 128, 256), "rows (one invocation each) per workgroup"),),
        "glsl": (
            Param("pack", (1, 4), "R32F (1) or RGBA32F (4) textures: 4 outputs per fragment"),
            Param("square", (0, 1), "textures row-aligned (0) or wrapped square-ish (1)"),
        ),
    }

    # --- problems ------------------------------------------------------------------------------------------

    def from_node(self, shapes: Sequence[tuple[int, ...] | None], attrs: Mapping[str, Any]) -> CumSumProblem:
        """Build the problem of a node summing x along ``attrs["axis"]``."""
        x = input_shape(self.name, shapes, 0)
        exclusive, reverse = bool(attrs.get("exclusive", False)), bool(attrs.get("reverse", False))
        return CumSumProblem(x, int(attrs["axis"]), exclusive, reverse)

    def parse_problem(self, text: str) -> CumSumProblem:
        """Parse ``dims[:a<axis>][:excl][:rev]``: ``1x2048``, ``4x16x8:a1:excl:rev``."""
        match = _SHAPE.match(text.strip().lower())
        if not match:
            raise ShapeError(f"cumsum shape {text!r} is not dims[:a<axis>][:excl][:rev] (like 1x2048:a-1)")
        flags = set(match.group("flags").split(":")) - {""}
        axis = int(match.group("axis")) if match.group("axis") is not None else -1
        return CumSumProblem(parse_dims("cumsum", match.group("dims")), axis, "excl" in flags, "rev" in flags)

    def problem_key(self, problem: CumSumProblem) -> str:
        """Return e.g. ``1x2048:a1``, ``4x16x8:a1:excl:rev`` (the axis normalised)."""
        key = "x".join(map(str, problem.shape)) + f":a{problem.axis}"
        return key + (":excl" if problem.exclusive else "") + (":rev" if problem.reverse else "")

    def shape_vector(self, problem: CumSumProblem) -> tuple[float, ...]:
        """Return (outer, L, inner): the kernels only see this 3-D view."""
        return (float(problem.outer), float(problem.length), float(problem.inner))

    def flops(self, problem: CumSumProblem) -> float:
        """Return one addition per element (what a scan needs; the GLSL kernel does more)."""
        return float(problem.size)

    # --- params --------------------------------------------------------------------------------------------

    def default_params(self, problem: CumSumProblem, limits: Limits, language: str) -> Params:
        """Return 64 rows a workgroup (WGSL) or packed row-aligned textures (GLSL), or the first fallback."""
        if language == "glsl":
            candidates: tuple[Params, ...] = (GLSL_DEFAULT_PARAMS, *_GLSL_FALLBACKS)
        else:
            candidates = (DEFAULT_PARAMS, *_FALLBACKS)
        return self.first_fitting(problem, candidates, limits, language)

    def constraints(self, problem: CumSumProblem, params: Params, limits: Limits, language: str) -> str | None:
        """Return why ``params`` cannot run ``problem`` on a device with ``limits``, or None."""
        if language == "glsl":
            return self.gl_launch(problem, params).inputs[0].too_big(limits.max_texture_size)
        r = params["rows_per_wg"]
        if r > limits.max_wg_x or r > limits.max_invocations:
            return f"workgroup of {r} exceeds the device's limits"
        groups = self.launch(problem, params).workgroups
        if max(groups) > limits.max_workgroups_per_dim:
            return f"dispatch {groups} exceeds {limits.max_workgroups_per_dim} workgroups per dimension"
        if 4 * problem.size > limits.max_storage_binding:
            return f"a {4 * problem.size}-byte buffer exceeds the storage binding limit {limits.max_storage_binding}"
        return None

    # --- numbers -------------------------------------------------------------------------------------------

    def output_shape(self, problem: CumSumProblem) -> tuple[int, ...]:
        """Return x's shape."""
        return problem.shape

    def make_inputs(self, problem: CumSumProblem, rng: np.random.Generator) -> list[np.ndarray]:
        """Return x in [-1, 2): sums drift away from 0, so relative errors stay meaningful."""
        return [rng.uniform(-1.0, 2.0, problem.shape).astype(np.float32)]

    def reference(self, problem: CumSumProblem, inputs: Sequence[np.ndarray]) -> np.ndarray:
        """Compute the running sums in float64 (:func:`cumsum_array`), as float32."""
        x = np.asarray(inputs[0], np.float32).reshape(problem.shape).astype(np.float64)
        return cumsum_array(x, problem.axis, problem.exclusive, problem.reverse).astype(np.float32)

    # --- kernels -------------------------------------------------------------------------------------------

    def template_context(self, problem: CumSumProblem, params: Params, language: str) -> dict[str, Any]:
        """Return the params and flags (GLSL: the baked view and textures)."""
        common = {**params, "exclusive": problem.exclusive, "reverse": problem.reverse}
        if language == "glsl":
            layout = self.gl_launch(problem, params).inputs[0]
            return {
                **common,
                "contiguous": problem.inner == 1,
                "length": problem.length,
                "rows": layout.rows,
                "x": layout.context(),
            }
        return common

    def launch(self, problem: CumSumProblem, params: Params) -> Launch:
        """Return one invocation per row and the uniforms (rows, L, inner)."""
        groups = math.ceil(problem.rows / params["rows_per_wg"])
        return Launch(linear_grid(groups), (problem.rows, problem.length, problem.inner, 0))

    def _matrix(self, problem: CumSumProblem) -> tuple[int, int]:
        # last axis: [outer, L], a texel holds PACK neighbours of one row; otherwise [outer*L, inner]: a texel
        # holds the same position of PACK neighbouring rows, summed lane by lane
        if problem.inner == 1:
            return problem.outer, problem.length
        return problem.outer * problem.length, problem.inner

    def gl_launch(self, problem: CumSumProblem, params: Params) -> GlLaunch:
        """Return the input and output textures: the same ``[rows, cols]`` view and layout."""
        rows, cols = self._matrix(problem)
        layout = TexLayout(rows, cols, params["pack"], bool(params["square"]))
        return GlLaunch((layout,), ("X",), (layout,), rows, cols)

    def device_inputs(self, problem: CumSumProblem, params: Params, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Return x as contiguous float32."""
        x = np.ascontiguousarray(inputs[0], dtype=np.float32)
        if x.size != problem.size:
            raise ShapeError(f"cumsum {self.problem_key(problem)}: x has {x.size} values, not {problem.size}")
        return [x.reshape(problem.shape)]


SPEC = CumSumSpec()
