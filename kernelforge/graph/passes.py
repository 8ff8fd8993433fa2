"""Graph passes: constant folding, batchnorm folding and kernel fusion on the IR of :mod:`.graph`.

Every pass takes a valid graph, rewrites it in place and returns it; the result is valid and computes the
same outputs up to float rounding (folds are done in float64). :func:`optimize` runs them in order; layout
assignment and memory planning (:func:`plan_memory`, in :mod:`.memory`) are run by the session.

Elementwise programs are matched structurally on the parsed :mod:`kernelforge.ops._expr` IR, never by
text, so ``v0 + v1`` and ``(v1) + v0`` over swapped inputs, or ``clip(v0, 0, 6)`` and ``clip(v0, 0.0, 6.0)``,
look the same to a pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kernelforge.graph import reference
from kernelforge.graph.fuse_attention import fuse_attention
from kernelforge.graph.fuse_heads import fold_head_transposes
from kernelforge.graph.fuse_norm import fuse_layernorm
from kernelforge.graph.ir import Graph, Node, Value, program_of, remap_program
from kernelforge.graph.memory import MemoryPlan, plan_memory
from kernelforge.ops import _expr
from kernelforge.ops._epilogue import ACTIVATIONS, Activation
from kernelforge.ops.eltwise import MAX_RANK

__all__ = [
    "MAX_FUSED_INPUTS",
    "MemoryPlan",
    "channel_shape",
    "fold_batchnorm",
    "fold_constants",
    "fuse_elementwise",
    "fuse_epilogues",
    "name_activations",
    "optimize",
    "plan_memory",
    "program_of",
]

MAX_FUSED_INPUTS = 7
"""Most inputs of a fused elementwise node: WebGPU's default maxStorageBuffersPerShaderStage (8) less the output."""

# single-op programs that become a fused activation: _expr op -> activation kind
_ACTIVATIONS = {"relu": "relu", "sigmoid": "sigmoid", "tanh": "tanh", "gelu": "gelu", "hardswish": "hardswish"}


def optimize(graph: Graph) -> Graph:
    """Run the passes in order.

    fold_constants, fold_batchnorm, fold_constants, fuse_attention (:mod:`.fuse_attention`),
    fold_head_transposes (:mod:`.fuse_heads`), fuse_epilogues, fuse_elementwise, fuse_layernorm
    (:mod:`.fuse_norm`), name_activations, and fuse_epilogues again, for the activations that only the fused
    chains reveal.
    """
    steps = (fold_constants, fold_batchnorm, fold_constants, fuse_attention, fold_head_transposes, fuse_epilogues)
    for step in (*steps, fuse_elementwise, fuse_layernorm, name_activations, fuse_epilogues):
        graph = step(graph)
    return graph


# ---------------------------------------------------------------------------------------------- helpers


def channel_shape(rank: int, channels: int) -> tuple[int, ...]:
    """Return the shape that broadcasts a per-channel vector over axis 1 of a rank-``rank`` tensor (ONNX)."""
    return (channels,) + (1,) * max(rank - 2, 0)


def _leaves(tree: _expr.Node) -> list[int]:
    """Return the input indices in order of first appearance in the program text (pre-order)."""
    if tree[0] == "in":
        return [tree[1][0]]
    seen: list[int] = []
    for child in tree[2:]:
        seen += [i for i in _leaves(child) if i not in seen]
    return seen


def _set_program(node: Node, tree: _expr.Node, inputs: list[str]) -> bool:
    """Make ``node`` compute ``tree`` over ``inputs``; return False (node untouched) if it cannot parse."""
    order = _leaves(tree)  # renumber so that the text names v0, v1, ... in order of appearance
    renumber = {old: new for new, old in enumerate(order)}
    canonical = remap_program(tree, [renumber.get(i, -1) for i in range(len(inputs))])
    text = _expr.to_text(canonical, [f"v{k}" for k in range(len(order))])
    try:
        _expr.parse(text)
    except _expr.ExpressionError:
        return False
    node.inputs = [inputs[i] for i in order]
    node.attrs = {**node.attrs, "expr": text}
    return True


def _single_consumer(graph: Graph, name: str) -> Node | None:
    """Return the one node that reads ``name`` (once), or None when it is read elsewhere or is an output."""
    if name in graph.outputs:
        return None
    users = graph.consumers().get(name, [])
    return users[0] if len(users) == 1 else None


def _absorb(graph: Graph, producer: Node, consumer: Node) -> None:
    """Let ``producer`` write ``consumer``'s output and drop ``consumer`` and the intermediate value."""
    middle = producer.output
    producer.outputs = list(consumer.outputs)
    graph.nodes.remove(consumer)
    del graph.values[middle]


def _activation(node: Node) -> Activation:
    value = node.attrs.get("activation")
    return value if isinstance(value, Activation) else Activation.parse(value)


def _input(node: Node, index: int) -> str:
    return node.inputs[index] if len(node.inputs) > index else ""


def _set_input(node: Node, index: int, name: str) -> None:
    node.inputs = [*node.inputs, *[""] * (index + 1 - len(node.inputs))]
    node.inputs[index] = name


# ------------------------------------------------------------------------------------------- constants


def fold_constants(graph: Graph) -> Graph:
    """Evaluate every node whose inputs are all constants (views too) and make its output a constant.

    Nodes and values nothing uses any more are then pruned.
    """
    kept: list[Node] = []
    for node in graph.nodes:
        names = [name for name in node.inputs if name]
        if names and all(graph.value(name).is_const for name in names):
            arrays = {name: np.asarray(graph.value(name).data) for name in names}
            result = reference.evaluate(graph, node, arrays)
            value = graph.value(node.output)
            value.data = np.ascontiguousarray(result, dtype=np.float32).reshape(value.shape)
        else:
            kept.append(node)
    graph.nodes = kept
    graph.prune()
    return graph


# ------------------------------------------------------------------------------------------- batchnorm


@dataclass(frozen=True)
class _BatchNorm:
    """A batchnorm's per-channel affine form ``y = x * a + b`` (float64)."""

    a: np.ndarray
    b: np.ndarray


def _affine(graph: Graph, node: Node) -> _BatchNorm | None:
    """Return the affine form of a batchnorm whose parameters are all constants, else None."""
    params = [graph.const(name) for name in node.inputs[1:5]]
    if len(params) != 4 or any(p is None for p in params):
        return None
    scale, bias, mean, var = (np.asarray(p, np.float64).reshape(-1) for p in params if p is not None)
    a = scale / np.sqrt(var + float(node.attrs.get("epsilon", 1e-5)))
    return _BatchNorm(a, bias - mean * a)


def fold_batchnorm(graph: Graph) -> Graph:
    """Fold each batchnorm into the conv/gemm before it, or else turn it into one elementwise node.

    A batchnorm with constant parameters folds into a producing ``conv`` (constant weights and bias), or a
    2-D ``gemm`` with constant ``b`` (the channel axis is then the gemm's ``n``), when the producer has no
    other consumer, no residual and no activation. Every other batchnorm becomes ``v0*v1 + v2`` with
    per-channel constants computed here, or, with non-constant parameters, the full formula over
    per-channel views of the parameters.
    """
    for node in list(graph.nodes):
        if node.op != "batchnorm":
            continue
        affine = _affine(graph, node)
        if affine is not None and _fold_into_producer(graph, node, affine):
            continue
        _to_elementwise(graph, node, affine)
    graph.prune()
    return graph


def _fold_into_producer(graph: Graph, bn: Node, affine: _BatchNorm) -> bool:
    """Fold ``bn`` into the conv/gemm computing its input; return whether it did."""
    x = bn.inputs[0]
    producer = graph.producers().get(x)
    if producer is None or producer.op not in ("conv2d", "gemm") or _single_consumer(graph, x) is not bn:
        return False
    if _activation(producer).kind != "none" or _input(producer, 3):
        return False
    weight = graph.const(producer.inputs[1])
    bias_name = _input(producer, 2)
    old_bias = graph.const(bias_name)
    if weight is None or (bias_name and old_bias is None):
        return False
    w = np.asarray(weight, np.float64)
    if producer.op == "conv2d":
        if affine.a.size != w.shape[0]:
            return False
        w = w * affine.a.reshape(-1, 1, 1, 1)
    else:
        out_shape = graph.value(x).shape
        if len(out_shape) != 2 or w.ndim != 2 or affine.a.size != out_shape[1]:
            return False
        # b is [k, n], or [n, k] with trans_b: scale the n axis either way
        w = w * (affine.a.reshape(-1, 1) if producer.attrs.get("trans_b") else affine.a.reshape(1, -1))
    base = np.zeros_like(affine.a) if old_bias is None else np.asarray(old_bias, np.float64).reshape(-1)
    new_bias = base * affine.a + affine.b
    _set_input(producer, 1, graph.add_const(f"{producer.name}_w_bn", w))
    _set_input(producer, 2, graph.add_const(f"{producer.name}_b_bn", new_bias))
    _absorb(graph, producer, bn)
    return True


def _to_elementwise(graph: Graph, bn: Node, affine: _BatchNorm | None) -> None:
    """Rewrite ``bn`` in place as an elementwise node (reshape views precede it for non-constant params)."""
    x = bn.inputs[0]
    rank = len(graph.value(x).shape)
    channels = graph.value(bn.inputs[1]).size
    shape = channel_shape(rank, channels)
    if affine is not None:
        a = graph.add_const(f"{bn.name}_scale", affine.a.reshape(shape))
        b = graph.add_const(f"{bn.name}_shift", affine.b.reshape(shape))
        bn.op, bn.inputs, bn.attrs = "elementwise", [x, a, b], {"expr": "v0*v1 + v2"}
        return
    at = graph.nodes.index(bn)
    params: list[str] = []
    for name in bn.inputs[1:5]:  # scale, bias, mean, var
        data = graph.const(name)
        if data is not None:
            params.append(graph.add_const(f"{bn.name}_param", np.asarray(data).reshape(shape)))
        elif graph.value(name).shape == shape:
            params.append(name)
        else:
            view = graph.fresh_name(f"{name}_channels")
            graph.values[view] = Value(view, shape)
            graph.nodes.insert(
                at, Node(graph.fresh_name(f"{bn.name}_reshape"), "reshape", [name], [view], {}, bn.origin)
            )
            at += 1
            params.append(view)
    eps = repr(float(bn.attrs.get("epsilon", 1e-5)))
    bn.op, bn.inputs = "elementwise", [x, *params]
    bn.attrs = {"expr": f"(v0 - v3) / sqrt(v4 + {eps}) * v1 + v2"}


# -------------------------------------------------------------------------------------------- epilogues


def fuse_epilogues(graph: Graph) -> Graph:
    """Fuse bias adds, residual adds and activations that follow a conv/gemm (or conv_transpose) into it.

    In order: a constant per-output-channel add (or subtract) joins the bias, an add of a tensor of the
    exact output shape computed before the conv becomes its residual (conv only), and a single activation
    becomes the node's activation; nothing fuses after an activation. The intermediate must have exactly one
    consumer and not be a graph output.
    """
    for node in list(graph.nodes):
        if node.op in ("conv2d", "gemm", "conv_transpose2d"):
            while _fuse_one(graph, node) or (_hoist_past_view(graph, node) and _fuse_one(graph, node)):
                pass
    return graph


def _hoist_past_view(graph: Graph, node: Node) -> bool:
    """Move the epilogue that follows a view of ``node``'s output in front of the view; return whether it did.

    A 3-D MatMul runs as a 2-D gemm between reshapes and a 1-D conv as a conv2d over a height of 1, so the bias
    add and activation an exporter writes after ``nn.Linear`` or ``nn.Conv1d`` read a view of the kernel's
    output. A view keeps the order of elements: an activation commutes with it, and so does the add of a
    constant whose values, laid out in the kernel's output shape, are one number per output channel.
    """
    view = _single_consumer(graph, node.output)
    if view is None or view.op != "reshape" or _activation(node).kind != "none":
        return False
    user = _single_consumer(graph, view.output)
    shape = graph.value(view.output).shape
    if user is None or user.op != "elementwise" or graph.value(user.output).shape != shape:
        return False
    tree = program_of(user)
    mine = ("in", (user.inputs.index(view.output),))
    inputs = [node.output if name == view.output else name for name in user.inputs]
    if _as_activation(tree, mine) is None:
        # x + c, c + x or x - c, as _fuse_one takes them
        if tree[0] not in ("add", "sub") or len(tree) != 4 or mine not in tree[2:] or tree[2] == tree[3]:
            return False
        other = tree[3] if tree[2] == mine else tree[2]
        if other[0] != "in" or (tree[0] == "sub" and tree[2] != mine):
            return False
        name = user.inputs[other[1][0]]
        channels = _channel_vector(graph, node, name, shape)
        if channels is not None:
            inputs[other[1][0]] = graph.add_const(f"{user.name}_channels", channels)
        elif _viewable_residual(graph, node, name, shape) and tree[0] == "add":
            # a skip connection of the view's shape: a view of it in the kernel's shape becomes the residual
            flat = graph.fresh_name(f"{name}_unviewed")
            graph.values[flat] = Value(flat, graph.value(node.output).shape)
            reshape = Node(graph.fresh_name(f"{flat}_view"), "reshape", [name], [flat], {}, user.origin)
            graph.nodes.insert(graph.nodes.index(node), reshape)
            inputs[other[1][0]] = flat
        else:
            return False
    before = graph.fresh_name(f"{user.name}_unviewed")
    graph.values[before] = Value(before, graph.value(node.output).shape)
    del graph.values[view.output]
    view.inputs, view.outputs = [before], list(user.outputs)
    user.inputs, user.outputs = inputs, [before]
    graph.nodes.remove(view)
    graph.nodes.insert(graph.nodes.index(user) + 1, view)
    return True


def _viewable_residual(graph: Graph, node: Node, name: str, view: tuple[int, ...]) -> bool:
    """Whether ``name`` is a runtime tensor of the view's shape, computed before ``node`` (a GEMM's residual)."""
    if node.op != "gemm" or graph.value(name).is_const or graph.value(name).shape != view or _input(node, 3):
        return False
    producer = graph.producers().get(name)
    return producer is None or graph.nodes.index(producer) < graph.nodes.index(node)


def _channel_vector(graph: Graph, node: Node, name: str, view: tuple[int, ...]) -> np.ndarray | None:
    """Return constant ``name`` (broadcast over ``view``) in ``node``'s output shape if per channel, else None."""
    data = graph.const(name)
    out_shape = graph.value(node.output).shape
    if data is None:
        return None
    try:
        if np.broadcast_shapes(np.shape(data), view) != view:
            return None
    except ValueError:  # does not broadcast to the view
        return None
    full = np.broadcast_to(np.asarray(data, np.float32), view).reshape(out_shape)
    axis = len(out_shape) - 1 if node.op == "gemm" else 1
    vector = full[tuple(slice(None) if i == axis else slice(0, 1) for i in range(len(out_shape)))]
    return vector if np.array_equal(np.broadcast_to(vector, out_shape), full) else None


def _fuse_one(graph: Graph, node: Node) -> bool:
    """Fuse the elementwise node after ``node`` into it, if it is an epilogue; return whether it did."""
    if _activation(node).kind != "none":
        return False
    out = node.output
    user = _single_consumer(graph, out)
    if user is None or user.op != "elementwise" or graph.value(user.output).shape != graph.value(out).shape:
        return False
    tree = program_of(user)
    mine = ("in", (user.inputs.index(out),))
    activation = _as_activation(tree, mine)
    if activation is not None:
        node.attrs = {**node.attrs, "activation": activation}
        _absorb(graph, node, user)
        return True
    if tree[0] not in ("add", "sub") or mine not in tree[2:] or tree[2] == tree[3]:
        return False
    other_leaf = tree[3] if tree[2] == mine else tree[2]
    if other_leaf[0] != "in" or (tree[0] == "sub" and tree[2] != mine):
        return False
    other = user.inputs[other_leaf[1][0]]
    sign = -1.0 if tree[0] == "sub" else 1.0
    if graph.value(other).is_const:
        fused = _fuse_bias(graph, node, other, sign)
    else:
        fused = sign > 0 and _fuse_residual(graph, node, other)
    if fused:
        _absorb(graph, node, user)
    return fused


def _as_activation(tree: _expr.Node, mine: _expr.Node) -> Activation | None:
    """Return the activation a single-op program (or a written-out SiLU) applies to ``mine``, or None."""
    if len(tree) != 3 or tree[2] != mine:
        return _written_out(tree, mine)
    op, attrs = tree[0], tree[1]
    if op in _ACTIVATIONS:
        return Activation(_ACTIVATIONS[op])
    if op == "clip":
        lo, hi = attrs
        return Activation("relu6") if (lo, hi) == (0.0, 6.0) else Activation("clip", lo, hi)
    if op == "leaky_relu":
        return Activation("leaky_relu", attrs[0])
    return _written_out(tree, mine)


def _written_out(tree: _expr.Node, mine: _expr.Node) -> Activation | None:
    """Return SiLU when a program of ``mine`` alone computes it (``x * sigmoid(x)``, Swish), else None.

    Recognised by value, as :func:`name_activations` recognises GELU.
    """
    if _leaves(tree) != [mine[1][0]] or not _smooth(tree):
        return None
    with np.errstate(all="ignore"):
        got = np.asarray(_expr.evaluate(tree, [_PROBES] * (mine[1][0] + 1)), np.float64)
    want = ACTIVATIONS["silu"].fn(_PROBES, 0.0, 0.0)
    return Activation("silu") if got.shape == want.shape and np.allclose(got, want, rtol=1e-6, atol=1e-7) else None


def _fuse_bias(graph: Graph, node: Node, name: str, sign: float) -> bool:
    """Add the constant ``sign * name`` to ``node``'s bias when it is one number per output channel."""
    out_shape = graph.value(node.output).shape
    data = np.asarray(graph.const(name), np.float64)
    axis = len(out_shape) - 1 if node.op == "gemm" else 1
    if data.ndim > len(out_shape):
        return False
    padded = (1,) * (len(out_shape) - data.ndim) + data.shape
    if any(d != 1 for i, d in enumerate(padded) if i != axis) or padded[axis] not in (1, out_shape[axis]):
        return False
    old_name = _input(node, 2)
    old = graph.const(old_name)
    if old_name and old is None:
        return False
    base = np.zeros(out_shape[axis]) if old is None else np.asarray(old, np.float64).reshape(-1)
    total = base + sign * np.broadcast_to(data.reshape(-1), base.shape)
    _set_input(node, 2, graph.add_const(f"{node.name}_bias", total))
    return True


def _fuse_residual(graph: Graph, node: Node, name: str) -> bool:
    """Make ``name`` the residual of conv or GEMM ``node`` when it has the output's shape and is ready before it."""
    if node.op not in ("conv2d", "gemm") or _input(node, 3):
        return False
    if graph.value(name).shape != graph.value(node.output).shape:
        return False
    producer = graph.producers().get(name)
    if producer is not None and graph.nodes.index(producer) > graph.nodes.index(node):
        return False
    _set_input(node, 3, name)
    return True


# ------------------------------------------------------------------------------------------ elementwise


def fuse_elementwise(graph: Graph) -> Graph:
    """Merge chains and trees of elementwise nodes into single nodes.

    A producer is merged into its consumer when the consumer is its only reader (possibly reading it more
    than once) and it is not a graph output; the merged node sits at the consumer's place and reads the
    union of both nodes' inputs, each once. Merging stops where the program would exceed the limits of
    :mod:`kernelforge.ops._expr`, or would read more than :data:`MAX_FUSED_INPUTS` inputs.
    """
    producers = graph.producers()
    consumers = graph.consumers()
    outputs = set(graph.outputs)
    # nodes are visited in order, so a producer has absorbed its own producers before its consumer asks
    for node in list(graph.nodes):
        while node.op == "elementwise" and _absorb_producer(graph, node, producers, consumers, outputs):
            pass
    return graph


def _absorb_producer(
    graph: Graph, node: Node, producers: dict[str, Node], consumers: dict[str, list[Node]], outputs: set[str]
) -> bool:
    """Merge one fusable elementwise producer of ``node`` into it, updating the maps; return whether it did."""
    for name in dict.fromkeys(node.inputs):
        producer = producers.get(name)
        if producer is None or producer.op != "elementwise" or name in outputs:
            continue
        if any(user is not node for user in consumers[name]) or not _merge(graph, producer, node):
            continue
        graph.nodes.remove(producer)
        del graph.values[name], producers[name], consumers[name]
        for source in producer.inputs:
            consumers[source] = [u for u in consumers[source] if u is not producer and u is not node] + [node]
        return True
    return False


def _merge(graph: Graph, producer: Node, consumer: Node) -> bool:
    """Rewrite ``consumer`` to compute ``producer``'s program in place of its output; return whether it did."""
    middle = producer.output
    inputs = list(dict.fromkeys(name for name in (*consumer.inputs, *producer.inputs) if name != middle))
    if len(inputs) > MAX_FUSED_INPUTS or any(len(graph.value(n).shape) > MAX_RANK for n in inputs):
        return False
    inner = remap_program(program_of(producer), [inputs.index(n) for n in producer.inputs])

    def substitute(tree: _expr.Node) -> _expr.Node:
        if tree[0] == "in":
            name = consumer.inputs[tree[1][0]]
            return inner if name == middle else ("in", (inputs.index(name),))
        return (tree[0], tree[1], *(substitute(child) for child in tree[2:]))

    return _set_program(consumer, substitute(program_of(consumer)), inputs)


# ---------------------------------------------------------------------------------------------- activations

# ops of smooth (analytic) programs: two of them that agree on many points are the same function
_SMOOTH = {
    "add", "sub", "mul", "div", "neg", "erf", "tanh", "exp", "sigmoid", "sqrt", "pow", "powi", "reciprocal",
    "in", "const",
}  # fmt: skip
_PROBES = np.concatenate([np.linspace(-9.0, 9.0, 181), [-1e-3, -1e-6, 1e-6, 1e-3, 0.0]])


def _smooth(tree: _expr.Node) -> bool:
    return tree[0] in _SMOOTH and all(_smooth(child) for child in tree[2:] if isinstance(child, tuple))


def name_activations(graph: Graph) -> Graph:
    """Rename elementwise programs of one input that compute an epilogue activation written out, to that activation.

    Exporters write exact GELU as ``x * 0.5 * (1 + erf(x / sqrt(2)))``; once fused into one node its program
    is rewritten to ``gelu(v0)``, which a GEMM or conv before it then takes as its epilogue. A program is
    recognised by value, not by form: it must be built from smooth ops only (no comparisons, min/max or
    rounding) and agree with the activation on 186 points across [-9, 9] within 1e-6; two such functions that
    agree there are the same function.
    """
    for node in graph.nodes:
        if node.op != "elementwise" or len([i for i in node.inputs if i]) != 1:
            continue
        tree = program_of(node)
        if tree[0] == "gelu" or not _smooth(tree):
            continue
        with np.errstate(all="ignore"):
            got = np.asarray(_expr.evaluate(tree, [_PROBES]), np.float64)
        want = ACTIVATIONS["gelu"].fn(_PROBES, 0.0, 0.0)
        if got.shape == want.shape and np.allclose(got, want, rtol=1e-6, atol=1e-7):
            node.attrs = {**node.attrs, "expr": "gelu(v0)"}
    return graph
