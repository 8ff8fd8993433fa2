"""Adapters: enumeration, classification, stable fingerprints and the ``--device`` selector."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from kernelforge.errors import DeviceNotFoundError
from kernelforge.ops.spec import Limits

DEVICE_CLASSES = ("dgpu", "igpu", "cpu", "other")

# PCI / Khronos vendor ids -> slug token
_VENDORS = {
    0x10005: "mesa",
    0x1AE0: "google",
    0x8086: "intel",
    0x10DE: "nvidia",
    0x1002: "amd",
    0x1022: "amd",
    0x106B: "apple",
    0x13B5: "arm",
    0x5143: "qualcomm",
    0x1414: "microsoft",
    0x14E4: "broadcom",
    0x1010: "imgtec",
}
_SOFTWARE = ("llvmpipe", "lavapipe", "swiftshader", "warp", "basic render", "softpipe")
_MOBILE_VENDORS = ("intel", "apple", "arm", "qualcomm", "imgtec", "broadcom")
_API_ORDER = {"vulkan": 0, "metal": 0, "d3d12": 0, "gl": 1}
BROWSER_APIS = ("webgpu", "webgl2")
"""The ``api`` of a device measured inside a browser page (``--device browser``): its own fingerprint and file."""
_CLASS_ORDER = {"dgpu": 0, "igpu": 1, "other": 2, "cpu": 3}


@dataclass(frozen=True)
class DeviceInfo:
    """One adapter as kernelforge sees it."""

    index: int
    backend: str
    language: str
    api: str
    name: str
    vendor: str
    vendor_id: int
    device_id: int
    driver: str
    adapter_type: str
    device_class: str
    slug: str
    limits: Limits
    adapter: str = ""
    """A browser device's lower-cased adapter description, as ``kernelforge.js`` matches bundle targets against it
    (WebGPU: ``GPUAdapterInfo`` vendor, architecture, device, description); empty for native devices."""

    @property
    def is_browser(self) -> bool:
        """Whether the device is a browser's (measured in a page, through the browser's own stack)."""
        return self.api in BROWSER_APIS

    def as_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return {
            "index": self.index,
            "backend": self.backend,
            "language": self.language,
            "api": self.api,
            "name": self.name,
            "vendor": self.vendor,
            "vendor_id": self.vendor_id,
            "device_id": self.device_id,
            "driver": self.driver,
            "adapter_type": self.adapter_type,
            "class": self.device_class,
            "fingerprint": self.slug,
            "limits": self.limits.as_dict(),
        } | ({"adapter": self.adapter} if self.adapter else {})

    def search_text(self) -> str:
        """Return the lower-case text a name selector is matched against (with common aliases)."""
        text = " ".join((self.name, self.slug, self.vendor, self.api, self.driver)).lower()
        if "llvmpipe" in text and self.api == "vulkan":
            text += " lavapipe"  # Mesa's Vulkan driver on llvmpipe is known as lavapipe
        if self.is_browser:
            text += " browser"
        return text

    def describe(self) -> str:
        """Return a one-line description."""
        return f"[{self.index}] {self.name} ({self.api}, {self.language}, {self.device_class}, {self.slug})"


def _slugify(text: str) -> str:
    return re.sub(r"[^a-z0-9.]+", "-", text.lower()).strip("-.")


def vendor_token(vendor_id: int, vendor: str, name: str) -> str:
    """Return the vendor part of a fingerprint."""
    if vendor_id in _VENDORS:
        return _VENDORS[vendor_id]
    # the vendor string first, then the name (Chrome's WebGL vendor "Google Inc. (NVIDIA)" names two), each
    # in _VENDORS's order, so the same strings always give the same token
    for text in (vendor.lower(), name.lower()):
        for token in dict.fromkeys(_VENDORS.values()):
            if token in text:
                return token
    return _slugify(vendor).split("-")[0] or "unknown"


def wide_tile_compiler(name: str) -> bool:
    """Return whether the adapter's shader compiler is known to handle 256-accumulator tiles (see ``Limits``).

    Only Mesa's llvmpipe (lavapipe on Vulkan, llvmpipe under wgpu's GL backend) is: measured, not assumed.
    """
    return "llvmpipe" in name.lower()


def classify(adapter_type: str, vendor: str, name: str) -> str:
    """Return ``cpu`` for software rasterizers, else ``igpu``/``dgpu``/``other`` from the adapter type."""
    lowered = name.lower()
    kind = adapter_type.lower()
    if "cpu" in kind or any(s in lowered for s in _SOFTWARE):
        return "cpu"
    if "integrated" in kind:
        return "igpu"
    if "discrete" in kind:
        return "dgpu"
    if vendor in _MOBILE_VENDORS:
        return "igpu"
    if vendor in ("nvidia", "amd"):
        return "dgpu"
    return "other"


def driver_version(description: str) -> str:
    """Return ``major.minor`` of the driver (Mesa's version when it is Mesa), or ``""``."""
    mesa = re.search(r"Mesa (\d+)\.(\d+)", description)
    if mesa:
        return f"{mesa.group(1)}.{mesa.group(2)}"
    # GL version strings start with the API version ("4.6 ..."), which says nothing of the driver
    stripped = re.sub(r"^\d+\.\d+ \([^)]*\)", "", description)
    generic = re.search(r"(\d+)\.(\d+)", stripped)
    return f"{generic.group(1)}.{generic.group(2)}" if generic else ""


def fingerprint(vendor: str, name: str, api: str, driver: str) -> str:
    """Return the stable slug ``vendor-device-api[-driver]``, e.g. ``mesa-llvmpipe-vulkan-22.3``."""
    lowered = name.lower()
    device = next((s for s in ("llvmpipe", "swiftshader", "warp") if s in lowered), None)
    if device is None:
        words = [w for w in _slugify(re.sub(r"\(.*?\)", "", name)).split("-") if w and w != vendor]
        device = "-".join(words[:4]) or "device"
    parts = [vendor, device, api]
    if driver:
        parts.append(driver)
    return "-".join(parts)


def sort_key(info: DeviceInfo) -> tuple[int, int, int]:
    """Order for ``auto``: discrete first, native APIs before GL, then enumeration order."""
    return (_CLASS_ORDER.get(info.device_class, 9), _API_ORDER.get(info.api, 2), info.index)


def select(selector: str | int, devices: Sequence[DeviceInfo], language: str | None = None) -> DeviceInfo:
    """Pick one device by ``auto``, a class (``igpu``/``dgpu``/``cpu``), an index or a name substring.

    ``language`` (``wgsl``/``glsl``) keeps only the devices of backends that run that kernel language.

    Raises:
        DeviceNotFoundError: When nothing matches; the message lists every device, so a selector never
            silently falls back to another kind of device.
    """
    text = str(selector).strip().lower()
    if not text:
        listing = "\n".join("  " + d.describe() for d in devices) or "  (none: no adapter was found)"
        raise DeviceNotFoundError(
            f"--device is empty: name auto, a class, an index or a name. Available devices:\n{listing}"
        )
    pool = [d for d in devices if language is None or d.language == language]
    if text == "auto":
        matches = list(pool)
        what = "any adapter"
    elif text in DEVICE_CLASSES:
        matches = [d for d in pool if d.device_class == text]
        what = {
            "igpu": "integrated GPU",
            "dgpu": "discrete GPU",
            "cpu": "software (CPU) adapter",
            "other": "unclassified adapter",
        }[text]
    elif text.isdigit():
        matches = [d for d in pool if d.index == int(text)]
        what = f"device index {text}"
    else:
        matches = [d for d in pool if text in d.search_text()]
        what = f"device matching {selector!r}"
    if not matches:
        listing = "\n".join("  " + d.describe() for d in devices) or "  (none: no adapter was found)"
        runs = f" running {language}" if language else ""
        raise DeviceNotFoundError(
            f"no {what}{runs} on this machine (--device {selector}). Available devices:\n{listing}"
        )
    return min(matches, key=sort_key)
