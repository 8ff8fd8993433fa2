"""f16 plans in headless Chromium: a bundle's f16 plan runs only where the adapter has ``shader-f16``.

The bundle is exported with ``precision="f16"``: every WebGPU target gets an f16 plan before its f32 plan (each
checked at export on lavapipe, which has the feature). Whatever Chromium's adapter exposes here is detected in the
page, and the test asserts the runtime took the plan that adapter can run, and that its results agree with the
numpy reference within the stated bound; ``precision: "f32"`` always takes the f32 plan, and ``"f16"`` rejects
on an adapter without the feature (or runs the f16 plan on one with it).
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kernelforge.export import export
from kernelforge.export.precision import MODEL_BOUND
from kernelforge.graph.prepare import prepare_graph
from kernelforge.graph.reference import run_graph
from kernelforge.testing import chromium
from kernelforge.testing.models import mlp

from .test_bundle import REPO_DB

pytestmark = pytest.mark.device

RUN_JS = """
async ([url, precision, x, backend]) => {
  const adapter = await navigator.gpu.requestAdapter({powerPreference: "high-performance"});
  const has = !!adapter && adapter.features.has("shader-f16");
  const kf = await import(url + "kernelforge.js");
  let m;
  try {
    m = await kf.load(url + "manifest.json", {backend, precision, tune: "off"});
  } catch (e) {
    return {has, error: String(e.message)};
  }
  const out = await m.run({x: new Float32Array(x)});
  const info = {has, device: m.device, y: Array.from(out.y)};
  m.dispose();
  return info;
}
"""


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Any]]:
    root = tmp_path_factory.mktemp("precision")
    model = mlp(size=128)
    report = export(model, root / "mlp", db=REPO_DB, precision="f16")
    assert any(c.passed for c in report.precision), report.summary()
    (root / "blank.html").write_text("<!doctype html><title>kernelforge tests</title>")
    with chromium.serve(root) as base:
        yield base, model


def _run(page: Any, base: str, precision: str, x: np.ndarray, backend: str = "webgpu") -> Any:
    if not page.url.startswith(base):
        page.goto(base + "blank.html")
    return page.evaluate(RUN_JS, [f"{base}mlp/", precision, x.reshape(-1).tolist(), backend])


def test_the_bundle_ships_f16_plans_before_f32_ones(served: Any, tmp_path: Path) -> None:
    _, model = served
    export(model, tmp_path, db=REPO_DB, precision="f16")
    ids = [
        (t["id"], t["plan"].get("f16", False)) for t in json.loads((tmp_path / "manifest.json").read_text())["targets"]
    ]
    assert ("default/wgsl-f16", True) in ids and ("default/wgsl", False) in ids
    assert ids.index(("default/wgsl-f16", True)) == ids.index(("default/wgsl", False)) - 1
    # no GLSL plan needs shader-f16: its half floats are textures (see the WebGL2 test below)
    assert all(not f16 for i, f16 in ids if i.endswith("/glsl"))


@pytest.mark.parametrize("precision", ["auto", "f32", "f16"])
def test_the_plan_the_adapter_can_run_is_taken(browser_page: Any, served: Any, precision: str) -> None:
    base, model = served
    graph = prepare_graph(model, None)
    x = np.random.default_rng(0).standard_normal(graph.value(graph.inputs[0]).shape).astype(np.float32)
    got = _run(browser_page, base, precision, x)
    if precision == "f16" and not got["has"]:
        assert "no shader-f16" in got.get("error", ""), got
        return
    assert "error" not in got, got
    want_f16 = got["has"] and precision != "f32"
    assert got["device"]["precision"] == ("f16" if want_f16 else "f32"), got["device"]
    assert got["device"]["target"].endswith("-f16") == want_f16, got["device"]
    ref = run_graph(graph, {"x": x})["y"]
    y = np.asarray(got["y"], np.float32).reshape(ref.shape)
    bound = MODEL_BOUND if want_f16 else 1e-4
    err = float(np.abs(y - ref).max() / np.abs(ref).max())
    assert err <= bound, f"{precision}: error {err:.3g} of the largest magnitude, bound {bound:g}"


def test_a_webgl2_plan_draws_half_float_textures_within_the_model_bound(browser_page: Any, served: Any) -> None:
    base, model = served
    with urllib.request.urlopen(f"{base}mlp/manifest.json") as response:
        manifest = json.loads(response.read())
    for target in (t for t in manifest["targets"] if t["language"] == "glsl"):
        plan = target["plan"]
        drawn = {ti for step in plan["steps"] for ti in step["targets"]}
        assert any(plan["textures"][ti].get("dtype") == "float16" for ti in drawn), target["id"]
    graph = prepare_graph(model, None)
    x = np.random.default_rng(1).standard_normal(graph.value(graph.inputs[0]).shape).astype(np.float32)
    got = _run(browser_page, base, "auto", x, "webgl2")
    assert "error" not in got, got
    assert got["device"]["precision"] == "f16" and got["device"]["target"].endswith("/glsl"), got["device"]
    ref = run_graph(graph, {"x": x})["y"]
    err = float(np.abs(np.asarray(got["y"], np.float32).reshape(ref.shape) - ref).max() / np.abs(ref).max())
    # float16 outputs: off the float32 reference by their rounding (so not within float32's 1e-6), within the bound
    assert 1e-6 < err <= MODEL_BOUND, f"error {err:.3g} of the largest magnitude"
