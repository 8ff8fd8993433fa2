"""How models run in browsers: manifest, bundle and the static JS runtime (``js/``), format in ``FORMAT.md``."""

from kernelforge.export.bundle import ExportReport, export

__all__ = ["ExportReport", "export"]
