"""The one place where ``KF_*`` environment variables are read.

Every other module asks this one, so the set of knobs stays greppable and documented here:

========================  ==========================================================================
``KF_DB_DIR``             tuning database directory (default: ``tuning_db/`` of a source checkout,
                          else ``~/.local/share/kernelforge/tuning_db``)
``KF_REQUIRE_DEVICE``     ``1``: device tests fail instead of skipping when no adapter exists (CI)
``KF_REQUIRE_POSTGRES``   ``1``: shared-storage tests fail instead of skipping without PostgreSQL (CI)
``KF_SWIFTSHADER_ICD``    Vulkan ICD manifest of SwiftShader to expose as an extra adapter
                          (default: Chromium's ``/usr/lib/chromium/vk_swiftshader_icd.json``); ``0`` off
``KF_PROGRESS``           ``0`` hides tuning progress bars
``KF_CHROMIUM``           Chromium executable for browser tests and benchmarks (default ``/usr/bin/chromium``)
========================  ==========================================================================
"""

from __future__ import annotations

import os
from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent
_SOURCE_DB = _PACKAGE_DIR.parent / "tuning_db"
_DEFAULT_SWIFTSHADER_ICD = "/usr/lib/chromium/vk_swiftshader_icd.json"


def _flag(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() not in ("0", "false", "no", "off")


def db_dir() -> Path:
    """Return the default tuning database directory."""
    env = os.environ.get("KF_DB_DIR")
    if env:
        return Path(env)
    if _SOURCE_DB.is_dir():
        return _SOURCE_DB
    return Path.home() / ".local" / "share" / "kernelforge" / "tuning_db"


def require_device() -> bool:
    """Return True when a missing GPU adapter must be an error rather than a skip."""
    return _flag("KF_REQUIRE_DEVICE", False)


def require_postgres() -> bool:
    """Return True when missing PostgreSQL binaries or drivers must fail the storage tests rather than skip them."""
    return _flag("KF_REQUIRE_POSTGRES", False)


def swiftshader_icd() -> str | None:
    """Return the SwiftShader Vulkan ICD manifest to add to the Vulkan loader, if any."""
    value = os.environ.get("KF_SWIFTSHADER_ICD", _DEFAULT_SWIFTSHADER_ICD)
    if value.strip().lower() in ("", "0", "off", "false", "no"):
        return None
    return value if Path(value).is_file() else None


def show_progress() -> bool:
    """Return whether long operations draw progress bars."""
    return _flag("KF_PROGRESS", True)


def chromium() -> str:
    """Return the Chromium executable used for browser tests and benchmarks."""
    return os.environ.get("KF_CHROMIUM", "/usr/bin/chromium")
