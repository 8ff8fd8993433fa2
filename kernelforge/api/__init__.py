"""numpy-in, numpy-out ops on a GPU, each with the tuned (or default) kernel for its shape and device.

This is the layer above the runtime: every function validates its arrays, builds the op's problem, looks
its params up in the tuning database (:meth:`kernelforge.db.TuningDB.params_for`) and runs one kernel
through :mod:`kernelforge.runtime`. Arguments follow ONNX semantics and attribute names (NCHW)::

    import kernelforge.api as kops
    c = kops.gemm(a, b, bias=None, activation="relu", device="auto")
"""

from kernelforge.api._nn import average_pool, conv2d, gemm, global_average_pool, global_max_pool, max_pool
from kernelforge.api._run import float_array, run_op
from kernelforge.api._tensor import concat, elementwise, pad, resize, softmax, transpose

__all__ = [
    "average_pool",
    "concat",
    "conv2d",
    "elementwise",
    "float_array",
    "gemm",
    "global_average_pool",
    "global_max_pool",
    "max_pool",
    "pad",
    "resize",
    "run_op",
    "softmax",
    "transpose",
]
