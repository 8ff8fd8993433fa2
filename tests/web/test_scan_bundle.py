"""Exported CumSum and ArgMax models in headless Chromium: WebGPU and WebGL2 outputs against ONNX Runtime CPU."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from kernelforge.export import export
from kernelforge.testing import chromium

from ..null.test_onnx_scan import left_padded_mask, position_ids_model
from .test_bundle import REPO_DB, RUN_JS

pytestmark = pytest.mark.device


def classifier_model() -> onnx.ModelProto:
    """x [4, 16] -> MatMul [16, 37] -> ArgMax(axis 1, keepdims 0): the class picks, int64."""
    w = np.random.default_rng(3).standard_normal((16, 37)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w"], ["logits"]),
            helper.make_node("ArgMax", ["logits"], ["label"], axis=1, keepdims=0),
        ],
        "classifier",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 16])],
        [helper.make_tensor_value_info("label", TensorProto.INT64, None)],
        [numpy_helper.from_array(w, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


MODELS = {
    "position_ids": lambda: (position_ids_model(), {"attention_mask": left_padded_mask()}),
    "classifier": lambda: (
        classifier_model(),
        {"x": np.random.default_rng(4).standard_normal((4, 16)).astype(np.float32)},
    ),
}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("scan_bundles")
    for name, build in MODELS.items():
        export(build()[0], root / name, db=REPO_DB)
    (root / "blank.html").write_text("<!doctype html><title>kernelforge tests</title>")
    with chromium.serve(root) as base:
        yield base


@pytest.mark.parametrize("backend", ["webgpu", "webgl2"])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_scan_bundles_match_onnxruntime(browser_page: Any, served: str, name: str, backend: str) -> None:
    model, feeds = MODELS[name]()
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    want = dict(zip([o.name for o in model.graph.output], session.run(None, feeds), strict=True))
    if not browser_page.url.startswith(served):
        browser_page.goto(served + "blank.html")
    inputs = {k: v.reshape(-1).tolist() for k, v in feeds.items()}
    got = browser_page.evaluate(RUN_JS, [f"{served}{name}/", backend, inputs, ""])
    assert got["backend"] == backend and set(got["outputs"]) == set(want)
    for output, expected in want.items():
        values = np.asarray(got["outputs"][output], np.float64).reshape(expected.shape)
        where = f"{name} {backend} {output}"
        if expected.dtype.kind in "iu":  # indices and positions: exact
            np.testing.assert_array_equal(values, expected, err_msg=where)
        else:
            atol = 1e-5 * float(np.abs(expected).max())
            np.testing.assert_allclose(values, expected, rtol=0, atol=atol, err_msg=where)
