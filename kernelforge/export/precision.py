"""The model-level check of a bundle's f16 plans: the whole model, run with those f16 kernels, within a bound.

Each f16 config a tuner keeps is within its op's bound (``OpSpec.tolerance``) against the float32 reference, but
errors compound through a model. Before an export ships an f16 plan it runs the model on a local WebGPU device
that has ``shader-f16``, with f16 arithmetic in exactly the kernels the plan computes in f16 and float32 in the
rest, on random inputs (and the user's calibration inputs, ``--calibrate FILE.npz``), and compares every float
output with the numpy reference of the float32 graph. The plan ships only if each output's largest error stays
within :data:`MODEL_BOUND` of that output's largest magnitude; the export prints the measured errors either way.

Only the choice of kernels is the target's: tiles and workgroups are the local device's (a target's subgroup
kernels may not run here), and f16 rounding, not tiling, is what moves the results.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from kernelforge.db import TuningDB
from kernelforge.devices import sort_key
from kernelforge.errors import ExportError, KernelforgeError
from kernelforge.graph.build import build_program
from kernelforge.graph.dtypes import kind, numpy_dtype
from kernelforge.graph.edges import from_compute, to_compute
from kernelforge.graph.ir import Graph
from kernelforge.graph.plan import Plan, plan_graph
from kernelforge.graph.reference import run_graph

MODEL_BOUND = 1e-2
"""How far an f16 plan's outputs may be from the float32 reference, relative to each output's largest magnitude:
the per-kernel bound of f16 GEMMs (``F16_TOLERANCE``), for the model as a whole."""
RANDOM_INPUTS = 4
"""Standard-normal inputs (seeds 0..3) every check runs, besides any calibration inputs."""


@dataclass(frozen=True)
class PrecisionCheck:
    """The model-level check of one f16 plan (one target of one variant)."""

    target: str
    f16_kernels: int
    kernels: int
    device: str
    """The local device the model ran on, or ``""`` where none with ``shader-f16`` was found."""
    inputs: int
    errors: tuple[tuple[str, float], ...]
    """Each float output's largest error relative to its largest reference magnitude."""
    bound: float = MODEL_BOUND
    language: str = "wgsl"
    """``glsl``: the check of a WebGL2 plan's half-float textures (which need no feature, so no second plan)."""

    @property
    def passed(self) -> bool:
        """Whether the plan ships: it was run, and every output is within the bound."""
        return bool(self.device) and all(e <= self.bound for _, e in self.errors)

    def line(self) -> str:
        """One line for the export's summary."""
        glsl = self.language == "glsl"
        head = f"{self.target}: {self.f16_kernels} of {self.kernels} kernels {'draw halves' if glsl else 'in f16'}"
        lost = "float32 textures shipped" if glsl else "f16 plan left out"
        if not self.device:
            found = "no local GLSL device" if glsl else "no local WebGPU device has shader-f16"
            return f"{head}: not checked ({found}), {lost}"
        errors = ", ".join(f"{name} {e:.2e}" for name, e in self.errors) or "no float outputs"
        verdict = "shipped" if self.passed else ("left out, " + lost if glsl else "left out")
        return f"{head}; error on {self.device}, {self.inputs} inputs: {errors} (bound {self.bound:g}): {verdict}"


def f16_nodes(plan: Plan) -> dict[str, str]:
    """Return node name -> ``f16`` for every step of the plan whose config computes in f16."""
    return {s.node.name: "f16" for s in plan.steps if s.params.get("precision")}


def calibration_feeds(path: str | os.PathLike[str], graph: Graph) -> list[dict[str, np.ndarray]]:
    """Read ``--calibrate FILE.npz``: per model input, one sample of its shape or ``[n, *shape]`` for n samples.

    Raises:
        ExportError: Naming the file and the input, for an unreadable file, an unknown or missing input, a wrong
            shape, or inputs of different sample counts.
    """
    try:
        with np.load(Path(path), allow_pickle=False) as data:
            arrays = {name: np.asarray(data[name]) for name in data.files}
    except (OSError, ValueError) as exc:
        raise ExportError(f"--calibrate {path}: cannot read it as a .npz file of arrays: {exc}") from None
    inputs = {name: graph.value(name).shape for name in graph.inputs}
    unknown = sorted(set(arrays) - set(inputs))
    missing = sorted(set(inputs) - set(arrays))
    if unknown or missing:
        raise ExportError(
            f"--calibrate {path}: "
            + "; ".join(
                [f"unknown input(s) {unknown}"] * bool(unknown) + [f"missing input(s) {missing}"] * bool(missing)
            )
            + f"; the model's inputs are {inputs}"
        )
    counts = {}
    for name, shape in inputs.items():
        a = arrays[name]
        if a.shape == shape:
            arrays[name] = a[None]
        elif a.shape[1:] != shape or not a.shape[0]:
            raise ExportError(
                f"--calibrate {path}: input {name!r} has shape {a.shape}; expected {shape} or [n, *{shape}]"
            )
        counts[name] = len(arrays[name])
    if len(set(counts.values())) > 1:
        raise ExportError(f"--calibrate {path}: the inputs have different sample counts {counts}")
    n = next(iter(counts.values()), 0)
    return [{name: arrays[name][i] for name in inputs} for i in range(n)]


def random_feeds(graph: Graph, count: int = RANDOM_INPUTS) -> list[dict[str, np.ndarray]]:
    """Return ``count`` feeds: standard-normal floats, 0/1 for integer inputs (valid ids, positions and masks)."""
    feeds = []
    for seed in range(count):
        rng = np.random.default_rng(seed)
        feed = {}
        for name in graph.inputs:
            shape, dtype = graph.value(name).shape, numpy_dtype(graph.dtype(name))
            feed[name] = (
                rng.standard_normal(shape).astype(dtype)
                if kind(dtype) == "f"
                else rng.integers(0, 2, shape).astype(dtype)
            )
        feeds.append(feed)
    return feeds


class Checker:
    """Runs f16 plans' checks on one local device, opened when first needed."""

    def __init__(self, db: TuningDB, calibrate: str | os.PathLike[str] | None) -> None:
        self.db, self.calibrate = db, calibrate
        self.bound = MODEL_BOUND  # read here, so that a test may lower it for one export
        self._backends: dict[str, Any] = {}
        self._done: dict[tuple[str, int, tuple[str, ...]], PrecisionCheck] = {}

    def _device(self, language: str) -> Any:
        """The first device of ``language`` (in ``--device auto`` order; WGSL: with ``shader-f16``), or None."""
        if language not in self._backends:
            self._backends[language] = None
            from kernelforge.runtime import list_devices, open_device

            for info in sorted((d for d in list_devices() if d.language == language), key=sort_key):
                try:
                    backend = open_device(info)
                except KernelforgeError:
                    continue
                if backend.limits.f16 or language == "glsl":
                    self._backends[language] = backend
                    break
        return self._backends[language]

    def check(self, target: str, graph: Graph, plan: Plan, language: str = "wgsl") -> PrecisionCheck:
        """Run ``graph`` with ``plan``'s f16 kernels in f16 on a local device; compare with the float32 reference.

        Args:
            target: The plan's target id, for the report.
            graph: The prepared graph, as planned (unchanged: planned again here on a copy).
            plan: The target's f16 plan (GLSL: its plan with half-float kernels).
            language: The plan's language, and so the local device's.
        """
        nodes = f16_nodes(plan)
        kernels = len(plan.steps)
        key = (language, id(graph), tuple(sorted(nodes)))
        if key in self._done:  # another target with the same f16 kernels: the same run
            return replace(self._done[key], target=target, kernels=kernels)
        self._done[key] = found = self._run(target, graph, nodes, kernels, language)
        return found

    def _run(self, target: str, graph: Graph, nodes: dict[str, str], kernels: int, language: str) -> PrecisionCheck:
        backend = self._device(language)
        if backend is None:
            return PrecisionCheck(target, len(nodes), kernels, "", 0, (), self.bound, language)
        from kernelforge.runtime.executor import Executable

        feeds = random_feeds(graph) + (calibration_feeds(self.calibrate, graph) if self.calibrate else [])
        local = plan_graph(copy.deepcopy(graph), backend.info, language, backend.limits, self.db, nodes)
        executable = Executable(backend, build_program(local, "native"))
        worst: dict[str, tuple[float, float]] = {}  # output -> (largest error, largest magnitude)
        for feed in feeds:
            reference = run_graph(graph, feed)
            got = executable.run({n: to_compute(n, feed[n], graph.dtype(n)) for n in graph.inputs})
            for name in graph.outputs:
                if kind(numpy_dtype(graph.dtype(name))) != "f":
                    continue
                ref = np.asarray(reference[name], np.float64)
                out = np.asarray(from_compute(got[name], graph.dtype(name)), np.float64)
                err, mag = worst.get(name, (0.0, 0.0))
                diff = np.abs(out - ref)
                err = max(err, float(diff.max(initial=0.0)) if np.isfinite(out).all() else float("inf"))
                worst[name] = (err, max(mag, float(np.abs(ref).max(initial=0.0))))
        errors = tuple((name, err / mag if mag else err) for name, (err, mag) in worst.items())
        return PrecisionCheck(target, len(nodes), kernels, backend.info.slug, len(feeds), errors, self.bound, language)
