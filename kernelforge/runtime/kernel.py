"""Run one op with given params on a backend: check, render, compile (cached), bind inputs, run."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np

from kernelforge.ops._spec import OpSpec, Params
from kernelforge.runtime.backends._base import Backend, Bound
from kernelforge.templates import render

P = TypeVar("P")


@dataclass
class PreparedKernel(Generic[P]):
    """A compiled kernel bound to device copies of its inputs and its outputs, ready to run."""

    backend: Backend
    spec: OpSpec[P]
    problem: P
    params: Params
    source: str
    bound: Bound

    def run(self) -> np.ndarray:
        """Run once and return the output, shaped as the op's output."""
        return self.spec.from_device(self.problem, self.params, self.bound.run())

    def time(self) -> float:
        """Run once and return the kernel time in seconds."""
        return self.bound.time()


def prepare(
    backend: Backend, spec: OpSpec[P], problem: P, params: Params, inputs: Sequence[np.ndarray]
) -> PreparedKernel[P]:
    """Check, render and compile a kernel and bind it to uploaded inputs.

    Raises:
        InvalidParamsError: When params are outside the space or break a constraint (before any compile).
        KernelCompileError: When the driver rejects the rendered source.
    """
    language = backend.language
    params = spec.validate_params(params, language)
    spec.check(problem, params, backend.limits, language)
    source = render(spec, language, problem, params)
    kernel = backend.compile(source, f"{spec.name}:{spec.problem_key(problem)}")
    bound = backend.bind_op(kernel, spec, problem, params, spec.device_inputs(problem, params, inputs))
    return PreparedKernel(backend, spec, problem, params, source, bound)
