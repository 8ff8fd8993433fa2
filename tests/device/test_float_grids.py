"""Rounding onto the float8, float4e2m1 and float8e8m0 grids inside a graph, on every software GPU.

Every value of each type, every tie between two neighbours and one and two ULP on both sides of it, values
beyond the range, infinities and NaN go through Cast and QuantizeLinear on WGSL (lavapipe, SwiftShader, llvmpipe
through wgpu's GL) and GLSL (llvmpipe), and must come back exactly as ``ml_dtypes`` (ONNX's Cast) and ONNX's
reference round them. SwiftShader divides by a constant as a multiplication by its reciprocal: QuantizeLinear's
quotients that float32 puts on a tie are decided exactly all the same. float8e8m0's smallest value ``2**-127``
is a float32 subnormal, which SwiftShader and llvmpipe's GL flush to 0: there a 0 stands for it.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

import kernelforge
from kernelforge.graph.dtypes import E8M0_MIN, NARROW, NARROW_ELEMS, ROUND_MODES, to_e8m0
from kernelforge.graph.float_grids import GRIDS
from kernelforge.testing.onnx_backend import NodeCase, cases, run_case
from tests.null.test_float_grids import (
    compared,
    dynamic_fp8_model,
    e8m0_probes,
    expected,
    grid_probes,
    quantize_model,
    tie_inputs,
)

from .test_session import assert_matches_ort

pytestmark = pytest.mark.device

ELEM = {name: elem for elem, name in NARROW_ELEMS.items()}
CASES = [
    "test_quantizelinear_e4m3fn",
    "test_quantizelinear_e5m2",
    "test_quantizelinear_float4e2m1",
    "test_dequantizelinear_e4m3fn_zero_point",
    "test_dequantizelinear_float4e2m1",
    "test_cast_e8m0_FLOAT_to_FLOAT8E8M0",
    "test_cast_e8m0_FLOAT16_to_FLOAT8E8M0",
    "test_cast_e8m0_FLOAT8E8M0_to_FLOAT",
    "test_cast_e8m0_FLOAT8E8M0_to_FLOAT16",
]


def casts_model(n: int, casts: dict[str, tuple[int, dict[str, Any]]]) -> onnx.ModelProto:
    """x (float [n]) -> Cast(to, attrs) -> Cast(float) -> output, once per entry: rounded inside the graph."""
    nodes, outputs = [], []
    for out, (to, attrs) in casts.items():
        nodes += [
            helper.make_node("Cast", ["x"], [f"{out}_c"], to=to, **attrs),
            helper.make_node("Cast", [f"{out}_c"], [out], to=TensorProto.FLOAT),
        ]
        outputs.append(helper.make_tensor_value_info(out, TensorProto.FLOAT, [n]))
    graph = helper.make_graph(nodes, "casts", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [n])], outputs)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 25)])


def _run(device: Any, language: str, model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return kernelforge.load(model, device=device.info.index, backend=language).run(feeds)


def _check_grids(device: Any, language: str) -> None:
    x = np.concatenate([grid_probes(name) for name in sorted(GRIDS)])
    casts = {f"{name}_{sat}": (ELEM[name], {"saturate": sat}) for name in sorted(GRIDS) for sat in (1, 0)}
    got = _run(device, language, casts_model(x.size, casts), {"x": x})
    # a float32 subnormal comes back as itself where the device takes it for 0 (SwiftShader, llvmpipe's GL)
    flushed = np.abs(x) < 2.0**-126
    for out in casts:
        name, sat = out.rsplit("_", 1)
        want = np.where(flushed & (got[out] == x), x, expected(name, x, bool(int(sat))))
        wrong = np.flatnonzero(~((got[out] == want) | (np.isnan(got[out]) & np.isnan(want))))
        assert wrong.size == 0, f"{out} ({language}): {x[wrong[:4]]} -> {got[out][wrong[:4]]}, want {want[wrong[:4]]}"
        # zeros keep their sign (the fnuz types have one zero); a NaN's sign is the device's (SwiftShader's -NaN
        # may read NaN)
        zeros = (want == 0) & (not name.endswith("fnuz"))
        assert np.array_equal(np.signbit(got[out][zeros]), np.signbit(want[zeros])), f"{out} ({language}): -0"


def test_every_wgsl_device_rounds_onto_the_float8_and_float4_grids(wgsl_device: Any) -> None:
    _check_grids(wgsl_device, "wgsl")


def test_glsl_rounds_onto_the_float8_and_float4_grids(gl: Any) -> None:
    _check_grids(gl, "glsl")


def _check_quantize(device: Any, language: str) -> None:
    scale = np.float32([3.0, 0.1, 0.00784313678741455, 1.7, 2.0])
    for name in ("float8_e4m3fn", "float8_e5m2", "float4_e2m1fn"):
        x = tie_inputs(name, scale)
        for saturate in (1, 0):
            m = quantize_model(name, scale, x.shape[1], saturate, opset=21 if name != "float4_e2m1fn" else 23)
            got = _run(device, language, m, {"x": x})
            for out, value, want in compared(m, got, x):
                wrong = np.flatnonzero(~((value == want) | (np.isnan(value) & np.isnan(want))))
                where = f"{name} saturate={saturate} {out} ({language})"
                assert wrong.size == 0, f"{where}: {wrong.size} wrong, e.g. {value.ravel()[wrong[:4]]}"


def test_every_wgsl_device_quantizes_ties_of_the_float32_quotient_exactly(wgsl_device: Any) -> None:
    _check_quantize(wgsl_device, "wgsl")


def test_glsl_quantizes_ties_of_the_float32_quotient_exactly(gl: Any) -> None:
    _check_quantize(gl, "glsl")


def _check_e8m0(device: Any, language: str) -> None:
    x = e8m0_probes()
    subnormal = np.float32([2.0**-127, 1e-40, 2.0**-128 * 1.5, 2.0**-149, -(2.0**-127)])
    feeds = np.concatenate([x, subnormal])
    casts = {
        f"{mode}_{sat}": (TensorProto.FLOAT8E8M0, {"round_mode": mode, "saturate": sat})
        for mode in ROUND_MODES
        for sat in (1, 0)
    }
    got = _run(device, language, casts_model(feeds.size, casts), {"x": feeds})
    for out in casts:
        mode, sat = out.rsplit("_", 1)
        saturate = bool(int(sat))
        value = got[out][: x.size]
        want = to_e8m0(x, saturate, mode).astype(np.float32)
        # 2**-127 may read 0 where the device flushes subnormals
        ok = (value == want) | (np.isnan(value) & np.isnan(want)) | ((want == E8M0_MIN) & (value == 0))
        wrong = np.flatnonzero(~ok)
        assert wrong.size == 0, f"{out} ({language}): {x[wrong[:4]]} -> {value[wrong[:4]]}, want {want[wrong[:4]]}"
        # a subnormal input is itself, or 0 where the device flushes it
        tiny = got[out][x.size :]
        for read in (to_e8m0(subnormal, saturate, mode), to_e8m0(np.zeros_like(subnormal), saturate, mode)):
            want = np.where(read.astype(np.float32) == E8M0_MIN, 0, read.astype(np.float32))
            tiny = np.where((np.where(tiny == E8M0_MIN, 0, tiny) == want) | (np.isnan(tiny) & np.isnan(want)), 0, tiny)
        assert not np.any(tiny), f"{out} ({language}): subnormals {subnormal} -> {got[out][x.size :]}"


def test_every_wgsl_device_casts_to_e8m0_as_the_spec(wgsl_device: Any) -> None:
    _check_e8m0(wgsl_device, "wgsl")


def test_glsl_casts_to_e8m0_as_the_spec(gl: Any) -> None:
    _check_e8m0(gl, "glsl")


@functools.cache
def _cases() -> dict[str, NodeCase]:
    return {c.name: c for c in cases() if c.name in CASES}


@pytest.mark.parametrize("language", ["wgsl", "glsl"])
def test_the_onnx_node_cases_of_these_types_pass(language: str, lavapipe: Any, gl: Any) -> None:
    device = lavapipe if language == "wgsl" else gl
    found = _cases()
    assert sorted(found) == sorted(CASES)
    for name, case in found.items():
        outcome = run_case(case, device.info.index, language)
        assert outcome.passed, f"{name} ({language}): {outcome.limit or outcome.error}"


def qdq_model() -> onnx.ModelProto:
    """x -> Mul(w) -> QuantizeLinear(float8e4m3fn) -> DequantizeLinear -> Relu -> y, as a float8 QDQ model."""
    w = onnx.numpy_helper.from_array(np.linspace(-4, 4, 16, dtype=np.float32).reshape(2, 8), "w")
    s = onnx.numpy_helper.from_array(np.array(0.0375, np.float32), "s")
    z = onnx.numpy_helper.from_array(np.zeros((), NARROW["float8_e4m3fn"]), "z")
    nodes = [
        helper.make_node("Mul", ["x", "w"], ["xw"]),
        helper.make_node("QuantizeLinear", ["xw", "s", "z"], ["q"]),
        helper.make_node("DequantizeLinear", ["q", "s", "z"], ["d"]),
        helper.make_node("Relu", ["d"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "qdq_fp8",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 8])],
        [w, s, z],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])


@pytest.mark.parametrize("language", ["wgsl", "glsl"])
def test_a_float8_qdq_model_matches_onnxruntime(language: str, lavapipe: Any, gl: Any) -> None:
    device = lavapipe if language == "wgsl" else gl
    m = qdq_model()
    x = np.random.default_rng(0).uniform(-30, 30, (2, 8)).astype(np.float32)
    x[0, :3] = [1e4, -1e4, 0.3]  # saturated and subnormal in float8e4m3fn
    got = _run(device, language, m, {"x": x})
    assert_matches_ort(m, got, {"x": x})
    (want,) = ReferenceEvaluator(m).run(None, {"x": x})
    np.testing.assert_array_equal(got["y"], want)  # and exactly: the same float32 quotient, rounded once


@pytest.mark.parametrize("language", ["wgsl", "glsl"])
def test_dynamic_float8_scaling_matches_onnxruntime(language: str, lavapipe: Any, gl: Any) -> None:
    device = lavapipe if language == "wgsl" else gl
    m = dynamic_fp8_model()  # the scale max|x| / 448 computed on the device
    x = np.random.default_rng(1).standard_normal((4, 32)).astype(np.float32) * 7
    got = _run(device, language, m, {"x": x})
    assert_matches_ort(m, got, {"x": x})
    (want,) = ReferenceEvaluator(m).run(None, {"x": x})
    np.testing.assert_array_equal(got["y"], want)
