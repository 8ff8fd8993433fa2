"""The image models of the browser benchmarks: saved at a size, one fixed input, ONNX Runtime CPU's output."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx

from kernelforge.testing.models import MODELS


def save_model(name: str, size: int, root: Path) -> tuple[onnx.ModelProto, Path]:
    """Build ``MODELS[name]`` for ``size``² inputs and save it under ``root``; return it and its path."""
    model = MODELS[name](size=size)
    path = root / f"{name}.onnx"
    onnx.save(model, str(path))
    return model, path


def reference(model: onnx.ModelProto, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Return the benchmarks' input (standard normal, seed 0) and ONNX Runtime CPU's output for it."""
    import onnxruntime as ort

    x = np.random.default_rng(0).standard_normal((1, 3, size, size)).astype(np.float32)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (expected,) = session.run(None, {"x": x})
    return x, expected


def max_rel_err(got: list[float], expected: np.ndarray) -> float:
    """Return the largest difference from ``expected``, relative to its largest magnitude."""
    out = np.asarray(got, np.float32).reshape(expected.shape)
    return float(np.abs(out - expected).max()) / float(np.abs(expected).max())
