"""ArgMax and ArgMin (ONNX opsets 1-13+) along one axis: spec, reference, launch.

x is viewed as ``[outer, R, inner]`` with ``R`` the reduced axis: ``outer * inner`` outputs, each the index
(``0 .. R-1``, carried as an exact float32 value) of the largest (``max``) or smallest (``min``) of ``R``
elements ``inner`` apart. The output keeps the axis as size 1 (``keepdims``) or drops it.

Ties give the first index, or the last with ``last`` (ONNX ``select_last_index=1``). NaN follows ONNX Runtime,
whose kernel scans a row in order, keeping its first element and replacing the kept one by each later element
that compares greater (``>=`` with ``last``; less for ``min``): a comparison with a NaN is false, so a NaN is
never picked, except that a row whose *first* element is NaN gives 0 (nothing compares greater than it).
numpy's argmax, which returns the first NaN, differs.

Node attributes (what ONNX ArgMax/ArgMin become, :meth:`ArgReduceSpec.from_onnx`): ``axis`` (int),
``kind`` (``max`` or ``min``), ``last`` (bool) and ``keepdims`` (bool).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from kernelforge.errors import ShapeError
from kernelforge.ops.reduce import row_textures
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
from kernelforge.ops.texture import first_too_big

KINDS = ("max", "min")
"""``max``: ArgMax, ``min``: ArgMin."""

_SHAPE = re.compile(r"^(?P<dims>[0-9x]+)(?::a(?P<axis>-?\d+))?(?::(?P<kind>max|min))?(?P<flags>(?::(?:last|k0))*)$")

DEFAULT_PARAMS: Params = {"threads": 64, "outputs_per_wg": 1}
# Tried in order when the size-based default breaks a constraint (tiny device limits).
_FALLBACKS: tuple[Params, ...] = (
    {"threads": 32, "outputs_per_wg": 1},
    {"threads": 1, "outputs_per_wg": 32},
    {"threads": 1, "outputs_per_wg": 1},
)
GLSL_DEFAULT_PARAMS: Params = {"pack": 4, "square": 0}
_GLSL_FALLBACKS: tuple[Params, ...] = ({"pack": 4, "square": 1}, {"pack": 1, "square": 1})


@dataclass(frozen=True)
class ArgReduceProblem(AxisRows):
    """One ArgMax/ArgMin: x's ``shape``, the (normalised) ``axis``, the ``kind``, ``last`` and ``keepdims``."""

    shape: tuple[int, ...]
    axis: int = 0
    kind: str = "max"
    last: bool = False
    keepdims: bool = True

    def __post_init__(self) -> None:
        shape = check_dims("arg_reduce", "shape", self.shape)
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "axis", check_axis("arg_reduce", self.axis, len(shape)))
        if self.kind not in KINDS:
            raise ShapeError(f"arg_reduce: kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        object.__setattr__(self, "last", bool(self.last))
        object.__setattr__(self, "keepdims", bool(self.keepdims))

    @property
    def outputs(self) -> int:
        """Number of outputs: one per row."""
        return self.rows


def arg_reduce_array(x: np.ndarray, axis: int, kind: str, last: bool = False, keepdims: bool = True) -> np.ndarray:
    """Return ONNX Runtime's ArgMax (``kind="max"``) or ArgMin of ``x`` along ``axis`` as int64.

    The one numpy definition of the op (module docstring: ties and NaN): the reference and constant folding
    use it. Values are compared in float64.
    """
    v = np.moveaxis(np.asarray(x, np.float64), axis, -1)
    nan = np.isnan(v)
    if kind == "max":
        best = np.where(nan, -np.inf, v).max(axis=-1, keepdims=True)
    else:
        best = np.where(nan, np.inf, v).min(axis=-1, keepdims=True)
    hit = ~nan & (v == best)  # the non-NaN elements equal to the best one (an all -inf row: every element)
    index = v.shape[-1] - 1 - np.argmax(hit[..., ::-1], axis=-1) if last else np.argmax(hit, axis=-1)
    index = np.where(nan[..., 0] | ~hit.any(axis=-1), 0, index).astype(np.int64)
    return np.expand_dims(index, axis) if keepdims else index


class ArgReduceSpec(OpSpec[ArgReduceProblem]):
    """The ArgMax/ArgMin op."""

    name: ClassVar[str] = "arg_reduce"
    templates: ClassVar[dict[str, str]] = {"wgsl": "wgsl/arg_reduce.wgsl.j2", "glsl": "glsl/arg_reduce.frag.j2"}
    shape_syntax: ClassVar[str] = (
        "dims joined by x, optional ':a<axis>' (default 0), optional ':max' or ':min' (default max), "
        "optional ':last' (select_last_index) and ':k0' (keepdims=0): 8x50257:a1:max, 2x3x4:a1:min:last:k0"
    )
    spaces: ClassVar[dict[str, tuple[Param, ...]]] = {
        "wgsl": (
            Param("threads", (1, 2, 4, 8, 16, 32, 64, 128, 256), "threads per output (1 = a thread owns an output)"),
            Param("outputs_per_wg", (1, 2, 4, 8, 16, 32, 64, 128, 256), "outputs per workgroup"),
        ),
        "glsl": (
            Param("pack", (1, 4), "R32F (1) or RGBA32F (4) textures: 4 outputs per fragment"),
            Param("square", (0, 1), "textures row-aligned (0) or wrapped square-ish (1)"),
        ),
    }
    onnx_ops: ClassVar[tuple[str, ...]] = ("ArgMax", "ArgMin")

    # --- problems ------------------------------------------------------------------------------------------

    def from_node(self, shapes: Sequence[tuple[int, ...] | None], attrs: Mapping[str, Any]) -> ArgReduceProblem:
        """Build the problem of a node picking along ``attrs["axis"]`` (see the module docstring's attributes)."""
        x = input_shape(self.name, shapes, 0)
        return ArgReduceProblem(
            x, int(attrs["axis"]), attrs["kind"], bool(attrs.get("last", False)), bool(attrs.get("keepdims", True))
        )

    def from_onnx(self, op_type: str, opset: int, attrs: Mapping[str, Any]) -> dict[str, Any]:
        """Return the node attributes of an ArgMax/ArgMin node (axis 0, keepdims 1, first index by default)."""
        last = int(attrs.get("select_last_index", 0))
        keepdims = int(attrs.get("keepdims", 1))
        if last not in (0, 1):
            raise ValueError(f"select_last_index={last} must be 0 or 1")
        if keepdims not in (0, 1):
            raise ValueError(f"keepdims={keepdims} must be 0 or 1")
        kind = "max" if op_type == "ArgMax" else "min"
        return {"axis": int(attrs.get("axis", 0)), "kind": kind, "last": bool(last), "keepdims": bool(keepdims)}

    def parse_problem(self, text: str) -> ArgReduceProblem:
        """Parse ``dims[:a<axis>][:max|:min][:last][:k0]``: ``8x50257:a1``, ``2x3x4:a-1:min:last:k0``."""
        match = _SHAPE.match(text.strip().lower())
        if not match:
            raise ShapeError(f"arg_reduce shape {text!r} is not dims[:a<axis>][:max|:min][:last][:k0] (like 8x1000:a1)")
        flags = set(match.group("flags").split(":")) - {""}
        axis = int(match.group("axis")) if match.group("axis") is not None else 0
        dims = parse_dims("arg_reduce", match.group("dims"))
        return ArgReduceProblem(dims, axis, match.group("kind") or "max", "last" in flags, "k0" not in flags)

    def problem_key(self, problem: ArgReduceProblem) -> str:
        """Return e.g. ``8x1000:a1:max``, ``2x3x4:a2:min:last:k0`` (the axis normalised)."""
        key = "x".join(map(str, problem.shape)) + f":a{problem.axis}:{problem.kind}"
        return key + (":last" if problem.last else "") + ("" if problem.keepdims else ":k0")

    def shape_vector(self, problem: ArgReduceProblem) -> tuple[float, ...]:
        """Return (outer, R, inner): the kernels only see this 3-D view."""
        return (float(problem.outer), float(problem.length), float(problem.inner))

    def flops(self, problem: ArgReduceProblem) -> float:
        """Return one comparison per element."""
        return float(problem.size)

    # --- params --------------------------------------------------------------------------------------------

    def default_params(self, problem: ArgReduceProblem, limits: Limits, language: str) -> Params:
        """Return a size-based default (short rows: a thread per output; long ones up to 64), or a fallback."""
        if language == "glsl":
            candidates: tuple[Params, ...] = (GLSL_DEFAULT_PARAMS, *_GLSL_FALLBACKS)
        else:
            threads = 1 if problem.length <= 16 else min(64, next_pow2(math.ceil(problem.length / 8)))
            first = {"threads": threads, "outputs_per_wg": min(64 // threads, next_pow2(problem.outputs))}
            candidates = (first, DEFAULT_PARAMS, *_FALLBACKS)
        return self.first_fitting(problem, candidates, limits, language)

    def constraints(self, problem: ArgReduceProblem, params: Params, limits: Limits, language: str) -> str | None:
        """Return why ``params`` cannot run ``problem`` on a device with ``limits``, or None."""
        if language == "glsl":
            launch = self.gl_launch(problem, params)
            return first_too_big([("x", launch.inputs[0]), ("output", launch.targets[0])], limits.max_texture_size)
        groups = self.launch(problem, params).workgroups
        t, o = params["threads"], params["outputs_per_wg"]
        return row_reduction_problem(t, o, problem.length, problem.outputs, groups, problem.size, limits)

    # --- numbers -------------------------------------------------------------------------------------------

    def output_shape(self, problem: ArgReduceProblem) -> tuple[int, ...]:
        """Return x's shape with the axis as size 1 (``keepdims``) or without it."""
        a = problem.axis
        return problem.shape[:a] + ((1,) if problem.keepdims else ()) + problem.shape[a + 1 :]

    def make_inputs(self, problem: ArgReduceProblem, rng: np.random.Generator) -> list[np.ndarray]:
        """Return x of small integers (-8 .. 8), so that rows have ties and ``last`` matters."""
        return [rng.integers(-8, 9, problem.shape).astype(np.float32)]

    def reference(self, problem: ArgReduceProblem, inputs: Sequence[np.ndarray]) -> np.ndarray:
        """Compute the indices (:func:`arg_reduce_array`) as float32 of :meth:`output_shape`."""
        x = np.asarray(inputs[0], np.float32).reshape(problem.shape)
        out = arg_reduce_array(x, problem.axis, problem.kind, problem.last, problem.keepdims)
        return out.astype(np.float32)

    # --- kernels -------------------------------------------------------------------------------------------

    def template_context(self, problem: ArgReduceProblem, params: Params, language: str) -> dict[str, Any]:
        """Return the params, the kind and tie rule (GLSL: the baked view and textures)."""
        common = {**params, "kind": problem.kind, "last": problem.last}
        if language == "glsl":
            launch = self.gl_launch(problem, params)
            return {
                **common,
                "contiguous": problem.inner == 1,
                "outer": problem.outer,
                "length": problem.length,
                "x": launch.inputs[0].context(),
                "out": launch.targets[0].context(),
            }
        return common

    def launch(self, problem: ArgReduceProblem, params: Params) -> Launch:
        """Return one workgroup per ``outputs_per_wg`` outputs and the uniforms (outputs, R, inner)."""
        groups = math.ceil(problem.outputs / params["outputs_per_wg"])
        return Launch(linear_grid(groups), (problem.outputs, problem.length, problem.inner, 0))

    def gl_launch(self, problem: ArgReduceProblem, params: Params) -> GlLaunch:
        """Return x and the output as matrices, as the reduce op does (:func:`kernelforge.ops.reduce.row_textures`)."""
        return row_textures(problem.outer, problem.length, problem.inner, params)

    def device_inputs(
        self, problem: ArgReduceProblem, params: Params, inputs: Sequence[np.ndarray]
    ) -> list[np.ndarray]:
        """Return x as contiguous float32."""
        x = np.ascontiguousarray(inputs[0], dtype=np.float32)
        if x.size != problem.size:
            raise ShapeError(f"arg_reduce {self.problem_key(problem)}: x has {x.size} values, not {problem.size}")
        return [x.reshape(problem.shape)]


SPEC = ArgReduceSpec()
