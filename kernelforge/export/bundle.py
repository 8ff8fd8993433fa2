"""``kernelforge export``: an ONNX model plus the tuning database as a folder a browser can serve.

The bundle holds data only (``manifest.json``, ``weights.bin``) and the static runtime copied from
``kernelforge/export/js``. Only the kernels the model runs are shipped (WebDNN's per-model bundles), each
shader text once, each constant once; one execution plan per target device, so the runtime picks tuned
kernels for the adapter it finds without any search in the browser. A model with symbolic dims (a sequence
length) can ship several *variants*, each a full set of plans for one set of input shapes, sharing the
constants and shaders tables, so the weights are stored once. Format: ``FORMAT.md`` beside this file.

The manifest carries the SHA-256 of ``weights.bin`` and ends with an integrity member, the SHA-256 of its own
text before that member (:func:`manifest_text`), so that the runtime refuses an altered or damaged bundle.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from kernelforge._version import __version__
from kernelforge.db import TuningDB
from kernelforge.errors import ExportError, KernelforgeError
from kernelforge.graph.build import build_program
from kernelforge.graph.ir import Graph
from kernelforge.graph.onnx_import import import_model
from kernelforge.graph.plan import PRECISIONS, Plan, plan_graph
from kernelforge.graph.prepare import ModelSource, prepare_graph
from kernelforge.graph.quant_weights import WEIGHT_FORMATS

from .candidates import DEFAULT_CANDIDATES, Proposal, allocate, wgsl_candidates
from .plans import glsl_json, wgsl_json
from .precision import Checker, PrecisionCheck, calibration_feeds, f16_nodes
from .targets import NO_RECORDS, Target, select_targets
from .weights import Constants, Shaders

FORMAT_VERSION = 4
"""The version of a bundle with several variants (shape sets); one with a single variant is written as version 3."""
SINGLE_VARIANT_VERSION = 3
JS_DIR = Path(__file__).resolve().parent / "js"
WEB_DTYPES = frozenset(
    ("float32", "float16", "float64", "int64", "int32", "int16", "int8", "uint8", "uint16", "uint32", "uint64", "bool")
)
"""The graph input/output dtypes ``kernelforge.js`` has a typed array for (FORMAT.md): a bundle carries no other."""
RUNTIME_FILES = ("kernelforge.js", "kernelforge-tune.js", "kernelforge.d.ts", "index.html")


@dataclass(frozen=True)
class TargetReport:
    """One exported plan: its id and where its kernels' params came from."""

    id: str
    steps: int
    kernels: dict[str, int]


@dataclass(frozen=True)
class VariantReport:
    """One exported shape set: its input shapes and its plans."""

    inputs: dict[str, tuple[int, ...]]
    targets: tuple[TargetReport, ...]


@dataclass(frozen=True)
class ExportReport:
    """What ``export`` wrote."""

    out_dir: Path
    targets: tuple[TargetReport, ...]
    """The plans of the first variant (the only one, unless ``export`` was given several)."""
    weights_bytes: int
    manifest_bytes: int
    shaders: int
    skipped: tuple[str, ...] = ()
    """Why devices of the database were left out (corrupt files, skipped for their device alone)."""
    variants: tuple[VariantReport, ...] = ()
    """Every variant, in the manifest's order."""
    precision: tuple[PrecisionCheck, ...] = ()
    """The model-level check of each f16 plan the export made (per variant), shipped or not."""
    rounding: str = ""
    """How int4 weights were rounded (empty for other formats)."""

    def summary(self) -> str:
        """Return a short human-readable table."""
        lines = [
            f"wrote {self.out_dir}/: manifest.json ({self.manifest_bytes / 1024:.1f} KiB, {self.shaders} "
            f"shaders), weights.bin ({self.weights_bytes / 2**20:.2f} MiB), {', '.join(RUNTIME_FILES)}"
        ]
        several = len(self.variants) > 1
        for number, v in enumerate(self.variants or (VariantReport({}, self.targets),), start=1):
            if several:
                lines.append(f"  variant {number}: " + ", ".join(f"{n} {list(s)}" for n, s in v.inputs.items()))
            for t in v.targets:
                kinds = ", ".join(f"{n} {k}" for k, n in sorted(t.kernels.items()))
                lines.append(
                    f"{'    ' if several else '  '}{t.id:40} {t.steps:3} passes  kernel params: {kinds or '-'}"
                )
        lines += [f"  int4 weights: {self.rounding}"] if self.rounding else []
        lines += [f"  f16 check {c.line()}" for c in self.precision]
        lines += [f"  skipped: {reason}" for reason in self.skipped]
        return "\n".join(lines)


def manifest_text(manifest: Mapping[str, Any]) -> str:
    """Return the text of ``manifest.json``: compact JSON whose last member is its integrity hash (FORMAT.md).

    The manifest without ``integrity`` is serialised, its UTF-8 bytes hashed, and the member
    ``"integrity":"sha256-<hex>"`` appended before the closing brace; a runtime hashes the text before that
    member plus ``}``, so no JSON needs to be serialised alike by both sides. An ``integrity`` already in
    ``manifest`` is replaced.
    """
    body = json.dumps({k: v for k, v in manifest.items() if k != "integrity"}, separators=(",", ":"))
    digest = hashlib.sha256(body.encode()).hexdigest()
    return f'{body[:-1]},"integrity":"sha256-{digest}"}}'


def _tensor(graph: Graph, name: str) -> dict[str, Any]:
    """A model input or output of the manifest: name, shape and the dtype it is fed or read as."""
    return {"name": name, "shape": list(graph.value(name).shape), "dtype": graph.dtype(name)}


def _plan(target: Target, graph: Graph, db: TuningDB, precision: str) -> Plan:
    """Plan a target: its f32 plan (``precision`` ``f32``), or its f16 plan (``auto`` or ``f16``).

    ``auto`` keeps the records' arithmetic, ``f16`` takes f16 wherever a kernel has it. A device with
    ``shader-f16`` plans both with that feature's limits, so its f32 plan takes its f16 records' tiles in f32;
    the f32 plan itself needs no feature.
    """
    limits = replace(target.info.limits, f16=target.f16 or precision != "f32")
    return plan_graph(
        copy.deepcopy(graph), target.info, target.language, limits, NO_RECORDS if target.is_default else db, precision
    )


def _target_json(
    target: Target, plan: Plan, db: TuningDB, constants: Constants, shaders: Shaders, candidates: int, f16: bool
) -> tuple[dict[str, Any], Proposal | None]:
    """Return a target's manifest entry and, for WGSL, its candidates (written in by :func:`_add_candidates`).

    An f16 plan (``f16``) has the id ``<target id>-f16``; FORMAT.md, "Targets", says when a runtime takes it.
    """
    proposal = None
    try:
        program = build_program(plan, target="web")
        body = (wgsl_json if target.language == "wgsl" else glsl_json)(program, constants, shaders)
        if target.language == "wgsl":
            # every database device's winners, even for the defaults target: an unknown GPU may land on it
            # an f32 plan's candidates need no shader-f16 either (its plan was made with f16 records in view)
            own = replace(plan, limits=replace(plan.limits, f16=f16))
            proposal = wgsl_candidates(own, program, target.info, db, candidates)
    except KernelforgeError as exc:
        raise ExportError(f"target {target.id}: {exc}") from exc
    entry = {
        "id": target.id + "-f16" * f16,
        "language": target.language,
        "device": target.device,
        "kernels": plan.sources,
    }
    return {**entry, "plan": body}, proposal


def _reduced_plans(
    chosen: Sequence[Target], graphs: Sequence[Graph], db: TuningDB, precision: str, checker: Checker
) -> tuple[dict[str, list[Plan]], list[PrecisionCheck]]:
    """Return each target's lower-precision plans (one per variant) that pass the model-level check, and every check.

    A WGSL target gets an f16 plan where it may compute in f16 (its device has ``shader-f16``; with ``precision``
    ``f16`` the defaults too), shipped before its f32 plan. A GLSL target's plan draws half-float textures instead:
    they need nothing past what the runtime requires of WebGL2, so that plan replaces its float32 one. Either
    kind is made where some kernel of some variant then runs in f16, and kept only if every such variant passes.
    """
    kept: dict[str, list[Plan]] = {}
    checks: list[PrecisionCheck] = []
    if precision == "f32":
        return kept, checks
    for target in chosen:
        wgsl = target.language == "wgsl"
        if wgsl and not (target.f16 or (target.is_default and precision == "f16")):
            continue
        try:
            plans = [_plan(target, graph, db, precision) for graph in graphs]
        except KernelforgeError as exc:
            raise ExportError(f"target {target.id} ({'f16' if wgsl else 'half floats'}): {exc}") from exc
        name = f"{target.id}-f16" if wgsl else target.id
        mine = [checker.check(name, g, p, target.language) for g, p in zip(graphs, plans, strict=True) if f16_nodes(p)]
        checks += mine
        if mine and all(c.passed for c in mine):
            kept[target.id] = plans
    return kept, checks


def _add_candidates(found: list[tuple[dict[str, Any], Proposal | None]], shaders: Shaders) -> None:
    """Write the candidates that fit the bundle's byte budget into their plans (``kernels`` and step rows)."""
    wgsl = [(target, proposal) for target, proposal in found if proposal is not None]
    tables = allocate([proposal for _, proposal in wgsl], shaders)
    for (target, _), (table, rows) in zip(wgsl, tables, strict=True):
        if table:
            target["plan"]["kernels"] = table
            for step, row in zip(target["plan"]["steps"], rows, strict=True):
                if row is not None:
                    step["kernel"] = row


def export(
    model: ModelSource,
    out_dir: str | os.PathLike[str],
    *,
    targets: Sequence[str] = ("all",),
    weights: str = "fp32",
    db: TuningDB | str | os.PathLike[str] | None = None,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    name: str | None = None,
    variants: Sequence[Mapping[str, Sequence[int]]] | None = None,
    candidates: int = DEFAULT_CANDIDATES,
    precision: str = "auto",
    calibrate: str | os.PathLike[str] | None = None,
) -> ExportReport:
    """Write a browser bundle of a model.

    Args:
        model: An ONNX file path, serialized bytes or ``onnx.ModelProto``.
        out_dir: The bundle folder (created; the bundle's files in it are replaced).
        targets: Device selectors (see :func:`select_targets`); the default targets are always added.
        weights: ``fp32``; ``fp16`` to halve ``weights.bin`` (GEMM and conv weights stay halves in GPU memory, read
            by their kernels; other constants are widened at load; compute stays fp32); ``int8``
            to quarter the GEMM and conv weights (symmetric, per output channel; their kernels read the integers
            and dequantize them, so GPU memory holds int8 too); ``int4`` to about an eighth (two values a byte and a
            float16 scale per output channel and 32 K values: 4.5 bits a weight). Other constants stay fp32
            (embedding tables: int8 rows).
        db: The tuning database or its directory (default: the configured one).
        input_shapes: Shapes for inputs with symbolic dims (a symbolic leading dim defaults to 1).
        name: The model's name in the manifest (default: the file's stem, or the graph's name).
        variants: Several shape sets to ship in one bundle, each ``input_shapes`` (over ``input_shapes``, which
            then holds what they share), each a full plan of every target; weights and shaders are stored once.
            One variant (or none) writes the version-3 layout, several version 4 (FORMAT.md, "Variants").
        candidates: Configs a browser may time per WGSL kernel on a GPU without an exact target, the plan's
            own included (FORMAT.md, "Candidates"); 1 ships none.
        precision: ``auto`` ships an f16 plan for a WGSL target whose tuned records compute some kernel in f16,
            ``f16`` for every WGSL target (defaults included), each before the target's f32 plan and only if
            the whole model stays within :data:`~kernelforge.export.precision.MODEL_BOUND` on a local device
            with ``shader-f16``; ``f32`` ships none. A runtime takes an f16 plan only on an adapter with the
            feature. A GLSL target's plan draws half-float textures where its records do (``auto``) or wherever a
            kernel can (``f16``), under the same check on a local GLSL device, else float32 ones. The report (and
            ``summary()``) gives each such plan's measured error per output.
        calibrate: A ``.npz`` of inputs (per input, one sample or ``[n, *shape]``) the f16 check runs besides
            random ones; ``int4`` weights are rounded against them (GPTQ and bias correction, see
            :mod:`kernelforge.graph.gptq`), else each to its nearest level.

    Raises:
        GraphError: For a malformed model or unsupported nodes (every one named, before anything is written).
        ExportError: For a bad selector (or one naming a corrupt database file; other corrupt files are skipped
            and named in the report), two variants of the same input shapes, or a kernel that cannot be planned.
    """
    from kernelforge import _config

    tuning = db if isinstance(db, TuningDB) else TuningDB(db if db is not None else _config.db_dir())
    if weights not in WEIGHT_FORMATS:
        raise ExportError(f"--weights must be one of {', '.join(WEIGHT_FORMATS)}, got {weights!r}")
    if precision not in PRECISIONS:
        raise ExportError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    feeds, rounding = _int4_calibration(model, input_shapes, variants, weights, calibrate)
    graphs = _variant_graphs(model, input_shapes, variants, weights, feeds)
    constants, shaders = Constants("fp32" if weights in ("int8", "int4") else weights, weights == "int4"), Shaders()
    skipped: list[str] = []
    chosen = select_targets(tuning, targets, skipped)
    if calibrate is not None and not feeds:
        calibration_feeds(calibrate, graphs[0])  # a bad file fails before anything is planned (int4 read it already)
    reduced, checks = _reduced_plans(chosen, graphs, tuning, precision, Checker(tuning, calibrate))
    bodies = []
    found: list[tuple[dict[str, Any], Proposal | None]] = []
    for k, graph in enumerate(graphs):
        try:
            made = []
            for t in chosen:
                low = reduced[t.id][k] if t.id in reduced else None
                if low is not None and t.language == "wgsl":  # an f16 plan, before the f32 one
                    made.append(_target_json(t, low, tuning, constants, shaders, candidates, True))
                # a GLSL target's half-float plan is its only one
                plan = low if low is not None and t.language == "glsl" else _plan(t, graph, tuning, "f32")
                made.append(_target_json(t, plan, tuning, constants, shaders, candidates, False))
        except (ExportError, KernelforgeError) as exc:
            raise ExportError(f"variant {k + 1} ({_shapes(graph)}): {exc}" if len(graphs) > 1 else str(exc)) from None
        found += made
        io = {
            "inputs": [_tensor(graph, n) for n in graph.inputs],
            "outputs": [_tensor(graph, n) for n in graph.outputs],
        }
        bodies.append((io, [plan for plan, _ in made]))
    _add_candidates(found, shaders)
    if name is None:
        name = Path(os.fspath(model)).stem if isinstance(model, (str, os.PathLike)) else "model"
    weights_bin = constants.data()
    manifest: dict[str, Any] = {
        "format": "kernelforge-bundle",
        "version": FORMAT_VERSION if len(bodies) > 1 else SINGLE_VARIANT_VERSION,
        "generator": f"kernelforge {__version__}",
        "model": {"name": name, **bodies[0][0]} if len(bodies) == 1 else {"name": name},
        "weights": {**constants.meta("weights.bin"), "sha256": hashlib.sha256(weights_bin).hexdigest()},
        "constants": constants.table,
        "shaders": shaders.texts,
    }
    if len(bodies) == 1:
        manifest["targets"] = bodies[0][1]
    else:
        manifest["variants"] = [{**io, "targets": plans} for io, plans in bodies]
    missing = [str(JS_DIR / f) for f in RUNTIME_FILES if not (JS_DIR / f).is_file()]
    if missing:
        raise ExportError(f"the package lacks its runtime files {missing}; reinstall kernelforge")
    out = Path(out_dir)
    text = manifest_text(manifest)
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / "weights.bin").write_bytes(weights_bin)
        (out / "manifest.json").write_text(text)
        for file in RUNTIME_FILES:
            shutil.copyfile(JS_DIR / file, out / file)
    except OSError as exc:
        raise ExportError(f"cannot write the bundle to {out}: {exc.strerror or exc}") from None
    reports = tuple(
        VariantReport(
            {n: graph.value(n).shape for n in graph.inputs},
            tuple(TargetReport(p["id"], len(p["plan"]["steps"]), dict(p["kernels"])) for p in plans),
        )
        for graph, (_, plans) in zip(graphs, bodies, strict=True)
    )
    return ExportReport(
        out,
        reports[0].targets,
        len(weights_bin),
        len(text),
        len(shaders.texts),
        tuple(skipped),
        reports,
        tuple(checks),
        rounding,
    )


def _shapes(graph: Graph) -> str:
    return ", ".join(f"{n} {list(graph.value(n).shape)}" for n in graph.inputs)


def _check_web_dtypes(graph: Graph) -> None:
    """Refuse a graph input or output of a dtype ``kernelforge.js`` cannot feed or read (bfloat16, float8, int4...)."""
    bad = [
        f"graph {kind} {name!r} is {graph.dtype(name)}"
        for kind, names in (("input", graph.inputs), ("output", graph.outputs))
        for name in names
        if graph.dtype(name) not in WEB_DTYPES
    ]
    if bad:
        raise ExportError(
            f"{'; '.join(bad)}: kernelforge.js has no typed array for that dtype (a bundle's inputs and outputs are "
            f"{', '.join(sorted(WEB_DTYPES))}); make the model's edge float32 or float16 to export it"
        )


def _variant_graphs(
    model: ModelSource,
    input_shapes: Mapping[str, Sequence[int]] | None,
    variants: Sequence[Mapping[str, Sequence[int]]] | None,
    weights: str,
    calibration: Sequence[Mapping[str, np.ndarray]] = (),
) -> list[Graph]:
    """Return the prepared graph of each variant (one without ``variants``); two of the same input shapes fail."""
    if variants is not None and not variants:
        raise ExportError("variants is empty: give at least one shape set, or None")
    graphs: list[Graph] = []
    for k, shapes in enumerate(variants or [{}]):
        graph = prepare_graph(model, {**(input_shapes or {}), **shapes}, weights, calibration)
        _check_web_dtypes(graph)
        same = [j for j, g in enumerate(graphs) if _shapes(g) == _shapes(graph)]
        if same:
            raise ExportError(f"variants {same[0] + 1} and {k + 1} have the same input shapes ({_shapes(graph)})")
        graphs.append(graph)
    return graphs


def _int4_calibration(
    model: ModelSource,
    input_shapes: Mapping[str, Sequence[int]] | None,
    variants: Sequence[Mapping[str, Sequence[int]]] | None,
    weights: str,
    calibrate: str | os.PathLike[str] | None,
) -> tuple[list[dict[str, np.ndarray]], str]:
    """The feeds int4 weights are rounded against (none: nearest rounding) and the report's line on it."""
    if weights != "int4":
        return [], ""
    if calibrate is None:
        return [], "each rounded to its nearest level (--calibrate FILE.npz rounds them against your inputs)"
    if variants is not None and len(variants) > 1:
        raise ExportError(
            "--calibrate rounds int4 weights against one set of input shapes, and this export has several "
            "variants: export int4 variants without --calibrate, or one variant per bundle"
        )
    shapes = {**(input_shapes or {}), **(variants[0] if variants else {})}
    feeds = calibration_feeds(calibrate, import_model(model, shapes))  # the inputs only: no passes needed
    return feeds, f"GPTQ and bias correction against the {len(feeds)} inputs of {os.fspath(calibrate)}"
