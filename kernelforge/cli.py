"""The ``kernelforge`` command: devices, run, tune, export, db show, db merge, db prune."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kernelforge import _config
from kernelforge._version import __version__
from kernelforge.cli_common import UsageError, db_folder, model_path
from kernelforge.cli_db import cmd_db_import, cmd_db_merge, cmd_db_prune, cmd_db_show, cmd_db_sync
from kernelforge.cli_run import cmd_export, cmd_run
from kernelforge.cli_shapes import ShapeUsageError
from kernelforge.errors import DeviceNotFoundError, KernelforgeError
from kernelforge.graph.plan import PRECISIONS
from kernelforge.graph.quant_weights import WEIGHT_FORMATS

if TYPE_CHECKING:
    from kernelforge.runtime.agent import BrowserOptions
    from kernelforge.runtime.remote import RemoteOptions


def _check_budget(args: argparse.Namespace) -> None:
    if args.trials < 1:
        raise UsageError(f"--trials must be >= 1, got {args.trials}")
    if args.time_budget is not None and not (math.isfinite(args.time_budget) and args.time_budget > 0):
        raise UsageError(f"--time-budget must be a finite number of seconds > 0, got {args.time_budget}")


def _browser_options(args: argparse.Namespace) -> BrowserOptions:
    """Return the ``BrowserOptions`` of ``--browser-executable``/``--browser-arg``/``--headed``.

    Raises:
        UsageError: When they are given but no browser is asked for (``--device browser``, ``devices --browser``).
    """
    from kernelforge.runtime import BrowserOptions
    from kernelforge.runtime.backends import requested_word

    values = {"--browser-executable": args.browser_executable, "--browser-arg": args.browser_arg}
    given = [flag for flag, value in {**values, "--headed": args.headed}.items() if value]
    asked = getattr(args, "browser", False) or requested_word(getattr(args, "device", "")) == "browser"
    if given and not asked:
        raise UsageError(f"{', '.join(given)}: only for --device browser")
    if args.browser_executable and not Path(args.browser_executable).is_file():
        raise UsageError(f"--browser-executable {args.browser_executable}: no such file")
    return BrowserOptions(args.browser_executable or "", tuple(args.browser_arg), args.headed)


def _remote_options(args: argparse.Namespace) -> RemoteOptions:
    """Return the ``RemoteOptions`` of ``--listen``/``--connect-timeout``/``--tls-cert``/``--tls-key``.

    Raises:
        UsageError: When they are given without ``--device remote``, or do not fit.
    """
    from kernelforge.runtime import RemoteOptions
    from kernelforge.runtime.backends import requested_word
    from kernelforge.runtime.remote import parse_listen

    values = {"--listen": args.listen, "--connect-timeout": args.connect_timeout}
    given = [flag for flag, v in {**values, "--tls-cert": args.tls_cert, "--tls-key": args.tls_key}.items() if v]
    if given and requested_word(args.device) != "remote":
        raise UsageError(f"{', '.join(given)}: only for --device remote")
    options = RemoteOptions()
    if args.listen is not None:
        try:
            parse_listen(args.listen)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        options = dataclasses.replace(options, listen=args.listen)
    if args.connect_timeout is not None:
        if not (math.isfinite(args.connect_timeout) and args.connect_timeout > 0):
            raise UsageError(f"--connect-timeout must be a finite number of seconds > 0, got {args.connect_timeout}")
        options = dataclasses.replace(options, connect_timeout=args.connect_timeout)
    for flag, path in (("--tls-cert", args.tls_cert), ("--tls-key", args.tls_key)):
        if path and not Path(path).is_file():
            raise UsageError(f"{flag} {path}: no such file")
    if args.tls_key and not args.tls_cert:
        raise UsageError("--tls-key: only with --tls-cert")
    return dataclasses.replace(options, tls_cert=args.tls_cert or "", tls_key=args.tls_key or "")


def _cmd_devices(args: argparse.Namespace) -> int:
    from kernelforge.runtime import list_devices, select_device

    devices = list_devices()
    if args.browser:  # a browser is a program to launch, not an adapter: listed only when asked for
        options = _browser_options(args)
        devices += tuple(select_device(s, browser=options) for s in ("browser", "browser:webgl2"))
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
        if d.is_browser:
            selector = "browser" if d.api == "webgpu" else f"browser:{d.api}"
            print(f"    browser device (--device {selector}): adapter {d.adapter!r}")
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
    from kernelforge.tuner.tune import TuneOptions, format_results, tune_problem, worker_seed

    if args.model is not None:
        if args.op is not None:
            raise UsageError("--op and --model exclude each other (--model tunes every kernel of the model)")
        return _tune_model(args)
    _check_budget(args)
    jobs: list[tuple[Any, Any]] = []
    if not args.stale:
        spec = get_op(args.op or "gemm")
        for text in _split_shapes(args.shape, spec.shape_separator):
            try:
                jobs.append((spec, spec.parse_problem(text)))
            except KernelforgeError as exc:
                raise UsageError(f"--shape {text!r}: {exc}") from None
        if not jobs:
            raise UsageError("--shape names no shape")
    db = db_folder(args.db, create=True)
    # fails with the device list first
    info = select_device(args.device, args.backend, _browser_options(args), _remote_options(args))
    backend = open_device(info)
    if args.stale:
        jobs = _stale_jobs(db, info.slug, backend.language, args.op)
    for spec, problem in jobs:  # a problem too big for the device is refused before its inputs are allocated
        try:
            spec.default_params(problem, backend.limits, backend.language)
        except KernelforgeError as exc:
            raise UsageError(f"--shape {spec.problem_key(problem)}: {exc}") from None
    seed = args.seed if args.seed is not None else worker_seed()
    what = f"{len(jobs)} shapes with stale records" if args.stale else f"{jobs[0][0].name}"
    print(f"tuning {what} on {info.describe()} with {args.sampler} (seed {seed}), {args.trials} trials per shape")
    options = TuneOptions(
        trials=args.trials,
        time_budget=args.time_budget,
        sampler=args.sampler,
        seed=seed,
        db_dir=db,
        storage=args.storage,
        replace=args.replace,
    )
    results = []
    for spec, problem in jobs:
        result = tune_problem(backend, spec, problem, options)
        results.append(dataclasses.replace(result, shape=f"{spec.name} {result.shape}") if args.stale else result)
        if result.interrupted:
            break
    print(format_results(results))
    for r in results:
        print(_stored_line(r.shape, r, db / f"{info.slug}.json"))
    return _tune_status(results)


def _stale_jobs(db: Path, slug: str, language: str, op: str | None) -> list[tuple[Any, Any]]:
    """Return ``(spec, problem)`` of every shape whose record on a device is of an older template, and none current.

    ``tune --stale`` re-tunes them after a template edit: each study starts from the default and the stale record,
    so a few trials find the old optimum again under the new template.
    """
    from kernelforge.db import TuningDB
    from kernelforge.ops import get_op
    from kernelforge.templates import kernel_hash

    path = db / f"{slug}.json"
    records = TuningDB(db).load(path).records.values() if path.exists() else []
    mine = [r for r in records if r.language == language and (op is None or r.op == op)]
    current = {(r.op, r.dtype, r.shape) for r in mine if r.template_hash == kernel_hash(get_op(r.op), language)}
    jobs: dict[tuple[str, str], tuple[Any, Any]] = {}
    for r in mine:
        if r.template_hash != kernel_hash(get_op(r.op), language) and (r.op, r.dtype, r.shape) not in current:
            spec = get_op(r.op)
            jobs.setdefault((r.op, r.shape), (spec, spec.parse_problem(r.shape)))
    if not jobs:
        raise UsageError(f"no stale {language} records of {slug} in {db}: nothing to re-tune")
    return list(jobs.values())


def _stored_line(label: str, result: Any, path: Path) -> str:
    """Say what became of a result's record: written (new, or faster than the stored one) or not."""
    stored = result.stored
    if result.record is None or stored is None:
        return f"{label}: nothing stored (the default did not verify, or no trial finished)"
    mine = f"{result.record.time_s * 1e3:.3f} ms"
    if stored.written:
        was = f", replacing {stored.previous_time_s * 1e3:.3f} ms" if stored.previous_time_s is not None else ""
        return f"{label}: best {result.best_params} ({mine}{was}) -> {path}"
    if stored.previous_time_s is None:
        return f"{label}: kept the stored record this version cannot read ({mine} not written; --replace writes it)"
    return f"{label}: kept the stored {stored.previous_time_s * 1e3:.3f} ms record, faster than this run's {mine}"


def _tune_status(results: Sequence[Any]) -> int:
    """Report interruptions and storage outages; return the exit code (130 interrupted, 1 storage lost)."""
    lost = next((r.storage_error for r in results if r.storage_error), "")
    if lost:
        print(f"kernelforge: stopped: {lost}; finished trials are kept, this worker's best is stored", file=sys.stderr)
        return 1
    if any(r.interrupted for r in results):
        print("interrupted: finished trials are kept in the study; run the same command again to resume")
        return 130
    return 0


def _tune_model(args: argparse.Namespace) -> int:
    """``tune --model``: every distinct kernel of a model, largest FLOPs first, under one overall budget."""
    from tqdm import tqdm

    from kernelforge.ops import get_op
    from kernelforge.runtime import open_device, select_device
    from kernelforge.tuner.tune import TuneOptions, TuneResult, format_results, tune_problem, worker_seed

    path = model_path(args.model)
    _check_budget(args)
    db_dir = db_folder(args.db, create=True)
    info = select_device(args.device, args.backend, _browser_options(args), _remote_options(args))
    from kernelforge.db import TuningDB
    from kernelforge.graph.prepare import model_kernels, planned_kernels  # after the checks: no importer needed

    # big kernels first: they dominate the model's time, so a budget that runs out leaves the small ones
    kernels = sorted(model_kernels(str(path)), key=lambda k: get_op(k[0]).flops(k[1]), reverse=True)
    backend = open_device(info)
    budget = f", {args.time_budget:g} s in all" if args.time_budget is not None else ""
    seed = args.seed if args.seed is not None else worker_seed()
    print(
        f"tuning {len(kernels)} kernels of {path.name} on {info.describe()} with {args.sampler} (seed {seed}), "
        f"{args.trials} trials per kernel{budget}"
    )
    base = TuneOptions(
        trials=args.trials,
        sampler=args.sampler,
        seed=seed,
        db_dir=db_dir,
        storage=args.storage,
        replace=args.replace,
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
                db = TuningDB(db_dir)
                planned = planned_kernels(str(path), info, backend.language, backend.limits, db)
                extra = [k for k in planned if k not in kernels]
                kernels += extra
                bar.total = len(kernels)
    finally:
        bar.close()
    print(format_results(results))
    written = sum(bool(r.stored and r.stored.written) for r in results)
    kept = sum(bool(r.stored and not r.stored.written) for r in results)
    print(
        f"{written} of {len(kernels)} kernels stored in {db_dir / (info.slug + '.json')}"
        + (f"; {kept} stored records were faster and kept" if kept else "")
    )
    if skipped:
        print(f"time budget spent; not tuned: {', '.join(skipped)}")
    return _tune_status(results)


def _shape_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--shape",
        default=[],
        action="append",
        metavar="NAME=DxD...",
        help="fix an input's shape, e.g. input_ids=1x128 (repeatable, or comma-joined)",
    )
    p.add_argument(
        "--dim",
        default=[],
        action="append",
        metavar="SYMBOL=N",
        help="fix a symbolic dim in every input that declares it, e.g. seq=128 (a symbolic leading dim defaults to 1)",
    )


def _browser_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--browser-executable",
        default=None,
        metavar="PATH",
        help="the Chrome/Chromium/Edge to launch for --device browser (default: KF_CHROMIUM, else /usr/bin/chromium)",
    )
    p.add_argument(
        "--browser-arg",
        default=[],
        action="append",
        metavar="ARG",
        help="an extra flag for that browser (repeatable), e.g. --browser-arg=--enable-features=Vulkan",
    )
    p.add_argument("--headed", action="store_true", help="show the browser window (headless by default)")


def _remote_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--listen",
        default=None,
        metavar="HOST:PORT",
        help="for --device remote: where to serve the tuning page (default 127.0.0.1:0, a free loopback port; "
        "0.0.0.0:PORT lets other devices on the network open it)",
    )
    p.add_argument(
        "--connect-timeout",
        type=float,
        default=None,
        metavar="S",
        help="for --device remote: seconds to wait for a browser to open the page, or to come back (default 600)",
    )
    p.add_argument(
        "--tls-cert", default=None, metavar="PEM", help="for --device remote: serve HTTPS with this certificate"
    )
    p.add_argument("--tls-key", default=None, metavar="PEM", help="its private key (default: in --tls-cert)")


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser."""
    parser = argparse.ArgumentParser(prog="kernelforge", description="Per-device autotuned GPU kernels.")
    parser.add_argument("--version", action="version", version=f"kernelforge {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    device_help = "auto, igpu, dgpu, cpu, an index or a name substring (e.g. lavapipe, swiftshader)"

    p = sub.add_parser("devices", help="list GPU adapters")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument(
        "--browser", action="store_true", help="also launch a browser and list its WebGPU and WebGL2 devices"
    )
    _browser_flags(p)
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
    _shape_flags(p)
    p.add_argument("--output", default=None, metavar="OUT.npz", help="write the outputs to an .npz file")
    p.add_argument("--bench", type=int, default=None, metavar="N", help="time N more runs: median and min")
    p.add_argument("--profile", action="store_true", help="print the per-kernel time table of one run")
    p.add_argument("--db", default=None, help="tuning database directory (default: KF_DB_DIR or the built-in one)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random inputs")
    p.add_argument(
        "--precision",
        default="auto",
        choices=list(PRECISIONS),
        help="arithmetic: auto (as tuned: f16 only where it won within its op's bound), f32, or f16 in every "
        "kernel that has it (needs shader-f16)",
    )
    p.add_argument(
        "--weights",
        default="fp32",
        choices=list(WEIGHT_FORMATS),
        help="fp32, or quantize the GEMM/conv weights as export --weights does (the kernels read the integers "
        "or halves)",
    )
    p.set_defaults(func=cmd_run)

    from kernelforge.ops import OPS, get_op

    shapes = "\n".join(f"  {name}: {get_op(name).shape_syntax}" for name in sorted(OPS))
    p = sub.add_parser(
        "tune",
        help="tune kernels for a device and store the winners",
        description=f"Tune kernels for a device and store the winners.\n\n--shape syntax per op:\n{shapes}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--device",
        default="auto",
        help=device_help + "; or browser: compile, verify and time every trial in a page of a browser (WebGPU; "
        "browser:webgl2 for the GLSL kernels); or remote[:webgl2]: serve a tuning page (its URL is printed) and "
        "tune in whichever browser opens it",
    )
    _browser_flags(p)
    _remote_flags(p)
    p.add_argument("--backend", default=None, choices=["wgsl", "glsl"], help="kernel language (default: the device's)")
    p.add_argument("--op", default=None, choices=sorted(OPS), help="op to tune (default gemm)")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument(
        "--model", default=None, metavar="MODEL.onnx", help="tune every distinct kernel of an ONNX model instead"
    )
    what.add_argument(
        "--stale",
        action="store_true",
        help="re-tune every shape whose record on this device was made with an older template (after an edit)",
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
    p.add_argument("--seed", type=int, default=None, help="sampler seed (default: one of this worker's own, printed)")
    p.add_argument("--db", default=str(_config.db_dir()), help="tuning database directory (created if missing)")
    p.add_argument(
        "--storage",
        default=None,
        metavar="URL",
        help="shared study storage for workers on several machines, e.g. postgresql://user:pass@host/db "
        "(pip install 'kernelforge[postgres]'); default: a journal under DB/.studies",
    )
    p.add_argument(
        "--replace", action="store_true", help="store this run's winner even where the stored record is faster"
    )
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
    p.add_argument(
        "--weights",
        default="fp32",
        choices=list(WEIGHT_FORMATS),
        help="storage of weights.bin: fp32, fp16 (GEMM/conv weights kept as halves on the GPU, the rest widened at "
        "load), int8 (GEMM/conv weights, per-channel scales) "
        "or int4 (GEMM/conv weights, a scale per channel and 32 K values, rounded against the --calibrate inputs "
        "where given; weights of under 32 K values per channel are int8)",
    )
    p.add_argument(
        "--precision",
        default="auto",
        choices=list(PRECISIONS),
        help="f16 plans, each before its target's f32 plan and run only where the adapter has shader-f16: auto "
        "(for devices whose records compute in f16), f16 (every WebGPU target, defaults included) or f32 (none); "
        "each is checked on a local device with shader-f16 and prints its error per output; WebGL2 plans draw "
        "half-float textures where the records do (auto) or wherever they can (f16), checked alike",
    )
    p.add_argument(
        "--calibrate",
        default=None,
        metavar="FILE.npz",
        help="inputs the f16 check runs besides random ones, and that int4 weights are rounded against (GPTQ): per "
        "model input, one sample or [n, *shape]",
    )
    _shape_flags(p)
    p.add_argument(
        "--variant",
        default=[],
        action="append",
        metavar="ITEM,...",
        help="one shape set of the bundle (repeatable; weights and shaders are shipped once): items NAME=DxD... "
        "(an input) or SYMBOL=N (a symbolic dim), e.g. --variant seq=32 --variant seq=128",
    )
    p.add_argument(
        "--candidates",
        type=int,
        default=None,
        metavar="K",
        help="configs a browser times per WebGPU kernel on a GPU the bundle has no exact target for, the plan's "
        "own included (as many again with subgroups of its size): each database device's best, the default, the "
        "op's seeds (1: none; default 2)",
    )
    p.add_argument("--db", default=str(_config.db_dir()), help="tuning database directory")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("db", help="inspect, merge, import, sync or prune tuning databases")
    db_sub = p.add_subparsers(dest="db_command", required=True)
    q = db_sub.add_parser("show", help="list records")
    q.add_argument("--device", default=None, help=device_help)
    q.add_argument("--db", default=str(_config.db_dir()))
    q.set_defaults(func=cmd_db_show)
    q = db_sub.add_parser("merge", help="merge another database directory in, keeping the faster record")
    q.add_argument("other")
    q.add_argument("--db", default=str(_config.db_dir()))
    q.set_defaults(func=cmd_db_merge)
    q = db_sub.add_parser(
        "import",
        help="store the winners of browser tuning reports (kernelforge.js), keeping the faster record",
        description="Validate each tuning report a bundle's runtime made in a browser and store its measured "
        "winners under that browser's device (new or faster records win). A report with any bad record is "
        "rejected whole, naming the record; the other reports are still imported, and the exit code is 1.",
    )
    q.add_argument("reports", nargs="+", metavar="REPORT.json")
    q.add_argument("--db", default=str(_config.db_dir()), help="tuning database directory (created if missing)")
    q.set_defaults(func=cmd_db_import)
    q = db_sub.add_parser("sync", help="store the records that workers left in a shared study storage (faster wins)")
    q.add_argument("--storage", required=True, metavar="URL", help="the study storage the workers used")
    q.add_argument("--db", default=str(_config.db_dir()))
    q.set_defaults(func=cmd_db_sync)
    q = db_sub.add_parser("prune", help="remove records made with templates that have changed since (STALE)")
    q.add_argument("--db", default=str(_config.db_dir()))
    q.set_defaults(func=cmd_db_prune)
    return parser


def _terminate(signum: int, frame: Any) -> None:
    # SIGTERM (a scheduler or `kill` stopping a worker) ends a run as Ctrl-C does: the trial in flight is given
    # up, finished trials stay in the study and the best so far is stored
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the exit code (2 for a device, file, value or input that does not exist or fit)."""
    args = build_parser().parse_args(argv)
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        return int(args.func(args))
    except (DeviceNotFoundError, UsageError, ShapeUsageError) as exc:
        print(f"kernelforge: {exc}", file=sys.stderr)
        return 2
    except (KernelforgeError, KeyError) as exc:
        print(f"kernelforge: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # a path that cannot be read or written, named by the OS
        where = f": {exc.filename}" if exc.filename else ""
        print(f"kernelforge: {exc.strerror or exc}{where}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("kernelforge: interrupted", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
