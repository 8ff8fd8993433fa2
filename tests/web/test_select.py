"""Kernel selection at load in Chromium: a bundle without SwiftShader's records times its candidates there.

The bundle is exported from the repository's database less SwiftShader's records, so Chromium's SwiftShader is a
GPU nobody tuned: ``load()`` selects among each kernel's candidates (FORMAT.md, "Candidates"), remembers the
choice in IndexedDB and reports it; ``kernelforge db import`` turns the report into records under the browser's
device, and the next export matches it ``exact``. Every output is checked against ONNX Runtime CPU.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from kernelforge.cli import main as cli
from kernelforge.export import export
from kernelforge.testing import chromium
from kernelforge.testing.models import MODELS, save

pytestmark = pytest.mark.device

REPO_DB = Path(__file__).resolve().parents[2] / "tuning_db"
BUDGET_MS = 60000

SELECT = """async ([base, x, dims, tune]) => {
  const kf = await import(base + "kernelforge.js");
  const feeds = { x: { data: Float32Array.from(x), dims } };
  const stages = [];
  const m = await kf.load(base, { tune, onProgress: (p) => p.stage === "tune" && stages.push([p.loaded, p.total]) });
  const state = m.tuning.state;
  // the model runs while selection goes on
  const during = Array.from(Object.values(await m.run(feeds))[0]);
  const tuning = { ...(await m.tuned) };
  const after = Array.from(Object.values(await m.run(feeds))[0]);
  const report = m.tuningReport();
  m.dispose();
  return { state, tuning, device: m.device, during, after, report, stages };
}"""

STORED = """() => new Promise((done, no) => {
  const open = indexedDB.open("kernelforge", 1);
  open.onerror = no;
  open.onsuccess = () => {
    const req = open.result.transaction("choices").objectStore("choices").getAll();
    req.onsuccess = () => done(req.result);
    req.onerror = no;
  };
})"""

NO_STORAGE = {
    "throws": 'Object.defineProperty(globalThis, "indexedDB", { get() { throw new DOMException("no"); } });',
    # an open() whose request never answers, as a blocked or hung store does
    "hangs": 'Object.defineProperty(globalThis, "indexedDB", { value: { open: () => ({}) } });',
}


@pytest.fixture(scope="module")
def model() -> onnx.ModelProto:
    return MODELS["mobilenet_v2_style"](size=32)


@pytest.fixture(scope="module")
def served(model: onnx.ModelProto, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path, Path]]:
    """The untuned bundle ``plain/`` and the one exported with the full database ``exact/``; the model; a db."""
    root = tmp_path_factory.mktemp("served")
    path = save(model, tmp_path_factory.mktemp("model") / "mnv2.onnx")
    without = tmp_path_factory.mktemp("db") / "db"
    shutil.copytree(REPO_DB, without, ignore=shutil.ignore_patterns("*.lock", "google-swiftshader-*"))
    export(path, root / "plain", db=without)
    export(path, root / "other", db=without, candidates=3)  # another manifest of the same model
    export(path, root / "exact", db=REPO_DB)
    (root / "index.html").write_text("<!doctype html><title>select</title>")
    with chromium.serve(root) as base:
        yield base, path, without


def _input(size: int = 32) -> np.ndarray:
    return np.random.default_rng(0).standard_normal((1, 3, size, size)).astype(np.float32)


def _check(model: onnx.ModelProto, got: list[float]) -> None:
    (want,) = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"x": _input()}
    )
    out = np.asarray(got, np.float32).reshape(want.shape)
    assert np.abs(out - want).max() <= 1e-3 * np.abs(want).max()


@contextlib.contextmanager
def _fresh(page: Any) -> Iterator[Any]:
    """A page of a new context of the same browser: nothing stored in it yet."""
    other = page.context.browser.new_page()
    try:
        yield other
    finally:
        other.context.close()


def _manifest(base: str, page: Any) -> dict[str, Any]:
    return page.evaluate("async (url) => (await fetch(url)).json()", base + "manifest.json")


def _select(page: Any, base: str, tune: Any = None) -> dict[str, Any]:
    x = _input()
    return page.evaluate(SELECT, [base, x.ravel().tolist(), list(x.shape), tune or {"budgetMs": BUDGET_MS}])


@pytest.fixture(scope="module")
def first(browser_page: Any, served: Any) -> dict[str, Any]:
    base, _, _ = served
    browser_page.goto(base + "index.html")
    return _select(browser_page, base + "plain/")


def test_an_untuned_gpu_selects_on_load_and_is_never_slower_than_the_default(
    first: dict[str, Any], model: onnx.ModelProto
) -> None:
    assert first["device"]["match"] in ("class", "default")
    assert first["state"] == "measuring"
    tuning = first["tuning"]
    assert tuning["state"] == "done" and "reason" not in tuning, tuning
    assert tuning["kernels"] == tuning["total"] > 0
    assert tuning["speedup"] >= 1
    assert first["stages"][-1] == [tuning["total"], tuning["total"]]
    _check(model, first["during"])
    _check(model, first["after"])
    kernels = first["report"]["kernels"]
    assert len(kernels) == tuning["total"]
    extra = 0.0
    for kernel in kernels:
        times = [c["ms"] for c in kernel["candidates"]]
        assert kernel["winner"] is not None and times[0] is not None, kernel
        best = times[kernel["winner"]]
        # never slower than the plan's own config, nor than the default's, as measured
        defaults = [t for c, t in zip(kernel["candidates"], times, strict=True) if c["from"] == "default"]
        assert best <= times[0] and all(best <= t for t in defaults if t is not None)
        # a faster one lost only for compiling slower than the plan's shader (past what 100 of its runs win back,
        # or past what is left of the load's share)
        compile_ms = [c["compile_ms"] for c in kernel["candidates"]]
        for t, c in zip(times, compile_ms, strict=True):
            assert t is None or t >= best or c > compile_ms[0], kernel
        extra += compile_ms[kernel["winner"]] - compile_ms[0]
    # the winners together add at most a tenth of the load's time in compiles
    assert extra <= 0.1 * first["report"]["load_ms"] + 1e-6


def test_the_second_load_uses_the_stored_choice_and_measures_nothing(
    first: dict[str, Any], browser_page: Any, served: Any, model: onnx.ModelProto
) -> None:
    base, _, _ = served
    again = _select(browser_page, base + "plain/")
    assert again["state"] == "cached" and again["tuning"]["state"] == "cached"
    assert again["tuning"]["kernels"] == 0 and again["stages"] == []
    assert again["report"] == first["report"]
    _check(model, again["during"])
    # what is stored names each kernel's winner by its place among the bundle's candidates
    stored = browser_page.evaluate(STORED)
    (entry,) = [v for v in stored if v["report"] == first["report"]]
    plan = next(t for t in _manifest(base + "plain/", browser_page)["targets"] if t["id"] == first["device"]["target"])
    kernels = plan["plan"]["kernels"]
    own = {s["kernel"]: s["params"] for s in plan["plan"]["steps"] if "kernel" in s}
    for i, (choice, measured) in enumerate(zip(entry["choices"], first["report"]["kernels"], strict=True)):
        params = own[i] if choice == 0 else kernels[i]["candidates"][choice - 1]["params"]
        assert params == measured["candidates"][measured["winner"]]["params"], (i, choice)


def test_a_changed_manifest_is_measured_again(first: dict[str, Any], browser_page: Any, served: Any) -> None:
    base, _, _ = served
    other = _select(browser_page, base + "other/")
    assert other["state"] == "measuring" and other["tuning"]["state"] == "done"
    assert other["report"]["manifest"] != first["report"]["manifest"]
    assert _select(browser_page, base + "plain/")["state"] == "cached"  # each bundle keeps its own choice


def test_an_exact_target_or_tune_off_selects_nothing(browser_page: Any, served: Any, model: onnx.ModelProto) -> None:
    base, _, _ = served
    browser_page.goto(base + "index.html")
    exact = _select(browser_page, base + "exact/")
    assert exact["device"]["match"] == "exact"
    assert exact["tuning"]["state"] == "off" and exact["tuning"]["reason"] == "the target is exact"
    assert exact["report"] is None
    off = _select(browser_page, base + "plain/", "off")
    assert off["tuning"] == {"state": "off", "reason": "tune is off", "kernels": 0, "total": off["tuning"]["total"],
                             "ms": 0, "speedup": 1}  # fmt: skip
    _check(model, exact["after"])
    _check(model, off["after"])


@pytest.mark.parametrize("how", sorted(NO_STORAGE))
def test_selection_without_indexeddb_still_loads_and_selects(
    how: str, browser_page: Any, served: Any, model: onnx.ModelProto
) -> None:
    base, _, _ = served
    with _fresh(browser_page) as page:
        page.goto(base + "index.html")
        page.evaluate(f"() => {{ {NO_STORAGE[how]} }}")
        for _ in range(2):  # nothing is remembered: the second load measures again
            got = _select(page, base + "plain/")
            assert got["state"] == "measuring" and got["tuning"]["state"] == "done", got["tuning"]
            assert got["tuning"]["kernels"] == got["tuning"]["total"]
            _check(model, got["after"])


def test_the_report_imports_and_the_next_export_runs_it_as_an_exact_target(
    first: dict[str, Any], browser_page: Any, served: Any, model: onnx.ModelProto, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    _, path, without = served
    db = tmp_path / "db"
    shutil.copytree(without, db)
    report = tmp_path / "report.json"
    report.write_text(json.dumps(first["report"]))
    assert cli(["db", "import", str(report), "--db", str(db)]) == 0
    written = f"{len(first['report']['kernels'])} records of google-swiftshader-webgpu written"
    assert written in capsys.readouterr().out
    out = tmp_path / "served"
    export(path, out / "bundle", db=db)
    (out / "index.html").write_text("<!doctype html><title>imported</title>")
    with chromium.serve(out) as url:
        browser_page.goto(url + "index.html")
        got = _select(browser_page, url + "bundle/")
    assert got["device"]["match"] == "exact"
    assert got["device"]["target"] == "google-swiftshader-webgpu/wgsl"
    assert got["tuning"]["state"] == "off"
    _check(model, got["after"])


def test_a_tampered_report_is_refused_naming_the_record(
    first: dict[str, Any], served: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, _, without = served
    db = tmp_path / "db"
    shutil.copytree(without, db)
    before = {f.name: f.read_bytes() for f in db.glob("*.json")}
    tampered = json.loads(json.dumps(first["report"]))
    kernel = next(k for k in tampered["kernels"] if k["op"] == "conv2d")
    k = tampered["kernels"].index(kernel)
    winner = kernel["candidates"][kernel["winner"]]
    winner["params"]["wg_x"] = "8u; } fn evil() {"
    report = tmp_path / "tampered.json"
    report.write_text(json.dumps(tampered))
    assert cli(["db", "import", str(report), "--db", str(db)]) == 1
    out = capsys.readouterr().out
    assert f"kernels[{k}] (conv2d {kernel['shape']})" in out and "rejected, nothing written" in out, out
    assert {f.name: f.read_bytes() for f in db.glob("*.json")} == before


def test_the_demo_pages_tune_button_selects_and_offers_the_report(browser_page: Any, served: Any) -> None:
    base, _, _ = served
    with _fresh(browser_page) as page:  # nothing stored yet: the button measures
        page.goto(base + "plain/index.html")
        page.wait_for_function("() => window.kfDemo", timeout=120_000)
        assert page.evaluate("() => window.kfDemo.error") is None
        page.click("#tune")
        page.wait_for_function("() => window.kfTune", timeout=180_000)
        got = page.evaluate("() => window.kfTune")
        assert got.get("error") is None and got["tuning"]["state"] == "done", got
        assert got["tuning"]["kernels"] == got["tuning"]["total"] > 0
        assert "kernels measured" in page.inner_text("#tune-status")
        assert page.is_visible("#report")
        downloaded = page.evaluate("async () => (await fetch(document.getElementById('report').href)).json()")
        assert downloaded == got["report"] and downloaded["format"] == "kernelforge-tuning-report"
        assert page.get_attribute("#report", "download").startswith("kernelforge-report-google-swiftshader")


def test_an_abort_signal_stops_selection_and_the_model_runs_on(
    browser_page: Any, served: Any, model: onnx.ModelProto
) -> None:
    base, _, _ = served
    abort = """async ([base, x, dims]) => {
      const kf = await import(base + "kernelforge.js");
      const ac = new AbortController();
      const onProgress = (p) => p.stage === "tune" && p.loaded === 1 && ac.abort();
      const m = await kf.load(base, { signal: ac.signal, onProgress });
      const tuning = { ...(await m.tuned) };
      const out = Array.from(Object.values(await m.run({ x: { data: Float32Array.from(x), dims } }))[0]);
      m.dispose();
      return { tuning, out };
    }"""
    with _fresh(browser_page) as page:
        page.goto(base + "index.html")
        x = _input()
        got = page.evaluate(abort, [base + "plain/", x.ravel().tolist(), list(x.shape)])
    tuning = got["tuning"]
    assert tuning["state"] == "done" and tuning["reason"] == "kernelforge: selection stopped", tuning
    assert 1 <= tuning["kernels"] < tuning["total"]
    _check(model, got["out"])
