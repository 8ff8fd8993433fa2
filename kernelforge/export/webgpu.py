"""A WGSL plan as data: the same buffers, dispatches and bindings a native WGSL session records."""

from __future__ import annotations

from typing import Any

from kernelforge.ops import get_op
from kernelforge.runtime.memory import plan_memory
from kernelforge.runtime.plan import Plan, check_layouts, device_arrays
from kernelforge.templates import render

from .weights import Constants, Shaders


def _where(plan: Plan, name: str, buffer_of: dict[str, int], constants: Constants) -> dict[str, Any]:
    value = plan.graph.value(name)
    if value.data is not None:  # an output that folded to a constant
        return {"name": name, "constant": constants.add(value.data, f"output {name!r}")}
    return {"name": name, "buffer": buffer_of[name], "bytes": value.nbytes}


def wgsl_plan(plan: Plan, constants: Constants, shaders: Shaders) -> dict[str, Any]:
    """Write a WGSL plan (see FORMAT.md): planned buffers, then one dispatch per step.

    Every kernel is checked against the plan's limits and its layouts against the buffers it reads, as a
    session would before compiling, so a bundle holds nothing a native run would reject.
    """
    graph = plan.graph
    memory = plan_memory(graph)
    steps = []
    subgroups = False
    for step in plan.steps:
        spec = get_op(step.call.op)
        problem, params = step.call.problem, spec.validate_params(step.params, "wgsl")
        spec.check(problem, params, plan.limits, "wgsl")
        check_layouts(plan, step, spec)
        device = device_arrays(plan, step, spec)
        bindings: list[dict[str, int]] = []
        for k, array in enumerate(device):
            name = step.call.inputs[k] if k < len(step.call.inputs) else ""
            if not name or graph.value(name).is_const:
                bindings.append({"constant": constants.add(array, f"{step.node.origin} input {k}")})
            else:
                bindings.append({"buffer": memory.buffer_of[name], "bytes": max(4, graph.value(name).nbytes)})
        out = graph.value(step.node.output)
        bindings.append({"buffer": memory.buffer_of[out.name], "bytes": max(4, out.nbytes)})
        launch = spec.launch(problem, params)
        source = render(spec, "wgsl", problem, params, target="web")
        # check() above matched a subgroup kernel's size to plan.limits; browsers need the line naga refuses
        if spec.subgroup_size(params):
            subgroups, source = True, f"enable subgroups;\n{source}"
        steps.append(
            {
                "node": step.node.name,
                "op": spec.name,
                "source": step.source,
                "params": dict(params),
                "shader": shaders.add(source),
                "workgroups": list(launch.workgroups),
                "uniforms": [int(u) for u in launch.uniforms],
                "bindings": bindings,
            }
        )
    return {
        **({"subgroup_size": plan.limits.subgroup_size} if subgroups else {}),
        "buffers": [max(4, (int(n) + 3) // 4 * 4) for n in memory.buffer_bytes],
        "inputs": [_where(plan, n, memory.buffer_of, constants) for n in graph.inputs],
        "outputs": [_where(plan, n, memory.buffer_of, constants) for n in graph.outputs],
        "steps": steps,
    }
