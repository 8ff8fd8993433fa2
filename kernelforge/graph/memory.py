"""Static memory planning: which device buffer holds each intermediate value of a graph.

Liveness is measured in node order (the order the session runs kernels). Each planned value belongs to a
*group*: a value and every view (:data:`~kernelforge.graph.ir.VIEW_OPS`) of it share one buffer, so a
group lives from its first definition to the last read of any member. Graph inputs are live from the start
of a run (they are written before the first kernel) to their last reader; graph outputs from their
definition to the end of the run (they are read back after the last kernel); a value that is both gets a
buffer of its own. Groups are placed greedily in definition order:

- a group first takes the smallest free buffer that is already large enough (best fit);
- failing that, the largest free buffer grows to the group's size, since growing a free buffer always costs
  less than a new one (buffers are allocated once, at their final size, before the run);
- only when no buffer is free is a new one added.

A buffer becomes free after the node that last reads it: a kernel never writes into a buffer it reads.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from kernelforge.graph.ir import VIEW_OPS, Graph, GraphError

_FOREVER = 1 << 62


@dataclass(frozen=True)
class _Group:
    """Values sharing one buffer (a tensor and its views) and their joint lifetime ``[start, end]``."""

    members: tuple[str, ...]
    nbytes: int
    start: int
    end: int
    pinned: bool
    """A graph input that is also a graph output: live for the whole run, never shared."""


@dataclass(frozen=True)
class MemoryPlan:
    """The buffer of every non-constant value of a graph.

    Attributes:
        buffer_of: Value name -> buffer index (views share their source's buffer).
        buffer_bytes: Size of each buffer in bytes.
        planned_bytes: Sum of ``buffer_bytes``.
        naive_bytes: Bytes if every tensor had its own buffer (a view and its source counted once).
    """

    buffer_of: dict[str, int]
    buffer_bytes: tuple[int, ...]
    planned_bytes: int
    naive_bytes: int

    def check(self, graph: Graph) -> None:
        """Prove the plan safe for ``graph``: no two values that are live at once share a buffer.

        Also checks that every planned value has a buffer large enough and that graph inputs and outputs
        share their buffer with nothing but their own views.

        Raises:
            GraphError: Naming the two values that collide, or the value that does not fit.
        """
        groups = _groups(graph)
        by_buffer: dict[int, list[_Group]] = {}
        for group in groups:
            indices = {self.buffer_of.get(name, -1) for name in group.members}
            if len(indices) != 1 or -1 in indices:
                raise GraphError(f"graph {graph.name!r}: values {list(group.members)} are not all in one buffer")
            index = indices.pop()
            if not 0 <= index < len(self.buffer_bytes) or self.buffer_bytes[index] < group.nbytes:
                raise GraphError(f"graph {graph.name!r}: buffer {index} cannot hold {group.members[0]!r}")
            by_buffer.setdefault(index, []).append(group)
        for index, sharing in by_buffer.items():
            if len(sharing) > 1 and any(g.pinned for g in sharing):
                names = [g.members[0] for g in sharing]
                raise GraphError(f"graph {graph.name!r}: buffer {index} holds a graph input/output and {names}")
            sharing.sort(key=lambda g: g.start)
            for a, b in itertools.pairwise(sharing):
                if b.start <= a.end:
                    raise GraphError(
                        f"graph {graph.name!r}: {a.members[0]!r} (live {a.start}..{a.end}) and {b.members[0]!r} "
                        f"(live {b.start}..{b.end}) share buffer {index}"
                    )


def _groups(graph: Graph) -> list[_Group]:
    """Return the buffer groups of ``graph``'s non-constant values, in order of definition."""
    root: dict[str, str] = {}
    start: dict[str, int] = {}
    for name in graph.inputs:
        if not graph.value(name).is_const:
            root[name] = name
            start[name] = -1
    for index, node in enumerate(graph.nodes):
        for out in node.outputs:
            if graph.value(out).is_const:
                continue
            source = node.inputs[0] if node.op in VIEW_OPS and node.inputs else ""
            # a view of a constant has no planned buffer to alias: it gets one of its own
            root[out] = root.get(source, out)
            start.setdefault(root[out], index)
    end: dict[str, int] = dict(start)
    for index, node in enumerate(graph.nodes):
        for name in node.inputs:
            if name in root:
                end[root[name]] = max(end[root[name]], index)
    # outputs are read back after the last kernel, so they live to the end; inputs are written before the
    # first kernel and their buffers are free again after their last reader (each run rewrites them)
    outputs = {root[name] for name in graph.outputs if name in root}
    pinned = {root[name] for name in graph.inputs if name in root} & outputs
    members: dict[str, list[str]] = {}
    for name, r in root.items():
        members.setdefault(r, []).append(name)
    groups = [
        _Group(
            tuple(names),
            max(graph.value(n).nbytes for n in names),
            -1 if r in pinned else start[r],
            _FOREVER if r in outputs else end[r],
            r in pinned,
        )
        for r, names in members.items()
    ]
    return sorted(groups, key=lambda g: g.start)


def plan_memory(graph: Graph) -> MemoryPlan:
    """Assign every non-constant graph input and node output a buffer, reusing buffers of dead values.

    See the module docstring for the placement rule.

    Returns:
        The plan; :meth:`MemoryPlan.check` holds for it.
    """
    groups = _groups(graph)
    sizes: list[int] = []
    buffer_of: dict[str, int] = {}
    free: list[int] = []
    busy: list[tuple[int, int]] = []  # (end, buffer) of groups holding a shared buffer
    for group in groups:
        if group.pinned:
            index = len(sizes)
            sizes.append(group.nbytes)
        else:
            free += [buffer for end, buffer in busy if end < group.start]
            busy = [(end, buffer) for end, buffer in busy if end >= group.start]
            index = _take(free, sizes, group.nbytes)
            busy.append((group.end, index))
        for name in group.members:
            buffer_of[name] = index
    naive = sum(g.nbytes for g in groups)
    return MemoryPlan(buffer_of, tuple(sizes), sum(sizes), naive)


def _take(free: list[int], sizes: list[int], nbytes: int) -> int:
    """Remove and return the free buffer for ``nbytes`` (best fit, else grow the largest, else a new one)."""
    fitting = [b for b in free if sizes[b] >= nbytes]
    if fitting:
        index = min(fitting, key=lambda b: (sizes[b], b))
    elif free:
        index = max(free, key=lambda b: (sizes[b], -b))
        sizes[index] = nbytes
    else:
        sizes.append(nbytes)
        return len(sizes) - 1
    free.remove(index)
    return index
