"""Fused elementwise programs on the software GPUs (WGSL and GLSL) against the numpy and ONNX references."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

import kernelforge.api as kops
from kernelforge.errors import ShapeError
from kernelforge.ops import get_op
from kernelforge.ops.eltwise import EltwiseProblem
from kernelforge.runtime.kernel import prepare
from kernelforge.testing.ops import check_op, quick_tune, sampled_configs, valid_configs

pytestmark = pytest.mark.device
SPEC = get_op("elementwise")

UNARY = [
    "relu(x)",
    "clip(x, -0.3, 0.45)",
    "sigmoid(x * 4)",
    "tanh(x * 3)",
    "gelu(x * 3)",
    "hardswish(x * 4)",
    "hardsigmoid(x * 4, 0.3, 0.4)",
    "leaky_relu(x, 0.15)",
    "exp(x)",
    "neg(x)",
    "-x",
    "sqrt(x)",
    "reciprocal(x)",
    "abs(x)",
    "pow(x, 3)",
    "pow(x, -2)",
    "pow(x, 0)",
    "pow(x, 1.5)",
    "erf(x * 2)",
    "floor(x * 4)",
    "ceil(x * 4)",
    "round(x * 4)",
    "trunc(x * 4)",
    "sign(x)",
    "log(x)",
    "sin(x * 3)",
    "cos(x * 3)",
    "logical_not(floor(x * 2))",
]
BINARY = [
    "x + y",
    "x - y",
    "x * y",
    "x / y",
    "max(x, y)",
    "min(x, y)",
    "pow(x, y)",
    # rounded to quarters so that equal pairs occur
    "equal(floor(x * 4), floor(y * 4))",
    "less(x, y)",
    "greater(x, y)",
    "less_equal(floor(x * 4), floor(y * 4))",
    "greater_equal(floor(x * 4), floor(y * 4))",
    "logical_and(floor(x * 2), floor(y * 2))",
    "logical_or(floor(x * 2), floor(y * 2))",
    "logical_xor(floor(x * 2), floor(y * 2))",
    "mod(x * 4, y)",
    "fmod(x * 4, y)",
    "where(greater(x, y), x * 2, y - 1)",
]
LONG_CHAIN = (
    "clip(sigmoid(tanh(relu(x * a + b) - y) * 2 + 0.5) / (abs(y) + 1) + gelu(x) * hardswish(y)"
    " - leaky_relu(x - a, 0.1) + max(x, y) * min(a, b) + exp(neg(abs(b))), -2, 2)"
)
PROGRAMS = [
    *(f"{p}:x=3x7x4" for p in UNARY),  # 84 elements: vec4 and RGBA paths by default
    *(f"{p}:x=3x1x5,y=4x5" for p in BINARY),
    "x * y + 1:x=scalar,y=2x3",
    "x - y:x=9,y=scalar",
    "relu(x * a + b) + y:x=2x8x5x5,a=8x1x1,b=8x1x1,y=2x8x5x5",
    "x + y:x=1x1x7x1x3,y=2x1x1x4x1",
    "x * y:x=6x1,y=1x4",
    "x + y + z:x=13,y=1,z=1x13",
    "hardswish(x) * y:x=1x1x1x1,y=1x1x1",
    f"{LONG_CHAIN}:x=2x3x17,a=3x1,b=17,y=2x1x17",
    "x * x + x:x=101",
    "pow(x, y) * gelu(y) - leaky_relu(x, 0.2):x=2x8,y=8",
]


def _check_sampled(backend, shape):
    # a different input seed per config
    problem = SPEC.parse_problem(shape)
    for i, params in enumerate(sampled_configs(SPEC, problem, backend.limits, backend.language, 2, len(shape))):
        check_op(backend, SPEC, problem, params, seed=i)


@pytest.mark.parametrize("shape", PROGRAMS)
def test_programs_in_wgsl(lavapipe, shape):
    _check_sampled(lavapipe, shape)


@pytest.mark.parametrize("shape", PROGRAMS)
def test_programs_in_glsl(gl, shape):
    _check_sampled(gl, shape)


@pytest.mark.parametrize(
    "shape",
    [
        "relu(x * a + b) + y:x=2x3x4x6,a=3x1x1,b=1x4x1,y=6",  # last axis % 4 != 0 for a and b: gathers
        "y * x - z:x=5x8,y=8,z=5x1",  # collapsed last axis of 8: contig (input 0) and splat inputs
    ],
)
def test_whole_space(lavapipe, gl, shape):
    problem = SPEC.parse_problem(shape)
    for backend, language in ((lavapipe, "wgsl"), (gl, "glsl")):
        for params in valid_configs(SPEC, problem, backend.limits, language):
            check_op(backend, SPEC, problem, params)


def test_every_wgsl_device_runs_elementwise(wgsl_device):
    for shape in ("relu(x * a + b) + y:x=2x8x3x4,a=8x1x1,b=8x1x1,y=2x8x3x4", "pow(x, y) / z:x=7,y=scalar,z=3x1"):
        problem = SPEC.parse_problem(shape)
        check_op(wgsl_device, SPEC, problem, SPEC.default_params(problem, wgsl_device.limits, "wgsl"))


def test_two_dimensional_dispatch(lavapipe):
    problem = SPEC.parse_problem("x * 2 + y:x=2100x2100,y=2100x1")
    params = {"wg": 64, "ept": 1, "vec4": 0}
    assert SPEC.launch(problem, params).workgroups[1] > 1
    check_op(lavapipe, SPEC, problem, params)


SPECIAL = np.array([-2.5, -1.5, -0.5, -0.0, 0.0, 0.5, 1.5, 2.5, -7.0, 7.0, np.nan, 3.0], np.float32)
SPECIAL_Y = np.array([2.0, -2.0, 0.5, 1.0, -1.0, 0.5, 1.5, -1.0, 3.0, -3.0, 1.0, np.nan], np.float32)


@pytest.mark.parametrize(
    "text",
    [
        "round(x)",  # ties go to the even neighbour
        "sign(x)",
        "mod(x, y)",  # the divisor's sign
        "fmod(x, y)",  # the dividend's sign
        "less(x, y)",  # every comparison with NaN is false
        "greater_equal(x, y)",
        "equal(x, y)",
        "where(less(x, y), y, x)",  # NaN chosen or not by the condition, never blended
        "floor(x) + ceil(y)",
    ],
)
def test_special_values_follow_numpy(lavapipe, gl, text):
    arrays = [SPECIAL, SPECIAL_Y] if "y" in text else [SPECIAL]
    problem = EltwiseProblem.from_text(text, dict(zip("xy", [(12,)] * len(arrays), strict=False)))
    ref = SPEC.reference(problem, arrays)
    for backend, params in (
        (lavapipe, {"wg": 64, "ept": 1, "vec4": 1}),
        (lavapipe, {"wg": 64, "ept": 1, "vec4": 0}),
        (gl, {"pack_out": 4, "pack_in": 1, "square": 0}),
        (gl, {"pack_out": 1, "pack_in": 1, "square": 0}),
    ):
        out = prepare(backend, SPEC, problem, params, arrays).run()
        np.testing.assert_array_equal(out, ref, err_msg=f"{text} {backend.language} {params}")


def test_tanh_of_tiny_values_keeps_its_relative_precision(lavapipe, gl):
    # tanh built from exp cancels for tiny x; below 2**-12 tanh(x) is x in float32 (Mish's tail needs it)
    x = np.float32([1e-30, -3e-8, 1e-6, -5e-5, 2.4e-4, -2.5e-4, 1e-3, -0.02])
    for backend, params in (
        (lavapipe, {"wg": 64, "ept": 1, "vec4": 1}),
        (gl, {"pack_out": 4, "pack_in": 1, "square": 0}),
    ):
        problem = EltwiseProblem.from_text("tanh(x)", {"x": (8,)})
        out = prepare(backend, SPEC, problem, params, [x]).run()
        np.testing.assert_allclose(out, np.tanh(x.astype(np.float64)), rtol=2e-6, atol=0, err_msg=backend.language)


def test_mod_edge_cases_follow_onnx(lavapipe, gl):
    # ONNX Mod-28's special cases (its own test data): signed zeros, infinite dividends and divisors, NaN
    # (and two more, for 16 lanes)
    x = np.array([0, -0.0, 0, -0.0, -3, 3, -1, 1, np.inf, -np.inf, 1, 1, np.nan, 1, 2.5, -2.5], np.float32)
    y = np.array(
        [-2, 2, 2, -2, np.inf, np.inf, -np.inf, -np.inf, 2, 2, 0, -0.0, 2, np.nan, -np.inf, -np.inf], np.float32
    )
    nan = [np.nan] * 6
    want = {
        "mod(x, y)": [-0.0, 0, 0, -0.0, np.inf, 3, -1, -np.inf, *nan, -np.inf, -2.5],
        "fmod(x, y)": [0, -0.0, 0, -0.0, -3, 3, -1, 1, *nan, 2.5, -2.5],
    }
    for text, expected in want.items():
        problem = EltwiseProblem.from_text(text, {"x": (16,), "y": (16,)})
        np.testing.assert_array_equal(SPEC.reference(problem, [x, y]), np.float32(expected))
        for backend, params in (
            (lavapipe, {"wg": 64, "ept": 1, "vec4": 1}),
            (lavapipe, {"wg": 64, "ept": 1, "vec4": 0}),
            (gl, {"pack_out": 4, "pack_in": 1, "square": 0}),
            (gl, {"pack_out": 1, "pack_in": 1, "square": 0}),
        ):
            out = prepare(backend, SPEC, problem, params, [x, y]).run()
            np.testing.assert_allclose(out, np.float32(expected), rtol=0, atol=0, err_msg=f"{text} {params}")


def test_nan_and_inf_follow_numpy(lavapipe, gl):
    x = np.array([-8.0, -2.0, -0.5, 0.0, 0.0, 0.5, 2.0, 3.0], np.float32)
    y = np.array([1 / 3, 3.0, 2.0, -1.0, 0.0, -2.0, 0.0, 0.5], np.float32)
    for text in ("pow(x, y)", "x / y", "sqrt(x) + y * 0", "reciprocal(x) + y * 0"):
        problem = EltwiseProblem.from_text(text, {"x": (8,), "y": (8,)})
        ref = SPEC.reference(problem, [x, y])
        assert not np.all(np.isfinite(ref))
        for backend, params in (
            (lavapipe, {"wg": 64, "ept": 1, "vec4": 1}),
            (gl, {"pack_out": 4, "pack_in": 1, "square": 0}),
        ):
            out = prepare(backend, SPEC, problem, params, [x, y]).run()
            np.testing.assert_allclose(out, ref, rtol=1e-5, equal_nan=True, err_msg=f"{text} {params}")


# ONNX op, attributes, the same program, input shapes (constant Clip bounds become initializers)
ONNX_CASES = [
    ("Relu", {}, "relu(x)", [(3, 1, 5)]),
    ("Clip", {}, "clip(x, -0.5, 0.75)", [(3, 1, 5)]),
    ("Sigmoid", {}, "sigmoid(x)", [(3, 1, 5)]),
    ("Tanh", {}, "tanh(x)", [(3, 1, 5)]),
    ("Gelu", {}, "gelu(x)", [(3, 1, 5)]),
    ("HardSwish", {}, "hardswish(x)", [(3, 1, 5)]),
    ("HardSigmoid", {"alpha": 0.3, "beta": 0.4}, "hardsigmoid(x, 0.3, 0.4)", [(3, 1, 5)]),
    ("LeakyRelu", {"alpha": 0.2}, "leaky_relu(x, 0.2)", [(3, 1, 5)]),
    ("Exp", {}, "exp(x)", [(3, 1, 5)]),
    ("Neg", {}, "neg(x)", [(3, 1, 5)]),
    ("Sqrt", {}, "sqrt(x)", [(3, 1, 5)]),
    ("Reciprocal", {}, "reciprocal(x)", [(3, 1, 5)]),
    ("Add", {}, "x + y", [(3, 1, 5), (4, 5)]),
    ("Sub", {}, "x - y", [(3, 1, 5), (4, 5)]),
    ("Mul", {}, "x * y", [(3, 1, 5), (4, 5)]),
    ("Div", {}, "x / y", [(3, 1, 5), (4, 5)]),
    ("Max", {}, "max(x, y)", [(3, 1, 5), (4, 5)]),
    ("Min", {}, "min(x, y)", [(3, 1, 5), (4, 5)]),
    ("Pow", {}, "pow(x, y)", [(3, 1, 5), (4, 5)]),
    ("Erf", {}, "erf(x)", [(3, 1, 5)]),
    ("Floor", {}, "floor(x)", [(3, 1, 5)]),
    ("Ceil", {}, "ceil(x)", [(3, 1, 5)]),
    ("Round", {}, "round(x)", [(3, 1, 5)]),
    ("Sign", {}, "sign(x)", [(3, 1, 5)]),
    ("Log", {}, "log(x)", [(3, 1, 5)]),
    ("Sin", {}, "sin(x)", [(3, 1, 5)]),
    ("Cos", {}, "cos(x)", [(3, 1, 5)]),
    ("Equal", {}, "equal(x, y)", [(3, 1, 5), (4, 5)]),
    ("Less", {}, "less(x, y)", [(3, 1, 5), (4, 5)]),
    ("Greater", {}, "greater(x, y)", [(3, 1, 5), (4, 5)]),
    ("LessOrEqual", {}, "less_equal(x, y)", [(3, 1, 5), (4, 5)]),
    ("GreaterOrEqual", {}, "greater_equal(x, y)", [(3, 1, 5), (4, 5)]),
    ("Mod", {"fmod": 1}, "fmod(x, y)", [(3, 1, 5), (4, 5)]),
]
POSITIVE = {"Sqrt", "Reciprocal", "Div", "Pow", "Log", "Mod"}
# comparisons see inputs rounded to halves, so that equal pairs occur
ROUNDED = {"Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual"}


def onnx_run(op: str, attrs: dict, arrays: list[np.ndarray]) -> np.ndarray:
    """Run one ONNX node (opset 20) on ``arrays`` with onnx's reference evaluator."""
    names = ["x", "y"][: len(arrays)]
    initializers = []
    if op == "Clip":
        initializers = [numpy_helper.from_array(np.array(v, np.float32), n) for n, v in (("lo", -0.5), ("hi", 0.75))]
        names = ["x", "lo", "hi"]
    node = helper.make_node(op, names, ["out"], **attrs)
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, a.shape) for n, a in zip("xy", arrays, strict=False)],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)],
        initializer=initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    feeds = dict(zip("xy", arrays, strict=False))
    return np.asarray(ReferenceEvaluator(model).run(None, feeds)[0])


@pytest.mark.parametrize(("op", "attrs", "text", "shapes"), ONNX_CASES, ids=[c[0] for c in ONNX_CASES])
def test_matches_onnx_reference(lavapipe, gl, op, attrs, text, shapes):
    rng = np.random.default_rng(len(op))
    lo, hi = (0.5, 2.0) if op in POSITIVE else (-3.0, 3.0)
    arrays = [rng.uniform(lo, hi, s).astype(np.float32) for s in shapes]
    if op in ROUNDED:
        arrays = [np.round(a * 2) / 2 for a in arrays]
    expected = onnx_run(op, attrs, arrays).astype(np.float32)  # comparisons give bool
    problem = EltwiseProblem.from_text(text, dict(zip("xy", shapes, strict=False)))
    np.testing.assert_allclose(SPEC.reference(problem, arrays), expected, rtol=1e-6, atol=1e-6)
    for backend in (lavapipe, gl):
        for params in sampled_configs(SPEC, problem, backend.limits, backend.language, 1, len(op)):
            out = prepare(backend, SPEC, problem, params, arrays).run()
            np.testing.assert_allclose(out, expected, rtol=2e-5, atol=2e-6, err_msg=f"{op} {params}")


def test_public_api_binds_names(lavapipe):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 8, 3, 3)).astype(np.float32)
    a, b = rng.standard_normal((8, 1, 1)), rng.standard_normal((8, 1, 1))
    expected = np.maximum(x * a + b, 0) + x
    # positional arrays bind in order of first appearance: x, a, b
    out = kops.elementwise("relu(x*a + b) + x", x, a, b, device="lavapipe")
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    out_kw = kops.elementwise("relu(x*a + b) + x", x, b=b, a=a, device="lavapipe")
    np.testing.assert_allclose(out_kw, expected, rtol=1e-5, atol=1e-5)
    scalar = kops.elementwise("x * 2", 3, device="lavapipe")
    assert scalar.shape == () and scalar == 6.0


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        (("x + y", np.ones(3)), {}, "no array for input\\(s\\) \\['y'\\]"),
        (("x + y", np.ones(3), np.ones(3), np.ones(3)), {}, "3 positional arrays"),
        (("x", np.ones(3)), {"z": np.ones(3)}, "unknown input name 'z'"),
        (("x", np.ones(3)), {"x": np.ones(3)}, "both positionally and by name"),
        (("x + y", np.ones((2, 3)), np.ones(2)), {}, "input 'y' of shape \\(2,\\) does not broadcast"),
        (("relu(x, x)", np.ones(3)), {}, "relu\\(\\) takes 1 tensor argument"),
        (("foo(x)", np.ones(3)), {}, "unknown function 'foo'"),
        (("x", np.array(["a"])), {}, "dtype"),
        (("x", np.ones((1,) * 7)), {}, "rank 7"),
        (("x", np.ones((0, 3))), {}, "empty"),
    ],
)
def test_public_api_rejects_bad_input(lavapipe, args, kwargs, message):
    with pytest.raises(ShapeError, match=message):
        kops.elementwise(*args, device="lavapipe", **kwargs)


def test_tuner_smoke(tmp_path, lavapipe):
    problem = SPEC.parse_problem("relu(x*a+b)+y:x=1x16x9x9,a=16x1x1,b=16x1x1,y=1x16x9x9")
    result = quick_tune(lavapipe, SPEC, problem, tmp_path)
    assert result.record is not None and result.counts["ok"] >= 1
    assert result.record.shape == SPEC.problem_key(problem)
    assert SPEC.constraints(problem, result.record.params, lavapipe.limits, "wgsl") is None
    check_op(lavapipe, SPEC, problem, result.record.params)
