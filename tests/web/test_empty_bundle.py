"""An exported model with empty outputs (a dim of 0) in headless Chromium: WebGPU and WebGL2 against ONNX Runtime."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from kernelforge.export import export
from kernelforge.testing import chromium

from ..null.test_gather_spec import ort_run
from ..null.test_onnx_empty import empty_pieces_model
from .test_bundle import ARRAY_TYPES, REPO_DB, RUN_JS

pytestmark = pytest.mark.device


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("empty_bundles")
    export(empty_pieces_model(extremes=False)[0], root / "empty_pieces", db=REPO_DB)
    (root / "blank.html").write_text("<!doctype html><title>kernelforge tests</title>")
    with chromium.serve(root) as base:
        yield base


@pytest.mark.parametrize("backend", ["webgpu", "webgl2"])
def test_empty_outputs_match_onnxruntime(browser_page: Any, served: str, backend: str) -> None:
    model, feeds = empty_pieces_model(extremes=False)
    want = ort_run(model, feeds)
    if not browser_page.url.startswith(served):
        browser_page.goto(served + "blank.html")
    inputs = {k: v.reshape(-1).tolist() for k, v in feeds.items()}
    got = browser_page.evaluate(RUN_JS, [f"{served}empty_pieces/", backend, inputs, ""])
    assert got["backend"] == backend and set(got["outputs"]) == set(want)
    for name, expected in want.items():
        assert got["types"][name] == ARRAY_TYPES[expected.dtype.name], f"{name}: {got['types'][name]}"
        values = np.asarray(got["outputs"][name], np.float64).reshape(expected.shape)
        scale = float(np.abs(expected).max(initial=1.0))
        np.testing.assert_allclose(values, expected, rtol=0, atol=1e-4 * scale, err_msg=f"{backend} {name}")
        assert got["same"][name], f"{backend} {name}: a second run gave other values"
    assert want["e"].shape == (2, 0) and want["s"].shape == (0,)
