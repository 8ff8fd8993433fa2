"""Shape arguments of ``kernelforge run`` and ``export``: ``--shape``, ``--dim`` and ``--variant``.

A model's graph inputs declare dims as integers or as names of symbolic dims (``[batch, seq]``). Bindings fix
them: ``--shape NAME=DxD...`` an input's whole shape, ``--dim SYMBOL=N`` a symbolic dim wherever it occurs, and
each ``--variant`` a set of either (``input_ids=1x32,attention_mask=1x32`` or ``seq=32``). :func:`resolve`
turns the bindings into the ``input_shapes`` that :func:`kernelforge.load` and :func:`kernelforge.export.export`
take: every input with a symbolic dim gets a full static shape, a symbolic leading dim left open becomes 1 (as
the importer does), and anything else is a :class:`ShapeUsageError` naming the argument and what to give.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from kernelforge.errors import KernelforgeError

Declared = Mapping[str, tuple[int | str, ...] | None]
"""Graph input name -> declared dims (ints, or symbolic names, ``"?"`` for an unnamed one); None: no shape."""


class ShapeUsageError(KernelforgeError):
    """A shape argument that is ill-formed or does not fit the model (a usage error: exit code 2)."""


@dataclass(frozen=True)
class Bindings:
    """What one argument (or one ``--variant``) fixes: whole input shapes and symbolic dims, each with its source."""

    shapes: dict[str, tuple[tuple[int, ...], str]] = field(default_factory=dict)
    """Input name -> (shape, the argument that gave it, for messages)."""
    dims: dict[str, tuple[int, str]] = field(default_factory=dict)
    """Symbolic dim -> (size, the argument that gave it)."""


def _show(shape: Iterable[int | str]) -> str:
    return "x".join(map(str, shape))


def _parse_shape(text: str, where: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(d) for d in text.lower().split("x"))
    except ValueError:
        raise ShapeUsageError(f"{where}: {text!r} is not a shape like 1x128 (sizes joined by x)") from None
    if any(d < 1 for d in shape):
        raise ShapeUsageError(f"{where}: sizes must be >= 1, got {text!r}")
    return shape


def _parse_size(text: str, where: str) -> int:
    try:
        size = int(text)
    except ValueError:
        raise ShapeUsageError(f"{where}: {text!r} is not a size (an integer >= 1)") from None
    if size < 1:
        raise ShapeUsageError(f"{where}: sizes must be >= 1, got {size}")
    return size


def _items(texts: Sequence[str], flag: str) -> list[tuple[str, str, str]]:
    """Split ``KEY=VALUE[,KEY=VALUE...]`` arguments into (key, value, the item as written)."""
    items = []
    for text in texts:
        parts = [p.strip() for p in text.split(",") if p.strip()]
        if not parts:
            raise ShapeUsageError(f"{flag} {text!r}: names nothing (expected NAME=VALUE)")
        for part in parts:
            key, sep, value = (s.strip() for s in part.partition("="))
            if not sep or not key or not value:
                raise ShapeUsageError(f"{flag} {part!r}: expected NAME=VALUE")
            items.append((key, value, part))
    return items


def symbols(declared: Declared) -> dict[str, list[str]]:
    """Return each named symbolic dim -> the inputs that declare it."""
    found: dict[str, list[str]] = {}
    for name, dims in declared.items():
        for d in dims or ():
            if isinstance(d, str) and d != "?" and name not in found.setdefault(d, []):
                found[d].append(name)
    return found


def _describe(declared: Declared) -> str:
    return ", ".join(
        f"{n} [{', '.join(map(str, d))}]" if d is not None else f"{n} (no shape)" for n, d in declared.items()
    )


def _add_shape(out: Bindings, declared: Declared, name: str, text: str, where: str) -> None:
    if name not in declared:
        raise ShapeUsageError(f"{where}: the model has no input {name!r} (inputs: {_describe(declared)})")
    shape = _parse_shape(text, where)
    dims = declared[name]
    if dims is not None:
        fits = len(dims) == len(shape) and all(
            not isinstance(d, int) or d == s for d, s in zip(dims, shape, strict=True)
        )
        if not fits:
            raise ShapeUsageError(
                f"{where}: {_show(shape)} does not fit the model's {name} [{', '.join(map(str, dims))}]"
            )
    if name in out.shapes:
        raise ShapeUsageError(f"{where}: {name} is given twice")
    out.shapes[name] = (shape, where)


def _add_dim(out: Bindings, declared: Declared, symbol: str, text: str, where: str) -> None:
    known = symbols(declared)
    if symbol not in known:
        have = ", ".join(known) or "none"
        raise ShapeUsageError(f"{where}: the model has no symbolic dim {symbol!r} (its symbolic dims: {have})")
    if symbol in out.dims:
        raise ShapeUsageError(f"{where}: {symbol} is given twice")
    out.dims[symbol] = (_parse_size(text, where), where)


def parse_flags(shapes: Sequence[str], dims: Sequence[str], declared: Declared) -> Bindings:
    """Return the bindings of ``--shape NAME=DxD...`` and ``--dim SYMBOL=N`` (each repeatable, or comma-joined).

    Raises:
        ShapeUsageError: For an ill-formed item, an unknown input or symbolic dim, a shape that contradicts the
            model's fixed dims, or one name given twice.
    """
    out = Bindings()
    for name, value, part in _items(shapes, "--shape"):
        _add_shape(out, declared, name, value, f"--shape {part}")
    for symbol, value, part in _items(dims, "--dim"):
        _add_dim(out, declared, symbol, value, f"--dim {part}")
    return out


def parse_variant(text: str, declared: Declared, index: int) -> Bindings:
    """Return the bindings of ``--variant`` number ``index``: ``NAME=DxD...`` (an input), ``SYMBOL=N`` (a dim).

    A key that names an input is a shape (an input wins over a symbolic dim of the same name); any other key
    must be a symbolic dim.
    """
    out = Bindings()
    for key, value, part in _items([text], f"--variant {index}"):
        where = f"--variant {index} ({part})"
        if key in declared:
            _add_shape(out, declared, key, value, where)
        elif key in symbols(declared):
            _add_dim(out, declared, key, value, where)
        else:
            raise ShapeUsageError(
                f"{where}: {key!r} is neither an input ({', '.join(declared) or 'none'}) nor a symbolic dim "
                f"({', '.join(symbols(declared)) or 'none'}) of the model"
            )
    return out


def from_arrays(arrays: Mapping[str, tuple[int, ...]]) -> Bindings:
    """Return the shapes of ``--input NAME=FILE.npy`` arrays as bindings (they must agree with the other arguments)."""
    return Bindings(
        shapes={name: (tuple(shape), f"--input {name} (shape {_show(shape)})") for name, shape in arrays.items()}
    )


def resolve(declared: Declared, *layers: Bindings) -> dict[str, tuple[int, ...]]:
    """Return ``input_shapes``: a static shape for every input with a symbolic dim or no declared shape.

    Inputs whose declared dims are all integers are left out (the importer takes them as declared). Every layer
    must agree with the others: one symbolic dim has one size across inputs and arguments.

    Raises:
        ShapeUsageError: For two arguments that disagree, a non-leading symbolic dim nothing sets, or an input
            that declares no shape and is given none.
    """
    shapes: dict[str, tuple[tuple[int, ...], str]] = {}
    sizes: dict[str, tuple[int, str]] = {}

    def bind(symbol: str, size: int, where: str) -> None:
        if symbol in sizes and sizes[symbol][0] != size:
            have, first = sizes[symbol]
            raise ShapeUsageError(f"{where} makes {symbol} {size}, but {first} makes it {have}")
        sizes.setdefault(symbol, (size, where))

    for layer in layers:
        for symbol, (size, where) in layer.dims.items():
            bind(symbol, size, where)
        for name, (shape, where) in layer.shapes.items():
            if name in shapes and shapes[name][0] != shape:
                raise ShapeUsageError(
                    f"{where} gives {name} {_show(shape)}, but {shapes[name][1]} gives {_show(shapes[name][0])}"
                )
            shapes.setdefault(name, (shape, where))
    for name, (shape, where) in shapes.items():
        for d, s in zip(declared[name] or (), shape, strict=False):
            if isinstance(d, str) and d != "?":
                bind(d, s, where)
    out: dict[str, tuple[int, ...]] = {}
    for name, dims in declared.items():
        if name in shapes:
            out[name] = shapes[name][0]
            continue
        if dims is None:
            raise ShapeUsageError(f"the model's input {name!r} declares no shape: give it with --shape {name}=DxD...")
        if all(isinstance(d, int) for d in dims):
            continue
        full = []
        for k, d in enumerate(dims):
            if isinstance(d, int):
                full.append(d)
            elif d in sizes:
                full.append(sizes[d][0])
            elif k == 0:
                full.append(1)  # a symbolic batch dim: one sample, as the importer takes it
            else:
                example = "x".join(str(x) if isinstance(x, int) else "1" if j == 0 else "N" for j, x in enumerate(dims))
                named = f"--dim {d}=N or " if d != "?" else ""
                raise ShapeUsageError(
                    f"the model's input {name!r} [{', '.join(map(str, dims))}] has symbolic dim {k} ({d!r}) and "
                    f"only a leading one defaults (to 1): give {named}--shape {name}={example}"
                )
        out[name] = tuple(full)
    return out


def variants(declared: Declared, base: Bindings, texts: Sequence[str]) -> list[dict[str, tuple[int, ...]]]:
    """Return the ``input_shapes`` of each ``--variant`` (``base``, the ``--shape``/``--dim`` arguments, under each).

    Raises:
        ShapeUsageError: As :func:`resolve`, or for two variants that give the same shapes.
    """
    out: list[dict[str, tuple[int, ...]]] = []
    for k, text in enumerate(texts, start=1):
        shapes = resolve(declared, base, parse_variant(text, declared, k))
        if shapes in out:
            same = out.index(shapes) + 1
            raise ShapeUsageError(f"--variant {k} ({text}) gives the shapes of --variant {same} ({texts[same - 1]})")
        out.append(shapes)
    return out
