"""Run a checked Program on a backend: allocate, upload, compile and bind once; then run and read back.

The executor is the only interpreter of :class:`~kernelforge.graph.program.Program` in Python (the JS runtime
is the other one): sessions, the numpy API and the tuner all run through it, so a kernel is launched the
same way whether it is timed, verified or part of a model.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Generic

import numpy as np

from kernelforge.errors import KernelforgeError
from kernelforge.graph.program import Output, Program, Texture
from kernelforge.ops.texture import interleave_rows
from kernelforge.runtime.backends.base import B, Backend, K, R


class Executable(Generic[R, K, B]):
    """A Program loaded on one backend, ready to run.

    Loading allocates every resource, writes the constants, compiles every shader (the backend caches by
    text) and binds every step. :meth:`run` then only writes the inputs, launches the steps in one submission
    and reads the outputs back.

    Raises:
        KernelforgeError: When the program is of another language than the backend.
        KernelCompileError: When the driver rejects a shader (named by the step's label).
    """

    def __init__(self, backend: Backend[R, K, B], program: Program) -> None:
        if program.language != backend.language:
            raise KernelforgeError(
                f"a {program.language} program cannot run on {backend.info.slug} ({backend.language})"
            )
        self.backend, self.program = backend, program
        kernels: dict[int, K] = {}
        for step in program.steps:
            if step.shader not in kernels:
                kernels[step.shader] = backend.compile(program.shaders[step.shader], step.label)
        self._handles = [backend.alloc(r) for r in program.resources]
        for upload in program.uploads:
            data = upload.data if upload.layout is None else upload.layout.pack_array(upload.data)
            backend.write(self._handles[upload.resource], data)
        self._steps = [
            backend.bind(
                kernels[step.shader],
                step,
                [self._handles[a.resource] for a in step.inputs],
                [self._handles[a.resource] for a in step.outputs],
            )
            for step in program.steps
        ]

    def run(self, feeds: Mapping[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        """Run every step once on ``feeds`` (input name -> float32 array of its shape); return the outputs."""
        feeds = feeds or {}
        for i in self.program.inputs:
            data = np.asarray(feeds[i.name], np.float32)
            self.backend.write(self._handles[i.resource], data if i.layout is None else i.layout.pack_array(data))
        self.backend.run(self._steps)
        return {o.name: self._read(o) for o in self.program.outputs}

    def time(self, index: int) -> float:
        """Launch step ``index`` alone (on whatever its resources hold) and return its seconds."""
        return self.backend.time(self._steps[index])

    def bound(self, index: int) -> B:
        """Return step ``index`` as bound on the backend (to time several programs' steps side by side)."""
        return self._steps[index]

    def time_reps(self, index: int, count: int) -> list[float]:
        """Return ``count`` timings of step ``index`` alone (see :meth:`Backend.time_reps`)."""
        return self.backend.time_reps(self._steps[index], count)

    def stored(self, resource: int) -> np.ndarray:
        """Return resource ``resource`` as it is stored, every texel and lane (tests of the layout contract)."""
        texture = self.program.resources[resource]
        count = texture.floats if isinstance(texture, Texture) else texture.nbytes // 4
        return self.backend.read(self._handles[resource], count)

    def _read(self, output: Output) -> np.ndarray:
        if output.data is not None:  # an output that folded to a constant
            return output.data.reshape(output.shape).copy()
        if output.layouts:  # GLSL: every render target unpacked, rows dealt round-robin
            parts = []
            for resource, layout in zip(output.resources, output.layouts, strict=True):
                texture = self.program.resources[resource]
                assert isinstance(texture, Texture)
                parts.append(layout.unpack(self.backend.read(self._handles[resource], texture.floats)))
            data = interleave_rows(parts, output.rows).reshape(-1)[: output.count]
        else:
            data = self.backend.read(self._handles[output.resources[0]], output.count)
        if output.perm is None:
            return data.reshape(output.shape)
        stored = tuple(output.shape[a] for a in output.perm)
        return np.ascontiguousarray(data.reshape(stored).transpose(np.argsort(output.perm)))
