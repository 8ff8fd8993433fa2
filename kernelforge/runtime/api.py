"""numpy-in, numpy-out op calls on a device, with parameters from the tuning database."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import numpy as np

from kernelforge import _config
from kernelforge.errors import ShapeError
from kernelforge.ops import get_op
from kernelforge.ops._epilogue import Activation
from kernelforge.ops.gemm import GemmProblem
from kernelforge.runtime import open_device
from kernelforge.runtime.backends._base import Backend
from kernelforge.runtime.kernel import prepare
from kernelforge.templates import kernel_hash
from kernelforge.tuner.db import Lookup, Query, TuningDB


@functools.cache
def _db() -> TuningDB:
    return TuningDB(_config.db_dir())


def choose_params(backend: Backend, op: str, problem: Any, db: TuningDB | None = None) -> Lookup:
    """Return the params a call of ``op`` on ``problem`` uses on ``backend`` and where they came from."""
    spec = get_op(op)
    language = backend.language
    return (db or _db()).lookup(
        Query(backend.info, spec, language, problem, backend.limits, kernel_hash(spec, language))
    )


def float_array(op: str, name: str, value: Any) -> np.ndarray:
    """Return ``value`` as a contiguous float32 array.

    Raises:
        ShapeError: Naming the op and argument when ``value`` is not real numeric data.
    """
    array = np.asarray(value)
    if array.dtype.kind not in "fiub":
        raise ShapeError(f"{op}: {name} must be a real numeric array, got dtype {array.dtype}")
    # NOTE: not np.ascontiguousarray, which turns a 0-d scalar into shape (1,)
    return np.asarray(array, dtype=np.float32, order="C")


def run_op(
    op: str,
    problem: Any,
    inputs: Sequence[np.ndarray],
    device: str | int = "auto",
    backend_language: str | None = None,
) -> np.ndarray:
    """Run one op call on a device with the database's params for its shape (defaults when none).

    Args:
        op: Registered op name.
        problem: The op's problem dataclass (shapes and attributes, already validated).
        inputs: float32 arrays in the op's input order.
        device: A ``--device`` selector.
        backend_language: ``"wgsl"`` or ``"glsl"``; ``None`` takes the selected device's.

    Returns:
        The output, shaped as :meth:`OpSpec.output_shape`.
    """
    backend = open_device(device, backend_language)
    chosen = choose_params(backend, op, problem)
    return prepare(backend, get_op(op), problem, chosen.params, inputs).run()


def gemm(
    a: Any,
    b: Any,
    bias: Any = None,
    activation: str | Activation | None = None,
    trans_b: bool = False,
    device: str | int = "auto",
    backend_language: str | None = None,
) -> np.ndarray:
    """See :func:`kernelforge.ops.gemm`."""
    a32, b32 = float_array("gemm", "a", a), float_array("gemm", "b", b)
    if a32.ndim not in (2, 3) or b32.ndim not in (2, 3):
        raise ShapeError(f"gemm: a and b must be 2-D or 3-D, got shapes {a32.shape} and {b32.shape}")
    batch = a32.shape[0] if a32.ndim == 3 else 1
    batch_b = b32.shape[0] if b32.ndim == 3 else 1
    m, k = a32.shape[-2:]
    n, kb = (b32.shape[-2], b32.shape[-1]) if trans_b else (b32.shape[-1], b32.shape[-2])
    if k != kb:
        raise ShapeError(f"gemm: inner dimensions differ: a {a32.shape} and b {b32.shape} (trans_b={trans_b})")
    if a32.ndim == 2 and batch_b > 1:
        raise ShapeError(f"gemm: b is batched {b32.shape} but a {a32.shape} is not")
    inputs = [a32, b32]
    if bias is not None:
        bias32 = float_array("gemm", "bias", bias)
        if bias32.shape != (n,):
            raise ShapeError(f"gemm: bias must have shape ({n},), got {bias32.shape}")
        inputs.append(bias32)
    problem = GemmProblem(
        m=int(m),
        n=int(n),
        k=int(k),
        batch=int(batch),
        batch_b=int(batch_b),
        trans_b=bool(trans_b),
        has_bias=bias is not None,
        activation=Activation.parse(activation),
    )
    out = run_op("gemm", problem, inputs, device, backend_language)
    return out if a32.ndim == 3 else out.reshape(m, n)
