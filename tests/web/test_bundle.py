"""Exported bundles of real models in headless Chromium: WebGPU and WebGL2 outputs against ONNX Runtime CPU.

Each model is exported with the repository's tuning database, served over HTTP and run by the bundle's own
``kernelforge.js`` in both backends; outputs must match ONNX Runtime within 1e-3 of the largest output.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
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
from kernelforge.testing.light import light_models, randomized
from kernelforge.testing.models import MODELS, save
from kernelforge.testing.tuning import subgroup_db

from ..null.test_layernorm_spec import layernorm_model, mlp_layernorm_model
from ..null.test_models_build import feeds_for
from ..null.test_onnx_reduce import group_norm_model, squeeze_excite_model

pytestmark = pytest.mark.device

REPO_DB = Path(__file__).resolve().parents[2] / "tuning_db"
# the array type kernelforge.js returns for an output of each dtype (FORMAT.md)
ARRAY_TYPES = {"float32": "Float32Array", "float16": "Float32Array", "int64": "BigInt64Array", "bool": "Uint8Array"}

RUN_JS = """
async ([base, backend, inputs, target]) => {
  const kf = await import(base + "kernelforge.js");
  const m = await kf.load(base + "manifest.json", {backend, target: target || undefined});
  const feeds = {};
  // int64 inputs as BigInt64Array (as onnxruntime-web takes them), every other as a Float32Array
  for (const {name, dtype} of m.inputs) {
    feeds[name] = dtype === "int64" ? BigInt64Array.from(inputs[name], BigInt) : new Float32Array(inputs[name]);
  }
  const out = await m.run(feeds);
  const again = await m.run(feeds);  // a second run reuses every buffer: it must give the same result
  const outputs = {}, same = {}, types = {};
  for (const [name, values] of Object.entries(out)) {
    outputs[name] = Array.from(values, Number);
    types[name] = values.constructor.name;
    same[name] = values.every((v, i) => Object.is(v, again[name][i]));
  }
  const info = {backend: m.backend, device: m.device, memory: m.memory, outputs, same, types};
  m.dispose();
  return info;
}
"""


def _models(root: Path) -> dict[str, Path]:
    names = ("mlp", "small_cnn", "mobilenet_v2_style", "masked_tokens")
    paths = {name: save(MODELS[name](), root / f"{name}.onnx") for name in names}
    squeeze = randomized(onnx.load(str(light_models()["squeezenet"])), seed=1)
    paths["squeezenet"] = save(squeeze, root / "squeezenet.onnx")
    # LayerNormalization: after a MatMul over the last axis, and alone over the last two axes without B
    paths["layernorm"] = save(mlp_layernorm_model(17), root / "layernorm.onnx")
    paths["layernorm_axes"] = save(layernorm_model((2, 3, 4, 5), 2, 1e-3, False, 18)[0], root / "layernorm_axes.onnx")
    paths["group_norm"] = save(group_norm_model()[0], root / "group_norm.onnx")
    paths["reductions"] = save(squeeze_excite_model()[0], root / "reductions.onnx")
    return paths


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, Path], Path]]:
    root = tmp_path_factory.mktemp("bundles")
    models = _models(tmp_path_factory.mktemp("models"))
    for name, path in models.items():
        export(path, root / name, db=REPO_DB)
    # a SwiftShader plan with a 4-lane subgroup kernel, and one with an 8-lane one (which SwiftShader cannot run)
    dbs = tmp_path_factory.mktemp("dbs")
    for lanes in (4, 8):
        db = subgroup_db(dbs / f"{lanes}", models["mobilenet_v2_style"], lanes, lanes)
        export(models["mobilenet_v2_style"], root / f"subgroups{lanes}", db=db)
    (root / "blank.html").write_text("<!doctype html><title>kernelforge tests</title>")
    with chromium.serve(root) as base:
        yield base, models, root


def _open(page: Any, base: str) -> None:
    if not page.url.startswith(base):
        page.goto(base + "blank.html")


def _run(page: Any, base: str, model: str, backend: str, feeds: dict[str, np.ndarray], target: str = "") -> Any:
    _open(page, base)
    inputs = {k: v.reshape(-1).tolist() for k, v in feeds.items()}
    return page.evaluate(RUN_JS, [f"{base}{model}/", backend, inputs, target])


def _feeds(path: Path) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = feeds_for(onnx.load(str(path)))
    want = dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds), strict=True))
    return feeds, want


@pytest.mark.parametrize("backend", ["webgpu", "webgl2"])
@pytest.mark.parametrize(
    "model",
    [
        "mlp",
        "small_cnn",
        "mobilenet_v2_style",
        "squeezenet",
        "layernorm",
        "layernorm_axes",
        "masked_tokens",
        "group_norm",
        "reductions",
    ],
)
def test_bundle_matches_onnxruntime(browser_page: Any, served: Any, model: str, backend: str) -> None:
    base, models, _ = served
    feeds, want = _feeds(models[model])
    got = _run(browser_page, base, model, backend, feeds)
    assert got["backend"] == backend
    assert set(got["outputs"]) == set(want)
    for name, expected in want.items():
        assert got["types"][name] == ARRAY_TYPES[expected.dtype.name], f"{model} {name}: {got['types'][name]}"
        if expected.dtype.kind != "f":  # integers and bools: exactly
            np.testing.assert_array_equal(np.asarray(got["outputs"][name]).reshape(expected.shape), expected)
            continue
        values = np.asarray(got["outputs"][name], np.float32).reshape(expected.shape)
        scale = float(np.abs(expected).max())
        assert scale > 0
        np.testing.assert_allclose(values, expected, rtol=0, atol=1e-3 * scale, err_msg=f"{model} {backend} {name}")
        assert got["same"][name], f"{model} {backend}: a second run gave other values"


def test_webgpu_picks_the_swiftshader_tuned_target(browser_page: Any, served: Any) -> None:
    base, models, _ = served
    feeds, _ = _feeds(models["mobilenet_v2_style"])
    got = _run(browser_page, base, "mobilenet_v2_style", "webgpu", feeds)
    device = got["device"]
    assert device["target"] == "google-swiftshader-vulkan/wgsl", device
    assert device["match"] == "exact" and "swiftshader" in device["adapter"]
    assert sum(n for k, n in device["kernels"].items() if k != "default") > 0


@pytest.mark.parametrize("lanes", [4, 8])
def test_subgroup_plans_run_only_where_the_subgroup_size_matches(browser_page: Any, served: Any, lanes: int) -> None:
    base, models, _ = served
    feeds, want = _feeds(models["mobilenet_v2_style"])
    got = _run(browser_page, base, f"subgroups{lanes}", "webgpu", feeds)
    device = got["device"]
    if lanes == 4:  # Chromium's SwiftShader: "subgroups" with subgroupMinSize == subgroupMaxSize == 4
        assert device["target"] == "google-swiftshader-vulkan/wgsl" and device["match"] == "exact", device
        assert device["kernels"]["tuned"] == 1
    else:  # the 8-lane plan is skipped, not run with wrong broadcasts
        assert device["target"] == "default/wgsl" and device["match"] == "default", device
    for name, expected in want.items():
        values = np.asarray(got["outputs"][name], np.float32).reshape(expected.shape)
        np.testing.assert_allclose(values, expected, rtol=0, atol=1e-3 * float(np.abs(expected).max()))


def test_forcing_a_plan_of_another_subgroup_size_names_both(browser_page: Any, served: Any) -> None:
    base, _, _ = served
    _open(browser_page, base)
    error = browser_page.evaluate(
        """async (base) => {
          const kf = await import(base + "kernelforge.js");
          try { await kf.load(base + "manifest.json", {target: "google-swiftshader-vulkan/wgsl"}); return ""; }
          catch (e) { return String(e.message || e); }
        }""",
        f"{base}subgroups8/",
    )
    assert "google-swiftshader-vulkan/wgsl needs subgroups of 8 lanes; this adapter has 4" in error, error


def test_webgl2_falls_back_by_class(browser_page: Any, served: Any) -> None:
    base, models, _ = served
    feeds, _ = _feeds(models["mlp"])
    device = _run(browser_page, base, "mlp", "webgl2", feeds)["device"]
    # no GLSL records of SwiftShader: llvmpipe's (the same class of software renderer) are taken
    assert device["target"] == "mesa-llvmpipe-gl-22.3/glsl" and device["match"] == "class", device


def test_forced_default_target_gives_the_same_result(browser_page: Any, served: Any) -> None:
    base, models, _ = served
    feeds, want = _feeds(models["small_cnn"])
    got = _run(browser_page, base, "small_cnn", "webgpu", feeds, target="default/wgsl")
    assert got["device"]["target"] == "default/wgsl"
    for name, expected in want.items():
        values = np.asarray(got["outputs"][name], np.float32).reshape(expected.shape)
        np.testing.assert_allclose(values, expected, rtol=0, atol=1e-3 * float(np.abs(expected).max()))


def test_truncated_weights_reject_load(browser_page: Any, served: Any) -> None:
    base, _, root = served
    broken = root / "broken"
    shutil.copytree(root / "small_cnn", broken, dirs_exist_ok=True)
    data = (broken / "weights.bin").read_bytes()
    (broken / "weights.bin").write_bytes(data[: len(data) // 2])
    _open(browser_page, base)
    error = browser_page.evaluate(
        """async (base) => {
          const kf = await import(base + "kernelforge.js");
          try { await kf.load(base + "manifest.json"); return ""; } catch (e) { return String(e.message || e); }
        }""",
        f"{base}broken/",
    )
    assert "truncated" in error and str(len(data) // 2) in error and str(len(data)) in error


def test_fp16_weights_stay_halves_on_the_gpu(browser_page: Any, served: Any) -> None:
    base, models, root = served
    export(models["small_cnn"], root / "small_cnn_fp16", db=REPO_DB, weights="fp16")
    feeds, want = _feeds(models["small_cnn"])
    # what the fp16 bundle should compute: the graph with its GEMM/conv weights rounded to fp16, in numpy
    exact = run_graph(prepare_graph(models["small_cnn"], weights="fp16"), feeds)
    for backend in ("webgpu", "webgl2"):
        fp32 = _run(browser_page, base, "small_cnn", backend, feeds)
        got = _run(browser_page, base, "small_cnn_fp16", backend, feeds)
        assert got["memory"] == _memory(root / "small_cnn_fp16", got["device"]["target"])
        assert got["memory"]["weights"] < 0.6 * fp32["memory"]["weights"], (got["memory"], fp32["memory"])
        for name, expected in want.items():
            values = np.asarray(got["outputs"][name], np.float32).reshape(expected.shape)
            scale = float(np.abs(expected).max())
            # the other constants are fp16 in weights.bin too (widened at load), so close to, not exactly, numpy's
            np.testing.assert_allclose(values, exact[name], rtol=0, atol=1e-3 * scale)
            # weights rounded to 11 significant bits: ~1e-3 relative per weight, a little more after sums
            np.testing.assert_allclose(values, expected, rtol=0, atol=1e-2 * scale)


def _memory(root: Path, target: str) -> dict[str, int]:
    """GPU bytes of a bundle's target plan as FORMAT.md counts them (Model.memory)."""
    manifest = json.loads((root / "manifest.json").read_text())
    plan = next(t["plan"] for t in manifest["targets"] if t["id"] == target)
    constants = manifest["constants"]

    def size(i: int) -> int:
        c = constants[i]
        if "dtype" not in c or "scale" in c:
            return 4 * c["count"]  # floats, or values widened to floats at load (an int4 bundle's halved scales)
        if c["dtype"] == "int4":
            return -(-c["count"] // 2)  # two a byte
        return (2 if c["dtype"] == "float16" else 1) * c["count"]

    if "vertex" not in plan:
        bound = {b["constant"] for s in plan["steps"] for b in s["bindings"] if "constant" in b}
        align = lambda n: max(4, -(-n // 4) * 4)  # noqa: E731
        return {"weights": sum(align(size(i)) for i in bound), "activations": sum(map(align, plan["buffers"]))}
    uploaded = {c["texture"] for c in plan.get("constants", [])}
    texel = {"int8": 1, "uint8": 1, "float16": 2}
    sizes = [t["width"] * t["height"] * t["pack"] * texel.get(t.get("dtype", ""), 4) for t in plan["textures"]]
    weights = sum(n for i, n in enumerate(sizes) if i in uploaded)
    return {"weights": weights, "activations": sum(sizes) - weights}


def test_int8_weights_run_as_the_quantized_graph_computes(browser_page: Any, served: Any) -> None:
    base, models, root = served
    export(models["small_cnn"], root / "small_cnn_int8", db=REPO_DB, weights="int8")
    feeds, want = _feeds(models["small_cnn"])
    # what the int8 bundle should compute: the graph with its weights quantized, in numpy
    exact = run_graph(prepare_graph(models["small_cnn"], weights="int8"), feeds)
    for backend in ("webgpu", "webgl2"):
        fp32 = _run(browser_page, base, "small_cnn", backend, feeds)
        got = _run(browser_page, base, "small_cnn_int8", backend, feeds)
        assert got["memory"] == _memory(root / "small_cnn_int8", got["device"]["target"])
        assert fp32["memory"] == _memory(root / "small_cnn", fp32["device"]["target"])
        assert got["memory"]["weights"] < 0.5 * fp32["memory"]["weights"], (got["memory"], fp32["memory"])
        for name, expected in want.items():
            values = np.asarray(got["outputs"][name], np.float32).reshape(expected.shape)
            scale = float(np.abs(expected).max())
            np.testing.assert_allclose(values, exact[name], rtol=0, atol=1e-5 * scale)
            # int8 weights move the fp32 model's outputs by about a step of 1/254 of each channel's range
            np.testing.assert_allclose(values, expected, rtol=0, atol=3e-2 * scale)
            assert np.abs(values - expected).max() > 1e-6 * scale  # the weights did change


def test_int4_weights_run_as_the_quantized_graph_computes(browser_page: Any, served: Any) -> None:
    base, models, root = served
    export(models["small_cnn"], root / "small_cnn_int4", db=REPO_DB, weights="int4")
    export(models["small_cnn"], root / "small_cnn_int8b", db=REPO_DB, weights="int8")
    feeds, want = _feeds(models["small_cnn"])
    # what the int4 bundle should compute: the graph with its weights quantized to int4, in numpy
    exact = run_graph(prepare_graph(models["small_cnn"], weights="int4"), feeds)
    for backend in ("webgpu", "webgl2"):
        int8 = _run(browser_page, base, "small_cnn_int8b", backend, feeds)
        got = _run(browser_page, base, "small_cnn_int4", backend, feeds)
        assert got["memory"] == _memory(root / "small_cnn_int4", got["device"]["target"])
        if backend == "webgpu":  # nibbles on the GPU; WebGL2 widens them to int8 texels
            assert got["memory"]["weights"] < int8["memory"]["weights"], (got["memory"], int8["memory"])
        for name, expected in want.items():
            values = np.asarray(got["outputs"][name], np.float32).reshape(expected.shape)
            scale = float(np.abs(expected).max())
            np.testing.assert_allclose(values, exact[name], rtol=0, atol=1e-5 * scale)
            assert np.abs(values - expected).max() > 1e-3 * scale  # 4-bit weights do move the outputs
