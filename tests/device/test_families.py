"""Every model family in both exporter styles through ``kernelforge.load`` on lavapipe (WGSL) and llvmpipe (GLSL).

Each must become the kernels expected of it (``KERNELS`` of ``tests/null/test_families_build.py``: one
``attention`` per transformer layer, one ``layernorm`` per LayerNorm also where it was written out, GELU in the
GEMM or conv epilogue, ...) and match ONNX Runtime CPU. Tolerances, relative to the largest output magnitude:

* float32: 1e-4. Measured at most 2e-6 on both languages (float32 sums in other orders, the shaders' erf and
  exp); a wrong mask, scale or layout is off by far more.
* float16 (onnxconverter-common: float16 weights, onnxruntime computing partly in float16): kernelforge computes
  in float32 on the converted weights, so it must match the float32 model on those rounded weights
  (``fp16_weights``) within 1e-4, or 1e-3 with float16 inputs and outputs (their rounding, 2^-11 of a value);
  and be off the original float32 model by at most 1.25 times what onnxruntime's own run of the float16 file
  is (at its default optimizations or none). Measured: 7e-4 to 1.5e-3 off float32 (ViT 1.5e-3, U-Net 1e-3).
* quantized (onnxruntime's ``quantize_static`` QDQ and ``quantize_dynamic``): onnxruntime's unoptimized run of
  the file is its float semantics, matched within 1e-3 (measured: exactly for QDQ, whose outputs are quantized
  and whose rounding is exact on every device; 3e-7 for dynamic); its optimized run fuses integer kernels that
  round elsewhere. Off the float32 model by no more than onnxruntime's own run is (2e-2 to 1.7e-1: these
  models are calibrated on 8 random inputs).
"""

from __future__ import annotations

import functools
from collections import Counter
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import kernelforge
from kernelforge.testing.families import FAMILIES, STYLES, family_feeds, fp16, fp16_weights
from kernelforge.testing.quantized import TIE_MARGIN, quantize, semantics_mismatch

from ..null.test_families_build import GELU_EPILOGUES, KERNELS

pytestmark = pytest.mark.device
RTOL = 1e-4  # of the largest output magnitude (float32)
# float16 models: kernelforge computes on the converted weights in float32, onnxruntime partly in float16; both
# are off the float32 model mostly by the weights' rounding, by amounts that differ by a few percent either way
FP16_MARGIN = 1.25
FP16 = [
    ("vit_tiny", "dynamo"),
    ("vit_tiny", "legacy"),
    ("bert", "dynamo"),
    ("bert", "legacy"),
    ("gpt2", "legacy"),
    ("unet_style", "dynamo"),
    ("whisper_style", "legacy"),
]
QUANTIZED = [
    ("bert", "legacy", "dynamic"),
    ("yolo_style", "dynamo", "static"),
    ("vit_tiny", "dynamo", "static"),
    ("unet_pooled", "legacy", "static"),
    ("kws_style", "legacy", "static_per_channel"),
    ("whisper_style", "dynamo", "static"),
]
SEEDS = range(4)


@pytest.fixture(scope="module", params=["wgsl", "glsl"])
def device(request: pytest.FixtureRequest) -> tuple[Any, str]:
    """(device info, language): lavapipe for WGSL, llvmpipe-GL for GLSL."""
    backend = request.getfixturevalue("lavapipe" if request.param == "wgsl" else "gl")
    return backend.info, request.param


def _ort(model: onnx.ModelProto, feeds: dict[str, np.ndarray], optimized: bool = True) -> list[np.ndarray]:
    options = ort.SessionOptions()
    if not optimized:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return list(session.run(None, feeds))


def _error(got: np.ndarray, want: np.ndarray) -> float:
    """Largest absolute difference relative to the largest magnitude of ``want``."""
    return float(np.abs(got.astype(np.float64) - want).max() / np.abs(want.astype(np.float64)).max())


def _load(model: onnx.ModelProto, device: tuple[Any, str]) -> Any:
    info, language = device
    return kernelforge.load(model, device=info.index, backend=language)


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_family_matches_onnxruntime(device, name, style):
    model = FAMILIES[name](style)
    session = _load(model, device)
    for seed in (0, 1):
        feeds = family_feeds(model, seed=seed, padding=2)
        got = session.run(feeds)
        for out, want in zip(model.graph.output, _ort(model, feeds), strict=True):
            assert got[out.name].shape == want.shape, out.name
            np.testing.assert_allclose(
                got[out.name], want, rtol=0, atol=RTOL * float(np.abs(want).max()), err_msg=f"{name} {style} {out.name}"
            )
    ops = Counter(step.call.op for step in session.steps)
    assert {op: ops[op] for op in KERNELS[name]} == KERNELS[name], dict(ops)
    gelus = [s for s in session.steps if getattr(s.node.attrs.get("activation"), "kind", "") == "gelu"]
    assert len(gelus) == GELU_EPILOGUES.get(name, 0), dict(ops)


@functools.cache
def _fp16_model(name: str, style: str, keep_io_types: bool) -> onnx.ModelProto:
    return fp16(FAMILIES[name](style), keep_io_types)


@pytest.mark.parametrize("keep_io_types", [True, False])
@pytest.mark.parametrize(("name", "style"), FP16)
def test_fp16_model_within_onnxruntimes_own_error(device, name, style, keep_io_types):
    base = FAMILIES[name](style)
    model, rounded = _fp16_model(name, style, keep_io_types), fp16_weights(base)
    session = _load(model, device)
    ours = own = 0.0
    for seed in SEEDS:
        feeds = family_feeds(model, seed, padding=2)
        exact = {k: v.astype(np.float32) if v.dtype == np.float16 else v for k, v in feeds.items()}
        (want,) = _ort(base, family_feeds(base, seed, padding=2))
        (got,) = session.run(feeds).values()
        assert got.dtype == (np.float32 if keep_io_types else np.float16)
        ours = max(ours, _error(got, want))
        own = max(own, *(_error(_ort(model, feeds, level)[0], want) for level in (True, False)))
        # what kernelforge computes: the converted weights in float32, as tight as float32 models; float16 inputs
        # and outputs add their rounding (2^-11 of a value) and its spread through the net
        (weights_only,) = _ort(rounded, exact)
        assert _error(got, weights_only) < (1e-4 if keep_io_types else 1e-3), f"{name} {style} seed {seed}"
    assert own > 0
    assert ours <= FP16_MARGIN * own, f"{name} {style} fp16 on {device[1]}: {ours:.3g} off fp32, onnxruntime {own:.3g}"


@functools.cache
def _quantized_model(name: str, style: str, kind: str) -> onnx.ModelProto:
    return quantize(FAMILIES[name](style), kind)


@pytest.mark.parametrize(("name", "style", "kind"), QUANTIZED)
def test_quantized_model_matches_onnxruntimes_float_semantics(device, name, style, kind):
    base, model = FAMILIES[name](style), _quantized_model(name, style, kind)
    session = _load(model, device)
    ours = own = 0.0
    for seed in SEEDS:
        feeds = family_feeds(base, seed, padding=2)
        (want,) = _ort(base, feeds)
        (got,) = session.run(feeds).values()
        # the QDQ float semantics (dequantize, compute in float32, quantize) are onnxruntime's unoptimized run;
        # its optimized run fuses integer kernels that round elsewhere, off by whole quantization steps
        (semantics,) = _ort(model, feeds, optimized=False)
        why = semantics_mismatch(got, semantics)
        assert why is None, f"{name} {style} ({kind}) on {device[1]}, seed {seed}: {why}"
        ours = max(ours, _error(got, want))
        own = max(own, *(_error(_ort(model, feeds, level)[0], want) for level in (True, False)))
    assert own > 0, "onnxruntime's quantized run equals the fp32 model: the model is not quantized"
    # as far from fp32 as onnxruntime's own run, up to float32 rounding of the same quantized values and the odd
    # tie that rounds the other way (TIE_MARGIN)
    where = f"{name} {style} ({kind}) on {device[1]}"
    assert ours <= own * TIE_MARGIN + 1e-6, f"{where}: {ours:.3g} from fp32, onnxruntime's own {own:.3g}"
