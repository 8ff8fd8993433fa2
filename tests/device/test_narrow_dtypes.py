"""Sessions fed and read in the narrow dtypes (bfloat16, float8, float4, int4, uint2), on both languages.

Kernels compute in float32: feeds widen exactly, Casts clip or wrap as ONNX says on the device, and outputs
round at the edge. Every output is checked bit for bit against ONNX's reference implementation, which computes
the same float32 sums and products and rounds once at the Cast.
"""

from __future__ import annotations

from typing import Any

import ml_dtypes
import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

import kernelforge
from kernelforge.errors import ShapeError

pytestmark = pytest.mark.device

SHAPE = [2, 8]
INPUTS = {
    "a": TensorProto.BFLOAT16,
    "f8": TensorProto.FLOAT8E4M3FN,
    "f4": TensorProto.FLOAT4E2M1,
    "q": TensorProto.INT4,
    "u": TensorProto.UINT2,
}
OUTPUTS = {
    "s": TensorProto.FLOAT,
    "y_bf16": TensorProto.BFLOAT16,
    "y_f8": TensorProto.FLOAT8E4M3FN,
    "y_e5m2": TensorProto.FLOAT8E5M2,
    "y_f4": TensorProto.FLOAT4E2M1,
    "y_i4": TensorProto.INT4,
    "y_i4_wrapped": TensorProto.INT4,
    "y_u2": TensorProto.UINT2,
}


def narrow_model() -> Any:
    f = TensorProto.FLOAT
    nodes = [
        helper.make_node("Cast", ["a"], ["a_f"], to=f),
        helper.make_node("Cast", ["f8"], ["f8_f"], to=f),
        helper.make_node("Cast", ["f4"], ["f4_f"], to=f),
        helper.make_node("Cast", ["q"], ["q_f"], to=f),
        helper.make_node("Cast", ["u"], ["u_f"], to=f),
        helper.make_node("Sum", ["a_f", "f8_f", "f4_f", "u_f"], ["s"]),
        helper.make_node("Cast", ["s"], ["y_bf16"], to=TensorProto.BFLOAT16),
        helper.make_node("Mul", ["s", "hundred"], ["big"]),
        helper.make_node("Cast", ["big"], ["y_f8"], to=TensorProto.FLOAT8E4M3FN),  # saturates: clipped to 448
        helper.make_node("Mul", ["big", "hundred"], ["huge"]),
        helper.make_node("Cast", ["huge"], ["y_e5m2"], to=TensorProto.FLOAT8E5M2, saturate=0),  # overflows: inf
        helper.make_node("Cast", ["s"], ["y_f4"], to=TensorProto.FLOAT4E2M1),
        helper.make_node("Mul", ["q_f", "three"], ["q3"]),
        helper.make_node("Cast", ["q3"], ["y_i4"], to=TensorProto.INT4),  # floats: 0 out of range
        helper.make_node("Cast", ["q"], ["q_i"], to=TensorProto.INT32),
        helper.make_node("Mul", ["q_i", "three_i"], ["q3_i"]),
        helper.make_node("Cast", ["q3_i"], ["y_i4_wrapped"], to=TensorProto.INT4),  # integers: the low bits
        helper.make_node("Add", ["u_f", "s"], ["us"]),
        helper.make_node("Cast", ["us"], ["y_u2"], to=TensorProto.UINT2),
    ]
    consts = [
        numpy_helper.from_array(np.array(100, np.float32), "hundred"),
        numpy_helper.from_array(np.array(3, np.float32), "three"),
        numpy_helper.from_array(np.array(3, np.int32), "three_i"),
    ]
    graph = helper.make_graph(
        nodes,
        "narrow",
        [helper.make_tensor_value_info(n, t, SHAPE) for n, t in INPUTS.items()],
        [helper.make_tensor_value_info(n, t, SHAPE) for n, t in OUTPUTS.items()],
        consts,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 25)])


def narrow_feeds() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    a = rng.uniform(-3, 3, SHAPE).astype(ml_dtypes.bfloat16)
    a[0, :3] = [np.nan, np.inf, -np.inf]  # through every cast: NaN stays NaN, infinities saturate or overflow
    f8 = rng.uniform(-8, 8, SHAPE).astype(ml_dtypes.float8_e4m3fn)
    f4 = rng.choice([-6, -3, -1.5, -0.5, 0, 0.5, 1, 2, 4, 6], SHAPE).astype(ml_dtypes.float4_e2m1fn)
    q = rng.integers(-8, 8, SHAPE).astype(ml_dtypes.int4)
    u = rng.integers(0, 4, SHAPE).astype(ml_dtypes.uint2)
    return {"a": a, "f8": f8, "f4": f4, "q": q, "u": u}


def same(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal value for value as float64, NaN where NaN and zeros of the same sign."""
    with np.errstate(invalid="ignore"):
        x, y = a.astype(np.float64), b.astype(np.float64)
    return bool(np.array_equal(x, y, equal_nan=True) and np.array_equal(np.signbit(x), np.signbit(y)))


@pytest.fixture(scope="module", params=["wgsl", "glsl"])
def device(request: pytest.FixtureRequest) -> tuple[Any, str]:
    backend = request.getfixturevalue("lavapipe" if request.param == "wgsl" else "gl")
    return backend.info, request.param


def test_narrow_feeds_and_results_match_the_onnx_reference(device: tuple[Any, str]) -> None:
    info, language = device
    model = narrow_model()
    session = kernelforge.load(model, device=info.index, backend=language)
    assert session.dtypes == {
        "a": "bfloat16",
        "f8": "float8_e4m3fn",
        "f4": "float4_e2m1fn",
        "q": "int4",
        "u": "uint2",
        "s": "float32",
        "y_bf16": "bfloat16",
        "y_f8": "float8_e4m3fn",
        "y_e5m2": "float8_e5m2",
        "y_f4": "float4_e2m1fn",
        "y_i4": "int4",
        "y_i4_wrapped": "int4",
        "y_u2": "uint2",
    }
    feeds = narrow_feeds()
    got = session.run(feeds)
    with np.errstate(invalid="ignore"):  # the reference casts NaN and out-of-range floats to int4 (giving 0)
        want = dict(zip(OUTPUTS, ReferenceEvaluator(model).run(None, feeds), strict=True))
    for name, expected in want.items():
        assert got[name].dtype == expected.dtype, name
        if name == "y_f4":  # float4e2m1 has no NaN: the reference gives a zero of either sign for one
            keep = ~np.isnan(got["s"])
            assert same(got[name][keep], expected[keep]), name
            continue
        assert same(got[name], expected), f"{name} ({language}): {got[name]} != {expected}"
    # the feeds reach both sides of each range: saturated to float8e4m3fn's 448, overflowed to float8e5m2's inf
    assert np.nanmax(np.abs(got["y_f8"].astype(np.float32))) == 448
    assert np.isinf(got["y_e5m2"].astype(np.float32)[np.isfinite(got["s"])]).any()


def test_random_feeds_and_bad_feeds_of_narrow_inputs(device: tuple[Any, str]) -> None:
    info, language = device
    session = kernelforge.load(narrow_model(), device=info.index, backend=language)
    feeds = session.random_feeds(np.random.default_rng(1))
    assert {n: str(v.dtype) for n, v in feeds.items()} == {
        "a": "bfloat16",
        "f8": "float8_e4m3fn",
        "f4": "float4_e2m1fn",
        "q": "int4",
        "u": "uint2",
    }
    assert session.run(feeds)["y_i4"].dtype == np.dtype(ml_dtypes.int4)
    bad = {**feeds, "q": np.full(SHAPE, 9)}
    with pytest.raises(ShapeError, match=r"input 'q': value 9 at index \(0, 0\) is outside int4's range \[-8, 7\]"):
        session.run(bad)
