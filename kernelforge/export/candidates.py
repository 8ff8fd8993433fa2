"""Candidate configs a bundle ships per kernel, for a GPU that no target was tuned on (FORMAT.md, "Candidates").

Most users' GPUs are in no tuning database. For them a bundle carries, per distinct kernel of a WGSL plan, a few
configs that won somewhere: each database device's best record for that kernel, the op's seeds and the default.
``kernelforge.js`` times them on the user's GPU at load, on the plan's own buffers, and keeps the fastest (the
idea of cuDNN's benchmark mode, with the search space cut down to known winners).

A candidate only swaps the shader: it must read and write the very buffers of the plan's step, in the same axis
orders, with the same constant contents, so a runtime switches pipelines between runs without touching any buffer.
A config is therefore offered in the step's buffer layouts (:data:`BUFFER_PARAMS`): the layout is the plan's
choice, made once per region of the graph, and the rest of a config (tiles, algorithm, vector widths) is what one
GPU's winner has to teach another. Configs that still need other buffers are left out.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from typing import Any

import numpy as np

from kernelforge.db import Query, TuningDB
from kernelforge.devices import DeviceInfo
from kernelforge.errors import KernelforgeError
from kernelforge.graph.plan import Plan, Step
from kernelforge.graph.program import Program, check_layouts, checked_kernel, device_arrays
from kernelforge.ops import get_op
from kernelforge.ops.spec import SUBGROUP_SIZES, OpSpec, Params
from kernelforge.templates import kernel_hash

from .weights import Shaders, compact

BUFFER_PARAMS = ("layout", "w_layout")
"""Params that decide how a kernel lays out buffers it shares with the plan: activations (the layout pass assigns
them per region) and conv weights. A candidate takes the step's values of them."""

DEFAULT_CANDIDATES = 2
"""``export --candidates K``: K - 1 candidates without subgroups and K - 1 per subgroup size, at most. Within the
byte budget, 3 gives fewer kernels more configs each (5 kernels of MobileNetV2- and ResNet-18-shaped bundles, of
15), and their selections on SwiftShader recovered 42-43% against 97-106% at 2 (benchmarks/browser_select.py,
CHANGELOG)."""

BYTE_BUDGET = 0.5
"""Candidates may add at most this fraction of the bundle's shader bytes to its manifest (their new shader texts
and their entries). The bundle's costliest kernels (FLOPs times the steps running them) get theirs first, so what
is left out is where selection would win least."""


def _same_bindings(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return len(a) == len(b) and all(
        x.dtype == y.dtype and x.shape == y.shape and np.array_equal(x, y) for x, y in zip(a, b, strict=True)
    )


def _probes(plan: Plan, step: Step) -> dict[str, np.ndarray]:
    """Distinct values for each constant input: a kernel's conversion of them is then told apart from another's.

    A step's own constants may not tell (a zero bias reads alike in any layout), and a row of the table serves
    every step of the same kernel, whatever its weights. Quantized weights keep their own values: a kernel that
    reads the integers takes only values its qparams produce.
    """
    graph = plan.graph
    # so do weights the node reads as int4 or float16 (marked on the node, not the value): probes are no such values
    own = {step.node.inputs[1]} if step.node.attrs.get("weight_quant") and len(step.node.inputs) > 1 else set()
    consts = [n for n in step.call.inputs if graph.value(n).is_const and graph.value(n).quant is None and n not in own]
    return {n: np.arange(np.prod(graph.value(n).shape), dtype=np.float32).reshape(graph.value(n).shape) for n in consts}


@dataclasses.dataclass(frozen=True)
class _Want:
    """A step's device inputs as its own config converts them: its constants, and the probes (if they apply)."""

    arrays: list[np.ndarray]
    probes: dict[str, np.ndarray]
    probed: list[np.ndarray] | None


class _Kernels:
    """The ``kernels`` table of one WGSL plan: each distinct (op, problem, params, shader) once, with its candidates."""

    def __init__(self, plan: Plan, program: Program, info: DeviceInfo, db: TuningDB, limit: int) -> None:
        self.plan, self.program, self.info, self.db, self.limit = plan, program, info, db, limit
        self.table: list[dict[str, Any]] = []
        self.index: dict[str, int | None] = {}

    def sources(self, spec: OpSpec[Any], step: Step) -> list[tuple[Params, str]]:
        """Every config worth timing, best-founded first: the default, each device's best record, the seeds.

        Configs that assume subgroups of S lanes are offered too (for GPUs of that fixed size): the records of
        devices of S lanes, and the op's seeds for S, for every S it has seeds for.
        """
        problem, limits, language = step.call.problem, self.plan.limits, self.plan.language
        found = [(spec.default_params(problem, limits, language), "default")]
        query = Query.make(self.info, spec.name, problem, language, limits)
        with warnings.catch_warnings():  # a corrupt file is named once, by the export's report
            warnings.simplefilter("ignore")
            found += [(dict(lookup.params), lookup.device) for lookup in self.db.best_per_device(query, True)]
        sizes = (self.program.subgroup_size,) if self.program.subgroup_size else SUBGROUP_SIZES
        for size in (0, *sizes):
            seeds = spec.seed_params(problem, dataclasses.replace(limits, subgroup_size=size), language)
            found += [(p, "seed") for p in seeds if spec.subgroup_size(p) == size]
        return found

    def candidate(self, spec: OpSpec[Any], step: Step, params: Params, want: _Want) -> dict[str, Any] | None:
        """Return the manifest entry of ``params`` on ``step``, or None when it would change the step's buffers."""
        other = dataclasses.replace(step, params=params)
        size = spec.subgroup_size(params)
        if size and self.program.subgroup_size not in (0, size):  # the plan runs on GPUs of its size only
            return None
        try:
            limits = dataclasses.replace(self.plan.limits, subgroup_size=size or self.plan.limits.subgroup_size)
            kernel = checked_kernel(spec, step.call.problem, params, limits, self.plan.language, "web", step.node.name)
            other = dataclasses.replace(other, params=kernel.params)
            check_layouts(self.plan, other, spec)
            if not _same_bindings(device_arrays(self.plan, other, spec), want.arrays):
                return None
            if want.probed is not None and not _same_bindings(
                device_arrays(self.plan, other, spec, want.probes), want.probed
            ):
                return None
            launch = spec.launch(step.call.problem, kernel.params)
        except (KernelforgeError, ValueError):
            return None
        if any(not 1 <= n <= 65535 for n in launch.workgroups):
            return None
        return {
            "params": dict(kernel.params),
            "shader": kernel.source,  # its index in the shaders table once it is kept
            "workgroups": list(launch.workgroups),
            "uniforms": [int(u) for u in launch.uniforms],
            **({"subgroup_size": size} if size else {}),
        }

    def keep(self, entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Return at most ``limit - 1`` entries without subgroups and as many for each subgroup size, best first.

        A GPU of fixed S-lane subgroups times both sets, others the first only. Records and the default come
        first, then the seeds by shader size: a shorter text ships fewer bytes and compiles faster on every
        compiler (the most unrolled seeds took SwiftShader ~30 s, which holds up every later compile of the page).
        """

        def rank(e: dict[str, Any]) -> tuple[bool, int]:
            seed = e["from"] == "seed"
            return (seed, len(e["shader"]) if seed else 0)

        kept: list[dict[str, Any]] = []
        for size in sorted({e.get("subgroup_size", 0) for e in entries}):
            kept += sorted((e for e in entries if e.get("subgroup_size", 0) == size), key=rank)[: self.limit - 1]
        return sorted(kept, key=entries.index)

    def of(self, step: Step, shader: int) -> int | None:
        """Return the step's row of the table (made on first use), or None when it has no candidate.

        Steps share a row when they run the same shader (``shader``, its index in the program) on the same problem
        with the same params.
        """
        spec = get_op(step.call.op)
        key = json.dumps(
            [spec.name, spec.problem_key(step.call.problem), step.params, shader], sort_keys=True, default=str
        )
        if key in self.index:
            row = self.index[key]
            if row is not None:
                self.table[row]["cost"] += spec.flops(step.call.problem)
                self.table[row]["steps"] += 1
            return row
        probes = _probes(self.plan, step)
        try:
            probed: list[np.ndarray] | None = device_arrays(self.plan, step, spec, probes)
        except (KernelforgeError, ValueError):  # constants a kernel reads as integers take only their own values
            probed = None
        want = _Want(device_arrays(self.plan, step, spec), probes, probed)
        seen = [spec.validate_params(step.params, self.plan.language)]
        entries: list[dict[str, Any]] = []
        for params, origin in self.sources(spec, step):
            fixed = {k: step.params[k] for k in BUFFER_PARAMS if k in params and k in step.params}
            try:
                clean = spec.validate_params({**params, **fixed}, self.plan.language)
            except KernelforgeError:
                continue
            if clean in seen:
                continue
            seen.append(clean)
            entry = self.candidate(spec, step, clean, want)
            if entry is not None:
                entries.append({**entry, "from": origin})
        entries = self.keep(entries)
        row = None
        if entries:
            row = len(self.table)
            self.table.append(
                {
                    "op": spec.name,
                    "shape": spec.problem_key(step.call.problem),
                    "template": kernel_hash(spec, self.plan.language),
                    "candidates": entries,
                    "cost": spec.flops(step.call.problem),
                    "steps": 1,
                }
            )
        self.index[key] = row
        return row


@dataclasses.dataclass(frozen=True)
class Proposal:
    """A WGSL plan's candidates before the bundle's byte budget is spent.

    Each row is a ``kernels`` table row whose candidates still hold their shader texts, with its ``cost`` (FLOPs
    of one run, over the steps that use it) and ``steps`` (how many use it).
    """

    rows: list[dict[str, Any]]
    steps: list[int | None]
    """Each step's row (None: nothing else fits that step)."""


def wgsl_candidates(plan: Plan, program: Program, info: DeviceInfo, db: TuningDB, limit: int) -> Proposal:
    """Return the candidates of a WGSL plan's kernels, for :func:`allocate`.

    ``limit`` caps the configs timed per kernel, the plan's own included (so ``limit - 1`` candidates); 1 or
    less proposes none.
    """
    if limit <= 1:
        return Proposal([], [None] * len(plan.steps))
    kernels = _Kernels(plan, program, info, db, limit)
    rows = [kernels.of(step, ps.shader) for step, ps in zip(plan.steps, program.steps, strict=True)]
    return Proposal(kernels.table, rows)


def _entry_bytes(entry: dict[str, Any]) -> int:
    return len(json.dumps({k: v for k, v in entry.items() if k != "shader"}, separators=(",", ":"))) + 16


def allocate(
    proposals: list[Proposal], shaders: Shaders, budget: float = BYTE_BUDGET
) -> list[tuple[list[dict[str, Any]], list[int | None]]]:
    """Keep the candidates that fit ``budget`` times the shader bytes in ``shaders``; return each plan's table.

    Rows go costliest first (across every plan of the bundle), each row's candidates in their order; a candidate
    that does not fit is skipped, a later smaller one may still fit. Shader texts already in the bundle cost only
    the entry. Returns, per proposal, its ``kernels`` table (shader texts now indices into ``shaders``) and each
    step's row in it.
    """
    left = budget * shaders.size
    order = sorted(
        ((p, r) for p, prop in enumerate(proposals) for r in range(len(prop.rows))),
        key=lambda pr: -proposals[pr[0]].rows[pr[1]]["cost"],
    )
    kept: dict[tuple[int, int], list[dict[str, Any]]] = {}
    shipped: set[str] = set()
    for p, r in order:
        row = proposals[p].rows[r]
        # the row's own members, and each step's ``"kernel":i``
        header = len(json.dumps({k: row[k] for k in ("op", "shape", "template")})) + 24 + 16 * row["steps"]
        for entry in row["candidates"]:
            text = compact(entry["shader"])
            size = _entry_bytes(entry) + (0 if text in shipped else shaders.new_bytes(text))
            size += 0 if (p, r) in kept else header
            if size <= left:
                left -= size
                shipped.add(text)
                kept.setdefault((p, r), []).append(entry)
    results = []
    for p, prop in enumerate(proposals):
        table: list[dict[str, Any]] = []
        index: dict[int, int] = {}
        for r, row in enumerate(prop.rows):
            if (p, r) in kept:
                index[r] = len(table)
                entries = [{**e, "shader": shaders.add(e["shader"])} for e in kept[(p, r)]]
                table.append({**{k: row[k] for k in ("op", "shape", "template")}, "candidates": entries})
        results.append((table, [None if r is None else index.get(r) for r in prop.steps]))
    return results
