"""Concat (ONNX) of N-D tensors along one axis; spec, reference, space, launch.

Every input ``k`` is viewed as ``[outer, w_k]`` with ``w_k = a_k * inner`` (``a_k`` its size along the axis,
``inner`` the product of the dims after it); the output is ``[outer, W]`` with ``W = sum(w_k)``. Output column
``c`` comes from the input whose (constant) column range ``[off_k, off_k + w_k)`` holds it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from kernelforge.errors import ShapeError
from kernelforge.ops.shapes import check_axis, check_dims, linear_grid, parse_dims
from kernelforge.ops.spec import GlLaunch, Launch, Limits, OpSpec, Param, Params
from kernelforge.ops.texture import TexLayout, first_too_big

# WebGPU's default maxStorageBuffersPerShaderStage is 8: the output takes one, so 7 inputs fit. Limits does
# not carry this limit (every device opened here uses the WebGPU defaults), so it is a constant.
MAX_STORAGE_BUFFERS = 8
MAX_WGSL_INPUTS = MAX_STORAGE_BUFFERS - 1
# WebGL2 guarantees 16 texture units in a fragment shader (MAX_TEXTURE_IMAGE_UNITS); one is kept spare.
MAX_GLSL_INPUTS = 15
MAX_INPUTS = 64

_SHAPE = re.compile(r"^(?P<dims>[0-9x+]+):a(?P<axis>-?\d+)$")

DEFAULT_PARAMS: Params = {"wg": 64, "ept": 1, "vec_width": 4}
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
class ConcatProblem:
    """One Concat call: the input ``shapes`` and the (normalised, ``0 .. rank-1``) ``axis``."""

    shapes: tuple[tuple[int, ...], ...]
    axis: int

    def __post_init__(self) -> None:
        if isinstance(self.shapes, (str, bytes)) or not isinstance(self.shapes, Sequence) or not self.shapes:
            raise ShapeError(f"concat: shapes must be a non-empty sequence of shapes, got {self.shapes!r}")
        if len(self.shapes) > MAX_INPUTS:
            raise ShapeError(f"concat: at most {MAX_INPUTS} inputs, got {len(self.shapes)}")
        shapes = tuple(check_dims("concat", f"shapes[{k}]", s) for k, s in enumerate(self.shapes))
        rank = len(shapes[0])
        axis = check_axis("concat", self.axis, rank)
        for k, s in enumerate(shapes):
            if len(s) != rank or s[:axis] != shapes[0][:axis] or s[axis + 1 :] != shapes[0][axis + 1 :]:
                raise ShapeError(f"concat: shapes[{k}] {s} differs from shapes[0] {shapes[0]} outside axis {axis}")
        object.__setattr__(self, "shapes", shapes)
        object.__setattr__(self, "axis", axis)

    @property
    def outer(self) -> int:
        """Product of the dims before the axis."""
        return math.prod(self.shapes[0][: self.axis])

    @property
    def inner(self) -> int:
        """Product of the dims after the axis."""
        return math.prod(self.shapes[0][self.axis + 1 :])

    @property
    def widths(self) -> tuple[int, ...]:
        """Each input's row width ``w_k = a_k * inner`` in the ``[outer, w_k]`` view."""
        return tuple(s[self.axis] * self.inner for s in self.shapes)

    @property
    def offsets(self) -> tuple[int, ...]:
        """First output column of each input."""
        return tuple(sum(self.widths[:k]) for k in range(len(self.widths)))

    @property
    def width(self) -> int:
        """Output row width ``W``."""
        return sum(self.widths)

    @property
    def size(self) -> int:
        """Number of output elements."""
        return self.outer * self.width


class ConcatSpec(OpSpec[ConcatProblem]):
    """The Concat op."""

    name: ClassVar[str] = "concat"
    templates: ClassVar[dict[str, str]] = {"wgsl": "wgsl/concat.wgsl.j2", "glsl": "glsl/concat.frag.j2"}
    shape_syntax: ClassVar[str] = "input dims joined by '+', then ':a<axis>': 1x64x56x56+1x32x56x56:a1"
    spaces: ClassVar[dict[str, tuple[Param, ...]]] = {
        "wgsl": (
            Param("wg", (32, 64, 128, 256), "invocations per workgroup"),
            Param("ept", (1, 2, 4, 8), "output elements (or vec4s) per invocation, a workgroup apart"),
            Param("vec_width", (1, 4), "copy vec4s (every input's row width a multiple of 4) or scalars"),
        ),
        "glsl": (
            Param("pack", (1, 4), "outputs per fragment: R32F (1) or RGBA32F (4) output texture"),
            Param("in_pack", (1, 4), "input textures: 1 value per texel, or 4 consecutive values per texel"),
            Param("square", (0, 1), "textures row-aligned (0) or wrapped square-ish (1)"),
        ),
    }

    def from_node(self, shapes: Sequence[tuple[int, ...] | None], attrs: Mapping[str, Any]) -> ConcatProblem:
        """Build the problem of a node joining its inputs along ``attrs["axis"]`` (non-negative)."""
        if any(s is None for s in shapes):
            raise ShapeError("concat: every input must be given")
        return ConcatProblem(tuple(s for s in shapes if s is not None), int(attrs["axis"]))

    def parse_problem(self, text: str) -> ConcatProblem:
        """Parse ``dims+dims+...:a<axis>``: ``1x64x56x56+1x32x56x56:a1``, ``7+3:a0``, ``2x3+2x5:a-1``."""
        match = _SHAPE.match(text.strip().lower())
        if not match:
            raise ShapeError(f"concat shape {text!r} is not dims+dims...:a<axis> (like 1x64x7x7+1x32x7x7:a1)")
        shapes = tuple(parse_dims("concat", part) for part in match.group("dims").split("+"))
        return ConcatProblem(shapes, int(match.group("axis")))

    def problem_key(self, problem: ConcatProblem) -> str:
        """Return e.g. ``1x64x56x56+1x32x56x56:a1`` (the axis always normalised)."""
        return "+".join("x".join(map(str, s)) for s in problem.shapes) + f":a{problem.axis}"

    def shape_vector(self, problem: ConcatProblem) -> tuple[float, ...]:
        """Return (outer, W, inner, inputs)."""
        return (problem.outer, problem.width, problem.inner, len(problem.shapes))

    def flops(self, problem: ConcatProblem) -> float:
        """Return 0: a copy (bandwidth-bound)."""
        return 0.0

    def default_params(self, problem: ConcatProblem, limits: Limits, language: str) -> Params:
        """Return the language's default, or the first fallback that fits."""
        if language == "glsl":
            candidates: tuple[Params, ...] = (GLSL_DEFAULT_PARAMS, *_GLSL_FALLBACKS)
        else:
            candidates = (DEFAULT_PARAMS, *_FALLBACKS)
        return self.first_fitting(problem, candidates, limits, language)

    def constraints(self, problem: ConcatProblem, params: Params, limits: Limits, language: str) -> str | None:
        """Return why ``params`` cannot run ``problem`` on a device with ``limits``, or None."""
        count = len(problem.shapes)
        if language == "glsl":
            if count > MAX_GLSL_INPUTS:
                return f"{count} inputs > {MAX_GLSL_INPUTS} textures per fragment shader (WebGL2 has 16 units)"
            launch = self.gl_launch(problem, params)
            names = [*(f"input {k}" for k in range(count)), "output"]
            return first_too_big(zip(names, [*launch.inputs, *launch.targets], strict=True), limits.max_texture_size)
        if count > MAX_WGSL_INPUTS:
            return (
                f"{count} inputs + 1 output = {count + 1} storage buffers > {MAX_STORAGE_BUFFERS} per shader stage "
                "(WebGPU's default maxStorageBuffersPerShaderStage); split the concat"
            )
        if params["wg"] > limits.max_wg_x or params["wg"] > limits.max_invocations:
            return f"workgroup of {params['wg']} exceeds the device limits"
        if params["vec_width"] == 4 and any(w % 4 for w in problem.widths):
            return f"vec_width=4 needs every input's row width a multiple of 4 (widths {problem.widths})"
        groups = self.launch(problem, params).workgroups
        if max(groups) > limits.max_workgroups_per_dim:
            return f"dispatch {groups} exceeds {limits.max_workgroups_per_dim} workgroups per dimension"
        if 4 * problem.size > limits.max_storage_binding:
            return f"a {4 * problem.size}-byte buffer exceeds the storage binding limit {limits.max_storage_binding}"
        return None

    def output_shape(self, problem: ConcatProblem) -> tuple[int, ...]:
        """Return the inputs' shape with the axis sizes summed."""
        first = problem.shapes[0]
        total = sum(s[problem.axis] for s in problem.shapes)
        return (*first[: problem.axis], total, *first[problem.axis + 1 :])

    def make_inputs(self, problem: ConcatProblem, rng: np.random.Generator) -> list[np.ndarray]:
        """Return one array per input shape with values in [-1, 1]."""
        return [rng.uniform(-1, 1, s).astype(np.float32) for s in problem.shapes]

    def reference(self, problem: ConcatProblem, inputs: Sequence[np.ndarray]) -> np.ndarray:
        """Concatenate in numpy."""
        arrays = [np.asarray(x, np.float32).reshape(s) for x, s in zip(inputs, problem.shapes, strict=True)]
        return np.concatenate(arrays, axis=problem.axis)

    def template_context(self, problem: ConcatProblem, params: Params, language: str) -> dict[str, Any]:
        """Return validated params plus the constant column offsets and widths of the inputs."""
        p = params
        if language == "glsl":
            launch = self.gl_launch(problem, p)
            return {
                **p,
                "width": problem.width,
                "offsets": list(problem.offsets),
                "widths": list(problem.widths),
                # a whole output texel always comes from one texel of one input: copy texels, not lanes
                "aligned": p["pack"] == 4 and p["in_pack"] == 4 and all(w % 4 == 0 for w in problem.widths),
                "ins": [layout.context() for layout in launch.inputs],
                "out": launch.targets[0].context(),
            }
        vw = p["vec_width"]
        return {
            **p,
            "width": problem.width // vw,
            "offsets": [o // vw for o in problem.offsets],
            "widths": [w // vw for w in problem.widths],
        }

    def launch(self, problem: ConcatProblem, params: Params) -> Launch:
        """Return ``ceil(count / (wg * ept))`` workgroups and the uniform (count in vectors of vec_width)."""
        count = problem.size // params["vec_width"]
        groups = math.ceil(count / (params["wg"] * params["ept"]))
        return Launch(linear_grid(groups), (count, 0, 0, 0))

    def gl_launch(self, problem: ConcatProblem, params: Params) -> GlLaunch:
        """Return one ``[outer, w_k]`` texture per input and the ``[outer, W]`` output."""
        square = bool(params["square"])
        inputs = tuple(TexLayout(problem.outer, w, params["in_pack"], square) for w in problem.widths)
        target = TexLayout(problem.outer, problem.width, params["pack"], square)
        samplers = tuple(f"X{k}" for k in range(len(inputs)))
        return GlLaunch(inputs, samplers, (target,), problem.outer, problem.width)

    def device_inputs(self, problem: ConcatProblem, params: Params, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Return the inputs as contiguous float32 arrays."""
        return [np.ascontiguousarray(x, dtype=np.float32) for x in inputs[: len(problem.shapes)]]


SPEC = ConcatSpec()
