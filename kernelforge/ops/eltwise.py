"""elementwise: a fused program over N broadcast inputs (``relu(x*a + b) + y``) in one pass, WGSL and GLSL.

Any chain of elementwise ops costs one kernel (WebDNN-style kernel merging): the program is parsed by
:mod:`kernelforge.ops._expr` into a frozen IR that is part of the problem, and the templates emit one SSA
statement per distinct IR node. Inputs broadcast as in numpy (rank <= 6, 0-d scalars allowed).

Indexing: the output and input shapes are first *collapsed* (size-1 output axes dropped, adjacent axes on
which every input is either present or broadcast merged), then each input is one of ``full`` (its element
offset equals the output's), ``scalar`` (offset 0) or ``strided`` (offset = sum of the output coordinates
times the input's strides, 0 on broadcast axes). Shapes and strides are baked into the shader as constants,
not passed as uniforms: the program already makes every kernel problem-specific, so uniforms would save no
compile, while constant divisors let compilers turn the per-element div/mod into multiply-shift. The uniform
block carries only the item count and the dispatch width.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from kernelforge.errors import ShapeError
from kernelforge.ops import _expr
from kernelforge.ops.spec import GlLaunch, Launch, Limits, OpSpec, Param, Params
from kernelforge.ops.texture import TexLayout, first_too_big

MAX_RANK = 6
MAX_DISPATCH = 65535
"""WebGPU's default maxComputeWorkgroupsPerDimension: the x extent of the (2-D when larger) dispatch grid."""

# TF.js WebGPU's unary/binary kernels run 64 threads with several elements each; vec4 when the shape allows.
DEFAULT_PARAMS: Params = {"wg": 64, "ept": 4, "vec4": 1}
_FALLBACKS: tuple[Params, ...] = (
    {"wg": 64, "ept": 4, "vec4": 0},
    {"wg": 256, "ept": 8, "vec4": 1},
    {"wg": 256, "ept": 8, "vec4": 0},
    {"wg": 64, "ept": 1, "vec4": 0},
)
# TF.js WebGL packs 4 values per RGBA32F texel; square-ish textures fit any flat size under MAX_TEXTURE_SIZE.
GLSL_DEFAULT_PARAMS: Params = {"pack_out": 4, "pack_in": 4, "square": 1}
_GLSL_FALLBACKS: tuple[Params, ...] = ({"pack_out": 1, "pack_in": 1, "square": 1},)

_DOMAINS = ((0.5, 1.5), (2.0, 3.0), (0.1, 0.4), (-1.0, 1.0))
_DOMAIN_TRIES = 32
_DIMS = re.compile(r"^\d+(?:x\d+)*$")


@dataclass(frozen=True)
class EltwiseProblem:
    """One call: an IR program over inputs ``names`` of ``shapes`` (input ``i`` of the IR is ``names[i]``)."""

    program: _expr.Node
    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]

    def __post_init__(self) -> None:
        if not isinstance(self.names, tuple) or not isinstance(self.shapes, tuple):
            raise ShapeError("elementwise: names and shapes must be tuples")
        if not self.names or len(self.names) != len(self.shapes):
            raise ShapeError(f"elementwise: {len(self.names)} names for {len(self.shapes)} shapes (need >= 1)")
        for name in self.names:
            _expr.check_name(name)
        if len(set(self.names)) != len(self.names):
            raise ShapeError(f"elementwise: duplicate input names {list(self.names)}")
        for name, shape in zip(self.names, self.shapes, strict=True):
            if not isinstance(shape, tuple) or len(shape) > MAX_RANK:
                raise ShapeError(f"elementwise: shape of {name!r} must be a tuple of rank <= {MAX_RANK}, got {shape!r}")
            if any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in shape):
                raise ShapeError(f"elementwise: shape of {name!r} must have integer sizes >= 1, got {shape!r}")
        used = _expr.validate(self.program, len(self.names))
        if used != set(range(len(self.names))):
            unused = [n for i, n in enumerate(self.names) if i not in used]
            raise ShapeError(f"elementwise: inputs {unused} are not used by the program")
        _expr.broadcast_shape(dict(zip(self.names, self.shapes, strict=True)))

    @classmethod
    def from_text(cls, expr: str, shapes: Mapping[str, Sequence[int]]) -> EltwiseProblem:
        """Build a problem from a program text and the shape of each input name.

        Raises:
            ShapeError: For a malformed program, an unknown or missing name, or shapes that do not broadcast.
        """
        root, names = _expr.parse(expr, tuple(shapes))
        missing = [n for n in shapes if n not in names]
        if missing:
            raise ShapeError(f"elementwise: inputs {missing} do not appear in {expr!r}")
        return cls(root, names, tuple(tuple(int(d) for d in shapes[n]) for n in names))

    @property
    def text(self) -> str:
        """The canonical program text."""
        return _expr.to_text(self.program, self.names)


@dataclass(frozen=True)
class _Plan:
    """Collapsed indexing of one problem (see the module docstring)."""

    size: int
    dims: tuple[int, ...]
    strides: tuple[tuple[int, ...], ...]
    kinds: tuple[str, ...]

    @property
    def aligned4(self) -> bool:
        """Whether 4 consecutive outputs starting at a multiple of 4 always share one row of the last axis."""
        return self.dims[-1] % 4 == 0

    def mode(self, k: int, lanes4: bool) -> str:
        """How input ``k`` is read: full, scalar, gather (per element), contig or splat (4 lanes at once)."""
        kind = self.kinds[k]
        if kind != "strided":
            return kind
        if lanes4 and self.aligned4:
            return "contig" if self.strides[k][-1] else "splat"
        return "gather"


@functools.lru_cache(maxsize=256)
def _plan(problem: EltwiseProblem) -> _Plan:
    out = _expr.broadcast_shape(dict(zip(problem.names, problem.shapes, strict=True)))
    rank = len(out)
    padded = [(1,) * (rank - len(s)) + s for s in problem.shapes]
    axes = [d for d in range(rank) if out[d] > 1]
    dims: list[int] = []
    present: list[tuple[bool, ...]] = []
    for d in axes:
        pattern = tuple(p[d] == out[d] for p in padded)
        if present and present[-1] == pattern:
            dims[-1] *= out[d]  # same broadcast pattern as the previous axis: one merged axis
        else:
            dims.append(out[d])
            present.append(pattern)
    if not dims:
        dims, present = [1], [tuple(False for _ in padded)]
    strides = []
    for k in range(len(padded)):
        acc, rev = 1, []
        for dim, pattern in zip(reversed(dims), reversed(present), strict=True):
            rev.append(acc if pattern[k] else 0)
            acc *= dim if pattern[k] else 1
        strides.append(tuple(reversed(rev)))
    kinds = tuple(
        "full" if all(p[k] for p in present) else "scalar" if not any(p[k] for p in present) else "strided"
        for k in range(len(padded))
    )
    return _Plan(math.prod(out), tuple(dims), tuple(strides), kinds)


def _size(shape: tuple[int, ...]) -> int:
    return math.prod(shape)


class EltwiseSpec(OpSpec[EltwiseProblem]):
    """The fused elementwise op."""

    name: ClassVar[str] = "elementwise"
    templates: ClassVar[dict[str, str]] = {"wgsl": "wgsl/elementwise.wgsl.j2", "glsl": "glsl/elementwise.frag.j2"}
    shape_syntax: ClassVar[str] = (
        "EXPR:NAME=DxD..,NAME=.. (every input of EXPR once, 'scalar' for 0-d), "
        "e.g. relu(x*a+b)+y:x=1x64x56x56,a=64x1x1,b=64x1x1,y=1x64x56x56; shapes are separated by ';'"
    )
    shape_separator: ClassVar[str] = ";"
    spaces: ClassVar[dict[str, tuple[Param, ...]]] = {
        "wgsl": (
            Param("wg", (64, 128, 256), "threads per workgroup"),
            Param("ept", (1, 2, 4, 8), "output items per thread (a workgroup owns wg*ept consecutive items)"),
            Param("vec4", (0, 1), "items are vec4s: needs the collapsed last output axis % 4 == 0"),
        ),
        "glsl": (
            Param("pack_out", (1, 4), "outputs per fragment: R32F (1) or RGBA32F (4 consecutive elements)"),
            Param("pack_in", (1, 4), "input textures: 1 value per texel or 4 consecutive elements per texel"),
            Param("square", (0, 1), "textures one texel row (0) or wrapped square-ish (1)"),
        ),
    }

    def from_node(self, shapes: Sequence[tuple[int, ...] | None], attrs: Mapping[str, Any]) -> EltwiseProblem:
        """Build the problem of a node computing ``attrs["expr"]``, whose names are ``v0, v1, ...`` in input order."""
        named = {f"v{i}": s for i, s in enumerate(shapes) if s is not None}
        return EltwiseProblem.from_text(str(attrs["expr"]), named)

    def node_inputs(self, problem: EltwiseProblem, present: Sequence[bool]) -> tuple[int, ...]:
        """Return the inputs the program reads (``v<k>`` is input ``k``), in the problem's order."""
        return tuple(int(name[1:]) for name in problem.names)

    def parse_problem(self, text: str) -> EltwiseProblem:
        """Parse ``EXPR:NAME=DxD..,NAME=..`` (``NAME=scalar`` for a 0-d input)."""
        expr, sep, shape_text = text.strip().rpartition(":")
        if not sep or not expr.strip():
            raise ShapeError(f"elementwise shape {text!r} is not EXPR:NAME=DxD..,NAME=..")
        shapes: dict[str, tuple[int, ...]] = {}
        for item in shape_text.split(","):
            name, eq, dims = item.strip().partition("=")
            name, dims = name.strip(), dims.strip().lower()
            if not eq or not name or not (dims in ("scalar", "") or _DIMS.match(dims)):
                raise ShapeError(f"elementwise shape {text!r}: {item.strip()!r} is not NAME=DxDx.. or NAME=scalar")
            if name in shapes:
                raise ShapeError(f"elementwise shape {text!r}: {name!r} given twice")
            shapes[name] = () if dims in ("scalar", "") else tuple(int(d) for d in dims.split("x"))
        return EltwiseProblem.from_text(expr, shapes)

    def problem_key(self, problem: EltwiseProblem) -> str:
        """Return the canonical ``EXPR:NAME=DxD..`` (parses back to an equal problem)."""
        dims = ",".join(
            f"{n}={'x'.join(map(str, s)) if s else 'scalar'}"
            for n, s in zip(problem.names, problem.shapes, strict=True)
        )
        return f"{problem.text}:{dims}"

    def shape_vector(self, problem: EltwiseProblem) -> tuple[float, ...]:
        """Return (output elements, collapsed rank, inputs, ops, broadcast inputs) for nearest-shape lookup."""
        plan = _plan(problem)
        strided = sum(k == "strided" for k in plan.kinds)
        return (plan.size, len(plan.dims), len(problem.names), 1 + _expr.count_ops(problem.program), 1 + strided)

    def flops(self, problem: EltwiseProblem) -> float:
        """Return output elements * op nodes of the IR tree."""
        return float(_plan(problem).size * _expr.count_ops(problem.program))

    def default_params(self, problem: EltwiseProblem, limits: Limits, language: str) -> Params:
        """Return the language's default, or the first fallback that fits the problem and device."""
        candidates = (DEFAULT_PARAMS, *_FALLBACKS) if language == "wgsl" else (GLSL_DEFAULT_PARAMS, *_GLSL_FALLBACKS)
        return self.first_fitting(problem, candidates, limits, language)

    def constraints(self, problem: EltwiseProblem, params: Params, limits: Limits, language: str) -> str | None:
        """Return why ``params`` cannot run ``problem`` on a device with ``limits``, or None."""
        plan = _plan(problem)
        if language == "glsl":
            launch = self.gl_launch(problem, params)
            inputs = [(f"input {name}", layout) for name, layout in zip(problem.names, launch.inputs, strict=True)]
            return first_too_big([*inputs, ("output", launch.targets[0])], limits.max_texture_size)
        if params["wg"] > min(limits.max_invocations, limits.max_wg_x):
            return f"workgroup of {params['wg']} threads exceeds the device limit"
        if params["vec4"] and not plan.aligned4:
            return f"vec4=1 needs the collapsed last output axis % 4 == 0 (collapsed shape {plan.dims})"
        groups = self.launch(problem, params).workgroups
        if max(groups) > limits.max_workgroups_per_dim:
            return f"dispatch {groups} exceeds {limits.max_workgroups_per_dim} workgroups per dimension"
        largest = 4 * max(plan.size, *(_size(s) for s in problem.shapes))
        if largest > limits.max_storage_binding:
            return f"a {largest}-byte buffer exceeds the device's storage binding limit {limits.max_storage_binding}"
        return None

    def output_shape(self, problem: EltwiseProblem) -> tuple[int, ...]:
        """Return the broadcast shape of the inputs."""
        return _expr.broadcast_shape(dict(zip(problem.names, problem.shapes, strict=True)))

    def make_inputs(self, problem: EltwiseProblem, rng: np.random.Generator) -> list[np.ndarray]:
        """Return inputs in a domain where the program is finite, so :func:`verify` can compare.

        Values are in [-1, 1], or [0.5, 1.5] for programs with div, sqrt, reciprocal or pow. When the
        reference is not finite everywhere (``sqrt(x - y)``, say), each input draws from one of a few
        positive ranges at random, up to :data:`_DOMAIN_TRIES` times, and the first finite draw wins.
        """
        first = (0.5, 1.5) if _expr.has_domain_ops(problem.program) else (-1.0, 1.0)
        choice = [first] * len(problem.shapes)
        arrays: list[np.ndarray] = []
        for _ in range(_DOMAIN_TRIES):
            arrays = [
                np.asarray(rng.uniform(lo, hi, s), dtype=np.float32).reshape(s)
                for (lo, hi), s in zip(choice, problem.shapes, strict=True)
            ]
            if np.all(np.isfinite(self.reference(problem, arrays))):
                break
            choice = [_DOMAINS[int(i)] for i in rng.integers(0, len(_DOMAINS), len(problem.shapes))]
        return arrays

    def reference(self, problem: EltwiseProblem, inputs: Sequence[np.ndarray]) -> np.ndarray:
        """Evaluate the IR in float64 numpy with broadcasting; return float32 of :meth:`output_shape`."""
        arrays = [np.asarray(x, np.float64).reshape(s) for x, s in zip(inputs, problem.shapes, strict=True)]
        out = _expr.evaluate(problem.program, arrays)
        with np.errstate(over="ignore"):
            return np.broadcast_to(out, self.output_shape(problem)).astype(np.float32)

    def _common(self, problem: EltwiseProblem, lanes4: bool) -> dict[str, Any]:
        plan = _plan(problem)
        steps, result = _expr.linearize(problem.program)
        inputs = []
        for k in range(len(problem.names)):
            axes = [
                {"dim": d, "stride": s, "first": i == 0}
                for i, (d, s) in reversed(list(enumerate(zip(plan.dims, plan.strides[k], strict=True))))
            ]
            strided = plan.kinds[k] == "strided"
            inputs.append({"index": k, "mode": plan.mode(k, lanes4), "axes": axes, "strided": strided})
        return {"inputs": inputs, "steps": steps, "result": result, "uses": sorted(_expr.ops_used(problem.program))}

    def template_context(self, problem: EltwiseProblem, params: Params, language: str) -> dict[str, Any]:
        """Return validated params, the SSA steps of the program and each input's indexing."""
        p = params
        plan = _plan(problem)
        if language == "glsl":
            ctx = self._common(problem, p["pack_out"] == 4)
            launch = self.gl_launch(problem, p)
            for x, layout in zip(ctx["inputs"], launch.inputs, strict=True):
                x["tex"] = layout.context()
            out = launch.targets[0]
            return {**p, **ctx, "size": plan.size, "out": {**out.context(), "texels": out.texels}}
        ctx = self._common(problem, bool(p["vec4"]))
        for x in ctx["inputs"]:
            x["vec"] = bool(p["vec4"]) and x["mode"] in ("full", "contig")
        return {**p, **ctx}

    def launch(self, problem: EltwiseProblem, params: Params) -> Launch:
        """Return a 1-D grid of workgroups (2-D past 65535), and the uniforms (items, groups along x)."""
        items = _plan(problem).size // (4 if params["vec4"] else 1)
        groups = math.ceil(items / (params["wg"] * params["ept"]))
        gx = min(groups, MAX_DISPATCH)
        return Launch((gx, math.ceil(groups / gx), 1), (items, gx, 0, 0))

    def gl_launch(self, problem: EltwiseProblem, params: Params) -> GlLaunch:
        """Return flat ``[1, n]`` textures per input and output (``pack`` elements per texel)."""
        square = bool(params["square"])
        inputs = tuple(TexLayout(1, _size(s), params["pack_in"], square) for s in problem.shapes)
        size = _plan(problem).size
        target = TexLayout(1, size, params["pack_out"], square)
        samplers = tuple(f"X{k}" for k in range(len(inputs)))
        return GlLaunch(inputs, samplers, (target,), 1, size)

    def device_inputs(self, problem: EltwiseProblem, params: Params, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Return the inputs as contiguous float32 arrays of their problem shapes."""
        if len(inputs) != len(problem.names):
            raise ShapeError(f"elementwise: {len(inputs)} arrays for inputs {list(problem.names)}")
        out = []
        for name, shape, x in zip(problem.names, problem.shapes, inputs, strict=True):
            array = np.asarray(x, dtype=np.float32)
            if array.shape != shape:
                raise ShapeError(f"elementwise: input {name!r} has shape {array.shape}, the problem says {shape}")
            out.append(np.ascontiguousarray(array))
        return out


SPEC = EltwiseSpec()
