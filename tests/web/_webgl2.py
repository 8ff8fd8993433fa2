"""Compile rendered GLSL kernels as GLSL ES 3.00 in headless Chromium's WebGL2 (shared by the web tests)."""

from __future__ import annotations

from typing import Any

from kernelforge.templates import render_template

COMPILE_JS = """
([vs, sources]) => {
  const gl = document.createElement("canvas").getContext("webgl2");
  if (!gl) return {error: "no WebGL2 context"};
  const floatTargets = !!gl.getExtension("EXT_color_buffer_float");
  const shader = (type, text) => {
    const s = gl.createShader(type);
    gl.shaderSource(s, text);
    gl.compileShader(s);
    return s;
  };
  const vertex = shader(gl.VERTEX_SHADER, vs);
  const results = sources.map((fs) => {
    const f = shader(gl.FRAGMENT_SHADER, fs);
    const p = gl.createProgram();
    gl.attachShader(p, vertex);
    gl.attachShader(p, f);
    gl.linkProgram(p);
    return {
      compiled: gl.getShaderParameter(f, gl.COMPILE_STATUS),
      linked: gl.getProgramParameter(p, gl.LINK_STATUS),
      log: gl.getShaderInfoLog(f) + gl.getProgramInfoLog(p),
    };
  });
  return {floatTargets, renderer: gl.getParameter(gl.RENDERER), results,
          maxDrawBuffers: gl.getParameter(gl.MAX_DRAW_BUFFERS), maxTexture: gl.getParameter(gl.MAX_TEXTURE_SIZE)};
}
"""


def compile_in_webgl2(page: Any, sources: list[tuple[str, str]]) -> dict[str, Any]:
    """Compile and link each ``(label, fragment source)`` with the full-screen vertex shader; return the report."""
    vertex = render_template("glsl/fullscreen.vert.j2", {"version": "300 es"})
    return page.evaluate(COMPILE_JS, [vertex, [text for _, text in sources]])


def assert_webgl2_compiles(page: Any, sources: list[tuple[str, str]]) -> None:
    """Fail with every label and driver log whose kernel does not compile and link in WebGL2."""
    assert sources, "no kernels to compile"
    assert all(text.startswith("#version 300 es") for _, text in sources)
    result = compile_in_webgl2(page, sources)
    assert "error" not in result, result
    assert result["floatTargets"], "WebGL2 lacks EXT_color_buffer_float: float render targets unavailable"
    failures = [
        f"{label}: {r['log']}"
        for (label, _), r in zip(sources, result["results"], strict=True)
        if not (r["compiled"] and r["linked"])
    ]
    assert not failures, "\n".join(failures)
