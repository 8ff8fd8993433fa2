"""The model IR: values with static shapes, nodes of a small closed op set, and a graph in topological order.

ONNX import (:mod:`kernelforge.graph.onnx_import`) lowers every ONNX node to IR nodes; graph passes
(:mod:`kernelforge.graph.passes`) rewrite the IR; planning (:mod:`kernelforge.graph.plan`) turns each
remaining node into one kernel of an op spec (or a free view). The IR op set is closed and every attribute is
typed and validated by the importer, so passes and planning can trust it.

Every op of :data:`kernelforge.ops.OPS` is an IR op of the same name (``conv2d``, ``gemm``, ``elementwise``,
``pool2d``, ...): its node's inputs and attributes are what the op spec's ``from_node`` reads (the spec's
docstring names them), so lowering a node to a kernel needs no per-op table. Two IR ops run no kernel:

=============  ====================================  =============================================================
IR op          inputs                                attrs
=============  ====================================  =============================================================
``batchnorm``  x, scale, bias, mean, var             epsilon (float). Inference form, per channel (axis 1); the
                                                     graph passes fold it into a conv, a GEMM or an elementwise.
``reshape``    x                                     none: the output value's shape is the new shape. A view:
                                                     no kernel, the output aliases the input's buffer.
=============  ====================================  =============================================================

An omitted optional input is the empty string ``""``. Constants (initializers and folded values) are values
with ``data``; every other value is produced by exactly one node or is a graph input.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kernelforge.errors import KernelforgeError
from kernelforge.graph.quant import Quantized
from kernelforge.ops import OPS, _expr

VIEW_OPS = ("reshape",)
"""Ops that run no kernel: their output shares the input's buffer (contiguous row-major data)."""
IR_OPS = (*OPS, "batchnorm", *VIEW_OPS)
"""Every IR op: the registered ops (one kernel each), ``batchnorm`` (folded away by the passes) and the views."""


MAX_ELEMENTS = 1 << 28
"""Most elements of one tensor (1 GiB of float32): a larger one is refused, naming its node and shape, before
anything is allocated (WebGPU's default storage binding holds 128 MiB)."""


class GraphError(KernelforgeError):
    """A model graph is malformed or uses something kernelforge does not support; the message names the node."""


def check_size(shape: tuple[int, ...] | list[int], what: str) -> None:
    """Raise :class:`GraphError` naming ``what`` when a tensor of ``shape`` would exceed :data:`MAX_ELEMENTS`."""
    count = 1
    for d in shape:
        count *= int(d)
    if count > MAX_ELEMENTS:
        raise GraphError(
            f"{what}: a tensor of shape {list(shape)} has {count} elements, more than kernelforge handles "
            f"({MAX_ELEMENTS}, 1 GiB of float32)"
        )


@dataclass
class Value:
    """A tensor of the graph: float32 with a static shape; ``data`` is set for constants.

    ``layout`` is the physical axis order chosen by layout assignment: the buffer holds
    ``logical.transpose(layout)``; ``None`` means the logical row-major order. ``quant`` holds the integers a
    constant was dequantized from (:mod:`kernelforge.graph.quant`): ``data`` is their dequantization.
    """

    name: str
    shape: tuple[int, ...]
    data: np.ndarray | None = None
    layout: tuple[int, ...] | None = None
    quant: Quantized | None = None

    @property
    def is_const(self) -> bool:
        """Whether the value is a constant (initializer or folded)."""
        return self.data is not None

    @property
    def size(self) -> int:
        """Number of elements."""
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def nbytes(self) -> int:
        """Bytes as float32."""
        return 4 * self.size


@dataclass
class Node:
    """One IR op applied to named values.

    Attributes:
        name: Unique node name (the ONNX node's name, suffixed when one ONNX node becomes several).
        op: One of :data:`IR_OPS`.
        inputs: Input value names; ``""`` for an omitted optional input.
        outputs: Output value names (one for every IR op).
        attrs: The op's attributes (see the module table).
        origin: What to name in errors: the ONNX node, its op type and opset, e.g. ``Conv node 'conv1' (opset 13)``.
    """

    name: str
    op: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict[str, Any] = field(default_factory=dict)
    origin: str = ""

    @property
    def output(self) -> str:
        """The single output's name."""
        return self.outputs[0]


@dataclass
class Graph:
    """Values, nodes in topological order, graph inputs and outputs (value names).

    ``dtypes`` names the dtype of each graph input and output that is not float32 (``"int64"``, ``"bool"``,
    ``"float16"``, ...; see :mod:`kernelforge.graph.edges`): every value inside is float32, and feeds and
    results are converted at the edges.
    """

    values: dict[str, Value]
    nodes: list[Node]
    inputs: list[str]
    outputs: list[str]
    name: str = "model"
    dtypes: dict[str, str] = field(default_factory=dict)

    def dtype(self, name: str) -> str:
        """Return the edge dtype of graph input or output ``name`` (float32 unless the model says otherwise)."""
        return self.dtypes.get(name, "float32")

    def value(self, name: str) -> Value:
        """Return a value by name.

        Raises:
            GraphError: Naming the missing value.
        """
        try:
            return self.values[name]
        except KeyError:
            raise GraphError(f"graph {self.name!r}: no value named {name!r}") from None

    def const(self, name: str) -> np.ndarray | None:
        """Return a constant's data, or None when ``name`` is empty or not a constant."""
        if not name:
            return None
        value = self.values.get(name)
        return None if value is None else value.data

    def producers(self) -> dict[str, Node]:
        """Return value name -> the node that computes it."""
        return {out: node for node in self.nodes for out in node.outputs}

    def consumers(self) -> dict[str, list[Node]]:
        """Return value name -> nodes that read it (in node order; a node reading a value twice appears twice)."""
        users: dict[str, list[Node]] = {}
        for node in self.nodes:
            for name in node.inputs:
                if name:
                    users.setdefault(name, []).append(node)
        return users

    def add_const(self, name: str, data: np.ndarray) -> str:
        """Add a float32 constant under a fresh name derived from ``name`` and return that name."""
        fresh = self.fresh_name(name)
        array = np.require(data, np.float32, "C")  # ascontiguousarray would make a 0-d constant 1-d
        self.values[fresh] = Value(fresh, tuple(int(d) for d in array.shape), array)
        return fresh

    def fresh_name(self, base: str) -> str:
        """Return ``base`` or ``base_<k>`` so that no value or node has that name yet."""
        taken = set(self.values) | {n.name for n in self.nodes}
        if base not in taken:
            return base
        k = 1
        while f"{base}_{k}" in taken:
            k += 1
        return f"{base}_{k}"

    def __iter__(self) -> Iterator[Node]:
        return iter(self.nodes)

    def prune(self) -> None:
        """Drop nodes whose outputs nobody uses and values nothing refers to (keeps inputs and outputs)."""
        needed = set(self.outputs)
        kept: list[Node] = []
        for node in reversed(self.nodes):
            if any(out in needed for out in node.outputs):
                kept.append(node)
                needed.update(i for i in node.inputs if i)
        self.nodes = kept[::-1]
        needed.update(self.inputs)
        self.values = {k: v for k, v in self.values.items() if k in needed}

    def validate(self) -> None:
        """Check the invariants every pass relies on.

        Raises:
            GraphError: Naming the first node or value that breaks one: an unknown op, a read before the
                write, a value written twice, a missing value, or an output nobody computes.
        """
        known = set(self.inputs) | {k for k, v in self.values.items() if v.is_const}
        for name in (*self.inputs, *self.outputs):
            if name not in self.values:
                raise GraphError(f"graph {self.name!r}: input/output {name!r} has no value")
        for node in self.nodes:
            if node.op not in IR_OPS:
                raise GraphError(f"{node.origin or node.name}: unknown IR op {node.op!r}")
            for name in node.inputs:
                if name and name not in known:
                    raise GraphError(f"{node.origin or node.name}: input {name!r} is read before it is computed")
                if name and name not in self.values:
                    raise GraphError(f"{node.origin or node.name}: input {name!r} has no value")
            for out in node.outputs:
                if out in known:
                    raise GraphError(f"{node.origin or node.name}: output {out!r} is written twice")
                if out not in self.values:
                    raise GraphError(f"{node.origin or node.name}: output {out!r} has no value")
                known.add(out)
        for name in self.outputs:
            if name not in known:
                raise GraphError(f"graph {self.name!r}: output {name!r} is never computed")


_VNAME = re.compile(r"^v(0|[1-9][0-9]*)$")


def program_of(node: Node) -> _expr.Node:
    """Return an elementwise node's program as _expr IR whose input ``k`` is ``node.inputs[k]``.

    Raises:
        GraphError: When the program does not parse or names something other than ``v0..v{n-1}``.
    """
    try:
        tree, names = _expr.parse(node.attrs["expr"])
    except (KeyError, _expr.ExpressionError) as exc:
        raise GraphError(f"{node.origin or node.name}: elementwise attribute 'expr' is unusable: {exc}") from None
    index: list[int] = []
    for name in names:
        match = _VNAME.match(name)
        if match is None or int(match.group(1)) >= len(node.inputs):
            raise GraphError(
                f"{node.origin or node.name}: elementwise expr names {name!r}, not one of v0..v{len(node.inputs) - 1}"
            )
        index.append(int(match.group(1)))
    return remap_program(tree, index)


def remap_program(tree: _expr.Node, index: list[int]) -> _expr.Node:
    """Renumber the ``in`` leaves of ``tree``: input ``i`` becomes ``index[i]``."""
    if tree[0] == "in":
        return ("in", (index[tree[1][0]],))
    return (tree[0], tree[1], *(remap_program(child, index) for child in tree[2:]))
