"""A checked :class:`~kernelforge.graph.program.Program` written down as a bundle's plan (see FORMAT.md).

The exporter only serialises: every check ran when the program was built, so a bundle holds nothing a native
run would reject. Shader texts and constants go to the bundle's shared tables (each once across targets).
"""

from __future__ import annotations

import math
import re
from typing import Any

from kernelforge.graph.program import Arg, Buffer, Program, Texture
from kernelforge.ops.texture import TexLayout

from .weights import Constants, Shaders

_ENABLE_F16 = re.compile(r"^enable f16;", re.M)


def _layout(t: TexLayout) -> dict[str, int]:
    return {"rows": t.rows, "cols": t.cols, "pack": t.pack, "width": t.width, "height": t.height}


def wgsl_json(program: Program, constants: Constants, shaders: Shaders) -> dict[str, Any]:
    """Write a WGSL program: planned buffers, inputs, outputs, then one dispatch per step."""
    uploads = {u.resource: u for u in program.uploads}

    def binding(a: Arg) -> dict[str, int]:
        if a.resource < program.planned:
            return {"buffer": a.resource, "bytes": a.nbytes}
        upload = uploads[a.resource]
        return {"constant": constants.add(upload.data, upload.what, upload.quant, upload.int4)}

    steps = [
        {
            "node": s.node,
            "op": s.op,
            "source": s.source,
            "params": dict(s.params),
            "shader": shaders.add(program.shaders[s.shader]),
            "workgroups": list(s.workgroups),
            "uniforms": list(s.uniforms),
            "bindings": [binding(a) for a in (*s.inputs, *s.outputs)],
        }
        for s in program.steps
    ]
    buffers = [r.nbytes for r in program.resources[: program.planned] if isinstance(r, Buffer)]
    outputs: list[dict[str, Any]] = []
    for o in program.outputs:
        if o.data is not None:
            outputs.append({"name": o.name, "constant": constants.add(o.data, f"output {o.name!r}")})
        else:
            outputs.append({"name": o.name, "buffer": o.resources[0], "bytes": 4 * o.count})
    f16 = any(_ENABLE_F16.search(program.shaders[s.shader]) for s in program.steps)
    return {
        **({"subgroup_size": program.subgroup_size} if program.subgroup_size else {}),
        **({"f16": True} if f16 else {}),
        "buffers": buffers,
        "inputs": [{"name": i.name, "buffer": i.resource, "bytes": 4 * math.prod(i.shape)} for i in program.inputs],
        "outputs": outputs,
        "steps": steps,
    }


def glsl_json(program: Program, constants: Constants, shaders: Shaders) -> dict[str, Any]:
    """Write a GLSL program: textures, constant uploads, inputs, outputs, kernels and relayout passes."""
    steps = []
    for s in program.steps:
        step: dict[str, Any] = {"node": s.node, "op": s.op, "source": s.source}
        if s.op != "relayout":
            step["params"] = dict(s.params)
        step["shader"] = shaders.add(program.shaders[s.shader])
        step["inputs"] = [{"texture": a.resource, "sampler": a.sampler} for a in s.inputs]
        step["targets"] = [a.resource for a in s.outputs]
        step["width"], step["height"] = s.size
        steps.append(step)
    const_textures = []
    for u in program.uploads:
        assert u.layout is not None
        const_textures.append(
            {
                "texture": u.resource,
                "constant": constants.add(u.data, u.what, u.quant, u.int4),
                "layout": _layout(u.layout),
            }
        )
    outputs: list[dict[str, Any]] = []
    for o in program.outputs:
        if o.data is not None:
            outputs.append({"name": o.name, "constant": constants.add(o.data, f"output {o.name!r}")})
        else:
            outputs.append({"name": o.name, "texture": o.resources[0], "size": o.count})
    textures = [
        {"width": r.width, "height": r.height, "pack": r.pack, **({"dtype": r.dtype} if r.dtype != "float32" else {})}
        for r in program.resources
        if isinstance(r, Texture)
    ]
    inputs = []
    for i in program.inputs:
        assert i.layout is not None
        inputs.append({"name": i.name, "texture": i.resource, "layout": _layout(i.layout)})
    return {
        "vertex": shaders.add(program.shaders[program.vertex]),
        "textures": textures,
        "constants": const_textures,
        "inputs": inputs,
        "outputs": outputs,
        "steps": steps,
    }
