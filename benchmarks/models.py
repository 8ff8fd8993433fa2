"""Whole-model benchmark: kernelforge sessions (tuned DB vs empty DB) vs ONNX Runtime CPU, per model and device.

    python benchmarks/models.py [--devices lavapipe,swiftshader,glsl] [--models mlp,small_cnn,... | --family]
                                [--light] [--runs 5] [--db DIR] [--quick] [--save DIR]

Models are the cases of ``benchmarks/_cases.py``, by default the builders of :mod:`kernelforge.testing.models`;
``--family`` selects the models people ship instead (``minilm``, a MiniLM-L6-shaped encoder with int64
``input_ids`` and ``attention_mask``; ``vit_tiny``; ``yolo_style``; ``mobilenet_v2_style_qdq``), and a case
whose builder is not in this checkout is reported and skipped. With ``--light``, also the ``light_*`` models
that ship with the ``onnx`` package's backend tests. Every case gets its seeded inputs of its declared dtypes
(the light models: :meth:`Session.random_feeds`). Per model and device: load time (wall clock of
``kernelforge.load``, import and passes included; the device is opened before, so adapter start-up is not
counted), first-run time and the median of ``--runs`` runs, once with the tuning database (``--db``, default
the configured one) and once with an empty one (every kernel on its default params); ONNX Runtime's CPU
load, first-run and median time; the largest error of either session vs ONNX Runtime relative to the
output's largest magnitude; the planned vs naive activation memory. The runs of the tuned session, the
untuned session and ONNX Runtime alternate, so all three see the same machine. ``--devices`` takes the
selectors of ``benchmarks/conv.py``: ``glsl`` is the GL device (llvmpipe through moderngl, GLSL kernels),
anything else a WGSL device. A model that does not import (an op kernelforge lacks) is reported and skipped.

Prints one table and writes ``benchmarks/results/models.json`` (``models-quick.json`` with ``--quick``,
a smoke run: two runs, of the mlp unless ``--models`` or ``--family`` names others). ``--save DIR`` writes
the selected cases as ``DIR/<name>.onnx`` instead (the files ``kernelforge tune --model`` reads) and exits.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _cases import FAMILY, SPECS, Unavailable, build
from _common import table, wall, write_json

from kernelforge import _config
from kernelforge.errors import DeviceNotFoundError, KernelforgeError
from kernelforge.graph.ir import GraphError
from kernelforge.runtime import open_device
from kernelforge.runtime.session import Session, load
from kernelforge.testing.models import MODELS
from kernelforge.tuner.measure import MeasureConfig, side_by_side

LIGHT_DIR = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
COLUMNS = [
    "model",
    "device",
    "lang",
    "load s",
    "first ms",
    "median ms",
    "untuned median ms",
    "tuned/untuned",
    "ort load s",
    "ort first ms",
    "ort median ms",
    "max rel err",
    "planned MiB",
    "naive MiB",
]


Source = tuple[bytes, dict[str, np.ndarray] | None]
"""A serialized model and its inputs (None: the session's random feeds)."""


def model_sources(names: list[str], light: bool, skipped: dict[str, str]) -> dict[str, Source]:
    """Return models and inputs by name: the cases, then the light_* models if asked for.

    A case whose builder is missing here goes into ``skipped`` with the reason.
    """
    sources: dict[str, Source] = {}
    for name in names:
        try:
            model, feeds = build(name)
        except Unavailable as exc:
            skipped[name] = str(exc)
            print(f"skipped {exc}", flush=True)
            continue
        sources[name] = (model.SerializeToString(), feeds)
    if light:
        for path in sorted(LIGHT_DIR.glob("light_*.onnx")):
            sources[path.stem] = (path.read_bytes(), None)
    return sources


def device_args(selector: str) -> tuple[str, str]:
    """Return ``(device, backend)`` for a ``--devices`` entry, as benchmarks/conv.py reads them."""
    return ("auto", "glsl") if selector == "glsl" else (selector, "wgsl")


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    """Return ``fn()`` and its wall-clock seconds."""
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def rel_error(got: Mapping[str, np.ndarray], expected: Mapping[str, np.ndarray]) -> float:
    """Return the largest ``|got - expected|`` over all outputs, relative to each output's largest magnitude."""
    worst = 0.0
    for name, want in expected.items():
        scale = float(np.abs(want).max()) or 1.0
        worst = max(worst, float(np.abs(got[name].astype(np.float64) - want).max()) / scale)
    return worst


class OrtModel:
    """One ONNX Runtime CPU session of a model: its load and first-run times and its reference outputs."""

    def __init__(self, source: bytes, feeds: Mapping[str, np.ndarray]) -> None:
        import onnxruntime as ort

        self.session, self.load_s = timed(lambda: ort.InferenceSession(source, providers=["CPUExecutionProvider"]))
        names = [o.name for o in self.session.get_outputs()]
        self.feeds = {i.name: feeds[i.name] for i in self.session.get_inputs() if i.name in feeds}
        outputs, self.first_s = timed(lambda: self.session.run(None, self.feeds))
        self.outputs = dict(zip(names, outputs, strict=True))

    def run(self) -> None:
        """Run once (the outputs are dropped)."""
        self.session.run(None, self.feeds)


def bench(
    name: str, source: Source, selector: str, db: str, runs: int, ort_cache: dict[str, OrtModel]
) -> dict[str, Any]:
    """Benchmark one model on one device; return its row."""
    device, backend = device_args(selector)
    info = open_device(device, backend).info  # opened outside the timed load
    model, feeds = source
    tuned, load_s = timed(lambda: load(model, device=device, backend=backend, db=db))
    with tempfile.TemporaryDirectory(prefix="kf-empty-db-") as empty:
        untuned = load(model, device=device, backend=backend, db=empty)
        if feeds is None:
            feeds = tuned.random_feeds(np.random.default_rng(0))
        return _measure(name, model, feeds, info.slug, tuned, untuned, load_s, runs, ort_cache)


def _measure(
    name: str,
    source: bytes,
    feeds: Mapping[str, np.ndarray],
    slug: str,
    tuned: Session,
    untuned: Session,
    load_s: float,
    runs: int,
    ort_cache: dict[str, OrtModel],
) -> dict[str, Any]:
    """Time the two sessions and ONNX Runtime side by side on the same seeded inputs; return the row."""
    if name not in ort_cache:  # one ORT session per model; its runs are timed beside each device's
        ort_cache[name] = OrtModel(source, feeds)
    ort = ort_cache[name]
    outputs, first_s = timed(lambda: tuned.run(feeds))
    error = max(rel_error(outputs, ort.outputs), rel_error(untuned.run(feeds), ort.outputs))
    medians = side_by_side(
        {
            "tuned": wall(lambda: tuned.run(feeds)),
            "untuned": wall(lambda: untuned.run(feeds)),
            "ort": wall(ort.run),
        },
        MeasureConfig(min_reps=runs, max_reps=runs, max_seconds=float("inf")),
    )
    return {
        "model": name,
        "device": slug,
        "lang": tuned.language,
        "load s": load_s,
        "first ms": first_s * 1e3,
        "median ms": medians["tuned"] * 1e3,
        "untuned median ms": medians["untuned"] * 1e3,
        "tuned/untuned": medians["untuned"] / medians["tuned"],
        "ort load s": ort.load_s,
        "ort first ms": ort.first_s * 1e3,
        "ort median ms": medians["ort"] * 1e3,
        "max rel err": error,
        "planned MiB": tuned.memory.planned_bytes / 2**20,
        "naive MiB": tuned.memory.naive_bytes / 2**20,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", default="lavapipe,swiftshader,glsl", help="selectors; 'glsl' = the GL device")
    parser.add_argument("--models", default=None, help="cases of _cases.py: " + ", ".join(SPECS))
    parser.add_argument("--family", action="store_true", help="models " + ",".join(FAMILY))
    parser.add_argument("--light", action="store_true", help="also the onnx package's light_* models (224x224)")
    parser.add_argument("--runs", type=int, default=5, help="timed runs per session (median)")
    parser.add_argument("--db", default=str(_config.db_dir()), help="the tuning database of the 'tuned' session")
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 runs (of the mlp unless named)")
    parser.add_argument("--save", type=Path, default=None, help="write the cases' .onnx files here and exit")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    default = ",".join(FAMILY if args.family else MODELS)
    names = [n for n in (args.models if args.models is not None else default).split(",") if n]
    if args.quick and args.models is None and not args.family:
        names = ["mlp"]
    runs = 2 if args.quick else args.runs
    unknown = [n for n in names if n not in SPECS]
    if unknown:
        print(f"unknown model(s) {unknown}; choose from {', '.join(SPECS)}", file=sys.stderr)
        return 2
    skipped: dict[str, str] = {}
    sources = model_sources(names, args.light and not args.quick, skipped)
    if args.save is not None:
        args.save.mkdir(parents=True, exist_ok=True)
        for name, (model, _) in sources.items():
            (args.save / f"{name}.onnx").write_bytes(model)
            print(f"wrote {args.save / name}.onnx")
        return 0

    rows: list[dict[str, Any]] = []
    ort_cache: dict[str, OrtModel] = {}
    for selector in args.devices.split(","):
        try:
            open_device(*device_args(selector))
        except DeviceNotFoundError as exc:
            print(exc, file=sys.stderr)
            return 2
        for name, source in sources.items():
            if name in skipped:
                continue
            try:
                row = bench(name, source, selector, args.db, runs, ort_cache)
            except KernelforgeError as exc:
                # a GraphError (an op kernelforge lacks, say) holds on every device; anything else on this one
                key = name if isinstance(exc, GraphError) else f"{name}@{selector}"
                skipped[key] = f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
                print(f"skipped {name} on {selector}: {skipped[key]}", flush=True)
                continue
            rows.append(row)
            print({k: float(f"{v:.4g}") if isinstance(v, float) else v for k, v in row.items()}, flush=True)
    print()
    print(table(rows, COLUMNS))
    if rows:
        print(f"\nmedian tuned/untuned speedup: {statistics.median(r['tuned/untuned'] for r in rows):.2f}x")
    name = "models-quick" if args.quick else "models"
    path = write_json(name, {"runs": runs, "db": args.db, "rows": rows, "skipped": skipped}, args.out)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
