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
