"""GEMM benchmark: default vs tuned kernel vs numpy, measured side by side in one run, per device.

    python benchmarks/gemm.py [--devices lavapipe,swiftshader] [--sizes 256,512,1024,2048] [--max-seconds 60]

Prints a table and writes ``benchmarks/results/gemm.json``. "tuned" uses what ``kernelforge.ops.gemm``
would use on that device (the database lookup; its source column says tuned/nearest/class/default). The
default kernel, the tuned kernel and numpy are timed in alternation, so all three see the same machine.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import table, wall, write_json

from kernelforge import _config
from kernelforge.db import TuningDB
from kernelforge.errors import DeviceNotFoundError
from kernelforge.ops import get_op
from kernelforge.runtime import list_devices, open_device
from kernelforge.runtime.kernel import prepare
from kernelforge.tuner.measure import MeasureConfig, side_by_side
from kernelforge.tuner.objective import verify

SPEC = get_op("gemm")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", default="all", help="comma-separated selectors, or all WGSL devices")
    parser.add_argument("--sizes", default="256,512,1024,2048")
    parser.add_argument("--reps", type=int, default=7, help="alternating repetitions of default/tuned/numpy")
    parser.add_argument("--max-seconds", type=float, default=30.0, help="time budget per device and size")
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
            default = SPEC.default_params(problem, backend.limits, backend.language)
            chosen = TuningDB(_config.db_dir()).params_for(
                backend.info, "gemm", problem, backend.language, backend.limits
            )
            kernels = {
                "default": prepare(backend, SPEC, problem, default, inputs),
                "tuned": prepare(backend, SPEC, problem, chosen.params, inputs),
            }
            correct = all(verify(k.run(), reference).ok for k in kernels.values())  # also the warm-up
            row = {"device": backend.info.slug, "lang": backend.language, "size": size}
            first = kernels["default"].time()
            if first > args.skip_above:
                row["note"] = f"skipped: one default run takes {first:.0f} s"
                rows.append(row)
                print(row, flush=True)
                continue
            runs = {
                "default": kernels["default"].time,
                "tuned": kernels["tuned"].time,
                "numpy": wall(lambda a=a, b=b: a @ b),
            }
            t = side_by_side(runs, MeasureConfig(min_reps=1, max_reps=args.reps, max_seconds=args.max_seconds))
            flops = SPEC.flops(problem)
            row.update(
                {
                    "default GFLOP/s": flops / t["default"] / 1e9,
                    "tuned GFLOP/s": flops / t["tuned"] / 1e9,
                    "numpy GFLOP/s": flops / t["numpy"] / 1e9,
                    "tuned/default": t["default"] / t["tuned"],
                    "tuned/numpy": t["numpy"] / t["tuned"],
                    "source": chosen.source,
                    "correct": correct,
                    "default ms": t["default"] * 1e3,
                    "tuned ms": t["tuned"] * 1e3,
                    "tuned params": chosen.params,
                }
            )
            rows.append(row)
            print({k: v for k, v in row.items() if k != "tuned params"}, flush=True)
    columns = [
        "device",
        "lang",
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
