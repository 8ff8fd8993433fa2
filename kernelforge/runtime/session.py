"""Sessions: an ONNX model loaded onto one device, its kernels compiled once and run on demand.

``load`` imports the model and runs the graph passes, plans it for the device (tuned params, layouts), builds
its checked :class:`~kernelforge.graph.program.Program` and loads that on the device: pipelines compiled,
weights uploaded, every step bound. ``run`` then only writes the inputs, replays the steps in one submission
and reads the outputs back. Tensors stay on the device between kernels in both languages: WGSL in planned,
shared buffers, GLSL in textures chained by relayout passes.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from kernelforge import _config
from kernelforge.db import TuningDB
from kernelforge.devices import DeviceInfo
from kernelforge.errors import KernelforgeError, ShapeError
from kernelforge.graph.build import build_program
from kernelforge.graph.dtypes import kind, numpy_dtype
from kernelforge.graph.edges import EdgeError, from_compute, to_compute
from kernelforge.graph.ir import Graph
from kernelforge.graph.layout import LayoutPlan
from kernelforge.graph.memory import MemoryPlan, plan_memory
from kernelforge.graph.plan import plan_graph
from kernelforge.graph.prepare import ModelSource, prepare_graph
from kernelforge.ops import get_op
from kernelforge.runtime import open_device
from kernelforge.runtime.backends.base import Backend
from kernelforge.runtime.executor import Executable


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


class Session:
    """A model loaded on one device: see :func:`load`."""

    def __init__(self, graph: Graph, backend: Backend[Any, Any, Any], db: TuningDB, precision: str = "auto") -> None:
        started = time.perf_counter()
        self.graph = graph
        self.backend = backend
        self.device: DeviceInfo = backend.info
        self.language: str = backend.language
        self.inputs = tuple((n, graph.value(n).shape) for n in graph.inputs)
        self.outputs = tuple((n, graph.value(n).shape) for n in graph.outputs)
        self.dtypes = {n: graph.dtype(n) for n in (*graph.inputs, *graph.outputs)}
        """Graph input and output name -> the dtype it is fed or read as (kernels compute in float32)."""
        self.plan = plan_graph(graph, backend.info, backend.language, backend.limits, db, precision)
        self.layout_plan: LayoutPlan | None = self.plan.layout_plan
        self.steps = self.plan.steps
        self.memory: MemoryPlan = plan_memory(graph)
        self.program = build_program(self.plan, "native")
        self._executable = Executable(backend, self.program)
        self.load_time_s = time.perf_counter() - started

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
            if array.shape != shape:
                raise ShapeError(f"input {name!r}: expected shape {shape}, got {array.shape}")
            try:
                checked[name] = to_compute(name, array, self.graph.dtype(name))
            except EdgeError as exc:
                raise ShapeError(str(exc)) from None
        return checked

    def random_feeds(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Return a feed for every input: standard normal floats, or 0/1 for integer and bool inputs.

        0 and 1 are valid token ids, positions and mask values for any model, so a random run never indexes
        out of a table.
        """
        feeds = {}
        for name, shape in self.inputs:
            dtype = numpy_dtype(self.dtypes[name])
            if kind(dtype) == "f":
                feeds[name] = rng.standard_normal(shape).astype(dtype)
            else:
                feeds[name] = rng.integers(0, 2, shape).astype(dtype)
        return feeds

    def run(self, feeds: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Run the model once.

        Args:
            feeds: Input name -> array of the input's shape and dtype (see :attr:`dtypes`): float data for a
                float input (converted to float32), integers within 2**24 for an integer or bool input.

        Returns:
            Output name -> array of the output's dtype (float32 unless the model declares another).

        Raises:
            ShapeError: For an unknown or missing input name, a wrong shape, data of the wrong kind, or an
                integer beyond what float32 compute holds exactly.
        """
        results = self._executable.run(self._check_feeds(feeds))
        return {name: from_compute(data, self.graph.dtype(name)) for name, data in results.items()}

    def profile(self, feeds: Mapping[str, Any]) -> list[NodeTime]:
        """Run once, then time each of the model's kernels alone (GPU timestamps where the device has them).

        GLSL relayout passes run in :meth:`run` but are not the model's kernels: they are not listed.
        """
        self.run(feeds)
        kernels = {s.node.name for s in self.steps}
        return [
            NodeTime(step.node, step.op, self._executable.time(i))
            for i, step in enumerate(self.program.steps)
            if step.node in kernels
        ]

    def summary(self, profile: Sequence[NodeTime] | None = None) -> str:
        """Return a table of the kernels: node, op, shape, params source, time (when profiled); then more.

        After the table: the input shapes (symbolic dims as ``input_shapes`` fixed them at load), memory, layouts.
        """
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
        edges = [
            f"{n} {list(shape)}" + ("" if self.dtypes[n] == "float32" else f" {self.dtypes[n]}")
            for n, shape in self.inputs
        ]
        lines.append(f"inputs (static, as loaded): {', '.join(edges)}")
        lines.append(
            f"{len(self.steps)} kernels on {self.device.slug} ({self.language}); activation memory planned "
            f"{m.planned_bytes / 2**20:.2f} MiB in {len(m.buffer_bytes)} buffers, "
            f"naive {m.naive_bytes / 2**20:.2f} MiB; constants {self.program.constant_bytes / 2**20:.2f} MiB"
            + (f"; activation textures {self.program.texture_bytes / 2**20:.2f} MiB" if self.language == "glsl" else "")
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
    weights: str = "fp32",
    precision: str = "auto",
    calibration: Sequence[Mapping[str, np.ndarray]] = (),
) -> Session:
    """Load an ONNX model onto a device, ready to run.

    Args:
        model: A path, serialized bytes or an ``onnx.ModelProto``.
        device: A ``--device`` selector.
        backend: ``"wgsl"`` or ``"glsl"``; ``None`` takes the selected device's language.
        db: A tuning database or its directory (default: the configured one).
        input_shapes: Shapes for inputs with symbolic dims (a symbolic leading dim defaults to 1; any other must
            be given, and the error names it). The session's ``inputs`` and ``summary()`` show the fixed shapes.
        weights: ``"fp32"``, or ``"int8"``/``"int4"``/``"fp16"`` to quantize the GEMM and conv weights as
            ``export --weights int8``/``int4``/``fp16`` does (the kernels read the integers or halves): what such a
            bundle computes, natively.
        precision: ``auto``: each kernel's tuned config as recorded (f16 arithmetic only where the tuner measured
            it faster and within its op's accuracy bound); ``f32``: float32 arithmetic everywhere; ``f16``: f16
            in every kernel that has it (the device must have ``shader-f16``). ``summary()`` shows which kernels
            changed (params source ``tuned, f16``, say).
        calibration: With ``weights="int4"``: feeds (input name -> array) to round the weights against, as
            ``export --weights int4 --calibrate`` does (GPTQ and bias correction; far closer to the float model
            than rounding each weight to its nearest level, which is what happens without them).

    Raises:
        GraphError: For a malformed model or unsupported nodes (all of them named at once).
        KernelforgeError: When the device or a kernel cannot be set up, or for another ``weights``.
    """
    if backend is not None and backend not in ("wgsl", "glsl"):
        raise KernelforgeError(f"backend must be 'wgsl' or 'glsl', got {backend!r}")
    if weights not in ("fp32", "fp16", "int8", "int4"):
        raise KernelforgeError(f"weights must be 'fp32', 'fp16', 'int8' or 'int4', got {weights!r}")
    if calibration and weights != "int4":
        raise KernelforgeError(f"calibration feeds round int4 weights only; weights is {weights!r}")
    graph = prepare_graph(model, input_shapes, weights, calibration)
    return Session(graph, open_device(device, backend), _open_db(db), precision)
