"""Quantized models in native sessions on the software GPUs, against onnxruntime's quantized CPU run.

The tolerance of each model is what onnxruntime's own quantized result shows against the fp32 model, over the
same inputs: a session must follow onnxruntime's quantized run at least that closely. (On these devices it does
far closer: the fake-quantized activations round exactly as onnxruntime's integer kernels do, or one step of
the output's quantization apart.)
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import kernelforge
from kernelforge.testing.models import MODELS
from kernelforge.testing.quantized import quantized

pytestmark = pytest.mark.device

CASES = [("mobilenet_v2_style", "static"), ("mobilenet_v2_style", "static_per_channel"), ("mlp", "dynamic")]
SAMPLES = 4


@pytest.fixture(scope="module", params=["wgsl", "glsl"])
def device(request: pytest.FixtureRequest) -> tuple[Any, str]:
    """(device info, language): lavapipe for WGSL, llvmpipe-GL for GLSL."""
    backend = request.getfixturevalue("lavapipe" if request.param == "wgsl" else "gl")
    return backend.info, request.param


def _ort(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(None, feeds)[0])


@pytest.mark.parametrize(("name", "kind"), CASES)
def test_quantized_model_matches_onnxruntime(device: tuple[Any, str], name: str, kind: str) -> None:
    info, language = device
    model, fp32 = quantized(name, kind), MODELS[name]()
    session = kernelforge.load(model, device=info.index, backend=language)
    ours = own = 0.0
    for seed in range(SAMPLES):
        feeds = session.random_feeds(np.random.default_rng(seed))
        (got,) = session.run(feeds).values()
        want = _ort(model, feeds)
        assert got.shape == want.shape and got.dtype == want.dtype
        ours = max(ours, float(np.abs(got - want).max()))
        own = max(own, float(np.abs(want - _ort(fp32, feeds)).max()))
    assert own > 0, "onnxruntime's quantized run equals the fp32 model: the model is not quantized"
    assert ours <= own, f"{name} ({kind}) on {language}: {ours:.3g} from onnxruntime, tolerance {own:.3g}"


def test_dynamic_quantization_runs_its_statistics_on_the_device(device: tuple[Any, str]) -> None:
    info, language = device
    session = kernelforge.load(quantized("mlp", "dynamic"), device=info.index, backend=language)
    ops = [step.op for step in session.program.steps]
    # per DynamicQuantizeLinear: max of x and of -x (global pools), scale, zero point and the quantized tensor
    assert ops.count("pool2d") == 2 * 3 and "gemm" in ops


@pytest.mark.parametrize(("name", "kind"), CASES)
def test_quantized_weights_stay_integers_on_the_device(device: tuple[Any, str], name: str, kind: str) -> None:
    info, language = device
    model, fp32 = quantized(name, kind), MODELS[name]()
    program = kernelforge.load(model, device=info.index, backend=language).program
    floats = kernelforge.load(fp32, device=info.index, backend=language).program
    weights = {s.op: [] for s in program.steps}  # op -> kinds of the weight each GEMM/conv binds
    for step in program.steps:
        if step.op in ("gemm", "conv2d"):
            uploads = {u.resource: u for u in program.uploads}
            weight = uploads.get(step.inputs[1].resource)
            weights[step.op].append("none" if weight is None else weight.data.dtype.name)
    kinds = {k for ks in weights.values() for k in ks}
    assert kinds <= {"int8", "uint8"} and kinds, f"{name} ({kind}): GEMM/conv weights bound as {weights}"
    int_bytes = sum(u.data.nbytes for u in program.uploads if u.data.dtype.name in ("int8", "uint8"))
    float_bytes = sum(u.data.nbytes for u in floats.uploads if u.data.ndim > 1 or u.data.size > 64)
    assert int_bytes > 0 and int_bytes <= 0.3 * float_bytes, (int_bytes, float_bytes)
