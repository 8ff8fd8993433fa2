"""The GLSL kernels tuned natively compile and link as GLSL ES 3.00 in a real WebGL2 (headless Chromium)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from kernelforge import _config
from kernelforge.ops import Limits, get_op
from kernelforge.ops._epilogue import Activation
from kernelforge.ops.gemm import GemmProblem
from kernelforge.templates import render, render_template
from kernelforge.testing import chromium

pytestmark = pytest.mark.browser
SPEC = get_op("gemm")
SPEC_LIMITS = Limits()

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


@pytest.fixture(scope="module")
def browser_page():
    reason = chromium.available()
    if reason:
        if _config.require_device():
            pytest.fail(f"KF_REQUIRE_DEVICE=1 but {reason}")
        pytest.skip(reason)
    with chromium.page() as page:
        yield page


def _sample_sources() -> list[tuple[str, str]]:
    rng = np.random.default_rng(11)
    problems = [
        GemmProblem(m=37, n=41, k=29, batch=3, batch_b=3, has_bias=True, activation=Activation.parse("gelu")),
        GemmProblem(m=16, n=24, k=20, trans_b=True, activation=Activation.parse("leaky_relu(0.1)")),
        GemmProblem(m=64, n=64, k=64, has_bias=True, activation=Activation.parse("hardswish")),
        GemmProblem(m=5, n=3, k=7, activation=Activation.parse("clip(-1,1)")),
    ]
    names = [p.name for p in SPEC.params("glsl")]
    every = [dict(zip(names, v, strict=True)) for v in itertools.product(*(p.choices for p in SPEC.params("glsl")))]
    out = []
    for i, problem in enumerate(problems):
        for j in rng.choice(len(every), 12, replace=False):
            params = every[int(j)]
            if SPEC.constraints(problem, params, SPEC_LIMITS, "glsl") is None:
                out.append((f"{SPEC.problem_key(problem)} {params}", render(SPEC, "glsl", problem, params, "web")))
        out.append(
            (f"default {i}", render(SPEC, "glsl", problem, SPEC.default_params(problem, SPEC_LIMITS, "glsl"), "web"))
        )
    return out


def test_glsl_kernels_compile_in_webgl2(browser_page):
    sources = _sample_sources()
    assert len(sources) >= 20
    assert all(text.startswith("#version 300 es") for _, text in sources)
    vertex = render_template("glsl/fullscreen.vert.j2", {"version": "300 es"})
    result = browser_page.evaluate(COMPILE_JS, [vertex, [text for _, text in sources]])
    assert "error" not in result, result
    assert result["floatTargets"], "WebGL2 lacks EXT_color_buffer_float: float render targets unavailable"
    assert result["maxDrawBuffers"] >= 4
    failures = [
        f"{label}: {r['log']}"
        for (label, _), r in zip(sources, result["results"], strict=True)
        if not (r["compiled"] and r["linked"])
    ]
    assert not failures, "\n".join(failures)


def test_broken_shader_is_reported_by_webgl2(browser_page):
    # the check above can fail: a kernel with a type error is rejected with a log
    result = browser_page.evaluate(
        COMPILE_JS, ["#version 300 es\nvoid main() {}", ["#version 300 es\nvoid main() { int x = 1.0; }"]]
    )
    assert result["results"][0]["compiled"] is False
    assert result["results"][0]["log"]
