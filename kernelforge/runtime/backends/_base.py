"""The backend contract: compile kernels and bind an op's inputs to one, on one device."""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from kernelforge.errors import KernelCompileError
from kernelforge.ops._spec import Limits, OpSpec, Params
from kernelforge.runtime.devices import DeviceInfo


class Bound(abc.ABC):
    """A compiled kernel with its inputs on the device and room for its outputs."""

    @abc.abstractmethod
    def run(self) -> np.ndarray:
        """Run once, wait, and return the output (flat or 2-D; the caller reshapes)."""

    @abc.abstractmethod
    def time(self) -> float:
        """Run once and return the kernel's duration in seconds (GPU timer where there is one)."""


class Backend(abc.ABC):
    """One opened device.

    Public methods validate and wrap errors around the ``_hooks`` an implementation provides (tinygrad's
    ``Allocator.alloc``/``_alloc`` split). A backend is used from one thread; kernels and bound inputs it
    returns belong to it and die with it. ``compile`` caches by source text, so rendering the same kernel
    twice costs one driver compile.
    """

    language: ClassVar[str]

    def __init__(self, info: DeviceInfo) -> None:
        self.info = info
        self._kernels: dict[str, Any] = {}

    @property
    @abc.abstractmethod
    def limits(self) -> Limits:
        """Limits of the opened device (what constraints must respect)."""

    @property
    @abc.abstractmethod
    def has_timestamps(self) -> bool:
        """Whether timing reads a GPU timer rather than the wall clock."""

    def compile(self, source: str, label: str) -> Any:
        """Compile a kernel (cached by source).

        Raises:
            KernelCompileError: With the label and the driver's message.
        """
        kernel = self._kernels.get(source)
        if kernel is None:
            try:
                kernel = self._compile(source, label)
            except KernelCompileError:
                raise
            except Exception as exc:
                raise KernelCompileError(f"{label}: the driver rejected the kernel on {self.info.slug}: {exc}") from exc
            self._kernels[source] = kernel
        return kernel

    def bind_op(
        self, kernel: Any, spec: OpSpec[Any], problem: Any, params: Params, inputs: Sequence[np.ndarray]
    ) -> Bound:
        """Upload an op's device inputs, make room for its output and tie them to a compiled kernel."""
        arrays = [np.ascontiguousarray(x, dtype=np.float32) for x in inputs]
        return self._bind_op(kernel, spec, problem, params, arrays)

    @abc.abstractmethod
    def _compile(self, source: str, label: str) -> Any: ...

    @abc.abstractmethod
    def _bind_op(
        self, kernel: Any, spec: OpSpec[Any], problem: Any, params: Params, inputs: list[np.ndarray]
    ) -> Bound: ...
