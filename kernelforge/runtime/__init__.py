"""How programs run natively: device enumeration, opened backends, the Program executor and sessions."""

from __future__ import annotations

import functools
from typing import Any

from kernelforge.devices import DeviceInfo, select
from kernelforge.runtime.agent import BrowserOptions
from kernelforge.runtime.backends import BACKENDS, load_backend_module, requested_backend
from kernelforge.runtime.backends.base import Backend
from kernelforge.runtime.remote import RemoteOptions

__all__ = ["Backend", "BrowserOptions", "DeviceInfo", "RemoteOptions", "list_devices", "open_device", "select_device"]


@functools.cache
def list_devices() -> tuple[DeviceInfo, ...]:
    """Return every adapter of every enumerated backend, indexed in one sequence (cached; no browser is launched)."""
    devices: list[DeviceInfo] = []
    for name, entry in BACKENDS.items():
        if entry.requested_as:
            continue
        module: Any = load_backend_module(name)
        devices.extend(module.enumerate_devices(len(devices)))
    return tuple(devices)


def select_device(
    selector: str | int = "auto",
    language: str | None = None,
    browser: BrowserOptions | None = None,
    remote: RemoteOptions | None = None,
) -> DeviceInfo:
    """Resolve a ``--device`` selector to one device (see :func:`kernelforge.devices.select`).

    Args:
        selector: ``auto``, a class, an index or a name substring; or ``browser``, which launches a browser
            (``browser`` options) and returns its WebGPU device; or ``remote``, which serves a tuning page
            (``remote`` options), prints its URL and returns the WebGPU device of the first browser that opens it.
        language: Only consider devices that run this kernel language (``wgsl``/``glsl``), if given.
        browser: How ``browser`` launches its browser (default: headless ``KF_CHROMIUM``).
        remote: Where ``remote`` serves its page (default: a free port of 127.0.0.1).
    """
    requested = requested_backend(selector)
    if requested is not None:
        module: Any = load_backend_module(requested)
        word = BACKENDS[requested].requested_as.partition(":")[0]
        options = {"browser": browser, "remote": remote}[word]  # None: the module's defaults
        return module.request_device(str(selector).strip().lower(), language, options)
    return select(selector, list_devices(), language)


_opened: dict[tuple[str, int], Backend[Any, Any, Any]] = {}


def open_device(
    selector: str | int | DeviceInfo = "auto",
    language: str | None = None,
    browser: BrowserOptions | None = None,
    remote: RemoteOptions | None = None,
) -> Backend[Any, Any, Any]:
    """Return the (cached) opened backend for a selector or device."""
    info = selector if isinstance(selector, DeviceInfo) else select_device(selector, language, browser, remote)
    backend = _opened.get((info.backend, info.index))
    if backend is None:
        entry = BACKENDS[info.backend]
        module: Any = load_backend_module(info.backend)
        backend = getattr(module, entry.cls)(info)
        _opened[(info.backend, info.index)] = backend
    return backend
