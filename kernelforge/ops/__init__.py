"""What is computed: one op spec per module (reference, search space, constraints, launch math), pure numpy.

Nothing here imports a GPU library, the graph or the runtime: every layer above reads ops through
:func:`get_op` and the contract in :mod:`kernelforge.ops.spec`. The numpy-in/numpy-out functions that run an
op on a device live above the runtime, in :mod:`kernelforge.api`.
"""

from __future__ import annotations

import importlib
from typing import Any

from kernelforge.ops._epilogue import ACTIVATIONS, Activation
from kernelforge.ops.spec import Launch, Limits, OpSpec, Param, Params

__all__ = ["ACTIVATIONS", "OPS", "Activation", "Launch", "Limits", "OpSpec", "Param", "Params", "get_op", "specs"]

OPS: dict[str, str] = {
    "gemm": "kernelforge.ops.gemm",
    "elementwise": "kernelforge.ops.eltwise",
    "pool2d": "kernelforge.ops.pool",
    "pool2d_argmax": "kernelforge.ops.pool_argmax",
    "conv2d": "kernelforge.ops.conv",
    "pad": "kernelforge.ops.pad",
    "resize": "kernelforge.ops.resize",
    "softmax": "kernelforge.ops.softmax",
    "concat": "kernelforge.ops.concat",
    "transpose": "kernelforge.ops.transpose",
    "layernorm": "kernelforge.ops.layernorm",
    "gather": "kernelforge.ops.gather",
    "slice": "kernelforge.ops.slice",
    "reduce": "kernelforge.ops.reduce",
    "conv_transpose2d": "kernelforge.ops.conv_transpose",
    "attention": "kernelforge.ops.attention",
    "arg_reduce": "kernelforge.ops.arg_reduce",
    "cumsum": "kernelforge.ops.cumsum",
}
"""Registry: op name -> module defining ``SPEC`` (one row per op; the name is also the op's IR name)."""


def get_op(name: str) -> OpSpec[Any]:
    """Return the spec of a registered op.

    Raises:
        KeyError: Naming the known ops.
    """
    if name not in OPS:
        raise KeyError(f"unknown op {name!r}; known ops: {sorted(OPS)}")
    spec: OpSpec[Any] = importlib.import_module(OPS[name]).SPEC
    return spec


def specs() -> list[OpSpec[Any]]:
    """Return every registered op's spec, in registry order."""
    return [get_op(name) for name in OPS]
