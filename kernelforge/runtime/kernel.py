"""Run one op with given params on a backend: a one-kernel Program, loaded and ready to run or time."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np

from kernelforge.graph.program import OUTPUT, Program, kernel_program
from kernelforge.ops.spec import OpSpec, Params
from kernelforge.runtime.backends.base import Backend
from kernelforge.runtime.executor import Executable

P = TypeVar("P")


@dataclass
class PreparedKernel(Generic[P]):
    """A compiled kernel bound to device copies of its inputs and its output, ready to run."""

    spec: OpSpec[P]
    problem: P
    params: Params
    program: Program
    executable: Executable[Any, Any, Any]

    @property
    def source(self) -> str:
        """The kernel's rendered shader text."""
        return self.program.shaders[self.program.steps[0].shader]

    def run(self) -> np.ndarray:
        """Run once and return the output, shaped as the op's output."""
        return self.executable.run()[OUTPUT]

    def time(self) -> float:
        """Run the kernel once and return its time in seconds."""
        return self.executable.time(0)

    def time_reps(self, count: int) -> list[float]:
        """Return ``count`` timings of the kernel, in seconds."""
        return self.executable.time_reps(0, count)


def prepare(
    backend: Backend[Any, Any, Any], spec: OpSpec[P], problem: P, params: Params, inputs: Sequence[np.ndarray]
) -> PreparedKernel[P]:
    """Check, render and compile a kernel (the text of the backend's target) and bind it to uploaded inputs.

    Raises:
        InvalidParamsError: When params are outside the space or break a constraint (before any compile).
        KernelCompileError: When the driver rejects the rendered source.
    """
    program = kernel_program(spec, problem, params, backend.limits, backend.language, inputs, backend.target)
    params = program.steps[0].params
    return PreparedKernel(spec, problem, params, program, Executable(backend, program))
