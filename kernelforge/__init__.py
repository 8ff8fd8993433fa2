"""kernelforge: per-device autotuned WGSL/GLSL kernels for native and browser inference."""

from kernelforge._version import __version__
from kernelforge.errors import (
    DatabaseError,
    DeviceNotFoundError,
    InvalidParamsError,
    KernelCompileError,
    KernelforgeError,
    ShapeError,
)

__all__ = [
    "DatabaseError",
    "DeviceNotFoundError",
    "InvalidParamsError",
    "KernelCompileError",
    "KernelforgeError",
    "ShapeError",
    "__version__",
]
