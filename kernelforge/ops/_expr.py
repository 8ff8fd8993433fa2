"""The elementwise expression language: a whitelisted parser, a frozen IR, its numpy reference and SSA steps.

A program such as ``relu(x*a + b) + y`` is parsed with :mod:`ast` against a strict whitelist (declared input
names, finite numeric literals, ``+ - * /``, unary ``-`` and the functions of :data:`FUNCTIONS`), then
canonicalised to a tuple tree, the IR. Shader text is generated only from the IR (see :func:`linearize` and
``templates/common/expr_*.j2``): no user text ever reaches a shader, and floats pass through the ``f32`` filter.

IR nodes are tuples ``(op, attrs, *children)``:

- ``("in", (i,))``: input ``i`` (inputs are numbered in order of first appearance in the text);
- ``("const", (value,))``: a finite float;
- ``(unary, attrs, child)`` for the ops in :data:`UNARY` (``clip`` has ``(lo, hi)``, ``hardsigmoid``
  ``(alpha, beta)``, ``leaky_relu`` ``(alpha,)``, ``powi`` an integer exponent ``(n,)``);
- ``(binary, (), left, right)`` for the ops in :data:`BINARY`;
- ``("where", (), cond, x, y)``: ``x`` where ``cond`` is not 0, else ``y``.

Comparisons and logic give 1.0 or 0.0 (a boolean tensor is a float tensor of 0 and 1 inside kernelforge), and
treat any non-zero value as true.

Canonical form: constant subtrees are folded (float64), ``-c`` is a constant, ``-0.0`` is ``0.0``, unary minus
and ``neg()`` are one op, ``pow(v, n)`` with a small integer constant ``n`` is ``powi`` (expanded into
multiplications by the templates), and ``round(a / b)`` is ``round_div(a, b)``: the float32 quotient rounded
half to even, exactly for quotients within +-2048 (quantization's range). Shader division may be off by a few
ULP (WGSL and GLSL ES allow 2.5; SwiftShader's is), which moves a quotient that float32 rounds onto a half-way
point, as quantizing ``x + 1`` on the scale of ``x`` does, to a neighbour, and the rounding with it; the
templates decide such ties exactly. Semantics follow ONNX for each function.
"""

from __future__ import annotations

import ast
import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from kernelforge.errors import ShapeError

Node = tuple[Any, ...]
"""One IR node: ``(op, attrs, *children)``."""

MAX_LENGTH = 4000
MAX_DEPTH = 64
MAX_NODES = 256
MAX_POWI = 8
"""``pow(v, n)`` with an integer constant ``|n| <= MAX_POWI`` becomes at most 7 multiplications."""

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,31}$")


class ExpressionError(ShapeError):
    """An elementwise program is malformed or uses something outside the whitelist."""


def _erf(x: np.ndarray) -> np.ndarray:
    return np.asarray(np.vectorize(math.erf, otypes=[np.float64])(x), np.float64)


def _leaky(x: np.ndarray, alpha: float) -> np.ndarray:
    return np.where(x >= 0.0, x, alpha * x)


def _round_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    # the float32 quotient (as the graph computes it) rounded half to even: a quotient that float32 rounds
    # onto a half-way point is a tie, one that float64 would put just beside it is not
    quotient = np.asarray(a, np.float64).astype(np.float32) / np.asarray(b, np.float64).astype(np.float32)
    return np.round(quotient.astype(np.float64))


# op -> (attribute count, numpy float64 implementation); ONNX semantics
UNARY: dict[str, Callable[..., np.ndarray]] = {
    "neg": lambda x: -x,
    "relu": lambda x: np.maximum(x, 0.0),
    "sigmoid": lambda x: 1.0 / (1.0 + np.exp(-x)),
    "tanh": np.tanh,
    "gelu": lambda x: 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0))),
    "hardswish": lambda x: x * np.maximum(0.0, np.minimum(1.0, x / 6.0 + 0.5)),
    "exp": np.exp,
    "sqrt": np.sqrt,
    "reciprocal": lambda x: 1.0 / x,
    "abs": np.abs,
    "clip": lambda x, lo, hi: np.minimum(np.maximum(x, lo), hi),
    "hardsigmoid": lambda x, alpha, beta: np.maximum(0.0, np.minimum(1.0, alpha * x + beta)),
    "leaky_relu": _leaky,
    "powi": lambda x, n: np.power(x, float(n)),
    "erf": _erf,
    "floor": np.floor,
    "ceil": np.ceil,
    "round": np.round,  # half to even, as ONNX Round
    "trunc": np.trunc,
    "sign": np.sign,
    "log": np.log,
    "sin": np.sin,
    "cos": np.cos,
    "logical_not": lambda x: (x == 0.0).astype(np.float64),
}
BINARY: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "add": np.add,
    "sub": np.subtract,
    "mul": np.multiply,
    "div": np.divide,
    "max": np.maximum,
    "min": np.minimum,
    "pow": np.power,
    "equal": lambda a, b: (a == b).astype(np.float64),
    "less": lambda a, b: (a < b).astype(np.float64),
    "greater": lambda a, b: (a > b).astype(np.float64),
    "less_equal": lambda a, b: (a <= b).astype(np.float64),
    "greater_equal": lambda a, b: (a >= b).astype(np.float64),
    "logical_and": lambda a, b: ((a != 0.0) & (b != 0.0)).astype(np.float64),
    "logical_or": lambda a, b: ((a != 0.0) | (b != 0.0)).astype(np.float64),
    "logical_xor": lambda a, b: ((a != 0.0) != (b != 0.0)).astype(np.float64),
    "mod": np.mod,  # floor modulo, the divisor's sign; x mod +-inf is x or the divisor (ONNX Mod-28, fmod=0)
    "fmod": np.fmod,  # the dividend's sign, as ONNX Mod with fmod=1 (C fmod)
    "round_div": _round_div,  # round(a / b), what QuantizeLinear computes: see the canonical form above
}
TERNARY: dict[str, Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]] = {
    "where": lambda c, x, y: np.where(c != 0.0, x, y),
}
ATTRS: dict[str, int] = {"clip": 2, "hardsigmoid": 2, "leaky_relu": 1, "powi": 1}
"""Number of attributes of each unary op that has any."""

# callable name -> (tensor arguments, attribute names, attribute defaults; None = required)
FUNCTIONS: dict[str, tuple[int, tuple[str, ...], tuple[float | None, ...]]] = {
    **{name: (1, (), ()) for name in UNARY if name not in ATTRS},
    "clip": (1, ("lo", "hi"), (None, None)),
    "hardsigmoid": (1, ("alpha", "beta"), (0.2, 0.5)),
    "leaky_relu": (1, ("alpha",), (0.01,)),
    **{name: (2, (), ()) for name in BINARY if name not in ("add", "sub", "mul", "div")},
    "where": (3, (), ()),
}
RESERVED = frozenset(FUNCTIONS) | {"device", "backend", "expr"}
"""Names no input may take: the functions, and the keyword parameters of ``elementwise()``."""

_BINOPS: dict[type, str] = {ast.Add: "add", ast.Sub: "sub", ast.Mult: "mul", ast.Div: "div"}
_INFIX = {"add": "+", "sub": "-", "mul": "*", "div": "/"}
_PREC = {"add": 1, "sub": 1, "mul": 2, "div": 2, "neg": 3}


def check_name(name: str) -> None:
    """Raise :class:`ExpressionError` unless ``name`` may name an input."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise ExpressionError(f"elementwise: input name {name!r} must be an identifier of at most 32 characters")
    if name in RESERVED:
        raise ExpressionError(f"elementwise: input name {name!r} is reserved (a function or a keyword)")


def _const(value: float) -> Node:
    number = float(value)
    return ("const", (0.0 if number == 0.0 else number,))


def _where(node: ast.AST, text: str) -> str:
    segment = ast.get_source_segment(text, node) or type(node).__name__
    col = getattr(node, "col_offset", 0)
    return f"{segment!r} at column {col + 1}"


class _Parser:
    def __init__(self, text: str, names: Sequence[str] | None) -> None:
        self.text = text
        self.declared = None if names is None else tuple(names)
        self.names: list[str] = []
        self.count = 0

    def fail(self, node: ast.AST, what: str) -> ExpressionError:
        return ExpressionError(f"elementwise: {what}: {_where(node, self.text)} in {self.text!r}")

    def visit(self, node: ast.AST, depth: int) -> Node:
        if depth > MAX_DEPTH:
            raise self.fail(node, f"expression nested deeper than {MAX_DEPTH} levels")
        self.count += 1
        if self.count > MAX_NODES:
            raise self.fail(node, f"expression has more than {MAX_NODES} terms")
        if isinstance(node, ast.Constant):
            value = node.value
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise self.fail(node, "only numeric literals are allowed")
            try:
                finite = math.isfinite(float(value))
            except OverflowError:
                finite = False
            if not finite:
                raise self.fail(node, "numeric literals must be finite")
            return _const(value)
        if isinstance(node, ast.Name):
            return self.name(node)
        if isinstance(node, ast.UnaryOp):
            if isinstance(node.op, ast.USub):
                return self.fold(("neg", (), self.visit(node.operand, depth + 1)), node)
            if isinstance(node.op, ast.UAdd):
                return self.visit(node.operand, depth + 1)
            raise self.fail(node, f"unsupported unary operator {type(node.op).__name__}")
        if isinstance(node, ast.BinOp):
            op = _BINOPS.get(type(node.op))
            if op is None:
                raise self.fail(node, f"unsupported operator {type(node.op).__name__} (allowed: + - * /)")
            left = self.visit(node.left, depth + 1)
            right = self.visit(node.right, depth + 1)
            return self.fold((op, (), left, right), node)
        if isinstance(node, ast.Call):
            return self.call(node, depth)
        raise self.fail(node, f"unsupported syntax {type(node).__name__}")

    def name(self, node: ast.Name) -> Node:
        name = node.id
        if name in FUNCTIONS:
            raise self.fail(node, f"function {name!r} used as a value")
        if self.declared is not None and name not in self.declared:
            raise self.fail(node, f"unknown input name {name!r} (declared: {list(self.declared)})")
        check_name(name)
        if name not in self.names:
            self.names.append(name)
        return ("in", (self.names.index(name),))

    def call(self, node: ast.Call, depth: int) -> Node:
        if not isinstance(node.func, ast.Name):
            raise self.fail(node.func, "only calls of whitelisted function names are allowed")
        fname = node.func.id
        if fname not in FUNCTIONS:
            raise self.fail(node.func, f"unknown function {fname!r} (known: {sorted(FUNCTIONS)})")
        arity, attr_names, defaults = FUNCTIONS[fname]
        npos = len(node.args)
        if any(isinstance(a, ast.Starred) for a in node.args):
            raise self.fail(node, "starred arguments are not allowed")
        if npos < arity or npos > arity + len(attr_names):
            raise self.fail(node, f"{fname}() takes {arity} tensor argument(s) and attributes {list(attr_names)}")
        args = [self.visit(a, depth + 1) for a in node.args[:arity]]
        attrs: dict[str, float] = {}
        for attr, arg in zip(attr_names, node.args[arity:], strict=False):
            attrs[attr] = self.constant(arg, depth, fname, attr)
        for kw in node.keywords:
            if kw.arg is None or kw.arg not in attr_names:
                raise self.fail(kw.value, f"{fname}() has no keyword {kw.arg!r} (attributes: {list(attr_names)})")
            if kw.arg in attrs:
                raise self.fail(kw.value, f"{fname}() got {kw.arg!r} twice")
            attrs[kw.arg] = self.constant(kw.value, depth, fname, kw.arg)
        values: list[float] = []
        for attr, default in zip(attr_names, defaults, strict=True):
            if attr not in attrs and default is None:
                raise self.fail(node, f"{fname}() needs the constant {attr!r}")
            values.append(attrs.get(attr, default if default is not None else 0.0))
        if fname == "round" and args[0][0] == "div":
            return self.fold(("round_div", (), *args[0][2:]), node)
        if fname == "pow" and args[1][0] == "const":
            exponent = args[1][1][0]
            if float(exponent).is_integer() and abs(exponent) <= MAX_POWI:
                return self.fold(("powi", (int(exponent),), args[0]), node)
        return self.fold((fname, tuple(_const(v)[1][0] for v in values), *args), node)

    def constant(self, node: ast.AST, depth: int, fname: str, attr: str) -> float:
        value = self.visit(node, depth + 1)
        if value[0] != "const":
            raise self.fail(node, f"{fname}() attribute {attr!r} must be a constant")
        return float(value[1][0])

    def fold(self, node: Node, where: ast.AST) -> Node:
        if not all(child[0] == "const" for child in node[2:]):
            return node
        with np.errstate(all="ignore"):
            value = float(evaluate(node, []))
        if not math.isfinite(value):
            raise self.fail(where, f"constant subexpression evaluates to {value}")
        return _const(value)


def parse(text: str, names: Sequence[str] | None = None) -> tuple[Node, tuple[str, ...]]:
    """Parse a program into its canonical IR.

    Args:
        text: The program, e.g. ``"relu(x*a + b) + y"``.
        names: Declared input names; ``None`` accepts any identifier that is not reserved.

    Returns:
        The IR root and the input names in order of first appearance (input ``i`` of the IR is ``names[i]``).

    Raises:
        ExpressionError: Naming the offending token and its column.
    """
    if not isinstance(text, str):
        raise ExpressionError(f"elementwise: the expression must be a string, got {type(text).__name__}")
    if len(text) > MAX_LENGTH:
        raise ExpressionError(f"elementwise: expression longer than {MAX_LENGTH} characters")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        raise ExpressionError(f"elementwise: syntax error at column {exc.offset}: {exc.msg} in {text!r}") from None
    except (RecursionError, MemoryError, ValueError) as exc:
        raise ExpressionError(f"elementwise: cannot parse {text!r}: {type(exc).__name__}") from None
    parser = _Parser(text.strip(), names)
    root = parser.visit(tree.body, 0)
    if not parser.names:
        raise ExpressionError(f"elementwise: expression {text!r} uses no input")
    return root, tuple(parser.names)


def validate(node: Any, inputs: int, depth: int = 0) -> set[int]:
    """Check that ``node`` is a well-formed IR tree over ``inputs`` inputs; return the inputs it uses.

    IR can be built without the parser (a problem dataclass is public), so this is the gate that keeps
    anything but whitelisted ops, ints and finite floats out of shader text.

    Raises:
        ExpressionError: Naming the malformed node.
    """
    if depth > 2 * MAX_DEPTH:
        raise ExpressionError("elementwise IR: nested too deeply")
    if not isinstance(node, tuple) or len(node) < 2 or not isinstance(node[0], str) or not isinstance(node[1], tuple):
        raise ExpressionError(f"elementwise IR: malformed node {node!r:.80}")
    op, attrs, children = node[0], node[1], node[2:]

    def bad(why: str) -> ExpressionError:
        return ExpressionError(f"elementwise IR: {why} in node {node!r:.80}")

    if op == "in":
        if children or len(attrs) != 1 or type(attrs[0]) is not int or not 0 <= attrs[0] < inputs:
            raise bad(f"input index must be an int in [0, {inputs})")
        return {attrs[0]}
    if op == "const":
        if children or len(attrs) != 1 or type(attrs[0]) is not float or not math.isfinite(attrs[0]):
            raise bad("a constant must be one finite float")
        return set()
    if op in TERNARY:
        if len(children) != 3 or attrs:
            raise bad("a ternary op takes three children and no attributes")
    elif op in BINARY:
        if len(children) != 2 or attrs:
            raise bad("a binary op takes two children and no attributes")
    elif op in UNARY:
        if len(children) != 1 or len(attrs) != ATTRS.get(op, 0):
            raise bad(f"{op} takes one child and {ATTRS.get(op, 0)} attribute(s)")
        if op == "powi":
            if type(attrs[0]) is not int or abs(attrs[0]) > MAX_POWI:
                raise bad(f"powi exponent must be an int with |n| <= {MAX_POWI}")
        elif any(type(a) is not float or not math.isfinite(a) for a in attrs):
            raise bad("attributes must be finite floats")
    else:
        raise bad(f"unknown op {op!r}")
    used: set[int] = set()
    for child in children:
        used |= validate(child, inputs, depth + 1)
    return used


def evaluate(node: Node, inputs: Sequence[np.ndarray]) -> np.ndarray:
    """Evaluate the IR in float64 numpy (the reference); broadcasting follows numpy."""
    op, attrs, children = node[0], node[1], node[2:]
    if op == "in":
        return np.asarray(inputs[attrs[0]], np.float64)
    if op == "const":
        return np.asarray(attrs[0], np.float64)
    args = [evaluate(c, inputs) for c in children]
    with np.errstate(all="ignore"):
        if op in TERNARY:
            return np.asarray(TERNARY[op](args[0], args[1], args[2]), np.float64)
        if op in BINARY:
            return np.asarray(BINARY[op](args[0], args[1]), np.float64)
        return np.asarray(UNARY[op](args[0], *attrs), np.float64)


def count_ops(node: Node) -> int:
    """Return the number of op nodes in the tree (leaves excluded): the flops per output element."""
    return 0 if node[0] in ("in", "const") else 1 + sum(count_ops(c) for c in node[2:])


def ops_used(node: Node) -> set[str]:
    """Return the set of ops in the tree."""
    used = {node[0]}
    for child in node[2:]:
        used |= ops_used(child)
    return used


def has_domain_ops(node: Node) -> bool:
    """Return whether the program has an op that is not finite everywhere (div, sqrt, pow, ...)."""
    return bool(ops_used(node) & {"div", "round_div", "sqrt", "reciprocal", "pow", "log", "mod", "fmod"}) or any(
        n[0] == "powi" and n[1][0] < 0 for n in _walk(node)
    )


def _walk(node: Node) -> list[Node]:
    out = [node]
    for child in node[2:]:
        out += _walk(child)
    return out


def to_text(node: Node, names: Sequence[str]) -> str:
    """Print the IR as a program that :func:`parse` turns back into the same IR (the canonical text)."""
    op, attrs, children = node[0], node[1], node[2:]
    if op == "in":
        return str(names[attrs[0]])
    if op == "const":
        return repr(float(attrs[0]))
    if op in _INFIX:
        prec = _PREC[op]
        left, right = children
        lt, rt = to_text(left, names), to_text(right, names)
        if _prec(left) < prec:
            lt = f"({lt})"
        if _prec(right) <= prec:  # a+(b+c) must keep its parentheses to print back the same tree
            rt = f"({rt})"
        return f"{lt}{_INFIX[op]}{rt}"
    if op == "neg":
        inner = to_text(children[0], names)
        return f"-({inner})" if _prec(children[0]) < _PREC["neg"] else f"-{inner}"
    args = [to_text(c, names) for c in children]
    if op == "powi":
        return f"pow({args[0]}, {attrs[0]})"
    return f"{op}({', '.join(args + [repr(float(a)) for a in attrs])})"


def _prec(node: Node) -> int:
    if node[0] == "const" and node[1][0] < 0:
        return _PREC["neg"]
    return _PREC.get(node[0], 4)


def linearize(root: Node) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Turn the IR into SSA steps for the templates, computing each distinct subtree once.

    Returns:
        ``(steps, result)``: steps are ``{"id", "op", "attrs", "args"}`` (``let t<id> = op(args)``), an operand
        is ``{"kind": "t"|"in"|"c", "index", "value"}``; ``result`` is the operand holding the program's value.
    """
    steps: list[dict[str, Any]] = []
    seen: dict[Node, dict[str, Any]] = {}

    def operand(node: Node) -> dict[str, Any]:
        if node[0] == "in":
            return {"kind": "in", "index": node[1][0], "value": 0.0}
        if node[0] == "const":
            return {"kind": "c", "index": 0, "value": float(node[1][0])}
        if node not in seen:
            args = [operand(c) for c in node[2:]]
            step = {"id": len(steps), "op": node[0], "attrs": list(node[1]), "args": args}
            steps.append(step)
            seen[node] = {"kind": "t", "index": step["id"], "value": 0.0}
        return seen[node]

    return steps, operand(root)


def broadcast_shape(shapes: Mapping[str, tuple[int, ...]]) -> tuple[int, ...]:
    """Return numpy's broadcast of the shapes.

    Raises:
        ShapeError: Naming the input whose shape does not broadcast.
    """
    out: tuple[int, ...] = ()
    for name, shape in shapes.items():
        rank = max(len(out), len(shape))
        a = (1,) * (rank - len(out)) + out
        b = (1,) * (rank - len(shape)) + tuple(shape)
        merged = []
        for axis, (x, y) in enumerate(zip(a, b, strict=True)):
            if x != y and 1 not in (x, y):
                raise ShapeError(
                    f"elementwise: input {name!r} of shape {tuple(shape)} does not broadcast with {out} "
                    f"(axis {axis}: {y} vs {x})"
                )
            merged.append(y if x == 1 else x)  # not max: a dim of 0 broadcasts against 1 to 0
        out = tuple(merged)
    return out
