"""Bundles of quantized models in headless Chromium: int8 weights widened by kernelforge.js, against onnxruntime.

Each model is quantized by onnxruntime's own tools, exported with the repository's tuning database, served over
HTTP and run by the bundle's ``kernelforge.js`` on WebGPU and WebGL2. The tolerance of each model is what
onnxruntime's quantized result shows against the fp32 model over the same inputs.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from kernelforge.export import export
from kernelforge.testing import chromium
from kernelforge.testing.models import MODELS
from kernelforge.testing.quantized import quantized

from .test_bundle import REPO_DB, RUN_JS

pytestmark = pytest.mark.device

CASES = {
    "mnv2_static": ("mobilenet_v2_style", "static_per_channel"),
    "small_cnn_static": ("small_cnn", "static"),
    "mlp_dynamic": ("mlp", "dynamic"),
}
SAMPLES = 3


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, onnx.ModelProto], Path]]:
    root = tmp_path_factory.mktemp("quant_bundles")
    models = {case: quantized(name, kind) for case, (name, kind) in CASES.items()}
    for case, model in models.items():
        export(model, root / case, db=REPO_DB)
    (root / "blank.html").write_text("<!doctype html><title>kernelforge tests</title>")
    with chromium.serve(root) as base:
        yield base, models, root


def _ort(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(None, feeds)[0])


def _run(page: Any, base: str, case: str, backend: str, x: np.ndarray) -> Any:
    if not page.url.startswith(base):
        page.goto(base + "blank.html")
    return page.evaluate(RUN_JS, [f"{base}{case}/", backend, {"x": x.reshape(-1).tolist()}, ""])


@pytest.mark.parametrize("backend", ["webgpu", "webgl2"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_quantized_bundle_matches_onnxruntime(browser_page: Any, served: Any, case: str, backend: str) -> None:
    base, models, _ = served
    model, fp32 = models[case], MODELS[CASES[case][0]]()
    shape = tuple(d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim)
    ours = own = 0.0
    for seed in range(SAMPLES):
        x = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
        got = _run(browser_page, base, case, backend, x)
        assert got["backend"] == backend
        (name,) = got["outputs"]
        want = _ort(model, {"x": x})
        values = np.asarray(got["outputs"][name], np.float32).reshape(want.shape)
        assert got["same"][name], f"{case} {backend}: a second run gave other values"
        ours = max(ours, float(np.abs(values - want).max()))
        own = max(own, float(np.abs(want - _ort(fp32, {"x": x})).max()))
    assert own > 0 and ours <= own, f"{case} on {backend}: {ours:.3g} from onnxruntime, tolerance {own:.3g}"


def test_the_served_bundles_ship_int8_weights(served: Any, tmp_path: Path) -> None:
    _, _, root = served
    for case, (name, _) in CASES.items():
        manifest = json.loads((root / case / "manifest.json").read_text())
        assert any(c.get("dtype") == "int8" for c in manifest["constants"]), case
        fp32 = export(MODELS[name](), tmp_path / case, db=REPO_DB)
        size = (root / case / "weights.bin").stat().st_size
        # 6,304 weights: per-constant scales, zero points and alignment weigh in (see tests/null/test_export_quant.py)
        assert size < 0.5 * fp32.weights_bytes, (case, size, fp32.weights_bytes)
