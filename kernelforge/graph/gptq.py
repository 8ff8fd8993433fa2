"""Calibrated int4 weights: GPTQ rounding of each GEMM/conv weight against the inputs it sees.

Rounding every int4 weight to its nearest level (RTN) leaves an error of up to half a step in each, and on small
CNNs those errors add up through the layers until the top class changes. GPTQ (Frantar et al., "GPTQ: Accurate
Post-Training Quantization for Generative Pre-trained Transformers", 2022) rounds the K columns of a weight one
at a time and moves each column's rounding error onto the columns not yet rounded, weighted by the inverse of the
layer's input Hessian ``H = X Xᵀ`` so that the layer's *output* on those inputs moves least. The int4 format is
unchanged: values in [-7, 7], a scale per (output channel, group of K), a group's scale its largest magnitude over
7 taken when the group is reached (so it includes the error moved onto it).

:func:`calibrated_int4` walks the graph in order on the calibration inputs with the weights already rounded, so
each layer is rounded against the inputs it gets from the rounded layers before it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence, Set
from dataclasses import dataclass

import numpy as np

from kernelforge.graph.ir import Graph, Node
from kernelforge.graph.reference import evaluate, fed_inputs
from kernelforge.ops._qweight import int4_scale

__all__ = ["DAMPING", "InputStats", "calibrated_int4", "gptq_int4", "input_rows"]

DAMPING = 0.01
"""Added to H's diagonal, as a share of its mean: keeps H invertible where inputs are collinear (GPTQ's default)."""

BLOCK = 128
"""Columns rounded between two updates of the rest of the weight (a multiple of every group used)."""


def gptq_int4(weight: np.ndarray, hessian: np.ndarray, group: int) -> tuple[np.ndarray, np.ndarray]:
    """Round a ``[K, channels]`` weight to int4 against input Hessian ``[K, K]``.

    Returns:
        ``(q, scales)``: int8 values in [-7, 7] of the weight's shape and float32 scales ``[groups, channels]``,
        the weight being ``q * scales`` repeated along K (an all-zero group has scale 1).
    """
    k, channels = weight.shape
    w = np.asarray(weight, np.float64).T.copy()  # [channels, K]: GPTQ's rows are output channels
    h = np.asarray(hessian, np.float64).copy()
    dead = np.diag(h) == 0  # an input that is always zero: its weights do not matter
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    h[np.diag_indices(k)] += DAMPING * float(np.mean(np.diag(h)))
    # the upper Cholesky factor U of H^-1 (H^-1 = U^T U): row i holds how column i's error spreads to later columns
    u = np.linalg.cholesky(np.linalg.inv(h)).T
    q = np.zeros((channels, k), np.int8)
    scales = np.ones((-(-k // group), channels), np.float32)
    block = max(group, BLOCK // group * group)
    for start in range(0, k, block):
        end = min(start + block, k)
        w1, err = w[:, start:end].copy(), np.zeros((channels, end - start))
        for i in range(end - start):
            col = start + i
            if col % group == 0:  # the group lies inside this block, so w1 holds its values as updated so far
                scales[col // group] = int4_scale(np.abs(w1[:, i : i + group]).max(axis=1).astype(np.float32))
            s = scales[col // group].astype(np.float64)
            q[:, col] = np.clip(np.rint(w1[:, i] / s), -7, 7)
            e = (w1[:, i] - q[:, col] * s) / u[col, col]
            w1[:, i:] -= np.outer(e, u[col, col:end])
            err[:, i] = e
        w[:, end:] -= err @ u[start:end, end:]
    return q.T.copy(), scales


def input_rows(graph: Graph, node: Node, x: np.ndarray) -> list[np.ndarray]:
    """Return the rows ``[n, K]`` a GEMM/conv weight multiplies for input ``x``, one array per weight group.

    A GEMM's rows are A's; a conv's are its im2col patches, K ordered (input channel, kh, kw) as the weight's K
    axis; a grouped conv gives one array per group (its output channels see only that group's input channels).
    """
    if node.op == "gemm":
        return [np.asarray(x, np.float64).reshape(-1, x.shape[-1])]
    weight = graph.value(node.inputs[1]).data
    assert weight is not None
    _, cg, kh, kw = weight.shape
    (sh, sw), (dh, dw) = node.attrs.get("strides", (1, 1)), node.attrs.get("dilations", (1, 1))
    top, left, bottom, right = node.attrs.get("pads", (0, 0, 0, 0))
    n, c, hgt, wid = x.shape
    xp = np.pad(np.asarray(x, np.float64), ((0, 0), (0, 0), (top, bottom), (left, right)))
    oh = (hgt + top + bottom - dh * (kh - 1) - 1) // sh + 1
    ow = (wid + left + right - dw * (kw - 1) - 1) // sw + 1
    taps = [
        xp[:, :, i * dh : i * dh + sh * (oh - 1) + 1 : sh, j * dw : j * dw + sw * (ow - 1) + 1 : sw]
        for i in range(kh)
        for j in range(kw)
    ]
    patches = np.stack(taps, axis=2).reshape(n, c, kh * kw, oh * ow)  # [n, c, taps, positions]
    groups = c // cg
    return [patches[:, g * cg : (g + 1) * cg].transpose(0, 3, 1, 2).reshape(-1, cg * kh * kw) for g in range(groups)]


@dataclass(frozen=True)
class InputStats:
    """What one weight group's inputs were on the calibration feeds: ``X^T X`` ``[K, K]`` and the mean row ``[K]``."""

    hessian: np.ndarray
    mean: np.ndarray


Rounder = Callable[[Node, list[InputStats]], None]
"""Rounds one node's weight given its inputs' statistics (one per weight group), as :func:`calibrated_int4` walks."""


def calibrated_int4(
    graph: Graph, targets: Set[str], feeds: Sequence[Mapping[str, np.ndarray]], round_node: Rounder
) -> None:
    """Run ``graph`` on ``feeds`` in numpy, calling ``round_node`` for each node named in ``targets`` first.

    ``round_node(node, stats)`` must replace the node's weight data before the node is evaluated, so later
    layers see the rounded layer's outputs.

    Raises:
        GraphError: For a feed that lacks an input, or holds one of another shape or a dtype it does not convert to.
    """
    envs: list[dict[str, np.ndarray]] = []
    consts = {name: v.data for name, v in graph.values.items() if v.data is not None}
    for k, feed in enumerate(feeds):
        envs.append({**consts, **fed_inputs(graph, feed, f"calibration feed {k + 1}")})
    last_use = {name: i for i, node in enumerate(graph.nodes) for name in node.inputs if name}
    for index, node in enumerate(graph.nodes):
        if node.name in targets:
            hessians: list[np.ndarray] = []
            sums: list[np.ndarray] = []
            count = 0
            for env in envs:  # one feed at a time: a conv's patches are large
                rows = input_rows(graph, node, env[node.inputs[0]])
                if not hessians:
                    hessians = [np.zeros((r.shape[1], r.shape[1])) for r in rows]
                    sums = [np.zeros(r.shape[1]) for r in rows]
                for g, r in enumerate(rows):
                    hessians[g] += r.T @ r
                    sums[g] += r.sum(axis=0)
                count += len(rows[0])
            stats = [InputStats(h, m / count) for h, m in zip(hessians, sums, strict=True)]
            round_node(node, stats)
            for name in node.inputs:  # the rounded weight, and any constant round_node added (a corrected bias)
                data = graph.value(name).data if name else None
                if data is not None:
                    consts[name] = data
                    for env in envs:
                        env[name] = data
        for env in envs:
            env[node.output] = evaluate(graph, node, env)
            for name in dict.fromkeys(node.inputs):
                if name and last_use.get(name) == index and name not in consts and name not in graph.outputs:
                    env.pop(name, None)
