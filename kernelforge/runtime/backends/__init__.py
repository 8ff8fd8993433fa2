"""Backend registry: one row per backend, imported lazily so optional GPU libraries load only on use."""

from __future__ import annotations

import importlib
from dataclasses import dataclass


@dataclass(frozen=True)
class BackendEntry:
    """Where a backend lives: its module and class, and the kernel language it runs."""

    module: str
    cls: str
    language: str
    requested_as: str = ""
    """The ``--device`` word that opens this backend's device (``browser``, ``remote``): such a device is a program
    to launch or a page to serve, not an adapter to list, so it is never enumerated; the module's
    ``request_device(selector, language, options)`` opens it when named.
    Empty: the module's ``enumerate_devices`` lists its adapters."""


BACKENDS: dict[str, BackendEntry] = {
    "wgpu": BackendEntry("kernelforge.runtime.backends.wgpu", "WgpuBackend", "wgsl"),
    "moderngl": BackendEntry("kernelforge.runtime.backends.moderngl", "ModernglBackend", "glsl"),
    "browser": BackendEntry("kernelforge.runtime.backends.browser", "BrowserBackend", "wgsl", requested_as="browser"),
    "remote": BackendEntry("kernelforge.runtime.backends.remote", "RemoteBackend", "wgsl", requested_as="remote"),
}

LANGUAGES = ("wgsl", "glsl")


def load_backend_module(name: str) -> object:
    """Import the module of a registered backend."""
    return importlib.import_module(BACKENDS[name].module)


def requested_backend(selector: object) -> str | None:
    """Return the backend a ``--device`` selector names by its word (``browser``, ``remote:webgpu``), else None."""
    word = str(selector).strip().lower().partition(":")[0]
    return next((name for name, e in BACKENDS.items() if e.requested_as and e.requested_as == word), None)
