"""Sessions on the software GPU: whole models against ONNX Runtime, fusion and memory targets, errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper

import kernelforge
from kernelforge.errors import ShapeError
from kernelforge.graph.ir import GraphError
from kernelforge.testing.models import MODELS, min_opset

pytestmark = pytest.mark.device

RTOL = 1e-3  # of the output's largest magnitude, as the issue asks


@pytest.fixture(scope="module", params=["wgsl", "glsl"])
def device(request: pytest.FixtureRequest) -> tuple[Any, str]:
    """(device info, language): lavapipe for WGSL, llvmpipe-GL for GLSL."""
    backend = request.getfixturevalue("lavapipe" if request.param == "wgsl" else "gl")
    return backend.info, request.param


def _feeds(session: Any, seed: int = 0) -> dict[str, np.ndarray]:
    return session.random_feeds(np.random.default_rng(seed))


def assert_matches_ort(model: onnx.ModelProto | str | Path, outputs: dict[str, np.ndarray], feeds: dict) -> None:
    """Compare every output with ONNX Runtime CPU within RTOL of the output's largest magnitude."""
    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    sess = ort.InferenceSession(source, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    expected = dict(zip(names, sess.run(None, feeds), strict=True))
    assert sorted(outputs) == sorted(expected)
    for name, want in expected.items():
        got = outputs[name]
        assert got.shape == want.shape, name
        assert got.dtype == want.dtype, f"{name}: {got.dtype}, ONNX Runtime gives {want.dtype}"
        if want.dtype.kind != "f":  # integers and bools: exactly
            np.testing.assert_array_equal(got, want, err_msg=name)
            continue
        scale = max(float(np.abs(want).max(initial=0.0)), 1e-6)  # an empty output has no largest
        np.testing.assert_allclose(got.astype(np.float64), want, rtol=0, atol=RTOL * scale, err_msg=name)


# each model at opsets 11 and 13, where its ops exist in that opset (min_opset)
OPSET_CASES = [(name, opset) for name in sorted(MODELS) for opset in (11, 13) if opset >= min_opset(name)]


@pytest.mark.parametrize(("name", "opset"), OPSET_CASES)
def test_models_match_onnxruntime(name: str, opset: int, device: tuple[Any, str]) -> None:
    info, language = device
    model = MODELS[name](opset=opset)
    session = kernelforge.load(model, device=info.index, backend=language)
    feeds = _feeds(session)
    first = session.run(feeds)
    assert_matches_ort(model, first, feeds)
    # replaying the recorded kernels gives the same bits
    again = session.run(feeds)
    for key, value in first.items():
        np.testing.assert_array_equal(again[key], value)
    # a second input really flows through (no stale buffers)
    feeds2 = _feeds(session, seed=1)
    assert_matches_ort(model, session.run(feeds2), feeds2)


def test_mobilenet_v2_style_fuses_one_kernel_per_conv_and_halves_memory(device: tuple[Any, str]) -> None:
    info, language = device
    model = MODELS["mobilenet_v2_style"](opset=13)
    convs = sum(1 for n in model.graph.node if n.op_type == "Conv")
    session = kernelforge.load(model, device=info.index, backend=language)
    ops = [s.call.op for s in session.steps]
    assert ops.count("conv2d") == convs
    # BN, Clip and the residual Adds live in conv epilogues: no elementwise kernel is left
    assert "elementwise" not in ops
    assert session.memory.planned_bytes <= 0.5 * session.memory.naive_bytes


def test_summary_profile_and_sources(device: tuple[Any, str], tmp_path: Path) -> None:
    info, language = device
    session = kernelforge.load(MODELS["small_cnn"](), device=info.index, backend=language, db=tmp_path)
    times = session.profile(_feeds(session))
    assert [t.node for t in times] == [s.node.name for s in session.steps]
    assert all(t.seconds > 0 for t in times)
    text = session.summary(times)
    for step in session.steps:
        assert step.node.name in text
        # an empty database: every kernel runs its built-in default (maybe switched to its region's layout)
        assert step.source.split(",")[0] == "default"
    assert "total kernel time" in text and "naive" in text


def test_bad_feeds_are_named(device: tuple[Any, str]) -> None:
    info, language = device
    session = kernelforge.load(MODELS["mlp"](), device=info.index, backend=language)
    (name, shape), *_ = session.inputs
    with pytest.raises(ShapeError, match="unknown input"):
        session.run({"nope": np.zeros(shape, np.float32)})
    with pytest.raises(ShapeError, match="missing input"):
        session.run({})
    with pytest.raises(ShapeError, match=f"input '{name}': expected shape"):
        session.run({name: np.zeros((*shape, 1), np.float32)})
    with pytest.raises(ShapeError, match=f"input '{name}': expected float data, got dtype <U1"):
        session.run({name: np.full(shape, "x")})


def test_typed_inputs_are_checked_and_outputs_typed(device: tuple[Any, str]) -> None:
    info, language = device
    session = kernelforge.load(MODELS["masked_tokens"](), device=info.index, backend=language)
    assert session.dtypes == {
        "ids": "int64", "x": "float32", "h": "float16", "y": "float32", "y16": "float16", "mask": "bool",
        "twice": "int64",
    }  # fmt: skip
    feeds = {"ids": np.array([[0, 3, 1, 0, 7, 2, 0, 5]]), "x": np.ones((1, 8)), "h": np.zeros((1, 8), np.float16)}
    out = session.run(feeds)
    assert out["twice"].dtype == np.int64 and out["twice"].tolist() == [[0, 6, 2, 0, 14, 4, 0, 10]]
    assert out["mask"].dtype == np.bool_ and out["mask"].tolist() == [[v > 0 for v in feeds["ids"][0]]]
    np.testing.assert_allclose(out["y"], np.where(feeds["ids"] > 0, 0.2, 0.0), atol=1e-6)
    # an int32 array feeds an int64 input too: lossless, though ONNX Runtime would refuse it
    np.testing.assert_array_equal(session.run({**feeds, "ids": feeds["ids"].astype(np.int32)})["twice"], out["twice"])
    with pytest.raises(ShapeError, match=r"input 'ids': expected int64 data \(integers or bools\), got dtype float"):
        session.run({**feeds, "ids": feeds["ids"].astype(np.float32)})
    big = feeds["ids"].copy()
    big[0, 5] = 1 << 25
    with pytest.raises(ShapeError, match=r"input 'ids': value 33554432 at index \(0, 5\) is beyond \+-2\*\*24"):
        session.run({**feeds, "ids": big})


def test_unsupported_nodes_are_all_listed_at_load(lavapipe: Any) -> None:
    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 4])
    nodes = [
        helper.make_node("Hardmax", ["x"], ["a"], name="first"),
        helper.make_node("Relu", ["a"], ["b"], name="fine"),
        helper.make_node("Hardmax", ["b"], ["y"], name="second"),
    ]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y]), opset_imports=[helper.make_opsetid("", 13)])
    with pytest.raises(GraphError) as err:
        kernelforge.load(model, device=lavapipe.info.index)
    text = str(err.value)
    assert "Hardmax node 'first' (opset 13)" in text and "Hardmax node 'second' (opset 13)" in text
    assert "fine" not in text


def test_truncated_file_is_a_clear_error(tmp_path: Path, lavapipe: Any) -> None:
    path = tmp_path / "cut.onnx"
    path.write_bytes(MODELS["small_cnn"]().SerializeToString()[:200])
    with pytest.raises(GraphError, match=r"cut\.onnx"):
        kernelforge.load(path, device=lavapipe.info.index)
