"""``kernelforge run`` and ``kernelforge export``: a model's inputs checked and run natively, or written as a bundle."""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kernelforge.cli_common import UsageError, db_folder, load_onnx, model_path
from kernelforge.cli_shapes import from_arrays, parse_flags, resolve, variants

if TYPE_CHECKING:
    import numpy as np
    import onnx


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
            arrays[name] = np.asarray(np.load(file, allow_pickle=False))  # the session checks its dtype
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


def cmd_run(args: argparse.Namespace) -> int:
    """``run``: load a model, run it once on random or given inputs, optionally bench and profile it."""
    import numpy as np

    path = model_path(args.model)
    given = _parse_inputs(args.input)
    if args.bench is not None and args.bench < 1:
        raise UsageError("--bench must be >= 1")
    if args.output and Path(args.output).is_dir():
        raise UsageError(f"--output {args.output}: is a directory (name an .npz file)")
    db = str(db_folder(args.db, create=False)) if args.db is not None else None
    from kernelforge.runtime.backends import requested_backend

    if requested_backend(args.device):
        raise UsageError(f"--device {args.device} is for tune; models run in browsers through `kernelforge export`")
    proto = load_onnx(path)
    declared = _declared_inputs(proto)
    arrays = _check_inputs(given, declared)
    shapes = resolve(declared, parse_flags(args.shape, args.dim, declared), from_arrays(arrays))
    from kernelforge.runtime.session import load  # after the checks: argument errors need no device stack

    # the path, not the parsed proto: errors then name the file rather than the graph inside it
    session = load(
        path,
        device=args.device,
        backend=args.backend,
        db=db,
        input_shapes=shapes or None,
        weights=args.weights,
        precision=args.precision,
    )
    feeds = {**session.random_feeds(np.random.default_rng(args.seed)), **given}
    print(f"{path.name} on {session.device.describe()}")
    for name, shape in session.inputs:
        dtype = "" if session.dtypes[name] == "float32" else f" {session.dtypes[name]}"
        dims = declared.get(name)
        said = "no shape" if dims is None else f"[{', '.join(map(str, dims))}]"
        fixed = "" if dims == shape else f" (declared {said})"
        print(f"  input  {name} {list(shape)}{dtype}{'' if name in given else ' (random)'}{fixed}")
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
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            with out.open("wb") as handle:  # an open file: np.savez would append .npz to a bare name
                savez: Any = np.savez  # numpy's stub types **kwds as its allow_pickle flag
                savez(handle, **outputs)
        except OSError as exc:
            raise UsageError(f"--output {args.output}: cannot write it ({exc.strerror or exc})") from None
        print(f"wrote {len(outputs)} outputs to {out}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """``export``: write a browser bundle of a model (manifest, weights, the static JS runtime, a demo page)."""
    path = model_path(args.model)
    selectors = [s.strip() for s in args.targets.split(",") if s.strip()]
    if not selectors:
        raise UsageError("--targets is empty (use 'all', a class, a language or a device name)")
    db_dir = db_folder(args.db, create=False)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {args.out}: is a file (the bundle is a folder)")
    declared = _declared_inputs(load_onnx(path))  # a file that is not ONNX at all is a usage error
    base = parse_flags(args.shape, args.dim, declared)
    shapes = variants(declared, base, args.variant) if args.variant else [resolve(declared, base)]
    from kernelforge.export import export  # after the checks: argument errors need no importer

    if args.candidates is not None and args.candidates < 1:
        raise UsageError(f"--candidates {args.candidates}: give 1 (no candidates) or more")
    more = {} if args.candidates is None else {"candidates": args.candidates}
    if args.calibrate is not None and not Path(args.calibrate).is_file():
        raise UsageError(f"--calibrate {args.calibrate}: no such file")
    report = export(
        path,
        args.out,
        targets=selectors,
        weights=args.weights,
        db=db_dir,
        name=path.stem,
        variants=shapes,
        precision=args.precision,
        calibrate=args.calibrate,
        **more,
    )
    print(report.summary())
    return 0
