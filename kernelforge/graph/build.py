"""Build a plan's checked Program in the plan's kernel language."""

from __future__ import annotations

from kernelforge.graph.plan import Plan
from kernelforge.graph.program import Program, wgsl_program
from kernelforge.graph.program_glsl import glsl_program


def build_program(plan: Plan, target: str = "native") -> Program:
    """Return the Program of a plan: WGSL buffers and dispatches, or GLSL textures, kernels and relayouts.

    Args:
        plan: A plan of :func:`kernelforge.graph.plan.plan_graph`.
        target: ``native`` (wgpu-py, moderngl) or ``web`` (WebGPU, WebGL2): what the shaders are rendered for.
    """
    return wgsl_program(plan, target) if plan.language == "wgsl" else glsl_program(plan, target)
