"""The test-model builders: checker-valid at every opset they claim, runnable in onnxruntime, deterministic."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from kernelforge.testing.models import MODELS, min_opset, save

# (builder, expected output shapes at batch 1 with the default size)
EXPECTED = {
    "mlp": [(1, 10)],
    "small_cnn": [(1, 10)],
    "mobilenet_v2_style": [(1, 10)],
    "resnet18_style": [(1, 10)],
    "elementwise_mix": [(1, 8), (1, 8, 20, 20)],
    "masked_tokens": [(1, 8)] * 4,
}
CASES = [(name, opset) for name in MODELS for opset in (9, 11, 13) if opset >= min_opset(name)]


def _run(model: onnx.ModelProto, seed: int = 0) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds_for(model, seed))


def feeds_for(model: onnx.ModelProto, seed: int = 0) -> dict[str, np.ndarray]:
    """Random feeds of each input's dtype: standard normal floats, integers in 0..4 (ids, with 0 as padding)."""
    rng = np.random.default_rng(seed)
    feeds = {}
    initializers = {t.name for t in model.graph.initializer}
    for i in model.graph.input:
        if i.name in initializers:  # old models list their weights as inputs too
            continue
        shape = [d.dim_value or 1 for d in i.type.tensor_type.shape.dim]  # a symbolic dim: 1
        dtype = onnx.helper.tensor_dtype_to_np_dtype(i.type.tensor_type.elem_type)
        feeds[i.name] = (rng.standard_normal(shape) if dtype.kind == "f" else rng.integers(0, 5, shape)).astype(dtype)
    return feeds


def test_registry_is_complete():
    assert set(MODELS) == set(EXPECTED)


@pytest.mark.parametrize(("name", "opset"), CASES)
def test_builds_checks_and_runs(name, opset):
    model = MODELS[name](opset=opset)
    onnx.checker.check_model(model, full_check=True)
    assert model.opset_import[0].version == opset
    outputs = _run(model)
    assert [o.shape for o in outputs] == EXPECTED[name]
    for out in outputs:
        assert np.isfinite(out).all()
        assert np.abs(out.astype(np.float64)).max() > 0  # an all-zero output would hide wrong kernels downstream


def test_clip_form_follows_opset():
    old = MODELS["mobilenet_v2_style"](opset=9)
    new = MODELS["mobilenet_v2_style"](opset=11)
    old_clips = [n for n in old.graph.node if n.op_type == "Clip"]
    new_clips = [n for n in new.graph.node if n.op_type == "Clip"]
    assert old_clips and len(old_clips) == len(new_clips)
    assert all(len(n.input) == 1 and {a.name for a in n.attribute} == {"min", "max"} for n in old_clips)
    assert all(len(n.input) == 3 and not n.attribute for n in new_clips)
    # same weights, same function: the two forms must agree
    np.testing.assert_allclose(_run(old)[0], _run(new)[0], rtol=1e-5, atol=1e-6)


def test_elementwise_mix_covers_its_ops_and_hardswish_forms():
    ops = {n.op_type for n in MODELS["elementwise_mix"](opset=14).graph.node}
    wanted = "Sub Div Pow Sqrt Exp Sigmoid Tanh HardSwish HardSigmoid LeakyRelu Max Min Sum Reciprocal Concat"
    wanted += " Transpose Reshape Pad Resize ReduceMean Unsqueeze Squeeze"
    assert set(wanted.split()) <= ops
    # opset 13 has no HardSwish: its decomposition must compute the same thing
    np.testing.assert_allclose(
        _run(MODELS["elementwise_mix"](opset=13))[1], _run(MODELS["elementwise_mix"](opset=14))[1], rtol=1e-5, atol=1e-6
    )
    with pytest.raises(ValueError, match="opset >= 11"):
        MODELS["elementwise_mix"](opset=9)


def test_batch_size_and_determinism(tmp_path):
    model = MODELS["small_cnn"](opset=13, batch=2, size=16)
    assert [o.shape for o in _run(model)] == [(2, 10)]
    path = save(model, tmp_path / "sub" / "cnn.onnx")
    assert path.read_bytes() == MODELS["small_cnn"](opset=13, batch=2, size=16).SerializeToString()
    assert onnx.load(str(path)).graph.input[0].name == "x"
