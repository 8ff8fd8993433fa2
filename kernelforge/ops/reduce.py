"""Reductions (ONNX ReduceSum, ReduceMean, ReduceMax, ... opsets 9-28) over a run of axes: spec, reference, launch.

The reduced axes must be adjacent once size-1 axes are ignored (a converter transposes other sets together
first), so the tensor is viewed as ``[outer, R, inner]``: ``outer * inner`` outputs, each reducing ``R``
elements ``inner`` apart. The output keeps the reduced axes as size 1 (ONNX ``keepdims=1``; a reshape drops
them). Kinds, as ONNX defines them:

=================  ==========================================================================================
kind               output
=================  ==========================================================================================
``sum``            sum(x)
``mean``           sum(x) / R
``max``, ``min``   max(x), min(x); a NaN anywhere gives NaN (as numpy and ONNX's own reference)
``prod``           prod(x)
``l1``             sum(|x|)
``l2``             sqrt(sum(x^2))
``sum_square``     sum(x^2)
``log_sum``        log(sum(x)): -inf for a zero sum, NaN for a negative one
``log_sum_exp``    m + log(sum(exp(x - m))), m the largest finite element (stable; +inf gives +inf, all -inf -inf)
=================  ==========================================================================================

Node attributes (what :mod:`kernelforge.graph.onnx_reduce` emits): ``axes`` (ints, ``None`` for all) and
``kind`` (one of :data:`KINDS`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from kernelforge.errors import ShapeError
from kernelforge.ops.shapes import check_axis, check_dims, linear_grid, next_pow2, parse_dims
from kernelforge.ops.spec import GlLaunch, Launch, Limits, OpSpec, Param, Params, input_shape
from kernelforge.ops.texture import TexLayout, first_too_big

KINDS = ("sum", "mean", "max", "min", "prod", "l1", "l2", "sum_square", "log_sum", "log_sum_exp")
"""Every reduction kind, named after the ONNX op (``ReduceSumSquare`` -> ``sum_square``)."""

# kind -> (what each element contributes, how partials merge, what the total becomes); log_sum_exp is two passes
_PARTS: dict[str, tuple[str, str, str]] = {
    "sum": ("x", "add", "none"),
    "mean": ("x", "add", "mean"),
    "max": ("x", "max", "none"),
    "min": ("x", "min", "none"),
    "prod": ("x", "mul", "none"),
    "l1": ("abs", "add", "none"),
    "l2": ("square", "add", "sqrt"),
    "sum_square": ("square", "add", "none"),
    "log_sum": ("x", "add", "log"),
    "log_sum_exp": ("x", "add", "lse"),
}

_SHAPE = re.compile(r"^(?P<dims>[0-9x]+)(?::a(?P<axes>-?\d+(?:\.-?\d+)*))?(?::(?P<kind>[a-z_0-9]+))?$")

DEFAULT_PARAMS: Params = {"threads": 64, "outputs_per_wg": 1, "vec4": 0, "tree": 1, "layout": 0}
# Tried in order when the size-based default breaks a constraint (tiny device limits).
_FALLBACKS: tuple[Params, ...] = (
    {"threads": 32, "outputs_per_wg": 1, "vec4": 0, "tree": 1, "layout": 0},
    {"threads": 1, "outputs_per_wg": 32, "vec4": 0, "tree": 0, "layout": 0},
    {"threads": 1, "outputs_per_wg": 1, "vec4": 0, "tree": 0, "layout": 0},
)
GLSL_DEFAULT_PARAMS: Params = {"pack": 4, "square": 0}
_GLSL_FALLBACKS: tuple[Params, ...] = ({"pack": 4, "square": 1}, {"pack": 1, "square": 1})


NHWC = (0, 2, 3, 1)
"""The axis order of ``layout=1`` (WGSL): a rank-4 tensor of a layout region that runs channels-last."""


def reduce_view(shape: Sequence[int], axes: Sequence[int]) -> tuple[int, int, int] | None:
    """Return ``(outer, R, inner)`` of reducing ``shape`` over ``axes``, or None when they are not adjacent.

    Size-1 axes are ignored either way: reduced or kept, they move no data.
    """
    wide = [a for a in sorted(axes) if shape[a] > 1]
    if not wide:
        start = stop = min(axes)
    else:
        start, stop = wide[0], wide[-1] + 1
        if any(shape[a] > 1 and a not in axes for a in range(start, stop)):
            return None
    return math.prod(shape[:start]), math.prod(shape[a] for a in axes), math.prod(shape[stop:])


@dataclass(frozen=True)
class ReduceProblem:
    """One reduction: x's ``shape``, the reduced ``axes`` (normalised, sorted; all when ``None``) and the ``kind``."""

    shape: tuple[int, ...]
    axes: tuple[int, ...] | None = None
    kind: str = "sum"

    def __post_init__(self) -> None:
        shape = check_dims("reduce", "shape", self.shape)
        object.__setattr__(self, "shape", shape)
        if self.kind not in KINDS:
            raise ShapeError(f"reduce: kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        given = range(len(shape)) if self.axes is None else self.axes
        if isinstance(given, (str, bytes)) or not isinstance(given, (Sequence, range)):
            raise ShapeError(f"reduce: axes must be a sequence of integers, got {self.axes!r}")
        axes = tuple(sorted({check_axis("reduce", a, len(shape)) for a in given}))
        if not axes:
            raise ShapeError("reduce: axes must name at least one axis")
        object.__setattr__(self, "axes", axes)
        if reduce_view(shape, axes) is None:
            raise ShapeError(
                f"reduce: axes {list(axes)} of shape {shape} are not adjacent (size-1 axes aside); "
                f"transpose them together first"
            )

    @property
    def reduced(self) -> tuple[int, ...]:
        """The reduced axes (normalised; never None after construction)."""
        assert self.axes is not None
        return self.axes

    @property
    def view(self) -> tuple[int, int, int]:
        """``(outer, R, inner)``: outputs ``outer * inner``, each reducing ``R`` elements ``inner`` apart."""
        found = reduce_view(self.shape, self.reduced)
        assert found is not None  # checked at construction
        return found

    @property
    def outer(self) -> int:
        """Product of the dims before the reduced run."""
        return self.view[0]

    @property
    def length(self) -> int:
        """``R``: elements each output reduces."""
        return self.view[1]

    @property
    def inner(self) -> int:
        """Product of the dims after the reduced run: the stride between an output's elements."""
        return self.view[2]

    @property
    def outputs(self) -> int:
        """Number of outputs (``outer * inner``)."""
        return self.outer * self.inner

    @property
    def size(self) -> int:
        """Number of elements of x."""
        return math.prod(self.shape)


def reduce_array(x: np.ndarray, axes: Sequence[int] | None, kind: str, keepdims: bool = True) -> np.ndarray:
    """Reduce ``x`` over ``axes`` (all when None) as ONNX's ``kind`` does, in float64; the dtype of ``x`` back.

    The one numpy definition of every kind: the op's reference and the importer's constant folding use it.
    Integer and bool max and min reduce in their own dtype (int64's extremes exactly); over no values they
    give the dtype's lowest or highest value (-inf and inf for floats), as ONNX's reference does.

    Raises:
        ValueError: For an unknown kind.
    """
    if kind not in _PARTS:
        raise ValueError(f"unknown reduction kind {kind!r} (known: {', '.join(KINDS)})")
    dtype = np.asarray(x).dtype
    v = np.asarray(x, np.float64)
    ax = tuple(range(v.ndim)) if axes is None else tuple(int(a) for a in axes)
    with np.errstate(all="ignore"):
        if kind in ("max", "min"):  # over no values: the dtype's lowest (max) or highest (min) value, as ONNX
            exact = np.asarray(x) if dtype.kind in "iub" else v  # integers as they are: int64's extremes too
            out = getattr(np, kind)(exact, axis=ax, keepdims=True, initial=_extreme(exact.dtype, kind == "min"))
        elif kind in ("sum", "mean", "prod"):
            out = getattr(np, kind)(v, axis=ax, keepdims=True)
        elif kind == "l1":
            out = np.abs(v).sum(axis=ax, keepdims=True)
        elif kind in ("l2", "sum_square"):
            out = np.square(v).sum(axis=ax, keepdims=True)
            out = np.sqrt(out) if kind == "l2" else out
        elif kind == "log_sum":
            out = np.log(v.sum(axis=ax, keepdims=True))
        else:  # log_sum_exp: shift by the largest finite element (0 when there is none)
            m = np.where(np.isfinite(v), v, -np.inf).max(axis=ax, keepdims=True, initial=-np.inf)
            m = np.where(np.isfinite(m), m, 0.0)
            out = m + np.log(np.exp(v - m).sum(axis=ax, keepdims=True))
    if not keepdims:
        out = out.reshape([d for i, d in enumerate(out.shape) if i not in {a % max(v.ndim, 1) for a in ax}])
    if out.dtype == dtype:  # max and min of integers and bools
        return out
    if dtype.kind in "iub":
        return np.trunc(out).astype(dtype)
    return out.astype(dtype if dtype.kind == "f" else np.float32)


def _extreme(dtype: np.dtype[Any], highest: bool) -> float | int | bool:
    """Return the highest or lowest value of ``dtype`` (infinities for floats, True and False for bools)."""
    if dtype.kind == "b":
        return highest
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return int(info.max if highest else info.min)
    return np.inf if highest else -np.inf


def row_textures(outer: int, length: int, inner: int, params: Params) -> GlLaunch:
    """Return the textures of a kernel that reduces rows of ``length`` values ``inner`` apart to one output each.

    Contiguous rows (``inner == 1``): x ``[outer, length]``, the output ``[1, outer]``; others: x
    ``[outer * length, inner]``, the output ``[outer, inner]``. A fragment's ``pack`` outputs are one texel.
    """
    pack, square = params["pack"], bool(params["square"])
    if inner == 1:
        x = TexLayout(outer, length, pack, square)
        out = TexLayout(1, outer, pack, square)
    else:
        x = TexLayout(outer * length, inner, pack, square)
        out = TexLayout(outer, inner, pack, square)
    return GlLaunch((x,), ("X",), (out,), out.rows, out.cols)


class ReduceSpec(OpSpec[ReduceProblem]):
    """The reduce op."""

    name: ClassVar[str] = "reduce"
    templates: ClassVar[dict[str, str]] = {"wgsl": "wgsl/reduce.wgsl.j2", "glsl": "glsl/reduce.frag.j2"}
    shape_syntax: ClassVar[str] = (
        "dims joined by x, optional ':a<axes joined by .>' (default all), optional ':<kind>' (default sum; "
        + ", ".join(KINDS)
        + "): 128x384:a1:sum, 1x512x32x32:a2.3:mean"
    )
    spaces: ClassVar[dict[str, tuple[Param, ...]]] = {
        "wgsl": (
            Param("threads", (1, 2, 4, 8, 16, 32, 64, 128, 256), "threads per output (1 = a thread owns an output)"),
            Param("outputs_per_wg", (1, 2, 4, 8, 16, 32, 64, 128, 256), "outputs (vec4 items) per workgroup"),
            Param(
                "vec4",
                (0, 1),
                "vec4 loads: 4 elements of a contiguous reduction (inner == 1, R % 4 == 0), or 4 neighbouring "
                "outputs (inner % 4 == 0)",
            ),
            Param(
                "tree",
                (0, 1),
                "threads' partials merged by a log2(threads)-step tree, a barrier per step (1), or after one "
                "barrier by the output's first thread alone (0)",
            ),
            Param(
                "layout",
                (0, 1),
                "x as given (0) or, for a rank-4 x, NHWC (1): what a channels-last layout region holds, so a "
                "spatial mean reads it without a conversion",
            ),
        ),
        "glsl": (
            Param("pack", (1, 4), "R32F (1) or RGBA32F (4) textures: 4 outputs per fragment"),
            Param("square", (0, 1), "textures row-aligned (0) or wrapped square-ish (1)"),
        ),
    }

    # --- problems ------------------------------------------------------------------------------------------

    def from_node(self, shapes: Sequence[tuple[int, ...] | None], attrs: Mapping[str, Any]) -> ReduceProblem:
        """Build the problem of a node reducing x over ``attrs["axes"]`` (None: all) as ``attrs["kind"]``."""
        x = input_shape(self.name, shapes, 0)
        axes = attrs.get("axes")
        return ReduceProblem(x, None if axes is None else tuple(axes), attrs["kind"])

    def parse_problem(self, text: str) -> ReduceProblem:
        """Parse ``dims[:a<axes>][:<kind>]``: ``128x384:a1:sum``, ``1x512x32x32:a2.3:mean``, ``64x64:max``."""
        match = _SHAPE.match(text.strip().lower())
        if not match:
            raise ShapeError(f"reduce shape {text!r} is not dims[:a<axes joined by .>][:<kind>] (like 8x100:a1:sum)")
        axes = None if match.group("axes") is None else tuple(int(a) for a in match.group("axes").split("."))
        return ReduceProblem(parse_dims("reduce", match.group("dims")), axes, match.group("kind") or "sum")

    def problem_key(self, problem: ReduceProblem) -> str:
        """Return e.g. ``1x512x32x32:a2.3:mean`` (axes always listed, normalised)."""
        return "x".join(map(str, problem.shape)) + ":a" + ".".join(map(str, problem.reduced)) + f":{problem.kind}"

    def shape_vector(self, problem: ReduceProblem) -> tuple[float, ...]:
        """Return (outer, R, inner): the kernels only see this 3-D view."""
        return (float(problem.outer), float(problem.length), float(problem.inner))

    def flops(self, problem: ReduceProblem) -> float:
        """Return one operation per element (two for l1/l2/sum_square, four for log_sum_exp)."""
        per = {"l1": 2.0, "l2": 2.0, "sum_square": 2.0, "log_sum_exp": 4.0}.get(problem.kind, 1.0)
        return per * problem.size

    # --- params --------------------------------------------------------------------------------------------

    def _view(self, problem: ReduceProblem, params: Params) -> tuple[int, int, int] | None:
        """Return the WGSL kernel's ``(outer, R, inner)`` of x as stored (NHWC with ``layout``); None: not adjacent."""
        if not params.get("layout"):
            return problem.view
        if len(problem.shape) != 4:
            return None
        return reduce_view([problem.shape[a] for a in NHWC], [NHWC.index(a) for a in problem.reduced])

    def _counts(self, problem: ReduceProblem, params: Params) -> tuple[int, int, int]:
        """Return the WGSL view in its own units: (items, length, inner), vec4s where ``vec4`` packs them."""
        outer, length, inner = self._view(problem, params) or problem.view
        items = outer * inner
        if params.get("vec4"):
            if inner == 1:
                length //= 4
            else:
                items, inner = items // 4, inner // 4
        return items, length, inner

    def default_params(self, problem: ReduceProblem, limits: Limits, language: str) -> Params:
        """Return a size-based default, or the first fallback that fits.

        WGSL: about 4096 invocations in all, at least 8 elements (or vec4s) each, up to 64 threads an output
        and 128 invocations a workgroup; vec4 loads where the view allows. A rank-4 x whose reduced axes are
        adjacent in NHWC too gets a default that fits both layouts (vec4 only where both allow it), so that
        layout assignment can switch it to its region's layout.
        """
        if language == "glsl":
            candidates: tuple[Params, ...] = (GLSL_DEFAULT_PARAMS, *_GLSL_FALLBACKS)
        else:
            layouts = [lay for lay in (0, 1) if self._view(problem, {"layout": lay}) is not None]
            views = [self._view(problem, {"layout": lay}) or problem.view for lay in layouts]
            vec4 = int(all(r % 4 == 0 if inner == 1 else inner % 4 == 0 for _, r, inner in views))
            counts = [self._counts(problem, {"vec4": vec4, "layout": lay}) for lay in layouts]
            items, length, _ = counts[0]
            threads = max(1, min(64, next_pow2(math.ceil(4096 / items)), next_pow2(math.ceil(length / 8))))
            threads = min([threads] + [next_pow2(n) for _, n, _ in counts])
            per_wg = min([128 // threads] + [next_pow2(n) for n, _, _ in counts])
            first = {"threads": threads, "outputs_per_wg": per_wg, "vec4": vec4, "tree": int(threads > 16), "layout": 0}
            candidates = (first, DEFAULT_PARAMS, *_FALLBACKS)
        return self.first_fitting(problem, candidates, limits, language)

    def constraints(self, problem: ReduceProblem, params: Params, limits: Limits, language: str) -> str | None:
        """Return why ``params`` cannot run ``problem`` on a device with ``limits``, or None."""
        if language == "glsl":
            launch = self.gl_launch(problem, params)
            return first_too_big([("x", launch.inputs[0]), ("output", launch.targets[0])], limits.max_texture_size)
        t, o = params["threads"], params["outputs_per_wg"]
        view = self._view(problem, params)
        if view is None:
            return f"layout=1 needs a rank-4 x whose reduced axes {list(problem.reduced)} are adjacent in NHWC"
        if params["vec4"] and (view[1] % 4 if view[2] == 1 else view[2] % 4):
            return f"vec4=1 needs R % 4 == 0 (inner == 1) or inner % 4 == 0; the view is {view}"
        if params["tree"] and t == 1:
            return "tree=1 with threads=1 has no partials to merge"
        items, length, _ = self._counts(problem, params)
        if t > limits.max_wg_x or o > limits.max_wg_y:
            return f"workgroup {t}x{o} exceeds the device's per-axis limits"
        if t * o > limits.max_invocations:
            return f"{t * o} invocations per workgroup > device limit {limits.max_invocations}"
        if t > next_pow2(length):
            return f"threads={t} per output leaves threads idle on {length} elements"
        if o > next_pow2(items):
            return f"outputs_per_wg={o} leaves threads idle with {items} outputs"
        slot = 16 if params["vec4"] and view[2] > 1 else 4
        if t > 1 and slot * t * o > limits.max_workgroup_storage:
            return f"{slot * t * o} bytes of workgroup memory > device limit {limits.max_workgroup_storage}"
        groups = self.launch(problem, params).workgroups
        if max(groups) > limits.max_workgroups_per_dim:
            return f"dispatch {groups} exceeds {limits.max_workgroups_per_dim} workgroups per dimension"
        if 4 * problem.size > limits.max_storage_binding:
            return f"a {4 * problem.size}-byte buffer exceeds the storage binding limit {limits.max_storage_binding}"
        return None

    # --- numbers -------------------------------------------------------------------------------------------

    def output_shape(self, problem: ReduceProblem) -> tuple[int, ...]:
        """Return x's shape with the reduced axes kept as size 1."""
        return tuple(1 if a in problem.reduced else d for a, d in enumerate(problem.shape))

    def make_inputs(self, problem: ReduceProblem, rng: np.random.Generator) -> list[np.ndarray]:
        """Return x, in a range where the kind is well conditioned.

        Sums get an offset (a sum of centred values cancels to less than its rounding), products stay near 1
        (``exp`` of a small spread: the product of R of them neither overflows nor vanishes), log_sum positive.
        """
        kind, shape = problem.kind, problem.shape
        if kind == "prod":
            spread = min(1.0, 4.0 / math.sqrt(problem.length))
            x = np.exp(rng.uniform(-spread, spread, shape))
        elif kind in ("sum", "mean", "log_sum"):
            x = rng.uniform(0.0 if kind == "log_sum" else -1.0, 2.0, shape)
        else:
            x = rng.uniform(-4.0, 4.0, shape)
        return [x.astype(np.float32)]

    def reference(self, problem: ReduceProblem, inputs: Sequence[np.ndarray]) -> np.ndarray:
        """Compute the reduction in float64 (:func:`reduce_array`), as float32 of :meth:`output_shape`."""
        x = np.asarray(inputs[0], np.float32).reshape(problem.shape)
        return reduce_array(x, problem.reduced, problem.kind).astype(np.float32)

    # --- kernels -------------------------------------------------------------------------------------------

    def template_context(self, problem: ReduceProblem, params: Params, language: str) -> dict[str, Any]:
        """Return the params, the kind's parts and the view (GLSL: baked sizes and textures; WGSL: tree steps)."""
        elem, merge, final = _PARTS[problem.kind]
        common = {**params, "kind": problem.kind, "elem": elem, "merge": merge, "final": final}
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
        steps = []
        s = params["threads"] // 2
        while s:
            steps.append(s)
            s //= 2
        view = self._view(problem, params) or problem.view
        return {**common, "steps": steps, "lanes": bool(params["vec4"]) and view[2] == 1}

    def launch(self, problem: ReduceProblem, params: Params) -> Launch:
        """Return one workgroup per ``outputs_per_wg`` items and the uniforms (items, length, inner, R)."""
        items, length, inner = self._counts(problem, params)
        groups = math.ceil(items / params["outputs_per_wg"])
        return Launch(linear_grid(groups), (items, length, inner, problem.length))

    def gl_launch(self, problem: ReduceProblem, params: Params) -> GlLaunch:
        """Return x and the output as matrices (see :func:`row_textures`)."""
        return row_textures(problem.outer, problem.length, problem.inner, params)

    def device_inputs(self, problem: ReduceProblem, params: Params, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Return x as contiguous float32 (transposed to NHWC for ``layout=1``)."""
        x = np.ascontiguousarray(inputs[0], dtype=np.float32)
        if x.size != problem.size:
            raise ShapeError(f"reduce {self.problem_key(problem)}: x has {x.size} values, not {problem.size}")
        x = x.reshape(problem.shape)
        return [np.ascontiguousarray(x.transpose(NHWC)) if params.get("layout") else x]

    def device_output_shape(self, problem: ReduceProblem, params: Params) -> tuple[int, ...]:
        """Return :meth:`output_shape` in NHWC order for ``layout=1``."""
        shape = self.output_shape(problem)
        return tuple(shape[a] for a in NHWC) if params.get("layout") else shape

    def input_layouts(self, problem: ReduceProblem, params: Params) -> tuple[tuple[int, ...] | None, ...]:
        """Return NHWC for x of ``layout=1`` kernels."""
        return (NHWC if params.get("layout") else None,)

    def output_layout(self, problem: ReduceProblem, params: Params) -> tuple[int, ...] | None:
        """Return NHWC for ``layout=1`` kernels (the kept axes stay in x's order)."""
        return NHWC if params.get("layout") else None

    def from_device(self, problem: ReduceProblem, params: Params, data: np.ndarray) -> np.ndarray:
        """Return the output of :meth:`output_shape`, transposing what an NHWC kernel wrote."""
        out = np.asarray(data).reshape(self.device_output_shape(problem, params))
        return np.ascontiguousarray(out.transpose(np.argsort(NHWC))) if params.get("layout") else out


SPEC = ReduceSpec()
