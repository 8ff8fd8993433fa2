"""GLSL programs of graphs: kernels over float textures, chained on the GPU by relayout passes.

Each GLSL kernel reads its inputs in its own packing (:class:`TexLayout`, an axis order) and writes its
output over one to four render targets. Wherever the packing a kernel writes is not the one the next kernel
reads, the program has a ``relayout`` pass (``glsl/relayout.frag.j2``), so a run never leaves the GPU until
the outputs are read: natively (moderngl) and in browsers (WebGL2) alike. Model inputs and outputs are the
tensor flat, four values per texel (:func:`flat_layout`). Textures whose lifetimes do not overlap are shared.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from kernelforge.graph.plan import Plan, Step
from kernelforge.graph.program import (
    Arg,
    Input,
    Output,
    Program,
    ProgramBuilder,
    ProgramError,
    ProgramStep,
    Texture,
    device_arrays,
    device_quants,
    int4_weight,
    output_order,
    step_kernel,
)
from kernelforge.ops import get_op
from kernelforge.ops.texture import TexLayout
from kernelforge.templates import GLSL_VERSIONS, render_template

Perm = tuple[int, ...]


@dataclass(frozen=True)
class _Storage:
    """Where a tensor lives: its render targets (rows dealt round-robin), matrix width and stored axis order."""

    textures: tuple[int, ...]
    layouts: tuple[TexLayout, ...]
    cols: int
    perm: Perm
    shape: tuple[int, ...]


def flat_layout(size: int) -> TexLayout:
    """The layout of model inputs and outputs: the tensor flat, four values per texel, square-ish."""
    return TexLayout(1, max(1, size), 4, True)


def _strides(shape: tuple[int, ...]) -> list[int]:
    out, acc = [], 1
    for d in reversed(shape):
        out.append(acc)
        acc *= d
    return out[::-1]


def _identity(rank: int) -> Perm:
    return tuple(range(rank))


class _Builder:
    def __init__(self, plan: Plan, target: str) -> None:
        self.plan, self.target = plan, target
        self.b = ProgramBuilder("glsl", target)
        self.where: dict[str, tuple[_Storage, tuple[int, ...]]] = {}
        self._relayouts: dict[tuple[object, ...], int] = {}

    def texture(self, layout: TexLayout, half: bool = False) -> int:
        return self.b.resource(Texture(layout.width, layout.height, layout.pack, "float16" if half else "float32"))

    # -- moving tensors between packings ------------------------------------------------------------------

    def read_as(self, name: str, layout: TexLayout, perm: Perm | None, who: str) -> int:
        """Return a texture holding tensor ``name`` as ``layout`` in axis order ``perm``, relayouting if needed."""
        storage, shape = self.where[name]
        perm = perm or _identity(len(shape))
        size = math.prod(shape)
        if layout.rows * layout.cols != size:
            raise ProgramError(f"{who}: reads {name!r} ({size} values) as a {layout.rows}x{layout.cols} texture")
        same_order = perm == storage.perm and (shape == storage.shape or perm == _identity(len(perm)))
        src = storage.layouts[0]
        same_packing = (src.rows, src.cols, src.pack, src.square) == (
            layout.rows,
            layout.cols,
            layout.pack,
            layout.square,
        )
        if same_order and len(storage.textures) == 1 and same_packing:
            return storage.textures[0]
        key = (storage.textures, layout, perm, shape)
        if key not in self._relayouts:
            self._relayouts[key] = self._relayout(storage, shape, layout, perm, f"relayout of {name}")
        return self._relayouts[key]

    def _relayout(self, src: _Storage, shape: tuple[int, ...], dst: TexLayout, perm: Perm, node: str) -> int:
        stored = tuple(shape[a] for a in perm)
        # the source's stride of each of its canonical axes, in the axis order it is stored in
        src_strides = _strides(tuple(src.shape[a] for a in src.perm))
        stride_of = {a: src_strides[i] for i, a in enumerate(src.perm)}
        stage2: list[tuple[int, int]] = []
        if shape == src.shape:
            # one stage: destination dims straight to the source's strides of the same axes
            stage1 = [(d, stride_of[a]) for d, a in zip(stored, perm, strict=True)]
        else:
            # a reshape: destination dims to the canonical flat index, then (source stored in another axis
            # order) that index unravelled over the source's shape to the source's strides
            strides = _strides(shape)
            stage1 = [(d, strides[a]) for d, a in zip(stored, perm, strict=True)]
            if src.perm != _identity(len(src.perm)):
                stage2 = [(d, stride_of[a]) for a, d in enumerate(src.shape)]
        first = src.layouts[0]
        context = {
            "version": GLSL_VERSIONS[self.target],
            "dst": {**dst.context(), "rows": dst.rows, "cols": dst.cols},
            "stage1": [(d, c) for d, c in stage1 if d > 1],
            "stage2": [(d, c) for d, c in stage2 if d > 1],
            "src_cols": src.cols,
            "src_pack": first.pack,
            "src_row_texels": first.row_texels,
            "src_widths": [t.width for t in src.layouts],
        }
        out = self.texture(dst)
        self.b.steps.append(
            ProgramStep(
                node=node,
                op="relayout",
                source="built-in",
                params={},
                shader=self.b.shader(render_template("glsl/relayout.frag.j2", context)),
                label=node,
                inputs=tuple(Arg(t, sampler=f"S{i}") for i, t in enumerate(src.textures)),
                outputs=(Arg(out),),
                size=(dst.width, dst.height),
            )
        )
        return out

    # -- kernels --------------------------------------------------------------------------------------------

    def kernel(self, step: Step) -> None:
        plan, graph = self.plan, self.plan.graph
        spec = get_op(step.call.op)
        kernel = step_kernel(plan, step, spec, self.target)
        problem, params = kernel.problem, kernel.params
        launch = spec.gl_launch(problem, params)
        who = f"{step.node.origin} ({spec.name} {spec.problem_key(problem)})"
        device = device_arrays(plan, step, spec)
        if len(device) != len(launch.inputs):
            raise ProgramError(f"{who}: {len(device)} device inputs for {len(launch.inputs)} textures")
        quants = device_quants(plan, step, spec, device) if self.target == "web" else [None] * len(device)
        wanted = spec.input_layouts(problem, params)
        inputs = []
        for k, (layout, sampler) in enumerate(zip(launch.inputs, launch.samplers, strict=True)):
            name = step.call.inputs[k] if k < len(step.call.inputs) else ""
            if not name or graph.value(name).is_const:
                int4 = int4_weight(step, k)
                texture = self.b.constant_texture(device[k], layout, f"{who} input {k}", quants[k], int4)
            else:
                perm = wanted[k] if k < len(wanted) else None
                _check_input_order(plan, step, k, perm)
                texture = self.read_as(name, layout, perm, who)
            inputs.append(Arg(texture, sampler=sampler))
        targets = tuple(self.texture(t, launch.half) for t in launch.targets)
        out = graph.value(step.node.output)
        perm = output_order(spec, problem, params, launch.rows * launch.cols, step.node.origin)
        self.where[out.name] = (
            _Storage(targets, launch.targets, launch.cols, perm or _identity(len(out.shape)), out.shape),
            out.shape,
        )
        self.b.steps.append(
            ProgramStep(
                node=step.node.name,
                op=spec.name,
                source=step.source,
                params=params,
                shader=self.b.shader(kernel.source),
                label=kernel.label,
                inputs=tuple(inputs),
                outputs=tuple(Arg(t) for t in targets),
                size=(launch.targets[0].width, launch.targets[0].height),
            )
        )


def _check_input_order(plan: Plan, step: Step, k: int, perm: Perm | None) -> None:
    """Check that the kernel reads input ``k`` as the tensor transposed by ``perm`` (an ``arange`` probe).

    ``input_layouts`` declares the order and ``device_inputs`` applies it; if they disagreed the kernel
    would compute garbage, so the build stops instead.
    """
    spec = get_op(step.call.op)
    name = step.call.inputs[k]
    shape = step.call.problem.shapes[k] if step.call.op == "elementwise" else plan.graph.value(name).shape
    probe = np.arange(math.prod(shape), dtype=np.float32).reshape(shape)
    got = np.asarray(device_arrays(plan, step, spec, {name: probe})[k]).reshape(-1)
    want = probe.transpose(perm) if perm else probe
    if not np.array_equal(got, want.reshape(-1)):
        raise ProgramError(f"{step.node.origin}: {spec.name} reads input {k} in another order than {perm}")


def glsl_program(plan: Plan, target: str = "native") -> Program:
    """Build the GLSL program of a plan: input textures, constant uploads, kernels and relayout passes in order."""
    graph = plan.graph
    g = _Builder(plan, target)
    inputs = []
    for name in graph.inputs:
        value = graph.value(name)
        layout = flat_layout(value.size)
        texture = g.texture(layout)
        g.where[name] = (
            _Storage((texture,), (layout,), layout.cols, _identity(len(value.shape)), value.shape),
            value.shape,
        )
        inputs.append(Input(name, value.shape, texture, layout))
    index = {s.node.name: s for s in plan.steps}
    for node in graph.nodes:
        step = index.get(node.name)
        if step is None:  # a view: same storage, another shape
            storage, _ = g.where[node.inputs[0]]
            g.where[node.output] = (storage, graph.value(node.output).shape)
            continue
        g.kernel(step)
    outputs = []
    for name in graph.outputs:
        value = graph.value(name)
        if value.data is not None:  # an output that folded to a constant
            outputs.append(Output(name, value.shape, data=np.asarray(value.data, np.float32)))
            continue
        layout = flat_layout(value.size)
        texture = g.read_as(name, layout, None, f"output {name!r}")
        outputs.append(Output(name, value.shape, (texture,), (layout,)))
    vertex = g.b.shader(render_template("glsl/fullscreen.vert.j2", {"version": GLSL_VERSIONS[target]}))
    return share_textures(g.b.build(inputs, outputs, vertex=vertex))


def share_textures(program: Program) -> Program:
    """Let textures whose lifetimes do not overlap share one texture of the same size and format.

    A texture lives from the pass that writes it (model inputs: the start of a run) to the last pass that
    reads it (model outputs: the end of the run); constants live forever. A texture is reused only after its
    last reader, never by a pass that also reads it. Returns the program with textures renumbered.
    """
    steps = program.steps
    end = len(steps)
    first: dict[int, int] = {i.resource: -1 for i in program.inputs}
    last: dict[int, int] = {}
    for k, step in enumerate(steps):
        for a in step.outputs:
            first.setdefault(a.resource, k)
        for a in step.inputs:
            last[a.resource] = max(last.get(a.resource, -1), k)
    for o in program.outputs:
        for t in o.resources:
            last[t] = end
    pinned = {u.resource for u in program.uploads}
    slots: list[Texture] = []
    free_at: list[int] = []  # the pass after which each slot is free again
    slot_of: dict[int, int] = {}
    textures = program.resources
    for t in sorted(range(len(textures)), key=lambda t: (first.get(t, -1), t)):
        start = first.get(t, -1)
        stop = last.get(t, start)
        if t in pinned:
            start, stop = -1, end + 1
        fit = next(
            (k for k, slot in enumerate(slots) if slot == textures[t] and free_at[k] < start and t not in pinned),
            None,
        )
        if fit is None:
            texture = textures[t]
            assert isinstance(texture, Texture)
            slots.append(texture)
            free_at.append(stop)
            fit = len(slots) - 1
        else:
            free_at[fit] = stop
        slot_of[t] = fit

    def arg(a: Arg) -> Arg:
        return dataclasses.replace(a, resource=slot_of[a.resource])

    return dataclasses.replace(
        program,
        resources=tuple(slots),
        uploads=tuple(dataclasses.replace(u, resource=slot_of[u.resource]) for u in program.uploads),
        steps=tuple(
            dataclasses.replace(s, inputs=tuple(map(arg, s.inputs)), outputs=tuple(map(arg, s.outputs))) for s in steps
        ),
        inputs=tuple(dataclasses.replace(i, resource=slot_of[i.resource]) for i in program.inputs),
        outputs=tuple(
            dataclasses.replace(o, resources=tuple(slot_of[t] for t in o.resources)) for o in program.outputs
        ),
    )
