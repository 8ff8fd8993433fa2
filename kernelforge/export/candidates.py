"""Candidate configs a bundle ships per kernel, for a GPU that no target was tuned on (FORMAT.md, "Candidates").

Most users' GPUs are in no tuning database. For them a bundle carries, per distinct kernel of a WGSL plan, a few
configs that won somewhere: each database device's best record for that kernel, the op's seeds and the default.
``kernelforge.js`` times them on the user's GPU at load, on the plan's own buffers, and keeps the fastest (the
idea of cuDNN's benchmark mode, with the search space cut down to known winners).

A candidate only swaps the shader: it must read and write the very buffers of the plan's step, in the same axis
orders, with the same constant contents. Configs that would need other layouts or other weight packing are left
out, so a runtime switches pipelines between runs without touching any buffer.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import numpy as np

from kernelforge.db import Query, TuningDB
from kernelforge.devices import DeviceInfo
from kernelforge.errors import KernelforgeError
from kernelforge.graph.plan import Plan, Step
from kernelforge.graph.program import Program, check_layouts, device_arrays, step_kernel
from kernelforge.ops import get_op
from kernelforge.ops.spec import OpSpec, Params
from kernelforge.templates import kernel_hash

from .weights import Shaders

DEFAULT_CANDIDATES = 3
"""Configs timed per kernel, the plan's own included (``export --candidates``); see benchmarks/browser_select.py."""


def _same_bindings(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return len(a) == len(b) and all(
        x.dtype == y.dtype and x.shape == y.shape and np.array_equal(x, y) for x, y in zip(a, b, strict=True)
    )


class _Kernels:
    """The ``kernels`` table of one WGSL plan: each distinct (op, problem, params) once, with its candidates."""

    def __init__(
        self, plan: Plan, program: Program, info: DeviceInfo, db: TuningDB, shaders: Shaders, limit: int
    ) -> None:
        self.plan, self.program, self.info, self.db = plan, program, info, db
        self.shaders, self.limit = shaders, limit
        self.table: list[dict[str, Any]] = []
        self.index: dict[str, int | None] = {}

    def sources(self, spec: OpSpec[Any], step: Step) -> list[tuple[Params, str]]:
        """Every config worth timing, best-founded first: the default, each device's best record, the seeds."""
        problem, limits, language = step.call.problem, self.plan.limits, self.plan.language
        found = [(spec.default_params(problem, limits, language), "default")]
        query = Query.make(self.info, spec.name, problem, language, limits)
        found += [(dict(lookup.params), lookup.device) for lookup in self.db.best_per_device(query)]
        found += [(p, "seed") for p in spec.seed_params(problem, limits, language)]
        return found

    def candidate(self, spec: OpSpec[Any], step: Step, params: Params, want: list[np.ndarray]) -> dict[str, Any] | None:
        """Return the manifest entry of ``params`` on ``step``, or None when it would change the step's buffers."""
        other = dataclasses.replace(step, params=params)
        size = spec.subgroup_size(params)
        if size and size != self.program.subgroup_size:  # the device may lack subgroups, or have another size
            return None
        try:
            kernel = step_kernel(self.plan, other, spec, "web")
            other = dataclasses.replace(other, params=kernel.params)
            check_layouts(self.plan, other, spec)
            if not _same_bindings(device_arrays(self.plan, other, spec), want):
                return None
            launch = spec.launch(step.call.problem, kernel.params)
        except KernelforgeError:
            return None
        if any(not 1 <= n <= 65535 for n in launch.workgroups):
            return None
        return {
            "params": dict(kernel.params),
            "shader": kernel.source,  # its index in the shaders table once it is kept
            "workgroups": list(launch.workgroups),
            "uniforms": [int(u) for u in launch.uniforms],
        }

    def of(self, step: Step) -> int | None:
        """Return the step's row of the table (made on first use), or None when it has no candidate."""
        spec = get_op(step.call.op)
        key = json.dumps([spec.name, spec.problem_key(step.call.problem), step.params], sort_keys=True, default=str)
        if key in self.index:
            return self.index[key]
        want = device_arrays(self.plan, step, spec)
        seen = [dict(step.params)]
        entries: list[dict[str, Any]] = []
        for params, origin in self.sources(spec, step):
            try:
                clean = spec.validate_params(params, self.plan.language)
            except KernelforgeError:
                continue
            if clean in seen:
                continue
            seen.append(clean)
            entry = self.candidate(spec, step, clean, want)
            if entry is not None:
                entries.append({**entry, "from": origin})
        # seeds by shader size: a shorter text ships fewer bytes and compiles faster on every compiler (the most
        # unrolled seeds took SwiftShader ~30 s, which blocks every later compile of the page)
        entries.sort(key=lambda e: (e["from"] == "seed", len(e["shader"]) if e["from"] == "seed" else 0))
        entries = [{**e, "shader": self.shaders.add(e["shader"])} for e in entries[: self.limit - 1]]
        row = None
        if entries:
            row = len(self.table)
            self.table.append(
                {
                    "op": spec.name,
                    "shape": spec.problem_key(step.call.problem),
                    "template": kernel_hash(spec, self.plan.language),
                    "candidates": entries,
                }
            )
        self.index[key] = row
        return row


def wgsl_candidates(
    plan: Plan, program: Program, info: DeviceInfo, db: TuningDB, shaders: Shaders, limit: int
) -> tuple[list[dict[str, Any]], list[int | None]]:
    """Return a WGSL plan's kernel table and each step's row in it (None: nothing else fits that step).

    ``limit`` caps the configs timed per kernel, the plan's own included (so ``limit - 1`` candidates); 1 or
    less ships none.
    """
    if limit <= 1:
        return [], [None] * len(plan.steps)
    kernels = _Kernels(plan, program, info, db, shaders, limit)
    rows = [kernels.of(step) for step in plan.steps]
    return kernels.table, rows
