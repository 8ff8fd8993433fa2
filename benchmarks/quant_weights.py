"""Quantized weights: float32 vs int8 weights read by the same GEMM/conv kernels, side by side in one run.

    python benchmarks/quant_weights.py [--devices lavapipe,swiftshader,3] [--reps 9] [--max-seconds 20]

For each layer shape (MiniLM's GEMMs, MobileNetV2- and ResNet-shaped convs) and device, the float32 problem's
params from the tuning database (tuned, or their nearest/default source) run twice: once reading float32
weights and once reading per-channel int8 weights that the kernel dequantizes (``/qi8c``), on the same inputs
(the int8 weights are the float ones' dequantization, so both compute the same product). Prints a table of
median milliseconds and of weight bytes on the device (int8: with its scales and zero points), and writes
``benchmarks/results/quant_weights.json``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import table, write_json

from kernelforge import _config
from kernelforge.db import TuningDB
from kernelforge.errors import DeviceNotFoundError
from kernelforge.ops import get_op
from kernelforge.runtime import open_device
from kernelforge.runtime.kernel import prepare
from kernelforge.tuner.measure import MeasureConfig, side_by_side
from kernelforge.tuner.objective import verify

CASES = [
    ("gemm", "128x384x384"),  # MiniLM: Q/K/V and output projections
    ("gemm", "128x1536x384"),  # MiniLM: FFN up
    ("gemm", "128x384x1536"),  # MiniLM: FFN down
    ("conv2d", "1x64x56x56:64x3x3:s1:p1"),  # ResNet-18 stage 1
    ("conv2d", "1x96x28x28:32x1x1"),  # MobileNetV2 projection
    ("conv2d", "1x144x28x28:144x3x3:s1:p1:g144"),  # MobileNetV2 depthwise
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", default="lavapipe,swiftshader,3", help="comma-separated device selectors")
    parser.add_argument("--reps", type=int, default=9, help="alternating repetitions of float32/int8")
    parser.add_argument("--max-seconds", type=float, default=20.0, help="time budget per device and shape")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    db = TuningDB(_config.db_dir())
    rows = []
    for selector in args.devices.split(","):
        try:
            backend = open_device(selector)
        except DeviceNotFoundError as exc:
            print(exc, file=sys.stderr)
            return 2
        for op, shape in CASES:
            spec = get_op(op)
            problem, quant = spec.parse_problem(shape), spec.parse_problem(f"{shape}/qi8c")
            inputs = spec.make_inputs(quant, np.random.default_rng(0))  # integer weights and their qparams
            chosen = db.params_for(backend.info, op, problem, backend.language, backend.limits)
            kernels = {
                "f32": prepare(backend, spec, problem, chosen.params, inputs[:-1]),
                "int8": prepare(backend, spec, quant, chosen.params, inputs),
            }
            reference = spec.reference(problem, inputs[:-1])
            correct = all(verify(k.run(), reference).ok for k in kernels.values())  # also the warm-up
            t = side_by_side(
                {name: k.time for name, k in kernels.items()},
                MeasureConfig(min_reps=1, max_reps=args.reps, max_seconds=args.max_seconds),
            )
            # the weight's upload (and the int8 kernel's scales and zero points, its last input)
            weights = {name: k.program.uploads[1].data.nbytes for name, k in kernels.items()}
            weights["int8"] += kernels["int8"].program.uploads[-1].data.nbytes
            row = {
                "device": backend.info.slug,
                "lang": backend.language,
                "shape": f"{op} {shape}",
                "source": chosen.source,
                "f32 ms": t["f32"] * 1e3,
                "int8 ms": t["int8"] * 1e3,
                "int8/f32 time": t["int8"] / t["f32"],
                "f32 weight KiB": weights["f32"] / 1024,
                "int8 weight KiB": weights["int8"] / 1024,
                "correct": correct,
                "params": chosen.params,
            }
            rows.append(row)
            print({k: v for k, v in row.items() if k != "params"}, flush=True)
    columns = ["device", "lang", "shape", "source", "f32 ms", "int8 ms", "int8/f32 time", "f32 weight KiB"]
    print()
    print(table(rows, [*columns, "int8 weight KiB", "correct"]))
    path = write_json("quant_weights", {"rows": rows}, args.out)
    print(f"\nwrote {path}")
    return 0 if all(r["correct"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
