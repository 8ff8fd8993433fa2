"""NaN and infinities flow through every op as through the numpy reference (and ONNX Runtime): a NaN input never
becomes a finite output, on every device and in both kernel languages."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from kernelforge.ops import get_op
from kernelforge.runtime.kernel import prepare
from kernelforge.testing.ops import sampled_configs

pytestmark = [pytest.mark.device, pytest.mark.filterwarnings("ignore::RuntimeWarning")]  # numpy on NaN

SPECIALS = np.array([np.nan, np.inf, -np.inf, -np.nan], np.float32)

# (op, shape, inputs that get NaN/inf planted, whether infinities too: only where both reference and kernel
# have one meaning for them; e.g. exp(inf - inf) is NaN in numpy but a kernel's running max may differ)
CASES: list[tuple[str, str, tuple[int, ...], bool]] = [
    ("elementwise", "relu(x):x=2x3x8x8", (0,), True),
    ("elementwise", "clip(x, -1, 2):x=2x3x8x8", (0,), True),
    ("elementwise", "clip(x, 0, 6) + y:x=1x4x5x5,y=1x4x5x5", (0, 1), True),
    ("elementwise", "tanh(x):x=257", (0,), True),
    ("elementwise", "hardsigmoid(x):x=64", (0,), True),
    ("elementwise", "hardswish(x):x=64", (0,), False),
    ("elementwise", "leaky_relu(x, 0.1):x=64", (0,), True),
    ("elementwise", "sigmoid(x):x=64", (0,), True),
    ("elementwise", "exp(x):x=64", (0,), False),
    ("elementwise", "gelu(x):x=64", (0,), False),
    ("elementwise", "x / y + 1:x=64,y=64", (0, 1), False),
    ("elementwise", "max(x, y):x=3x16,y=3x16", (0, 1), True),
    ("elementwise", "min(x, y):x=3x16,y=16", (0, 1), True),
    ("elementwise", "relu(x * a + b):x=1x8x6x6,a=8x1x1,b=8x1x1", (0,), True),
    ("gemm", "4x24x16", (0,), False),
    ("gemm", "8x12x20", (0, 1), False),
    ("conv2d", "1x8x10x10:8x3x3:s1:p1", (0,), False),
    ("pool2d", "max:1x8x9x9:k3:s2:p1", (0,), True),
    ("pool2d", "max:1x8x8x8:k2:s2", (0,), True),
    ("pool2d", "gmax:1x8x7x7", (0,), True),
    ("pool2d", "avg:1x8x9x9:k3:s2:p1", (0,), True),
    ("pool2d", "gavg:1x8x7x7", (0,), True),
    ("softmax", "6x20:a1", (0,), False),
    ("softmax", "4x6x5:a1", (0,), False),
    ("layernorm", "6x32", (0,), False),
    ("concat", "1x4x5x5+1x3x5x5:a1", (0, 1), True),
    ("transpose", "2x3x4x5:p0231", (0,), True),
    ("pad", "1x3x6x6:p0,0,1,1,0,0,1,1:reflect", (0,), True),
    ("resize", "1x4x6x6:s2,2:nearest:asymmetric", (0,), True),
    ("resize", "1x4x6x6:s2,2:linear:half_pixel", (0,), False),
]


def _plant(inputs: list[np.ndarray], which: tuple[int, ...], infinities: bool, rng: np.random.Generator) -> None:
    """Put NaN (and +-inf) at a few random places of the chosen inputs, in place."""
    specials = SPECIALS if infinities else SPECIALS[[0, 3]]
    for k in which:
        flat = inputs[k].reshape(-1)
        spots = rng.choice(flat.size, min(flat.size, max(2, flat.size // 23)), replace=False)
        flat[spots] = rng.choice(specials, spots.size)


def _same(out: np.ndarray, ref: np.ndarray, what: str, bound: float = 1e-4) -> None:
    assert out.shape == ref.shape, what
    np.testing.assert_array_equal(np.isnan(out), np.isnan(ref), err_msg=f"{what}: NaN where the reference has none")
    finite = np.isfinite(ref)
    np.testing.assert_array_equal(out[~finite & ~np.isnan(ref)], ref[~finite & ~np.isnan(ref)], err_msg=what)
    scale = max(1.0, float(np.abs(ref[finite]).max(initial=0.0)))
    np.testing.assert_allclose(out[finite], ref[finite], rtol=0, atol=bound * scale, err_msg=what)


def _check(backend: Any, op: str, shape: str, which: tuple[int, ...], infinities: bool) -> None:
    spec = get_op(op)
    problem = spec.parse_problem(shape)
    rng = np.random.default_rng(3)
    inputs = [np.array(x, np.float32, copy=True) for x in spec.make_inputs(problem, rng)]
    _plant(inputs, which, infinities, rng)
    ref = spec.reference(problem, inputs)
    assert np.isnan(ref).any(), f"{shape}: the planted NaN must reach the reference's output"
    for params in sampled_configs(spec, problem, backend.limits, backend.language, 3, seed=1):
        out = prepare(backend, spec, problem, params, inputs).run()
        # the config's stated bound (f16 arithmetic: looser), NaN and infinities exactly as the reference's
        bound = spec.tolerance(problem, spec.validate_params(params, backend.language))
        _same(out, ref, f"{backend.info.slug} {backend.language} {op} {shape} {params}", bound)


@pytest.mark.parametrize(("op", "shape", "which", "infinities"), CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_nan_and_inf_propagate_in_wgsl(wgsl_device, op, shape, which, infinities):
    _check(wgsl_device, op, shape, which, infinities)


@pytest.mark.parametrize(("op", "shape", "which", "infinities"), CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_nan_and_inf_propagate_in_glsl(gl, op, shape, which, infinities):
    _check(gl, op, shape, which, infinities)


def test_the_reference_matches_onnx_runtime_on_nan():
    """The references are what ONNX Runtime computes for NaN: relu, clip, max and max-pooling keep it."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    x = np.array([[np.nan, -1.0, 2.0, np.inf, -np.inf, 0.5]], np.float32)
    nodes = [
        helper.make_node("Relu", ["x"], ["relu"]),
        helper.make_node("Clip", ["x", "lo", "hi"], ["clip"]),
        helper.make_node("Max", ["x", "zero"], ["max"]),
        helper.make_node("Tanh", ["x"], ["tanh"]),
    ]
    inits = [helper.make_tensor(n, TensorProto.FLOAT, [], [v]) for n, v in (("lo", 0.0), ("hi", 1.0), ("zero", 0.0))]
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("relu", "clip", "max", "tanh")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 6])], outs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 9
    ran = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})
    got = dict(zip(["relu", "clip", "max", "tanh"], ran, strict=True))
    eltwise = get_op("elementwise")
    for name, expr in (("relu", "relu(x)"), ("clip", "clip(x, 0, 1)"), ("max", "max(x, 0)"), ("tanh", "tanh(x)")):
        problem = eltwise.parse_problem(f"{expr}:x=1x6")
        np.testing.assert_array_equal(eltwise.reference(problem, [x]), got[name], err_msg=name)
