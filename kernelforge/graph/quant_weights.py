"""Keep quantized weights quantized: GEMMs and convs whose weight a model stores as int8/uint8 read those integers.

The importer dequantizes a quantized weight to float32 (every pass works on floats) and keeps the integers in
:attr:`~kernelforge.graph.ir.Value.quant`. :func:`keep_weights_quantized` runs after the passes: a ``gemm``
whose B, or a ``conv2d`` whose W, is still exactly such a constant (no pass computed with it) and has one
scale per tensor or per output channel gets the ``weight_quant`` attribute and a ``qparams`` input, and its
kernel binds the integers and dequantizes them where it reads them (:mod:`kernelforge.ops._qweight`): a quarter
of the weight memory on the device, and results bit for bit those of the float weights.
"""

from __future__ import annotations

import numpy as np

from kernelforge.graph.ir import Graph, Node

__all__ = ["QPARAMS_INPUT", "keep_weights_quantized"]

QPARAMS_INPUT = {"gemm": 4, "conv2d": 4}
"""Where each op takes its ``qparams`` input (after its optional bias and residual, ``""`` where absent)."""


def keep_weights_quantized(graph: Graph) -> int:
    """Make every GEMM and conv whose weight is an unchanged quantized constant read its integers.

    Returns:
        The number of nodes changed.
    """
    changed = 0
    for node in graph.nodes:
        if node.op not in QPARAMS_INPUT or node.attrs.get("weight_quant") or len(node.inputs) < 2:
            continue
        value = graph.value(node.inputs[1])
        quant, data = value.quant, value.data
        axis = None if data is None else _channel_axis(node, data.ndim)
        if (
            quant is None
            or data is None
            or axis is None
            or quant.q.shape != data.shape
            or quant.axis not in (None, axis)
        ):
            continue
        if not np.array_equal(quant.dequantize().view(np.uint32), np.asarray(data, np.float32).view(np.uint32)):
            continue  # a pass computed with the floats (folded a batchnorm, say): they are no longer the integers
        qparams = np.stack([quant.scale, quant.zero_point.astype(np.float32)])
        at = QPARAMS_INPUT[node.op]
        node.inputs = [*node.inputs, *[""] * (at + 1 - len(node.inputs))]
        node.inputs[at] = graph.add_const(f"{node.inputs[1]}/qparams", qparams)
        node.attrs = {**node.attrs, "weight_quant": quant.dtype}
        changed += 1
    return changed


def _channel_axis(node: Node, ndim: int) -> int | None:
    """Return the weight axis of the output channels (None where the kernel reads no quantized weight)."""
    if node.op == "gemm" and ndim == 2:
        return 0 if node.attrs.get("trans_b") else 1
    if node.op == "conv2d" and ndim == 4:
        return 0
    return None
