"""int4 weights rounded against calibration inputs (kernelforge.graph.gptq): GPTQ, im2col rows, bias correction."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from kernelforge.errors import ExportError
from kernelforge.export import export
from kernelforge.graph.gptq import gptq_int4, input_rows
from kernelforge.graph.ir import GraphError
from kernelforge.graph.onnx_import import import_model
from kernelforge.graph.passes import optimize
from kernelforge.graph.prepare import prepare_graph
from kernelforge.graph.reference import run_graph
from kernelforge.ops import _qweight
from kernelforge.testing.models import MODELS

REPO_DB = Path(__file__).resolve().parents[2] / "tuning_db"


def _nearest(w: np.ndarray, group: int) -> np.ndarray:
    scales = _qweight.int4_scales(w, 1, group)
    full = _qweight.int4_expand(scales, w.shape, 1, group)
    return np.clip(np.rint(w / full), -7, 7) * full


def test_gptq_with_an_identity_hessian_is_nearest_rounding() -> None:
    w = np.random.default_rng(0).standard_normal((70, 5)).astype(np.float32)  # a short last group
    q, scales = gptq_int4(w, np.eye(70), 32)
    assert q.dtype == np.int8 and np.abs(q).max() == 7 and scales.shape == (3, 5)
    np.testing.assert_array_equal(q * _qweight.int4_expand(scales, w.shape, 1, 32), _nearest(w, 32))


def test_gptq_moves_less_of_the_output_than_nearest_rounding_on_correlated_inputs() -> None:
    rng = np.random.default_rng(1)
    k = 96
    x = rng.standard_normal((2000, 8)) @ rng.standard_normal((8, k)) + 0.3 * rng.standard_normal((2000, k))
    w = rng.standard_normal((k, 16)).astype(np.float32)
    q, scales = gptq_int4(w, x.T @ x, 32)
    assert np.abs(q).max() <= 7
    gptq = q * _qweight.int4_expand(scales, w.shape, 1, 32)
    moved = {name: np.linalg.norm(x @ (w - r)) for name, r in (("gptq", gptq), ("nearest", _nearest(w, 32)))}
    assert moved["gptq"] < 0.5 * moved["nearest"], moved


def test_gptq_zeroes_the_weights_of_an_input_that_is_always_zero() -> None:
    rng = np.random.default_rng(2)
    x = rng.standard_normal((500, 40))
    x[:, 3] = 0
    q, _ = gptq_int4(rng.standard_normal((40, 6)).astype(np.float32), x.T @ x, 32)
    assert not q[3].any() and q[4].any()


def _conv_model(group: int) -> onnx.ModelProto:
    w = np.random.default_rng(3).standard_normal((6, 4 // group, 3, 3)).astype(np.float32)
    node = helper.make_node("Conv", ["x", "w"], ["y"], strides=[2, 1], pads=[1, 0, 2, 1], dilations=[1, 2], group=group)
    graph = helper.make_graph(
        [node],
        "conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4, 9, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(w, "w")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


@pytest.mark.parametrize("group", [1, 2])
def test_conv_rows_times_the_weights_k_by_channel_are_the_convolution(group: int) -> None:
    model = _conv_model(group)
    graph = optimize(import_model(model))
    (node,) = [n for n in graph.nodes if n.op == "conv2d"]
    x = np.random.default_rng(4).standard_normal((2, 4, 9, 8)).astype(np.float32)
    (want,) = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    kc = _qweight.k_by_channel(graph.value(node.inputs[1]).data, 0)  # [K, channels]
    rows = input_rows(graph, node, x)
    assert len(rows) == group
    per = kc.shape[1] // group
    got = np.concatenate([r @ kc[:, g * per : (g + 1) * per] for g, r in enumerate(rows)], axis=1)
    n, m, oh, ow = want.shape
    np.testing.assert_allclose(got, want.transpose(0, 2, 3, 1).reshape(n * oh * ow, m), rtol=1e-5, atol=1e-5)


def _gemm_model(bias: bool) -> onnx.ModelProto:
    rng = np.random.default_rng(5)
    inits = [numpy_helper.from_array(rng.standard_normal((64, 12)).astype(np.float32), "w")]
    if bias:
        inits.append(numpy_helper.from_array(rng.standard_normal(12).astype(np.float32), "b"))
    node = helper.make_node("Gemm", ["x", "w", "b"] if bias else ["x", "w"], ["y"])
    graph = helper.make_graph(
        [node],
        "gemm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [16, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [16, 12])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


@pytest.mark.parametrize("bias", [False, True])
def test_bias_correction_keeps_each_outputs_mean_over_the_calibration_inputs(bias: bool) -> None:
    model = _gemm_model(bias)
    rng = np.random.default_rng(6)
    calibration = [{"x": (rng.standard_normal((16, 64)) + 1.5).astype(np.float32)} for _ in range(4)]
    fp32 = prepare_graph(model)
    nearest, gptq = prepare_graph(model, weights="int4"), prepare_graph(model, weights="int4", calibration=calibration)
    (node,) = [n for n in gptq.nodes if n.op == "gemm"]
    assert node.attrs["weight_quant"] == "int4" and node.inputs[2]  # a bias, added where the model had none

    def mean(graph: object) -> np.ndarray:
        return np.mean([run_graph(graph, f)["y"] for f in calibration], axis=(0, 1))  # type: ignore[arg-type]

    exact = mean(fp32)
    spread = float(np.abs(exact).max())
    assert np.abs(mean(nearest) - exact).max() > 1e-3 * spread  # rounding moved the means
    np.testing.assert_allclose(mean(gptq), exact, rtol=0, atol=1e-5 * spread)


def test_calibration_feeds_of_the_wrong_shape_or_input_are_named() -> None:
    model = _gemm_model(False)
    with pytest.raises(GraphError, match=r"calibration feed 2: input 'x' has shape \(16, 63\)"):
        prepare_graph(model, weights="int4", calibration=[{"x": np.zeros((16, 64))}, {"x": np.zeros((16, 63))}])
    with pytest.raises(GraphError, match="calibration feed 1: no array fed for input 'x'"):
        prepare_graph(model, weights="int4", calibration=[{"y": np.zeros((16, 64))}])


def test_export_int4_with_calibrate_rounds_against_the_file_and_says_so(tmp_path: Path) -> None:
    model = MODELS["small_cnn"]()
    rng = np.random.default_rng(8)
    np.savez(tmp_path / "cal.npz", x=rng.standard_normal((6, 1, 3, 32, 32)).astype(np.float32))
    plain = export(model, tmp_path / "plain", db=REPO_DB, weights="int4")
    calibrated = export(model, tmp_path / "cal", db=REPO_DB, weights="int4", calibrate=tmp_path / "cal.npz")
    assert "nearest level" in plain.summary() and "--calibrate" in plain.summary()
    assert f"GPTQ and bias correction against the 6 inputs of {tmp_path / 'cal.npz'}" in calibrated.summary()
    assert (tmp_path / "plain" / "weights.bin").read_bytes() != (tmp_path / "cal" / "weights.bin").read_bytes()
    with pytest.raises(ExportError, match="several variants"):
        export(
            model,
            tmp_path / "v",
            db=REPO_DB,
            weights="int4",
            calibrate=tmp_path / "cal.npz",
            variants=[{"x": [1, 3, 32, 32]}, {"x": [2, 3, 32, 32]}],
        )
