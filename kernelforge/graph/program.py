"""One checked Program: what a planned graph, or a single kernel, becomes for one kernel language.

A Program is data and needs no device: resources (WGSL storage buffers or GLSL float textures), constant
uploads, shader texts, and steps in order, each one kernel reading and writing resources. Everything that
guards a kernel is done here, once: params validated against the op's space, constraints checked against
the limits, layouts checked against the tensors a kernel reads and writes, shaders rendered. The native
runtime (:mod:`kernelforge.runtime`) interprets a Program through its backends; the exporter only writes it
down (``export/FORMAT.md``), so a browser runs what a native session runs.

GLSL graphs are built in :mod:`kernelforge.graph.program_glsl` (textures of several packings, chained on the
GPU by relayout passes); this module holds the types, the WGSL graph builder and single-kernel programs.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kernelforge.errors import KernelforgeError
from kernelforge.graph.ir import GraphError, Value
from kernelforge.graph.memory import plan_memory
from kernelforge.graph.plan import Plan, Step
from kernelforge.graph.quant import Quantized, relocate
from kernelforge.ops import get_op
from kernelforge.ops.spec import Limits, OpSpec, Params
from kernelforge.ops.texture import TexLayout
from kernelforge.templates import render_valid

TARGETS = ("native", "web")
"""What a program's shaders are rendered for: ``native`` (wgpu-py, moderngl's GLSL 3.30) or ``web`` (WebGPU,
WebGL2's GLSL ES 3.00)."""
NARROW = (np.dtype(np.int8), np.dtype(np.uint8), np.dtype(np.float16))
"""Dtypes of weights kernels read as they are (int8/uint8 integers, float16 halves); other constants are float32."""


class ProgramError(GraphError):
    """A kernel's layouts or outputs disagree with what its op spec declares; the message names the node."""


@dataclass(frozen=True)
class Buffer:
    """A WGSL storage buffer of ``nbytes`` (a multiple of 4, at least 4)."""

    nbytes: int


@dataclass(frozen=True)
class Texture:
    """A GLSL texture: ``pack`` floats per texel (RGBA32F for 4, R32F for 1), or ``dtype`` integers.

    int8/uint8 textures (RGBA8I/R8I, RGBA8UI/R8UI) hold the quantized weights that kernels dequantize, float16
    ones (RGBA16F/R16F) float16 weights or the outputs of a half-float kernel (``GlLaunch.half``), sampled as float.
    """

    width: int
    height: int
    pack: int
    dtype: str = "float32"

    @property
    def floats(self) -> int:
        """Floats the texture holds."""
        return self.width * self.height * self.pack


Resource = Buffer | Texture

TEXEL_BYTES = {"float32": 4, "float16": 2}
"""Bytes of one value of a float texture (int8/uint8 ones: 1)."""


@dataclass(frozen=True, eq=False)
class Upload:
    """Constant data written to a resource once, at load.

    Attributes:
        resource: The resource written.
        data: float32 values (int8/uint8/float16 weights): the whole buffer (WGSL), or the ``[rows, cols]``
            matrix ``layout`` packs (GLSL).
        layout: GLSL only: how the matrix is stored in the texture.
        what: What the constant is, for error messages (a node and input).
        quant: Web programs: the integers ``data`` dequantizes from, in ``data``'s order (None: floats only).
        int4: ``data`` is a kernel's int4 weight: WGSL its packed bytes (:func:`~kernelforge.ops._qweight.pack_int4`),
            GLSL one int8 value a texel channel; a bundle stores it packed either way.
    """

    resource: int
    data: np.ndarray
    layout: TexLayout | None = None
    what: str = ""
    quant: Quantized | None = None
    int4: bool = False


@dataclass(frozen=True)
class Arg:
    """One resource a step reads or writes.

    Attributes:
        resource: Its index in :attr:`Program.resources`.
        nbytes: WGSL: bytes bound from the buffer's start (0: the whole buffer).
        sampler: GLSL inputs: the sampler uniform the texture is bound to.
    """

    resource: int
    nbytes: int = 0
    sampler: str = ""


@dataclass(frozen=True)
class ProgramStep:
    """One kernel launch.

    Attributes:
        node: The graph node it runs (or a relayout's description).
        op: The op name (``relayout`` for the GLSL packing conversions).
        source: Where its params came from (tuned, nearest, default, ...; ``built-in`` for relayouts).
        params: Its validated params (empty for relayouts).
        shader: Index of its text in :attr:`Program.shaders`.
        label: What to name in compile errors.
        inputs: What it reads, in binding order (WGSL: bindings 1..; GLSL: texture units 0..).
        outputs: What it writes (WGSL: the last binding; GLSL: the render targets, in order).
        workgroups: WGSL: the dispatch size.
        uniforms: WGSL: the u32 words of binding 0.
        size: GLSL: the viewport (width, height).
    """

    node: str
    op: str
    source: str
    params: Params
    shader: int
    label: str
    inputs: tuple[Arg, ...]
    outputs: tuple[Arg, ...]
    workgroups: tuple[int, int, int] = (1, 1, 1)
    uniforms: tuple[int, ...] = ()
    size: tuple[int, int] = (0, 0)


@dataclass(frozen=True)
class Input:
    """A model input: written to ``resource`` before every run (GLSL: packed per ``layout``)."""

    name: str
    shape: tuple[int, ...]
    resource: int
    layout: TexLayout | None = None


@dataclass(frozen=True, eq=False)
class Output:
    """A model output: read back after every run, or a constant (``data``) when it folded to one.

    The values are read from ``resources`` (GLSL: one texture per render target, each unpacked per its layout
    and the rows dealt round-robin, ``rows`` in all), stored in axis order ``perm`` (None: as ``shape``).
    """

    name: str
    shape: tuple[int, ...]
    resources: tuple[int, ...] = ()
    layouts: tuple[TexLayout, ...] = ()
    rows: int = 1
    perm: tuple[int, ...] | None = None
    data: np.ndarray | None = None

    @property
    def count(self) -> int:
        """Number of values."""
        return math.prod(self.shape)


@dataclass(frozen=True, eq=False)
class Program:
    """Everything one kernel language needs to run a graph or a kernel, checked (see the module docstring).

    Attributes:
        language: ``wgsl`` or ``glsl``.
        target: ``native`` or ``web`` (what the shaders were rendered for).
        resources: Buffers (WGSL) or textures (GLSL); ``planned`` come first: the graph's activation
            buffers (WGSL) as the memory plan numbered them.
        uploads: Constants, written once.
        shaders: Shader texts, each once.
        steps: Kernel launches in order.
        inputs: Model inputs.
        outputs: Model outputs.
        vertex: GLSL: index of the full-screen vertex shader in ``shaders``.
        subgroup_size: WGSL: the fixed subgroup size its subgroup kernels assume (0: none use subgroups).
        planned: WGSL: how many leading resources are planned activation buffers.
    """

    language: str
    target: str
    resources: tuple[Resource, ...]
    uploads: tuple[Upload, ...]
    shaders: tuple[str, ...]
    steps: tuple[ProgramStep, ...]
    inputs: tuple[Input, ...]
    outputs: tuple[Output, ...]
    vertex: int = -1
    subgroup_size: int = 0
    planned: int = 0

    @property
    def constant_bytes(self) -> int:
        """Bytes the constants take on the device (weights and tables; int8 weights one byte a value)."""
        total = 0
        for index in {u.resource for u in self.uploads}:
            r = self.resources[index]
            total += r.nbytes if isinstance(r, Buffer) else r.floats * TEXEL_BYTES.get(r.dtype, 1)
        return total

    @property
    def texture_bytes(self) -> int:
        """Bytes of a GLSL program's textures that hold no constant (activations; half floats two a value)."""
        pinned = {u.resource for u in self.uploads}
        return sum(
            r.floats * TEXEL_BYTES.get(r.dtype, 1)
            for k, r in enumerate(self.resources)
            if isinstance(r, Texture) and k not in pinned
        )


@dataclass
class ProgramBuilder:
    """Collects resources, uploads and shaders (each text once) while a builder walks its kernels."""

    language: str
    target: str
    resources: list[Resource] = field(default_factory=list)
    uploads: list[Upload] = field(default_factory=list)
    shaders: list[str] = field(default_factory=list)
    steps: list[ProgramStep] = field(default_factory=list)
    _shader_index: dict[str, int] = field(default_factory=dict)
    _constant_index: dict[bytes, int] = field(default_factory=dict)

    def resource(self, resource: Resource) -> int:
        """Add a resource and return its index."""
        self.resources.append(resource)
        return len(self.resources) - 1

    def shader(self, text: str) -> int:
        """Return the index of a shader text, adding it when new."""
        if text not in self._shader_index:
            self._shader_index[text] = len(self.shaders)
            self.shaders.append(text)
        return self._shader_index[text]

    def constant_buffer(self, data: np.ndarray, what: str, quant: Quantized | None = None, int4: bool = False) -> int:
        """Return a WGSL buffer holding ``data`` (flattened to float32; int8/uint8/float16 kept); equal data shares one.

        ``int4``: ``data`` is a kernel's packed int4 weight (see :attr:`Upload.int4`).
        """
        narrow = data.dtype in NARROW
        flat = np.ascontiguousarray(data, dtype=None if narrow else np.float32).reshape(-1)
        key = (b"4" if int4 else flat.dtype.char.encode()) + flat.tobytes()
        if key not in self._constant_index:
            index = self.resource(Buffer(max(4, (flat.nbytes + 3) // 4 * 4)))
            self.uploads.append(Upload(index, flat, None, what, quant, int4))
            self._constant_index[key] = index
        return self._constant_index[key]

    def constant_texture(
        self, data: np.ndarray, layout: TexLayout, what: str, quant: Quantized | None = None, int4: bool = False
    ) -> int:
        """Return a new GLSL texture of ``layout`` holding ``data`` (a matrix of ``layout.rows`` x ``cols``).

        int8/uint8 data (quantized weights) gets an integer texture of that type, float16 data a half-float one;
        ``int4``: see :attr:`Upload.int4`.
        """
        narrow = data.dtype in NARROW
        flat = np.ascontiguousarray(data, dtype=None if narrow else np.float32).reshape(-1)
        if flat.size != layout.rows * layout.cols:
            raise ProgramError(f"{what}: constant has {flat.size} values for {layout}")
        index = self.resource(Texture(layout.width, layout.height, layout.pack, flat.dtype.name))
        self.uploads.append(Upload(index, flat, layout, what, quant, int4))
        return index

    def build(
        self,
        inputs: Sequence[Input],
        outputs: Sequence[Output],
        vertex: int = -1,
        subgroup_size: int = 0,
        planned: int = 0,
    ) -> Program:
        """Return the finished program."""
        return Program(
            self.language,
            self.target,
            tuple(self.resources),
            tuple(self.uploads),
            tuple(self.shaders),
            tuple(self.steps),
            tuple(inputs),
            tuple(outputs),
            vertex,
            subgroup_size,
            planned,
        )


# -- checks every builder runs ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Kernel:
    """One kernel, checked and rendered: validated params and the shader text for a target."""

    spec: OpSpec[Any]
    problem: Any
    params: Params
    source: str
    label: str


def checked_kernel(
    spec: OpSpec[Any], problem: Any, params: Mapping[str, Any], limits: Limits, language: str, target: str, label: str
) -> Kernel:
    """Validate ``params`` against the op's space, check them against ``limits``, render the shader.

    WGSL kernels that use subgroup operations get the ``enable subgroups;`` line browsers need (naga, which
    runs them natively, refuses it).

    Raises:
        InvalidParamsError: When params are outside the space or break a constraint (nothing is rendered).
    """
    if target not in TARGETS:
        raise KernelforgeError(f"program target must be one of {TARGETS}, got {target!r}")
    clean = spec.validate_params(params, language)
    spec.check(problem, clean, limits, language)
    source = render_valid(spec, language, problem, clean, target)
    if language == "wgsl" and target == "web" and spec.subgroup_size(clean):
        source = f"enable subgroups;\n{source}"
    return Kernel(spec, problem, clean, source, label)


def output_order(spec: OpSpec[Any], problem: Any, params: Params, count: int, who: str) -> tuple[int, ...] | None:
    """Return the axis order the kernel stores its output in, after checking it with an ``arange`` probe.

    ``output_layout`` declares the order and ``from_device`` undoes it; were they to disagree, a chained
    kernel (or a browser) would read garbage, so the build stops instead.

    Raises:
        ProgramError: Naming ``who`` when the kernel writes another number of values or another order.
    """
    shape = spec.output_shape(problem)
    size = math.prod(shape)
    if count != size:
        raise ProgramError(f"{who}: the kernel writes {count} values for an output of {size}")
    perm = spec.output_layout(problem, params)
    order = perm or tuple(range(len(shape)))
    data = np.arange(size, dtype=np.float64)
    got = np.asarray(spec.from_device(problem, params, data)).reshape(shape)
    want = data.reshape(tuple(shape[a] for a in order)).transpose(np.argsort(order))
    if not np.array_equal(got, want):
        raise ProgramError(f"{who}: {spec.name} writes its output in another order than {perm}")
    return perm


def const_physical_data(value: Value, layout: tuple[int, ...] | None) -> np.ndarray:
    """Return a constant's data in a buffer's axis order (left-padded with size-1 axes to the layout's rank)."""
    assert value.data is not None
    if layout is None:
        return value.data
    data = value.data.reshape((1,) * (len(layout) - value.data.ndim) + value.data.shape)
    return np.ascontiguousarray(data.transpose(layout))


def device_arrays(
    plan: Plan, step: Step, spec: OpSpec[Any], feeds: Mapping[str, np.ndarray] | None = None
) -> list[np.ndarray]:
    """Return a step's device inputs: constants converted for its kernel, fed tensors, placeholders elsewhere.

    Placeholders (zeros of the kernel's input shape) stand for tensors produced on the device; only the
    constants of the result are uploaded from it. ``feeds`` may also stand in for a constant (index probes).
    """
    graph, feeds = plan.graph, feeds or {}
    arrays = []
    out_layout = graph.value(step.node.output).layout if plan.language == "wgsl" else None
    for k, name in enumerate(step.call.inputs):
        value = graph.value(name)
        if value.is_const:
            follow = out_layout if step.call.op == "elementwise" else None
            if name in feeds:
                value = Value(name, value.shape, np.asarray(feeds[name], np.float32))
            arrays.append(const_physical_data(value, follow))
        elif name in feeds:
            arrays.append(feeds[name])
        else:
            shape = step.call.problem.shapes[k] if step.call.op == "elementwise" else value.shape
            arrays.append(np.zeros(shape, np.float32))
    # ops may append derived constant inputs (resize's index table) after their own inputs
    device = spec.device_inputs(step.call.problem, step.params, arrays)
    if len(device) < len(arrays):
        raise ProgramError(f"{step.node.origin}: {spec.name} takes {len(device)} device inputs, not {len(arrays)}")
    return device


def int4_weight(step: Step, k: int) -> bool:
    """Whether device input ``k`` of a step is a kernel's int4 weight (a GEMM's B or a conv's W)."""
    wq = getattr(step.call.problem, "wq", None)
    return k == 1 and wq is not None and wq.dtype == "int4"


def device_quants(plan: Plan, step: Step, spec: OpSpec[Any], device: Sequence[np.ndarray]) -> list[Quantized | None]:
    """Return, per device input, the integers it dequantizes from when it is a quantized constant rearranged.

    Only web programs need them (a bundle stores the integers); None wherever the kernel's conversion of the
    constant is not a rearrangement of its values (:func:`~kernelforge.graph.quant.relocate`).
    """
    found: list[Quantized | None] = []
    for k, array in enumerate(device):
        name = step.call.inputs[k] if k < len(step.call.inputs) else ""
        quant = plan.graph.value(name).quant if name else None
        if quant is None or array.dtype in NARROW:  # the kernel reads the integers itself
            found.append(None)
            continue
        convert = functools.partial(_convert_one, plan, step, spec, name, k)
        found.append(relocate(quant, np.asarray(array), convert))
    return found


def _convert_one(plan: Plan, step: Step, spec: OpSpec[Any], name: str, k: int, data: np.ndarray) -> np.ndarray:
    return np.asarray(device_arrays(plan, step, spec, {name: data})[k])


def check_layouts(plan: Plan, step: Step, spec: OpSpec[Any]) -> None:
    """Fail loudly if a WGSL kernel would read or write a buffer in another axis order than it holds."""
    graph, problem, params = plan.graph, step.call.problem, step.params
    follows = step.call.op in ("elementwise", "concat", "slice", "transpose")  # built on the buffers' shapes
    wanted = spec.input_layouts(problem, params)
    for k, name in enumerate(step.call.inputs):
        value = graph.value(name)
        want = None if follows else (wanted[k] if k < len(wanted) else None)
        if not value.is_const and not follows and value.layout != want:
            raise ProgramError(
                f"{step.node.origin}: input {name!r} is in layout {value.layout}, the kernel reads {want}"
            )
    out = graph.value(step.node.output)
    if not follows and out.layout != spec.output_layout(problem, params):
        raise ProgramError(f"{step.node.origin}: output {out.name!r} layout {out.layout} is not what the kernel writes")


def step_kernel(plan: Plan, step: Step, spec: OpSpec[Any], target: str) -> Kernel:
    """Return a plan step's checked kernel (see :func:`checked_kernel`), labelled by its node."""
    label = f"{step.node.name} ({spec.name} {spec.problem_key(step.call.problem)})"
    return checked_kernel(spec, step.call.problem, step.params, plan.limits, plan.language, target, label)


# -- WGSL graphs ------------------------------------------------------------------------------------------------


def wgsl_program(plan: Plan, target: str = "native") -> Program:
    """Build the WGSL program of a plan: the memory plan's buffers, then one dispatch per step.

    Every tensor stays on the device between kernels, in planned, shared buffers; a constant gets a buffer of
    its own (equal constants share one).
    """
    graph = plan.graph
    memory = plan_memory(graph)
    b = ProgramBuilder("wgsl", target)
    for nbytes in memory.buffer_bytes:
        b.resource(Buffer(max(4, (int(nbytes) + 3) // 4 * 4)))
    planned = len(b.resources)

    def tensor(name: str) -> Arg:
        return Arg(memory.buffer_of[name], max(4, graph.value(name).nbytes))

    subgroups = False
    for step in plan.steps:
        spec = get_op(step.call.op)
        kernel = step_kernel(plan, step, spec, target)
        check_layouts(plan, step, spec)
        args = []
        device = device_arrays(plan, step, spec)
        quants = device_quants(plan, step, spec, device) if target == "web" else [None] * len(device)
        for k, array in enumerate(device):
            name = step.call.inputs[k] if k < len(step.call.inputs) else ""
            if not name or graph.value(name).is_const:
                args.append(
                    Arg(b.constant_buffer(array, f"{step.node.origin} input {k}", quants[k], int4_weight(step, k)))
                )
            else:
                args.append(tensor(name))
        launch = spec.launch(kernel.problem, kernel.params)
        subgroups = subgroups or bool(spec.subgroup_size(kernel.params))
        b.steps.append(
            ProgramStep(
                node=step.node.name,
                op=spec.name,
                source=step.source,
                params=kernel.params,
                shader=b.shader(kernel.source),
                label=kernel.label,
                inputs=tuple(args),
                outputs=(tensor(step.node.output),),
                workgroups=launch.workgroups,
                uniforms=tuple(int(u) for u in launch.uniforms),
            )
        )
    inputs = [Input(n, graph.value(n).shape, memory.buffer_of[n]) for n in graph.inputs]
    outputs = []
    for name in graph.outputs:
        value = graph.value(name)
        if value.data is not None:  # an output that folded to a constant
            outputs.append(Output(name, value.shape, data=np.asarray(value.data, np.float32)))
        else:
            outputs.append(Output(name, value.shape, (memory.buffer_of[name],)))
    return b.build(inputs, outputs, subgroup_size=plan.limits.subgroup_size if subgroups else 0, planned=planned)


# -- one kernel -------------------------------------------------------------------------------------------------

OUTPUT = "y"
"""The output name of a single-kernel program."""


def kernel_program(
    spec: OpSpec[Any],
    problem: Any,
    params: Mapping[str, Any],
    limits: Limits,
    language: str,
    inputs: Sequence[np.ndarray],
    target: str = "native",
) -> Program:
    """Build the program of one kernel whose inputs are constants: what the tuner times and the numpy API runs.

    The inputs are converted for the kernel on the host (``device_inputs``) and uploaded once; the output is
    read back as the kernel wrote it (every render target, any axis order) and reassembled on the host. The
    kernel is step 0.

    Raises:
        InvalidParamsError: When params are outside the space or break a constraint.
        ProgramError: When the kernel's output layout and ``from_device`` disagree.
    """
    label = f"{spec.name}:{spec.problem_key(problem)}"
    kernel = checked_kernel(spec, problem, params, limits, language, target, label)
    device = spec.device_inputs(problem, kernel.params, [np.asarray(x, np.float32) for x in inputs])
    b = ProgramBuilder(language, target)
    shape = spec.output_shape(problem)
    if language == "wgsl":
        args = tuple(Arg(b.constant_buffer(x, f"{label} input {k}")) for k, x in enumerate(device))
        out = b.resource(Buffer(max(4, 4 * math.prod(shape))))
        launch = spec.launch(problem, kernel.params)
        step = ProgramStep(
            label, spec.name, "given", kernel.params, b.shader(kernel.source), label, args, (Arg(out),),
            workgroups=launch.workgroups, uniforms=tuple(int(u) for u in launch.uniforms),
        )  # fmt: skip
        perm = output_order(spec, problem, kernel.params, math.prod(shape), label)
        output = Output(OUTPUT, shape, (out,), perm=perm)
    else:
        gl = spec.gl_launch(problem, kernel.params)
        if len(gl.inputs) != len(device):
            raise ProgramError(f"{label}: {len(device)} device inputs for {len(gl.inputs)} textures")
        args = tuple(
            Arg(b.constant_texture(x, layout, f"{label} input {k}"), sampler=sampler)
            for k, (x, layout, sampler) in enumerate(zip(device, gl.inputs, gl.samplers, strict=True))
        )
        half = "float16" if gl.half else "float32"
        targets = tuple(b.resource(Texture(t.width, t.height, t.pack, half)) for t in gl.targets)
        step = ProgramStep(
            label, spec.name, "given", kernel.params, b.shader(kernel.source), label, args,
            tuple(Arg(t) for t in targets), size=(gl.targets[0].width, gl.targets[0].height),
        )  # fmt: skip
        perm = output_order(spec, problem, kernel.params, gl.rows * gl.cols, label)
        output = Output(OUTPUT, shape, targets, gl.targets, gl.rows, perm)
    b.steps.append(step)
    return b.build((), (output,))
