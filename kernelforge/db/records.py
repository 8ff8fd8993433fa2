"""Tuning records and the questions asked of the database: what a record holds and how it is validated.

A record is data from a file that may have come from anywhere, so :meth:`Record.from_json` checks every field
and validates the params against the op's search space before anything can reach a template.
"""

from __future__ import annotations

import datetime as _dt
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kernelforge._version import __version__
from kernelforge.devices import DeviceInfo
from kernelforge.errors import DatabaseError, KernelforgeError
from kernelforge.ops import get_op
from kernelforge.ops.spec import Limits, OpSpec, Params
from kernelforge.templates import kernel_hash

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Record:
    """The outcome of tuning one (device, op, language, dtype, shape, template)."""

    op: str
    language: str
    dtype: str
    shape: str
    shape_vector: tuple[float, ...]
    template_hash: str
    params: Params
    time_s: float
    gflops: float
    default_time_s: float
    trials: dict[str, Any] = field(default_factory=dict)
    date: str = ""
    kernelforge_version: str = __version__
    driver: str = ""

    @property
    def key(self) -> str:
        """Return the record's key inside its device file."""
        return f"{self.op}/{self.language}/{self.dtype}/{self.shape}/{self.template_hash[:12]}"

    def to_json(self) -> dict[str, Any]:
        """Return the JSON object stored in the file."""
        data = asdict(self)
        data["shape_vector"] = list(self.shape_vector)
        return data

    @classmethod
    def from_json(cls, data: Any, origin: str) -> Record:
        """Build and validate a record read from a file.

        Raises:
            DatabaseError: When a field is missing or of the wrong type, or params are not in the op's space.
        """
        if not isinstance(data, Mapping):
            raise DatabaseError(f"{origin}: record is not an object")
        try:
            spec = get_op(str(data["op"]))
            language = _text(data["language"], origin, "language")
            params = spec.validate_params(data["params"], language, origin)
            record = cls(
                op=spec.name,
                language=language,
                dtype=_text(data["dtype"], origin, "dtype"),
                shape=_text(data["shape"], origin, "shape"),
                shape_vector=tuple(_number(v, origin, "shape_vector") for v in data["shape_vector"]),
                template_hash=_text(data["template_hash"], origin, "template_hash"),
                params=params,
                time_s=_number(data["time_s"], origin, "time_s"),
                gflops=_number(data["gflops"], origin, "gflops"),
                default_time_s=_number(data["default_time_s"], origin, "default_time_s"),
                trials=dict(data.get("trials", {})),
                date=str(data.get("date", "")),
                kernelforge_version=str(data.get("kernelforge_version", "")),
                driver=str(data.get("driver", "")),
            )
        except KeyError as exc:
            raise DatabaseError(f"{origin}: record lacks field {exc}") from None
        except KernelforgeError as exc:
            raise DatabaseError(str(exc)) from None
        if record.time_s <= 0:
            raise DatabaseError(f"{origin}: time_s must be > 0")
        return record


def _text(value: Any, origin: str, name: str) -> str:
    if not isinstance(value, str) or not value or len(value) > 200:
        raise DatabaseError(f"{origin}: field {name!r} must be a short non-empty string")
    return value


def _number(value: Any, origin: str, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise DatabaseError(f"{origin}: field {name!r} must be a finite number, got {value!r}")
    return float(value)


@dataclass
class DeviceFile:
    """One parsed device file.

    Attributes:
        path: The file.
        device: Its device description.
        records: The records this version reads (validated).
        rejected: ``(key, reason)`` of the records it cannot read: a newer kernelforge's op or tunable, a value out
            of range, a field missing. They never reach a lookup, and they are kept as they are on every rewrite.
        raw: Every record's JSON as read, readable or not (what a rewrite keeps of the records it does not
            replace, fields of newer versions included).
    """

    path: Path
    device: dict[str, Any]
    records: dict[str, Record]
    rejected: list[tuple[str, str]]
    raw: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Stored:
    """What storing one record did.

    Attributes:
        key: The record's key.
        written: Whether it was written (new, faster than the stored one, or ``replace``).
        previous_time_s: The time of the record it met under the same key (None: there was none, or it was
            unreadable); a record is kept when it is this fast or faster.
    """

    key: str
    written: bool
    previous_time_s: float | None = None


@dataclass(frozen=True)
class Query:
    """What a kernel needs params for: device, op, kernel language, problem, device limits, template."""

    info: DeviceInfo
    spec: OpSpec[Any]
    language: str
    problem: Any
    limits: Limits
    template_hash: str
    dtype: str = "f32"

    @classmethod
    def make(cls, info: DeviceInfo, op: str, problem: Any, language: str, limits: Limits) -> Query:
        """Return the query of one kernel call: the op's spec and its template hash in ``language`` looked up."""
        spec = get_op(op)
        return cls(info, spec, language, problem, limits, kernel_hash(spec, language))


@dataclass(frozen=True)
class Lookup:
    """Parameters chosen for a kernel and where they came from (one of tuned/nearest/vendor/class/default)."""

    params: Params
    source: str
    record: Record | None = None
    device: str = ""


def device_meta(info: DeviceInfo, subgroup_size: int = 0, f16: bool = False) -> dict[str, Any]:
    """Return the device description stored at the top of its file.

    Args:
        info: The device.
        subgroup_size: The opened device's fixed subgroup size (``Limits.subgroup_size``, found by running a
            kernel): an export checks its records' subgroup kernels against it, and a browser runtime checks the
            adapter's ``subgroupMinSize``/``subgroupMaxSize`` before it picks them.
        f16: Whether the device has ``shader-f16`` (``Limits.f16``): an export may then give its WGSL target an f16
            plan, which a browser runs only on an adapter with that feature.
    """
    meta: dict[str, Any] = {
        "fingerprint": info.slug,
        "name": info.name,
        "vendor": info.vendor,
        "class": info.device_class,
        "api": info.api,
        "driver": info.driver,
    }
    if subgroup_size:
        meta["subgroup_size"] = subgroup_size
    if f16:
        meta["f16"] = True
    if info.adapter:  # a browser device: what a bundle's target for it is matched against (export.targets)
        meta["adapter"] = info.adapter
    return meta


def new_record(
    spec: OpSpec[Any],
    language: str,
    problem: Any,
    template_hash: str,
    params: Params,
    time_s: float,
    default_time_s: float,
    trials: dict[str, Any],
    driver: str,
    dtype: str = "f32",
) -> Record:
    """Build a record for a finished tuning run."""
    return Record(
        op=spec.name,
        language=language,
        dtype=dtype,
        shape=spec.problem_key(problem),
        shape_vector=tuple(float(v) for v in spec.shape_vector(problem)),
        template_hash=template_hash,
        params=dict(params),
        time_s=time_s,
        gflops=spec.flops(problem) / time_s / 1e9,
        default_time_s=default_time_s,
        trials=trials,
        date=_dt.date.today().isoformat(),
        driver=driver,
    )
