"""How programs run natively: device enumeration, opened backends, the Program executor and sessions."""

from __future__ import annotations

import functools
from typing import Any

from kernelforge.devices import DeviceInfo, select
from kernelforge.runtime.backends import BACKENDS, load_backend_module
from kernelforge.runtime.backends.base import Backend

__all__ = ["Backend", "DeviceInfo", "list_devices", "open_device", "select_device"]


@functools.cache
def list_devices() -> tuple[DeviceInfo, ...]:
    """Return every adapter of every registered backend, indexed in one sequence (cached)."""
    devices: list[DeviceInfo] = []
    for name in BACKENDS:
        module: Any = load_backend_module(name)
        devices.extend(module.enumerate_devices(len(devices)))
    return tuple(devices)


def select_device(selector: str | int = "auto", language: str | None = None) -> DeviceInfo:
    """Resolve a ``--device`` selector to one device (see :func:`kernelforge.devices.select`).

    Args:
        selector: ``auto``, a class, an index or a name substring.
        language: Only consider devices that run this kernel language (``wgsl``/``glsl``), if given.
    """
    return select(selector, list_devices(), language)


_opened: dict[int, Backend[Any, Any, Any]] = {}


def open_device(selector: str | int | DeviceInfo = "auto", language: str | None = None) -> Backend[Any, Any, Any]:
    """Return the (cached) opened backend for a selector or device."""
    info = selector if isinstance(selector, DeviceInfo) else select_device(selector, language)
    backend = _opened.get(info.index)
    if backend is None:
        entry = BACKENDS[info.backend]
        module: Any = load_backend_module(info.backend)
        backend = getattr(module, entry.cls)(info)
        _opened[info.index] = backend
    return backend
