"""``kernelforge db sync``: gather into one database the records that workers on many machines left in a shared study.

Each worker of a shared study (``tune --storage URL``) stores its re-measured winner in its own database and
also in the study (a user attribute per worker). Syncing reads those back, validates every one as any record
read from a file (a storage is as untrusted as a shared file), and stores them where the faster record wins:
what one database would hold had every worker written to it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import optuna

from kernelforge.db import Record, TuningDB
from kernelforge.errors import DatabaseError
from kernelforge.tuner.storage import describe, open_storage, redact, retry

RECORD_PREFIX = "kernelforge/record/"
DEVICE_ATTR = "kernelforge/device"


@dataclass(frozen=True)
class SyncReport:
    """What a sync found and did."""

    studies: int
    records: int
    written: int
    rejected: tuple[str, ...]


def sync(url: str, db_dir: Path) -> SyncReport:
    """Store every worker record of every study in ``url`` into the database at ``db_dir`` (faster wins).

    Raises:
        StorageError: When the storage cannot be opened or read (one line).
    """
    storage = open_storage(url, db_dir)
    summaries = retry(lambda: optuna.get_all_study_summaries(storage=storage), f"--storage {redact(url)}", 4)
    db = TuningDB(db_dir)
    records = written = 0
    rejected: list[str] = []
    for summary in summaries:
        attrs = summary.user_attrs
        device = attrs.get(DEVICE_ATTR)
        found = [(k, v) for k, v in attrs.items() if k.startswith(RECORD_PREFIX)]
        if not found:
            continue
        if not isinstance(device, dict) or not isinstance(device.get("fingerprint"), str):
            rejected.append(f"study {summary.study_name}: no device description")
            continue
        for key, value in found:
            records += 1
            try:
                record = Record.from_json(value, f"study {summary.study_name} {key}")
                written += sum(s.written for s in db.store(device, [record]))
            except DatabaseError as exc:
                rejected.append(str(exc))
            except Exception as exc:  # a storage that answers oddly: say so, keep going
                rejected.append(f"study {summary.study_name} {key}: {describe(exc)}")
    return SyncReport(len(summaries), records, written, tuple(rejected))
