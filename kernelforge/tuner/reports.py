"""Tuning reports: what a bundle's runtime measured in a user's browser, checked and made into database records.

kernelforge.js can time a few candidate configs of each kernel of a bundle on the GPU it runs on and hand back a
*tuning report* (JSON). ``kernelforge db import`` stores each kernel's winner under the browser's device, so the
next ``kernelforge export`` ships that GPU as an exact target. A report comes from anyone's browser: it is read
like a database file from anywhere (bounded size and nesting, every field checked), every candidate's params are
validated against the op's search space and the winner's against its problem's constraints on the reported
device, before anything can reach a template. One bad record rejects the whole report and nothing of it is
written: a file tampered with in one place cannot be trusted in the others.

Version 1 (fields this version does not know are ignored)::

    {"format": "kernelforge-tuning-report", "version": 1, "generator": "kernelforge 0.9.0",
     "manifest": "sha256-<64 hex>",           # the bundle manifest's integrity member
     "model": "mobilenet_v2", "backend": "webgpu", "target": "<the plan's target id>", "match": "class",
     "adapter": {...},                        # the tuning agent's `open` answer (vendor ... desc, limits)
     "clock": "timestamp" | "wall", "spent_ms": 8123.4,
     "kernels": [{"op": "conv2d", "language": "wgsl", "shape": "<problem key>", "template": "<kernel hash>",
                  "steps": 3, "candidates": [{"params": {...}, "from": "default", "ms": 0.62, "error": "..."}],
                  "winner": 0}]}              # winner null or absent: not measured (the budget ran out)
"""

from __future__ import annotations

import json
import math
import os
import re
import reprlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kernelforge.db import Record, TuningDB, device_meta, new_record
from kernelforge.db._json import BoundsError, loads
from kernelforge.devices import DeviceInfo
from kernelforge.errors import DatabaseError, InvalidParamsError, KernelforgeError
from kernelforge.ops import OPS, get_op
from kernelforge.ops.spec import SUBGROUP_SIZES, OpSpec, Params
from kernelforge.runtime.backends.browser import device_info
from kernelforge.templates import kernel_hash

FORMAT = "kernelforge-tuning-report"
VERSION = 1
"""The report version this kernelforge reads (and every older one)."""
BACKENDS = {"webgpu": "wgsl"}
"""The browser APIs whose reports are imported, and their kernel language (WebGL2 reports: not yet)."""
CLOCKS = ("timestamp", "wall")
MAX_BYTES = 16 << 20
"""Largest report read (a model's report is a few hundred KB)."""
MAX_KERNELS = 10_000
MAX_CANDIDATES = 256
MAX_PARAMS = 32
"""Most entries of one candidate's params (the largest op space has 11 tunables)."""
SHORT = 200
"""Longest text field (what a database record's text fields may hold)."""
LONG = 500
"""Longest adapter description and user agent (``export.targets`` reads adapter descriptions up to 500)."""
_MANIFEST = re.compile(r"sha256-[0-9a-f]{64}")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_ADAPTER_TEXT = ("vendor", "architecture", "device", "description")
_MAX_LIMIT = 1 << 53
"""Largest adapter limit taken (JavaScript's largest exact integer)."""

_repr = reprlib.Repr()
_repr.maxstring = 60
_repr.maxother = 60


class ReportError(KernelforgeError):
    """A tuning report that is rejected; nothing of it is written.

    Attributes:
        file: The report, as it was named.
        detail: What is wrong, naming the field or the record (``kernels[3] (conv2d 1x32x8x8:32x3x3): ...``).
    """

    def __init__(self, file: str, detail: str) -> None:
        super().__init__(f"{file}: {detail}")
        self.file = file
        self.detail = detail


class _Bad(Exception):
    """A field is wrong (the message says where, without the file: :func:`parse_report` adds it)."""


@dataclass(frozen=True)
class Report:
    """A validated report: the device it measured and the records to store.

    Attributes:
        file: The report's file name (what the records' provenance names).
        info: The browser's device, as ``tune --device browser`` sees it when that browser runs the agent.
        meta: The device file's description (:func:`~kernelforge.db.device_meta`).
        records: One record per measured kernel, in report order.
        skipped: Kernels listed without a winner (the budget ran out before they were measured).
    """

    file: str
    info: DeviceInfo
    meta: dict[str, Any]
    records: tuple[Record, ...]
    skipped: int


@dataclass(frozen=True)
class Imported:
    """What importing one report did.

    Attributes:
        file: The report's file name.
        fingerprint: The device whose file took its records.
        written: Records written (new, or faster than the stored one).
        kept: Records not written because the stored one is as fast or faster.
        skipped: Kernels the report did not measure.
    """

    file: str
    fingerprint: str
    written: int
    kept: int
    skipped: int


@dataclass(frozen=True)
class _Candidate:
    params: Params
    source: str
    ms: float | None


def _kind(value: Any) -> str:
    """Return a JSON value's kind, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "an array" if isinstance(value, list) else "an object" if isinstance(value, dict) else type(value).__name__


def _show(value: Any) -> str:
    """Return an untrusted value fit for a message: short, control characters escaped."""
    return _repr.repr(value)


def _field(obj: Mapping[str, Any], key: str, where: str) -> Any:
    if key not in obj:
        raise _Bad(f"{where}: missing field {key!r}")
    return obj[key]


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _Bad(f"{where}: must be an object, got {_kind(value)}")
    return value


def _list(value: Any, where: str, most: int) -> list[Any]:
    if not isinstance(value, list):
        raise _Bad(f"{where}: must be an array, got {_kind(value)}")
    if len(value) > most:
        raise _Bad(f"{where}: {len(value)} entries (at most {most})")
    return value


def _text(value: Any, where: str, size: int = SHORT, empty: bool = False) -> str:
    """Return a string field: at most ``size`` characters, printable (it may be shown in a terminal)."""
    if not isinstance(value, str):
        raise _Bad(f"{where}: must be a string, got {_kind(value)}")
    if len(value) > size:
        raise _Bad(f"{where}: {len(value)} characters (at most {size})")
    if not value and not empty:
        raise _Bad(f"{where}: must not be empty")
    if not value.isprintable():
        raise _Bad(f"{where}: {_show(value)} has control characters")
    return value


def _number(value: Any, where: str, positive: bool) -> float:
    """Return a finite number, > 0 (``positive``) or >= 0."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value < 0
        or (positive and value == 0)
    ):
        raise _Bad(f"{where}: must be a finite number {'> 0' if positive else '>= 0'}, got {_show(value)}")
    return float(value)


def _count(value: Any, where: str, most: int) -> int:
    """Return an integer from 0 to ``most`` (a boolean is not one)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= most:
        raise _Bad(f"{where}: must be an integer from 0 to {most}, got {_show(value)}")
    return value


def read_report(path: str | os.PathLike[str]) -> Report:
    """Read and validate one report file; nothing is stored.

    Args:
        path: The report. Messages name it as given; the records' provenance names its file name.

    Raises:
        ReportError: Naming the file and what is wrong: unreadable, over :data:`MAX_BYTES`, not UTF-8 JSON
            within the bounds of :mod:`kernelforge.db._json`, or a field or record (see :func:`parse_report`).
    """
    name = str(path)
    try:
        # read at most one byte past the limit: a file that grows, or a device file, cannot cost more
        with open(path, "rb") as handle:
            data = handle.read(MAX_BYTES + 1)
    except OSError as exc:
        raise ReportError(name, f"cannot be read ({exc.strerror or exc})") from None
    if len(data) > MAX_BYTES:
        raise ReportError(name, f"more than {MAX_BYTES >> 20} MiB: not a tuning report")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ReportError(name, "not a tuning report (not UTF-8 text)") from None
    try:
        parsed = loads(text)
    except BoundsError as exc:
        raise ReportError(name, f"refused: {exc}") from None
    except json.JSONDecodeError as exc:
        raise ReportError(name, f"not a tuning report (not JSON: {exc})") from None
    return parse_report(parsed, name)


def parse_report(data: Any, name: str) -> Report:
    """Validate a parsed report and build its records; nothing is stored.

    Args:
        data: The report's JSON value, from an untrusted file.
        name: What messages name (the file); the records' provenance takes its last path component.

    Raises:
        ReportError: Naming ``name`` and the first field or record that is wrong: an unknown format, a newer
            version, a backend other than WebGPU, a malformed adapter, an unknown op or language, a shape the
            op cannot parse, a template other than this kernelforge's (a stale record), params outside the
            op's space (shader text included), a winner whose params break a constraint on the reported
            device, a winner index out of range, or a time that is not a finite number > 0.
    """
    try:
        return _parse(data, name)
    except _Bad as exc:
        raise ReportError(name, str(exc)) from None


def _parse(data: Any, name: str) -> Report:
    if not isinstance(data, dict):
        raise _Bad(f"not a tuning report (a JSON document that is {_kind(data)}, not an object)")
    if data.get("format") != FORMAT:
        raise _Bad(f"not a tuning report ('format' is {_show(data.get('format'))}, not {FORMAT!r})")
    version = _field(data, "version", "report")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise _Bad(f"unsupported report version {_show(version)} (this kernelforge reads version {VERSION})")
    if version > VERSION:
        raise _Bad(
            f"report version {version} was made by a newer kernelforge (this one reads version {VERSION}); "
            "import it with a kernelforge as new as the bundle's"
        )
    backend = _text(_field(data, "backend", "report"), "backend")
    if backend not in BACKENDS:
        raise _Bad(f"backend {_show(backend)} is not supported: only WebGPU reports (backend 'webgpu') are imported")
    language = BACKENDS[backend]
    provenance: dict[str, Any] = {"file": Path(name).name}
    for key in ("generator", "manifest", "model", "target", "match"):
        provenance[key] = _text(_field(data, key, "report"), key)
    if not _MANIFEST.fullmatch(provenance["manifest"]):
        raise _Bad(f"manifest: {_show(provenance['manifest'])} is not 'sha256-' and 64 lower-case hex digits")
    provenance["clock"] = _text(_field(data, "clock", "report"), "clock")
    if provenance["clock"] not in CLOCKS:
        raise _Bad(f"clock: {_show(provenance['clock'])} is not one of {list(CLOCKS)}")
    _number(_field(data, "spent_ms", "report"), "spent_ms", positive=False)
    info, subgroup_size = _device(_field(data, "adapter", "report"))
    records: list[Record] = []
    skipped = 0
    for i, kernel in enumerate(_list(_field(data, "kernels", "report"), "kernels", MAX_KERNELS)):
        record = _record(kernel, f"kernels[{i}]", language, info, provenance)
        if record is None:
            skipped += 1
        else:
            records.append(record)
    meta = device_meta(info, subgroup_size, info.limits.f16)
    return Report(provenance["file"], info, meta, tuple(records), skipped)


def _device(value: Any) -> tuple[DeviceInfo, int]:
    """Return the device of the report's ``adapter`` (the agent's ``open`` answer) and its fixed subgroup size.

    Only the fields checked here reach :func:`device_info`: the same function ``tune --device browser`` builds
    its device with, so both name the same browser and GPU with the same fingerprint.
    """
    where = "adapter"
    given = _object(value, where)
    clean: dict[str, Any] = {k: _text(_field(given, k, where), f"{where}.{k}", empty=True) for k in _ADAPTER_TEXT}
    desc = _text(_field(given, "desc", where), f"{where}.desc", LONG, empty=True)
    # kernelforge.js matches a bundle's targets against this text; records under another would never match
    expected = " ".join(clean[k] for k in _ADAPTER_TEXT if clean[k]).lower()
    if not expected:
        raise _Bad(f"{where}: the browser named no adapter (vendor, architecture, device and description are empty)")
    if desc != expected:
        raise _Bad(f"{where}.desc: {_show(desc)} is not the lower-cased vendor, architecture, device and description")
    fallback = _field(given, "fallback", where)
    if not isinstance(fallback, bool):
        raise _Bad(f"{where}.fallback: must be true or false, got {_kind(fallback)}")
    subgroup = _count(_field(given, "subgroupSize", where), f"{where}.subgroupSize", 1024)
    f16 = given.get("f16", False)  # reports from before the field: no shader-f16 recorded
    if not isinstance(f16, bool):
        raise _Bad(f"{where}.f16: must be true or false, got {_kind(f16)}")
    limits = _object(_field(given, "limits", where), f"{where}.limits")
    if len(limits) > 64:
        raise _Bad(f"{where}.limits: {len(limits)} entries (at most 64)")
    for key, limit in limits.items():
        if not _NAME.fullmatch(key):
            raise _Bad(f"{where}.limits: {_show(key)} is not a limit name")
        _count(limit, f"{where}.limits.{key}", _MAX_LIMIT)
    clean.update(
        desc=desc,
        fallback=fallback,
        subgroupSize=subgroup,
        f16=f16,
        userAgent=_text(_field(given, "userAgent", where), f"{where}.userAgent", LONG, empty=True),
        limits=dict(limits),
    )
    return device_info(clean, -1, "", "browser"), subgroup if subgroup in SUBGROUP_SIZES else 0


def _record(kernel: Any, where: str, language: str, info: DeviceInfo, provenance: dict[str, Any]) -> Record | None:
    """Return the record of one kernel entry, or None when it was not measured."""
    kernel = _object(kernel, where)
    op = _text(_field(kernel, "op", where), f"{where}.op", 40)
    shape = _text(_field(kernel, "shape", where), f"{where}.shape")
    where = f"{where} ({op} {shape})"
    if op not in OPS:
        raise _Bad(f"{where}: unknown op {op!r} (this kernelforge has {', '.join(sorted(OPS))})")
    spec = get_op(op)
    kernel_language = _text(_field(kernel, "language", where), f"{where}: language")
    if kernel_language != language:
        raise _Bad(f"{where}: language {kernel_language!r}: a WebGPU report's kernels are {language}")
    if language not in spec.templates:
        raise _Bad(f"{where}: op {op} has no {language} kernel")
    try:
        problem = spec.parse_problem(shape)
    except (KernelforgeError, ValueError, KeyError, TypeError, IndexError, ArithmeticError) as exc:
        raise _Bad(f"{where}: shape: {exc}") from None
    template = _text(_field(kernel, "template", where), f"{where}: template", 128)
    current = kernel_hash(spec, language)
    if template != current:
        raise _Bad(
            f"{where}: template {_show(template[:12])} is not this kernelforge's {op} {language} template "
            f"({current[:12]}): it changed since the bundle was exported (a stale record); export the bundle "
            "again and tune anew"
        )
    if "steps" in kernel:
        _count(kernel["steps"], f"{where}: steps", 1 << 20)
    listed = _list(_field(kernel, "candidates", where), f"{where}: candidates", MAX_CANDIDATES)
    candidates = [_candidate(c, f"{where}: candidates[{j}]", spec, language) for j, c in enumerate(listed)]
    winner = kernel.get("winner")
    if winner is None:
        return None
    if isinstance(winner, bool) or not isinstance(winner, int) or not 0 <= winner < len(candidates):
        raise _Bad(f"{where}: winner {_show(winner)} is not the index of one of its {len(candidates)} candidates")
    best = candidates[winner]
    if best.ms is None:
        raise _Bad(f"{where}: winner candidates[{winner}] has no time ('ms' must be a finite number > 0)")
    reason = spec.constraints(problem, best.params, info.limits, language)
    if reason is not None:
        raise _Bad(f"{where}: winner candidates[{winner}] params cannot run this problem on {info.slug}: {reason}")
    if not math.isfinite(spec.flops(problem) / (best.ms / 1e3)):
        raise _Bad(f"{where}: winner candidates[{winner}] time {best.ms} ms is too small to be a measurement")
    default_ms = next((c.ms for c in candidates if c.source == "default" and c.ms is not None), best.ms)
    measured = sum(c.ms is not None for c in candidates)
    record = new_record(
        spec,
        language,
        problem,
        current,
        best.params,
        best.ms / 1e3,
        default_ms / 1e3,
        {"source": "report", "report": {**provenance, "candidates": measured}},
        info.driver,
    )
    try:  # what is stored must read back as the database reads it (a text field too long for it, say)
        return Record.from_json(record.to_json(), where)
    except DatabaseError as exc:
        raise _Bad(str(exc)) from None


def _candidate(value: Any, where: str, spec: OpSpec[Any], language: str) -> _Candidate:
    """Return one candidate, its params validated against the op's space.

    Every candidate is checked, not only the winner: a report with shader text anywhere was tampered with.
    """
    given = _object(value, where)
    params = _object(_field(given, "params", where), f"{where} params")
    if len(params) > MAX_PARAMS:
        raise _Bad(f"{where} params: {len(params)} entries (at most {MAX_PARAMS})")
    for key, param in params.items():
        if not _NAME.fullmatch(key):
            raise _Bad(f"{where} params: {_show(key)} is not a {spec.name} parameter name")
        if isinstance(param, bool) or not isinstance(param, int):
            raise _Bad(f"{where} params: {spec.name} parameter {key} must be an integer, got {_show(param)}")
    try:
        clean = spec.validate_params(params, language, f"{where} params")
    except InvalidParamsError as exc:
        raise _Bad(str(exc)) from None
    source = _text(_field(given, "from", where), f"{where}.from")
    ms = given.get("ms")
    error = given.get("error")
    if error is not None and (not isinstance(error, str) or len(error) > 10_000):
        raise _Bad(f"{where}.error: must be a string of at most 10000 characters, got {_kind(error)}")
    return _Candidate(clean, source, None if ms is None else _number(ms, f"{where}.ms", positive=True))


def import_report(path: str | os.PathLike[str], db: TuningDB) -> Imported:
    """Read, validate and store one report: all of its records, or none.

    Each record is stored as ``tune`` stores its winner: it replaces a stored record of the same key only when
    faster (:meth:`TuningDB.store`), in one locked, atomic write of the device's file.

    Raises:
        ReportError: When the report is rejected (see :func:`parse_report`); nothing is written.
        DatabaseError: When the device's database file is corrupt; it is left untouched and nothing is written.
    """
    return store_report(read_report(path), db)


def store_report(report: Report, db: TuningDB) -> Imported:
    """Store a validated report's records in ``db`` (the faster record wins); return what was done.

    Raises:
        DatabaseError: When the device's database file is corrupt; it is left untouched.
    """
    outcomes = db.store(report.meta, list(report.records)) if report.records else []
    written = sum(o.written for o in outcomes)
    return Imported(report.file, report.info.slug, written, len(outcomes) - written, report.skipped)
