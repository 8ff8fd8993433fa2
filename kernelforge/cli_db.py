"""``kernelforge db``: show, merge, sync, import and prune tuning databases."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from kernelforge.cli_common import UsageError, db_folder
from kernelforge.errors import DatabaseError


def cmd_db_show(args: argparse.Namespace) -> int:
    """``db show``: every device file's records (stale and unreadable ones marked)."""
    from kernelforge.db import TuningDB
    from kernelforge.devices import BROWSER_APIS
    from kernelforge.ops import get_op
    from kernelforge.templates import kernel_hash

    db = TuningDB(db_folder(args.db, create=False))
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
        where = f", browser device: {dev.get('driver') or '?'}" if dev.get("api") in BROWSER_APIS else ""
        print(f"{path.stem}  ({dev.get('name', '?')}, {dev.get('class', '?')}, {dev.get('api', '?')}{where})")
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
            print(f"  UNREADABLE (kept as it is, never looked up) {key}: {reason}")
            status = 1
    if shown == 0:
        print(f"no tuning records{' for ' + slug if slug else ''} in {db.root}")
    return status


def cmd_db_merge(args: argparse.Namespace) -> int:
    """``db merge OTHER``: take another database's records where they are new or faster."""
    from kernelforge.db import TuningDB

    if not Path(args.other).is_dir():
        raise UsageError(f"{args.other}: no such directory")
    target, other = TuningDB(db_folder(args.db, create=True)), TuningDB(args.other)
    status = 0
    for path, loaded in other.iter_files():
        if isinstance(loaded, DatabaseError):
            print(f"skipped: {loaded}")
            status = 1
            continue
        written = target.update(loaded.device, list(loaded.records.values()), keep_faster=True)
        print(f"{path.name}: {written} of {len(loaded.records)} records taken (faster or new)")
        unread = {key: loaded.raw[key] for key, _ in loaded.rejected}
        if unread:
            copied = target.adopt(loaded.device, unread)
            print(f"{path.name}: {copied} of {len(unread)} records this version cannot read copied as they are")
    return status


def cmd_db_import(args: argparse.Namespace) -> int:
    """``db import REPORT.json...``: store the winners of browser tuning reports (new or faster records win).

    A rejected report is named with the record that made it so, and nothing of it is written; the other
    reports are still imported, and the exit code is 1.
    """
    from kernelforge.db import TuningDB
    from kernelforge.tuner.reports import ReportError, import_report

    for name in args.reports:  # a missing file is a usage error before anything is written, as elsewhere
        if not Path(name).is_file():
            raise UsageError(f"{name}: no such report file")
    db = TuningDB(db_folder(args.db, create=True))
    status = 0
    for name in args.reports:
        try:
            done = import_report(name, db)
        except ReportError as exc:
            print(f"{exc.file}: rejected, nothing written: {exc.detail}")
            status = 1
            continue
        except DatabaseError as exc:
            print(f"{name}: not imported, nothing written: {exc}")
            status = 1
            continue
        print(
            f"{name}: {done.written} record{'s' * (done.written != 1)} of {done.fingerprint} written (new or faster), "
            f"{done.kept} kept (stored one faster), {done.skipped} not measured"
        )
    return status


def cmd_db_sync(args: argparse.Namespace) -> int:
    """``db sync --storage URL``: gather the records of a shared study's workers."""
    from kernelforge.tuner.sync import sync

    report = sync(args.storage, db_folder(args.db, create=True))
    print(
        f"{report.studies} studies, {report.records} worker records: {report.written} written to {args.db} "
        f"(new or faster), {report.records - report.written - len(report.rejected)} kept (stored one faster)"
    )
    for reason in report.rejected:
        print(f"  rejected: {reason}")
    return 1 if report.rejected else 0


def cmd_db_prune(args: argparse.Namespace) -> int:
    """``db prune``: drop records whose template changed since they were measured."""
    from kernelforge.db import TuningDB
    from kernelforge.ops import get_op
    from kernelforge.templates import kernel_hash

    status = 0
    db = TuningDB(db_folder(args.db, create=False))
    for path, dropped in db.prune(lambda op, language: kernel_hash(get_op(op), language)):
        if isinstance(dropped, DatabaseError):
            print(f"skipped: {dropped}")
            status = 1
        else:
            print(f"{path.name}: {dropped} stale record{'s' * (dropped != 1)} removed")
    return status
