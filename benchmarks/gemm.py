"""GEMM benchmark: default vs tuned kernel vs numpy, measured side by side in one run, per device.

    python benchmarks/gemm.py [--devices lavapipe,swiftshader] [--sizes 256,512,1024,2048] [--max-seconds 60]

Prints a table and writes ``benchmarks/results/gemm.json``. "tuned" uses what ``kernelforge.ops.gemm``
would use on that device (the database lookup; its source column says tuned/nearest/class/default).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import median, table, time_reps, wall, write_json

from kernelforge.errors import DeviceNotFoundError
from kernelforge.ops import get_op
from kernelforge.runtime import list_devices, open_device
from kernelforge.runtime.api import choose_params
from kernelforge.runtime.kernel import prepare
from kernelforge.tuner.objective import verify

SPEC = get_op("gemm")


def bench_kernel(backend, problem, params, inputs, reference, reps: int, max_seconds: float) -> dict:
    kernel = prepare(backend, SPEC, problem, params, inputs)
    verdict = verify(kernel.run(), reference)  # also the warm-up
    times = time_reps(kernel.time, reps, max_seconds)
    t = median(times)
    return {"ms": t * 1e3, "gflops": SPEC.flops(problem) / t / 1e9, "reps": len(times), "correct": verdict.ok}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", default="all", help="comma-separated selectors, or all WGSL devices")
    parser.add_argument("--sizes", default="256,512,1024,2048")
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--max-seconds", type=float, default=20.0, help="time budget per measured config")
    parser.add_argument("--skip-above", type=float, default=120.0, help="skip a size when one default run takes longer")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    selectors = [str(d.index) for d in list_devices()] if args.devices == "all" else args.devices.split(",")
    rows = []
    for selector in selectors:
        try:
            backend = open_device(selector)
        except DeviceNotFoundError as exc:
            print(exc, file=sys.stderr)
            return 2
        for size in (int(s) for s in args.sizes.split(",")):
            problem = SPEC.parse_problem(f"{size}x{size}x{size}")
            inputs = SPEC.make_inputs(problem, np.random.default_rng(0))
            reference = SPEC.reference(problem, inputs)
            a, b = inputs[0][0], inputs[1][0]
            numpy_s = median(time_reps(wall(lambda a=a, b=b: a @ b), max(args.reps, 5), args.max_seconds))
            numpy_gf = SPEC.flops(problem) / numpy_s / 1e9
            default = SPEC.default_params(problem, backend.limits, backend.language)
            first = bench_kernel(backend, problem, default, inputs, reference, 1, 0.0)
            row = {"device": backend.info.slug, "size": size, "numpy GFLOP/s": numpy_gf}
            if first["ms"] / 1e3 > args.skip_above:
                row["note"] = f"skipped: one default run takes {first['ms'] / 1e3:.0f} s"
                rows.append(row)
                print(row, flush=True)
                continue
            d = bench_kernel(backend, problem, default, inputs, reference, args.reps, args.max_seconds)
            chosen = choose_params(backend, "gemm", problem)
            t = bench_kernel(backend, problem, chosen.params, inputs, reference, args.reps, args.max_seconds)
            row.update(
                {
                    "default ms": d["ms"],
                    "default GFLOP/s": d["gflops"],
                    "tuned ms": t["ms"],
                    "tuned GFLOP/s": t["gflops"],
                    "source": chosen.source,
                    "tuned/default": d["ms"] / t["ms"],
                    "tuned/numpy": t["gflops"] / numpy_gf,
                    "correct": d["correct"] and t["correct"],
                    "tuned params": chosen.params,
                }
            )
            rows.append(row)
            print({k: v for k, v in row.items() if k != "tuned params"}, flush=True)
    columns = [
        "device",
        "size",
        "default GFLOP/s",
        "tuned GFLOP/s",
        "numpy GFLOP/s",
        "tuned/default",
        "tuned/numpy",
        "source",
        "correct",
    ]
    print()
    print(table(rows, columns))
    for row in rows:
        if "note" in row:
            print(f"{row['device']} {row['size']}: {row['note']}")
    path = write_json("gemm", {"rows": rows}, args.out)
    print(f"\nwrote {path}")
    return 0 if all(r.get("correct", True) for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
