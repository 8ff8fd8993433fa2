"""The GLSL kernels tuned natively compile and link as GLSL ES 3.00 in a real WebGL2 (headless Chromium)."""

from __future__ import annotations

import numpy as np
import pytest

from kernelforge.ops import Limits, get_op
from kernelforge.ops._epilogue import Activation
from kernelforge.ops.gemm import GemmProblem
from kernelforge.templates import render
from kernelforge.testing.ops import every_config

from ._webgl2 import assert_webgl2_compiles, compile_in_webgl2

pytestmark = pytest.mark.browser
SPEC = get_op("gemm")
SPEC_LIMITS = Limits()


def _sample_sources() -> list[tuple[str, str]]:
    rng = np.random.default_rng(11)
    problems = [
        GemmProblem(m=37, n=41, k=29, batch=3, batch_b=3, has_bias=True, activation=Activation.parse("gelu")),
        GemmProblem(m=16, n=24, k=20, trans_b=True, activation=Activation.parse("leaky_relu(0.1)")),
        GemmProblem(m=64, n=64, k=64, has_bias=True, activation=Activation.parse("hardswish")),
        GemmProblem(m=5, n=3, k=7, activation=Activation.parse("clip(-1,1)")),
    ]
    every = every_config(SPEC, "glsl")
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
    assert compile_in_webgl2(browser_page, sources[:1])["maxDrawBuffers"] >= 4
    assert_webgl2_compiles(browser_page, sources)


def test_broken_shader_is_reported_by_webgl2(browser_page):
    # the check above can fail: a kernel with a type error is rejected with a log
    result = compile_in_webgl2(browser_page, [("broken", "#version 300 es\nvoid main() { int x = 1.0; }")])
    assert result["results"][0]["compiled"] is False
    assert result["results"][0]["log"]
