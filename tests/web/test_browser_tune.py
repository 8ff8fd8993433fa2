"""``kernelforge tune --device browser``: trials compiled, verified and timed in a page of headless Chromium.

One browser serves every test (the device is opened once per process); each test tunes into a database of its
own. A model tuned this way is exported and loaded by the same Chromium, which must pick its target exactly.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest

from kernelforge import _config, cli
from kernelforge.db import TuningDB
from kernelforge.export import export
from kernelforge.ops import get_op
from kernelforge.runtime import open_device
from kernelforge.runtime.kernel import prepare
from kernelforge.testing import chromium
from kernelforge.testing.models import MODELS, save
from kernelforge.tuner.measure import MeasureConfig
from kernelforge.tuner.objective import verify
from kernelforge.tuner.storage import default_storage
from kernelforge.tuner.tune import TuneOptions, study_name, tune_problem

from .test_bundle import RUN_JS, _feeds

pytestmark = pytest.mark.browser
ROOT = Path(__file__).resolve().parents[2]


def _open(selector: str) -> Any:
    reason = chromium.available()
    if reason:
        if _config.require_device():
            pytest.fail(f"KF_REQUIRE_DEVICE=1 but {reason}")
        pytest.skip(reason)
    return open_device(selector)


@pytest.fixture(scope="module")
def browser() -> Any:
    """The browser's WebGPU backend (fails under KF_REQUIRE_DEVICE=1 when Chromium or Playwright is missing)."""
    return _open("browser")


@pytest.fixture(scope="module", params=["webgpu", "webgl2"])
def either(request: pytest.FixtureRequest) -> Any:
    """The browser's WebGPU backend, then its WebGL2 one (``--device browser:webgl2``, another browser)."""
    return _open("browser" if request.param == "webgpu" else "browser:webgl2")


def selector(backend: Any) -> str:
    """The ``--device`` that opened a browser backend."""
    return "browser" if backend.info.api == "webgpu" else "browser:webgl2"


def tune(capsys: pytest.CaptureFixture[str], device: str, *args: str) -> str:
    """Run ``kernelforge tune --device DEVICE`` with 3 trials; return what it printed."""
    code = cli.main(["tune", "--device", device, "--trials", "3", "--seed", "1", *args])
    out = capsys.readouterr().out
    assert code == 0, out
    return out


@pytest.mark.parametrize(("op", "shape"), [("gemm", "40x48x36"), ("conv2d", "1x8x12x12:16x3x3:p1")])
def test_a_kernel_tuned_in_the_browser_is_stored_under_its_device(
    either: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str], op: str, shape: str
) -> None:
    browser = either
    out = tune(capsys, selector(browser), "--op", op, "--shape", shape, "--db", str(tmp_path))
    info = browser.info
    language = {"webgpu": "wgsl", "webgl2": "glsl"}[info.api]
    assert info.slug.endswith(f"-{info.api}") and info.language == language and info.adapter
    assert info.backend == {"webgpu": "browser", "webgl2": "browser-webgl2"}[info.api]
    assert f"({info.api}, {language}, {info.device_class}, {info.slug})" in out
    assert [p.name for p in tmp_path.glob("*.json")] == [f"{info.slug}.json"]
    loaded = TuningDB(tmp_path).load(tmp_path / f"{info.slug}.json")
    assert loaded.device["api"] == info.api and loaded.device["adapter"] == info.adapter
    assert loaded.device["driver"].startswith("Chrome ")
    (record,) = loaded.records.values()
    spec = get_op(op)
    problem = spec.parse_problem(shape)
    assert (record.op, record.language, record.shape) == (op, language, spec.problem_key(problem))
    assert record.trials["ok"] >= 1 and record.time_s <= record.default_time_s
    assert record.trials["clock"] == ("gpu" if browser.has_timestamps else "wall")
    assert record.driver == info.driver
    # the stored params compute the reference in the browser (the web text: subgroup kernels included)
    inputs = spec.make_inputs(problem, np.random.default_rng(7))
    out_values = prepare(browser, spec, problem, record.params, inputs).run()
    assert verify(out_values, spec.reference(problem, inputs)).ok


def test_a_wrong_result_in_the_browser_fails_its_trial_and_is_never_stored(
    browser: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = get_op("gemm")
    true_reference = spec.reference
    # every kernel now disagrees with the reference: the browser's results must be what is checked
    monkeypatch.setattr(spec, "reference", lambda problem, inputs: true_reference(problem, inputs) + 0.5)
    problem = spec.parse_problem("16x24x8")
    quick = MeasureConfig(min_reps=2, max_reps=3, max_seconds=0.2)
    options = TuneOptions(trials=3, sampler="random", seed=2, db_dir=tmp_path, measure=quick, progress=False)
    result = tune_problem(browser, spec, problem, options)
    assert result.record is None and result.counts["ok"] == 0
    assert result.reasons == {"correctness": result.counts["failed"]} and result.counts["failed"] >= 3
    assert not (tmp_path / f"{browser.info.slug}.json").exists()
    study = optuna.load_study(study_name=study_name(browser, spec, problem), storage=default_storage(tmp_path))
    failed = [t for t in study.trials if t.state == optuna.trial.TrialState.FAIL]
    assert failed and all(t.user_attrs["invalidity"] == "correctness" for t in failed)
    assert all("max error" in t.user_attrs["reason"] for t in failed)


def test_a_device_lost_mid_study_is_opened_again_and_only_the_trial_in_flight_fails(
    browser: Any, tmp_path: Path
) -> None:
    from .test_remote_tune import LOSE

    agent = browser._agent
    before = agent.wait_page()
    spec = get_op("gemm")
    problem = spec.parse_problem("24x40x16")
    quick = MeasureConfig(min_reps=2, max_reps=3, max_seconds=0.2)
    options = TuneOptions(trials=5, sampler="random", seed=4, db_dir=tmp_path, measure=quick, progress=False)
    real_call = agent.call
    made: list[str] = []

    def lose_after_two_reads(op: str, args: dict[str, Any], page: int = 0) -> Any:
        made.append(op)
        if op == "read" and made.count("read") == 2:  # mid-study: the device goes before the next op
            agent._run(lambda p: p.evaluate(f"() => {{ {LOSE}; window.kfLose = true; }}"))
        return real_call(op, args, page)

    agent.call = lose_after_two_reads
    try:
        result = tune_problem(browser, spec, problem, options)
    finally:
        del agent.call
    assert agent.wait_page() == before + 1  # the page was reloaded and its device opened again
    assert result.reasons["disconnected"] == result.counts["failed"] == 1 and result.counts["ok"] == 5
    study = optuna.load_study(study_name=study_name(browser, spec, problem), storage=default_storage(tmp_path))
    (failed,) = [t for t in study.trials if t.state == optuna.trial.TrialState.FAIL]
    assert "device lost" in failed.user_attrs["reason"], failed.user_attrs["reason"]
    assert result.record is not None
    # the reopened device computes the reference with the stored params
    inputs = spec.make_inputs(problem, np.random.default_rng(7))
    out_values = prepare(browser, spec, problem, result.record.params, inputs).run()
    assert verify(out_values, spec.reference(problem, inputs)).ok


def test_finalists_are_timed_side_by_side_in_one_call(either: Any) -> None:
    spec = get_op("gemm")
    problem = spec.parse_problem("32x48x24")
    inputs = spec.make_inputs(problem, np.random.default_rng(5))
    params = spec.default_params(problem, either.limits, either.language)
    # two finalists: the same config bound twice is two steps to alternate, as far as the page can tell
    kernels = [prepare(either, spec, problem, params, inputs) for _ in range(2)]
    for k in kernels:
        k.run()
    agent = either._agent
    real_call, sent = agent.call, []
    agent.call = lambda op, args, page=0: (sent.append(op), real_call(op, args, page))[1]
    try:
        rounds = either.time_rounds([k.executable.bound(0) for k in kernels], 4)
    finally:
        del agent.call
    assert sent == ["alternate"]
    assert len(rounds) == 4 and all(len(r) == 2 and all(0 < t < 1 for t in r) for r in rounds)


@pytest.fixture(scope="module")
def tuned_model(either: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path, str]]:
    """small_cnn tuned with ``--model`` in the browser, and its bundle exported from that database."""
    root = tmp_path_factory.mktemp("browser_model")
    model, db, bundle = root / "small_cnn.onnx", root / "db", root / "bundle"
    save(MODELS["small_cnn"](), model)
    device = selector(either)
    args = ["--model", str(model), "--trials", "3", "--seed", "1", "--db", str(db)]
    code = cli.main(["tune", "--device", device, *args])
    assert code == 0
    export(model, bundle, db=db)
    (root / "blank.html").write_text("<!doctype html><title>kernelforge tests</title>")
    with chromium.serve(root) as base:
        yield model, bundle, base


def test_a_model_tuned_in_the_browser_loads_its_exact_target_there(
    either: Any, browser_page: Any, tuned_model: tuple[Path, Path, str]
) -> None:
    model, bundle, base = tuned_model
    manifest = json.loads((bundle / "manifest.json").read_text())
    info = either.info
    (target,) = [t for t in manifest["targets"] if t["language"] == info.language and t["device"]]
    assert target == next(t for t in manifest["targets"] if t["language"] == info.language)  # browser ones first
    assert target["id"] == f"{info.slug}/{info.language}"
    assert target["device"]["keywords"] and target["device"]["api"] == info.api
    # every kernel of the plan has the browser's own record of its shape
    assert set(target["kernels"]) == {"tuned"}
    sources = [s["source"].split(",")[0] for s in target["plan"]["steps"]]
    assert "tuned" in sources and set(sources) <= {"tuned", "built-in"}  # GLSL: the relayouts are built in
    feeds, want = _feeds(model)
    browser_page.goto(base + "blank.html")
    inputs = {k: v.reshape(-1).tolist() for k, v in feeds.items()}
    got = browser_page.evaluate(RUN_JS, [f"{base}bundle/", info.api, inputs, ""])
    assert got["device"]["target"] == target["id"] and got["device"]["match"] == "exact", got["device"]
    for name, expected in want.items():
        values = np.asarray(got["outputs"][name], np.float32).reshape(expected.shape)
        np.testing.assert_allclose(values, expected, rtol=0, atol=1e-3 * float(np.abs(expected).max()))


def test_listing_devices_never_launches_a_browser(tmp_path: Path) -> None:
    # with no browser at KF_CHROMIUM, a launch attempt would fail: `devices` must not make one unless asked
    env = {**os.environ, "KF_CHROMIUM": str(tmp_path / "no-chromium"), "KF_DB_DIR": str(tmp_path)}
    run = [sys.executable, "-m", "kernelforge.cli", "devices", "--json"]  # exit 0 even where no adapter exists
    plain = subprocess.run(run, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert plain.returncode == 0, plain.stderr
    assert all(d["api"] != "webgpu" for d in json.loads(plain.stdout))
    asked = subprocess.run([*run, "--browser"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert asked.returncode == 2 and "no browser at" in asked.stderr, asked.stderr


def test_devices_with_browser_lists_both_of_its_devices(either: Any, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["devices", "--browser", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    browsers = [d for d in listed if d["api"] in ("webgpu", "webgl2")]
    assert [(d["api"], d["language"]) for d in browsers] == [("webgpu", "wgsl"), ("webgl2", "glsl")]
    assert either.info.slug in {d["fingerprint"] for d in browsers}


def test_browser_flags_without_a_browser_device_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["tune", "--device", "lavapipe", "--headed", "--shape", "8x8x8", "--db", str(tmp_path)]) == 2
    assert "--headed: only for --device browser" in capsys.readouterr().err
    webgl2_wgsl = ["--device", "browser:webgl2", "--backend", "wgsl", "--shape", "8x8x8", "--db", str(tmp_path)]
    assert cli.main(["tune", *webgl2_wgsl]) == 2
    assert "browser:webgl2 runs GLSL kernels on webgl2; --backend wgsl cannot run there" in capsys.readouterr().err
    assert cli.main(["tune", "--device", "remote:webgl2", "--headed", "--shape", "8x8x8", "--db", str(tmp_path)]) == 2
    assert "--headed: only for --device browser" in capsys.readouterr().err
