"""Which devices a bundle carries tuned kernels for: the tuning database's devices, then built-in defaults."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from kernelforge.db import DeviceFile, Lookup, Query, TuningDB
from kernelforge.devices import BROWSER_APIS, DeviceInfo
from kernelforge.errors import ExportError
from kernelforge.ops.spec import SUBGROUP_SIZES, Limits

LANGUAGES = ("wgsl", "glsl")
# Browsers guarantee WebGPU's default limits and (nearly always) these WebGL2 ones: a plan for a browser is
# made within them whatever the tuned device offered natively.
BROWSER_LIMITS = Limits()
_NATIVE_APIS = ("vulkan", "metal", "d3d12")


@dataclass(frozen=True)
class Target:
    """One execution plan of a bundle: a device (or the defaults) in one kernel language."""

    id: str
    language: str
    info: DeviceInfo
    device: dict[str, Any] | None
    """What a runtime matches adapters against; ``None`` for the defaults."""
    f16: bool = False
    """Whether the device has ``shader-f16`` (its file says ``"f16": true``): its WGSL target may get an f16 plan."""

    @property
    def is_default(self) -> bool:
        """Whether this is a built-in defaults target."""
        return self.device is None


class _NoRecords(TuningDB):
    """A database with nothing in it: every lookup gives the built-in default."""

    def __init__(self) -> None:
        super().__init__("/nonexistent")

    def candidates(self, query: Query) -> list[Lookup]:
        """Return no stored configs."""
        return []


NO_RECORDS: TuningDB = _NoRecords()


def keywords(fingerprint: str, vendor: str, api: str) -> list[str]:
    """Return the device words of a fingerprint (``google-swiftshader-vulkan`` -> ``["swiftshader"]``).

    The fingerprint is ``vendor-device-api[-driver]``; browsers do not say which API or driver runs under
    them, so a runtime matches on the vendor and these words only.
    """
    body = fingerprint.removeprefix(f"{vendor}-")
    head = re.split(rf"-{re.escape(api)}(?:-|$)", body, maxsplit=1)[0] if api else body
    return [w for w in head.split("-") if w]


def device_keywords(meta: dict[str, Any]) -> list[str]:
    """Return the words a runtime matches a database device by, besides its vendor.

    A browser device (``--device browser``) has the adapter description the browser gave when it was tuned:
    all its words, so the same browser on the same GPU, and only that, matches it exactly. A native device has
    its fingerprint's device words (:func:`keywords`).

    Raises:
        ExportError: When a browser device's ``adapter`` (from an untrusted file) is not a short string.
    """
    vendor = str(meta.get("vendor", ""))
    adapter = meta.get("adapter")
    if adapter is None:
        return keywords(str(meta["fingerprint"]), vendor, str(meta.get("api", "")))
    if not isinstance(adapter, str) or len(adapter) > 500:
        raise ExportError(f"device {meta.get('fingerprint')!r}: 'adapter' must be a string of at most 500 characters")
    words = [w for w in adapter.lower().split() if w != vendor.lower()]
    return list(dict.fromkeys(words))


def _api_rank(api: str) -> int:
    """Browser devices first (measured on the very stack that runs the bundle), then native APIs, then GL."""
    return 0 if api in BROWSER_APIS else 1 if api in _NATIVE_APIS else 2


def _info(meta: dict[str, Any], language: str) -> DeviceInfo:
    return DeviceInfo(
        index=-1,
        backend="export",
        language=language,
        api=str(meta.get("api", "")),
        name=str(meta.get("name", "")),
        vendor=str(meta.get("vendor", "")),
        vendor_id=0,
        device_id=0,
        driver=str(meta.get("driver", "")),
        adapter_type="unknown",
        device_class=str(meta.get("class", "other")),
        slug=str(meta["fingerprint"]),
        limits=replace(BROWSER_LIMITS, subgroup_size=_subgroup_size(meta) if language == "wgsl" else 0),
    )


def _subgroup_size(meta: dict[str, Any]) -> int:
    """Return the device's fixed subgroup size from its (untrusted) file: subgroup kernels are planned for it."""
    size = meta.get("subgroup_size", 0)
    if isinstance(size, bool) or size not in (0, *SUBGROUP_SIZES):
        raise ExportError(f"device {meta.get('fingerprint')!r}: subgroup_size {size!r} is not 0 or a power of 2, 4-128")
    return int(size)


def _default(language: str) -> Target:
    meta = {"fingerprint": "default", "vendor": "none", "class": "none", "api": ""}
    return Target(f"default/{language}", language, _info(meta, language), None)


def _matches(selector: str, meta: dict[str, Any], language: str) -> bool:
    s = selector.strip().lower()
    if s in ("all", "*"):
        return True
    if s in LANGUAGES:
        return s == language
    if s == str(meta.get("class", "")).lower():
        return True
    return s in _info(meta, language).search_text()  # what --device matches, aliases included


def select_targets(db: TuningDB, selectors: Sequence[str] = ("all",), skipped: list[str] | None = None) -> list[Target]:
    """Return the bundle's targets: matching database devices per language they have records in, then defaults.

    Args:
        db: The tuning database.
        selectors: ``all``, a class (``cpu``, ``igpu``, ``dgpu``), a language, or a fingerprint/name substring;
            a device is taken when any selector matches it. Both default targets are always included.
        skipped: Where to say which corrupt database files were skipped (their devices alone; the files are
            left untouched).

    Raises:
        ExportError: When a selector other than ``all`` matches no device, or names the device of a corrupt file.
    """
    found: list[tuple[DeviceFile, str]] = []
    corrupt: dict[str, str] = {}
    for path, loaded in db.iter_files():
        if not isinstance(loaded, DeviceFile):
            corrupt[path.stem] = f"tuning database file {path} is unreadable and was skipped: {loaded}"
            continue
        languages = {r.language for r in loaded.records.values()}
        found += [(loaded, lang) for lang in LANGUAGES if lang in languages]
    targets = []
    unmatched = set(selectors)
    for df, language in found:
        hits = [s for s in selectors if _matches(s, df.device, language)]
        if hits:
            unmatched -= set(hits)
            meta = df.device
            device = {
                "fingerprint": meta["fingerprint"],
                "vendor": meta.get("vendor", ""),
                "class": meta.get("class", "other"),
                "api": meta.get("api", ""),
                "name": meta.get("name", ""),
                "keywords": device_keywords(meta),
            }
            f16 = language == "wgsl" and meta.get("f16") is True
            targets.append(Target(f"{meta['fingerprint']}/{language}", language, _info(meta, language), device, f16))
    unmatched = {s for s in unmatched if s.strip().lower() not in ("all", "*", *LANGUAGES)}
    for slug, reason in corrupt.items():
        named = [s for s in unmatched if s.strip().lower() in slug.lower()]
        if named:
            raise ExportError(f"--targets {', '.join(named)}: {reason}")
        if skipped is not None:
            skipped.append(reason)
    if unmatched:
        have = sorted({df.device["fingerprint"] for df, _ in found}) or ["(none)"]
        raise ExportError(f"--targets {', '.join(sorted(unmatched))} matched no device in {db.root}; it has {have}")
    # browser devices first: a browser that matches one runs what was measured in it; then native APIs (a
    # browser's WebGPU runs on them, so their records describe it better than GL's)
    targets.sort(key=lambda t: (t.language, _api_rank(t.info.api)))
    return targets + [_default(lang) for lang in LANGUAGES]
