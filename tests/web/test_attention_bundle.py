"""Exported transformer layers in headless Chromium: WebGPU and WebGL2 outputs against ONNX Runtime CPU."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from kernelforge.export import export
from kernelforge.testing import chromium
from kernelforge.testing.transformers import TRANSFORMERS, token_feeds

from .test_bundle import REPO_DB, RUN_JS

pytestmark = pytest.mark.device
MODELS = {
    "bert": lambda: TRANSFORMERS["bert_style"](batch=2, seq=9),
    "gpt2": lambda: TRANSFORMERS["gpt2_style"](seq=12),
}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("attention_bundles")
    for name, build in MODELS.items():
        export(build(), root / name, db=REPO_DB)
    (root / "blank.html").write_text("<!doctype html><title>kernelforge tests</title>")
    with chromium.serve(root) as base:
        yield base


@pytest.mark.parametrize("backend", ["webgpu", "webgl2"])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_transformer_bundles_match_onnxruntime(browser_page: Any, served: str, name: str, backend: str) -> None:
    model = MODELS[name]()
    feeds = token_feeds(model, seed=3, padding=2)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (want,) = session.run(None, feeds)
    if not browser_page.url.startswith(served):
        browser_page.goto(served + "blank.html")
    inputs = {k: v.reshape(-1).tolist() for k, v in feeds.items()}
    got = browser_page.evaluate(RUN_JS, [f"{served}{name}/", backend, inputs, ""])
    assert got["backend"] == backend
    values = np.asarray(got["outputs"]["hidden_states"], np.float32).reshape(want.shape)
    np.testing.assert_allclose(values, want, rtol=0, atol=1e-4 * float(np.abs(want).max()), err_msg=f"{name} {backend}")
    assert got["same"]["hidden_states"], f"{name} {backend}: a second run gave other values"


def test_every_target_runs_one_attention_step_per_layer(tmp_path):
    export(MODELS["bert"](), tmp_path / "bert", db=REPO_DB)
    manifest = json.loads((tmp_path / "bert" / "manifest.json").read_text())
    for target in manifest["targets"]:
        ops = [s["op"] for s in target["plan"]["steps"]]
        assert ops.count("attention") == 1 and "softmax" not in ops, target["id"]
