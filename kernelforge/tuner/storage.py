"""Where studies live: the local journal (default) or a shared database that workers on many machines use at once.

A ``--storage`` URL is checked and opened here, so every problem with it (a malformed URL, a missing driver,
no server, a refused password) is one line naming the URL (password hidden), never a driver's traceback.
PostgreSQL takes ``postgresql://`` (whichever driver is installed: psycopg 3, else psycopg2) or names its
driver (``postgresql+psycopg://``, ``postgresql+psycopg2://``); the drivers come with ``kernelforge[postgres]``.
Workers that start together on a fresh database race to create its tables: creation is retried, so the loser
of the race finds the tables the winner made. Workers beat a heartbeat (Optuna's), so a dead worker's trial is
failed and its config retried by the others.
"""

from __future__ import annotations

import importlib.util
import re
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import optuna

from kernelforge.errors import KernelforgeError

HEARTBEAT_S = 5
"""Seconds between a worker's heartbeats while it runs a trial."""
GRACE_S = 20
"""Seconds without a heartbeat after which a running trial counts as dead (failed, its config queued again)."""
OPEN_ATTEMPTS = 6
"""Tries to open a shared storage (table creation races, a server still starting) before giving up."""

T = TypeVar("T")


class StorageError(KernelforgeError):
    """The study storage cannot be opened or reached; the message is one line naming it."""


def redact(url: str) -> str:
    """Return a storage URL without its password."""
    return re.sub(r"(://[^:/@]+):[^@/]*@", r"\1:***@", url)


def _driver_url(url: str) -> str:
    """Return ``url`` with an installed PostgreSQL driver named, or raise naming the one to install."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise StorageError(f"--storage {redact(url)}: not a storage URL (expected e.g. postgresql://user@host/db)")
    if scheme == "postgresql":
        for driver, module in (("psycopg", "psycopg"), ("psycopg2", "psycopg2")):
            if importlib.util.find_spec(module) is not None:
                return f"postgresql+{driver}://{rest}"
        raise StorageError(
            f"--storage {redact(url)}: no PostgreSQL driver is installed (pip install 'kernelforge[postgres]')"
        )
    if scheme.startswith("postgresql+"):
        driver = scheme.split("+", 1)[1]
        module = {"psycopg": "psycopg", "psycopg2": "psycopg2"}.get(driver, driver)
        if importlib.util.find_spec(module) is None:
            raise StorageError(f"--storage {redact(url)}: the {driver} driver is not installed")
    return url


def describe(exc: BaseException) -> str:
    """Return the one line that says why a storage call failed (the driver's first line, trimmed)."""
    while not hasattr(exc, "orig") and (exc.__cause__ or exc.__context__) is not None:
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]  # the driver's error, not a wrapper's
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    line = next((t.strip() for t in text if t.strip()), type(exc).__name__)
    line = re.sub(r"^\(\S+\)\s*", "", line)  # SQLAlchemy's "(psycopg.OperationalError)" prefix
    return redact(line)[:300]


def is_outage(exc: BaseException) -> bool:
    """Return whether ``exc`` means the storage is unreachable or failed mid-call (worth retrying later).

    The exception's causes and contexts count too: Optuna 5.1's trial bookkeeping, when the storage fails under
    it, can end in an ``UnboundLocalError`` whose context is the connection error.
    """
    try:
        import sqlalchemy.exc
    except ImportError:  # pragma: no cover - optuna requires sqlalchemy for RDB storages only
        return False
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, sqlalchemy.exc.OperationalError | sqlalchemy.exc.InterfaceError) or (
            isinstance(current, sqlalchemy.exc.DBAPIError) and current.connection_invalidated
        ):
            return True
        current = current.__cause__ or current.__context__
    return False


def retry(call: Callable[[], T], what: str, attempts: int, first_wait: float = 0.5) -> T:
    """Run ``call``, retrying storage outages with doubling waits; raise :class:`StorageError` after ``attempts``."""
    wait = first_wait
    for attempt in range(attempts):
        try:
            return call()
        except Exception as exc:
            if not is_outage(exc) and not _is_creation_race(exc):
                raise
            if attempt == attempts - 1:
                raise StorageError(f"{what}: {describe(exc)}") from exc
        time.sleep(wait)
        wait = min(2 * wait, 8.0)
    raise AssertionError("unreachable")


def _is_creation_race(exc: BaseException) -> bool:
    try:
        import sqlalchemy.exc
    except ImportError:  # pragma: no cover
        return False
    return isinstance(exc, sqlalchemy.exc.IntegrityError | sqlalchemy.exc.ProgrammingError)


class _PatientRDBStorage(optuna.storages.RDBStorage):
    """An RDB storage whose heartbeat outlives an outage: a beat that cannot reach the server is skipped.

    Optuna beats from a thread; a failed beat would end that thread with a traceback, and the trial, although
    its worker goes on with it, would count as dead once the grace period passed.
    """

    def record_heartbeat(self, trial_id: int) -> None:
        """Record a heartbeat, unless the storage is unreachable (the next beat tries again)."""
        try:
            super().record_heartbeat(trial_id)
        except Exception as exc:
            if not is_outage(exc):
                raise


def default_storage(db_dir: Path) -> optuna.storages.BaseStorage:
    """Return the embedded study storage under the database directory (an append-only journal file).

    The journal is written trial by trial, so an interrupted run keeps every finished trial and the next
    run with the same arguments resumes the study.
    """
    from optuna.storages.journal import JournalFileBackend

    folder = Path(db_dir) / ".studies"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(f"cannot create the study journal in {folder}: {exc.strerror or exc}") from None
    return optuna.storages.JournalStorage(JournalFileBackend(str(folder / "studies.journal")))


def open_storage(url: str | None, db_dir: Path) -> Any:
    """Open the study storage: the local journal when ``url`` is None, else the database ``url`` names.

    Raises:
        StorageError: One line naming the URL (password hidden) and what is wrong with it.
    """
    if url is None:
        return default_storage(db_dir)
    url = _driver_url(url.strip())

    def create() -> _PatientRDBStorage:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            warnings.simplefilter("ignore", FutureWarning)
            return _PatientRDBStorage(
                url,
                engine_kwargs={"pool_pre_ping": True},
                heartbeat_interval=HEARTBEAT_S,
                grace_period=GRACE_S,
                heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=2),
            )

    try:
        return retry(create, f"--storage {redact(url)}", OPEN_ATTEMPTS)
    except StorageError:
        raise
    except ImportError as exc:
        raise StorageError(f"--storage {redact(url)}: its database driver is not installed ({exc})") from None
    except Exception as exc:  # sqlalchemy.exc.ArgumentError for a malformed URL, and the like
        raise StorageError(f"--storage {redact(url)}: {describe(exc)}") from None
