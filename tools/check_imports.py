"""Fail on an import cycle among kernelforge's modules, or on an import that points up the layers.

    python tools/check_imports.py [--graph] [--root DIR]

Every ``import`` statement counts, wherever it is (module level, inside a function, under TYPE_CHECKING): a
cycle hidden by a function-level import is still a cycle. Package ``__init__`` files are modules of their own.
An edge goes to the module named (``from a.b import c`` goes to ``a.b.c`` when that is a module, else to
``a.b``); importing a submodule does not count as importing its parent package.

Layers, lowest first; a module may import its own layer and those below it, never one above:
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "kernelforge"

LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("base", ("kernelforge._version", "kernelforge._config", "kernelforge.errors")),
    ("ops", ("kernelforge.ops",)),
    ("templates", ("kernelforge.templates",)),
    ("devices", ("kernelforge.devices",)),
    ("db", ("kernelforge.db",)),
    ("graph", ("kernelforge.graph",)),
    ("runtime", ("kernelforge.runtime",)),
    ("api, tuner, export", ("kernelforge.api", "kernelforge.tuner", "kernelforge.export")),
    ("testing, cli, package", ("kernelforge.testing", "kernelforge.cli", "kernelforge")),
]
"""Each layer's module prefixes (the longest matching prefix decides); ``kernelforge`` itself is the top."""

__doc__ = (__doc__ or "") + "".join(f"\n    {i}. {name}: {', '.join(p)}" for i, (name, p) in enumerate(LAYERS))


def modules(root: Path) -> dict[str, Path]:
    """Return module name -> file for every module of the package under ``root``."""
    found = {}
    for path in sorted((root / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Return the package modules ``name`` imports anywhere in its file."""
    is_package = path.name == "__init__.py"
    edges = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".") if is_package else name.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        edges.update(t for t in targets if t in known and t != name)
    return edges


def layer_of(name: str) -> int:
    """Return the index of the layer a module belongs to (the longest matching prefix)."""
    best, best_len = len(LAYERS) - 1, -1
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (name == prefix or name.startswith(prefix + ".")) and len(prefix) > best_len:
                best, best_len = index, len(prefix)
    return best


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """Return one import cycle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def largest_cycle(graph: dict[str, set[str]]) -> int:
    """Return how many modules the largest strongly connected component (a knot of cycles) holds."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    best = 0

    def connect(node: str) -> None:
        nonlocal best
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            size = 0
            while True:
                member = stack.pop()
                on_stack.discard(member)
                size += 1
                if member == node:
                    break
            best = max(best, size if size > 1 else 0)

    sys.setrecursionlimit(10_000)
    for node in sorted(graph):
        if node not in index:
            connect(node)
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--graph", action="store_true", help="print every module's imports")
    parser.add_argument("--root", type=Path, default=ROOT, help="the checkout to check (default: this one)")
    args = parser.parse_args()
    found = modules(args.root)
    known = set(found)
    graph = {name: imports(name, path, known) for name, path in found.items()}
    if args.graph:
        for name in sorted(graph):
            print(f"{name} ({LAYERS[layer_of(name)][0]}) -> {', '.join(sorted(graph[name])) or '-'}")
    status = 0
    cycle = find_cycle(graph)
    if cycle:
        print("import cycle: " + " -> ".join(cycle))
        print(f"the largest knot of import cycles spans {largest_cycle(graph)} modules")
        status = 1
    upward = [
        (a, b) for a in sorted(graph) for b in sorted(graph[a]) if layer_of(b) > layer_of(a)
    ]  # fmt: skip
    for a, b in upward:
        print(f"upward import: {a} ({LAYERS[layer_of(a)][0]}) imports {b} ({LAYERS[layer_of(b)][0]})")
        status = 1
    if status == 0:
        edges = sum(len(v) for v in graph.values())
        print(f"imports ok: {len(graph)} modules, {edges} imports, no cycle, none pointing up {len(LAYERS)} layers")
    return status


if __name__ == "__main__":
    sys.exit(main())
