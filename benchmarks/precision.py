"""f16 arithmetic: every tuned GEMM of a device in f32 and as its f16 twin, then whole models, side by side in one run.

    python benchmarks/precision.py [--device lavapipe] [--models minilm,vit_tiny] [--reps 9] [--max-seconds 10]
                                   [--out FILE]

Kernels: each WGSL GEMM record of the device's ``tuning_db/`` file, its tuned params (``precision`` 0 or 1 as the
tuner left it) and the same params with the other precision, alternated on the same inputs. The error column is
the f16 config's largest difference from the numpy float64 reference relative to its largest magnitude, against
GEMM's stated bound (``GemmSpec.tolerance``). Models: a session on the repository's database (the tuner's picks)
and one on a copy whose GEMM records all compute in f16, alternated; outputs compared with ONNX Runtime CPU.

Prints the tables and writes ``benchmarks/results/precision.json``. A device without ``shader-f16`` (SwiftShader)
gets no f16 column: its records can only be f32.
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
        twins = {p: {**tuned, "precision": p} for p in (0, 1)}
        if any(spec.constraints(problem, t, backend.limits, "wgsl") for t in twins.values()):
            continue
        inputs = spec.make_inputs(problem, np.random.default_rng(0))
        reference = spec.reference(problem, inputs)
        kernels = {f"f{32 >> p}": prepare(backend, spec, problem, t, inputs) for p, t in twins.items()}
        f16 = verify(kernels["f16"].run(), reference, spec.tolerance(problem, twins[1]))
        for k in kernels.values():  # warm-up: a first dispatch may pay for pipeline and buffer setup
            k.time()
        config = MeasureConfig(min_reps=1, max_reps=reps, max_seconds=max_seconds)
        t = side_by_side({n: k.time for n, k in kernels.items()}, config)
        rows.append(
            {
                "shape": record["shape"],
                "tuned": f"f{32 >> tuned['precision']}",
                "f32 ms": t["f32"] * 1e3,
                "f16 ms": t["f16"] * 1e3,
                "f16/f32": t["f16"] / t["f32"],
                "f16 err": f16.max_error / max(1.0, float(np.abs(reference).max())),
                "within bound": f16.ok,
            }
        )
        print(rows[-1], flush=True)
    return rows


def _models(device: str, names: list[str], runs: int) -> list[dict[str, Any]]:
    import onnxruntime as ort

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        f16_db = Path(tmp)
        for path in REPO_DB.glob("*.json"):
            data = json.loads(path.read_text())
            for r in data["records"].values():
                if r["op"] == "gemm" and r["language"] == "wgsl":
                    r["params"]["precision"] = 1
            (f16_db / path.name).write_text(json.dumps(data))
        for name in names:
            model, feeds = build(name)
            (want,) = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(
                None, feeds
            )[:1]
            sessions = {
                "tuned": kernelforge.load(model, device=device, db=REPO_DB),
                "all f16": kernelforge.load(model, device=device, db=f16_db),
            }
            times: dict[str, list[float]] = {n: [] for n in sessions}
            errors = {}
            for n, s in sessions.items():
                got = next(iter(s.run(feeds).values()))
                errors[n] = float(np.abs(got - want).max() / np.abs(want).max())
            for _ in range(runs):
                for n, s in sessions.items():
                    start = time.perf_counter()
                    s.run(feeds)
                    times[n].append(time.perf_counter() - start)
            row: dict[str, Any] = {"model": name}
            for n in sessions:
                gemms = [st for st in sessions[n].program.steps if st.op == "gemm"]
                row[f"{n} ms"] = statistics.median(times[n]) * 1e3
                row[f"{n} f16 GEMMs"] = f"{sum(st.params.get('precision', 0) for st in gemms)}/{len(gemms)}"
                row[f"{n} rel err"] = errors[n]
            rows.append(row)
            print(row, flush=True)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="lavapipe")
    parser.add_argument("--models", default="minilm,vit_tiny")
    parser.add_argument("--reps", type=int, default=9, help="alternating repetitions per kernel")
    parser.add_argument("--max-seconds", type=float, default=10.0, help="time budget per kernel")
    parser.add_argument("--runs", type=int, default=10, help="alternated runs per model")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    backend = open_device(args.device)
    if not backend.limits.f16:
        print(f"{backend.info.slug} has no shader-f16: its GEMMs compute in f32 only")
        return 0
    kernels = _kernels(backend, args.reps, args.max_seconds)
    print(f"\n{backend.info.slug}: every tuned WGSL GEMM, in f32 and in f16 (alternated, median ms)\n")
    print(table(kernels, list(kernels[0])))
    models = _models(args.device, args.models.split(","), args.runs) if args.models else []
    if models:
        print(f"\nwhole models on {backend.info.slug}: the tuner's picks vs every GEMM in f16, median of {args.runs}\n")
        print(table(models, list(models[0])))
    path = write_json("precision", {"device": backend.info.slug, "kernels": kernels, "models": models}, args.out)
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
