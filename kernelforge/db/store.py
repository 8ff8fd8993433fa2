"""The tuning database: versioned JSON, one file per device fingerprint, safe to share and to merge.

Layout: ``<root>/<device-fingerprint>.json``::

    {"schema_version": 1,
     "device": {"fingerprint": ..., "name": ..., "class": ..., "vendor": ..., "api": ..., "driver": ...,
                "subgroup_size": ...},  # subgroup_size only where the device has fixed-size subgroups
     "records": {"gemm/wgsl/f32/1024x1024x1024/<template hash[:12]>": {...Record...}}}

Files are data, never code: a file is read within bounds (size, nesting, number lengths), every record's
params are validated against its op's search space, and a record that fails is reported, never looked up,
and kept verbatim on every rewrite (it may be a newer kernelforge's). A file that cannot be parsed is
reported with its path, skipped for its device alone, and never overwritten. A stored record is replaced only
by a faster one of the same key (device, op, shape, template) unless the caller says ``replace``. Writes take a
lock file, re-read, modify, and replace atomically, so tuners writing at once lose nothing.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tempfile
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import filelock

from kernelforge.db import _json
from kernelforge.db.records import SCHEMA_VERSION, DeviceFile, Lookup, Query, Record, Stored
from kernelforge.devices import DeviceInfo
from kernelforge.errors import DatabaseError
from kernelforge.ops.spec import SUBGROUP_SIZES, Limits, Params


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _log_distance(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    if len(a) != len(b):
        return math.inf
    return math.sqrt(sum((math.log2(max(x, 1e-9)) - math.log2(max(y, 1e-9))) ** 2 for x, y in zip(a, b, strict=True)))


class TuningDB:
    """A directory of device files."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self._cache: dict[Path, tuple[int, DeviceFile]] = {}

    def path_for(self, slug: str) -> Path:
        """Return the file of a device fingerprint."""
        if not slug or "/" in slug or slug.startswith("."):
            raise DatabaseError(f"invalid device fingerprint {slug!r}")
        return self.root / f"{slug}.json"

    def files(self) -> list[Path]:
        """Return every device file, sorted."""
        return sorted(self.root.glob("*.json")) if self.root.is_dir() else []

    def load(self, path: Path) -> DeviceFile:
        """Parse one device file (cached until it changes on disk).

        Raises:
            DatabaseError: Naming the path, when the file is not valid JSON of a known schema.
        """
        stamp = path.stat().st_mtime_ns if path.exists() else -1
        cached = self._cache.get(path)
        if cached and cached[0] == stamp:
            return cached[1]
        parsed = self._parse(path)
        self._cache[path] = (stamp, parsed)
        return parsed

    def _parse(self, path: Path) -> DeviceFile:
        if not path.exists():
            return DeviceFile(path, {"fingerprint": path.stem}, {}, [])
        try:
            data = _json.read(path)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, ValueError, RecursionError, MemoryError) as exc:
            raise DatabaseError(f"tuning database file {path} is corrupt ({exc}); it was left untouched") from None
        if not isinstance(data, dict) or "schema_version" not in data:
            raise DatabaseError(f"tuning database file {path} has no schema_version; it was left untouched")
        if data["schema_version"] != SCHEMA_VERSION:
            raise DatabaseError(
                f"tuning database file {path} has schema_version {data['schema_version']!r}; "
                f"this kernelforge reads {SCHEMA_VERSION}"
            )
        device, raw = data.get("device"), data.get("records")
        if not isinstance(device, dict) or not isinstance(raw, dict):
            raise DatabaseError(f"tuning database file {path} lacks its 'device' or 'records' object")
        if device.get("fingerprint") != path.stem:
            raise DatabaseError(
                f"{path}: device fingerprint {device.get('fingerprint')!r} does not match the file name"
            )
        records: dict[str, Record] = {}
        rejected: list[tuple[str, str]] = []
        for key, value in raw.items():
            try:
                record = Record.from_json(value, f"{path} record {key!r}")
                if record.key != key:
                    raise DatabaseError(f"{path} record {key!r}: key does not match its content ({record.key})")
                records[key] = record
            except DatabaseError as exc:
                rejected.append((str(key), str(exc)))
        return DeviceFile(path, device, records, rejected, dict(raw))

    def _write(self, path: Path, device: dict[str, Any], records: Mapping[str, Any]) -> None:
        """Replace a device file atomically with ``records`` (key -> the JSON of each record)."""
        payload = {"schema_version": SCHEMA_VERSION, "device": device, "records": dict(records)}
        text = json.dumps(payload, indent=1, sort_keys=True) + "\n"
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; the database is meant to be shared
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def store(self, device: dict[str, Any], incoming: list[Record], replace: bool = False) -> list[Stored]:
        """Add records to a device's file under its lock, keeping whichever of two records is faster.

        Args:
            device: The device description (its ``fingerprint`` names the file).
            incoming: Records to store.
            replace: Write every incoming record, even over a faster one (``tune --replace``).

        Returns:
            One :class:`Stored` per incoming record, in order: written or not, and the time of the record it met.
            A record meeting an unreadable one (a newer kernelforge's) is not written unless ``replace``. Records
            of other keys stay as they are, unreadable ones and other template hashes included (``prune`` drops
            stale ones).

        Raises:
            DatabaseError: When the existing file is corrupt (it is never overwritten).
        """
        path = self.path_for(str(device.get("fingerprint", "")))
        self.root.mkdir(parents=True, exist_ok=True)
        outcomes: list[Stored] = []
        with filelock.FileLock(str(path) + ".lock", timeout=60):
            current = self._parse(path)  # fresh read under the lock: another writer may have just written
            raw = dict(current.raw)
            times = {k: r.time_s for k, r in current.records.items()}
            for record in incoming:
                previous = times.get(record.key)
                known = record.key in raw
                if known and not replace and (previous is None or previous <= record.time_s):
                    outcomes.append(Stored(record.key, False, previous))
                    continue
                raw[record.key] = record.to_json()
                times[record.key] = record.time_s
                outcomes.append(Stored(record.key, True, previous))
            if any(o.written for o in outcomes):
                self._write(path, {**current.device, **device}, raw)
        return outcomes

    def update(self, device: dict[str, Any], incoming: list[Record], keep_faster: bool = True) -> int:
        """Store records (see :meth:`store`; ``keep_faster=False`` replaces); return how many were written."""
        return sum(o.written for o in self.store(device, incoming, replace=not keep_faster))

    def adopt(self, device: dict[str, Any], raw: Mapping[str, Any]) -> int:
        """Copy records this version cannot read (``DeviceFile.raw`` entries) into a device's file, where absent.

        ``db merge`` uses it so that a newer kernelforge's records survive a merge by an older one.

        Returns:
            How many were copied.
        """
        path = self.path_for(str(device.get("fingerprint", "")))
        self.root.mkdir(parents=True, exist_ok=True)
        with filelock.FileLock(str(path) + ".lock", timeout=60):
            current = self._parse(path)
            new = {k: v for k, v in raw.items() if k not in current.raw}
            if new:
                self._write(path, {**device, **current.device}, {**current.raw, **new})
        return len(new)

    def prune(self, current_hash: Callable[[str, str], str]) -> list[tuple[Path, int | DatabaseError]]:
        """Drop the records whose template hash is not ``current_hash(op, language)``; per file, how many.

        Each file is rewritten under its lock from a fresh read, and only when something is dropped; a
        corrupt file is reported in the list and left untouched.
        """
        done: list[tuple[Path, int | DatabaseError]] = []
        for path in self.files():
            with filelock.FileLock(str(path) + ".lock", timeout=60):
                try:
                    current = self._parse(path)
                except DatabaseError as exc:
                    done.append((path, exc))
                    continue
                stale = {k for k, r in current.records.items() if r.template_hash != current_hash(r.op, r.language)}
                if stale:  # records this version cannot read are not judged: they stay
                    self._write(path, current.device, {k: v for k, v in current.raw.items() if k not in stale})
                done.append((path, len(stale)))
        return done

    def iter_files(self) -> Iterator[tuple[Path, DeviceFile | DatabaseError]]:
        """Yield each file with its parsed content, or the error that made it unreadable."""
        for path in self.files():
            try:
                yield path, self.load(path)
            except DatabaseError as exc:
                yield path, exc

    def params_for(self, info: DeviceInfo, op: str, problem: Any, language: str, limits: Limits) -> Lookup:
        """Return the params a call of ``op`` on ``problem`` uses on a device, and where they came from.

        See :meth:`lookup` for the order; ``info`` names the device (its fingerprint and class), ``limits``
        are what every returned config must respect.
        """
        return self.lookup(Query.make(info, op, problem, language, limits))

    def lookup(self, query: Query) -> Lookup:
        """Find params: exact device + shape, exact device + nearest shape, same vendor+class, same class, default.

        Records of another template hash (stale) are ignored; so are records whose params break a
        constraint for this problem (a vec4 config for an odd N, say). Corrupt files are reported by a
        warning and skipped.
        """
        for found in self.candidates(query):
            return found
        return Lookup(query.spec.default_params(query.problem, query.limits, query.language), "default")

    def stale_params(self, query: Query) -> list[Params]:
        """Return this device's records of the query's exact shape made with another template, fastest first.

        They cannot be looked up (the kernel text changed), but a template edit rarely moves the optimum far:
        the tuner re-verifies and re-times them as warm-start trials, so re-tuning after an edit is cheap.
        """
        path = self.path_for(query.info.slug)
        if not path.exists():
            return []
        try:
            loaded = self.load(path)
        except DatabaseError as exc:
            warnings.warn(f"{exc}; ignoring it", stacklevel=2)
            return []
        shape = query.spec.problem_key(query.problem)
        stale = [
            r
            for r in loaded.records.values()
            if (r.op, r.language, r.dtype, r.shape) == (query.spec.name, query.language, query.dtype, shape)
            and r.template_hash != query.template_hash
            and query.spec.constraints(query.problem, r.params, query.limits, query.language) is None
        ]
        return [r.params for r in sorted(stale, key=lambda r: r.time_s)]

    def best_per_device(self, query: Query, own_subgroups: bool = False) -> list[Lookup]:
        """Return each device's best stored config for the query's problem: exact shape fastest, else nearest.

        What an exported bundle offers a GPU it has no records for: one config per tuned device, each the
        winner somewhere, in the files' order. With ``own_subgroups``, each device's records are checked with
        its own fixed subgroup size (what a GPU of that size could run). Corrupt files are skipped (a warning),
        as in :meth:`lookup`.
        """
        spec, problem, language = query.spec, query.problem, query.language
        key_shape, vector = spec.problem_key(problem), spec.shape_vector(problem)
        found: list[Lookup] = []
        for path, loaded in self.iter_files():
            if isinstance(loaded, DatabaseError):
                warnings.warn(f"{loaded}; ignoring it", stacklevel=2)
                continue
            size = loaded.device.get("subgroup_size", 0)
            limits = query.limits
            if own_subgroups and isinstance(size, int) and size in SUBGROUP_SIZES:
                limits = dataclasses.replace(limits, subgroup_size=size)
            usable = [
                r
                for r in loaded.records.values()
                if (r.op, r.language, r.dtype) == (spec.name, language, query.dtype)
                and r.template_hash == query.template_hash
                and spec.constraints(problem, r.params, limits, language) is None
            ]
            if usable:
                best = min(
                    usable, key=lambda r: (r.shape != key_shape, _log_distance(r.shape_vector, vector), r.time_s)
                )
                found.append(Lookup(best.params, "tuned" if best.shape == key_shape else "nearest", best, path.stem))
        return found

    def candidates(self, query: Query) -> list[Lookup]:
        """Return every stored config that fits the query's problem, best first, in :meth:`lookup`'s order.

        Within each level (this device, same vendor and class, same class) the exact shape comes first, then
        shapes by log distance. Each distinct params appears once. The tuner seeds its search with the head
        of this list.
        """
        info, spec, language, problem, limits = query.info, query.spec, query.language, query.problem, query.limits
        template_hash, dtype = query.template_hash, query.dtype
        key_shape = spec.problem_key(problem)
        vector = spec.shape_vector(problem)

        def usable(df: DeviceFile, own: bool) -> list[Record]:
            return [
                r
                for r in df.records.values()
                if r.op == spec.name
                and r.language == language
                and r.dtype == dtype
                and r.template_hash == template_hash
                and spec.constraints(problem, verified(r, own), limits, language) is None
            ]

        def verified(r: Record, own: bool) -> Params:
            # a lower-precision config passed its op's bound on its own shape and device only: elsewhere its
            # shape and tiles run in float32
            if (own and r.shape == key_shape) or not r.params.get("precision"):
                return r.params
            return {**r.params, "precision": 0}

        def rank(r: Record) -> tuple[bool, float, float]:
            return (r.shape != key_shape, _log_distance(r.shape_vector, vector), r.time_s)

        own: list[Record] = []
        others: list[tuple[str, dict[str, Any], Record]] = []
        for path, loaded in self.iter_files():
            if isinstance(loaded, DatabaseError):
                warnings.warn(f"{loaded}; ignoring it", stacklevel=2)
                continue
            if path.stem == info.slug:
                own = usable(loaded, True)
            else:
                others += [(path.stem, loaded.device, r) for r in usable(loaded, False)]
        found: list[Lookup] = [
            Lookup(verified(r, True), "tuned" if r.shape == key_shape else "nearest", r, info.slug)
            for r in sorted(own, key=rank)
        ]
        vendor = [o for o in others if o[1].get("class") == info.device_class and o[1].get("vendor") == info.vendor]
        same_class = [o for o in others if o[1].get("class") == info.device_class and o not in vendor]
        for source, pool in (("vendor", vendor), ("class", same_class)):
            found += [
                Lookup(verified(r, False), source, r, slug) for slug, _, r in sorted(pool, key=lambda o: rank(o[2]))
            ]
        unique: list[Lookup] = []
        for item in found:
            if all(item.params != u.params for u in unique):
                unique.append(item)
        return unique
