"""Execution plans: which kernel, params and layouts each node of a prepared graph runs with, on one device.

Planning needs no open device, only its description, limits and the tuning database, so sessions (which
then compile and bind) and the browser exporter (which writes the plan down) share it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kernelforge.ops import get_op
from kernelforge.ops._spec import Limits, OpSpec, Params
from kernelforge.ops.concat import ConcatProblem
from kernelforge.ops.eltwise import EltwiseProblem
from kernelforge.ops.transpose import TransposeProblem
from kernelforge.runtime.devices import DeviceInfo
from kernelforge.runtime.graph import Graph, GraphError, Node, Value
from kernelforge.runtime.layout import FLEXIBLE_KERNELS, LayoutPlan, assign_layouts, physical_shape
from kernelforge.runtime.lower import Lowered, lower_node
from kernelforge.templates import kernel_hash
from kernelforge.tuner.db import Lookup, Query, TuningDB


@dataclass
class Step:
    """One node as it runs: its kernel call, params and where they came from; runtime handles per backend."""

    node: Node
    call: Lowered
    params: Params
    source: str
    dispatch: Any = None
    bound: Any = None


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
    """Return the kernel call on the buffers' shapes for layout-following ops (elementwise, concat, relayouts)."""
    out = graph.value(node.output)
    if node.op == "transpose":
        src = graph.value(node.inputs[0])
        rank = len(src.shape)
        inv_in = np.argsort(src.layout or tuple(range(rank)))
        perm = tuple(node.attrs["perm"])
        lo = out.layout or tuple(range(rank))
        phys = tuple(int(inv_in[perm[lo[i]]]) for i in range(rank))
        return Lowered("transpose", TransposeProblem(physical_shape(src), phys), call.inputs)
    if out.layout is None:
        return call
    if node.op == "concat":
        parts = tuple(physical_shape(graph.value(i)) for i in node.inputs)
        return Lowered("concat", ConcatProblem(parts, out.layout.index(int(node.attrs["axis"]))), call.inputs)
    if node.op == "elementwise":
        shapes = {f"v{k}": _const_physical_shape(graph.value(i), out.layout) for k, i in enumerate(node.inputs)}
        problem = EltwiseProblem.from_text(node.attrs["expr"], shapes)
        return Lowered("elementwise", problem, tuple(node.inputs[int(n[1:])] for n in problem.names))
    return call


def _const_physical_shape(value: Value, layout: tuple[int, ...]) -> tuple[int, ...]:
    if not value.is_const:
        return physical_shape(value)
    shape = (1,) * (len(layout) - len(value.shape)) + value.shape
    return tuple(shape[a] for a in layout)


def _const_physical_data(value: Value, layout: tuple[int, ...] | None) -> np.ndarray:
    assert value.data is not None
    if layout is None:
        return value.data
    data = value.data.reshape((1,) * (len(layout) - value.data.ndim) + value.data.shape)
    return np.ascontiguousarray(data.transpose(layout))


class _Planner:
    def __init__(self, info: DeviceInfo, language: str, limits: Limits, db: TuningDB) -> None:
        self.info, self.language, self.limits, self.db = info, language, limits, db
        self.calls: dict[str, Lowered | None] = {}

    def lookup(self, call: Lowered) -> Lookup:
        spec = get_op(call.op)
        query = Query(self.info, spec, self.language, call.problem, self.limits, kernel_hash(spec, self.language))
        return self.db.lookup(query)

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
                chosen[name] = self.lookup(call)
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
            lookup = chosen.get(node.name) or self.lookup(call)
            step_params = params.get(node.name, dict(lookup.params))
            source = lookup.source if step_params == lookup.params else f"{lookup.source}, relayout"
            sources[lookup.source] = sources.get(lookup.source, 0) + 1
            steps.append(Step(node, call, step_params, source))
        return Plan(graph, self.language, self.limits, steps, layout_plan, sources)


def plan_graph(graph: Graph, info: DeviceInfo, language: str, limits: Limits, db: TuningDB) -> Plan:
    """Choose each node's kernel params (tuning database, else defaults) and, for WGSL, tensor layouts.

    The graph is changed in place (layout conversions are inserted), so plan a fresh copy per device.

    Args:
        graph: A prepared graph (after the passes and wide-GEMM splitting).
        info: The device the plan is for (an opened one, or one described by a database file).
        language: ``wgsl`` or ``glsl``.
        limits: Limits every chosen config must respect.
        db: Where tuned params are looked up.
    """
    return _Planner(info, language, limits, db).plan(graph)


def device_arrays(
    plan: Plan, step: Step, spec: OpSpec[Any], feeds: Mapping[str, np.ndarray] | None = None
) -> list[np.ndarray]:
    """Return a step's device inputs: constants converted for its kernel, fed tensors, placeholders elsewhere.

    Placeholders (zeros of the kernel's input shape) stand for tensors produced on the device; only the
    constants of the result are uploaded from it.
    """
    graph, feeds = plan.graph, feeds or {}
    arrays = []
    out_layout = graph.value(step.node.output).layout if plan.language == "wgsl" else None
    for k, name in enumerate(step.call.inputs):
        value = graph.value(name)
        if value.is_const:
            follow = out_layout if step.call.op == "elementwise" else None
            arrays.append(_const_physical_data(value, follow))
        elif name in feeds:
            arrays.append(feeds[name])
        else:
            shape = step.call.problem.shapes[k] if step.call.op == "elementwise" else value.shape
            arrays.append(np.zeros(shape, np.float32))
    # ops may append derived constant inputs (resize's index table) after their own inputs
    device = spec.device_inputs(step.call.problem, step.params, arrays)
    if len(device) < len(arrays):
        raise GraphError(f"{step.node.origin}: {spec.name} takes {len(device)} device inputs, not {len(arrays)}")
    return device


def check_layouts(plan: Plan, step: Step, spec: OpSpec[Any]) -> None:
    """Fail loudly if a WGSL kernel would read or write a buffer in another axis order than it holds."""
    graph, problem, params = plan.graph, step.call.problem, step.params
    follows = step.call.op in ("elementwise", "concat", "transpose")  # built on the buffers' shapes
    wanted = spec.input_layouts(problem, params)
    for k, name in enumerate(step.call.inputs):
        value = graph.value(name)
        want = None if follows else (wanted[k] if k < len(wanted) else None)
        if not value.is_const and not follows and value.layout != want:
            raise GraphError(f"{step.node.origin}: input {name!r} is in layout {value.layout}, the kernel reads {want}")
    out = graph.value(step.node.output)
    if not follows and out.layout != spec.output_layout(problem, params):
        raise GraphError(f"{step.node.origin}: output {out.name!r} layout {out.layout} is not what the kernel writes")
