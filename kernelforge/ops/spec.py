"""The op contract: what every op module declares (params, constraints, reference, launch)."""

from __future__ import annotations

import abc
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar

import numpy as np

from kernelforge.errors import InvalidParamsError, ShapeError
from kernelforge.ops.texture import TexLayout

Params = dict[str, int]
"""Tuned parameters of one kernel: tunable name -> chosen value (always an int)."""


@dataclass(frozen=True)
class Param:
    """One tunable: a name and the ordered values it may take."""

    name: str
    choices: tuple[int, ...]
    doc: str = ""
    absent: int | None = None
    """For a tunable added after records were made: the value a record without it means (None: required)."""


@dataclass(frozen=True)
class Limits:
    """Device limits that constrain kernels.

    Compute limits use WebGPU's names and default values; texture limits are WebGL2's (``MAX_TEXTURE_SIZE``,
    ``MAX_DRAW_BUFFERS``), defaulting to what nearly every WebGL2 device offers.
    """

    max_invocations: int = 256
    max_wg_x: int = 256
    max_wg_y: int = 256
    max_wg_z: int = 64
    max_workgroup_storage: int = 16384
    max_workgroups_per_dim: int = 65535
    max_storage_binding: int = 128 << 20
    max_texture_size: int = 4096
    max_draw_buffers: int = 4
    wide_tiles: bool = False
    """Not a WebGPU limit but a measured trait of the shader compiler: it builds kernels with 256-accumulator
    register tiles in well under a second (llvmpipe: yes, and they are its fastest; SwiftShader: one such conv
    kernel took over 24 GB to compile). Browsers get False: their compilers are unknown."""
    subgroup_size: int = 0
    """Lanes per subgroup where the device runs WGSL subgroup operations with one fixed subgroup size (WebGPU's
    ``subgroups`` feature with ``subgroupMinSize == subgroupMaxSize``; SwiftShader: 4), else 0: no subgroup ops."""
    f16: bool = False
    """Whether WGSL kernels may compute in f16 (WebGPU's ``shader-f16`` feature, requested when the adapter has it;
    lavapipe: yes, SwiftShader: no). A bundle's f32 plans get False; its f16 plans (``"f16": true``, run only on
    an adapter with the feature) True."""

    def as_dict(self) -> dict[str, int]:
        """Return the limits as a plain dict (for JSON output)."""
        return {k: int(getattr(self, k)) for k in self.__dataclass_fields__}


FLOAT32_TOLERANCE = 1e-4
"""The accuracy bound of float32 kernels (:meth:`OpSpec.tolerance`)."""

F16_TOLERANCE = 1e-2
"""The accuracy bound of a kernel with f16 arithmetic or storage (a ``precision`` tunable above 0), relative to the
largest magnitude of the result: f16 keeps 11 significant bits (a rounding of 2**-11 per sum), so long dot products
drift towards it; where a problem's K makes f16 miss it, the tuner rejects the config like any wrong one."""

SUBGROUP_SIZES = (4, 8, 16, 32, 64, 128)
"""The fixed subgroup sizes ``Limits.subgroup_size`` may take besides 0 (a probe's or a database file's value)."""

WIDE_ACCUMULATORS = 256
"""Accumulators per thread where ``Limits.wide_tiles`` holds: lavapipe still gains at 256 (its SIMD lanes are
separate invocations, so a tall register tile saves lane-by-lane loads, not registers); past it, compiles
get slow for no gain."""


def register_cap(limits: Limits, narrow_cap: int) -> int:
    """Return how many values a thread may hold in registers on the device: ``narrow_cap`` unless ``wide_tiles``."""
    return WIDE_ACCUMULATORS if limits.wide_tiles else narrow_cap


def register_tile_problem(limits: Limits, name: str, rows: int, accumulators: int, narrow_cap: int) -> str | None:
    """Return why a thread's register tile is too big for the device's shader compiler, or None.

    Args:
        limits: The device's limits (``wide_tiles`` decides).
        name: The tunable giving the tile's unrolled rows (``wpt_m``, ``wpt_p``), for the message.
        rows: Its value; over 8 needs ``wide_tiles`` (SwiftShader ran out of 24 GB compiling 16-pixel convs).
        accumulators: Accumulators per thread.
        narrow_cap: The op's accumulator cap without ``wide_tiles``.
    """
    if rows > 8 and not limits.wide_tiles:
        return f"{name}={rows} needs a compiler that handles wide tiles (Limits.wide_tiles)"
    cap = register_cap(limits, narrow_cap)
    if accumulators > cap:
        return f"{accumulators} accumulators per thread > {cap} (this device's compiler)"
    return None


@dataclass(frozen=True)
class Launch:
    """How a WGSL kernel is dispatched: workgroup counts and the u32 uniform block."""

    workgroups: tuple[int, int, int]
    uniforms: tuple[int, ...]


@dataclass(frozen=True)
class GlLaunch:
    """How a GLSL fragment kernel runs: input textures, render targets and how outputs are reassembled.

    Inputs are the op's device inputs viewed as 2-D ``[rows, cols]`` and stored per their layout. The
    fragment at ``(x, y)`` of target ``t`` holds output row ``y * len(targets) + t`` (rows are dealt
    round-robin to the render targets), texel ``x`` of it.
    """

    inputs: tuple[TexLayout, ...]
    samplers: tuple[str, ...]
    """The template's sampler uniform of each input, in the same order."""
    targets: tuple[TexLayout, ...]
    rows: int
    cols: int
    half: bool = False
    """Render targets of half floats (R16F/RGBA16F): half the bytes every reader samples, each output rounded to
    float16 (a ``precision=1`` GLSL config; WebGL2's EXT_color_buffer_float, which kernelforge requires, makes
    them renderable)."""


def input_shape(op: str, shapes: Sequence[tuple[int, ...] | None], k: int) -> tuple[int, ...]:
    """Return the shape of a node's required input ``k``.

    Raises:
        ShapeError: Naming the op when the input is missing.
    """
    shape = shapes[k] if k < len(shapes) else None
    if shape is None:
        raise ShapeError(f"{op}: input {k} is required")
    return shape


P = TypeVar("P")


class OpSpec(abc.ABC, Generic[P]):
    """Contract of an op: one instance per op, shared by every backend and language.

    ``P`` is the op's frozen *problem* dataclass (shapes and attributes of one call). Implementations must be
    pure Python + numpy and import no GPU library, so the tuner and the tests can reason about an op without
    a device. Everything a template receives comes from :meth:`template_context`, after the params were
    validated against :attr:`params`, so nothing outside the declared choices can reach shader text.
    """

    name: ClassVar[str]
    spaces: ClassVar[Mapping[str, tuple[Param, ...]]]
    """Tunables per kernel language; the languages are those with a template."""
    templates: ClassVar[Mapping[str, str]]
    shape_syntax: ClassVar[str] = ""
    """One line for ``kernelforge tune --help``: the ``--shape`` syntax :meth:`parse_problem` accepts."""
    shape_separator: ClassVar[str] = ","
    """What separates several shapes in one ``--shape`` value besides ';' (ops whose syntax uses commas: ';')."""

    def params(self, language: str) -> tuple[Param, ...]:
        """Return the tunables of the op's kernel in ``language``.

        Raises:
            InvalidParamsError: When the op has no kernel in that language.
        """
        if language not in self.spaces:
            raise InvalidParamsError(f"op {self.name} has no {language!r} kernel (has {sorted(self.spaces)})")
        return self.spaces[language]

    def validate_params(self, params: Mapping[str, Any], language: str, origin: str = "params") -> Params:
        """Check that ``params`` names every tunable of ``language`` once with one of its choices.

        Args:
            params: Candidate parameters, possibly from an untrusted file.
            language: Kernel language whose space applies.
            origin: What to name in the error (a file and record, say).

        Returns:
            A clean copy with plain ``int`` values.

        Raises:
            InvalidParamsError: Naming the first offending parameter.
        """
        if not isinstance(params, Mapping):
            raise InvalidParamsError(f"{origin}: {self.name} params must be an object, got {type(params).__name__}")
        space = self.params(language)
        names = {p.name for p in space}
        unknown = sorted(set(params) - names)
        if unknown:
            raise InvalidParamsError(f"{origin}: unknown {self.name} parameter(s) {unknown}")
        clean: Params = {}
        for p in space:
            if p.name not in params and p.absent is None:
                raise InvalidParamsError(f"{origin}: missing {self.name} parameter {p.name!r}")
            value = params.get(p.name, p.absent)
            # bool is an int subclass and strings could carry shader text: both are rejected outright
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or int(value) not in p.choices:
                raise InvalidParamsError(
                    f"{origin}: {self.name} parameter {p.name}={value!r} is not one of {list(p.choices)}"
                )
            clean[p.name] = int(value)
        return clean

    def space_size(self, language: str) -> int:
        """Return the number of points in the unconstrained search space of one language."""
        size = 1
        for p in self.params(language):
            size *= len(p.choices)
        return size

    @abc.abstractmethod
    def from_node(self, shapes: Sequence[tuple[int, ...] | None], attrs: Mapping[str, Any]) -> P:
        """Build the problem of a graph node that runs this op (lowering needs no per-op table).

        Args:
            shapes: The shape of each of the node's inputs, ``None`` for an omitted optional input.
            attrs: The node's attributes, named as the op's module docstring says.

        Raises:
            ShapeError: Naming what does not fit (KeyError or TypeError for a missing or malformed attribute).
        """

    def node_inputs(self, problem: P, present: Sequence[bool]) -> tuple[int, ...]:
        """Return the indices of the node's inputs the kernel binds, in its input order (default: those present)."""
        return tuple(i for i, given in enumerate(present) if given)

    onnx_ops: ClassVar[tuple[str, ...]] = ()
    """ONNX op types this op runs as it stands: one ONNX node becomes one node of this op, its inputs in order and
    its attributes from :meth:`from_onnx` (ops that need more than that have a converter in the graph layer)."""

    def from_onnx(self, op_type: str, opset: int, attrs: Mapping[str, Any]) -> dict[str, Any]:
        """Return this op's node attributes for an ONNX node of one of :attr:`onnx_ops` (ONNX attribute values).

        Called before shapes are known, so that every unsupported node of a model is listed at once.

        Raises:
            ValueError: Naming the attribute whose value is not supported.
        """
        raise ValueError(f"{self.name} runs no ONNX op directly")

    @abc.abstractmethod
    def parse_problem(self, text: str) -> P:
        """Parse a CLI shape string into a problem."""

    @abc.abstractmethod
    def problem_key(self, problem: P) -> str:
        """Return the stable text key of a problem's shape, used in the database."""

    @abc.abstractmethod
    def shape_vector(self, problem: P) -> tuple[float, ...]:
        """Return numbers whose log-distance ranks how similar two problems are (nearest-shape lookup)."""

    @abc.abstractmethod
    def flops(self, problem: P) -> float:
        """Return the useful floating-point operations of one call."""

    @abc.abstractmethod
    def default_params(self, problem: P, limits: Limits, language: str) -> Params:
        """Return the built-in parameters for a problem: always valid for it."""

    @abc.abstractmethod
    def constraints(self, problem: P, params: Params, limits: Limits, language: str) -> str | None:
        """Return why ``params`` cannot run ``problem`` on a device with ``limits``, or None if they can."""

    @abc.abstractmethod
    def make_inputs(self, problem: P, rng: np.random.Generator) -> list[np.ndarray]:
        """Return random float32 inputs of the problem's shapes, for verification and timing."""

    @abc.abstractmethod
    def reference(self, problem: P, inputs: Sequence[np.ndarray]) -> np.ndarray:
        """Compute the exact result in numpy (float64 accumulation, float32 result)."""

    @abc.abstractmethod
    def output_shape(self, problem: P) -> tuple[int, ...]:
        """Return the shape of the output array."""

    @abc.abstractmethod
    def template_context(self, problem: P, params: Params, language: str) -> dict[str, Any]:
        """Return every variable the template of ``language`` uses (the params plus derived values).

        ``params`` come from :meth:`validate_params` (``templates.render`` sees to it): only values of the declared
        choices reach shader text.
        """

    @abc.abstractmethod
    def launch(self, problem: P, params: Params) -> Launch:
        """Return the dispatch size and uniforms of the WGSL kernel."""

    def tolerance(self, problem: P, params: Params) -> float:
        """Return the accuracy bound a config must meet against the float32 numpy reference.

        The largest allowed difference relative to the reference's largest magnitude (at least 1), what the tuner
        and the kernel tests check every result against. Float32 kernels differ from the reference by their order
        of sums only; an op whose space has lower-precision configs states their bound here, so no record can
        trade correctness for speed without it being named.
        """
        return FLOAT32_TOLERANCE

    def subgroup_size(self, params: Params) -> int:
        """Return the fixed subgroup size the WGSL kernel assumes (it uses subgroup operations), else 0.

        Browsers need ``enable subgroups;`` and a device made with the ``subgroups`` feature for such a kernel.
        """
        return 0

    @abc.abstractmethod
    def gl_launch(self, problem: P, params: Params) -> GlLaunch:
        """Return the texture layouts and render targets of the GLSL kernel."""

    @abc.abstractmethod
    def device_inputs(self, problem: P, params: Params, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Return the arrays bound after the uniforms, in binding order (inputs, then none for the output)."""

    def first_fitting(self, problem: P, candidates: Iterable[Params], limits: Limits, language: str) -> Params:
        """Return a copy of the first candidate that can run ``problem`` on ``limits`` (for :meth:`default_params`).

        Args:
            problem: The problem the params must fit.
            candidates: Built-in configs in order of preference (a default, then its fallbacks).
            limits: The device's limits.
            language: Kernel language of the candidates.

        Returns:
            A fresh dict, so callers may change it without touching the module's constants.

        Raises:
            ShapeError: Naming the op, the problem key, the language, the limits and why the last candidate
                failed, when no candidate fits.
        """
        reason = None
        for params in candidates:
            reason = self.constraints(problem, params, limits, language)
            if reason is None:
                return dict(params)
        raise ShapeError(
            f"{self.name} {self.problem_key(problem)}: no built-in {language} config fits the device {limits} "
            f"(last candidate: {reason})"
        )

    def seed_params(self, problem: P, limits: Limits, language: str) -> list[Params]:
        """Return known-good, diverse configs the tuner tries right after the default (none by default).

        Large spaces (conv's is ~10^5 points) are hard to sample well in a few trials; a handful of
        starting points that won on some device lets every later trial refine rather than explore.
        Only configs valid for ``problem`` on ``limits`` are returned.
        """
        return []

    def device_output_shape(self, problem: P, params: Params) -> tuple[int, ...]:
        """Return the shape of the output as the kernel writes it (its layout); by default :meth:`output_shape`.

        Graph executors that chain kernels use this shape (and :meth:`from_device`) to hand a tensor to the
        next kernel without leaving the device.
        """
        return self.output_shape(problem)

    def input_layouts(self, problem: P, params: Params) -> tuple[tuple[int, ...] | None, ...]:
        """Return, per input, the axis order the WGSL kernel reads it in (``None``: as given, row-major).

        A graph executor that keeps tensors on the device hands input ``i`` over as
        ``logical.transpose(layout)`` instead of calling :meth:`device_inputs` on it. Constant inputs (weights)
        still go through :meth:`device_inputs` once, at load.
        """
        return ()

    def output_layout(self, problem: P, params: Params) -> tuple[int, ...] | None:
        """Return the axis order the WGSL kernel writes its output in (``None``: :meth:`output_shape` row-major)."""
        return None

    def from_device(self, problem: P, params: Params, data: np.ndarray) -> np.ndarray:
        """Turn what the kernel wrote into the op's output of :meth:`output_shape`.

        Ops whose kernels may write another layout (NHWC for an NCHW op, say) override this to convert back;
        the default is a reshape.
        """
        return np.asarray(data).reshape(self.output_shape(problem))

    def check(self, problem: P, params: Params, limits: Limits, language: str) -> None:
        """Raise :class:`InvalidParamsError` when ``params`` cannot run ``problem``."""
        reason = self.constraints(problem, params, limits, language)
        if reason is not None:
            raise InvalidParamsError(f"{self.name} params {params} rejected: {reason}")
