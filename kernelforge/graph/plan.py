"""Execution plans: which kernel, params and layouts each node of a prepared graph runs with, on one device.

Planning needs no open device, only its description, limits and the tuning database. A plan then becomes
one checked :class:`~kernelforge.graph.program.Program`, which a native session runs and the exporter writes
down.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from kernelforge.db import Lookup, TuningDB
from kernelforge.devices import DeviceInfo
from kernelforge.errors import KernelforgeError
from kernelforge.graph.ir import Graph, Node, Value
from kernelforge.graph.layout import FLEXIBLE_KERNELS, LayoutPlan, assign_layouts, physical_shape
from kernelforge.graph.lower import Lowered, lower, lower_node
from kernelforge.ops import get_op
from kernelforge.ops.spec import Limits, Params

PRECISIONS = ("auto", "f32", "f16")
"""A model's arithmetic: ``auto`` as each kernel's record says (f16 only where it won within its op's bound), ``f32``
everywhere, or ``f16`` in every kernel that has an f16 variant (the device must have ``shader-f16``)."""


@dataclass
class Step:
    """One node as it runs: its kernel call, params and where they came from; runtime handles per backend."""

    node: Node
    call: Lowered
    params: Params
    source: str


@dataclass
class Plan:
    """The kernels of a graph on one device, in execution order (see :func:`plan_graph`)."""

    graph: Graph
    language: str
    limits: Limits
    steps: list[Step]
    layout_plan: LayoutPlan | None = None
    sources: dict[str, int] = field(default_factory=dict)
    """How many kernels took their params from each lookup source (tuned, nearest, vendor, class, default)."""


def _physical(graph: Graph, node: Node, call: Lowered) -> Lowered:
    """Return the kernel call on the buffers' shapes for layout-following ops (elementwise, concat, slice, ...)."""
    out = graph.value(node.output)
    if node.op == "transpose":
        src = graph.value(node.inputs[0])
        rank = len(src.shape)
        inv_in = np.argsort(src.layout or tuple(range(rank)))
        perm = tuple(node.attrs["perm"])
        lo = out.layout or tuple(range(rank))
        phys = tuple(int(inv_in[perm[lo[i]]]) for i in range(rank))
        return lower("transpose", [physical_shape(src)], {"perm": phys}, node.inputs)
    if out.layout is None:
        return call
    if node.op == "concat":
        parts: Sequence[tuple[int, ...] | None] = [physical_shape(graph.value(i)) for i in node.inputs]
        return lower("concat", parts, {"axis": out.layout.index(int(node.attrs["axis"]))}, node.inputs)
    if node.op == "slice":
        axes = node.attrs.get("axes") or range(len(node.attrs["starts"]))
        physical = tuple(out.layout.index(int(a) % len(out.shape)) for a in axes)
        return lower(
            "slice", [physical_shape(graph.value(node.inputs[0]))], {**node.attrs, "axes": physical}, node.inputs
        )
    if node.op == "elementwise":
        shapes = [_const_physical_shape(graph.value(i), out.layout) for i in node.inputs]
        return lower("elementwise", shapes, node.attrs, node.inputs)
    return call


def _const_physical_shape(value: Value, layout: tuple[int, ...]) -> tuple[int, ...]:
    if not value.is_const:
        return physical_shape(value)
    shape = (1,) * (len(layout) - len(value.shape)) + value.shape
    return tuple(shape[a] for a in layout)


class _Planner:
    def __init__(
        self, info: DeviceInfo, language: str, limits: Limits, db: TuningDB, precision: str | Mapping[str, str]
    ) -> None:
        self.info, self.language, self.limits, self.db = info, language, limits, db
        self.precision = precision
        self.calls: dict[str, Lowered | None] = {}

    def lookup(self, call: Lowered, node: str) -> Lookup:
        found = self.db.params_for(self.info, call.op, call.problem, self.language, self.limits)
        mode = self.precision if isinstance(self.precision, str) else self.precision.get(node, "f32")
        spec = get_op(call.op)
        if mode == "auto" or all(p.name != "precision" for p in spec.params(self.language)):
            return found
        want = int(mode == "f16")
        if found.params.get("precision", 0) == want:
            return found
        params = {**found.params, "precision": want}
        if spec.constraints(call.problem, params, self.limits, self.language) is not None:
            return found  # this config has no such twin (f16 beyond a limit): it keeps its record's arithmetic
        return Lookup(params, f"{found.source}, {mode}")

    def relayout(self, node: Node, params: Params, layout: int) -> Params:
        call = self.calls[node.name]
        assert call is not None
        spec, problem, limits = get_op(call.op), call.problem, self.limits
        default = spec.default_params(problem, limits, self.language)
        for candidate in ({**params, "layout": layout}, {**default, "layout": layout}):
            if spec.constraints(problem, candidate, limits, self.language) is None:
                return candidate
        return params  # this kernel cannot switch: conversions around it keep the graph correct

    def plan(self, graph: Graph) -> Plan:
        calls = self.calls = {n.name: lower_node(graph, n) for n in graph.nodes}
        chosen: dict[str, Lookup] = {}
        params: dict[str, Params] = {}
        for name, call in calls.items():
            if call is not None and call.op in FLEXIBLE_KERNELS:
                chosen[name] = self.lookup(call, name)
                params[name] = dict(chosen[name].params)
        layout_plan = None
        if self.language == "wgsl":
            layout_plan = assign_layouts(graph, calls, params, self.relayout)
        steps = []
        sources: dict[str, int] = {}
        for node in graph.nodes:
            # lowered again: the layout pass rewired inputs to converted tensors and inserted conversion nodes
            call = lower_node(graph, node)
            if call is None:
                continue
            call = _physical(graph, node, call) if self.language == "wgsl" else call
            lookup = chosen.get(node.name) or self.lookup(call, node.name)
            step_params = params.get(node.name, dict(lookup.params))
            source = lookup.source if step_params == lookup.params else f"{lookup.source}, relayout"
            kind = lookup.source.split(",")[0]  # "tuned, f16" counts as tuned
            sources[kind] = sources.get(kind, 0) + 1
            steps.append(Step(node, call, step_params, source))
        return Plan(graph, self.language, self.limits, steps, layout_plan, sources)


def plan_graph(
    graph: Graph,
    info: DeviceInfo,
    language: str,
    limits: Limits,
    db: TuningDB,
    precision: str | Mapping[str, str] = "auto",
) -> Plan:
    """Choose each node's kernel params (tuning database, else defaults) and, for WGSL, tensor layouts.

    The graph is changed in place (layout conversions are inserted), so plan a fresh copy per device.

    Args:
        graph: A prepared graph (after the passes and wide-GEMM splitting).
        info: The device the plan is for (an opened one, or one described by a database file).
        language: ``wgsl`` or ``glsl``.
        limits: Limits every chosen config must respect.
        db: Where tuned params are looked up.
        precision: One of :data:`PRECISIONS` for every kernel, or node name -> ``f32``/``f16`` (nodes not named:
            ``f32``). A kernel with the ``precision`` tunable takes the asked arithmetic in its looked-up config
            (source ``"tuned, f16"``, say) where the limits allow it; ``f16`` needs ``limits.f16``.

    Raises:
        KernelforgeError: For another precision, or ``f16`` on a device without ``shader-f16``.
    """
    modes = [precision] if isinstance(precision, str) else list(precision.values())
    bad = [m for m in modes if m not in PRECISIONS]
    if bad:
        raise KernelforgeError(f"precision must be one of {', '.join(PRECISIONS)}, got {bad[0]!r}")
    if "f16" in modes and language == "wgsl" and not limits.f16:
        raise KernelforgeError(
            f"precision 'f16' needs the shader-f16 feature, which {info.slug} ({language}) does not have"
        )
    return _Planner(info, language, limits, db, precision).plan(graph)
