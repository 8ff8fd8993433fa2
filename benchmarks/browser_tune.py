"""Tuning in the browser vs natively on the same software GPU: cost per trial and the times each finds.

    python benchmarks/browser_tune.py [--model small_cnn] [--kernels 4] [--trials 8] [--native swiftshader]

The model's largest distinct kernels (by FLOPs) are tuned twice with the same sampler and seed, each into a
fresh database: in a page of headless Chromium (``--device browser``: WebGPU on SwiftShader) and natively
through wgpu-py on the native device (default SwiftShader's Vulkan driver, the one Chromium runs on). A trial's
cost is its Optuna wall time (render, compile, upload, verify, time), median over the kernel's measured trials.
Both winners are then timed side by side in the browser, the stack a bundle runs on. Prints a table and writes
``benchmarks/results/browser_tune.json``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import optuna

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import table, write_json

from kernelforge.graph.prepare import model_kernels
from kernelforge.ops import get_op
from kernelforge.runtime import open_device
from kernelforge.runtime.kernel import prepare
from kernelforge.testing.models import MODELS
from kernelforge.tuner.measure import MeasureConfig, side_by_side
from kernelforge.tuner.storage import default_storage
from kernelforge.tuner.tune import TuneOptions, study_name, tune_problem


def _trial_seconds(backend: Any, spec: Any, problem: Any, db: Path) -> list[float]:
    """Wall seconds of every trial that ran on the device (completed or failed; pruned ones cost nothing)."""
    study = optuna.load_study(study_name=study_name(backend, spec, problem), storage=default_storage(db))
    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL)
    return [
        (t.datetime_complete - t.datetime_start).total_seconds()
        for t in study.trials
        if t.state in states and t.datetime_complete and t.datetime_start and "duplicate_of" not in t.user_attrs
    ]


def _tune(backend: Any, spec: Any, problem: Any, trials: int, seed: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp)
        options = TuneOptions(trials=trials, sampler="tpe", seed=seed, db_dir=db, progress=False)
        started = time.perf_counter()
        result = tune_problem(backend, spec, problem, options)
        total = time.perf_counter() - started
        seconds = _trial_seconds(backend, spec, problem, db)
    return {
        "trial_s": statistics.median(seconds) if seconds else None,
        "trials": len(seconds),
        "total_s": total,
        "default_ms": result.default_time * 1e3 if result.default_time else None,
        "best_ms": result.best_time * 1e3 if result.best_time else None,
        "params": result.best_params,
        "clock": "gpu" if backend.has_timestamps else "wall",
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="small_cnn", choices=sorted(MODELS))
    parser.add_argument("--kernels", type=int, default=4, help="the model's largest distinct kernels to tune")
    parser.add_argument("--trials", type=int, default=8, help="trials per kernel and device")
    parser.add_argument("--native", default="swiftshader", help="the native device selector to compare with")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{args.model}.onnx"
        import onnx

        onnx.save(MODELS[args.model](), str(path))
        kernels = sorted(model_kernels(str(path)), key=lambda k: get_op(k[0]).flops(k[1]), reverse=True)
    kernels = kernels[: args.kernels]
    browser = open_device("browser")
    native = open_device(args.native, "wgsl")
    print(f"{args.model}: {len(kernels)} kernels, {args.trials} trials each; browser {browser.info.describe()} "
          f"({browser.info.driver}) vs native {native.info.describe()}")  # fmt: skip
    rows = []
    for op, problem in kernels:
        spec = get_op(op)
        label = f"{op} {spec.problem_key(problem)}"
        in_browser = _tune(browser, spec, problem, args.trials, args.seed)
        natively = _tune(native, spec, problem, args.trials, args.seed)
        # both winners in the browser, side by side: what a bundle of each record would run there
        inputs = spec.make_inputs(problem, np.random.default_rng(0))
        runs = {}
        for name, params in (("browser", in_browser["params"]), ("native", natively["params"])):
            if params is not None:
                runs[name] = prepare(browser, spec, problem, params, inputs).time
        there = side_by_side(runs, MeasureConfig(min_reps=5, max_reps=9, max_seconds=5.0))
        row = {
            "kernel": label,
            "browser trial s": in_browser["trial_s"],
            "native trial s": natively["trial_s"],
            "cost ratio": (in_browser["trial_s"] / natively["trial_s"])
            if in_browser["trial_s"] and natively["trial_s"]
            else None,
            "browser default ms": in_browser["default_ms"],
            "browser tuned ms": in_browser["best_ms"],
            "native default ms": natively["default_ms"],
            "native tuned ms": natively["best_ms"],
            "in browser: browser-tuned ms": there.get("browser", 0.0) * 1e3 or None,
            "in browser: native-tuned ms": there.get("native", 0.0) * 1e3 or None,
        }
        rows.append({**row, "browser": in_browser, "native": natively})
        print(f"  {label}: browser {in_browser['trial_s']:.3f} s/trial, native {natively['trial_s']:.3f} s/trial")
    columns = [
        "kernel",
        "browser trial s",
        "native trial s",
        "cost ratio",
        "browser default ms",
        "browser tuned ms",
        "native default ms",
        "native tuned ms",
        "in browser: browser-tuned ms",
        "in browser: native-tuned ms",
    ]
    print(table(rows, columns))
    ratios = [r["cost ratio"] for r in rows if r["cost ratio"]]
    if ratios:
        print(f"median cost ratio (browser / native trial): {statistics.median(ratios):.2f}")
    both = [r for r in rows if r["in browser: browser-tuned ms"] and r["in browser: native-tuned ms"]]
    if both:
        mine, theirs = (sum(r[f"in browser: {k}-tuned ms"] for r in both) for k in ("browser", "native"))
        print(f"in the browser, the {len(both)} kernels take {mine:.3g} ms browser-tuned, {theirs:.3g} ms native-tuned")
    written = write_json(
        "browser_tune",
        {
            "model": args.model,
            "trials": args.trials,
            "browser": browser.info.as_dict() | {"driver": browser.info.driver},
            "native": native.info.as_dict(),
            "rows": rows,
        },
        args.out,
    )
    print(f"wrote {written}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
