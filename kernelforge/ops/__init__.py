"""What is computed: op specs (reference, search space, constraints, launch) and the numpy-in/out API."""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np

from kernelforge.ops._epilogue import ACTIVATIONS, Activation
from kernelforge.ops._spec import Launch, Limits, OpSpec, Param, Params

__all__ = [
    "ACTIVATIONS",
    "OPS",
    "Activation",
    "Launch",
    "Limits",
    "OpSpec",
    "Param",
    "Params",
    "average_pool",
    "concat",
    "conv2d",
    "elementwise",
    "gemm",
    "get_op",
    "global_average_pool",
    "global_max_pool",
    "max_pool",
    "pad",
    "resize",
    "softmax",
    "transpose",
]

OPS: dict[str, str] = {
    "gemm": "kernelforge.ops.gemm",
    "elementwise": "kernelforge.ops.eltwise",
    "pool2d": "kernelforge.ops.pool",
    "conv2d": "kernelforge.ops.conv",
    "pad": "kernelforge.ops.pad",
    "resize": "kernelforge.ops.resize",
    "softmax": "kernelforge.ops.softmax",
    "concat": "kernelforge.ops.concat",
    "transpose": "kernelforge.ops.transpose",
}
"""Registry: op name -> module defining ``SPEC`` (one row per op)."""

# NOTE: every op module is imported before the API functions below are defined. Importing a submodule for
# the first time sets it as an attribute of this package, which would otherwise replace a function such
# as ``kernelforge.ops.gemm`` with the module ``kernelforge/ops/gemm.py``. Op modules are pure Python +
# numpy, so this costs nothing of note.
for _module in OPS.values():
    importlib.import_module(_module)

# Public numpy-in/out functions of the op modules (each module owns its API function).
from kernelforge.ops.concat import concat  # noqa: E402
from kernelforge.ops.conv import conv2d  # noqa: E402
from kernelforge.ops.eltwise import elementwise  # noqa: E402
from kernelforge.ops.pad import pad  # noqa: E402
from kernelforge.ops.pool import average_pool, global_average_pool, global_max_pool, max_pool  # noqa: E402
from kernelforge.ops.resize import resize  # noqa: E402
from kernelforge.ops.softmax import softmax  # noqa: E402
from kernelforge.ops.transpose import transpose  # noqa: E402


def get_op(name: str) -> OpSpec[Any]:
    """Return the spec of a registered op.

    Raises:
        KeyError: Naming the known ops.
    """
    if name not in OPS:
        raise KeyError(f"unknown op {name!r}; known ops: {sorted(OPS)}")
    spec: OpSpec[Any] = importlib.import_module(OPS[name]).SPEC
    return spec


def gemm(
    a: np.ndarray,
    b: np.ndarray,
    bias: np.ndarray | None = None,
    activation: str | Activation | None = None,
    trans_b: bool = False,
    device: str | int = "auto",
    backend: str | None = None,
) -> np.ndarray:
    """Compute ``act(a @ op(b) + bias)`` on a GPU with the tuned (or default) kernel for this shape.

    Args:
        a: ``(M, K)`` or ``(batch, M, K)``.
        b: ``(K, N)`` (``(N, K)`` with ``trans_b``), optionally with the same leading batch as ``a``.
        bias: Optional ``(N,)`` added to every row.
        activation: ``None``, ``"relu"``, ``"relu6"``, ``"clip(lo,hi)"``, ``"sigmoid"``, ``"tanh"``,
            ``"gelu"``, ``"hardswish"`` or ``"leaky_relu(alpha)"``.
        trans_b: Multiply by ``b`` transposed.
        device: A ``--device`` selector.
        backend: ``"wgsl"`` or ``"glsl"`` to choose the kernel language; ``None`` takes the device's.

    Returns:
        float32 array ``(M, N)`` or ``(batch, M, N)``.
    """
    from kernelforge.runtime.api import gemm as _gemm

    return _gemm(a, b, bias=bias, activation=activation, trans_b=trans_b, device=device, backend_language=backend)
