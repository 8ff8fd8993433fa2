"""Tuning at scale: workers sharing one study in a real PostgreSQL, a server lost mid-study, storage errors."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import optuna
import pytest

from kernelforge import _config
from kernelforge.cli import main
from kernelforge.db import TuningDB
from kernelforge.ops import get_op
from kernelforge.tuner.storage import StorageError, open_storage
from kernelforge.tuner.tune import TuneOptions, study_name, tune_problem

pytestmark = [pytest.mark.postgres, pytest.mark.device, pytest.mark.slow]
SPEC = get_op("gemm")


@pytest.fixture(scope="module")
def server():
    from kernelforge.testing import postgres

    problem = None
    if postgres.binaries() is None:
        problem = "PostgreSQL is not installed (apt-get install postgresql)"
    else:
        try:
            import psycopg  # noqa: F401
            import psycopg2  # noqa: F401
        except ImportError as exc:
            problem = f"a PostgreSQL driver is missing ({exc}); pip install -e '.[dev]'"
    if problem:
        if _config.require_postgres():
            pytest.fail(f"KF_REQUIRE_POSTGRES=1 but {problem}")
        pytest.skip(problem)
    pg = postgres.PostgresServer()
    yield pg
    pg.close()


def fresh(server) -> str:
    return server.create_database(f"kf_{uuid.uuid4().hex[:10]}")


def worker(url: str, db: Path, shape: str, trials: int, *extra: str) -> subprocess.Popen[str]:
    args = ["tune", "--device", "lavapipe", "--shape", shape, "--trials", str(trials), "--sampler", "random"]
    argv = [*args, "--storage", url, "--db", str(db), *extra]
    code = f"import sys; from kernelforge.cli import main; sys.exit(main({argv!r}))"
    env = {**os.environ, "KF_PROGRESS": "0"}
    return subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )


def finish(procs: list[subprocess.Popen[str]], timeout: float = 600) -> list[tuple[int, str, str]]:
    out = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=timeout)
        out.append((p.returncode, stdout, stderr))
    return out


def measured_configs(url: str, name: str) -> list[str]:
    """The config of every trial that ran on the device (repeats of a finished one and pruned ones excluded)."""
    study = optuna.load_study(study_name=name, storage=url)
    return [
        t.user_attrs["config"]
        for t in study.trials
        if t.state == optuna.trial.TrialState.COMPLETE and "times" in t.user_attrs
    ]


def test_three_workers_started_together_on_a_fresh_database(server, tmp_path, lavapipe):
    url = fresh(server)
    procs = [worker(url, tmp_path / "db", "40x36x28", 6) for _ in range(3)]
    results = finish(procs)
    for code, _stdout, stderr in results:
        assert code == 0, stderr
        assert "Traceback" not in stderr
    seeds = [re.search(r"\(seed (\d+)\)", out).group(1) for _, out, _ in results]
    assert len(set(seeds)) == 3  # each worker samples with its own seed
    name = study_name(lavapipe, SPEC, SPEC.parse_problem("40x36x28"))
    measured = measured_configs(url, name)
    assert len(measured) >= 6
    assert len(measured) == len(set(measured)), "a config was measured twice"
    records = TuningDB(tmp_path / "db").load(tmp_path / "db" / f"{lavapipe.info.slug}.json").records
    assert len(records) == 1
    (record,) = records.values()
    # the faster of the workers' results is what the database kept
    stored_times = [float(m) for _, out, _ in results for m in re.findall(r"\(([\d.]+) ms", out)]
    kept_times = [float(m) for _, out, _ in results for m in re.findall(r"kept the stored ([\d.]+) ms", out)]
    assert record.time_s * 1e3 == pytest.approx(min(stored_times + kept_times), abs=6e-4)  # printed to 1 us


def test_a_server_stopped_and_restarted_mid_study_loses_no_trial(server, tmp_path, lavapipe):
    url = fresh(server)
    db = tmp_path / "db"
    procs = [worker(url, db, "48x40x32", 14) for _ in range(2)]
    name = study_name(lavapipe, SPEC, SPEC.parse_problem("48x40x32"))
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:  # wait until some trials have finished
        try:
            done = optuna.load_study(study_name=name, storage=url).get_trials(
                states=(optuna.trial.TrialState.COMPLETE,)
            )
            if len(done) >= 3:
                break
        except Exception:
            pass
        time.sleep(0.5)
    before = len(done)
    server.stop()
    time.sleep(6)  # the workers hit the outage and wait it out
    server.start()
    results = finish(procs)
    for code, _stdout, stderr in results:
        assert code == 0, stderr
        assert "Traceback" not in stderr
    study = optuna.load_study(study_name=name, storage=url)
    states = [t.state for t in study.trials]
    assert states.count(optuna.trial.TrialState.COMPLETE) >= before
    assert optuna.trial.TrialState.RUNNING not in states  # a trial cut short by the outage was failed, not left
    measured = measured_configs(url, name)
    assert len(measured) == len(set(measured))
    assert (db / f"{lavapipe.info.slug}.json").exists()


def test_a_lasting_outage_stops_the_worker_with_one_line_and_stores_its_best(server, tmp_path, lavapipe):
    url = fresh(server)
    problem = SPEC.parse_problem("44x36x20")
    # more trials than can finish: the server goes down once a few have (not after a fixed time, which a fast
    # run could outlast), and the outage, not the count, ends the study
    options = TuneOptions(trials=500, sampler="random", seed=5, db_dir=tmp_path, storage=url, outage_s=3.0)
    name = study_name(lavapipe, SPEC, problem)
    stopped = threading.Event()

    def stop_after_three_trials() -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                study = optuna.load_study(study_name=name, storage=url)
                if len(study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))) >= 3:
                    break
            except Exception:  # the study is not created yet
                pass
            time.sleep(0.2)
        server.stop()
        stopped.set()

    stopper = threading.Thread(target=stop_after_three_trials, daemon=True)
    stopper.start()
    try:
        result = tune_problem(lavapipe, SPEC, problem, options)
    finally:
        stopper.join()
        server.start()
    assert stopped.is_set()
    assert "unreachable" in result.storage_error and "\n" not in result.storage_error
    assert "kf-secret" not in result.storage_error
    assert result.record is not None and result.stored is not None and result.stored.written
    assert result.best_time <= result.default_time
    assert list(TuningDB(tmp_path).load(tmp_path / f"{lavapipe.info.slug}.json").records) == [result.record.key]


@pytest.mark.parametrize("driver", ["", "psycopg", "psycopg2"])
def test_postgresql_urls_with_either_driver(server, driver):
    url = fresh(server).replace("postgresql://", f"postgresql+{driver}://" if driver else "postgresql://")
    storage = open_storage(url, Path("/nonexistent"))
    study = optuna.create_study(storage=storage, study_name="s")
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    assert len(optuna.load_study(study_name="s", storage=url).trials) == 2


def test_storage_problems_are_one_line(server, tmp_path, capsys):
    closed = f"postgresql://kf:pw@127.0.0.1:{_closed_port()}/x"
    cases = {
        "postgres//nope": "not a storage URL",
        server.url(password="wrong"): "password authentication failed",
        closed: "Connection refused",
        "postgresql+nosuchdriver://kf@127.0.0.1/x": "nosuchdriver driver is not installed",
        server.url("no_such_database"): "does not exist",
    }
    for url, reason in cases.items():
        with pytest.raises(StorageError) as err:
            open_storage(url, tmp_path)
        text = str(err.value)
        assert reason.lower() in text.lower() and "\n" not in text, text
        assert "wrong" not in text and "kf:pw@" not in text  # passwords never printed
        code = main(["tune", "--device", "lavapipe", "--shape", "8x8x8", "--storage", url, "--db", str(tmp_path)])
        err_text = capsys.readouterr().err.strip()
        assert code == 1 and err_text.count("\n") == 0 and reason.lower() in err_text.lower(), err_text


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_db_sync_gathers_every_workers_record_into_one_database(server, tmp_path, lavapipe):
    url = fresh(server)
    shapes = ["16x16x16", "24x16x8"]
    # two "machines": each worker writes its own database
    for k, shape in enumerate(shapes):
        options = TuneOptions(trials=2, seed=k, db_dir=tmp_path / f"machine{k}", storage=url, progress=False)
        tune_problem(lavapipe, SPEC, SPEC.parse_problem(shape), options)
    assert main(["db", "sync", "--storage", url, "--db", str(tmp_path / "central")]) == 0
    central = TuningDB(tmp_path / "central").load(tmp_path / "central" / f"{lavapipe.info.slug}.json").records
    assert sorted(r.shape for r in central.values()) == sorted(shapes)
    for k in range(2):
        (mine,) = (
            TuningDB(tmp_path / f"machine{k}")
            .load(tmp_path / f"machine{k}" / f"{lavapipe.info.slug}.json")
            .records.values()
        )
        assert central[mine.key] == mine
    # syncing again changes nothing: the records are already there and none is faster
    assert main(["db", "sync", "--storage", url, "--db", str(tmp_path / "central")]) == 0
