"""LayerNormalization written out, as exporters below opset 17 emit it, fused back into one ``layernorm`` kernel.

After the elementwise fusion the decomposed form is five kernels::

    m = reduce_mean(x, trailing axes)      d = x - m          p = d ** 2 (or d * d)
    v = reduce_mean(p, the same axes)      y = f(d, v, gamma?, beta?)

where ``f`` is ``d / sqrt(v + eps) * gamma + beta`` in whatever form the exporter chose (a Div or a Mul by a
reciprocal, gamma and beta folded in or absent). ``f`` is recognised by value: its epsilon, gamma and beta are
solved from a few evaluations and the whole program is then checked against the layer norm formula on random
values; the intermediates must have no other reader. The result is one kernel (the ONNX op's) instead of five,
and one read of x instead of three.
"""

from __future__ import annotations

import numpy as np

from kernelforge.errors import ShapeError
from kernelforge.graph.ir import Graph, Node, program_of
from kernelforge.ops import _expr
from kernelforge.ops.layernorm import f32_epsilon

__all__ = ["fuse_layernorm"]


def _square(node: Node) -> bool:
    """Whether an elementwise node of one input squares it."""
    probe = np.linspace(-3.0, 3.0, 13)
    with np.errstate(all="ignore"):
        got = np.asarray(_expr.evaluate(program_of(node), [probe]), np.float64)
    return got.shape == probe.shape and np.allclose(got, probe * probe, rtol=1e-7, atol=1e-12)


def _mean_over_tail(node: Node | None, rank: int) -> tuple[int, ...] | None:
    """Return the axes of a trailing-axes mean reduction, else None."""
    if node is None or node.op != "reduce" or node.attrs.get("kind") != "mean":
        return None
    axes = node.attrs.get("axes")
    axes = tuple(range(rank)) if axes is None else tuple(sorted(a % rank for a in axes))
    return axes if axes == tuple(range(rank - len(axes), rank)) else None


def _solve(
    graph: Graph, node: Node, k_d: int, k_v: int, channels: tuple[int, ...]
) -> tuple[float, np.ndarray, np.ndarray] | None:
    """Return (eps, gamma, beta) over the normalised shape if ``node`` computes d / sqrt(v + eps) * gamma + beta.

    ``d`` is input ``k_d`` and ``v`` input ``k_v``; every other input must be a constant that broadcasts over
    the normalised axes alone.
    """
    tree = program_of(node)
    consts: dict[int, np.ndarray] = {}
    for k, name in enumerate(node.inputs):
        if k in (k_d, k_v):
            continue
        data = graph.value(name).data
        if data is None:
            return None
        shape = np.shape(data)
        if any(d != 1 for d in shape[: max(0, len(shape) - len(channels))]):
            return None
        consts[k] = np.asarray(data, np.float64).reshape(shape[max(0, len(shape) - len(channels)) :])
    size = int(np.prod(channels))

    def f(d: np.ndarray, v: np.ndarray) -> np.ndarray:
        given = {**consts, k_d: d.reshape(channels), k_v: v.reshape((1,) * len(channels))}
        arrays = [given[k] for k in range(len(node.inputs))]
        with np.errstate(all="ignore"):
            out = np.asarray(_expr.evaluate(tree, arrays), np.float64)
        return np.broadcast_to(out, channels).reshape(-1)

    ones, zeros = np.ones(size), np.zeros(size)
    try:
        beta = f(zeros, np.ones(1))
        at0, at1 = f(ones, np.zeros(1)) - beta, f(ones, np.ones(1)) - beta
    except ValueError:  # constants that do not broadcast over the normalised axes
        return None
    usable = np.abs(at1) > 1e-12
    if not usable.any():
        return None
    ratio = float(np.median(at0[usable] / at1[usable]))
    if not np.isfinite(ratio) or ratio <= 1.0:
        return None
    eps = 1.0 / (ratio * ratio - 1.0)
    gamma = at1 * np.sqrt(1.0 + eps)
    rng = np.random.default_rng(0)
    for _ in range(3):
        d, v = rng.standard_normal(size), rng.uniform(0.1, 4.0, 1)
        want = d / np.sqrt(v + eps) * gamma + beta
        if not np.allclose(f(d, v), want, rtol=1e-5, atol=1e-6 * max(1.0, float(np.abs(want).max()))):
            return None
    return eps, gamma.reshape(channels), beta.reshape(channels)


def fuse_layernorm(graph: Graph) -> Graph:
    """Replace each written-out layer normalisation (see the module) by one ``layernorm`` node."""
    producers, consumers = graph.producers(), graph.consumers()
    outputs = set(graph.outputs)

    def only(name: str, reader: Node) -> bool:
        return name not in outputs and [n.name for n in consumers.get(name, [])] == [reader.name]

    for node in list(graph.nodes):
        if node.op != "elementwise" or len(node.inputs) < 2:
            continue
        computed = [k for k, name in enumerate(node.inputs) if not graph.value(name).is_const]
        if len(computed) != 2:
            continue
        k_v, k_d = sorted(computed, key=lambda k: getattr(producers.get(node.inputs[k]), "op", "") != "reduce")
        d_node, r2 = producers.get(node.inputs[k_d]), producers.get(node.inputs[k_v])
        if d_node is None or d_node.op != "elementwise" or len(d_node.inputs) != 2 or r2 is None:
            continue
        x, mean = d_node.inputs
        shape = graph.value(x).shape
        axes = _mean_over_tail(producers.get(mean), len(shape))
        if axes is None or _mean_over_tail(r2, len(shape)) != axes or producers[mean].inputs[0] != x:
            continue
        p_node = producers.get(r2.inputs[0])
        if p_node is None or p_node.op != "elementwise" or p_node.inputs != [d_node.output] or not _square(p_node):
            continue
        if program_of(d_node) != ("sub", (), ("in", (0,)), ("in", (1,))):
            continue
        d_readers = sorted(n.name for n in consumers.get(d_node.output, []))
        if d_node.output in outputs or d_readers != sorted([p_node.name, node.name]):
            continue
        if not (only(mean, d_node) and only(p_node.output, r2) and only(r2.output, node)):
            continue
        channels = shape[axes[0] :]
        solved = _solve(graph, node, k_d, k_v, channels)
        if solved is None:
            continue
        eps, gamma, beta = solved
        try:
            epsilon = f32_epsilon(eps)
        except ShapeError:
            continue
        scale = graph.add_const(f"{node.output}_scale", gamma.astype(np.float32))
        bias = graph.add_const(f"{node.output}_bias", beta.astype(np.float32))
        attrs = {"axis": axes[0], "epsilon": epsilon}
        fused = Node(node.name, "layernorm", [x, scale, bias], [node.output], attrs, node.origin)
        dead = {producers[mean].name, d_node.name, p_node.name, r2.name}
        graph.nodes = [fused if n is node else n for n in graph.nodes if n.name not in dead]
        producers, consumers = graph.producers(), graph.consumers()
    graph.prune()
    return graph
