"""GLSL (WebGL2-style fragment) GEMM on llvmpipe through moderngl, against the numpy reference."""

from __future__ import annotations

import numpy as np
import pytest

import kernelforge.api as kops
from kernelforge import _config
from kernelforge.errors import KernelCompileError
from kernelforge.ops import get_op
from kernelforge.ops._epilogue import ACTIVATIONS, Activation
from kernelforge.ops.gemm import GLSL_DEFAULT_PARAMS, GemmProblem
from kernelforge.runtime.kernel import prepare
from kernelforge.testing.ops import check_op, every_config, valid_configs

from .test_gemm import SHAPES

pytestmark = pytest.mark.device
SPEC = get_op("gemm")
EVERY = every_config(SPEC, "glsl")


@pytest.mark.parametrize("shape", SHAPES)
def test_shapes(gl, shape):
    problem = SPEC.parse_problem(shape)
    rng = np.random.default_rng(len(shape))
    valid = valid_configs(SPEC, problem, gl.limits, "glsl")
    configs = [SPEC.default_params(problem, gl.limits, "glsl")] + [valid[int(i)] for i in rng.choice(len(valid), 6)]
    for params in configs:
        check_op(gl, SPEC, problem, params)


def test_whole_space_on_one_odd_shape(gl):
    # every combination of layouts, packing, MRT and unrolling on a shape no texel size divides
    problem = SPEC.parse_problem("2x9x13x7")
    for params in valid_configs(SPEC, problem, gl.limits, "glsl"):
        check_op(gl, SPEC, problem, params)


def test_trans_b_whole_space(gl):
    problem = SPEC.parse_problem("6x11x10t")
    for params in EVERY:
        check_op(gl, SPEC, problem, params)


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
@pytest.mark.parametrize("pack_c", [1, 4])
def test_every_activation_with_bias(gl, name, pack_c):
    act = {"clip": "clip(-0.5, 0.25)", "leaky_relu": "leaky_relu(0.2)"}.get(name, name)
    problem = GemmProblem(m=19, n=22, k=13, has_bias=True, activation=Activation.parse(act))
    params = {**GLSL_DEFAULT_PARAMS, "pack_c": pack_c, "mrt": 2}
    inputs = SPEC.make_inputs(problem, np.random.default_rng(3))
    inputs[0] *= 4.0
    out = prepare(gl, SPEC, problem, params, inputs).run()
    np.testing.assert_allclose(out, SPEC.reference(problem, inputs), rtol=2e-5, atol=2e-5)


def test_mrt_over_the_draw_buffer_limit_is_rejected(gl):
    problem = SPEC.parse_problem("8x8x8")
    reason = SPEC.constraints(
        problem, {**GLSL_DEFAULT_PARAMS, "mrt": 4}, gl.limits.__class__(max_draw_buffers=2), "glsl"
    )
    assert reason and "MAX_DRAW_BUFFERS" in reason


def test_tall_matrix_needs_the_square_layout(gl):
    problem = SPEC.parse_problem("9000x4x8")  # 9000 rows > 2 x MAX_TEXTURE_SIZE 4096
    row_aligned = {**GLSL_DEFAULT_PARAMS, "square": 0, "mrt": 2}
    assert "MAX_TEXTURE_SIZE" in SPEC.constraints(problem, row_aligned, gl.limits, "glsl")
    assert SPEC.default_params(problem, gl.limits, "glsl")["square"] == 1
    check_op(gl, SPEC, problem, {**row_aligned, "square": 1})
    check_op(gl, SPEC, problem, SPEC.default_params(problem, gl.limits, "glsl"))


def test_public_api_glsl(gl):
    rng = np.random.default_rng(5)
    a = rng.standard_normal((3, 37, 23)).astype(np.float32)
    b = rng.standard_normal((3, 11, 23)).astype(np.float32)
    bias = rng.standard_normal(11).astype(np.float32)
    out = kops.gemm(a, b, bias=bias, activation="tanh", trans_b=True, backend="glsl")
    np.testing.assert_allclose(out, np.tanh(a @ b.transpose(0, 2, 1) + bias), rtol=1e-5, atol=1e-5)


def test_driver_errors_name_the_kernel(gl):
    with pytest.raises(KernelCompileError, match=r"gemm:bad.*GLSL rejected"):
        gl.compile("#version 330\nvoid main() { int x = 1.0; }", "gemm:bad")


def test_glsl_after_wgpu_gl_in_one_process(gl):
    # wgpu's GL backend makes its own EGL context current on this thread; GLSL kernels must still run
    from kernelforge.runtime import list_devices, open_device

    wgpu_gl = [d for d in list_devices() if d.api == "gl" and d.language == "wgsl"]
    if not wgpu_gl:
        if _config.require_device():
            pytest.fail("KF_REQUIRE_DEVICE=1 but wgpu exposes no GL adapter (Mesa's EGL llvmpipe is expected)")
        pytest.skip("wgpu exposes no GL adapter here")
    a = np.random.default_rng(1).standard_normal((9, 5)).astype(np.float32)
    b = np.random.default_rng(2).standard_normal((5, 7)).astype(np.float32)
    for _ in range(2):
        np.testing.assert_allclose(kops.gemm(a, b, device=wgpu_gl[0].index), a @ b, rtol=1e-5, atol=1e-5)
        problem = GemmProblem(m=9, n=7, k=5)
        out = prepare(gl, SPEC, problem, {**GLSL_DEFAULT_PARAMS, "mrt": 2}, [a, b]).run()
        np.testing.assert_allclose(out, a @ b, rtol=1e-5, atol=1e-5)
    assert open_device(wgpu_gl[0]) is not gl


def test_the_numpy_api_runs_a_half_float_record_in_float32(gl, tmp_path, monkeypatch):
    from kernelforge.api import _run
    from kernelforge.db import TuningDB, device_meta, new_record
    from kernelforge.ops import get_op
    from kernelforge.templates import kernel_hash

    spec = get_op("gemm")
    problem = spec.parse_problem("64x48x40")
    half = {**spec.default_params(problem, gl.limits, "glsl"), "precision": 1}
    record = new_record(spec, "glsl", problem, kernel_hash(spec, "glsl"), half, 1e-4, 2e-4, {}, "")
    TuningDB(tmp_path).update(device_meta(gl.info), [record])
    monkeypatch.setattr(_run, "_db", lambda: TuningDB(tmp_path))
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((64, 40), dtype=np.float32), rng.standard_normal((40, 48), dtype=np.float32)
    assert TuningDB(tmp_path).params_for(gl.info, "gemm", problem, "glsl", gl.limits).params == half
    out = kops.gemm(a, b, device=gl.info.index, backend="glsl")
    np.testing.assert_allclose(out, a @ b, rtol=1e-5, atol=1e-5 * float(np.abs(a @ b).max()))
    assert not np.array_equal(out, out.astype(np.float16).astype(np.float32))  # not rounded to halves
