"""The state ONNX import shares with its op converters, and the shape arithmetic of the shape ops.

Converters (:mod:`kernelforge.graph.onnx_ops`) see the model through a :class:`Context`: an ONNX tensor
name resolves either to a folded constant (a numpy array of any dtype: integer tensors stay integers for
shape arithmetic, apart from the float32 IR) or to an IR value. Constants become float32 IR values only
when a node reads them as tensors. A tensor with a dim of 0 holds no values, so it is known at load whatever
computes it: every one is a constant (:meth:`Context.empty`), and the nodes that read it fold.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import onnx
from onnx import helper

from kernelforge.errors import ShapeError
from kernelforge.graph.dtypes import NARROW_ELEMS, kind, numpy_dtype
from kernelforge.graph.edges import edge_dtype
from kernelforge.graph.ir import Graph, GraphError, Node, Value, check_size
from kernelforge.graph.quant import Quantized
from kernelforge.ops import get_op
from kernelforge.ops._expr import broadcast_shape
from kernelforge.ops.eltwise import EltwiseProblem

_INTEGER_TYPES = {
    onnx.TensorProto.INT8, onnx.TensorProto.INT16, onnx.TensorProto.INT32, onnx.TensorProto.INT64,
    onnx.TensorProto.UINT8, onnx.TensorProto.UINT16, onnx.TensorProto.UINT32, onnx.TensorProto.UINT64,
    *(elem for elem, name in NARROW_ELEMS.items() if kind(numpy_dtype(name)) in "iu"),
}  # fmt: skip


class NodeUnsupported(Exception):
    """A node uses something kernelforge does not support; the argument is the reason (without the node)."""


class Context:
    """Import state shared by the converters: the IR graph being built and where each ONNX name lives."""

    def __init__(self, graph: Graph, opset: int, reserved: set[str], used: set[str] | None = None) -> None:
        self.graph = graph
        self.opset = opset
        self.consts: dict[str, np.ndarray] = {}
        """ONNX name -> folded constant (any dtype; integers stay integers for shape arithmetic)."""
        self.names: dict[str, str] = {}
        self.quantized: dict[str, Quantized] = {}
        """ONNX name of a folded constant -> the integers it was dequantized from (kept for bundles)."""
        """ONNX name -> IR value name of a runtime tensor (aliases map to their source)."""
        self.reserved = reserved
        """Every ONNX tensor name: intermediate IR names must not take one a later node writes."""
        self.used = reserved if used is None else used
        """ONNX names a live node or a graph output reads (a node's other outputs need no kernel)."""
        self.types: dict[str, int] = {}
        """ONNX name -> element type (``onnx.TensorProto`` enum) where the model or shape inference says it."""
        self._materialized: dict[str, str] = {}
        self._node_names: set[str] = set()
        self.node = onnx.NodeProto()
        self.origin = ""
        self._base = ""
        self._pending: list[Node] = []

    # --- per-node bookkeeping -------------------------------------------------------------------------------

    def begin(self, node: onnx.NodeProto, display: str, opset: int) -> None:
        """Start converting ``node`` (``display`` is its name, or ``<OpType>_<index>`` when it has none)."""
        self.node = node
        self._base = display
        self.origin = f"{node.op_type} node '{display}' (opset {opset})"
        self._pending = []

    def finish(self) -> None:
        """Name the IR nodes the current ONNX node made (``name``, or ``name:0``, ``name:1``...) and add them."""
        several = len(self._pending) > 1
        for k, ir_node in enumerate(self._pending):
            base = f"{self._base}:{k}" if several else self._base
            name, j = base, 1
            while name in self._node_names:
                name, j = f"{base}_{j}", j + 1
            self._node_names.add(name)
            ir_node.name = name
            self.graph.nodes.append(ir_node)
        self._pending = []

    def fail(self, message: str) -> GraphError:
        """Return a :class:`GraphError` naming the current node."""
        return GraphError(f"{self.origin}: {message}")

    # --- reading the node -----------------------------------------------------------------------------------

    def attr(self, name: str, default: Any = None) -> Any:
        """Return an attribute's value (strings decoded), or ``default`` when the node does not set it."""
        for attribute in self.node.attribute:
            if attribute.name == name:
                value = helper.get_attribute_value(attribute)
                if isinstance(value, bytes):
                    return value.decode()
                if isinstance(value, list) and value and isinstance(value[0], bytes):
                    return [v.decode() for v in value]
                return value
        return default

    def input(self, k: int) -> str:
        """Return input ``k``'s ONNX name, ``""`` when it is absent."""
        return self.node.input[k] if k < len(self.node.input) else ""

    def const(self, name: str) -> np.ndarray | None:
        """Return the folded constant of an ONNX name, None when it is empty or a runtime tensor."""
        return self.consts.get(name) if name else None

    def const_ints(self, k: int, what: str) -> list[int] | None:
        """Return input ``k`` as a list of ints (None when absent); a runtime tensor is unsupported."""
        name = self.input(k)
        if not name:
            return None
        data = self.const(name)
        if data is None:
            raise NodeUnsupported(f"{what} (input {k}) needs a runtime value; only constant {what} is supported")
        return [int(v) for v in np.asarray(data).reshape(-1)]

    def axes(self, k: int, since: int) -> list[int] | None:
        """Return the ``axes`` of the node: attribute before opset ``since``, input ``k`` from it on."""
        if self.opset >= since:
            return self.const_ints(k, "axes")
        value = self.attr("axes")
        return None if value is None else [int(a) for a in value]

    def is_integer(self, name: str) -> bool:
        """Return whether an ONNX tensor holds integers (its declared or inferred type, or a constant's dtype)."""
        data = self.const(name)
        if data is not None:
            return kind(data.dtype) in "iu"
        return self.types.get(name) in _INTEGER_TYPES

    def shape(self, name: str) -> tuple[int, ...]:
        """Return the static shape of an ONNX tensor."""
        data = self.const(name)
        if data is not None:
            return tuple(int(d) for d in data.shape)
        return self.graph.values[self.ir(name)].shape

    def ir(self, name: str) -> str:
        """Return the IR value of an ONNX name, materialising a constant as a float32 IR constant once."""
        if name in self.names:
            return self.names[name]
        data = self.const(name)
        if data is None:
            raise self.fail(f"input {name!r} is not computed by any earlier node nor a graph input")
        if name not in self._materialized:
            if kind(data.dtype) not in "fiub":  # the narrow types of .dtypes widen exactly
                raise self.fail(f"constant {name!r} of dtype {data.dtype} cannot be a float tensor")
            fresh = name if name not in self.graph.values else self.fresh(name)
            self._materialized[name] = self.graph.add_const(fresh, data.astype(np.float32, copy=False))
            self.graph.values[self._materialized[name]].quant = self.quantized.get(name)
        return self._materialized[name]

    # --- building IR ----------------------------------------------------------------------------------------

    def fresh(self, base: str) -> str:
        """Return a new IR value name from ``base`` that no ONNX tensor or IR value/node has."""
        name = self.graph.fresh_name(base)
        k = 1
        while name in self.reserved:
            name = self.graph.fresh_name(f"{base}_{k}")
            k += 1
        return name

    def add_const(self, base: str, data: np.ndarray) -> str:
        """Add a float32 IR constant under a fresh name and return it."""
        return self.graph.add_const(self.fresh(base), data)

    def kernel_problem(self, op: str, inputs: Sequence[str], attrs: Mapping[str, Any]) -> Any:
        """Return the problem a node of registered op ``op`` would run (its spec's ``from_node``).

        Raises:
            GraphError: Naming the current node when the shapes or attributes do not fit the op.
        """
        shapes = [self.graph.values[name].shape if name else None for name in inputs]
        self._check_values(op, inputs)
        try:
            return get_op(op).from_node(shapes, attrs)
        except (ShapeError, KeyError, TypeError, ValueError) as exc:
            raise self.fail(str(exc)) from None

    def emit(
        self,
        op: str,
        inputs: Sequence[str],
        attrs: dict[str, Any],
        shape: Sequence[int] | None = None,
        out: str | None = None,
    ) -> str:
        """Append an IR node writing ``out`` (the ONNX output name) or a fresh intermediate; return its value.

        ``shape`` is the output's; left out for a registered op, the op spec computes it (checking the node).
        """
        if shape is None:
            shape = get_op(op).output_shape(self.kernel_problem(op, inputs, attrs))
        name = out if out is not None else self.fresh(f"{self.node.output[0]}_{op}")
        dims = tuple(int(d) for d in shape)
        if any(d < 0 for d in dims):
            raise self.fail(f"{op} output {name!r} would have the shape {dims}")
        if 0 in dims:  # no values to compute: a constant, and no kernel
            return self._no_values(dims, out)
        self._check_values(op, inputs)
        check_size(dims, f"{self.origin}: {op} output {name!r}")
        self.graph.values[name] = Value(name, dims)
        self._pending.append(Node("", op, list(inputs), [name], attrs, self.origin))
        if out is not None:
            self.names[out] = name
        return name

    def _check_values(self, op: str, inputs: Sequence[str]) -> None:
        """Refuse a kernel that would read an empty tensor (such a node folds, or skips it as Concat does)."""
        for k, name in enumerate(inputs):
            if name and 0 in self.graph.values[name].shape:
                shape = self.graph.values[name].shape
                raise self.fail(
                    f"{op} input {k} ({name!r}) is empty (shape {shape}): no kernel reads an empty tensor (a node "
                    "reading one must fold at load, or skip it as Concat does)"
                )

    def _no_values(self, dims: tuple[int, ...], out: str | None) -> str:
        """Return the IR constant of an empty result: ONNX ``out`` (an empty constant) or an intermediate."""
        if out is None:
            return self.add_const(f"{self.node.output[0]}_empty", np.zeros(dims, np.float32))
        self.empty(out, dims)
        return self.ir(out)

    def empty(self, out: str, shape: Sequence[int]) -> None:
        """Make ONNX ``out`` the constant of ``shape`` (with a dim of 0), of its element type where it is known.

        A tensor with no values is known at load whatever computes it, so the nodes that read it fold.
        """
        elem = self.types.get(out)
        dtype = edge_dtype(elem) if elem is not None else None
        self.consts[out] = np.zeros(tuple(shape), np.float32 if dtype is None else numpy_dtype(dtype))

    def reshape(self, ir_name: str, shape: Sequence[int], out: str | None = None) -> str:
        """Return ``ir_name`` viewed as ``shape``: a ``reshape`` node (a folded constant for a constant)."""
        value = self.graph.values[ir_name]
        if tuple(shape) == value.shape and out is None:
            return ir_name
        if value.data is not None and out is None:
            return self.add_const(ir_name, value.data.reshape(shape))
        return self.emit("reshape", [ir_name], {}, shape, out)

    def alias(self, out: str, source: str) -> None:
        """Make ONNX ``out`` the same tensor as ONNX ``source`` (no node)."""
        if source in self.names:
            self.names[out] = self.names[source]
        else:
            self.consts[out] = self.consts[source]
            if source in self.quantized:
                self.quantized[out] = self.quantized[source]

    def elementwise(self, inputs: Sequence[str], build: Callable[[list[str]], str], out: str | None = None) -> str:
        """Emit one ``elementwise`` node over ONNX ``inputs``.

        ``build`` gets one operand text per input (``v<k>``, or a literal for a scalar constant that does not
        widen the output) and returns the program. Repeated inputs share one operand.
        """
        shapes = [self.shape(n) for n in inputs]
        full = broadcast_shape({str(k): s for k, s in enumerate(shapes)})
        if 0 in full:
            return self._no_values(tuple(full), out)
        atoms: list[str] = [""] * len(inputs)
        kept: list[int] = []
        for k, name in enumerate(inputs):
            data = self.const(name)
            others = [s for j, s in enumerate(shapes) if j != k and not atoms[j]]
            if (
                data is not None
                and data.size == 1
                and others
                and math.isfinite(float(data.reshape(-1)[0]))
                and broadcast_shape({str(j): s for j, s in enumerate(others)}) == full
            ):
                atoms[k] = literal(float(data.reshape(-1)[0]))
            else:
                kept.append(k)
        ir_inputs: list[str] = []
        for k in kept:
            ir_name = self.ir(inputs[k])
            if ir_name not in ir_inputs:
                ir_inputs.append(ir_name)
            atoms[k] = f"v{ir_inputs.index(ir_name)}"
        if not ir_inputs:  # every input was a literal (only when one const is its own output shape)
            ir_inputs, atoms[0] = [self.ir(inputs[0])], "v0"
        expr = build(atoms)
        shape_map = {f"v{j}": self.graph.values[n].shape for j, n in enumerate(ir_inputs)}
        try:
            problem = EltwiseProblem.from_text(expr, shape_map)
        except ShapeError as exc:
            raise self.fail(str(exc)) from None
        shape = broadcast_shape(dict(zip(problem.names, problem.shapes, strict=True)))
        return self.emit("elementwise", ir_inputs, {"expr": expr}, shape, out)


def literal(value: float) -> str:
    """Return a float literal for an expression (negative ones parenthesised)."""
    text = repr(float(np.float32(value)))
    return f"({text})" if text.startswith("-") else text


# --- shape arithmetic shared with constant folding ----------------------------------------------------------


def norm_axis(axis: int, rank: int, what: str = "axis") -> int:
    """Return ``axis`` in ``0 .. rank-1``; raises ValueError when out of range."""
    if not -rank <= axis < rank:
        raise ValueError(f"{what} {axis} is out of range for rank {rank}")
    return axis % rank


def reshape_target(shape: Sequence[int], target: Sequence[int], allowzero: int) -> tuple[int, ...]:
    """Return ONNX Reshape's output shape: ``0`` copies the input dim (unless allowzero), ``-1`` is inferred."""
    out = [int(shape[i]) if d == 0 and not allowzero and i < len(shape) else int(d) for i, d in enumerate(target)]
    total = math.prod(shape)
    if out.count(-1) > 1 or any(d < -1 for d in out):
        raise ValueError(f"invalid Reshape target {list(target)}")
    if -1 in out:
        known = math.prod(d for d in out if d != -1)
        if known == 0 or total % known:
            raise ValueError(f"cannot reshape {tuple(shape)} to {list(target)}")
        out[out.index(-1)] = total // known
    if math.prod(out) != total:
        raise ValueError(f"cannot reshape {tuple(shape)} ({total} elements) to {list(target)}")
    return tuple(out)


def squeeze_shape(shape: Sequence[int], axes: Sequence[int] | None) -> tuple[int, ...]:
    """Return the shape without ``axes`` (all size-1 axes when None); each must have size 1."""
    if axes is None:
        return tuple(d for d in shape if d != 1)
    drop = {norm_axis(a, len(shape)) for a in axes}
    if any(shape[a] != 1 for a in drop):
        raise ValueError(f"Squeeze axes {list(axes)} of shape {tuple(shape)} are not all of size 1")
    return tuple(d for i, d in enumerate(shape) if i not in drop)


def unsqueeze_shape(shape: Sequence[int], axes: Sequence[int]) -> tuple[int, ...]:
    """Return the shape with size-1 axes inserted at ``axes`` (positions in the output)."""
    rank = len(shape) + len(axes)
    add = sorted({norm_axis(a, rank) for a in axes})
    if len(add) != len(axes):
        raise ValueError(f"Unsqueeze axes {list(axes)} repeat an axis")
    out, rest = [], iter(shape)
    for i in range(rank):
        out.append(1 if i in add else next(rest))
    return tuple(out)


def flatten_shape(shape: Sequence[int], axis: int) -> tuple[int, int]:
    """Return Flatten's 2-D shape at ``axis`` (``0 .. rank``; negative counts from the end)."""
    if not -len(shape) <= axis <= len(shape):
        raise ValueError(f"Flatten axis {axis} is out of range for rank {len(shape)}")
    if axis < 0:
        axis += len(shape)
    return math.prod(shape[:axis]), math.prod(shape[axis:])


Converter = Callable[[Context, onnx.NodeProto], None]
"""An ONNX op converter: lowers the context's current node to IR nodes (or folds it)."""
