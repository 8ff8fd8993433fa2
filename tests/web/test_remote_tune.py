"""``kernelforge tune --device remote``: a tuning page served over HTTP, driven over a WebSocket by Python.

Headless Chromium plays the remote browser: its pages open the printed loopback URL. The tuner runs in a
subprocess (the CLI) or in a thread, while this thread drives the pages: it closes one mid-trial and opens
another, fakes another adapter in a page of its own, and knocks with a wrong token.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import optuna
import pytest

from kernelforge import _config, cli
from kernelforge.db import TuningDB
from kernelforge.ops import get_op
from kernelforge.runtime import RemoteOptions, open_device, select_device
from kernelforge.runtime.backends.remote import agent_of, refusal
from kernelforge.runtime.remote import RemoteAgent
from kernelforge.tuner.measure import MeasureConfig
from kernelforge.tuner.storage import default_storage
from kernelforge.tuner.tune import TuneOptions, TuneResult, study_name, tune_problem

pytestmark = pytest.mark.browser
ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")

# run in the first page before its scripts: once window.kfHang is set, GPU work never completes there (a hung
# or frozen tab), so the call in flight waits until the page is closed under it
HANG = """
window.kfHang = false;
for (const [proto, name] of [[GPUBuffer.prototype, "mapAsync"], [GPUQueue.prototype, "onSubmittedWorkDone"]]) {
  const real = proto[name];
  proto[name] = function (...args) { return window.kfHang ? new Promise(() => {}) : real.apply(this, args); };
}
"""
# a device lost (a GPU reset, a crashed GPU process): once window.kfLose is set, the next command encoder the
# agent asks for destroys its device instead
LOSE = """
window.kfLose = false;
const realEncoder = GPUDevice.prototype.createCommandEncoder;
GPUDevice.prototype.createCommandEncoder = function (...args) {
  if (window.kfLose) {
    window.kfLose = false;
    this.destroy();
  }
  return realEncoder.apply(this, args);
};
"""
# another device opening the URL: an adapter that says it is some phone's GPU
OTHER_ADAPTER = """
Object.defineProperty(GPUAdapter.prototype, "info", {
  get() {
    return { vendor: "acme", architecture: "rocket", device: "", description: "", subgroupMinSize: 0 };
  },
});
"""


@pytest.fixture(scope="module")
def browser(browser_page: Any) -> Any:
    """The session's Chromium (fails under KF_REQUIRE_DEVICE=1 when it is missing): pages and contexts to open."""
    return browser_page.context.browser


def wait_for(what: str, check: Callable[[], T | None], timeout: float = 60.0) -> T:
    """Poll ``check`` until it returns something truthy, and return that."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def url_of(lines: list[str]) -> str:
    return wait_for("the printed URL", lambda: next((x.split(": ", 1)[1] for x in lines if "tuning page: " in x), ""))


@pytest.mark.parametrize("api", ["webgpu", "webgl2"])
def test_a_gemm_tuned_through_a_remote_page_is_stored_under_the_browsers_device(
    browser: Any, tmp_path: Path, api: str
) -> None:
    device = "remote" if api == "webgpu" else "remote:webgl2"
    command = [sys.executable, "-m", "kernelforge.cli", "tune", "--device", device, "--op", "gemm"]
    command += ["--shape", "40x48x36", "--trials", "3", "--seed", "1", "--db", str(tmp_path)]
    env = {**os.environ, "KF_PROGRESS": "0"}
    proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [out.put(line) for line in proc.stdout or ()], daemon=True).start()
    lines: list[str] = []
    context = browser.new_context()
    try:
        while not any("tuning page: " in x for x in lines):
            lines.append(out.get(timeout=60))
        url = url_of(lines)
        assert urlsplit(url).hostname == "127.0.0.1" and url.startswith("http://")  # loopback by default
        page = context.new_page()
        page.goto(url)
        assert proc.wait(timeout=120) == 0
        wait_for("the page to hear the end", lambda: page.inner_text("#status") == "tuning finished", 10)
    finally:
        proc.kill()
        context.close()
    while not out.empty():
        lines.append(out.get())
    text = "".join(lines)
    assert "waiting up to 600 s" in text and "page 1 connected from 127.0.0.1" in text, text
    (path,) = tmp_path.glob("*.json")
    assert path.name.endswith(f"-{api}.json") and path.name in text  # the browser's device, as --device browser
    loaded = TuningDB(tmp_path).load(path)
    assert loaded.device["api"] == api and loaded.device["driver"].startswith("Chrome ")
    (record,) = loaded.records.values()
    assert (record.op, record.shape) == ("gemm", "40x48x36") and record.trials["ok"] >= 1
    assert record.language == {"webgpu": "wgsl", "webgl2": "glsl"}[api]


def _tune_in_thread(options: RemoteOptions, db: Path, trials: int) -> tuple[threading.Thread, dict[str, Any]]:
    """Open the remote device and tune a small GEMM on it in a thread; the outcome lands in the dict."""
    outcome: dict[str, Any] = {}
    spec = get_op("gemm")
    problem = spec.parse_problem("24x32x16")
    quick = MeasureConfig(min_reps=2, max_reps=3, max_seconds=0.2)
    tune = TuneOptions(
        trials=trials, sampler="random", seed=3, db_dir=db, measure=quick, remeasure=quick, progress=False
    )

    def work() -> None:
        try:
            backend = outcome["backend"] = open_device(select_device("remote", remote=options))
            outcome["study"] = study_name(backend, spec, problem)
            outcome["result"] = tune_problem(backend, spec, problem, tune)
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    return thread, outcome


def test_a_page_closed_mid_trial_loses_no_finished_trial_and_the_study_resumes_on_the_next(
    browser: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # every call the tuner makes, counted; and when the one in flight started
    calls: dict[str, int] = {}
    since: list[float] = []
    real_call = RemoteAgent.call

    def watched(self: RemoteAgent, op: str, args: dict[str, Any], page: int) -> Any:
        calls[op] = calls.get(op, 0) + 1
        since.append(time.monotonic())
        try:
            return real_call(self, op, args, page)
        finally:
            since.clear()

    monkeypatch.setattr(RemoteAgent, "call", watched)
    lines: list[str] = []
    thread, outcome = _tune_in_thread(RemoteOptions(connect_timeout=60, announce=lines.append), tmp_path, trials=6)
    context = browser.new_context()
    try:
        url = url_of(lines)
        first = context.new_page()
        first.add_init_script(HANG)
        first.goto(url)
        wait_for("two trials verified", lambda: calls.get("read", 0) >= 2)
        first.evaluate("window.kfHang = true")
        wait_for("a call stuck in the page", lambda: since and time.monotonic() - since[0] > 0.5)
        storage = default_storage(tmp_path)
        trials = optuna.load_study(study_name=outcome["study"], storage=storage).trials
        finished = {t.number for t in trials if t.state == optuna.trial.TrialState.COMPLETE}
        assert finished
        first.close()
        wait_for("the server to see the page go", lambda: any("went away" in x for x in lines))
        second = context.new_page()
        second.goto(url)
        thread.join(timeout=90)
        assert not thread.is_alive() and "error" not in outcome, outcome.get("error")
        wait_for("page 2", lambda: any(x.startswith("page 2 connected from 127.0.0.1") for x in lines))
    finally:
        if "backend" in outcome:
            agent_of(outcome["backend"].info).close()
        context.close()
    trials = optuna.load_study(study_name=outcome["study"], storage=storage).trials
    complete = {t.number for t in trials if t.state == optuna.trial.TrialState.COMPLETE}
    assert finished <= complete  # no finished trial lost
    (failed,) = [t for t in trials if t.state == optuna.trial.TrialState.FAIL]
    assert failed.user_attrs["invalidity"] == "disconnected" and "went away" in failed.user_attrs["reason"]
    assert failed.number > max(finished)  # the one in flight
    # its config was queued again and measured on the page that came back
    assert any(t.params == failed.params and t.number > failed.number for t in trials if t.number in complete)
    result: TuneResult = outcome["result"]
    assert result.reasons["disconnected"] == result.counts["failed"] == 1  # pruned ones have other reasons
    assert result.counts["ok"] == 6  # the trials asked for: the disconnected one does not count
    assert result.record is not None and (tmp_path / f"{outcome['backend'].info.slug}.json").is_file()


def test_a_device_lost_in_the_page_fails_the_trial_in_flight_and_the_page_reconnects_with_a_new_one(
    browser: Any, tmp_path: Path
) -> None:
    lines: list[str] = []
    thread, outcome = _tune_in_thread(RemoteOptions(connect_timeout=60, announce=lines.append), tmp_path, trials=6)
    context = browser.new_context()
    try:
        page = context.new_page()
        page.add_init_script(LOSE)
        page.goto(url_of(lines))
        wait_for("a finished trial", lambda: "study" in outcome and _complete(tmp_path, outcome["study"]))
        page.evaluate("window.kfLose = true")
        thread.join(timeout=90)
        assert not thread.is_alive() and "error" not in outcome, outcome.get("error")
    finally:
        if "backend" in outcome:
            agent_of(outcome["backend"].info).close()
        context.close()
    # the same page came back by itself (as page 2) with a device of its own, and the study went on there
    assert any(x.startswith("page 2 connected from 127.0.0.1") for x in lines), lines
    trials = optuna.load_study(study_name=outcome["study"], storage=default_storage(tmp_path)).trials
    (failed,) = [t for t in trials if t.state == optuna.trial.TrialState.FAIL]
    assert failed.user_attrs["invalidity"] == "disconnected" and "device lost" in failed.user_attrs["reason"]
    result: TuneResult = outcome["result"]
    assert result.counts["ok"] == 6 and result.reasons["disconnected"] == result.counts["failed"] == 1
    assert result.record is not None


def _complete(db: Path, name: str) -> int:
    try:
        study = optuna.load_study(study_name=name, storage=default_storage(db))
    except KeyError:  # not created yet
        return 0
    return sum(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)


def test_another_adapter_opening_the_url_is_refused_and_the_study_keeps_its_device(browser: Any) -> None:
    lines: list[str] = []
    options = RemoteOptions(connect_timeout=60, announce=lines.append)
    got: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: got.update(info=select_device("remote", remote=options)), daemon=True)
    thread.start()
    mine, other = browser.new_context(), browser.new_context()
    try:
        url = url_of(lines)
        mine.new_page().goto(url)
        thread.join(timeout=30)
        info = got["info"]
        other.add_init_script(OTHER_ADAPTER)
        phone = other.new_page()
        phone.goto(url)
        status = wait_for("the refusal", lambda: (s := phone.inner_text("#status")).startswith("refused") and s)
        assert f"this study tunes {info.slug}" in status and "acme-rocket-webgpu" in status, status
        assert any(x.startswith("refused a page from 127.0.0.1: this study tunes") for x in lines), lines
        # the first page still serves the study, and the refused one did not try again
        agent = agent_of(info)
        assert agent.wait_page() == 1 and isinstance(agent.call("alloc", {"bytes": 16}, 1), int)
        time.sleep(1.0)
        assert phone.inner_text("#status") == status and sum("connected from" in x for x in lines) == 1
    finally:
        if "info" in got:
            agent_of(got["info"]).close()
        mine.close()
        other.close()


def test_a_wrong_or_missing_token_is_refused_on_every_interface() -> None:
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    agent = RemoteAgent(RemoteOptions(listen="0.0.0.0:0", announce=lambda line: None), refusal)
    try:
        parts = urlsplit(agent.url)
        assert parts.hostname not in ("0.0.0.0", "127.0.0.1") and parts.path == f"/{agent.token}/"
        base = f"127.0.0.1:{parts.port}"
        with urllib.request.urlopen(f"http://{base}/{agent.token}/", timeout=10) as ok:  # redirected to the page
            assert ok.status == 200 and ok.url.endswith("/agent.html?ws=socket")
            assert b"kernelforge tuning agent" in ok.read()
        wrong = agent.token[:-1] + ("A" if agent.token[-1] != "A" else "B")
        for path in ("/", "/agent.html", "/agent.js", f"/{wrong}/", f"/{wrong}/agent.html", f"/x/{agent.token}/"):
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(f"http://{base}{path}", timeout=10)
            assert refused.value.code == 403, path
        for path in (f"/{wrong}/socket", "/socket"):
            with pytest.raises(InvalidStatus) as no_socket:
                connect(f"ws://{base}{path}", open_timeout=10)
            assert no_socket.value.response.status_code == 403
        with connect(f"ws://{base}/{agent.token}/socket", open_timeout=10) as ws:  # the token lets it in
            assert json.loads(ws.recv(timeout=10)) == {"id": 1, "op": "open", "args": {}}
    finally:
        agent.close()


def test_tls_serves_https_and_the_page_connects_over_wss(browser: Any, tmp_path: Path) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        if _config.require_device():
            pytest.fail("KF_REQUIRE_DEVICE=1 but openssl is missing")
        pytest.skip("openssl is missing")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    request = ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1"]
    subprocess.run(
        [openssl, *request, "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    lines: list[str] = []
    options = RemoteOptions(connect_timeout=30, tls_cert=str(cert), tls_key=str(key), announce=lines.append)
    got: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: got.update(info=select_device("remote", remote=options)), daemon=True)
    thread.start()
    context = browser.new_context(ignore_https_errors=True)  # a self-signed certificate
    try:
        url = url_of(lines)
        assert url.startswith("https://127.0.0.1:")
        context.new_page().goto(url)
        thread.join(timeout=30)
        assert got["info"].api == "webgpu"  # WebGPU, so a secure context
    finally:
        if "info" in got:
            agent_of(got["info"]).close()
        context.close()


def test_no_page_in_time_and_misused_flags_are_clear_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["tune", "--shape", "8x8x8", "--db", str(tmp_path)]
    assert cli.main([*base, "--device", "remote", "--connect-timeout", "0.3"]) == 2
    captured = capsys.readouterr()
    assert "tuning page: http://127.0.0.1:" in captured.out
    assert "no page opened http://127.0.0.1:" in captured.err and "within 0.3 s (--connect-timeout)" in captured.err
    assert cli.main([*base, "--device", "lavapipe", "--listen", "0.0.0.0:8765"]) == 2
    assert "--listen: only for --device remote" in capsys.readouterr().err
    assert cli.main([*base, "--device", "remote", "--listen", "8765"]) == 2
    assert "expected HOST:PORT" in capsys.readouterr().err
    assert cli.main([*base, "--device", "remote", "--tls-key", str(tmp_path)]) == 2  # a directory: no such file
    assert "--tls-key" in capsys.readouterr().err
