"""How every numpy-in/out op runs: its params from the tuning database, one kernel on the selected device."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import numpy as np

from kernelforge import _config
from kernelforge.db import TuningDB
from kernelforge.errors import ShapeError
from kernelforge.ops import get_op
from kernelforge.runtime import open_device
from kernelforge.runtime.kernel import prepare


@functools.cache
def _db() -> TuningDB:
    return TuningDB(_config.db_dir())


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
    backend: str | None = None,
) -> np.ndarray:
    """Run one op call on a device with the database's params for its shape (defaults when none), in float32.

    numpy in, numpy out: a record that computes or stores in f16 (its ``precision`` tunable) runs its config in
    float32 here; lower precision is a model's choice (``kernelforge.load(..., precision=...)``).

    Args:
        op: Registered op name.
        problem: The op's problem dataclass (shapes and attributes, already validated).
        inputs: float32 arrays in the op's input order.
        device: A ``--device`` selector.
        backend: ``"wgsl"`` or ``"glsl"``; ``None`` takes the selected device's language.

    Returns:
        The output, shaped as :meth:`OpSpec.output_shape`.
    """
    opened = open_device(device, backend)
    chosen = _db().params_for(opened.info, op, problem, opened.language, opened.limits)
    params = {**chosen.params, "precision": 0} if chosen.params.get("precision") else chosen.params
    return prepare(opened, get_op(op), problem, params, inputs).run()
