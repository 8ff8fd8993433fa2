"""Sessions: an ONNX model loaded onto one device, its kernels compiled once and run on demand.

``load`` imports the model, runs the graph passes, looks up each kernel's tuned params, assigns layouts
(WGSL), plans activation memory, compiles every pipeline and uploads the weights. ``run`` then only copies
the inputs in, replays the recorded dispatches in one submission and reads the outputs back.

WGSL keeps every tensor on the device between kernels, in planned, shared buffers. GLSL kernels read and
write textures whose packing differs per kernel (R32F rows, RGBA32F channel packs, square wrapping), so the
GLSL session hands each tensor to the next kernel through host memory: the arithmetic stays on the GPU, the
repacking is numpy.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from kernelforge import _config
from kernelforge.errors import KernelforgeError, ShapeError
from kernelforge.ops import get_op
from kernelforge.ops._spec import OpSpec
from kernelforge.runtime import open_device
from kernelforge.runtime.backends._base import Backend
from kernelforge.runtime.devices import DeviceInfo
from kernelforge.runtime.graph import Graph
from kernelforge.runtime.layout import LayoutPlan
from kernelforge.runtime.lower import lower_node, split_wide_gemms
from kernelforge.runtime.onnx_import import import_model
from kernelforge.runtime.passes import MemoryPlan, optimize, plan_memory
from kernelforge.runtime.plan import Step, check_layouts, device_arrays, plan_graph
from kernelforge.templates import render
from kernelforge.tuner.db import TuningDB

ModelSource = str | os.PathLike[str] | bytes | Any


@dataclass(frozen=True)
class NodeTime:
    """One kernel's time in a profiled run."""

    node: str
    op: str
    seconds: float


def _open_db(db: TuningDB | str | os.PathLike[str] | None) -> TuningDB:
    if isinstance(db, TuningDB):
        return db
    return TuningDB(db if db is not None else _config.db_dir())


def prepare_graph(model: ModelSource, input_shapes: Mapping[str, Sequence[int]] | None = None) -> Graph:
    """Import a model and run the graph passes (no device needed)."""
    return optimize(import_model(model, input_shapes))


def model_kernels(model: ModelSource, input_shapes: Mapping[str, Sequence[int]] | None = None) -> list[tuple[str, Any]]:
    """Return the distinct ``(op, problem)`` kernels a model runs after the passes (what ``tune --model`` tunes)."""
    graph = _split_graph(model, input_shapes)
    return _distinct(c for c in (lower_node(graph, node) for node in graph.nodes) if c is not None)


def planned_kernels(
    model: ModelSource,
    info: DeviceInfo,
    language: str,
    limits: Any,
    db: TuningDB,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
) -> list[tuple[str, Any]]:
    """Return the distinct kernels a model runs on a device as planned now, layout conversions included.

    Unlike :func:`model_kernels` this depends on the device's records: the layouts its tuned convs chose
    decide where conversion kernels go (``tune --model`` tunes those in a second round).
    """
    graph = _split_graph(model, input_shapes)
    return _distinct(step.call for step in plan_graph(graph, info, language, limits, db).steps)


def _split_graph(model: ModelSource, input_shapes: Mapping[str, Sequence[int]] | None) -> Graph:
    """Return the optimized graph with GEMMs too wide for one storage binding split: what every device runs."""
    graph = prepare_graph(model, input_shapes)
    split_wide_gemms(graph)
    return graph


def _distinct(calls: Iterable[Any]) -> list[tuple[str, Any]]:
    """Return the distinct ``(op, problem)`` pairs of kernel calls, in first-seen order."""
    return list(dict.fromkeys((c.op, c.problem) for c in calls))


class Session:
    """A model loaded on one device: see :func:`load`."""

    def __init__(self, graph: Graph, backend: Backend, db: TuningDB) -> None:
        started = time.perf_counter()
        self.graph = graph
        self.backend = backend
        self.device: DeviceInfo = backend.info
        self.language: str = backend.language
        self.inputs = tuple((n, graph.value(n).shape) for n in graph.inputs)
        self.outputs = tuple((n, graph.value(n).shape) for n in graph.outputs)
        self._db = db
        self.plan = plan_graph(graph, backend.info, backend.language, backend.limits, db)
        self.layout_plan: LayoutPlan | None = self.plan.layout_plan
        self.steps = self.plan.steps
        self.memory: MemoryPlan = plan_memory(graph)
        if self.language == "wgsl":
            self._build_wgsl()
        else:
            self._build_glsl()
        self.load_time_s = time.perf_counter() - started

    # -- planning ---------------------------------------------------------------------------------------

    def _compile(self, step: Step) -> tuple[OpSpec[Any], Any]:
        spec = get_op(step.call.op)
        params = spec.validate_params(step.params, self.language)
        spec.check(step.call.problem, params, self.backend.limits, self.language)
        source = render(spec, self.language, step.call.problem, params)
        label = f"{step.node.name} ({spec.name} {spec.problem_key(step.call.problem)})"
        return spec, self.backend.compile(source, label)

    # -- WGSL: everything on the device ---------------------------------------------------------------------

    def _build_wgsl(self) -> None:
        backend: Any = self.backend
        plan = self.memory
        self._buffers = [backend.alloc(n) for n in plan.buffer_bytes]
        self._dispatches = []
        for step in self.steps:
            spec, kernel = self._compile(step)
            device = device_arrays(self.plan, step, spec)
            check_layouts(self.plan, step, spec)
            bindings: list[Any] = []
            for k, array in enumerate(device):
                name = step.call.inputs[k] if k < len(step.call.inputs) else ""
                if not name or self.graph.value(name).is_const:
                    bindings.append(backend.upload(array))
                else:
                    bindings.append(self._binding(name))
            bindings.append(self._binding(step.node.output))
            step.dispatch = backend.bind(kernel, bindings, spec.launch(step.call.problem, step.params))
            self._dispatches.append(step.dispatch)

    def _binding(self, name: str) -> tuple[Any, int]:
        return self._buffers[self.memory.buffer_of[name]], max(4, self.graph.value(name).nbytes)

    # -- GLSL: kernels on the device, tensors handed over through host memory ----------------------------------

    def _build_glsl(self) -> None:
        for step in self.steps:
            spec, kernel = self._compile(step)
            device = device_arrays(self.plan, step, spec)
            step.bound = self.backend.bind_op(kernel, spec, step.call.problem, step.params, device)

    def _run_glsl(self, feeds: dict[str, np.ndarray], times: list[NodeTime] | None = None) -> dict[str, np.ndarray]:
        values = dict(feeds)
        index = {s.node.name: s for s in self.steps}
        for node in self.graph.nodes:
            step = index.get(node.name)
            if step is None:  # a view
                values[node.output] = values[node.inputs[0]].reshape(self.graph.value(node.output).shape)
                continue
            spec = get_op(step.call.op)
            launch = spec.gl_launch(step.call.problem, step.params)
            device = device_arrays(self.plan, step, spec, values)
            for k, name in enumerate(step.call.inputs):
                if not self.graph.value(name).is_const:
                    step.bound.update(k, device[k], launch.inputs[k])
            if times is not None:
                times.append(NodeTime(node.name, spec.name, step.bound.time()))
            values[node.output] = spec.from_device(step.call.problem, step.params, step.bound.run())
        return {name: values[name] if name in values else self._read(name, ()) for name in self.graph.outputs}

    # -- running -----------------------------------------------------------------------------------------

    def _check_feeds(self, feeds: Mapping[str, Any]) -> dict[str, np.ndarray]:
        names = [n for n, _ in self.inputs]
        unknown = sorted(set(feeds) - set(names))
        if unknown:
            raise ShapeError(f"unknown input(s) {unknown}; the model's inputs are {dict(self.inputs)}")
        missing = [n for n in names if n not in feeds]
        if missing:
            raise ShapeError(f"missing input(s) {missing}; the model's inputs are {dict(self.inputs)}")
        checked = {}
        for name, shape in self.inputs:
            array = np.asarray(feeds[name])
            if array.dtype.kind not in "fiu":
                raise ShapeError(f"input {name!r}: expected float32 data, got dtype {array.dtype}")
            if array.shape != shape:
                raise ShapeError(f"input {name!r}: expected shape {shape}, got {array.shape}")
            checked[name] = np.ascontiguousarray(array, dtype=np.float32)
        return checked

    def run(self, feeds: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Run the model once.

        Args:
            feeds: Input name -> array of the input's shape (float data; converted to float32).

        Returns:
            Output name -> float32 array.

        Raises:
            ShapeError: For an unknown or missing input name, a wrong shape or non-numeric data.
        """
        checked = self._check_feeds(feeds)
        if self.language != "wgsl":
            return self._run_glsl(checked)
        backend: Any = self.backend
        for name, array in checked.items():
            backend.write(self._buffers[self.memory.buffer_of[name]], array)
        backend.run(self._dispatches)
        return {name: self._read(name, shape) for name, shape in self.outputs}

    def _read(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        value = self.graph.value(name)
        if value.data is not None:  # an output that folded to a constant
            return value.data.copy()
        backend: Any = self.backend
        return np.asarray(backend.read(self._buffers[self.memory.buffer_of[name]], value.size)).reshape(shape)

    def profile(self, feeds: Mapping[str, Any]) -> list[NodeTime]:
        """Run once, then time each kernel alone (GPU timestamps where the device has them)."""
        checked = self._check_feeds(feeds)
        if self.language != "wgsl":
            times: list[NodeTime] = []
            self._run_glsl(checked, times)
            return times
        self.run(checked)
        backend: Any = self.backend
        return [NodeTime(s.node.name, s.call.op, backend.time(s.dispatch)) for s in self.steps]

    def summary(self, profile: Sequence[NodeTime] | None = None) -> str:
        """Return a table of the kernels: node, op, shape, params source, time (when profiled); then memory."""
        times = {t.node: t.seconds for t in profile or ()}
        rows = [("node", "op", "shape", "params", "ms")]
        for step in self.steps:
            spec = get_op(step.call.op)
            ms = f"{times[step.node.name] * 1e3:.3f}" if step.node.name in times else "-"
            rows.append((step.node.name, spec.name, spec.problem_key(step.call.problem), step.source, ms))
        widths = [max(len(r[i]) for r in rows) for i in range(5)]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        if times:
            lines.append(f"total kernel time: {sum(times.values()) * 1e3:.3f} ms")
        m = self.memory
        lines.append(
            f"{len(self.steps)} kernels on {self.device.slug} ({self.language}); activation memory planned "
            f"{m.planned_bytes / 2**20:.2f} MiB in {len(m.buffer_bytes)} buffers, "
            f"naive {m.naive_bytes / 2**20:.2f} MiB"
        )
        if self.layout_plan is not None:
            lp = self.layout_plan
            nhwc = sum(1 for v in lp.layouts.values() if v)
            lines.append(
                f"layouts: {len(lp.layouts)} regions ({nhwc} NHWC), {lp.conversions} conversion kernels, "
                f"{lp.views} free relayout views"
            )
        return "\n".join(lines)


def load(
    model: ModelSource,
    device: str | int = "auto",
    backend: str | None = None,
    db: TuningDB | str | os.PathLike[str] | None = None,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
) -> Session:
    """Load an ONNX model onto a device, ready to run.

    Args:
        model: A path, serialized bytes or an ``onnx.ModelProto``.
        device: A ``--device`` selector.
        backend: ``"wgsl"`` or ``"glsl"``; ``None`` takes the selected device's language.
        db: A tuning database or its directory (default: the configured one).
        input_shapes: Shapes for inputs with symbolic dims (a symbolic batch dim defaults to 1).

    Raises:
        GraphError: For a malformed model or unsupported nodes (all of them named at once).
        KernelforgeError: When the device or a kernel cannot be set up.
    """
    if backend is not None and backend not in ("wgsl", "glsl"):
        raise KernelforgeError(f"backend must be 'wgsl' or 'glsl', got {backend!r}")
    return Session(_split_graph(model, input_shapes), open_device(device, backend), _open_db(db))
