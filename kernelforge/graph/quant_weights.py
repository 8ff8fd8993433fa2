"""Keep quantized weights quantized: GEMMs and convs whose weight a model stores as int8/uint8 read those integers.

The importer dequantizes a quantized weight to float32 (every pass works on floats) and keeps the integers in
:attr:`~kernelforge.graph.ir.Value.quant`. :func:`keep_weights_quantized` runs after the passes: a ``gemm``
whose B, or a ``conv2d`` whose W, is still exactly such a constant (no pass computed with it) and has one
scale per tensor or per output channel gets the ``weight_quant`` attribute and a ``qparams`` input, and its
kernel binds the integers and dequantizes them where it reads them (:mod:`kernelforge.ops._qweight`): a quarter
of the weight memory on the device, and results bit for bit those of the float weights.

:func:`quantize_weights` with ``"int4"`` marks the nodes itself: int4 weights have a scale per K group, which
:class:`~kernelforge.graph.quant.Quantized` (a scale per tensor or channel) does not describe; so does ``"fp16"``:
float16 weights have no scales, the rounded constant is the weight.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence

import numpy as np

from kernelforge.graph.gptq import InputStats, calibrated_int4, gptq_int4
from kernelforge.graph.ir import Graph, Node, Value
from kernelforge.graph.quant import Quantized
from kernelforge.ops._qweight import FLOAT16, from_k_by_channel, int4_expand, int4_scales, k_by_channel

__all__ = ["INT4_GROUP", "QPARAMS_INPUT", "WEIGHT_FORMATS", "keep_weights_quantized", "quantize_weights"]

WEIGHT_FORMATS = ("fp32", "fp16", "int8", "int4")
"""How a bundle stores weights: float32, or float16/int8/int4 that GEMM and conv kernels read (other constants of
an fp16 bundle are float16 widened at load)."""

INT4_GROUP = 32
"""K values that share one int4 scale (per output channel), as GPTQ/AWQ-style weight-only int4 groups them."""

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


def quantize_weights(
    graph: Graph,
    fmt: str = "int8",
    group: int = INT4_GROUP,
    calibration: Sequence[Mapping[str, np.ndarray]] = (),
) -> int:
    """Quantize every float GEMM B and conv W constant to ``fmt`` (int8, int4, or fp16: see :func:`_to_float16`).

    int4: values in [-7, 7], one scale per (output channel, ``group`` consecutive K values), see
    :func:`_quantize_int4` (a weight with fewer than ``group`` K values per channel: int8); given
    ``calibration`` feeds (graph input name -> array), rounded by GPTQ against the
    inputs each layer sees on them (:mod:`kernelforge.graph.gptq`), else each to its nearest level. int8, one
    scale per output channel:

    The constant's data becomes the dequantized values (what every kernel and reference then computes with) and
    its integers go to :attr:`~kernelforge.graph.ir.Value.quant`, so :func:`keep_weights_quantized` makes the
    kernels read them. Symmetric (zero point 0) over [-127, 127], as TF Lite and ONNX Runtime quantize weights:
    the scale is a channel's largest magnitude over 127; an all-zero channel gets scale 1. Run it after the
    passes (a folded batchnorm changes W) and before :func:`keep_weights_quantized`.

    Returns:
        The number of constants quantized.

    Raises:
        ValueError: For a format other than int8, int4 and fp16.
    """
    if fmt == "int4":
        # a weight with fewer than ``group`` K values per channel (a depthwise 3x3's 9, the first conv's 27) has
        # no whole group: it is a few bytes per channel and int4 noise costs it most, so it is int8 instead
        small = _quantize_int8(graph, lambda data, axis: data.size // data.shape[axis] < group)
        return small + _quantize_int4(graph, group, calibration) + _quantize_tables(graph)
    if fmt == "fp16":
        return _to_float16(graph)
    if fmt != "int8":
        raise ValueError(f"weights can be quantized to int8, int4 or fp16, not {fmt!r}")
    return _quantize_int8(graph) + _quantize_tables(graph)


def _quantize_int8(graph: Graph, only: Callable[[np.ndarray, int], bool] | None = None) -> int:
    """int8 :func:`quantize_weights` of the constants ``only(data, channel_axis)`` accepts (None: all)."""
    done: set[str] = set()
    for node, value, data, axis in _float_weights(graph):
        if node.inputs[1] in done or not np.isfinite(data).all() or (only is not None and not only(data, axis)):
            continue
        _set_int8(value, data, axis)
        done.add(node.inputs[1])
    return len(done)


def _set_int8(value: Value, data: np.ndarray, axis: int) -> None:
    """Make a constant symmetric int8 along ``axis`` (a scale per index: its largest magnitude / 127, zero: 1)."""
    others = tuple(a for a in range(data.ndim) if a != axis)
    peak = np.abs(data).max(axis=others) if others else np.abs(data)
    scale = np.where(peak > 0, peak / 127, 1).astype(np.float32)
    shape = [-1 if a == axis else 1 for a in range(data.ndim)]
    q = np.clip(np.rint(data / scale.reshape(shape)), -127, 127).astype(np.int8)
    value.quant = Quantized(q, scale, np.zeros(scale.shape, np.int8), axis)
    value.data = value.quant.dequantize()


TABLE_MIN = 4096
"""Values a gathered table needs before int8/int4 weights store it as int8 (an embedding; not a small lookup)."""


def _quantize_tables(graph: Graph) -> int:
    """Quantize every large float table a ``gather`` reads (embeddings) to int8, one scale per row.

    A bundle then stores the integers and the runtime dequantizes them at load (FORMAT.md, constants with a
    ``scale``): in a text encoder the embedding table is most of the bytes, and only the rows a run gathers are
    read, so GPU memory keeps floats while the download shrinks to a quarter. The constant's data becomes the
    dequantized values, what every kernel and reference then computes with. Symmetric over [-127, 127], as
    onnxruntime's dynamic quantization of Gather does.

    Returns:
        The number of tables quantized.
    """
    done = 0
    for node in graph.nodes:
        if node.op != "gather" or not node.inputs[0]:
            continue
        value = graph.value(node.inputs[0])
        data = value.data
        if data is None or value.quant is not None or data.ndim < 2 or data.size < TABLE_MIN:
            continue
        if data.dtype != np.float32 or not np.isfinite(data).all():
            continue
        _set_int8(value, data, 0)
        done += 1
    return done


def _quantize_int4(graph: Graph, group: int, calibration: Sequence[Mapping[str, np.ndarray]]) -> int:
    """Make every float GEMM B and conv W constant int4 values read by its kernels.

    The scale of (channel, group) is the group's largest magnitude over 7 (an all-zero group: 1); the constant's
    data becomes ``q * scale`` rounded once to float32 (what every reference then computes with), and each
    node reading it gets ``weight_quant="int4"``, ``weight_group`` and the scales as its ``qparams`` input.
    Without calibration feeds each value rounds to its nearest level; with them, GPTQ rounds each constant (at
    its first reader) against that reader's inputs.

    Returns:
        The number of constants quantized.
    """
    first: dict[tuple[str, int], Node] = {}
    readers: list[Node] = []
    for node, _, data, axis in _float_weights(graph):
        name = node.inputs[1]
        if (name, axis) not in first:
            if not np.isfinite(data).all() or any(n == name for n, _ in first):
                continue  # non-finite, or a constant another node reads along another channel axis
            first[(name, axis)] = node
        readers.append(node)
    scales: dict[str, np.ndarray] = {}

    def set_int4(node: Node, q: np.ndarray, s: np.ndarray, axis: int) -> None:
        value = graph.value(node.inputs[1])
        full = int4_expand(s, q.shape, axis, group)
        value.data = np.asarray(q.astype(np.float32) * full, np.float32)  # one rounding, as in the kernels
        scales[node.inputs[1]] = s

    def gptq(node: Node, stats: list[InputStats]) -> None:
        w = np.asarray(graph.value(node.inputs[1]).data, np.float32)
        axis = _channel_axis(node, w.ndim)
        assert axis is not None
        kc = k_by_channel(w, axis)
        per = kc.shape[1] // len(stats)  # a grouped conv: each weight group's channels see their own inputs
        parts = [gptq_int4(kc[:, g * per : (g + 1) * per], st.hessian, group) for g, st in enumerate(stats)]
        q = from_k_by_channel(np.concatenate([q for q, _ in parts], axis=1), w.shape, axis)
        set_int4(node, q, np.concatenate([s for _, s in parts], axis=1), axis)
        # bias correction (Nagel et al., "Data-Free Quantization", 2019): what rounding moves each output by on
        # average, over the calibration inputs, goes back into the bias
        moved_by = k_by_channel(np.asarray(graph.value(node.inputs[1]).data, np.float64), axis) - kc
        shift = np.concatenate([st.mean @ moved_by[:, g * per : (g + 1) * per] for g, st in enumerate(stats)])
        _add_to_bias(graph, node, -shift)

    if calibration:
        calibrated_int4(graph, {node.name for node in first.values()}, calibration, gptq)
    for (name, axis), node in first.items():
        if name not in scales:
            w = np.asarray(graph.value(name).data, np.float32)
            s = int4_scales(w, axis, group)
            q = np.clip(np.rint(w / int4_expand(s, w.shape, axis, group)), -7, 7).astype(np.int8)  # no -0.0
            set_int4(node, q, s, axis)
    consts = {name: graph.add_const(f"{name}/qparams", s) for name, s in scales.items()}
    for node in readers:
        at = QPARAMS_INPUT[node.op]
        node.inputs = [*node.inputs, *[""] * (at + 1 - len(node.inputs))]
        node.inputs[at] = consts[node.inputs[1]]
        node.attrs = {**node.attrs, "weight_quant": "int4", "weight_group": group}
    return len(first)


def _add_to_bias(graph: Graph, node: Node, shift: np.ndarray) -> None:
    """Add ``shift`` (one value per output channel) to a GEMM/conv's bias, as a new constant (given none: the shift)."""
    bias = node.inputs[2] if len(node.inputs) > 2 else ""
    data = np.zeros(shift.shape, np.float64) if not bias else np.asarray(graph.value(bias).data, np.float64)
    name = graph.add_const(f"{node.name}/bias", (data + shift).astype(np.float32))
    node.inputs = [*node.inputs[:2], name, *node.inputs[3:]]


def _to_float16(graph: Graph) -> int:
    """Make every float GEMM B and conv W constant float16 values read by its kernels.

    The constant's data becomes its float16 rounding, widened (what every reference then computes with, bit for
    bit the halves the kernels read), and each node reading it gets ``weight_quant="float16"`` (no ``qparams``).
    Left as they are: integer weights (:func:`keep_weights_quantized` keeps them), non-finite ones and those
    beyond float16's range (rounding would make them infinite).

    Returns:
        The number of constants rounded.
    """
    done: set[str] = set()
    for node, value, data, _ in _float_weights(graph):
        name = node.inputs[1]
        if name not in done:
            half = np.asarray(data, np.float32).astype(np.float16)
            if not np.isfinite(half).all():
                continue  # non-finite, or beyond float16's range: float32 it stays
            value.data = half.astype(np.float32)
            done.add(name)
        node.attrs = {**node.attrs, "weight_quant": FLOAT16}
    return len(done)


def _float_weights(graph: Graph) -> Iterator[tuple[Node, Value, np.ndarray, int]]:
    """Yield each GEMM/conv node not yet marked, whose weight is a float constant: its value, data and channel axis."""
    for node in graph.nodes:
        if node.op not in QPARAMS_INPUT or len(node.inputs) < 2 or node.attrs.get("weight_quant"):
            continue
        value = graph.value(node.inputs[1])
        data = value.data
        axis = None if data is None else _channel_axis(node, data.ndim)
        if data is not None and axis is not None and value.quant is None:
            yield node, value, data, axis


def _channel_axis(node: Node, ndim: int) -> int | None:
    """Return the weight axis of the output channels (None where the kernel reads no quantized weight)."""
    if node.op == "gemm" and ndim == 2:
        return 0 if node.attrs.get("trans_b") else 1
    if node.op == "conv2d" and ndim == 4:
        return 0
    return None
