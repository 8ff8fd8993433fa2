"""Transpose (ONNX) with any permutation of up to 6 axes: also the NCHW <-> NHWC layout converter.

Kernels see the *collapsed* problem: size-1 axes are dropped and input axes that stay neighbours, in order,
in the output are merged (NCHW -> NHWC, perm 0231, becomes ``[N, C, H*W]`` with perm ``021``). A collapsed
perm of ``10`` or ``021`` is a (batched) 2-D transpose, which the tiled WGSL kernel handles.
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

MAX_RANK = 6

_SHAPE = re.compile(r"^(?P<dims>[0-9x]+)(?::p(?P<perm>\d+))?$")

# Tiled is the 2-D default (a 16x16 tile, 256 invocations each moving 1 value per pass); others are naive.
TILED_DEFAULT: Params = {"tiled": 1, "tile": 16, "wg": 256, "ept": 1}
NAIVE_DEFAULT: Params = {"tiled": 0, "tile": 8, "wg": 64, "ept": 1}
_FALLBACKS: tuple[Params, ...] = (
    {"tiled": 1, "tile": 8, "wg": 64, "ept": 1},
    NAIVE_DEFAULT,
    {"tiled": 0, "tile": 8, "wg": 32, "ept": 1},
    {"tiled": 0, "tile": 8, "wg": 32, "ept": 8},
)
GLSL_DEFAULT_PARAMS: Params = {"pack": 4, "in_pack": 1, "square": 0}
_GLSL_FALLBACKS: tuple[Params, ...] = (
    {"pack": 4, "in_pack": 1, "square": 1},
    {"pack": 1, "in_pack": 1, "square": 1},
)


def collapse(shape: Sequence[int], perm: Sequence[int]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Return the smallest ``(dims, perm)`` that moves data exactly as ``shape`` transposed by ``perm``.

    Size-1 axes are dropped, then input axes that are neighbours among the kept ones and appear next to each
    other, in that order, in the permutation are merged. A tensor of one element collapses to ``((1,), (0,))``.
    """
    kept = [a for a in range(len(shape)) if shape[a] > 1]
    if not kept:
        return (1,), (0,)
    order = [a for a in perm if shape[a] > 1]  # output order of the kept input axes
    groups: list[list[int]] = []  # runs of consecutive input axes, in output order
    for a in order:
        if groups and kept.index(a) == kept.index(groups[-1][-1]) + 1:
            groups[-1].append(a)
        else:
            groups.append([a])
    by_input = sorted(groups, key=lambda g: g[0])
    dims = tuple(math.prod(shape[a] for a in g) for g in by_input)
    new_perm = tuple(by_input.index(g) for g in groups)
    return dims, new_perm


@dataclass(frozen=True)
class TransposeProblem:
    """One Transpose call: the input ``shape`` and ``perm`` (``None`` = reversed axes, as in ONNX)."""

    shape: tuple[int, ...]
    perm: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        shape = check_dims("transpose", "shape", self.shape, MAX_RANK)
        rank = len(shape)
        perm = tuple(range(rank - 1, -1, -1)) if self.perm is None else self.perm
        if isinstance(perm, (str, bytes)) or not isinstance(perm, Sequence):
            raise ShapeError(f"transpose: perm must be a sequence of axes, got {perm!r}")
        if any(isinstance(a, bool) or not isinstance(a, (int, np.integer)) for a in perm) or sorted(
            int(a) for a in perm
        ) != list(range(rank)):
            raise ShapeError(f"transpose: perm {tuple(perm)!r} is not a permutation of 0..{rank - 1}")
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "perm", tuple(int(a) for a in perm))

    @property
    def axes(self) -> tuple[int, ...]:
        """The permutation (never None after construction)."""
        assert self.perm is not None
        return self.perm

    @property
    def size(self) -> int:
        """Number of elements."""
        return math.prod(self.shape)

    @property
    def collapsed(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """The collapsed ``(dims, perm)`` the kernels work on (see :func:`collapse`)."""
        return collapse(self.shape, self.axes)

    @property
    def batched_2d(self) -> tuple[int, int, int] | None:
        """``(batch, rows, cols)`` when the problem is a (batched) 2-D transpose, else None."""
        dims, perm = self.collapsed
        if perm == (1, 0):
            return (1, dims[0], dims[1])
        if perm == (0, 2, 1):
            return (dims[0], dims[1], dims[2])
        return None


class TransposeSpec(OpSpec[TransposeProblem]):
    """The Transpose op."""

    name: ClassVar[str] = "transpose"
    templates: ClassVar[dict[str, str]] = {"wgsl": "wgsl/transpose.wgsl.j2", "glsl": "glsl/transpose.frag.j2"}
    shape_syntax: ClassVar[str] = "dims joined by x, optional ':p<perm digits>' (default reversed): 1x64x56x56:p0231"
    spaces: ClassVar[dict[str, tuple[Param, ...]]] = {
        "wgsl": (
            Param("tiled", (0, 1), "per-element kernel (0) or a workgroup-memory tile for (batched) 2-D cases (1)"),
            Param("tile", (8, 16, 32), "tile edge of the tiled kernel (the naive one needs the first choice)"),
            Param("wg", (32, 64, 128, 256), "invocations per workgroup (tiled: tile x wg/tile)"),
            Param("ept", (1, 2, 4, 8), "output elements per invocation of the naive kernel (tiled needs 1)"),
        ),
        "glsl": (
            Param("pack", (1, 4), "outputs per fragment: R32F (1) or RGBA32F (4) output texture"),
            Param("in_pack", (1, 4), "input texture: 1 value per texel, or 4 consecutive values per texel"),
            Param("square", (0, 1), "textures row-aligned (0) or wrapped square-ish (1)"),
        ),
    }

    def from_node(self, shapes: Sequence[tuple[int, ...] | None], attrs: Mapping[str, Any]) -> TransposeProblem:
        """Build the problem of a node permuting x's axes by ``attrs["perm"]`` (None: reversed, as in ONNX)."""
        x = input_shape(self.name, shapes, 0)
        perm = attrs.get("perm")
        return TransposeProblem(x, None if perm is None else tuple(perm))

    def parse_problem(self, text: str) -> TransposeProblem:
        """Parse ``dims[:p<perm>]``: ``1x64x56x56:p0231`` (one digit per axis), ``3x5`` (reversed axes)."""
        match = _SHAPE.match(text.strip().lower())
        if not match:
            raise ShapeError(f"transpose shape {text!r} is not dims[:p<perm digits>] (like 1x64x56x56:p0231)")
        perm = match.group("perm")
        return TransposeProblem(parse_dims("transpose", match.group("dims")), tuple(map(int, perm)) if perm else None)

    def problem_key(self, problem: TransposeProblem) -> str:
        """Return e.g. ``1x64x56x56:p0231`` (the perm always spelled out)."""
        return "x".join(map(str, problem.shape)) + ":p" + "".join(map(str, problem.axes))

    def shape_vector(self, problem: TransposeProblem) -> tuple[float, ...]:
        """Return (elements, collapsed rank, first collapsed output dim, last collapsed output dim)."""
        dims, perm = problem.collapsed
        return (problem.size, len(dims), dims[perm[0]], dims[perm[-1]])

    def flops(self, problem: TransposeProblem) -> float:
        """Return 0: a copy (bandwidth-bound)."""
        return 0.0

    def default_params(self, problem: TransposeProblem, limits: Limits, language: str) -> Params:
        """Return the language's default (tiled for 2-D cases), or the first fallback that fits."""
        if language == "glsl":
            candidates: tuple[Params, ...] = (GLSL_DEFAULT_PARAMS, *_GLSL_FALLBACKS)
        else:
            # a tile pays off only when both matrix edges fill it: NCHW -> NHWC of an RGB image (3 x H*W) in
            # 16 x 16 tiles wastes 13/16 of each and ran 50x slower than the naive kernel on SwiftShader
            b2d = problem.batched_2d
            tile = int(TILED_DEFAULT["tile"])
            first = TILED_DEFAULT if b2d is not None and min(b2d[1], b2d[2]) >= tile else NAIVE_DEFAULT
            candidates = (first, *_FALLBACKS)
        return self.first_fitting(problem, candidates, limits, language)

    def constraints(self, problem: TransposeProblem, params: Params, limits: Limits, language: str) -> str | None:
        """Return why ``params`` cannot run ``problem`` on a device with ``limits``, or None."""
        if language == "glsl":
            launch = self.gl_launch(problem, params)
            return first_too_big([("input", launch.inputs[0]), ("output", launch.targets[0])], limits.max_texture_size)
        wg, tile = params["wg"], params["tile"]
        if wg > limits.max_wg_x or wg > limits.max_invocations:
            return f"workgroup of {wg} exceeds the device limits"
        if params["tiled"]:
            if problem.batched_2d is None:
                dims, perm = problem.collapsed
                return f"tiled=1 needs a (batched) 2-D transpose; this one collapses to dims {dims} perm {perm}"
            if params["ept"] != 1:
                return "ept applies to the naive kernel only (tiled=1 needs ept=1)"
            if wg < tile or wg > tile * tile:
                return f"wg={wg} must be tile x 1 .. tile x tile invocations (tile={tile})"
            if tile > limits.max_wg_x:
                return f"tile={tile} exceeds the device's workgroup x limit"
            shared = 4 * tile * (tile + 1)
            if shared > limits.max_workgroup_storage:
                return f"{shared} bytes of workgroup memory > device limit {limits.max_workgroup_storage}"
        elif tile != self.params("wgsl")[1].choices[0]:
            return "tile applies to the tiled kernel only (tiled=0 needs the first choice)"
        groups = self.launch(problem, params).workgroups
        if max(groups) > limits.max_workgroups_per_dim:
            return f"dispatch {groups} exceeds {limits.max_workgroups_per_dim} workgroups per dimension"
        if 4 * problem.size > limits.max_storage_binding:
            return f"a {4 * problem.size}-byte buffer exceeds the storage binding limit {limits.max_storage_binding}"
        return None

    def output_shape(self, problem: TransposeProblem) -> tuple[int, ...]:
        """Return ``shape[perm[i]]`` for each output axis i."""
        return tuple(problem.shape[a] for a in problem.axes)

    def make_inputs(self, problem: TransposeProblem, rng: np.random.Generator) -> list[np.ndarray]:
        """Return x with values in [-1, 1]."""
        return [rng.uniform(-1, 1, problem.shape).astype(np.float32)]

    def reference(self, problem: TransposeProblem, inputs: Sequence[np.ndarray]) -> np.ndarray:
        """Transpose in numpy."""
        x = np.asarray(inputs[0], np.float32).reshape(problem.shape)
        return np.ascontiguousarray(x.transpose(problem.axes))

    def _strides(self, problem: TransposeProblem) -> tuple[tuple[int, ...], tuple[int, ...]]:
        # collapsed output dims, and for each output axis the input stride of its coordinate
        dims, perm = problem.collapsed
        in_strides = [math.prod(dims[a + 1 :]) for a in range(len(dims))]
        return tuple(dims[a] for a in perm), tuple(in_strides[a] for a in perm)

    def _matrices(self, problem: TransposeProblem) -> tuple[tuple[int, int], tuple[int, int]]:
        # the GLSL views: input [size / last input dim, last input dim], output likewise with the output dims
        dims, _ = problem.collapsed
        out_dims, _ = self._strides(problem)
        return (problem.size // dims[-1], dims[-1]), (problem.size // out_dims[-1], out_dims[-1])

    def template_context(self, problem: TransposeProblem, params: Params, language: str) -> dict[str, Any]:
        """Return validated params plus the collapsed output dims and input strides."""
        p = params
        out_dims, strides = self._strides(problem)
        dims, perm = problem.collapsed
        if language == "glsl":
            launch = self.gl_launch(problem, p)
            in_cols = dims[-1]
            return {
                **p,
                "out_dims": list(out_dims),
                "strides": list(strides),
                "in_cols": in_cols,
                # the last axis stays last and whole texels line up: a fragment copies one input texel
                "vec_copy": perm[-1] == len(dims) - 1 and p["pack"] == 4 and p["in_pack"] == 4 and in_cols % 4 == 0,
                "x": launch.inputs[0].context(),
                "out": launch.targets[0].context(),
            }
        return {**p, "rank": len(out_dims)}

    def launch(self, problem: TransposeProblem, params: Params) -> Launch:
        """Return the dispatch and uniforms.

        Tiled: one workgroup per tile of (cols, rows) per batch, uniforms (batch, rows, cols). Naive: a linear
        grid over the output, uniforms (count, 6 output dims, 6 input strides, pad) of the collapsed problem.
        """
        b2d = problem.batched_2d
        if params["tiled"] and b2d is not None:
            batch, rows, cols = b2d
            t = params["tile"]
            return Launch((math.ceil(cols / t), math.ceil(rows / t), batch), (batch, rows, cols, 0))
        out_dims, strides = self._strides(problem)
        pad = (0,) * (6 - len(out_dims))
        groups = math.ceil(problem.size / (params["wg"] * params["ept"]))
        return Launch(linear_grid(groups), (problem.size, *out_dims, *pad, *strides, *pad, 0))

    def gl_launch(self, problem: TransposeProblem, params: Params) -> GlLaunch:
        """Return the input texture ``[size / in_last, in_last]`` and the output ``[size / out_last, out_last]``."""
        (ir, ic), (orows, ocols) = self._matrices(problem)
        square = bool(params["square"])
        source = TexLayout(ir, ic, params["in_pack"], square)
        target = TexLayout(orows, ocols, params["pack"], square)
        return GlLaunch((source,), ("X",), (target,), orows, ocols)

    def device_inputs(
        self, problem: TransposeProblem, params: Params, inputs: Sequence[np.ndarray]
    ) -> list[np.ndarray]:
        """Return x as a contiguous float32 array."""
        return [np.ascontiguousarray(inputs[0], dtype=np.float32).reshape(problem.shape)]


SPEC = TransposeSpec()
