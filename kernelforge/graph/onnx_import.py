"""ONNX import: load a model, fix every shape statically, fold shape arithmetic and lower nodes to the IR.

:func:`import_model` checks the whole model before converting anything: an unsupported op, attribute value,
domain or dtype anywhere makes one :class:`UnsupportedModelError` that lists every such node. Shape
subgraphs (``Shape -> Gather -> Concat -> Reshape`` and the like) are evaluated in numpy at import
(:mod:`.onnx_fold`), since every shape is static; the per-op lowering lives in :mod:`.onnx_ops`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from kernelforge.graph.dtypes import kind as kind_of
from kernelforge.graph.edges import EDGE_DTYPES, MAX_EXACT_INT, edge_dtype
from kernelforge.graph.ir import Graph, GraphError, Value, check_size
from kernelforge.graph.onnx_context import Context, NodeUnsupported
from kernelforge.graph.onnx_fold import ALWAYS_FOLD, CONST_INPUTS, CONSTANT_VALUES, FOLDERS, value_inputs
from kernelforge.graph.onnx_functions import EXPANDED_OPS, EXPANDED_WHEN_REFUSED, expand
from kernelforge.graph.onnx_ops import CONVERTERS, DIRECT, node_attrs
from kernelforge.graph.onnx_quant import CHECKS as QUANT_CHECKS
from kernelforge.graph.onnx_quant import carry_quantized
from kernelforge.graph.onnx_resize import check_resize
from kernelforge.graph.onnx_windows import is_3d, split_3d_attrs
from kernelforge.ops import get_op
from kernelforge.ops._attrs import AUTO_PADS
from kernelforge.ops.pad import MODES as PAD_MODES

__all__ = ["MAX_OPSET", "MIN_OPSET", "ModelError", "UnsupportedModelError", "import_model"]

MIN_OPSET = 1
"""Models of any opset load; below :data:`FULL_OPSET` only nodes whose op is the same as at FULL_OPSET do."""
FULL_OPSET = 9
"""The oldest opset whose every supported op is converted as its schema of that opset defines."""
MAX_OPSET = 28
"""The newest opset onnx 1.23 defines. Ops kernelforge runs changed in 22-28 only by new types (bfloat16, float8,
int4), Mod (float inputs with fmod=0: floor modulo, as ``onnx_elementwise`` converts it) and Range (``stash_type``, for
float16 only); ``tests/null/test_onnx_import.py`` checks this against the installed onnx."""
_DEFAULT_DOMAINS = ("", "ai.onnx")


class ModelError(GraphError):
    """A model file is missing, unreadable or malformed, or ``input_shapes`` does not fit it."""


class UnsupportedModelError(GraphError):
    """A model uses ops, attributes, opsets or dtypes kernelforge does not support; lists every offender."""


# --- attribute checks ---------------------------------------------------------------------------------------

Check = Callable[[onnx.NodeProto, int, set[str]], str | None]


def _attr(node: onnx.NodeProto, name: str, default: Any = None) -> Any:
    for attribute in node.attribute:
        if attribute.name == name:
            value = helper.get_attribute_value(attribute)
            return value.decode() if isinstance(value, bytes) else value
    return default


_WRITTEN_OUTPUTS = {"Attention": 3, "LayerNormalization": 3, "MaxPool": 2}
"""ONNX op type -> how many leading outputs its converter writes (the rest, where used, are refused)."""


def _extra_outputs(node: onnx.NodeProto, used: set[str], what: str) -> str | None:
    extra = [o for o in node.output[_WRITTEN_OUTPUTS.get(node.op_type, 1) :] if o and o in used]
    return f"its {what} output {extra[0]!r} is used" if extra else None


def _check_window(node: onnx.NodeProto, opset: int, used: set[str]) -> str | None:
    auto_pad = _attr(node, "auto_pad", "NOTSET")
    if auto_pad not in AUTO_PADS:
        return f"auto_pad={auto_pad!r} (supported: {', '.join(AUTO_PADS)})"
    kernel = _attr(node, "kernel_shape")
    sizes = (1, 2, 3) if node.op_type in ("MaxPool", "AveragePool") else (1, 2)  # 3-D pools: two 2-D passes
    if kernel is not None and len(kernel) not in sizes:
        what = "1-D, 2-D and 3-D pools" if len(sizes) == 3 else "1-D and 2-D windows"
        return f"kernel_shape={list(kernel)}: only {what} are supported"
    return _extra_outputs(node, used, "indices") if node.op_type == "MaxPool" else None


def _check_cast(node: onnx.NodeProto, opset: int, used: set[str]) -> str | None:
    to = int(_attr(node, "to", 0))
    if to in EDGE_DTYPES:  # every type a graph edge carries: float, integer and bool types, the narrow ones too
        return None
    name = onnx.TensorProto.DataType.Name(to) if to in onnx.TensorProto.DataType.values() else str(to)
    return f"casts a runtime tensor to {name}; supported: {', '.join(sorted(set(EDGE_DTYPES.values())))}"


CHECKS: dict[str, Check] = {
    **dict.fromkeys(("Conv", "ConvInteger", "MaxPool", "AveragePool"), _check_window),
    **QUANT_CHECKS,
    "Resize": check_resize,
    "Upsample": check_resize,
    "Cast": _check_cast,
    "Gelu": lambda node, opset, used: (
        None
        if _attr(node, "approximate", "none") in ("none", "tanh")
        else f"approximate={_attr(node, 'approximate')!r} is not supported"
    ),
    "Pad": lambda node, opset, used: (
        None if _attr(node, "mode", "constant") in PAD_MODES else f"mode={_attr(node, 'mode')!r} is not supported"
    ),
    "BatchNormalization": lambda node, opset, used: (
        None if _attr(node, "training_mode", 0) else _extra_outputs(node, used, "training statistics")
    ),
}
"""ONNX op type -> attribute check run on every node (of a runtime value) before conversion: a reason or None."""


def _check_direct(node: onnx.NodeProto, opset: int, used: set[str]) -> str | None:
    """Check an ONNX node that a registered op runs as it stands: its spec reads the attributes."""
    extra = _extra_outputs(node, used, "optional")
    if extra:
        return extra
    try:
        get_op(DIRECT[node.op_type]).from_onnx(node.op_type, opset, node_attrs(node))
    except ValueError as exc:
        return str(exc)
    return None


def _check_conv_transpose(node: onnx.NodeProto, opset: int, used: set[str]) -> str | None:
    """Check a ConvTranspose; a 3-D one runs as 2-D ones (``onnx_windows``), whose attributes the spec checks."""
    attrs = node_attrs(node)
    try:
        if not is_3d(attrs):
            return _check_direct(node, opset, used)
        plane, depth = split_3d_attrs(attrs)
        for pass_attrs in (plane, depth):
            get_op("conv_transpose2d").from_onnx(node.op_type, opset, pass_attrs)
    except ValueError as exc:
        return str(exc)
    return _extra_outputs(node, used, "optional")


CHECKS["ConvTranspose"] = _check_conv_transpose
CHECKS.update({onnx_op: _check_direct for onnx_op in DIRECT if onnx_op not in CHECKS})


# --- loading and checking ------------------------------------------------------------------------------------


def _load(model: str | os.PathLike[str] | bytes | onnx.ModelProto) -> tuple[onnx.ModelProto, str]:
    if isinstance(model, onnx.ModelProto):
        return model, f"model {model.graph.name!r}"
    if isinstance(model, (bytes, bytearray)):
        where = f"model of {len(model)} bytes"
        try:
            proto = onnx.load_model_from_string(bytes(model))
        except Exception as exc:  # protobuf raises its own DecodeError, or others for garbage
            raise ModelError(f"{where}: cannot parse ONNX protobuf: {type(exc).__name__}: {exc}") from None
    else:
        where = os.fspath(model)
        if not os.path.isfile(where):
            raise ModelError(f"{where}: no such model file")
        try:
            proto = onnx.load(where)
        except Exception as exc:  # DecodeError for a truncated file, OSError, missing external data...
            raise ModelError(f"{where}: cannot load ONNX model: {type(exc).__name__}: {exc}") from None
    if not proto.graph.output or not proto.graph.node:
        raise ModelError(f"{where}: the model has no nodes or no graph outputs (truncated or not an ONNX model?)")
    return proto, where


def _opsets(proto: onnx.ModelProto, where: str) -> dict[str, int]:
    opsets = {("" if o.domain in _DEFAULT_DOMAINS else o.domain): int(o.version) for o in proto.opset_import}
    version = opsets.setdefault("", 0)  # none imported: each default-domain node says so (_kind_reason)
    if version and not MIN_OPSET <= version <= MAX_OPSET:
        raise UnsupportedModelError(
            f"{where}: default-domain opset {version} is not supported (supported: {MIN_OPSET}..{MAX_OPSET})"
        )
    return opsets


def _dims(info: onnx.ValueInfoProto) -> list[int | str] | None:
    """Return declared dims (ints, or the symbolic name / ``"?"``), None when no shape is declared."""
    tensor = info.type.tensor_type
    if not tensor.HasField("shape"):
        return None
    return [
        d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else (d.dim_param or "?") for d in tensor.shape.dim
    ]


def _describe(infos: Sequence[onnx.ValueInfoProto]) -> str:
    parts = []
    for info in infos:
        dims = _dims(info)
        parts.append(f"{info.name!r} {'(no shape)' if dims is None else list(dims)}")
    return ", ".join(parts) or "(none)"


def _edge_dtypes(
    inputs: Sequence[onnx.ValueInfoProto], outputs: Sequence[onnx.ValueInfoProto]
) -> tuple[dict[str, str], list[str]]:
    """Return the non-float32 dtypes of graph inputs and outputs, and one problem line per unsupported one."""
    dtypes: dict[str, str] = {}
    problems = []
    for kind, infos in (("input", inputs), ("output", outputs)):
        for info in infos:
            elem = info.type.tensor_type.elem_type if info.type.HasField("tensor_type") else -1
            dtype = edge_dtype(elem) if elem >= 0 else None
            if dtype is None:
                known = elem in onnx.TensorProto.DataType.values()
                name = onnx.TensorProto.DataType.Name(elem) if known else "a non-tensor type"
                problems.append(
                    f"graph {kind} {info.name!r}: dtype {name} is not supported "
                    f"(supported: {', '.join(sorted(set(EDGE_DTYPES.values())))})"
                )
            elif dtype != "float32":
                dtypes[info.name] = dtype
    return dtypes, problems


def _input_shapes(
    inputs: Sequence[onnx.ValueInfoProto], given: Mapping[str, Sequence[int]], where: str
) -> dict[str, tuple[int, ...]]:
    """Return every graph input's static shape (see :func:`import_model` for the rules)."""
    names = {i.name for i in inputs}
    unknown = [name for name in given if name not in names]
    if unknown:
        raise ModelError(f"{where}: input_shapes names unknown input(s) {unknown}; the inputs are {_describe(inputs)}")
    shapes: dict[str, tuple[int, ...]] = {}
    for info in inputs:
        dims, name = _dims(info), info.name
        if name in given:
            shape = tuple(int(d) for d in given[name])
            fixed = dims is None or (
                len(dims) == len(shape) and all(isinstance(d, str) or d == s for d, s in zip(dims, shape, strict=True))
            )
            if 0 in shape:
                raise ModelError(
                    f"{where}: input_shapes[{name!r}] = {list(shape)} is empty (a dim of 0): an empty tensor has no "
                    "values to feed; make it an initializer (empty constants are supported)"
                )
            if not fixed or any(d < 1 for d in shape):
                raise ModelError(
                    f"{where}: input_shapes[{name!r}] = {list(shape)} contradicts the declared shape; "
                    f"the inputs are {_describe(inputs)}"
                )
        elif dims is None:
            raise ModelError(f"{where}: input {name!r} declares no shape; give it in input_shapes")
        else:
            shape_list = []
            for k, d in enumerate(dims):
                if isinstance(d, int):
                    shape_list.append(d)
                elif k == 0:
                    shape_list.append(1)  # a symbolic batch dim: one sample
                else:
                    raise ModelError(f"{where}: {_fix_dim(name, dims, k)}")
            shape = tuple(shape_list)
        check_size(shape, f"{where}: input {name!r}")
        shapes[name] = shape
    return shapes


def _fix_dim(name: str, dims: Sequence[int | str], k: int) -> str:
    """Say that input ``name`` leaves symbolic dim ``k`` open, and how to set it in Python and on the command line."""
    symbol = dims[k]
    example = [d if isinstance(d, int) else 1 if j == 0 else f"<{d}>" for j, d in enumerate(dims)]
    flags = f"--shape {name}={'x'.join(map(str, example))}" + (f" or --dim {symbol}=N" if symbol != "?" else "")
    return (
        f"input {name!r} has symbolic dim {k} ({symbol!r}) in {list(dims)}; only a leading dim defaults (to 1): "
        f"set it with input_shapes={{{name!r}: [{', '.join(map(str, example))}]}} (command line: {flags})"
    )


def _topological(nodes: Sequence[onnx.NodeProto], known: set[str], where: str) -> list[int]:
    """Return node indices in an order where every input is computed first (the given order when it is)."""
    producer = {out: k for k, node in enumerate(nodes) for out in node.output if out}
    for k, node in enumerate(nodes):
        for name in node.input:
            if name and name not in known and name not in producer:
                display = node.name or f"{node.op_type}_{k}"
                raise ModelError(f"{where}: {node.op_type} node '{display}' reads {name!r}, which nothing defines")
    order: list[int] = []
    state = [0] * len(nodes)  # 0 new, 1 on the stack, 2 done
    for root in range(len(nodes)):
        stack = [root]
        while stack:
            k = stack[-1]
            if state[k] == 2:
                stack.pop()
                continue
            state[k] = 1
            deps = [producer[i] for i in nodes[k].input if i in producer and i not in known]
            todo = [d for d in deps if state[d] != 2]
            if any(state[d] == 1 for d in todo):
                raise ModelError(f"{where}: the graph has a cycle through {nodes[k].op_type} node {nodes[k].name!r}")
            if todo:
                stack.extend(todo)
            else:
                state[k] = 2
                order.append(k)
                stack.pop()
    return order


def _older_schema(op_type: str, opset: int) -> str | None:
    """Return why ``op_type`` at an opset below FULL_OPSET is not the op kernelforge converts, or None if it is."""
    try:
        old = onnx.defs.get_schema(op_type, opset).since_version
    except onnx.defs.SchemaError:
        return f"op type does not exist at opset {opset}"
    try:
        full = onnx.defs.get_schema(op_type, FULL_OPSET).since_version
    except onnx.defs.SchemaError:
        full = -1
    if old != full:
        return f"{op_type}-{old} (the version at opset {opset}) is older than the {op_type} kernelforge converts"
    return None


def _kind_reason(node: onnx.NodeProto, opsets: Mapping[str, int]) -> str | None:
    """Return why a node's domain, op type or opset is unsupported (whatever its inputs), or None."""
    domain = "" if node.domain in _DEFAULT_DOMAINS else node.domain
    opset = opsets.get(domain, 0)
    if domain:
        return f"domain {domain!r} is not supported (only the default ai.onnx domain)"
    if node.op_type not in CONVERTERS and node.op_type not in FOLDERS and node.op_type not in EXPANDED_OPS:
        return "op type is not supported"
    if not opset:
        return "the model imports no default-domain (ai.onnx) opset"
    if opset < FULL_OPSET and (old := _older_schema(node.op_type, opset)):
        return old
    return None


def _kind_problems(graph: onnx.GraphProto, opsets: Mapping[str, int]) -> list[str]:
    """Return a line per node an output depends on whose op type, domain or opset is unsupported.

    Needs no shapes and no order, so it is listed even when the model is otherwise malformed or its inputs
    need ``input_shapes``.
    """
    producer = {out: k for k, node in enumerate(graph.node) for out in node.output if out}
    live: set[int] = set()
    todo = [o.name for o in graph.output]
    while todo:
        k = producer.get(todo.pop(), -1)
        if k >= 0 and k not in live:
            live.add(k)
            todo.extend(i for i in graph.node[k].input if i)
    problems = []
    for k in sorted(live):
        node = graph.node[k]
        reason = _kind_reason(node, opsets)
        if reason is not None:
            domain = "" if node.domain in _DEFAULT_DOMAINS else node.domain
            opset = opsets.get(domain, 0)
            problems.append(f"{node.op_type} node '{node.name or f'{node.op_type}_{k}'}' (opset {opset}): {reason}")
    return problems


def _scan(
    ctx: Context, nodes: Sequence[tuple[int, onnx.NodeProto]], opsets: dict[str, int], used: set[str]
) -> list[str]:
    """Return one line per unsupported node, following which values fold to constants."""
    constant = set(ctx.consts)
    problems = []
    for index, node in nodes:
        domain = "" if node.domain in _DEFAULT_DOMAINS else node.domain
        opset = opsets.get(domain, 0)
        reason = None
        folds = node.op_type in FOLDERS and (
            node.op_type in ALWAYS_FOLD or all(not i or i in constant for i in value_inputs(node))
        )
        if (kind := _kind_reason(node, opsets)) is not None:
            reason = kind
        elif node.op_type in EXPANDED_OPS:  # still here: ONNX's function body did not expand
            reason = "ONNX gives no function body of ops kernelforge runs for this node (its attributes or types)"
        elif node.op_type == "Constant" and not {a.name for a in node.attribute} & CONSTANT_VALUES:
            reason = f"only the attributes {sorted(CONSTANT_VALUES)} are supported"
        elif not folds and node.op_type not in CONVERTERS:
            reason = "needs a runtime value: it is supported only when every input is a constant"
        elif not folds:
            runtime = [(k, node.input[k]) for k in CONST_INPUTS.get(node.op_type, ()) if k < len(node.input)]
            runtime = [(k, name) for k, name in runtime if name and name not in constant]
            if runtime:
                k, name = runtime[0]
                reason = f"input {k} ({name!r}) needs a runtime value; only a constant is supported"
            elif node.op_type in CHECKS:
                reason = CHECKS[node.op_type](node, opset, used)
        if reason:
            problems.append(f"{node.op_type} node '{node.name or f'{node.op_type}_{index}'}' (opset {opset}): {reason}")
        elif folds:
            constant.update(o for o in node.output if o)
    return problems


# --- import --------------------------------------------------------------------------------------------------


def import_model(
    model: str | os.PathLike[str] | bytes | onnx.ModelProto, input_shapes: Mapping[str, Sequence[int]] | None = None
) -> Graph:
    """Import an ONNX model as an IR graph with static shapes.

    Args:
        model: A path, the serialized bytes or a loaded ``ModelProto``.
        input_shapes: Shapes of graph inputs, for symbolic dims (a symbolic leading dim defaults to 1).

    Returns:
        The graph, pruned and validated; values keep their ONNX names.

    Raises:
        ModelError: For a missing or malformed file, a graph that reads undefined values, or input shapes
            that are unknown, contradict the model or are missing.
        UnsupportedModelError: Listing every unsupported node (op type, attribute value, domain) and graph
            input/output dtype at once, or naming an unsupported opset.
        GraphError: Naming the node, when a node's shapes or attributes are invalid.
    """
    proto, where = _load(model)
    opsets = _opsets(proto, where)
    g = proto.graph
    initializers = {t.name: t for t in g.initializer}
    inputs = [i for i in g.input if i.name not in initializers]
    dtypes, dtype_problems = _edge_dtypes(inputs, g.output)
    nodes = list(g.node)
    try:
        shapes = _input_shapes(inputs, input_shapes or {}, where)
        order = _topological(nodes, set(initializers) | set(shapes), where)
    except ModelError as exc:
        # what is unsupported is said first: fixing the shapes would not make such a model load
        early = dtype_problems + _kind_problems(g, opsets)
        if early:
            raise UnsupportedModelError(_unsupported(where, early, dtype_problems) + f"\nand: {exc}") from None
        raise
    # only nodes that feed an output matter (models from the wild carry dead branches)
    used = {o.name for o in g.output}
    live = []
    for k in reversed(order):
        if any(o in used for o in nodes[k].output):
            live.append((k, nodes[k]))
            used.update(i for i in nodes[k].input if i)
    live.reverse()
    types = _value_types(proto)
    expanded = _expand_refused(live, opsets, used, types)
    if len(expanded) != len(live):  # type the bodies' values too (their CastLikes ask)
        typed = onnx.ModelProto()
        typed.CopyFrom(proto)
        del typed.graph.node[:]
        typed.graph.node.extend(node for _, node in expanded)
        types = _value_types(typed)
    live = expanded

    graph = Graph({}, [], list(shapes), [o.name for o in g.output], g.name or "model", dtypes)
    reserved = set(shapes) | set(initializers) | {o for _, node in live for o in node.output}
    reserved |= {o for node in nodes for o in node.output}
    ctx = Context(graph, opsets[""], reserved, used)
    ctx.types = types
    for name, shape in shapes.items():
        graph.values[name] = Value(name, shape)
        ctx.names[name] = name
    for name, tensor in initializers.items():
        try:
            ctx.consts[name] = numpy_helper.to_array(tensor)
        except Exception as exc:  # external data that is missing, a bad raw_data size...
            raise ModelError(f"{where}: cannot read initializer {name!r}: {type(exc).__name__}: {exc}") from None
    problems = dtype_problems + _scan(ctx, live, opsets, used)
    if problems:
        raise UnsupportedModelError(_unsupported(where, problems, dtype_problems))

    for index, node in live:
        _convert(ctx, node, node.name or f"{node.op_type}_{index}", where)
    for name in graph.outputs:
        _bind_output(ctx, name, where)
    graph.prune()
    graph.validate()
    return graph


def _expand_refused(
    live: list[tuple[int, onnx.NodeProto]], opsets: Mapping[str, int], used: set[str], types: Mapping[str, int]
) -> list[tuple[int, onnx.NodeProto]]:
    """Replace each node its check refuses, but that ONNX defines as a function, by that function's nodes.

    ``Attention`` with its ``qk_matmul_output`` used, say, runs as the MatMul/Softmax chain ONNX defines it to be
    (:mod:`.onnx_functions`, :data:`~.onnx_functions.EXPANDED_WHEN_REFUSED`); so does every node of
    :data:`~.onnx_functions.EXPANDED_OPS`. A node whose body uses
    an op kernelforge does not convert stays, refused for its own reason. ``used`` gains the values the bodies
    read.
    """
    opset = opsets.get("", 0)
    out: list[tuple[int, onnx.NodeProto]] = []
    for index, node in live:
        check = CHECKS.get(node.op_type)
        expanded_op = node.op_type in EXPANDED_OPS and node.domain in _DEFAULT_DOMAINS
        refused = (
            node.op_type in EXPANDED_WHEN_REFUSED
            and check is not None
            and _kind_reason(node, opsets) is None
            and check(node, opset, used) is not None
        )
        if not (expanded_op or refused):
            out.append((index, node))
            continue
        body = expand(node, opset, types, f"{node.name or f'{node.op_type}_{index}'}/")
        if body is None or any(_kind_reason(inner, opsets) is not None for inner in body):
            out.append((index, node))
            continue
        used.update(name for inner in body for name in inner.input if name)
        out.extend((index, inner) for inner in body)
    return out


def _unsupported(where: str, problems: list[str], dtype_problems: list[str]) -> str:
    what = f"{len(problems) - len(dtype_problems)} unsupported node(s)"
    if dtype_problems:
        what += f" and {len(dtype_problems)} unsupported graph input/output dtype(s)"
    return f"{where}: {what}:\n" + "\n".join(problems)


def _value_types(proto: onnx.ModelProto) -> dict[str, int]:
    """Return the element type of every tensor the model declares or ONNX shape inference can type.

    Integer tensors are exact floats inside kernelforge; a few ops (Div) differ on them, so converters ask.
    """
    try:
        inferred = onnx.shape_inference.infer_shapes(proto, strict_mode=False).graph
    except Exception:  # a model shape inference rejects still imports; converters then see declared types only
        inferred = proto.graph
    types = {}
    for info in (*inferred.input, *inferred.value_info, *inferred.output):
        if info.type.HasField("tensor_type") and info.type.tensor_type.elem_type:
            types[info.name] = int(info.type.tensor_type.elem_type)
    return types


def _convert(ctx: Context, node: onnx.NodeProto, display: str, where: str) -> None:
    ctx.begin(node, display, ctx.opset)
    try:
        inputs = [ctx.const(i) for i in node.input if i]
        values = [ctx.const(i) for i in value_inputs(node) if i]
        if node.op_type in FOLDERS and (node.op_type in ALWAYS_FOLD or all(x is not None for x in values)):
            with np.errstate(all="ignore"):
                results = FOLDERS[node.op_type](ctx, node, [x for x in inputs if x is not None])
            for name, data in zip(node.output, results, strict=False):
                if name:
                    ctx.consts[name] = np.asarray(data)
            carry_quantized(ctx, node, FOLDERS[node.op_type], [x for x in inputs if x is not None])
        else:
            CONVERTERS[node.op_type](ctx, node)
    except NodeUnsupported as exc:
        raise UnsupportedModelError(f"{where}: 1 unsupported node(s):\n{ctx.origin}: {exc}") from None
    except GraphError:
        raise
    except (ValueError, IndexError, TypeError) as exc:  # ShapeError included: the node's attributes or shapes
        raise GraphError(f"{ctx.origin}: {exc}") from None
    ctx.finish()


def _bind_output(ctx: Context, name: str, where: str) -> None:
    """Make graph output ``name`` a value of that name: aliases get a ``reshape`` so the output has a producer."""
    if name in ctx.names:
        source = ctx.names[name]
        if source != name:
            ctx.begin(helper.make_node("Identity", [source], [name]), f"{name}_output", ctx.opset)
            ctx.reshape(source, ctx.graph.values[source].shape, out=name)
            ctx.finish()
    elif name in ctx.consts:
        data = ctx.consts[name]
        exact = kind_of(data.dtype) in "fb" or not data.size or np.abs(data.astype(np.float64)).max() <= MAX_EXACT_INT
        if not exact:
            raise UnsupportedModelError(
                f"{where}: graph output {name!r} is a constant of dtype {data.dtype} with values beyond 2**24, "
                "which float32 cannot hold exactly"
            )
        ctx.ir(name)
    else:
        raise ModelError(f"{where}: graph output {name!r} is computed by no node")
