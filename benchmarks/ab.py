"""Before/after: whole-model times of an earlier revision and of this checkout, side by side in one run.

    python benchmarks/ab.py --before REV [--models minilm,yolo_style] [--devices lavapipe] [--rounds 5] [--db DIR]

The earlier revision is checked out into a temporary git worktree. Each round runs one child process per side,
alternating (before, after, before, ...), so both see the same machine; a child loads the case of
``benchmarks/_cases.py`` (its own side's) with its own side's tuning database, runs it ``--runs`` times after a
warm-up and reports the median, the load time and the kernels its program dispatches. ``--db DIR`` gives both
sides that database instead (an empty folder: both run their built-in defaults). Prints the medians over
the rounds and writes ``benchmarks/results/ab.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import table, write_json

ROOT = Path(__file__).resolve().parents[1]

# run inside one side's checkout: argv = case, device, backend, runs, database
_CHILD = """
import json, statistics, sys, time
sys.path.insert(0, "benchmarks")
from _cases import build
import kernelforge
from kernelforge.runtime import open_device
name, device, backend, runs, db = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
model, feeds = build(name)
info = open_device(device, backend).info
start = time.perf_counter()
session = kernelforge.load(model, device=info.index, backend=backend, db=db)
load = time.perf_counter() - start
session.run(feeds)
times = []
for _ in range(runs):
    start = time.perf_counter()
    session.run(feeds)
    times.append(time.perf_counter() - start)
print(json.dumps({"ms": statistics.median(times) * 1e3, "load_s": load, "kernels": len(session.program.steps)}))
"""


def _child(root: Path, case: str, device: str, runs: int, db: Path | None) -> dict[str, float]:
    backend = "glsl" if device == "glsl" else "wgsl"
    selector = "auto" if device == "glsl" else device
    env = {**os.environ, "PYTHONPATH": str(root)}
    env.pop("KF_DB_DIR", None)
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, case, selector, backend, str(runs), str(db or root / "tuning_db")],
        cwd=root, env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode:
        raise RuntimeError(f"{root} {case} on {device}: {done.stderr.strip().splitlines()[-1:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", required=True, help="the earlier git revision")
    parser.add_argument("--models", default="minilm,vit_tiny,yolo_style,mobilenet_v2_style_qdq")
    parser.add_argument("--devices", default="lavapipe", help="WGSL device selectors, or glsl")
    parser.add_argument("--rounds", type=int, default=3, help="alternating child runs per side")
    parser.add_argument("--runs", type=int, default=5, help="timed runs per child (median)")
    parser.add_argument("--db", type=Path, default=None, help="one database for both sides (default: their own)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    rev = subprocess.run(["git", "rev-parse", "--short", args.before], cwd=ROOT, capture_output=True, text=True)
    if rev.returncode:
        print(f"--before {args.before!r} is not a revision of {ROOT}", file=sys.stderr)
        return 2
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        before = Path(tmp) / "before"
        subprocess.run(["git", "worktree", "add", "--detach", str(before), args.before], cwd=ROOT, check=True,
                       capture_output=True)  # fmt: skip
        try:
            for device in args.devices.split(","):
                for case in args.models.split(","):
                    got: dict[str, list[dict[str, float]]] = {"before": [], "after": []}
                    for _ in range(args.rounds):
                        got["before"].append(_child(before, case, device, args.runs, args.db))
                        got["after"].append(_child(ROOT, case, device, args.runs, args.db))
                    ms = {side: statistics.median(r["ms"] for r in results) for side, results in got.items()}
                    row: dict[str, object] = {
                        "device": device,
                        "model": case,
                        "after/before time": ms["after"] / ms["before"],
                    }
                    for side, results in got.items():
                        row[f"{side} ms"] = ms[side]
                        row[f"{side} load s"] = statistics.median(r["load_s"] for r in results)
                        row[f"{side} kernels"] = int(results[0]["kernels"])
                    rows.append(row)
                    print(row, flush=True)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(before)], cwd=ROOT, capture_output=True)
    columns = ["device", "model", "before ms", "after ms", "after/before time", "before kernels", "after kernels"]
    db = f"database {args.db}" if args.db else "each side's own tuning_db"
    print(f"\nbefore = {rev.stdout.strip()}, after = this checkout, {db}\n")
    print(table(rows, [*columns, "before load s", "after load s"]))
    path = write_json("ab", {"before": rev.stdout.strip(), "db": str(args.db or "own"), "rows": rows}, args.out)
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
