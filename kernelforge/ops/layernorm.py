"""LayerNormalization (ONNX opset 17): normalise over the trailing axes, then scale and shift.

``Y = (X - mean) / sqrt(var + epsilon) * Scale + B``, mean and biased variance over axes ``axis .. rank-1``.
The tensor is viewed as ``rows = prod(shape[:axis])`` contiguous rows of ``L = prod(shape[axis:])`` elements;
Scale and B (optional) hold ``L`` values each, in the row-major order of ``shape[axis:]``.

Node attributes (what :meth:`LayerNormSpec.from_onnx` makes of an ONNX node): ``axis`` (int) and ``epsilon``
(float). Only ``stash_type=1`` (float32 statistics) runs; the optional Mean and InvStdDev outputs are the
graph layer's (``onnx_reduce.layernorm_statistics``).
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
    check_axis,
    check_dims,
    linear_grid,
    next_pow2,
    parse_dims,
    row_reduction_problem,
)
from kernelforge.ops.spec import GlLaunch, Launch, Limits, OpSpec, Param, Params, input_shape
from kernelforge.ops.texture import TexLayout, first_too_big

DEFAULT_EPSILON = 1e-5
MAX_EPSILON = 1e30
"""Epsilons past this are refused: the kernels take epsilon as an f32 literal."""

_SHAPE = re.compile(r"^(?P<dims>[0-9x]+)(?::a(?P<axis>-?\d+))?(?::e(?P<eps>[0-9.e+-]+))?(?P<nb>:nb)?$")

DEFAULT_PARAMS: Params = {"threads": 64, "rows_per_wg": 1, "one_pass": 0}
# Tried in order when the size-based default breaks a constraint (tiny device limits).
_FALLBACKS: tuple[Params, ...] = (
    {"threads": 32, "rows_per_wg": 1, "one_pass": 0},
    {"threads": 1, "rows_per_wg": 32, "one_pass": 0},
    {"threads": 1, "rows_per_wg": 1, "one_pass": 0},
)
GLSL_DEFAULT_PARAMS: Params = {"pack": 4, "square": 0, "one_pass": 0}
_GLSL_FALLBACKS: tuple[Params, ...] = (
    {"pack": 4, "square": 1, "one_pass": 0},
    {"pack": 1, "square": 1, "one_pass": 0},
)


def f32_epsilon(value: Any) -> float:
    """Return ``value`` as the shortest decimal that reads back as the same float32 (ONNX stores it as float32).

    So an epsilon read from a model (float32 ``1e-5`` is ``9.99999974738e-06`` as a double) and one typed on
    the command line give the same problem, key and shader literal.

    Raises:
        ShapeError: When it is not a finite number in ``[0, MAX_EPSILON]``.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ShapeError(f"layernorm: epsilon must be a number, got {value!r}")
    number = float(value)
    if not (math.isfinite(number) and 0.0 <= number <= MAX_EPSILON):
        raise ShapeError(f"layernorm: epsilon must be finite and in [0, {MAX_EPSILON:g}], got {number!r}")
    return float(str(np.float32(number)))


@dataclass(frozen=True)
class LayerNormProblem:
    """One LayerNormalization call.

    ``shape`` is x's, ``axis`` the first normalised axis (normalised to ``0 .. rank-1``), ``epsilon`` as a
    float32 decimal (:func:`f32_epsilon`) and ``has_bias`` whether B is given.
    """

    shape: tuple[int, ...]
    axis: int = -1
    epsilon: float = DEFAULT_EPSILON
    has_bias: bool = True

    def __post_init__(self) -> None:
        shape = check_dims("layernorm", "shape", self.shape)
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "axis", check_axis("layernorm", self.axis, len(shape)))
        object.__setattr__(self, "epsilon", f32_epsilon(self.epsilon))
        if not isinstance(self.has_bias, (bool, np.bool_)):
            raise ShapeError(f"layernorm: has_bias must be a bool, got {self.has_bias!r}")
        object.__setattr__(self, "has_bias", bool(self.has_bias))

    @property
    def rows(self) -> int:
        """Number of normalised rows: the product of the dims before the axis."""
        return math.prod(self.shape[: self.axis])

    @property
    def length(self) -> int:
        """Elements per row (``L``): the product of the normalised dims."""
        return math.prod(self.shape[self.axis :])

    @property
    def size(self) -> int:
        """Number of elements of x."""
        return math.prod(self.shape)


def _strip_ones(shape: Sequence[int]) -> tuple[int, ...]:
    dims = tuple(int(d) for d in shape)
    k = 0
    while k < len(dims) and dims[k] == 1:
        k += 1
    return dims[k:]


class LayerNormSpec(OpSpec[LayerNormProblem]):
    """The LayerNormalization op."""

    name: ClassVar[str] = "layernorm"
    templates: ClassVar[dict[str, str]] = {"wgsl": "wgsl/layernorm.wgsl.j2", "glsl": "glsl/layernorm.frag.j2"}
    shape_syntax: ClassVar[str] = (
        "dims joined by x, optional ':a<axis>' (default -1), ':e<epsilon>' (default 1e-05), ':nb' (no B): "
        "128x384, 2x8x16:a1:e1e-12:nb"
    )
    onnx_ops: ClassVar[tuple[str, ...]] = ("LayerNormalization",)
    spaces: ClassVar[dict[str, tuple[Param, ...]]] = {
        "wgsl": (
            Param("threads", (1, 2, 4, 8, 16, 32, 64, 128, 256), "threads per row (1 = one thread owns a row)"),
            Param("rows_per_wg", (1, 2, 4, 8, 16, 32, 64, 128, 256), "rows per workgroup"),
            Param(
                "one_pass",
                (0, 1),
                "mean, then the centred variance (0: x read 3 times) or shifted sum and sum of squares in one "
                "read (1: x read twice, less stable)",
            ),
        ),
        "glsl": (
            Param("pack", (1, 4), "outputs per fragment: R32F (1) or RGBA32F (4) input and output textures"),
            Param("square", (0, 1), "textures row-aligned (0) or wrapped square-ish (1)"),
            Param("one_pass", (0, 1), "statistics in two walks of the row (0) or one, shifted (1)"),
        ),
    }

    # --- problems ------------------------------------------------------------------------------------------

    def from_node(self, shapes: Sequence[tuple[int, ...] | None], attrs: Mapping[str, Any]) -> LayerNormProblem:
        """Build the problem of a node ``(x, scale, b?)`` normalising x from ``attrs["axis"]`` on.

        Raises:
            ShapeError: When Scale or B does not hold exactly the normalised shape's values (leading 1s aside).
        """
        x = input_shape(self.name, shapes, 0)
        scale = input_shape(self.name, shapes, 1)
        bias = shapes[2] if len(shapes) > 2 else None
        problem = LayerNormProblem(x, int(attrs["axis"]), attrs["epsilon"], bias is not None)
        normalised = problem.shape[problem.axis :]
        for what, shape in (("Scale", scale), ("B", bias)):
            if shape is not None and _strip_ones(shape) != _strip_ones(normalised):
                raise ShapeError(
                    f"layernorm: {what} of shape {tuple(shape)} must have the normalised shape {normalised} "
                    f"of x {problem.shape} (axis {problem.axis}); broadcasting it is not supported"
                )
        return problem

    def from_onnx(self, op_type: str, opset: int, attrs: Mapping[str, Any]) -> dict[str, Any]:
        """Return ``{"axis", "epsilon"}`` of a LayerNormalization node (ONNX defaults -1 and 1e-5).

        Raises:
            ValueError: For ``stash_type`` other than 1 (float32) or an epsilon the kernels cannot take.
        """
        stash = attrs.get("stash_type", 1)
        if stash != 1:
            raise ValueError(f"stash_type={stash!r} is not supported (only 1: float32 statistics)")
        try:
            epsilon = f32_epsilon(attrs.get("epsilon", DEFAULT_EPSILON))
        except ShapeError as exc:
            raise ValueError(str(exc).removeprefix("layernorm: ")) from None
        axis = attrs.get("axis", -1)
        if isinstance(axis, bool) or not isinstance(axis, int):
            raise ValueError(f"axis={axis!r} is not an integer")
        return {"axis": axis, "epsilon": epsilon}

    def parse_problem(self, text: str) -> LayerNormProblem:
        """Parse ``dims[:a<axis>][:e<epsilon>][:nb]``: ``128x384``, ``2x8x16:a1``, ``4x768:e1e-12:nb``."""
        match = _SHAPE.match(text.strip().lower())
        if not match:
            raise ShapeError(f"layernorm shape {text!r} is not dims[:a<axis>][:e<epsilon>][:nb] (like 128x384:a-1)")
        axis = int(match.group("axis")) if match.group("axis") is not None else -1
        epsilon = DEFAULT_EPSILON
        if match.group("eps") is not None:
            try:
                epsilon = float(match.group("eps"))
            except ValueError:
                raise ShapeError(f"layernorm shape {text!r}: epsilon {match.group('eps')!r} is not a number") from None
        dims = parse_dims("layernorm", match.group("dims"))
        return LayerNormProblem(dims, axis, epsilon, match.group("nb") is None)

    def problem_key(self, problem: LayerNormProblem) -> str:
        """Return e.g. ``128x384:a1``, ``2x8x16:a1:e1e-12:nb`` (epsilon only when not 1e-5, ``:nb``: no B)."""
        key = "x".join(map(str, problem.shape)) + f":a{problem.axis}"
        if problem.epsilon != DEFAULT_EPSILON:
            key += f":e{problem.epsilon!r}"
        return key if problem.has_bias else key + ":nb"

    def shape_vector(self, problem: LayerNormProblem) -> tuple[float, ...]:
        """Return (rows, L): the kernels only see this 2-D view."""
        return (float(problem.rows), float(problem.length))

    def flops(self, problem: LayerNormProblem) -> float:
        """Return 8 per element: sum, subtract, square and add, subtract, two multiplies, add."""
        return 8.0 * problem.size

    # --- params --------------------------------------------------------------------------------------------

    def default_params(self, problem: LayerNormProblem, limits: Limits, language: str) -> Params:
        """Return a size-based default (short rows: a thread per row), or the first fallback that fits.

        Both statistics passes are kept (``one_pass=0``): the default must be accurate on any data.
        """
        if language == "glsl":
            candidates: tuple[Params, ...] = (GLSL_DEFAULT_PARAMS, *_GLSL_FALLBACKS)
        else:
            # short rows: a thread per row; longer ones about 4 elements per thread, up to 64 threads a row;
            # 64 invocations per workgroup either way
            threads = 1 if problem.length <= 16 else min(64, next_pow2(math.ceil(problem.length / 4)))
            rows_per_wg = min(64 // threads, next_pow2(problem.rows))
            first = {"threads": threads, "rows_per_wg": rows_per_wg, "one_pass": 0}
            candidates = (first, DEFAULT_PARAMS, *_FALLBACKS)
        return self.first_fitting(problem, candidates, limits, language)

    def seed_params(self, problem: LayerNormProblem, limits: Limits, language: str) -> list[Params]:
        """Return the default with the statistics in one read: the likeliest win, verified like any trial."""
        default = self.default_params(problem, limits, language)
        seed = {**default, "one_pass": 1}
        return [seed] if self.constraints(problem, seed, limits, language) is None else []

    def constraints(self, problem: LayerNormProblem, params: Params, limits: Limits, language: str) -> str | None:
        """Return why ``params`` cannot run ``problem`` on a device with ``limits``, or None."""
        if language == "glsl":
            launch = self.gl_launch(problem, params)
            named = [("x", launch.inputs[0]), ("Scale", launch.inputs[1]), ("output", launch.targets[0])]
            return first_too_big(named, limits.max_texture_size)
        groups = self.launch(problem, params).workgroups
        return row_reduction_problem(
            params["threads"], params["rows_per_wg"], problem.length, problem.rows, groups, problem.size, limits
        )

    # --- numbers -------------------------------------------------------------------------------------------

    def output_shape(self, problem: LayerNormProblem) -> tuple[int, ...]:
        """Return x's shape."""
        return problem.shape

    def make_inputs(self, problem: LayerNormProblem, rng: np.random.Generator) -> list[np.ndarray]:
        """Return x, Scale and B (when given).

        Each row of x has its own offset in [-10, 10] and spread in [0.5, 2]: activations are seldom centred,
        and an offset well above the spread is what makes a one-read variance lose digits.
        """
        rows, length = problem.rows, problem.length
        offset = rng.uniform(-10, 10, (rows, 1))
        spread = rng.uniform(0.5, 2, (rows, 1))
        x = (offset + spread * rng.standard_normal((rows, length))).astype(np.float32).reshape(problem.shape)
        normalised = problem.shape[problem.axis :]
        inputs = [x, rng.uniform(0.5, 1.5, normalised).astype(np.float32)]
        if problem.has_bias:
            inputs.append(rng.uniform(-1, 1, normalised).astype(np.float32))
        return inputs

    def reference(self, problem: LayerNormProblem, inputs: Sequence[np.ndarray]) -> np.ndarray:
        """Compute the normalisation in float64 (biased variance), as float32."""
        x = np.asarray(inputs[0], np.float64).reshape(problem.rows, problem.length)
        scale = np.asarray(inputs[1], np.float64).reshape(problem.length)
        mean = x.mean(axis=1, keepdims=True)
        var = np.square(x - mean).mean(axis=1, keepdims=True)
        y = (x - mean) / np.sqrt(var + problem.epsilon) * scale
        if problem.has_bias:
            y = y + np.asarray(inputs[2], np.float64).reshape(problem.length)
        return y.astype(np.float32).reshape(problem.shape)

    # --- kernels -------------------------------------------------------------------------------------------

    def template_context(self, problem: LayerNormProblem, params: Params, language: str) -> dict[str, Any]:
        """Return the params, epsilon and B's presence, plus the textures (GLSL) or reduction steps (WGSL)."""
        common = {**params, "epsilon": problem.epsilon, "has_bias": problem.has_bias}
        if language == "glsl":
            launch = self.gl_launch(problem, params)
            return {
                **common,
                "length": problem.length,
                "x": launch.inputs[0].context(),
                "vector": launch.inputs[1].context(),
                "out": launch.targets[0].context(),
            }
        steps = []
        s = params["threads"] // 2
        while s:
            steps.append(s)
            s //= 2
        return {**common, "steps": steps}

    def launch(self, problem: LayerNormProblem, params: Params) -> Launch:
        """Return one workgroup per ``rows_per_wg`` rows and the uniforms (rows, L)."""
        groups = math.ceil(problem.rows / params["rows_per_wg"])
        return Launch(linear_grid(groups), (problem.rows, problem.length, 0, 0))

    def gl_launch(self, problem: LayerNormProblem, params: Params) -> GlLaunch:
        """Return x as ``[rows, L]`` (the output's layout too), then Scale and B as ``[1, L]`` of the same packing."""
        pack, square = params["pack"], bool(params["square"])
        layout = TexLayout(problem.rows, problem.length, pack, square)
        vector = TexLayout(1, problem.length, pack, square)
        inputs: tuple[TexLayout, ...] = (layout, vector, vector) if problem.has_bias else (layout, vector)
        samplers = ("X", "S", "B")[: len(inputs)]
        return GlLaunch(inputs, samplers, (layout,), problem.rows, problem.length)

    def device_inputs(
        self, problem: LayerNormProblem, params: Params, inputs: Sequence[np.ndarray]
    ) -> list[np.ndarray]:
        """Return x as ``[rows, L]`` and Scale (and B) as ``[L]``, float32: row-major views, no data moved.

        Raises:
            ShapeError: When an input does not hold the values its view needs.
        """
        count = 3 if problem.has_bias else 2
        if len(inputs) != count:
            raise ShapeError(f"layernorm {self.problem_key(problem)}: {count} inputs expected, got {len(inputs)}")
        views = [(problem.rows, problem.length), (problem.length,), (problem.length,)]
        out = []
        for what, array, view in zip(("x", "Scale", "B"), inputs, views, strict=False):
            data = np.ascontiguousarray(array, dtype=np.float32)
            if data.size != math.prod(view):
                raise ShapeError(f"layernorm {self.problem_key(problem)}: {what} has {data.size} values, not {view}")
            out.append(data.reshape(view))
        return out


SPEC = LayerNormSpec()
