"""The ``kernelforge`` command: devices, tune, db show, db merge."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from kernelforge import _config
from kernelforge._version import __version__
from kernelforge.errors import DatabaseError, DeviceNotFoundError, KernelforgeError


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

    info = select_device(args.device, args.backend)  # fails with the device list before anything else
    spec = get_op(args.op)
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


def _cmd_db_show(args: argparse.Namespace) -> int:
    from kernelforge.ops import get_op
    from kernelforge.templates import kernel_hash
    from kernelforge.tuner.db import TuningDB

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
    from kernelforge.tuner.db import TuningDB

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


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser."""
    parser = argparse.ArgumentParser(prog="kernelforge", description="Per-device autotuned GPU kernels.")
    parser.add_argument("--version", action="version", version=f"kernelforge {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    device_help = "auto, igpu, dgpu, cpu, an index or a name substring (e.g. lavapipe, swiftshader)"

    p = sub.add_parser("devices", help="list GPU adapters")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_cmd_devices)

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
    p.add_argument("--op", default="gemm", choices=sorted(OPS), help="op to tune (default gemm)")
    p.add_argument(
        "--shape",
        required=True,
        action="append",
        help="shapes of the op (syntax above), separated by ';' or by repeating --shape; also by ',' for ops "
        "whose syntax has no commas (gemm)",
    )
    p.add_argument("--trials", type=int, default=40, help="new trials per shape (default 40)")
    p.add_argument("--time-budget", type=float, default=None, help="seconds per shape, stops the search early")
    p.add_argument("--sampler", default="tpe", choices=["tpe", "random", "grid", "cmaes"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--db", default=str(_config.db_dir()), help="tuning database directory")
    p.add_argument("--storage", default=None, help="Optuna storage URL (default: a journal under DB/.studies)")
    p.set_defaults(func=_cmd_tune)

    p = sub.add_parser("db", help="inspect or merge tuning databases")
    db_sub = p.add_subparsers(dest="db_command", required=True)
    q = db_sub.add_parser("show", help="list records")
    q.add_argument("--device", default=None, help=device_help)
    q.add_argument("--db", default=str(_config.db_dir()))
    q.set_defaults(func=_cmd_db_show)
    q = db_sub.add_parser("merge", help="merge another database directory in, keeping the faster record")
    q.add_argument("other")
    q.add_argument("--db", default=str(_config.db_dir()))
    q.set_defaults(func=_cmd_db_merge)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the exit code (2 for a device that does not exist)."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except DeviceNotFoundError as exc:
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
