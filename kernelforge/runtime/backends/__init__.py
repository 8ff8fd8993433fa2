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


BACKENDS: dict[str, BackendEntry] = {
    "wgpu": BackendEntry("kernelforge.runtime.backends.wgpu", "WgpuBackend", "wgsl"),
    "moderngl": BackendEntry("kernelforge.runtime.backends.moderngl", "ModernglBackend", "glsl"),
}

LANGUAGES = ("wgsl", "glsl")


def load_backend_module(name: str) -> object:
    """Import the module of a registered backend."""
    return importlib.import_module(BACKENDS[name].module)
