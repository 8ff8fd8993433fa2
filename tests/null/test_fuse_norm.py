"""LayerNormalization written out (ReduceMean, Sub, Pow, ReduceMean, Add, Sqrt, Div, Mul, Add) fused to one kernel."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from kernelforge.graph.onnx_import import import_model
from kernelforge.graph.passes import optimize
from kernelforge.graph.reference import run_graph

RNG = np.random.default_rng(1)


def ln_model(
    form: str = "pow_div", axes: tuple[int, ...] = (-1,), eps: float = 1e-12, runtime_gamma: bool = False,
    extra_output: bool = False, shape: tuple[int, ...] = (2, 5, 16),
) -> onnx.ModelProto:  # fmt: skip
    """The decomposed layer norm of an exporter; ``form`` picks how the square and the division are written."""
    first = min(a % len(shape) for a in axes)
    kept = {a % len(shape) for a in axes}
    channels = [shape[a] if a in kept else 1 for a in range(first, len(shape))]  # gamma and beta broadcast
    nodes = [
        helper.make_node("ReduceMean", ["x"], ["m"], axes=list(axes), keepdims=1),
        helper.make_node("Sub", ["x", "m"], ["d"]),
        helper.make_node("Pow", ["d", "two"], ["p"]) if "pow" in form else helper.make_node("Mul", ["d", "d"], ["p"]),
        helper.make_node("ReduceMean", ["p"], ["v"], axes=list(axes), keepdims=1),
        helper.make_node("Add", ["v", "eps"], ["ve"]),
        helper.make_node("Sqrt", ["ve"], ["s"]),
    ]
    if "div" in form:
        nodes.append(helper.make_node("Div", ["d", "s"], ["n"]))
    else:
        nodes += [helper.make_node("Reciprocal", ["s"], ["r"]), helper.make_node("Mul", ["r", "d"], ["n"])]
    nodes += [helper.make_node("Mul", ["g", "n"], ["ng"]), helper.make_node("Add", ["ng", "b"], ["y"])]
    inits = {
        "two": np.array(2.0, np.float32),
        "eps": np.array(eps, np.float32),
        "b": RNG.uniform(-1, 1, channels).astype(np.float32),
    }
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))]
    if runtime_gamma:
        inputs.append(helper.make_tensor_value_info("g", TensorProto.FLOAT, channels))
    else:
        inits["g"] = RNG.uniform(0.5, 1.5, channels).astype(np.float32)
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]
    if extra_output:
        outputs.append(helper.make_tensor_value_info("d", TensorProto.FLOAT, None))
    graph = helper.make_graph(nodes, "ln", inputs, outputs, [numpy_helper.from_array(v, k) for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def _check(model: onnx.ModelProto) -> list[str]:
    graph = optimize(import_model(model))
    feeds = {i.name: RNG.standard_normal([d.dim_value for d in i.type.tensor_type.shape.dim]).astype(np.float32)
             for i in model.graph.input}  # fmt: skip
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
    got = run_graph(graph, feeds)
    for out, expected in zip(model.graph.output, want, strict=True):
        np.testing.assert_allclose(got[out.name], expected, rtol=1e-5, atol=1e-5)
    return [n.op for n in graph.nodes]


@pytest.mark.parametrize("form", ["pow_div", "mul_reciprocal", "pow_reciprocal", "mul_div"])
@pytest.mark.parametrize("eps", [1e-12, 1e-5])
def test_every_written_form_becomes_one_layernorm(form: str, eps: float) -> None:
    model = ln_model(form, eps=eps)
    assert _check(model) == ["layernorm"]
    node = optimize(import_model(model)).nodes[0]
    assert node.attrs["axis"] == 2 and node.attrs["epsilon"] == pytest.approx(eps, rel=1e-6)


def test_two_trailing_axes_fuse() -> None:
    assert _check(ln_model(axes=(1, 2), shape=(2, 3, 8))) == ["layernorm"]


@pytest.mark.parametrize(
    ("kwargs", "why"),
    [
        ({"axes": (1,), "shape": (2, 6, 4)}, "a middle axis is not a layer norm"),
        ({"runtime_gamma": True}, "gamma computed at run time"),
        ({"extra_output": True}, "x - mean is also a graph output"),
    ],
)
def test_what_is_not_a_layernorm_stays(kwargs: dict, why: str) -> None:
    assert "layernorm" not in _check(ln_model(**kwargs)), why
