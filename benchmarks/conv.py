"""Conv benchmark: ResNet-18 and MobileNetV2 conv layers, default vs tuned kernel vs numpy im2col, per device.

    python benchmarks/conv.py [--devices lavapipe,swiftshader,glsl] [--models resnet18,mobilenet_v2]

Prints a table per device (and the median tuned/default speedup) and writes ``benchmarks/results/conv.json``.
"tuned" is what ``kernelforge.ops.conv2d`` would use (the database lookup; the source column says
tuned/nearest/class/default). The default kernel, the tuned kernel and the numpy baseline (im2col by
strided views + one matmul per group, float32) are timed in alternation, so all three see the same machine.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import table, wall, write_json
from _layers import MODELS

from kernelforge import _config
from kernelforge.db import TuningDB
from kernelforge.errors import DeviceNotFoundError
from kernelforge.ops import get_op
from kernelforge.ops.conv import ConvProblem
from kernelforge.runtime import open_device
from kernelforge.runtime.kernel import prepare
from kernelforge.tuner.measure import MeasureConfig, side_by_side
from kernelforge.tuner.objective import verify

SPEC = get_op("conv2d")


def numpy_im2col(problem: ConvProblem, x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """A plain numpy conv: im2col through strided views, then one float32 matmul per group."""
    q = problem
    xp = np.pad(x, ((0, 0), (0, 0), (q.pads[0], q.pads[2]), (q.pads[1], q.pads[3])))
    (sy, sx), (dy, dx) = q.strides, q.dilations
    cols = np.empty((q.n, q.c, q.kh, q.kw, q.oh, q.ow), np.float32)
    for ky in range(q.kh):
        for kx in range(q.kw):
            cols[:, :, ky, kx] = xp[
                :, :, ky * dy : ky * dy + sy * (q.oh - 1) + 1 : sy, kx * dx : kx * dx + sx * (q.ow - 1) + 1 : sx
            ]
    cols = cols.reshape(q.n, q.group, q.cg * q.kh * q.kw, q.oh * q.ow)
    wg = w.reshape(q.group, q.mg, q.cg * q.kh * q.kw)
    return np.matmul(wg[None], cols).reshape(q.n, q.m, q.oh, q.ow)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", default="lavapipe,swiftshader,glsl", help="selectors; 'glsl' = the GL device")
    parser.add_argument("--models", default="resnet18,mobilenet_v2")
    parser.add_argument("--reps", type=int, default=5, help="alternating repetitions of default/tuned/numpy")
    parser.add_argument("--max-seconds", type=float, default=3.0, help="time budget per layer and device")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    # each distinct shape once, under the first model that has it
    first_model: dict[str, str] = {}
    for model in args.models.split(","):
        for shape in MODELS[model]():
            first_model.setdefault(shape, model)
    layers = [(model, shape) for shape, model in first_model.items()]
    rows = []
    summary = []
    for selector in args.devices.split(","):
        try:
            backend = open_device("auto", "glsl") if selector == "glsl" else open_device(selector, "wgsl")
        except DeviceNotFoundError as exc:
            print(exc, file=sys.stderr)
            return 2
        speedups = []
        for model, shape in layers:
            problem = SPEC.parse_problem(shape)
            inputs = SPEC.make_inputs(problem, np.random.default_rng(0))
            reference = SPEC.reference(problem, inputs)
            default = SPEC.default_params(problem, backend.limits, backend.language)
            chosen = TuningDB(_config.db_dir()).params_for(
                backend.info, "conv2d", problem, backend.language, backend.limits
            )
            kernels = {
                "default": prepare(backend, SPEC, problem, default, inputs),
                "tuned": prepare(backend, SPEC, problem, chosen.params, inputs),
            }
            correct = all(verify(k.run(), reference).ok for k in kernels.values())  # also the warm-up
            x, w = inputs[0], inputs[1]
            runs = {
                "default": kernels["default"].time,
                "tuned": kernels["tuned"].time,
                "numpy": wall(lambda problem=problem, x=x, w=w: numpy_im2col(problem, x, w)),
            }
            t = side_by_side(runs, MeasureConfig(min_reps=1, max_reps=args.reps, max_seconds=args.max_seconds))
            flops = SPEC.flops(problem)
            row = {
                "device": backend.info.slug,
                "lang": backend.language,
                "model": model,
                "layer": shape,
                "default GFLOP/s": flops / t["default"] / 1e9,
                "tuned GFLOP/s": flops / t["tuned"] / 1e9,
                "numpy GFLOP/s": flops / t["numpy"] / 1e9,
                "tuned/default": t["default"] / t["tuned"],
                "source": chosen.source,
                "correct": correct,
                "default ms": t["default"] * 1e3,
                "tuned ms": t["tuned"] * 1e3,
                "numpy ms": t["numpy"] * 1e3,
                "tuned params": chosen.params,
            }
            speedups.append(row["tuned/default"])
            rows.append(row)
            print({k: v for k, v in row.items() if k != "tuned params"}, flush=True)
        summary.append(
            {
                "device": backend.info.slug,
                "lang": backend.language,
                "layers": len(speedups),
                "median tuned/default": statistics.median(speedups),
                "min tuned/default": min(speedups),
                "default ms total": sum(
                    r["default ms"] for r in rows if r["device"] == backend.info.slug and r["lang"] == backend.language
                ),
                "tuned ms total": sum(
                    r["tuned ms"] for r in rows if r["device"] == backend.info.slug and r["lang"] == backend.language
                ),
            }
        )
    columns = [
        "device",
        "lang",
        "layer",
        "default GFLOP/s",
        "tuned GFLOP/s",
        "numpy GFLOP/s",
        "tuned/default",
        "source",
        "correct",
    ]
    print()
    print(table(rows, columns))
    print()
    print(table(summary, list(summary[0])))
    path = write_json("conv", {"rows": rows, "summary": summary}, args.out)
    print(f"\nwrote {path}")
    return 0 if all(r["correct"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
