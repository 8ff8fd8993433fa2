"""A numpy interpreter of the IR: the ground truth that graph passes and the session are checked against.

Every op that runs a kernel is evaluated by its op spec's ``reference`` on the problem :func:`lower_node`
builds, so the interpreter computes exactly what the kernels are verified against. The two ops without a
kernel are defined here: ``batchnorm`` (inference form, float64) and ``reshape`` (a view). Layouts chosen by
layout assignment are ignored: the interpreter works on logical shapes only.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from kernelforge.graph.edges import EdgeError, from_compute, to_compute
from kernelforge.graph.ir import Graph, GraphError, Node
from kernelforge.graph.lower import lower_node
from kernelforge.ops import get_op

__all__ = ["batchnorm", "evaluate", "run_graph"]


def batchnorm(
    x: np.ndarray, scale: np.ndarray, bias: np.ndarray, mean: np.ndarray, var: np.ndarray, eps: float
) -> np.ndarray:
    """Return ``(x - mean) / sqrt(var + eps) * scale + bias`` per channel (axis 1) in float64, as float32."""
    shape = (-1,) + (1,) * max(x.ndim - 2, 0)

    def channel(p: np.ndarray) -> np.ndarray:
        return np.asarray(p, np.float64).reshape(shape)

    y = (np.asarray(x, np.float64) - channel(mean)) / np.sqrt(channel(var) + eps) * channel(scale) + channel(bias)
    return y.astype(np.float32)


def evaluate(graph: Graph, node: Node, arrays: Mapping[str, np.ndarray]) -> np.ndarray:
    """Compute one node's output from its input arrays.

    Args:
        graph: The graph holding ``node`` (for value shapes and the problem).
        node: The node to evaluate.
        arrays: Value name -> array, holding at least the node's non-empty inputs (logical shapes).

    Returns:
        float32 array of the output value's shape.

    Raises:
        GraphError: Naming the node when an input array is missing or the node cannot be lowered.
    """
    missing = [name for name in node.inputs if name and name not in arrays]
    if missing:
        raise GraphError(f"{node.origin or node.name}: no array for input(s) {missing}")
    shape = graph.value(node.output).shape
    if node.op == "batchnorm":
        x, scale, bias, mean, var = (arrays[name] for name in node.inputs[:5])
        result = batchnorm(x, scale, bias, mean, var, float(node.attrs.get("epsilon", 1e-5)))
    elif node.op == "reshape":
        result = np.asarray(arrays[node.inputs[0]]).reshape(shape)
    else:
        lowered = lower_node(graph, node)
        if lowered is None:
            raise GraphError(f"{node.origin or node.name}: view op {node.op!r} has no reference")
        spec = get_op(lowered.op)
        result = spec.reference(lowered.problem, [np.asarray(arrays[name]) for name in lowered.inputs])
    return np.ascontiguousarray(result, dtype=np.float32).reshape(shape)


def fed_inputs(graph: Graph, feeds: Mapping[str, np.ndarray], what: str) -> dict[str, np.ndarray]:
    """Return the graph's fed inputs converted for computing (constant inputs may be left out of ``feeds``).

    Raises:
        GraphError: Starting with ``what``, for a missing feed, one that does not convert to its input's dtype
            exactly, or one of the wrong shape.
    """
    found = {}
    for name in graph.inputs:
        value = graph.value(name)
        if name in feeds:
            try:
                array = to_compute(name, feeds[name], graph.dtype(name))
            except EdgeError as exc:
                raise GraphError(f"{what}: {exc}") from None
            if array.shape != value.shape:
                raise GraphError(f"{what}: input {name!r} has shape {array.shape}, expected {value.shape}")
            found[name] = array
        elif not value.is_const:
            raise GraphError(f"{what}: no array fed for input {name!r}")
    return found


def run_graph(graph: Graph, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run a whole graph in numpy.

    Args:
        graph: A valid graph.
        feeds: Graph input name -> array of the input's shape (constant inputs may be left out).

    Returns:
        Graph output name -> array of the output's dtype (float32 unless the model says otherwise).

    Raises:
        GraphError: For a missing feed, a feed that does not convert to its input's dtype exactly, a feed of
            the wrong shape or a node that cannot be evaluated.
    """
    env: dict[str, np.ndarray] = {name: v.data for name, v in graph.values.items() if v.data is not None}
    env.update(fed_inputs(graph, feeds, f"graph {graph.name!r}"))
    last_use = {name: i for i, node in enumerate(graph.nodes) for name in node.inputs if name}
    keep = set(graph.outputs) | {k for k, v in graph.values.items() if v.is_const}
    for index, node in enumerate(graph.nodes):
        env[node.output] = evaluate(graph, node, env)
        # free intermediates after their last reader, so large models fit in memory
        for name in dict.fromkeys(node.inputs):
            if name and last_use.get(name) == index and name not in keep:
                env.pop(name, None)
    return {name: from_compute(env[name], graph.dtype(name)) for name in graph.outputs}
