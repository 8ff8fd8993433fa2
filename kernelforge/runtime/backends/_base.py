"""The backend contract: compile, buffers, dispatch and timing on one device."""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from kernelforge.errors import KernelCompileError
from kernelforge.ops._spec import Launch, Limits
from kernelforge.runtime.devices import DeviceInfo


class Backend(abc.ABC):
    """One opened device.

    Public methods validate and wrap errors around the ``_hooks`` an implementation provides (tinygrad's
    ``Allocator.alloc``/``_alloc`` split). A backend is used from one thread; kernels and buffers it returns
    belong to it and die with it. ``compile`` caches by source text, so rendering the same kernel twice
    costs one driver compile.
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
        """Whether :meth:`time` reads GPU timestamps rather than the wall clock."""

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

    def upload(self, array: np.ndarray) -> Any:
        """Copy a float32 array to a new device buffer."""
        data = np.ascontiguousarray(array, dtype=np.float32)
        return self._upload(data if data.size else np.zeros(1, np.float32))

    def alloc(self, nbytes: int) -> Any:
        """Allocate an uninitialised device buffer of at least ``nbytes``."""
        if nbytes < 0:
            raise ValueError(f"buffer size must be >= 0, got {nbytes}")
        return self._alloc(max(4, (nbytes + 3) // 4 * 4))

    def read(self, buffer: Any, shape: Sequence[int]) -> np.ndarray:
        """Read a float32 array of ``shape`` back from a buffer."""
        count = int(np.prod(shape, dtype=np.int64))
        return self._read(buffer, count).reshape(tuple(shape))

    def bind(self, kernel: Any, buffers: Sequence[Any], launch: Launch) -> Any:
        """Prepare one dispatch: the kernel, its buffers in binding order after the uniforms, and sizes."""
        if any(g < 1 for g in launch.workgroups):
            raise ValueError(f"workgroup counts must be >= 1, got {launch.workgroups}")
        return self._bind(kernel, list(buffers), launch)

    def run(self, dispatches: Sequence[Any]) -> None:
        """Submit the dispatches in order, in one submission, and wait for them."""
        self._run(list(dispatches))

    def time(self, dispatch: Any) -> float:
        """Run one dispatch alone and return its duration in seconds."""
        return self._time(dispatch)

    @abc.abstractmethod
    def _compile(self, source: str, label: str) -> Any: ...

    @abc.abstractmethod
    def _upload(self, data: np.ndarray) -> Any: ...

    @abc.abstractmethod
    def _alloc(self, nbytes: int) -> Any: ...

    @abc.abstractmethod
    def _read(self, buffer: Any, count: int) -> np.ndarray: ...

    @abc.abstractmethod
    def _bind(self, kernel: Any, buffers: list[Any], launch: Launch) -> Any: ...

    @abc.abstractmethod
    def _run(self, dispatches: list[Any]) -> None: ...

    @abc.abstractmethod
    def _time(self, dispatch: Any) -> float: ...
