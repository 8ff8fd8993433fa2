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
    """The ``--device`` word and API that open this backend's device (``browser:webgpu``, ``remote:webgl2``):
    such a device is a program to launch or a page to serve, not an adapter to list, so it is never enumerated;
    the module's ``request_device(selector, language, options)`` opens it when named.
    Empty: the module's ``enumerate_devices`` lists its adapters."""


_BROWSER, _REMOTE = "kernelforge.runtime.backends.browser", "kernelforge.runtime.backends.remote"
BACKENDS: dict[str, BackendEntry] = {
    "wgpu": BackendEntry("kernelforge.runtime.backends.wgpu", "WgpuBackend", "wgsl"),
    "moderngl": BackendEntry("kernelforge.runtime.backends.moderngl", "ModernglBackend", "glsl"),
    "browser": BackendEntry(_BROWSER, "BrowserBackend", "wgsl", requested_as="browser:webgpu"),
    "browser-webgl2": BackendEntry(_BROWSER, "BrowserGlBackend", "glsl", requested_as="browser:webgl2"),
    "remote": BackendEntry(_REMOTE, "RemoteBackend", "wgsl", requested_as="remote:webgpu"),
    "remote-webgl2": BackendEntry(_REMOTE, "RemoteGlBackend", "glsl", requested_as="remote:webgl2"),
}

LANGUAGES = ("wgsl", "glsl")


def load_backend_module(name: str) -> object:
    """Import the module of a registered backend."""
    return importlib.import_module(BACKENDS[name].module)


def requested_backend(selector: object) -> str | None:
    """Return the backend a ``--device`` selector names by its word (``browser``, ``remote:webgl2``), else None.

    A word with an API no backend has names the word's WebGPU backend, whose ``request_device`` says why not.
    """
    word, _, api = str(selector).strip().lower().partition(":")
    named = {e.requested_as: name for name, e in BACKENDS.items() if e.requested_as}
    return named.get(f"{word}:{api or 'webgpu'}") or named.get(f"{word}:webgpu")


def requested_word(selector: object) -> str | None:
    """Return the ``--device`` word (``browser``, ``remote``) of a selector that requests a page, else None."""
    name = requested_backend(selector)
    return BACKENDS[name].requested_as.partition(":")[0] if name else None
