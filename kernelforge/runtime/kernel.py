"""Run one op with given params on a backend: render, compile (cached), upload, dispatch, read back."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np

from kernelforge.ops._spec import Launch, OpSpec, Params
from kernelforge.runtime.backends._base import Backend
from kernelforge.templates import render

P = TypeVar("P")


@dataclass
class PreparedKernel(Generic[P]):
    """A compiled kernel bound to device copies of its inputs and an output buffer, ready to dispatch."""

    backend: Backend
    spec: OpSpec[P]
    problem: P
    params: Params
    source: str
    launch: Launch
    dispatch: Any
    output: Any

    def run(self) -> np.ndarray:
        """Dispatch once and return the output."""
        self.backend.run([self.dispatch])
        return self.backend.read(self.output, self.spec.output_shape(self.problem))

    def time(self) -> float:
        """Dispatch once and return the kernel time in seconds."""
        return self.backend.time(self.dispatch)


def prepare(
    backend: Backend, spec: OpSpec[P], problem: P, params: Params, inputs: Sequence[np.ndarray]
) -> PreparedKernel[P]:
    """Check, render and compile a kernel and bind it to uploaded inputs.

    Raises:
        InvalidParamsError: When params are outside the space or break a constraint (before any compile).
        KernelCompileError: When the driver rejects the rendered source.
    """
    params = spec.validate_params(params)
    spec.check(problem, params, backend.limits)
    source = render(spec, backend.language, problem, params)
    label = f"{spec.name}:{spec.problem_key(problem)}"
    kernel = backend.compile(source, label)
    launch = spec.launch(problem, params)
    buffers = [backend.upload(x) for x in spec.device_inputs(problem, params, inputs)]
    count = int(np.prod(spec.output_shape(problem), dtype=np.int64))
    output = backend.alloc(4 * count)
    dispatch = backend.bind(kernel, [*buffers, output], launch)
    return PreparedKernel(backend, spec, problem, params, source, launch, dispatch, output)
