"""kernelforge: per-device autotuned WGSL/GLSL kernels for native and browser inference."""

from typing import Any

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
    "load",
]


def load(
    model: Any,
    device: str | int = "auto",
    backend: str | None = None,
    db: Any = None,
    input_shapes: Any = None,
    weights: str = "fp32",
    precision: str = "auto",
    calibration: Any = (),
) -> Any:
    """Load an ONNX model onto a device: see :func:`kernelforge.runtime.session.load`.

    Imported lazily so that ``import kernelforge`` needs neither onnx nor a GPU library.
    """
    from kernelforge.runtime.session import load as _load

    return _load(
        model,
        device=device,
        backend=backend,
        db=db,
        input_shapes=input_shapes,
        weights=weights,
        precision=precision,
        calibration=calibration,
    )
