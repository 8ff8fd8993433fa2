"""Exported Gather models in headless Chromium: WebGPU and WebGL2 outputs against ONNX Runtime CPU."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from kernelforge.export import export
from kernelforge.testing import chromium

from ..null.test_gather_spec import cls_gemm_model, embedding_model, ort_run, runtime_indices_model
from .test_bundle import REPO_DB, RUN_JS

pytestmark = pytest.mark.device
MODELS = {
    "embedding": lambda: embedding_model(ids_in_graph=True),
    "cls_gemm": cls_gemm_model,
    "runtime_indices": runtime_indices_model,
}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("gather_bundles")
    for name, build in MODELS.items():
        export(build()[0], root / name, db=REPO_DB)
    (root / "blank.html").write_text("<!doctype html><title>kernelforge tests</title>")
    with chromium.serve(root) as base:
        yield base


@pytest.mark.parametrize("backend", ["webgpu", "webgl2"])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_gather_bundles_match_onnxruntime(browser_page: Any, served: str, name: str, backend: str) -> None:
    model, feeds = MODELS[name]()
    want = ort_run(model, feeds)
    if not browser_page.url.startswith(served):
        browser_page.goto(served + "blank.html")
    inputs = {k: v.reshape(-1).tolist() for k, v in feeds.items()}
    got = browser_page.evaluate(RUN_JS, [f"{served}{name}/", backend, inputs, ""])
    assert got["backend"] == backend and set(got["outputs"]) == set(want)
    for output, expected in want.items():
        values = np.asarray(got["outputs"][output], np.float32).reshape(expected.shape)
        scale = float(np.abs(expected).max())
        np.testing.assert_allclose(values, expected, rtol=0, atol=1e-4 * scale, err_msg=f"{name} {backend} {output}")
        assert got["same"][output], f"{name} {backend}: a second run gave other values"
