"""The ``kernelforge`` command: devices, run, tune, export, db show, db merge, db prune."""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kernelforge import _config
from kernelforge._version import __version__
from kernelforge.errors import DatabaseError, DeviceNotFoundError, KernelforgeError

if TYPE_CHECKING:
    import numpy as np
    import onnx


class UsageError(KernelforgeError):
    """A command line names something that does not exist or does not fit (exit code 2, like argparse's)."""


def _cmd_devices(args: argparse.Namespace) -> int:
    from kernelforge.runtime import list_devices

    devices = list_devices()
    if args.json:
        print(json.dumps([d.as_dict() for d in devices], indent=2))
        return 0
    if not devices:
        print("no GPU adapter found (install mesa-vulkan-drivers for the lavapipe software GPU)")
        return 1
    for d in devices:
        lim = d.limits
        print(d.describe())
        print(f"    vendor {d.vendor} (0x{d.vendor_id:x}), type {d.adapter_type}, driver {d.driver or '-'}")
        if d.language == "glsl":
            print(f"    limits: MAX_TEXTURE_SIZE {lim.max_texture_size}, MAX_DRAW_BUFFERS {lim.max_draw_buffers}")
        else:
            print(
                f"    limits: {lim.max_invocations} invocations/workgroup, workgroup {lim.max_wg_x}x{lim.max_wg_y}"
                f"x{lim.max_wg_z}, {lim.max_workgroup_storage} B workgroup storage, "
                f"{lim.max_storage_binding >> 20} MiB storage binding"
            )
    return 0


def _split_shapes(values: Sequence[str], separator: str) -> list[str]:
    """Split ``--shape`` values on ';' and on the op's own separator (',' unless its syntax uses commas)."""
    shapes: list[str] = []
    for value in values:
        shapes += [s.strip() for s in value.replace(separator, ";").split(";") if s.strip()]
    return shapes


def _cmd_tune(args: argparse.Namespace) -> int:
    from kernelforge.ops import get_op
    from kernelforge.runtime import open_device, select_device
    from kernelforge.tuner.tune import TuneOptions, format_results, tune_problem

    if args.model is not None:
        if args.op is not None:
            raise UsageError("--op and --model exclude each other (--model tunes every kernel of the model)")
        return _tune_model(args)
    info = select_device(args.device, args.backend)  # fails with the device list before anything else
    spec = get_op(args.op or "gemm")
    problems = [spec.parse_problem(text) for text in _split_shapes(args.shape, spec.shape_separator)]
    if not problems:
        raise KernelforgeError("--shape names no shape")
    if args.trials < 1:
        raise KernelforgeError("--trials must be >= 1")
    backend = open_device(info)
    print(f"tuning {spec.name} on {info.describe()} with {args.sampler}, {args.trials} trials per shape")
    options = TuneOptions(
        trials=args.trials,
        time_budget=args.time_budget,
        sampler=args.sampler,
        seed=args.seed,
        db_dir=Path(args.db),
        storage=args.storage,
    )
    results = []
    for problem in problems:
        result = tune_problem(backend, spec, problem, options)
        results.append(result)
        if result.interrupted:
            break
    print(format_results(results))
    for r in results:
        if r.record is not None:
            print(f"{r.shape}: best {r.best_params} -> {Path(args.db) / (info.slug + '.json')}")
    if any(r.interrupted for r in results):
        print("interrupted: finished trials are kept in the study; run the same command again to resume")
        return 130
    return 0


def _model_path(text: str) -> Path:
    path = Path(text)
    if not path.is_file():
        raise UsageError(f"{text}: no such model file")
    return path


def _load_onnx(path: Path) -> onnx.ModelProto:
    import onnx

    try:
        return onnx.load(str(path))
    except Exception as exc:  # protobuf raises its own DecodeError family; say which file
        raise UsageError(f"{path}: not an ONNX model ({exc})") from None


def _tune_model(args: argparse.Namespace) -> int:
    """``tune --model``: every distinct kernel of a model, largest FLOPs first, under one overall budget."""
    from tqdm import tqdm

    from kernelforge.ops import get_op
    from kernelforge.runtime import open_device, select_device
    from kernelforge.tuner.tune import TuneOptions, TuneResult, format_results, tune_problem

    path = _model_path(args.model)
    info = select_device(args.device, args.backend)
    from kernelforge.db import TuningDB
    from kernelforge.graph.prepare import model_kernels, planned_kernels  # after the checks: no importer needed

    if args.trials < 1:
        raise KernelforgeError("--trials-per-kernel must be >= 1")
    # big kernels first: they dominate the model's time, so a budget that runs out leaves the small ones
    kernels = sorted(model_kernels(str(path)), key=lambda k: get_op(k[0]).flops(k[1]), reverse=True)
    backend = open_device(info)
    budget = f", {args.time_budget:g} s in all" if args.time_budget is not None else ""
    print(
        f"tuning {len(kernels)} kernels of {path.name} on {info.describe()} with {args.sampler}, "
        f"{args.trials} trials per kernel{budget}"
    )
    base = TuneOptions(
        trials=args.trials,
        sampler=args.sampler,
        seed=args.seed,
        db_dir=Path(args.db),
        storage=args.storage,
        progress=False,  # one bar for the model below, not one per kernel
    )
    deadline = None if args.time_budget is None else time.monotonic() + args.time_budget
    results: list[TuneResult] = []
    skipped: list[str] = []
    bar = tqdm(total=len(kernels), desc=f"tuning {path.name}", disable=None if _config.show_progress() else True)
    second_round = False
    try:
        i = 0
        while i < len(kernels):
            op, problem = kernels[i]
            spec = get_op(op)
            label = f"{op} {spec.problem_key(problem)}"
            budget_s = None
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    skipped = [f"{o} {get_op(o).problem_key(p)}" for o, p in kernels[i:]]
                    break
                # a fair share of what is left: time a quick kernel did not use goes to the ones after it
                budget_s = left / (len(kernels) - i)
            bar.set_postfix_str(label)
            result = tune_problem(backend, spec, problem, dataclasses.replace(base, time_budget=budget_s))
            results.append(dataclasses.replace(result, shape=label))
            bar.update(1)
            if result.interrupted:
                break
            i += 1
            if i == len(kernels) and not second_round:
                # the tuned convs' layouts decide where layout conversions go: tune those kernels too
                second_round = True
                db = TuningDB(args.db)
                planned = planned_kernels(str(path), info, backend.language, backend.limits, db)
                extra = [k for k in planned if k not in kernels]
                kernels += extra
                bar.total = len(kernels)
    finally:
        bar.close()
    print(format_results(results))
    stored = sum(r.record is not None for r in results)
    print(f"{stored} of {len(kernels)} kernels stored in {Path(args.db) / (info.slug + '.json')}")
    if skipped:
        print(f"time budget spent; not tuned: {', '.join(skipped)}")
    if any(r.interrupted for r in results):
        print("interrupted: finished trials are kept in the study; run the same command again to resume")
        return 130
    return 0


def _parse_inputs(texts: Sequence[str]) -> dict[str, np.ndarray]:
    """Read ``NAME=FILE.npy`` arguments."""
    import numpy as np

    arrays: dict[str, np.ndarray] = {}
    for text in texts:
        name, sep, file = text.partition("=")
        if not sep or not name or not file:
            raise UsageError(f"--input {text!r}: expected NAME=FILE.npy")
        if not Path(file).is_file():
            raise UsageError(f"--input {name}: no such file {file}")
        try:
            arrays[name] = np.asarray(np.load(file, allow_pickle=False), dtype=np.float32)
        except (OSError, ValueError) as exc:
            raise UsageError(f"--input {name}: cannot read {file} as a .npy array ({exc})") from None
    return arrays


def _declared_inputs(model: onnx.ModelProto) -> dict[str, tuple[int | str, ...] | None]:
    """Return the graph inputs (initializers excluded): dims as ints or names of symbolic dims; None: no shape."""
    consts = {t.name for t in model.graph.initializer}
    declared: dict[str, tuple[int | str, ...] | None] = {}
    for value in model.graph.input:
        if value.name in consts:
            continue
        tensor = value.type.tensor_type
        dims = tensor.shape.dim if tensor.HasField("shape") else None
        declared[value.name] = (
            None
            if dims is None
            else tuple(d.dim_value if d.HasField("dim_value") else d.dim_param or "?" for d in dims)
        )
    return declared


def _check_inputs(
    given: dict[str, np.ndarray], declared: dict[str, tuple[int | str, ...] | None]
) -> dict[str, tuple[int, ...]]:
    """Check given arrays against the model's inputs; return the shapes of those with symbolic or unknown dims."""
    shapes: dict[str, tuple[int, ...]] = {}
    for name, array in given.items():
        if name not in declared:
            raise UsageError(f"--input {name}: the model has no input {name!r} (inputs: {', '.join(declared)})")
        dims = declared[name]
        if dims is not None:
            fits = len(dims) == array.ndim and all(
                not isinstance(d, int) or d == s for d, s in zip(dims, array.shape, strict=True)
            )
            if not fits:
                want = "x".join(str(d) for d in dims)
                raise UsageError(f"--input {name}: shape {'x'.join(map(str, array.shape))} does not fit [{want}]")
        if dims is None or any(not isinstance(d, int) for d in dims):
            # the session needs static shapes: the array's fills what the model leaves open
            shapes[name] = tuple(int(d) for d in array.shape)
    return shapes


def _preview(array: np.ndarray, count: int = 6) -> str:
    flat = array.reshape(-1)[:count]
    more = ", ..." if array.size > count else ""
    return "[" + ", ".join(f"{v:.6g}" for v in flat) + more + "]"


def _cmd_run(args: argparse.Namespace) -> int:
    """``run``: load a model, run it once on random or given inputs, optionally bench and profile it."""
    import numpy as np

    path = _model_path(args.model)
    given = _parse_inputs(args.input)
    if args.bench is not None and args.bench < 1:
        raise UsageError("--bench must be >= 1")
    proto = _load_onnx(path)
    shapes = _check_inputs(given, _declared_inputs(proto))
    from kernelforge.runtime.session import load  # after the checks: argument errors need no device stack

    session = load(proto, device=args.device, backend=args.backend, db=args.db, input_shapes=shapes or None)
    rng = np.random.default_rng(args.seed)
    feeds = {
        name: given[name] if name in given else rng.standard_normal(shape).astype(np.float32)
        for name, shape in session.inputs
    }
    print(f"{path.name} on {session.device.describe()}")
    for name, shape in session.inputs:
        print(f"  input  {name} {list(shape)}{'' if name in given else ' (random)'}")
    start = time.perf_counter()
    outputs = session.run(feeds)
    first = time.perf_counter() - start
    for name, value in outputs.items():
        print(f"  output {name} {list(value.shape)} {_preview(value)}")
    print(f"load {session.load_time_s * 1e3:.1f} ms, first run {first * 1e3:.2f} ms")
    if args.bench:
        times = []
        for _ in range(args.bench):
            start = time.perf_counter()
            session.run(feeds)
            times.append(time.perf_counter() - start)
        print(
            f"{args.bench} runs: median {statistics.median(times) * 1e3:.2f} ms, min {min(times) * 1e3:.2f} ms"
            " (wall clock, outputs read back)"
        )
    if args.profile:
        print(session.summary(session.profile(feeds)))
    if args.output:
        out = Path(args.output)
        out.parent.mkdir(parents=True, exist_ok=True)
        with out.open("wb") as handle:  # an open file: np.savez would append .npz to a bare name
            savez: Any = np.savez  # numpy's stub types **kwds as its allow_pickle flag
            savez(handle, **outputs)
        print(f"wrote {len(outputs)} outputs to {out}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    """``export``: write a browser bundle of a model (manifest, weights, the static JS runtime, a demo page)."""
    path = _model_path(args.model)
    if args.weights not in ("fp32", "fp16"):
        raise UsageError(f"--weights must be fp32 or fp16, got {args.weights!r}")
    selectors = [s.strip() for s in args.targets.split(",") if s.strip()]
    if not selectors:
        raise UsageError("--targets is empty (use 'all', a class, a language or a device name)")
    db_dir = Path(args.db)
    if not db_dir.is_dir():
        raise UsageError(f"--db {db_dir}: no such directory")
    proto = _load_onnx(path)
    from kernelforge.export import export  # after the checks: argument errors need no importer

    report = export(proto, args.out, targets=selectors, weights=args.weights, db=db_dir, name=path.stem)
    print(report.summary())
    return 0


def _cmd_db_show(args: argparse.Namespace) -> int:
    from kernelforge.db import TuningDB
    from kernelforge.ops import get_op
    from kernelforge.templates import kernel_hash

    db = TuningDB(args.db)
    slug = None
    if args.device:
        from kernelforge.runtime import select_device

        slug = select_device(args.device).slug
    status = 0
    shown = 0
    for path, loaded in db.iter_files():
        if slug and path.stem != slug:
            continue
        shown += 1
        if isinstance(loaded, DatabaseError):
            print(f"ERROR {loaded}")
            status = 1
            continue
        dev = loaded.device
        print(f"{path.stem}  ({dev.get('name', '?')}, {dev.get('class', '?')}, {dev.get('api', '?')})")
        for key in sorted(loaded.records):
            r = loaded.records[key]
            stale = r.template_hash != kernel_hash(get_op(r.op), r.language)
            flag = "  STALE (template changed)" if stale else ""
            print(
                f"  {r.op:6} {r.language:4} {r.dtype} {r.shape:18} {r.time_s * 1e3:9.2f} ms {r.gflops:7.2f} GFLOP/s"
                f"  {r.default_time_s / r.time_s:5.2f}x default  {r.date}{flag}"
            )
            print(f"         {json.dumps(r.params, sort_keys=True)}")
        for key, reason in loaded.rejected:
            print(f"  REJECTED {key}: {reason}")
            status = 1
    if shown == 0:
        print(f"no tuning records{' for ' + slug if slug else ''} in {db.root}")
    return status


def _cmd_db_merge(args: argparse.Namespace) -> int:
    from kernelforge.db import TuningDB

    target, other = TuningDB(args.db), TuningDB(args.other)
    if not other.root.is_dir():
        raise KernelforgeError(f"{other.root} is not a directory")
    status = 0
    for path, loaded in other.iter_files():
        if isinstance(loaded, DatabaseError):
            print(f"skipped: {loaded}")
            status = 1
            continue
        for key, reason in loaded.rejected:
            print(f"skipped record {key}: {reason}")
            status = 1
        written = target.update(loaded.device, list(loaded.records.values()), keep_faster=True)
        print(f"{path.name}: {written} of {len(loaded.records)} records taken (faster or new)")
    return status


def _cmd_db_prune(args: argparse.Namespace) -> int:
    from kernelforge.db import TuningDB
    from kernelforge.ops import get_op
    from kernelforge.templates import kernel_hash

    status = 0
    for path, dropped in TuningDB(args.db).prune(lambda op, language: kernel_hash(get_op(op), language)):
        if isinstance(dropped, DatabaseError):
            print(f"skipped: {dropped}")
            status = 1
        else:
            print(f"{path.name}: {dropped} stale record{'s' * (dropped != 1)} removed")
    return status


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser."""
    parser = argparse.ArgumentParser(prog="kernelforge", description="Per-device autotuned GPU kernels.")
    parser.add_argument("--version", action="version", version=f"kernelforge {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    device_help = "auto, igpu, dgpu, cpu, an index or a name substring (e.g. lavapipe, swiftshader)"

    p = sub.add_parser("devices", help="list GPU adapters")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_cmd_devices)

    p = sub.add_parser(
        "run",
        help="run an ONNX model on a device",
        description="Run an ONNX model on a device: random (seeded standard normal) inputs unless --input gives "
        "them; prints the outputs, load and first-run time.",
    )
    p.add_argument("model", help="the .onnx file")
    p.add_argument("--device", default="auto", help=device_help)
    p.add_argument("--backend", default=None, choices=["wgsl", "glsl"], help="kernel language (default: the device's)")
    p.add_argument(
        "--input", default=[], action="append", metavar="NAME=FILE.npy", help="an input from a .npy file (repeatable)"
    )
    p.add_argument("--output", default=None, metavar="OUT.npz", help="write the outputs to an .npz file")
    p.add_argument("--bench", type=int, default=None, metavar="N", help="time N more runs: median and min")
    p.add_argument("--profile", action="store_true", help="print the per-kernel time table of one run")
    p.add_argument("--db", default=None, help="tuning database directory (default: KF_DB_DIR or the built-in one)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random inputs")
    p.set_defaults(func=_cmd_run)

    from kernelforge.ops import OPS, get_op

    shapes = "\n".join(f"  {name}: {get_op(name).shape_syntax}" for name in sorted(OPS))
    p = sub.add_parser(
        "tune",
        help="tune kernels for a device and store the winners",
        description=f"Tune kernels for a device and store the winners.\n\n--shape syntax per op:\n{shapes}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--device", default="auto", help=device_help)
    p.add_argument("--backend", default=None, choices=["wgsl", "glsl"], help="kernel language (default: the device's)")
    p.add_argument("--op", default=None, choices=sorted(OPS), help="op to tune (default gemm)")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument(
        "--model", default=None, metavar="MODEL.onnx", help="tune every distinct kernel of an ONNX model instead"
    )
    what.add_argument(
        "--shape",
        action="append",
        help="shapes of the op (syntax above), separated by ';' or by repeating --shape; also by ',' for ops "
        "whose syntax has no commas (gemm)",
    )
    p.add_argument(
        "--trials", "--trials-per-kernel", type=int, default=40, help="new trials per shape or kernel (default 40)"
    )
    p.add_argument(
        "--time-budget",
        type=float,
        default=None,
        help="seconds per shape (with --model: for the whole model, shared fairly between its kernels)",
    )
    p.add_argument("--sampler", default="tpe", choices=["tpe", "random", "grid", "cmaes"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--db", default=str(_config.db_dir()), help="tuning database directory")
    p.add_argument("--storage", default=None, help="Optuna storage URL (default: a journal under DB/.studies)")
    p.set_defaults(func=_cmd_tune)

    p = sub.add_parser(
        "export",
        help="write a browser bundle of an ONNX model",
        description="Write a folder to serve: manifest.json (graph plans, shaders, tuned choices per device), "
        "weights.bin, the JS runtime kernelforge.js (+ .d.ts) and a demo index.html.",
    )
    p.add_argument("model", help="the .onnx file")
    p.add_argument("--out", required=True, help="the bundle folder (created; its bundle files are replaced)")
    p.add_argument(
        "--targets",
        default="all",
        metavar="SEL,...",
        help="devices of the tuning database to ship tuned plans for: all (default), a class (cpu, igpu, dgpu), "
        "a language (wgsl, glsl) or a fingerprint/name substring; the default plans are always included",
    )
    p.add_argument("--weights", default="fp32", choices=["fp32", "fp16"], help="storage of weights.bin")
    p.add_argument("--db", default=str(_config.db_dir()), help="tuning database directory")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("db", help="inspect, merge or prune tuning databases")
    db_sub = p.add_subparsers(dest="db_command", required=True)
    q = db_sub.add_parser("show", help="list records")
    q.add_argument("--device", default=None, help=device_help)
    q.add_argument("--db", default=str(_config.db_dir()))
    q.set_defaults(func=_cmd_db_show)
    q = db_sub.add_parser("merge", help="merge another database directory in, keeping the faster record")
    q.add_argument("other")
    q.add_argument("--db", default=str(_config.db_dir()))
    q.set_defaults(func=_cmd_db_merge)
    q = db_sub.add_parser("prune", help="remove records made with templates that have changed since (STALE)")
    q.add_argument("--db", default=str(_config.db_dir()))
    q.set_defaults(func=_cmd_db_prune)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the exit code (2 for a device, file or input that does not exist or fit)."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (DeviceNotFoundError, UsageError) as exc:
        print(f"kernelforge: {exc}", file=sys.stderr)
        return 2
    except (KernelforgeError, KeyError) as exc:
        print(f"kernelforge: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("kernelforge: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
