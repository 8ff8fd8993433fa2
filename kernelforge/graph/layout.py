"""Layout assignment: pick NCHW or NHWC per region of 4-D tensors from the tuned kernels, convert only at borders.

Conv and pool kernels have a ``layout`` tunable, and a tuned record says which layout was fastest for that
layer on that device. Converting a tensor between layouts is a kernel of its own, so choosing per kernel
would litter the graph with transposes. Instead, kernels that can run in either layout (conv, pool, reduce, and
elementwise, concat and slice over 4-D tensors, which only need their axes relabelled) are grouped into regions
connected by the tensors they exchange; each region takes the layout that the FLOP-weighted majority of its
conv/pool records chose, the minority switch layout, and a conversion is inserted only where a tensor
crosses a region's border (model inputs and outputs, reshapes, GEMMs, softmax). A conversion that moves only
size-1 axes (``[n, c, 1, 1]`` after a global pool) is a free view.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from kernelforge.graph.ir import Graph, Node, Value
from kernelforge.graph.lower import Lowered
from kernelforge.ops import get_op
from kernelforge.ops.spec import Params

NHWC = (0, 2, 3, 1)
FLEXIBLE_KERNELS = ("conv2d", "pool2d", "resize", "reduce", "conv_transpose2d")
"""Ops whose kernels have a ``layout`` tunable (0 = NCHW, 1 = NHWC)."""
FOLLOWERS = ("elementwise", "concat", "slice")
"""Ops that take their region's layout for every 4-D tensor (their kernels are built on the buffers' shapes)."""


@dataclass(frozen=True)
class LayoutPlan:
    """What layout assignment decided.

    Attributes:
        region_of: Node name -> region index, for nodes that follow their region's layout.
        layouts: Region index -> axis order (``None`` = NCHW).
        conversions: Conversion kernels inserted (free views not counted).
        views: Free relayout views inserted.
    """

    region_of: dict[str, int]
    layouts: dict[int, tuple[int, ...] | None]
    conversions: int
    views: int


def is_free(shape: tuple[int, ...], src: tuple[int, ...] | None, dst: tuple[int, ...] | None) -> bool:
    """Return whether relabelling ``shape`` from axis order ``src`` to ``dst`` keeps the bytes (size-1 moves only)."""
    order = range(len(shape))
    a = [ax for ax in (src or order) if shape[ax] != 1]
    b = [ax for ax in (dst or order) if shape[ax] != 1]
    return a == b


def physical_shape(value: Value) -> tuple[int, ...]:
    """Return the shape of a value's buffer (its logical shape permuted by its layout)."""
    return tuple(value.shape[a] for a in value.layout) if value.layout else value.shape


def _flexible(graph: Graph, node: Node, lowered: Lowered | None) -> bool:
    if lowered is not None and lowered.op in FLEXIBLE_KERNELS:
        return True
    if node.op not in FOLLOWERS or len(graph.value(node.output).shape) != 4:
        return False
    # every computed input must be 4-D (a computed lower-rank input would need a real conversion)
    return all(graph.value(i).is_const or len(graph.value(i).shape) == 4 for i in node.inputs if i)


def assign_layouts(
    graph: Graph,
    lowered: Mapping[str, Lowered | None],
    params: dict[str, Params],
    relayout: Callable[[Node, Params, int], Params],
) -> LayoutPlan:
    """Choose a layout per region, switch minority kernels, set ``Value.layout`` and insert conversions.

    Args:
        graph: The optimized graph (mutated: values get layouts, conversion nodes are inserted).
        lowered: Node name -> its kernel call (None for views).
        params: Node name -> chosen params (mutated for kernels that switch layout).
        relayout: ``(node, params, layout) -> params`` for the same kernel in another layout (0/1).

    Returns:
        The decisions, for the session summary.
    """
    flexible = {n.name for n in graph.nodes if _flexible(graph, n, lowered.get(n.name))}
    parent = {name: name for name in flexible}

    def find(x: str) -> str:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    producers = graph.producers()
    for node in graph.nodes:
        if node.name not in flexible:
            continue
        for name in node.inputs:
            src = producers.get(name) if name else None
            if src is not None and src.name in flexible and len(graph.value(name).shape) == 4:
                parent[find(src.name)] = find(node.name)

    votes: dict[str, float] = {}
    for node in graph.nodes:
        call = lowered.get(node.name)
        if node.name in flexible and call is not None and call.op in FLEXIBLE_KERNELS:
            weight = max(get_op(call.op).flops(call.problem), 1.0)
            root = find(node.name)
            votes[root] = votes.get(root, 0.0) + (weight if params[node.name]["layout"] else -weight)
    roots = sorted({find(n) for n in flexible})
    index = {root: i for i, root in enumerate(roots)}
    layouts: dict[int, tuple[int, ...] | None] = {index[r]: (NHWC if votes.get(r, 0.0) > 0 else None) for r in roots}
    region_of = {name: index[find(name)] for name in flexible}

    node_layout: dict[str, tuple[int, ...] | None] = {}
    for node in graph.nodes:
        if node.name not in flexible:
            continue
        layout = layouts[region_of[node.name]]
        call = lowered.get(node.name)
        if call is not None and call.op in FLEXIBLE_KERNELS:
            if bool(params[node.name]["layout"]) != bool(layout):
                params[node.name] = relayout(node, params[node.name], 1 if layout else 0)
            # a kernel that cannot switch (NHWC pooling needs C % 4 == 0) keeps its own layout
            layout = NHWC if params[node.name]["layout"] else None
        node_layout[node.name] = layout
        graph.value(node.output).layout = layout
    # a kernel reads each input in the order its spec declares (a runtime conv weight may need HWIO)
    kernel_wants = {
        node.name: get_op(call.op).input_layouts(call.problem, params[node.name])
        for node in graph.nodes
        if (call := lowered.get(node.name)) is not None and node.name in params and node.op != "elementwise"
    }
    conversions, views = _insert_conversions(graph, node_layout, kernel_wants)
    return LayoutPlan(region_of, layouts, conversions, views)


def _relayout(graph: Graph, src: str, dst: str, origin: str) -> tuple[Node, bool]:
    """Return the node writing ``src`` into ``dst`` (same logical tensor, other layout) and whether it is free.

    Logically the node is an identity: a reshape (a view) when only size-1 axes move, else an identity
    transpose whose kernel moves the bytes (the session derives the physical permutation from the layouts).
    """
    a, b = graph.value(src), graph.value(dst)
    free = is_free(a.shape, a.layout, b.layout)
    op, attrs = ("reshape", {}) if free else ("transpose", {"perm": tuple(range(len(a.shape)))})
    return Node(graph.fresh_name(f"{src}/relayout"), op, [src], [dst], attrs, origin), free


def _insert_conversions(
    graph: Graph,
    node_layout: dict[str, tuple[int, ...] | None],
    kernel_wants: Mapping[str, Sequence[tuple[int, ...] | None]],
) -> tuple[int, int]:
    made: dict[tuple[str, tuple[int, ...] | None], str] = {}
    out_nodes: list[Node] = []
    conversions = views = 0

    def convert(name: str, layout: tuple[int, ...] | None, origin: str) -> str:
        nonlocal conversions, views
        value = graph.value(name)
        if value.is_const or value.layout == layout:
            return name
        key = (name, layout)
        if key not in made:
            new = graph.fresh_name(f"{name}/{'nhwc' if layout else 'nchw'}")
            graph.values[new] = Value(new, value.shape, layout=layout)
            node, free = _relayout(graph, name, new, origin)
            out_nodes.append(node)
            made[key] = new
            views += free
            conversions += not free
        return made[key]

    for node in graph.nodes:
        want = node_layout.get(node.name)
        declared = None if node.op in FOLLOWERS else kernel_wants.get(node.name)
        inputs: list[str] = []
        for k, i in enumerate(node.inputs):
            if not i:
                inputs.append(i)
            elif declared is not None:  # a kernel: the order it reads (None: logical), whatever the rank
                inputs.append(convert(i, declared[k] if k < len(declared) else None, node.origin))
            else:  # follows its region: 4-D inputs in the region's layout
                inputs.append(convert(i, want if len(graph.value(i).shape) == 4 else None, node.origin))
        node.inputs = inputs
        out_nodes.append(node)
    graph.nodes = out_nodes
    # model outputs leave in NCHW: the producer writes a renamed tensor, a conversion restores the name
    for name in graph.outputs:
        value = graph.value(name)
        if value.layout is None:
            continue
        inner = graph.fresh_name(f"{name}/nhwc")
        producer = graph.producers()[name]
        producer.outputs = [inner if o == name else o for o in producer.outputs]
        for other in graph.nodes:
            if other is not producer:
                other.inputs = [inner if i == name else i for i in other.inputs]
        graph.values[inner] = Value(inner, value.shape, layout=value.layout)
        value.layout = None
        node, free = _relayout(graph, inner, name, producer.origin)
        graph.nodes.append(node)
        views += free
        conversions += not free
    return conversions, views
