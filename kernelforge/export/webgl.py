"""A GLSL plan as data: kernels over float textures, chained on the GPU by relayout passes.

Each GLSL kernel reads its inputs in its own packing (:class:`TexLayout`, an axis order) and writes its
output over one to four render targets. A native GLSL session repacks between kernels in numpy; a browser
bundle instead inserts ``relayout`` passes (``glsl/relayout.frag.j2``) wherever the packing a kernel writes
is not the one the next kernel reads, so a run never leaves the GPU until the outputs are read.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from kernelforge.errors import ExportError
from kernelforge.ops import get_op
from kernelforge.ops._spec import OpSpec
from kernelforge.ops._texture import TexLayout
from kernelforge.runtime.plan import Plan, Step, device_arrays
from kernelforge.templates import GLSL_VERSIONS, render, render_template

from .weights import Constants, Shaders

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


def _layout_json(t: TexLayout) -> dict[str, int]:
    return {"rows": t.rows, "cols": t.cols, "pack": t.pack, "width": t.width, "height": t.height}


def _strides(shape: tuple[int, ...]) -> list[int]:
    out, acc = [], 1
    for d in reversed(shape):
        out.append(acc)
        acc *= d
    return out[::-1]


def _identity(rank: int) -> Perm:
    return tuple(range(rank))


class _Builder:
    def __init__(self, plan: Plan, constants: Constants, shaders: Shaders) -> None:
        self.plan, self.constants, self.shaders = plan, constants, shaders
        self.textures: list[dict[str, int]] = []
        self.const_textures: list[dict[str, Any]] = []
        self.steps: list[dict[str, Any]] = []
        self.where: dict[str, tuple[_Storage, tuple[int, ...]]] = {}
        self._relayouts: dict[tuple[Any, ...], int] = {}

    def texture(self, layout: TexLayout) -> int:
        self.textures.append({"width": layout.width, "height": layout.height, "pack": layout.pack})
        return len(self.textures) - 1

    # -- moving tensors between packings ------------------------------------------------------------------

    def read_as(self, name: str, layout: TexLayout, perm: Perm | None, who: str) -> int:
        """Return a texture holding tensor ``name`` as ``layout`` in axis order ``perm``, relayouting if needed."""
        storage, shape = self.where[name]
        perm = perm or _identity(len(shape))
        size = math.prod(shape)
        if layout.rows * layout.cols != size:
            raise ExportError(f"{who}: reads {name!r} ({size} values) as a {layout.rows}x{layout.cols} texture")
        same_order = perm == storage.perm and (shape == storage.shape or perm == _identity(len(perm)))
        src = storage.layouts[0]
        if (
            same_order
            and len(storage.textures) == 1
            and (src.rows, src.cols, src.pack, src.square)
            == (
                layout.rows,
                layout.cols,
                layout.pack,
                layout.square,
            )
        ):
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
            "version": GLSL_VERSIONS["web"],
            "dst": {**dst.context(), "rows": dst.rows, "cols": dst.cols},
            "stage1": [(d, c) for d, c in stage1 if d > 1],
            "stage2": [(d, c) for d, c in stage2 if d > 1],
            "src_cols": src.cols,
            "src_pack": first.pack,
            "src_row_texels": first.row_texels,
            "src_widths": [t.width for t in src.layouts],
        }
        out = self.texture(dst)
        self.steps.append(
            {
                "node": node,
                "op": "relayout",
                "source": "built-in",
                "shader": self.shaders.add(render_template("glsl/relayout.frag.j2", context)),
                "inputs": [{"texture": t, "sampler": f"S{i}"} for i, t in enumerate(src.textures)],
                "targets": [out],
                "width": dst.width,
                "height": dst.height,
            }
        )
        return out

    # -- kernels --------------------------------------------------------------------------------------------

    def kernel(self, step: Step) -> None:
        plan, graph = self.plan, self.plan.graph
        spec = get_op(step.call.op)
        problem, params = step.call.problem, spec.validate_params(step.params, "glsl")
        spec.check(problem, params, plan.limits, "glsl")
        launch = spec.gl_launch(problem, params)
        who = f"{step.node.origin} ({spec.name} {spec.problem_key(problem)})"
        device = device_arrays(plan, step, spec)
        if len(device) != len(launch.inputs):
            raise ExportError(f"{who}: {len(device)} device inputs for {len(launch.inputs)} textures")
        wanted = spec.input_layouts(problem, params)
        inputs = []
        for k, (layout, sampler) in enumerate(zip(launch.inputs, launch.samplers, strict=True)):
            name = step.call.inputs[k] if k < len(step.call.inputs) else ""
            if not name or graph.value(name).is_const:
                data = device[k].reshape(-1)
                if data.size != layout.rows * layout.cols:
                    raise ExportError(f"{who}: constant input {k} has {data.size} values for {layout}")
                texture = self.texture(layout)
                constant = self.constants.add(data, f"{who} input {k}")
                self.const_textures.append({"texture": texture, "constant": constant, "layout": _layout_json(layout)})
            else:
                perm = wanted[k] if k < len(wanted) else None
                _check_input_order(plan, step, spec, k, perm)
                texture = self.read_as(name, layout, perm, who)
            inputs.append({"texture": texture, "sampler": sampler})
        targets = tuple(self.texture(t) for t in launch.targets)
        out = graph.value(step.node.output)
        perm = spec.output_layout(problem, params) or _identity(len(out.shape))
        _check_output_order(step, spec, launch.rows * launch.cols, perm, out.shape)
        storage = _Storage(targets, launch.targets, launch.cols, perm, out.shape)
        self.where[out.name] = (storage, out.shape)
        self.steps.append(
            {
                "node": step.node.name,
                "op": spec.name,
                "source": step.source,
                "params": dict(params),
                "shader": self.shaders.add(render(spec, "glsl", problem, params, target="web")),
                "inputs": inputs,
                "targets": list(targets),
                "width": launch.targets[0].width,
                "height": launch.targets[0].height,
            }
        )


def _check_input_order(plan: Plan, step: Step, spec: OpSpec[Any], k: int, perm: Perm | None) -> None:
    """Check that the kernel reads input ``k`` as the tensor transposed by ``perm`` (an ``arange`` probe).

    ``input_layouts`` declares the order and ``device_inputs`` applies it; if they disagreed the browser
    would compute garbage, so the export stops instead.
    """
    name = step.call.inputs[k]
    shape = step.call.problem.shapes[k] if step.call.op == "elementwise" else plan.graph.value(name).shape
    probe = np.arange(math.prod(shape), dtype=np.float32).reshape(shape)
    got = np.asarray(device_arrays(plan, step, spec, {name: probe})[k]).reshape(-1)
    want = probe.transpose(perm) if perm else probe
    if not np.array_equal(got, want.reshape(-1)):
        raise ExportError(f"{step.node.origin}: {spec.name} reads input {k} in another order than {perm}")


def _check_output_order(step: Step, spec: OpSpec[Any], count: int, perm: Perm, shape: tuple[int, ...]) -> None:
    """Check that what the kernel writes is the output transposed by ``perm`` (``from_device`` on an ``arange``)."""
    size = math.prod(shape)
    if count != size:
        raise ExportError(f"{step.node.origin}: the kernel writes {count} values for an output of {size}")
    data = np.arange(size, dtype=np.float64)
    got = np.asarray(spec.from_device(step.call.problem, step.params, data)).reshape(shape)
    stored = tuple(shape[a] for a in perm)
    want = data.reshape(stored).transpose(np.argsort(perm))
    if not np.array_equal(got, want):
        raise ExportError(f"{step.node.origin}: {spec.name} writes its output in another order than {perm}")


def glsl_plan(plan: Plan, constants: Constants, shaders: Shaders) -> dict[str, Any]:
    """Write a GLSL plan (see FORMAT.md): textures, constant uploads, kernels and relayout passes in order."""
    graph = plan.graph
    b = _Builder(plan, constants, shaders)
    inputs = []
    for name in graph.inputs:
        value = graph.value(name)
        layout = flat_layout(value.size)
        texture = b.texture(layout)
        storage = _Storage((texture,), (layout,), layout.cols, _identity(len(value.shape)), value.shape)
        b.where[name] = (storage, value.shape)
        inputs.append({"name": name, "texture": texture, "layout": _layout_json(layout)})
    index = {s.node.name: s for s in plan.steps}
    for node in graph.nodes:
        step = index.get(node.name)
        if step is None:  # a view: same storage, another shape
            storage, _ = b.where[node.inputs[0]]
            b.where[node.output] = (storage, graph.value(node.output).shape)
            continue
        b.kernel(step)
    outputs: list[dict[str, Any]] = []
    for name in graph.outputs:
        value = graph.value(name)
        if value.data is not None:
            outputs.append({"name": name, "constant": constants.add(value.data, f"output {name!r}")})
            continue
        texture = b.read_as(name, flat_layout(value.size), None, f"output {name!r}")
        outputs.append({"name": name, "texture": texture, "size": value.size})
    vertex = render_template("glsl/fullscreen.vert.j2", {"version": GLSL_VERSIONS["web"]})
    body = {
        "vertex": shaders.add(vertex),
        "textures": b.textures,
        "constants": b.const_textures,
        "inputs": inputs,
        "outputs": outputs,
        "steps": b.steps,
    }
    return share_textures(body)


def share_textures(body: dict[str, Any]) -> dict[str, Any]:
    """Let textures whose lifetimes do not overlap share one texture of the same size and format.

    A texture lives from the pass that writes it (model inputs: the start of a run) to the last pass that
    reads it (model outputs: the end of the run); constants live forever. A texture is reused only after its
    last reader, never by a pass that also reads it. Returns the plan with textures renumbered.
    """
    steps = body["steps"]
    end = len(steps)
    first: dict[int, int] = {i["texture"]: -1 for i in body["inputs"]}
    last: dict[int, int] = {}
    for k, step in enumerate(steps):
        for t in step["targets"]:
            first.setdefault(t, k)
        for i in step["inputs"]:
            last[i["texture"]] = max(last.get(i["texture"], -1), k)
    for o in body["outputs"]:
        if "texture" in o:
            last[o["texture"]] = end
    pinned = {c["texture"] for c in body["constants"]}
    slots: list[dict[str, int]] = []
    free_at: list[int] = []  # the pass after which each slot is free again
    slot_of: dict[int, int] = {}
    textures = body["textures"]
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
            slots.append(dict(textures[t]))
            free_at.append(stop)
            fit = len(slots) - 1
        else:
            free_at[fit] = stop
        slot_of[t] = fit
    for step in steps:
        step["targets"] = [slot_of[t] for t in step["targets"]]
        for i in step["inputs"]:
            i["texture"] = slot_of[i["texture"]]
    for item in (*body["constants"], *body["inputs"], *body["outputs"]):
        if "texture" in item:
            item["texture"] = slot_of[item["texture"]]
    return {**body, "textures": slots}
