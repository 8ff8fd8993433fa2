"""From a model file to the graph every device runs: import, passes, wide-GEMM splitting; and its kernels."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from kernelforge.db import TuningDB
from kernelforge.devices import DeviceInfo
from kernelforge.graph.ir import Graph
from kernelforge.graph.lower import lower_node, split_wide_gemms
from kernelforge.graph.onnx_import import import_model
from kernelforge.graph.passes import optimize
from kernelforge.graph.plan import plan_graph
from kernelforge.graph.quant_weights import keep_weights_quantized, quantize_weights
from kernelforge.ops.spec import Limits

ModelSource = str | os.PathLike[str] | bytes | Any
"""A model: a path, serialized ONNX bytes or an ``onnx.ModelProto``."""


def prepare_graph(
    model: ModelSource,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    weights: str = "fp32",
    calibration: Sequence[Mapping[str, Any]] = (),
) -> Graph:
    """Import a model, run the graph passes, split GEMMs too wide for one storage binding and keep quantized weights.

    ``weights="int8"``, ``"int4"`` or ``"fp16"`` first quantizes the float GEMM and conv weights
    (:func:`quantize_weights`; int4 against ``calibration`` feeds where given); other values leave the model's
    weights as they are.

    Raises:
        GraphError: For a malformed model or unsupported nodes (all of them named at once).
    """
    graph = optimize(import_model(model, input_shapes))
    split_wide_gemms(graph)
    if weights in ("int8", "int4", "fp16"):
        quantize_weights(graph, weights, calibration=calibration)
    keep_weights_quantized(graph)
    return graph


def model_kernels(model: ModelSource, input_shapes: Mapping[str, Sequence[int]] | None = None) -> list[tuple[str, Any]]:
    """Return the distinct ``(op, problem)`` kernels a model runs after the passes (what ``tune --model`` tunes)."""
    graph = prepare_graph(model, input_shapes)
    return _distinct(c for c in (lower_node(graph, node) for node in graph.nodes) if c is not None)


def planned_kernels(
    model: ModelSource,
    info: DeviceInfo,
    language: str,
    limits: Limits,
    db: TuningDB,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
) -> list[tuple[str, Any]]:
    """Return the distinct kernels a model runs on a device as planned now, layout conversions included.

    Unlike :func:`model_kernels` this depends on the device's records: the layouts its tuned convs chose
    decide where conversion kernels go (``tune --model`` tunes those in a second round).
    """
    graph = prepare_graph(model, input_shapes)
    return _distinct(step.call for step in plan_graph(graph, info, language, limits, db).steps)


def _distinct(calls: Iterable[Any]) -> list[tuple[str, Any]]:
    """Return the distinct ``(op, problem)`` pairs of kernel calls, in first-seen order."""
    return list(dict.fromkeys((c.op, c.problem) for c in calls))
