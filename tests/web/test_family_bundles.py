"""Model families exported and run in headless Chromium on WebGPU and WebGL2, against ONNX Runtime CPU.

One bundle per family (the styles alternate across families; ``tests/device/test_families.py`` runs every
family in both natively) plus float16 and quantized conversions, all in the session's one page, held to the
tolerances of the native tests: float32 bundles within 1e-4 of the largest output magnitude (measured at most
2.1e-6 on SwiftShader's WebGPU and ANGLE's WebGL2); float16 bundles within 1e-4 (1e-3 with float16 inputs and
outputs) of the float32 model on the same rounded weights and off the float32 model by about what ONNX
Runtime's own run of the float16 file is; quantized bundles within 1e-3 of ONNX Runtime's unoptimized run of
the file (its float semantics) and off the float32 model by no more than ONNX Runtime's own run is.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from kernelforge.export import export
from kernelforge.graph.prepare import prepare_graph
from kernelforge.graph.reference import run_graph
from kernelforge.testing import chromium
from kernelforge.testing.families import FAMILIES, family_feeds, fp16, fp16_weights
from kernelforge.testing.quantized import TIE_MARGIN, quantize, semantics_mismatch
from kernelforge.testing.transformers import bert_style

from ..device.test_families import FP16_MARGIN
from .test_bundle import REPO_DB, RUN_JS

pytestmark = pytest.mark.device
RTOL = 1e-4  # of the largest output magnitude (float32)
FLOAT32 = [
    ("vit_tiny", "dynamo"),
    ("vit_tiny", "legacy"),
    ("yolo_style", "legacy"),
    ("unet_style", "dynamo"),
    ("unet_pooled", "legacy"),
    ("kws_style", "legacy"),
    ("whisper_style", "dynamo"),
    ("bert", "legacy"),
    ("gpt2", "dynamo"),
    ("gpt2_kv_step", "legacy"),
]
Convert = Callable[[onnx.ModelProto], onnx.ModelProto]
# converted bundles: (family, style, conversion)
FLOAT16: dict[str, tuple[str, str, Convert]] = {
    "vit_tiny_fp16": ("vit_tiny", "dynamo", lambda m: fp16(m, keep_io_types=False)),
    "unet_fp16": ("unet_style", "dynamo", lambda m: fp16(m, keep_io_types=True)),
}
QUANTIZED: dict[str, tuple[str, str, Convert]] = {
    "yolo_static": ("yolo_style", "dynamo", lambda m: quantize(m, "static")),
    "bert_dynamic": ("bert", "legacy", lambda m: quantize(m, "dynamic")),
    # GELU's Erf + 1 quantized on the Erf's own scale: float32 quotients exactly half-way, which SwiftShader's
    # division by a constant moves (``tests/device/test_round_div.py``)
    "whisper_static": ("whisper_style", "dynamo", lambda m: quantize(m, "static")),
}
SEEDS = range(2)
WIDE_VOCAB = 1000
BACKENDS = ["webgpu", "webgl2"]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, onnx.ModelProto]]]:
    root = tmp_path_factory.mktemp("family_bundles")
    models = {f"{name}_{style}": FAMILIES[name](style) for name, style in FLOAT32}
    for key, (name, style, convert) in {**FLOAT16, **QUANTIZED}.items():
        models[key] = convert(FAMILIES[name](style))
    for key, model in models.items():
        export(model, root / key, db=REPO_DB)
    for weights in ("int8", "int4"):  # the text models' embedding tables stored int8, dequantized at load
        export(models["bert_legacy"], root / f"bert_{weights}", db=REPO_DB, weights=weights)
    # a table of 1,000 rows: its row scales are a float constant of weights.bin, not manifest text
    models["bert_wide"] = bert_style(vocab=WIDE_VOCAB)
    export(models["bert_wide"], root / "bert_wide_int8", db=REPO_DB, weights="int8")
    (root / "blank.html").write_text("<!doctype html><title>kernelforge tests</title>")
    with chromium.serve(root) as base:
        yield base, models


def _run(page: Any, base: str, key: str, backend: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    if not page.url.startswith(base):
        page.goto(base + "blank.html")
    inputs = {k: (v.astype(np.float64) if v.dtype.kind == "f" else v).reshape(-1).tolist() for k, v in feeds.items()}
    got = page.evaluate(RUN_JS, [f"{base}{key}/", backend, inputs, ""])
    assert got["backend"] == backend
    assert all(got["same"].values()), f"{key} {backend}: a second run gave other values"
    return {name: np.asarray(values, np.float64) for name, values in got["outputs"].items()}


def _ort(model: onnx.ModelProto, feeds: dict[str, np.ndarray], optimized: bool = True) -> list[np.ndarray]:
    options = ort.SessionOptions()
    if not optimized:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return list(session.run(None, feeds))


def _error(got: np.ndarray, want: np.ndarray) -> float:
    """Largest absolute difference relative to the largest magnitude of ``want``."""
    want = want.astype(np.float64)
    return float(np.abs(got.reshape(want.shape) - want).max() / np.abs(want).max())


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("name", "style"), FLOAT32)
def test_family_bundle_matches_onnxruntime(browser_page: Any, served: Any, name: str, style: str, backend: str) -> None:
    base, models = served
    model = models[f"{name}_{style}"]
    feeds = family_feeds(model, seed=3, padding=2)
    got = _run(browser_page, base, f"{name}_{style}", backend, feeds)
    for out, want in zip(model.graph.output, _ort(model, feeds), strict=True):
        assert _error(got[out.name], want) <= RTOL, f"{name} {style} {backend} {out.name}"


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("key", sorted(FLOAT16))
def test_fp16_bundle_within_onnxruntimes_own_error(browser_page: Any, served: Any, key: str, backend: str) -> None:
    base, models = served
    name, style, _ = FLOAT16[key]
    fp32, model = FAMILIES[name](style), models[key]
    ours = own = 0.0
    for seed in SEEDS:
        feeds = family_feeds(model, seed, padding=2)
        exact = {k: v.astype(np.float32) if v.dtype == np.float16 else v for k, v in feeds.items()}
        (want,) = _ort(fp32, family_feeds(fp32, seed, padding=2))
        (got,) = _run(browser_page, base, key, backend, feeds).values()
        (weights_only,) = _ort(fp16_weights(fp32), exact)
        io_fp16 = model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
        assert _error(got, weights_only) < (1e-3 if io_fp16 else 1e-4), f"{key} {backend} seed {seed}"
        ours = max(ours, _error(got, want))
        own = max(own, *(_error(_ort(model, feeds, level)[0], want) for level in (True, False)))
    assert own > 0 and ours <= FP16_MARGIN * own, f"{key} {backend}: {ours:.3g} off fp32, onnxruntime {own:.3g}"


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("key", sorted(QUANTIZED))
def test_quantized_bundle_matches_onnxruntime(browser_page: Any, served: Any, key: str, backend: str) -> None:
    base, models = served
    name, style, _ = QUANTIZED[key]
    fp32, model = FAMILIES[name](style), models[key]
    ours = own = 0.0
    for seed in SEEDS:
        feeds = family_feeds(model, seed, padding=2)
        (want,) = _ort(fp32, feeds)
        (got,) = _run(browser_page, base, key, backend, feeds).values()
        why = semantics_mismatch(got, _ort(model, feeds, optimized=False)[0])
        assert why is None, f"{key} {backend} seed {seed}: {why}"
        ours = max(ours, _error(got, want))
        own = max(own, *(_error(_ort(model, feeds, level)[0], want) for level in (True, False)))
    # as far from fp32 as onnxruntime's own run, up to float32 rounding of the same quantized values and the odd
    # tie that rounds the other way (TIE_MARGIN)
    assert own > 0 and ours <= own * TIE_MARGIN + 1e-6, f"{key} {backend}: {ours:.3g} from fp32, ORT's {own:.3g}"


def test_every_target_runs_the_fused_kernels(tmp_path: Path) -> None:
    expected = {"vit_tiny": ("attention", 2), "gpt2_kv_step": ("attention", 2), "unet_style": ("conv_transpose2d", 2)}
    for name, (op, count) in expected.items():
        export(FAMILIES[name]("legacy"), tmp_path / name, db=REPO_DB)
        manifest = json.loads((tmp_path / name / "manifest.json").read_text())
        for target in manifest["targets"]:
            ops = [s["op"] for s in target["plan"]["steps"]]
            assert ops.count(op) == count and "softmax" not in ops, (name, target["id"])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    ("key", "model_key", "weights"),
    [
        ("bert_int8", "bert_legacy", "int8"),
        ("bert_int4", "bert_legacy", "int4"),
        ("bert_wide_int8", "bert_wide", "int8"),
    ],
)
def test_quantized_weights_bundle_with_an_int8_embedding_table(
    browser_page: Any, served: Any, backend: str, key: str, model_key: str, weights: str
) -> None:
    base, models = served
    model = models[model_key]
    graph = prepare_graph(model, weights=weights)
    tables = [n.inputs[0] for n in graph.nodes if n.op == "gather" and graph.value(n.inputs[0]).quant is not None]
    assert tables  # the word embeddings: int8 rows in weights.bin, floats once the runtime dequantized them
    if model_key == "bert_wide":
        with urllib.request.urlopen(f"{base}{key}/manifest.json") as response:
            constants = json.loads(response.read())["constants"]
        assert any(isinstance(c.get("scale"), dict) for c in constants)  # the row scales the runtime must find
    vocab = WIDE_VOCAB if model_key == "bert_wide" else 100
    for seed in SEEDS:
        feeds = family_feeds(model, seed, vocab=vocab, padding=2)
        got = _run(browser_page, base, key, backend, feeds)
        want = run_graph(graph, feeds)
        for name, values in want.items():
            assert _error(got[name], values) <= RTOL, f"bert {weights} {backend} {name} seed {seed}"
