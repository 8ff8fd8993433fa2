"""The two transports of a browser device side by side: Playwright's evaluate bridge and the WebSocket.

    python benchmarks/remote_tune.py [--shapes 64x64x64,256x256x256] [--trials 10] [--calls 200]

``--device browser`` (a Chromium that Playwright launches, driven through ``page.evaluate``) and ``--device
remote`` (a page of the same Chromium build opening the served loopback URL, driven over a WebSocket) run the
same agent on the same adapter. Measured on each: the round trip of a call that does nothing, a 1 MiB upload
and read-back, and the cost of a tuning trial of GEMMs (same sampler and seed; median Optuna wall time of the
trials that ran on the device). Prints a table and writes ``benchmarks/results/remote_tune.json``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import optuna

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import table, write_json

from kernelforge.graph.program import Buffer
from kernelforge.ops import get_op
from kernelforge.runtime import RemoteOptions, open_device, select_device
from kernelforge.runtime.backends.browser import page_agent
from kernelforge.testing import chromium
from kernelforge.tuner.storage import default_storage
from kernelforge.tuner.tune import TuneOptions, study_name, tune_problem


def _median_s(fn: Any, count: int) -> float:
    times = []
    for _ in range(count):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def _trial_s(backend: Any, shape: str, trials: int, seed: int) -> float:
    spec = get_op("gemm")
    problem = spec.parse_problem(shape)
    with tempfile.TemporaryDirectory() as tmp:
        options = TuneOptions(trials=trials, sampler="random", seed=seed, db_dir=Path(tmp), progress=False)
        tune_problem(backend, spec, problem, options)
        study = optuna.load_study(study_name=study_name(backend, spec, problem), storage=default_storage(Path(tmp)))
        trials = study.trials
    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL)
    seconds = [
        (t.datetime_complete - t.datetime_start).total_seconds()
        for t in trials
        if t.state in states and t.datetime_complete and t.datetime_start and "duplicate_of" not in t.user_attrs
    ]
    return statistics.median(seconds)


def _measure(backend: Any, args: argparse.Namespace) -> dict[str, Any]:
    agent = page_agent(backend.info)
    page = agent.wait_page()
    row: dict[str, Any] = {
        "empty call ms": _median_s(lambda: agent.call("release", {"ids": []}, page), args.calls) * 1e3
    }
    buffer = backend.alloc(Buffer(1 << 20))
    data = np.random.default_rng(0).standard_normal(1 << 18).astype(np.float32)
    row["1 MiB write ms"] = _median_s(lambda: backend.write(buffer, data), 10) * 1e3
    row["1 MiB read ms"] = _median_s(lambda: backend.read(buffer, data.size), 10) * 1e3
    for shape in args.shapes.split(","):
        row[f"trial s {shape}"] = _trial_s(backend, shape, args.trials, args.seed)
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", default="64x64x64,256x256x256", help="GEMM shapes to tune, comma-separated")
    parser.add_argument("--trials", type=int, default=10, help="trials per shape and transport")
    parser.add_argument("--calls", type=int, default=200, help="empty calls timed per transport")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    bridge = open_device("browser")
    lines: list[str] = []
    got: dict[str, Any] = {}
    opening = threading.Thread(
        target=lambda: got.update(info=select_device("remote", remote=RemoteOptions(announce=lines.append)))
    )
    opening.start()
    with chromium.page() as page:
        while not any(line.startswith("tuning page: ") for line in lines):
            time.sleep(0.05)
        page.goto(next(line for line in lines if line.startswith("tuning page: ")).split(": ", 1)[1])
        opening.join(timeout=60)
        remote = open_device(got["info"])
        print(f"bridge {bridge.info.describe()} ({bridge.info.driver}); remote {remote.info.describe()}")
        rows = [
            {"transport": "Playwright evaluate (--device browser)", **_measure(bridge, args)},
            {"transport": "WebSocket (--device remote)", **_measure(remote, args)},
        ]
    columns = list(rows[0])
    print(table(rows, columns))
    for column in columns[1:]:
        print(f"  {column}: WebSocket / bridge = {rows[1][column] / rows[0][column]:.2f}")
    written = write_json(
        "remote_tune", {"trials": args.trials, "device": bridge.info.as_dict(), "rows": rows}, args.out
    )
    print(f"wrote {written}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
