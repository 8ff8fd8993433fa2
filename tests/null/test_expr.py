"""The elementwise expression language: parser whitelist, canonical IR, printer and numpy reference."""

from __future__ import annotations

import math

import numpy as np
import pytest

from kernelforge.errors import ShapeError
from kernelforge.ops import _expr
from kernelforge.ops._expr import ExpressionError, evaluate, parse, to_text, validate

X = np.linspace(-2.0, 2.0, 9)
Y = np.linspace(0.25, 3.0, 9)


def run(text: str) -> np.ndarray:
    root, names = parse(text)
    return evaluate(root, [{"x": X, "y": Y}[n] for n in names])


def _balanced(levels: int) -> str:
    text = "x"
    for _ in range(levels):
        text = f"({text})+({text})"
    return text


# every callable name, with the numpy expression it must equal (ONNX semantics)
FUNCTION_CASES = [
    ("relu(x)", np.maximum(X, 0)),
    ("clip(x, -0.5, 1.25)", np.clip(X, -0.5, 1.25)),
    ("clip(x, lo=-1, hi=0)", np.clip(X, -1, 0)),
    ("sigmoid(x)", 1 / (1 + np.exp(-X))),
    ("tanh(x)", np.tanh(X)),
    ("gelu(x)", np.array([0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in X])),
    ("hardswish(x)", X * np.clip(X / 6 + 0.5, 0, 1)),
    ("hardsigmoid(x)", np.clip(0.2 * X + 0.5, 0, 1)),
    ("hardsigmoid(x, 0.3, beta=0.1)", np.clip(0.3 * X + 0.1, 0, 1)),
    ("leaky_relu(x)", np.where(X >= 0, X, 0.01 * X)),
    ("leaky_relu(x, alpha=0.3)", np.where(X >= 0, X, 0.3 * X)),
    ("exp(x)", np.exp(X)),
    ("neg(x)", -X),
    ("sqrt(y)", np.sqrt(Y)),
    ("reciprocal(y)", 1 / Y),
    ("abs(x)", np.abs(X)),
    ("max(x, y)", np.maximum(X, Y)),
    ("min(x, 0.5)", np.minimum(X, 0.5)),
    ("pow(y, x)", Y**X),
    ("pow(x, 3)", X**3),
    ("pow(y, -2)", Y**-2.0),
    ("pow(x, 0)", np.ones_like(X)),
    ("pow(y, 0.5)", np.sqrt(Y)),
    ("erf(x)", np.array([math.erf(v) for v in X])),
    ("floor(x)", np.floor(X)),
    ("ceil(x)", np.ceil(X)),
    # X holds -1.5, -0.5, 0.5 and 1.5: ties go to the even neighbour, as ONNX Round
    ("round(x)", np.array([-2.0, -2.0, -1.0, -0.0, 0.0, 0.0, 1.0, 2.0, 2.0])),
    ("trunc(x)", np.trunc(X)),
    ("sign(x)", np.sign(X)),
    ("log(y)", np.log(Y)),
    ("sin(x)", np.sin(X)),
    ("cos(x)", np.cos(X)),
    ("logical_not(x)", (X == 0).astype(float)),
    ("equal(x, 1)", (X == 1).astype(float)),
    ("less(x, y)", (X < Y).astype(float)),
    ("greater(x, y)", (X > Y).astype(float)),
    ("less_equal(x, 0.5)", (X <= 0.5).astype(float)),
    ("greater_equal(x, 0.5)", (X >= 0.5).astype(float)),
    ("logical_and(x, y)", ((X != 0) & (Y != 0)).astype(float)),
    ("logical_or(x, 0)", (X != 0).astype(float)),
    ("logical_xor(x, 1)", (X == 0).astype(float)),
    # floor modulo takes the sign of the divisor, fmod that of the dividend (written out by hand)
    ("mod(x, 0.75)", np.array([0.25, 0.0, 0.5, 0.25, 0.0, 0.5, 0.25, 0.0, 0.5])),
    ("mod(x, -0.75)", np.array([-0.5, 0.0, -0.25, -0.5, 0.0, -0.25, -0.5, 0.0, -0.25])),
    ("fmod(x, 0.75)", np.array([-0.5, 0.0, -0.25, -0.5, 0.0, 0.5, 0.25, 0.0, 0.5])),
    ("where(greater(x, 0), x, y)", np.where(X > 0, X, Y)),
    ("round_div(x, y)", np.round(X.astype(np.float32) / Y.astype(np.float32))),
]


@pytest.mark.parametrize(("text", "expected"), FUNCTION_CASES, ids=[c[0] for c in FUNCTION_CASES])
def test_every_function_matches_numpy(text, expected):
    np.testing.assert_allclose(np.broadcast_to(run(text), X.shape), expected, rtol=1e-12, atol=1e-12)


def test_every_function_is_covered():
    called = {text.split("(")[0] for text, _ in FUNCTION_CASES}
    assert called == set(_expr.FUNCTIONS)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("x + y * 2", X + Y * 2),
        ("(x + y) * 2", (X + Y) * 2),
        ("x - y - 1", X - Y - 1),
        ("x - (y - 1)", X - (Y - 1)),
        ("x / y / 2", X / Y / 2),
        ("-x * y", -X * Y),
        ("-(x * y) + --x", -(X * Y) + X),
        ("x * -0.5 + +y", X * -0.5 + Y),
        ("relu(x * 2 + y) + y", np.maximum(X * 2 + Y, 0) + Y),
    ],
)
def test_precedence_follows_python(text, expected):
    np.testing.assert_allclose(run(text), expected, rtol=1e-12)


def test_names_are_numbered_by_first_appearance():
    root, names = parse("b * relu(a) + b + c")
    assert names == ("b", "a", "c")
    assert root[3] == ("in", (2,))  # ((b * relu(a)) + b) + c


def test_constants_fold_and_canonicalise():
    root, _ = parse("x * (2 * 3) + -(1.5)")
    assert root == ("add", (), ("mul", (), ("in", (0,)), ("const", (6.0,))), ("const", (-1.5,)))
    assert parse("x * -0.0")[0] == parse("x * 0")[0]  # -0.0 is 0.0
    assert parse("neg(x)")[0] == parse("-x")[0]
    assert parse("pow(x, 2.0)")[0] == ("powi", (2,), ("in", (0,)))
    assert parse("pow(x, 2.5)")[0][0] == "pow"
    assert parse("pow(x, 100)")[0][0] == "pow"  # too big to expand: stays a pow
    assert parse("hardsigmoid(x)")[0] == parse("hardsigmoid(x, 0.2, 0.5)")[0]
    assert parse("clip(x, 1/4, sqrt(4))")[0] == ("clip", (0.25, 2.0), ("in", (0,)))
    round_div = ("round_div", (), ("in", (0,)), ("const", (0.5,)))
    assert parse("round(x / 0.5)")[0] == parse("round_div(x, 0.5)")[0] == round_div


def test_round_div_rounds_the_float32_quotient():
    # 1 + 65 s over s is 192.49999... in float64 but 192.5 in float32: a tie, to even (QuantizeLinear's rounding)
    s = np.float32(0.00784313678741455)
    x = np.float32(65) * s + np.float32(1)
    assert float(x / s) == 192.5 and float(np.float64(x) / np.float64(s)) != 192.5
    root, _ = parse("round(x / s)")
    assert float(evaluate(root, [x, s])) == 192.0


@pytest.mark.parametrize(
    "text",
    [
        "relu(x*a + b) + y",
        "x - (y - z)",
        "x / (y * z)",
        "-(x + y) * --z",
        "x * -0.5 - -2.0",
        "clip(x, -1e-05, 1e+20) + pow(x, -3) + pow(x, y) + hardsigmoid(x, 0.1, 0.7)",
        "leaky_relu(gelu(x), 0.3) / max(min(x, 1), y)",
        "0.1 + x",
        "round(x / 0.3) + round(x) / y",
    ],
)
def test_canonical_text_parses_back_to_the_same_ir(text):
    root, names = parse(text)
    again, names2 = parse(to_text(root, names))
    assert (again, names2) == (root, names)
    assert to_text(again, names2) == to_text(root, names)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("foo(x)", "unknown function 'foo'"),
        ("x.real", "unsupported syntax Attribute"),
        ("relu(x).real", "Attribute"),
        ("x.__class__", "Attribute"),
        ("__import__('os').system('ls')", "only calls of whitelisted function names"),
        ("__import__('os')", "unknown function '__import__'"),
        ("'a' + x", "only numeric literals"),
        ("lambda: x", "unsupported syntax Lambda"),
        ("x[0]", "unsupported syntax Subscript"),
        ("(x)(y)", "unknown function 'x'"),
        ("relu(x)(y)", "only calls of whitelisted function names"),
        ("x ** 2", "unsupported operator Pow"),
        ("x // 2", "unsupported operator FloorDiv"),
        ("x < y", "unsupported syntax Compare"),
        ("not x", "unsupported unary operator Not"),
        ("True + x", "only numeric literals"),
        ("x + 1j", "only numeric literals"),
        ("x + 1e999", "finite"),
        ("x + " + "9" * 400, "finite"),
        ("relu(x, y)", "relu\\(\\) takes 1 tensor argument"),
        ("max(x)", "max\\(\\) takes 2"),
        ("clip(x, 0)", "needs the constant 'hi'"),
        ("clip(x, y, 1)", "attribute 'lo' must be a constant"),
        ("leaky_relu(x, beta=1)", "no keyword 'beta'"),
        ("hardsigmoid(x, 0.1, alpha=0.2)", "'alpha' twice"),
        ("relu(*x)", "starred"),
        ("relu + x", "function 'relu' used as a value"),
        ("x + 1/0", "constant subexpression evaluates to inf"),
        ("sqrt(-1) + x", "evaluates to nan"),
        ("1 + 2", "uses no input"),
        ("x +", "syntax error"),
        ("x; y", "syntax error"),
        ("device + x", "reserved"),
        ("relu(" * 70 + "x" + ")" * 70, "nested deeper"),
        ("-" * 100 + "x", "nested deeper"),
        ("-" * 40 + "+".join(["x"] * 100), "nested deeper"),
        (_balanced(8), "more than 256 terms"),
        ("x" + " " * 5000, "longer than"),
        (3, "must be a string"),
    ],
)
def test_everything_else_is_rejected_with_a_clear_error(text, message):
    with pytest.raises(ExpressionError, match=message):
        parse(text)


def test_errors_name_the_token_and_column():
    with pytest.raises(ExpressionError, match=r"'foo' at column 5"):
        parse("x + foo(y)")
    with pytest.raises(ShapeError, match=r"'y\.z' at column 5"):
        parse("x + y.z")
    with pytest.raises(ExpressionError, match="unknown input name 'q'"):
        parse("x + q", names=["x"])


@pytest.mark.parametrize(
    "node",
    [
        ("in", (3,)),
        ("in", (True,)),
        ("const", (float("nan"),)),
        ("const", (1,)),
        ("relu", (), ("in", (0,)), ("in", (0,))),
        ("clip", (0.0,), ("in", (0,))),
        ("clip", ("0); evil(", 1.0), ("in", (0,))),
        ("powi", (99,), ("in", (0,))),
        ("powi", (2.0,), ("in", (0,))),
        ("system", (), ("in", (0,))),
        ("add", (), ("in", (0,))),
        ["in", (0,)],
        ("in",),
    ],
)
def test_hand_built_ir_is_validated(node):
    with pytest.raises(ExpressionError):
        validate(node, 1)


def test_validate_reports_used_inputs():
    root, _ = parse("relu(x) + pow(z, y)")
    assert validate(root, 3) == {0, 1, 2}


def test_linearize_computes_shared_subtrees_once():
    root, _ = parse("relu(x * y) + relu(x * y) * 2")
    steps, result = _expr.linearize(root)
    assert [s["op"] for s in steps] == ["mul", "relu", "mul", "add"]
    assert result == {"kind": "t", "index": 3, "value": 0.0}
    assert steps[2]["args"] == [{"kind": "t", "index": 1, "value": 0.0}, {"kind": "c", "index": 0, "value": 2.0}]
    assert _expr.count_ops(root) == 6  # flops count the tree, not the deduplicated steps


def test_reference_gives_numpy_nan_and_inf():
    root, _ = parse("pow(x, y) + x / y")
    x = np.array([-8.0, 2.0, 0.0, -2.0])
    y = np.array([1 / 3, 0.0, -1.0, 3.0])
    out = evaluate(root, [x, y])
    assert np.isnan(out[0]) and np.isinf(out[1]) and np.isinf(out[2])
    assert out[3] == -8.0 + -2.0 / 3.0


def test_broadcast_shape_names_the_bad_input():
    assert _expr.broadcast_shape({"a": (3, 1, 5), "b": (4, 5), "c": ()}) == (3, 4, 5)
    with pytest.raises(ShapeError, match="input 'b' of shape \\(4,\\)"):
        _expr.broadcast_shape({"a": (3, 5), "b": (4,)})
