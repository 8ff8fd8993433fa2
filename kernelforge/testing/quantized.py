"""Quantized versions of the test models, made by onnxruntime's own tools (``onnxruntime.quantization``).

``static`` is ``quantize_static`` in the QDQ format (uint8 activations, int8 weights per tensor;
``static_per_channel``: weights per output channel), calibrated on a fixed set of seeded random inputs;
``dynamic`` is ``quantize_dynamic`` (DynamicQuantizeLinear, MatMulInteger, ConvInteger, int8 weights). The
same arguments give the same model. onnxruntime (a dev dependency) is imported only when a model is made.

    from kernelforge.testing.quantized import quantized
    model = quantized("mobilenet_v2_style", "static")
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from kernelforge.testing.models import MODELS

KINDS = ("static", "static_per_channel", "dynamic")
CALIBRATION_SAMPLES = 8
# How closely a run of a QDQ model follows onnxruntime's unoptimized (float) run of it. In a QDQ model a conv's
# float sum is a whole multiple of (input scale x weight scale), so it lands on a rounding tie (k + 1/2 steps) of
# the next QuantizeLinear far more often than chance; a different float32 summation order then rounds it to the
# other side, and that one step spreads to a few outputs (yolo_style, seed 3: conv_27 is 0.49999872 steps in
# onnxruntime and 0.5000002 here). So: all but TIE_SHARE of the outputs within QUANT_RTOL, none beyond TIE_RTOL.
QUANT_RTOL = 1e-3
TIE_SHARE = 0.01
TIE_RTOL = 0.02
# and so a run's largest error from the float32 model may exceed onnxruntime's by a tie's step
TIE_MARGIN = 1.05


# How closely compressed bundle weights keep an encoder to its float32 weights: the smallest cosine similarity
# between a token's hidden state (an output's last axis) and the float32 model's, on random token ids. Cosine,
# as sentence embeddings are compared; per token, stricter than a pooled embedding's. int4 is GPTQ-rounded
# against calibration inputs (``--calibrate``); rounded to nearest it is not held to a bound. Measured
# (benchmarks/results/weights.json, the MiniLM-shaped encoder, 100 inputs of 128 tokens): fp16 0.999999, int8
# 0.99971, int4 0.9883 (0.9563 rounded to nearest): GPTQ gains less here than in the CNNs, the random weights'
# layer inputs being nearly uncorrelated.
ENCODER_MIN_COS = {"fp16": 0.9999, "int8": 0.999, "int4": 0.98}


def cosines(got: np.ndarray, want: np.ndarray) -> np.ndarray:
    """Return the cosine similarity of each row (the last axis) of ``got`` with ``want``'s (two zero rows: 1)."""
    want = np.asarray(want, np.float64)
    got = np.asarray(got, np.float64).reshape(want.shape)
    a, b = np.linalg.norm(got, axis=-1), np.linalg.norm(want, axis=-1)
    both = (a > 0) & (b > 0)
    cos = (got * want).sum(-1) / np.where(both, a * b, 1.0)
    return np.where(both, cos, np.where((a == 0) & (b == 0), 1.0, 0.0))


def _inputs(model: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    return {i.name: tuple(d.dim_value for d in i.type.tensor_type.shape.dim) for i in model.graph.input}


def calibration_feeds(model: onnx.ModelProto, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """Return the calibration inputs: standard normal samples from one seeded rng, as the models' tests feed."""
    rng = np.random.default_rng(seed)
    shapes = _inputs(model)
    return [
        {name: rng.standard_normal(shape).astype(np.float32) for name, shape in shapes.items()}
        for _ in range(CALIBRATION_SAMPLES)
    ]


def semantics_mismatch(got: np.ndarray, want: np.ndarray) -> str | None:
    """Say how ``got`` departs from ``want`` (onnxruntime's unoptimized run) beyond tie flips; None if it does not.

    Errors are relative to the largest magnitude of ``want``; see :data:`QUANT_RTOL`.
    """
    want = np.asarray(want, np.float64)
    got = np.asarray(got, np.float64).reshape(want.shape)  # a browser's outputs come back flat
    error = np.abs(got - want) / max(float(np.abs(want).max()), 1e-30)
    share = float((error > QUANT_RTOL).mean())
    if share > TIE_SHARE or error.max() > TIE_RTOL:
        return f"{share:.2%} of outputs off by over {QUANT_RTOL:g}, the largest by {error.max():.3g}"
    return None


def quantize(model: onnx.ModelProto, kind: str, seed: int = 0) -> onnx.ModelProto:
    """Return ``model`` quantized by onnxruntime: ``kind`` is one of :data:`KINDS`.

    Raises:
        ValueError: For an unknown kind.
    """
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )

    if kind not in KINDS:
        raise ValueError(f"quantization kind must be one of {KINDS}, got {kind!r}")

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.samples = iter(calibration_feeds(model, seed))

        def get_next(self) -> dict[str, Any] | None:
            return next(self.samples, None)

    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "model.onnx", Path(tmp) / "quantized.onnx"
        onnx.save_model(model, str(src))
        # reduce_range: 7-bit weights. On x86 CPUs without VNNI, onnxruntime's uint8 x int8 kernels add pairs of
        # products in int16 and saturate (its documented caveat), so with full-range weights the reference itself
        # would be wrong; 7-bit weights keep its integer sums exact on every CPU
        if kind == "dynamic":
            quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, reduce_range=True)
        else:
            quantize_static(
                str(src),
                str(dst),
                Reader(),
                quant_format=QuantFormat.QDQ,
                per_channel=kind == "static_per_channel",
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                reduce_range=True,
            )
        return onnx.load_model(str(dst))


def quantized(name: str, kind: str, seed: int = 0, **options: Any) -> onnx.ModelProto:
    """Return test model ``name`` (of :data:`kernelforge.testing.models.MODELS`, built with ``options``) quantized."""
    return quantize(MODELS[name](**options), kind, seed)
