"""f16 against f32, per kernel and per model, and what the tuner picked, side by side in one run.

    python benchmarks/precision.py [--device lavapipe] [--backend wgsl|glsl]
                                   [--models mobilenet_v2_style,resnet18_style,minilm,vit_tiny]
                                   [--reps 9] [--max-seconds 10] [--runs 10] [--profiles 3] [--tune-trials 24]
                                   [--out FILE]

GEMM records: each WGSL GEMM record of the device's ``tuning_db/`` file, its tuned params (``precision`` as the
tuner left it) in f32 and in f16 arithmetic, and a staged config (the tuned one if staged, else the default) in f32
and with f16 workgroup tiles and f32 sums, alternated on the same inputs. The error columns are each f16 config's
largest difference from the numpy float64 reference relative to its largest magnitude (or 1), against GEMM's
stated bound (``GemmSpec.tolerance``).
Models: three sessions on the repository's database, ``precision`` ``auto`` (the tuner's picks), ``f32`` and
``f16`` (f16 in every GEMM and conv), alternated; outputs compared with ONNX Runtime CPU. Per kernel: the f32 and
f16 sessions' profiles (each kernel alone, GPU timestamps), alternated, medians, for every kernel that has an f16
variant, with the tuner's pick beside it. Tunes: a fresh ``--tune-trials`` tune of a few of these models' shapes
(``TUNE_SHAPES``) in a scratch database, with how many configs of each precision it measured and the best of each.

``--backend glsl`` (llvmpipe through OpenGL here): the same for WebGL2 kernels, whose ``precision`` 1 draws
half-float render targets; the GEMM table becomes every GLSL GEMM and conv record with float32 and half-float
targets, and the results go to ``precision-glsl.json``.

Prints the tables and writes ``benchmarks/results/precision.json``. A WGSL device without ``shader-f16``
(SwiftShader) gets no f16 column: its records can only be f32.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _cases import build
from _common import table, write_json

import kernelforge
from kernelforge.ops import get_op
from kernelforge.runtime import open_device
from kernelforge.runtime.kernel import prepare
from kernelforge.tuner.measure import MeasureConfig, side_by_side
from kernelforge.tuner.objective import verify

REPO_DB = Path(__file__).resolve().parent.parent / "tuning_db"


def _glsl_kernels(backend: Any, reps: int, max_seconds: float) -> list[dict[str, Any]]:
    """Every GLSL GEMM and conv record of the device: its tuned params with float32 and half-float targets."""
    path = REPO_DB / f"{backend.info.slug}.json"
    rows = []
    for record in sorted(json.loads(path.read_text())["records"].values(), key=lambda r: (r["op"], r["shape"])):
        if record["op"] not in ("gemm", "conv2d") or record["language"] != "glsl":
            continue
        spec = get_op(record["op"])
        problem = spec.parse_problem(record["shape"])
        tuned = spec.validate_params(record["params"], "glsl")
        configs = {"f32": {**tuned, "precision": 0}, "half": {**tuned, "precision": 1}}
        if any(spec.constraints(problem, c, backend.limits, "glsl") for c in configs.values()):
            continue
        inputs = spec.make_inputs(problem, np.random.default_rng(0))
        reference = spec.reference(problem, inputs)
        kernels = {n: prepare(backend, spec, problem, c, inputs) for n, c in configs.items()}
        half = verify(kernels["half"].run(), reference, spec.tolerance(problem, configs["half"]))
        for k in kernels.values():
            k.time()
        t = side_by_side(
            {n: k.time for n, k in kernels.items()}, MeasureConfig(min_reps=1, max_reps=reps, max_seconds=max_seconds)
        )
        scale = max(1.0, float(np.abs(reference).max()))
        rows.append(
            {"op": record["op"], "shape": record["shape"], "tuned": "half" if tuned.get("precision") else "f32",
             "f32 ms": t["f32"] * 1e3, "half ms": t["half"] * 1e3, "half/f32": t["half"] / t["f32"],
             "half err": half.max_error / scale, "within bound": half.ok}
        )  # fmt: skip
        print(rows[-1], flush=True)
    return rows


def _kernels(backend: Any, reps: int, max_seconds: float) -> list[dict[str, Any]]:
    spec = get_op("gemm")
    path = REPO_DB / f"{backend.info.slug}.json"
    records = json.loads(path.read_text())["records"].values()
    rows = []
    for record in sorted(records, key=lambda r: r["shape"]):
        if record["op"] != "gemm" or record["language"] != "wgsl":
            continue
        problem = spec.parse_problem(record["shape"])
        tuned = spec.validate_params(record["params"], "wgsl")
        # f16 tiles need a staged config: the tuned one where it is staged, else the op's default for the shape
        staged = tuned if tuned["staging"] else spec.default_params(problem, backend.limits, "wgsl")
        configs = {
            "f32": {**tuned, "precision": 0},
            "f16": {**tuned, "precision": 1},
            "staged f32": {**staged, "precision": 0},
            "f16 tiles": {**staged, "precision": 2},
        }
        if tuned["staging"]:
            del configs["staged f32"]
        fits = {n: c for n, c in configs.items() if spec.constraints(problem, c, backend.limits, "wgsl") is None}
        if "f32" not in fits or "f16" not in fits:
            continue
        inputs = spec.make_inputs(problem, np.random.default_rng(0))
        reference = spec.reference(problem, inputs)
        names = {0: "f32", 1: "f16", 2: "f16 tiles"}
        kernels = {n: prepare(backend, spec, problem, c, inputs) for n, c in fits.items()}
        checks = {n: verify(kernels[n].run(), reference, spec.tolerance(problem, c)) for n, c in fits.items()}
        for k in kernels.values():  # warm-up: a first dispatch may pay for pipeline and buffer setup
            k.time()
        config = MeasureConfig(min_reps=1, max_reps=reps, max_seconds=max_seconds)
        t = side_by_side({n: k.time for n, k in kernels.items()}, config)
        scale = max(1.0, float(np.abs(reference).max()))
        row: dict[str, Any] = {"shape": record["shape"], "tuned": names[tuned["precision"]]}
        for n in configs:
            row[f"{n} ms"] = t[n] * 1e3 if n in t else "-"
        if "staged f32" not in configs:
            row["staged f32 ms"] = row["f32 ms"]  # the tuned config is the staged one
        for n in ("f16", "f16 tiles"):
            row[f"{n} err"] = checks[n].max_error / scale if n in checks else "-"
            row[f"{n} within bound"] = checks[n].ok if n in checks else "-"
        rows.append(row)
        print(rows[-1], flush=True)
    return rows


Rows = list[dict[str, Any]]

TUNE_SHAPES = {
    "conv2d": ["1x32x112x112:32x3x3:p1:g32", "1x64x56x56:64x3x3:p1", "1x96x56x56:24x1x1"],
    "gemm": ["128x384x384", "128x1536x384", "197x192x768"],
}
"""Shapes of the benchmark models that a fresh, longer tune runs on, to show what the tuner does with f16."""


def _tuner_picks(backend: Any, trials: int) -> Rows:
    """Tune each of :data:`TUNE_SHAPES` afresh (a scratch database) and report what it measured per precision."""
    import optuna

    from kernelforge.tuner.storage import default_storage
    from kernelforge.tuner.tune import TuneOptions, study_name, tune_problem

    language = backend.info.language
    names = {0: "f32", 1: "f16", 2: "f16 tiles"} if language == "wgsl" else {0: "f32", 1: "half"}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for op, shapes in TUNE_SHAPES.items():
            spec = get_op(op)
            choices = next(p.choices for p in spec.params(language) if p.name == "precision")
            for shape in shapes:
                problem = spec.parse_problem(shape)
                options = TuneOptions(trials=trials, seed=1, db_dir=Path(tmp), progress=False)
                result = tune_problem(backend, spec, problem, options)
                storage = default_storage(Path(tmp))
                study = optuna.load_study(study_name=study_name(backend, spec, problem), storage=storage)
                best: dict[int, float] = {}
                count: dict[int, int] = {}
                for t in study.trials:
                    if t.value is not None:
                        p = choices[t.params["precision"]]
                        best[p] = min(best.get(p, float("inf")), t.value)
                        count[p] = count.get(p, 0) + 1
                row: dict[str, Any] = {"op": op, "shape": shape}
                for p, n in names.items():
                    row[f"{n} trials"] = count.get(p, 0)
                    row[f"best {n} ms"] = best[p] * 1e3 if p in best else "-"
                row["kept"] = names[(result.best_params or {}).get("precision", 0)]
                rows.append(row)
                print(row, flush=True)
    return rows


def _models(device: str, backend: str, names: list[str], runs: int, profiles: int) -> tuple[Rows, Rows]:
    """Whole models in the tuner's pick (``precision="auto"``), f32 and f16, alternated; then per kernel."""
    import onnxruntime as ort

    rows, kernels = [], []
    for name in names:
        model, feeds = build(name)
        want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
        sessions = {
            p: kernelforge.load(model, device=device, backend=backend, db=REPO_DB, precision=p)
            for p in ("auto", "f32", "f16")
        }
        times: dict[str, list[float]] = {n: [] for n in sessions}
        errors = {}
        for n, s in sessions.items():
            got = next(iter(s.run(feeds).values()))
            errors[n] = float(np.abs(got - want[0]).max() / np.abs(want[0]).max())
        for _ in range(runs):
            for n, s in sessions.items():
                start = time.perf_counter()
                s.run(feeds)
                times[n].append(time.perf_counter() - start)
        tunable = {st.node.name for st in sessions["f16"].steps if st.params.get("precision")}
        picked = sum(1 for st in sessions["auto"].steps if st.params.get("precision"))
        row: dict[str, Any] = {"model": name, "f16-able kernels": len(tunable), "picked f16": picked}
        for n in sessions:
            row[f"{n} ms"] = statistics.median(times[n]) * 1e3
            row[f"{n} rel err"] = errors[n]
        rows.append(row)
        print(row, flush=True)
        # per kernel: each kernel timed alone (GPU timestamps), f32 and f16 profiles alternated, medians
        per: dict[str, dict[str, list[float]]] = {n: {} for n in ("f32", "f16")}
        for _ in range(profiles):
            for n in per:
                for t in sessions[n].profile(feeds):
                    per[n].setdefault(t.node, []).append(t.seconds)
        pick = {st.node.name: st.params.get("precision", 0) for st in sessions["auto"].steps}
        ops = {st.node.name: st.call.op for st in sessions["f16"].steps}
        for node in sorted(tunable, key=lambda k: -statistics.median(per["f32"][k])):
            f32, f16 = statistics.median(per["f32"][node]), statistics.median(per["f16"][node])
            kernels.append(
                {"model": name, "node": node, "op": ops[node], "f32 ms": f32 * 1e3, "f16 ms": f16 * 1e3,
                 "f16/f32": f16 / f32, "tuner's pick": f"f{32 >> min(pick[node], 1)}"}
            )  # fmt: skip
    return rows, kernels


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="lavapipe")
    parser.add_argument("--backend", default="wgsl", choices=["wgsl", "glsl"])
    parser.add_argument("--models", default="mobilenet_v2_style,resnet18_style,minilm,vit_tiny")
    parser.add_argument("--reps", type=int, default=9, help="alternating repetitions per kernel")
    parser.add_argument("--max-seconds", type=float, default=10.0, help="time budget per kernel")
    parser.add_argument("--runs", type=int, default=10, help="alternated runs per model")
    parser.add_argument("--profiles", type=int, default=3, help="alternated per-kernel profiles per model")
    parser.add_argument("--tune-trials", type=int, default=24, help="trials of each fresh tune (0: none)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    backend = open_device(args.device, args.backend)
    glsl = args.backend == "glsl"
    if not glsl and not backend.limits.f16:
        print(f"{backend.info.slug} has no shader-f16: its GEMMs compute in f32 only")
        return 0
    picks = _tuner_picks(backend, args.tune_trials) if args.tune_trials else []
    if picks:
        print(f"\n{backend.info.slug}: {args.tune_trials}-trial tunes from scratch, what each precision measured\n")
        print(table(picks, list(picks[0])))
    kernels = (_glsl_kernels if glsl else _kernels)(backend, args.reps, args.max_seconds)
    what = "GLSL GEMM and conv, float32 and half-float targets" if glsl else "WGSL GEMM, in f32 and in f16"
    print(f"\n{backend.info.slug}: every tuned {what} (alternated, median ms)\n")
    print(table(kernels, list(kernels[0])))
    models, per_kernel = (
        _models(args.device, args.backend, args.models.split(","), args.runs, args.profiles)
        if args.models
        else ([], [])
    )
    if models:
        print(f"\nwhole models on {backend.info.slug}: the tuner's pick (auto), f32 and f16, median of {args.runs}\n")
        print(table(models, list(models[0])))
        slower = sum(1 for k in per_kernel if k["f16/f32"] > 1)
        clock = "wall clock around glFinish" if glsl else "GPU timestamps"
        print(f"\nper kernel (alone, {clock}): f16 slower than f32 in {slower} of {len(per_kernel)}\n")
        print(table(per_kernel, list(per_kernel[0])))
    out = {"device": backend.info.slug, "tunes": picks, "kernels": kernels, "models": models, "per_kernel": per_kernel}
    path = write_json("precision-glsl" if glsl else "precision", out, args.out)
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
