"""The backend contract: the device operations a checked Program needs, on one opened device.

A backend is generic in three handle types of its own: ``R`` (a resource: a storage buffer or a texture),
``K`` (a compiled kernel) and ``B`` (a step bound to its resources, ready to launch). The executor
(:mod:`kernelforge.runtime.executor`) only ever passes back the handles a backend gave it, so mypy checks
every call it makes.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import ClassVar, Generic, TypeVar

import numpy as np

from kernelforge.devices import DeviceInfo
from kernelforge.errors import DeviceDisconnectedError, KernelCompileError, KernelforgeError
from kernelforge.graph.program import Buffer, ProgramStep, Resource, Texture
from kernelforge.ops.spec import Limits

R = TypeVar("R")
K = TypeVar("K")
B = TypeVar("B")


class Backend(abc.ABC, Generic[R, K, B]):
    """One opened device.

    Public methods check their arguments and wrap driver errors around the ``_hooks`` an implementation
    provides (tinygrad's ``Allocator.alloc``/``_alloc`` split). A backend is used from one thread; handles it
    returns belong to it and die with it. ``compile`` caches by source text, so compiling the same kernel
    twice costs one driver compile.
    """

    language: ClassVar[str]
    """The kernel language the backend runs: ``wgsl`` (a :class:`Buffer` per resource) or ``glsl`` (a
    :class:`Texture` per resource)."""
    target: ClassVar[str] = "native"
    """The shader text it compiles (:func:`~kernelforge.graph.program.checked_kernel`): ``native``, or ``web``
    for a browser's (GLSL ES headers, ``enable subgroups;``), the very text a bundle ships."""

    def __init__(self, info: DeviceInfo) -> None:
        self.info = info
        self._kernels: dict[str, K] = {}

    @property
    @abc.abstractmethod
    def limits(self) -> Limits:
        """Limits of the opened device (what constraints must respect)."""

    @property
    @abc.abstractmethod
    def has_timestamps(self) -> bool:
        """Whether :meth:`time` reads a GPU timer rather than the wall clock."""

    def reset_clock(self) -> None:
        """Forget what earlier timings concluded about the clock (a backend may stop believing its GPU timer).

        The tuner calls it when a study starts, so one odd kernel cannot decide the clock of every later study.
        """

    def compile(self, source: str, label: str) -> K:
        """Compile a kernel (cached by source).

        Raises:
            KernelCompileError: With the label and the driver's message.
        """
        kernel = self._kernels.get(source)
        if kernel is None:
            try:
                kernel = self._compile(source, label)
            except (KernelCompileError, DeviceDisconnectedError):  # a page that went away rejected nothing
                raise
            except Exception as exc:
                raise KernelCompileError(f"{label}: the driver rejected the kernel on {self.info.slug}: {exc}") from exc
            self._kernels[source] = kernel
        return kernel

    def alloc(self, resource: Resource) -> R:
        """Create a resource of the backend's language (its contents undefined until written).

        Raises:
            KernelforgeError: When the resource is of the other language's kind.
        """
        expected = Buffer if self.language == "wgsl" else Texture
        if not isinstance(resource, expected):
            kind = type(resource).__name__
            raise KernelforgeError(f"{self.info.slug} runs {self.language}: it cannot allocate a {kind}")
        return self._alloc(resource)

    def write(self, handle: R, data: np.ndarray) -> None:
        """Write float32 values at the start of a resource (a texture: its texels row by row, ``pack`` per texel).

        int8/uint8 data (quantized weights) is written as its bytes: four per 32-bit word of a buffer, one per
        channel of an integer texture; float16 data (float16 weights) as its halves: two per word, one per channel
        of a half-float texture.
        """
        if data.dtype in (np.int8, np.uint8, np.float16):
            flat = np.ascontiguousarray(data).reshape(-1)
            per_word = 4 // flat.itemsize
            if self.language == "wgsl" and flat.size % per_word:  # buffers are written in whole words
                flat = np.concatenate([flat, np.zeros(per_word - flat.size % per_word, flat.dtype)])
        else:
            flat = np.ascontiguousarray(data, dtype=np.float32).reshape(-1)
        if flat.size:
            self._write(handle, flat)

    def read(self, handle: R, count: int) -> np.ndarray:
        """Return the first ``count`` float32 values of a resource (after the work submitted so far)."""
        return self._read(handle, count) if count else np.zeros(0, np.float32)

    def bind(self, kernel: K, step: ProgramStep, inputs: Sequence[R], outputs: Sequence[R]) -> B:
        """Tie a compiled kernel to the resources one step reads and writes (in the step's argument order)."""
        if len(inputs) != len(step.inputs) or len(outputs) != len(step.outputs):
            raise KernelforgeError(f"{step.label}: {len(inputs)}+{len(outputs)} resources for a step of "
                                   f"{len(step.inputs)}+{len(step.outputs)}")  # fmt: skip
        return self._bind(kernel, step, inputs, outputs)

    def run(self, steps: Sequence[B]) -> None:
        """Launch bound steps in order, as one submission, and wait until they finish."""
        self._run(steps)

    def time(self, step: B) -> float:
        """Launch one bound step alone and return its duration in seconds (GPU timer where there is one)."""
        return self._time(step)

    def time_reps(self, step: B, count: int) -> list[float]:
        """Return ``count`` repetitions of :meth:`time` (a backend far from its device takes them in one go)."""
        return [self._time(step) for _ in range(count)]

    def time_rounds(self, steps: Sequence[B], count: int) -> list[list[float]]:
        """Time steps side by side: ``count`` rounds of one :meth:`time` of each step, in order, by round."""
        return [[self._time(step) for step in steps] for _ in range(count)]

    @abc.abstractmethod
    def _compile(self, source: str, label: str) -> K: ...

    @abc.abstractmethod
    def _alloc(self, resource: Resource) -> R: ...

    @abc.abstractmethod
    def _write(self, handle: R, data: np.ndarray) -> None: ...

    @abc.abstractmethod
    def _read(self, handle: R, count: int) -> np.ndarray: ...

    @abc.abstractmethod
    def _bind(self, kernel: K, step: ProgramStep, inputs: Sequence[R], outputs: Sequence[R]) -> B: ...

    @abc.abstractmethod
    def _run(self, steps: Sequence[B]) -> None: ...

    @abc.abstractmethod
    def _time(self, step: B) -> float: ...
