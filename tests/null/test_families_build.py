"""The family builders: checker-valid in both exporter styles, runnable in onnxruntime, written in each exporter's
node patterns, imported by kernelforge and computed by the IR's numpy reference as onnxruntime computes them."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from kernelforge.graph.onnx_import import import_model
from kernelforge.graph.passes import optimize
from kernelforge.graph.reference import run_graph
from kernelforge.testing.families import FAMILIES, STYLES, family_feeds, fp16, gpt2_kv, vit_tiny, yolo_style
from kernelforge.testing.quantized import quantize

CASES = [(name, style) for name in FAMILIES for style in STYLES]
RTOL = 1e-4  # of the largest output magnitude (the IR reference computes in float64)

# ONNX op types each family must (and must not) contain in each style: the patterns its exporter writes
_RUNTIME_SHAPES = {"Shape", "Gather", "Unsqueeze", "Concat", "Reshape", "Constant"}
_WRITTEN_LN = {"ReduceMean", "Sub", "Pow", "Sqrt", "Div"}
_TORCH_EXPAND = {"ConstantOfShape", "Equal", "Where", "Expand"}
PATTERNS: dict[tuple[str, str], tuple[set[str], set[str]]] = {
    ("vit_tiny", "dynamo"): (
        {"Conv", "Expand", "LayerNormalization", "Split", "Squeeze", "Erf", "Gather", "Gemm"},
        {"Shape", "Slice"},
    ),
    ("vit_tiny", "legacy"): (
        _RUNTIME_SHAPES | _WRITTEN_LN | _TORCH_EXPAND | {"Slice", "Erf"},
        {"LayerNormalization", "Split"},
    ),
    ("yolo_style", "dynamo"): (
        {"BatchNormalization", "Split", "Sigmoid", "MaxPool", "Resize", "Softmax"},
        {"Slice", "Shape"},
    ),
    ("yolo_style", "legacy"): (
        _RUNTIME_SHAPES | {"Slice", "Sigmoid", "MaxPool", "Resize"},
        {"BatchNormalization", "Split"},
    ),
    ("unet_style", "dynamo"): ({"InstanceNormalization", "Reshape", "ConvTranspose", "Concat", "Sigmoid"}, {"Shape"}),
    ("unet_style", "legacy"): ({"InstanceNormalization", "Reshape", "Shape", "ConvTranspose", "Concat"}, set()),
    ("unet_pooled", "dynamo"): ({"InstanceNormalization", "MaxPool", "Resize", "Concat"}, {"Reshape", "ConvTranspose"}),
    ("unet_pooled", "legacy"): ({"InstanceNormalization", "MaxPool", "Resize", "Concat"}, {"Reshape", "ConvTranspose"}),
    ("kws_style", "dynamo"): ({"Conv", "Erf", "MaxPool", "ReduceMean", "Gemm"}, {"GlobalAveragePool"}),
    ("kws_style", "legacy"): ({"Conv", "Erf", "MaxPool", "GlobalAveragePool", "Flatten", "Gemm"}, {"ReduceMean"}),
    ("whisper_style", "dynamo"): ({"Conv", "Erf", "LayerNormalization", "Softmax"}, {"Shape", "Slice"}),
    ("whisper_style", "legacy"): (_RUNTIME_SHAPES | _WRITTEN_LN | {"Conv", "Slice"}, {"LayerNormalization"}),
    ("bert", "dynamo"): ({"Gather", "Cast", "LayerNormalization", "Erf", "Softmax"}, {"Shape", "ReduceMean"}),
    ("bert", "legacy"): (_RUNTIME_SHAPES | _WRITTEN_LN | _TORCH_EXPAND | {"Slice", "Cast"}, {"LayerNormalization"}),
    ("gpt2", "dynamo"): ({"Trilu", "Where", "Split", "LayerNormalization", "Tanh"}, {"Shape", "Slice"}),
    ("gpt2", "legacy"): (
        _RUNTIME_SHAPES | _WRITTEN_LN | _TORCH_EXPAND | {"Range", "Less", "Cast", "Slice"},
        {"Split", "LayerNormalization"},
    ),
    ("gpt2_kv_step", "dynamo"): ({"Concat", "Where", "Split", "LayerNormalization"}, {"Shape", "Range"}),
    ("gpt2_kv_step", "legacy"): (_RUNTIME_SHAPES | _WRITTEN_LN | {"Range", "Slice"}, {"Split", "LayerNormalization"}),
    ("gpt2_kv_prefill", "dynamo"): ({"Concat", "Where", "Split", "LayerNormalization"}, {"Shape", "Range"}),
    ("gpt2_kv_prefill", "legacy"): (
        _RUNTIME_SHAPES | _WRITTEN_LN | {"Range", "Slice"},
        {"Split", "LayerNormalization"},
    ),
}

# kernels of the optimized graph at the default sizes, in both styles (ops not named may appear any number of
# times): one attention per transformer layer and no softmax left, one layernorm per LayerNorm also where it was
# written out, BatchNorm folded into the convs, GroupNorm as two reductions each, ...
KERNELS: dict[str, dict[str, int]] = {
    "vit_tiny": {"attention": 2, "layernorm": 5, "softmax": 0, "reduce": 0, "conv2d": 1, "gather": 1, "gemm": 9},
    "yolo_style": {"conv2d": 40, "softmax": 1, "resize": 1, "pool2d": 3, "slice": 14},
    "unet_style": {"conv2d": 8, "conv_transpose2d": 2, "reduce": 10, "pool2d": 0, "resize": 0},
    "unet_pooled": {"conv2d": 6, "conv_transpose2d": 0, "reduce": 10, "pool2d": 2, "resize": 2},
    "kws_style": {"conv2d": 3, "elementwise": 0, "gemm": 1},
    "whisper_style": {"attention": 1, "layernorm": 3, "softmax": 0, "reduce": 0, "conv2d": 2, "gemm": 6},
    "bert": {"attention": 2, "layernorm": 5, "softmax": 0, "reduce": 0, "gather": 1, "gemm": 12},
    "gpt2": {"attention": 2, "layernorm": 5, "softmax": 0, "reduce": 0, "gemm": 8},
    "gpt2_kv_step": {"attention": 2, "layernorm": 5, "softmax": 0, "concat": 4},
    "gpt2_kv_prefill": {"attention": 2, "layernorm": 5, "softmax": 0, "concat": 4},
}
# GEMMs and convs that end in the exact GELU the exporter wrote out (x * 0.5 * (1 + erf(x / sqrt 2))), also
# where the bias add and GELU follow the reshape that a 3-D MatMul or a Conv1d runs behind
GELU_EPILOGUES = {"vit_tiny": 2, "kws_style": 3, "whisper_style": 3, "bert": 2}


def _ort(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return list(session.run(None, feeds))


def _runtime_reshapes(model: onnx.ModelProto) -> int:
    """Count Reshapes whose shape is a Concat of ``Unsqueeze(Gather(Shape(x)))`` parts (TorchScript's ``view``)."""
    producers = {out: node for node in model.graph.node for out in node.output}

    def op(name: str) -> str:
        node = producers.get(name)
        return node.op_type if node else ""

    count = 0
    for node in model.graph.node:
        shape = producers.get(node.input[1]) if node.op_type == "Reshape" else None
        if shape is None or shape.op_type != "Concat":
            continue
        dims = [producers[i] for i in shape.input if op(i) == "Unsqueeze"]
        if any(op(d.input[0]) == "Gather" and op(producers[d.input[0]].input[0]) == "Shape" for d in dims):
            count += 1
    return count


def test_registry_covers_every_family_in_both_styles():
    assert set(PATTERNS) == set(CASES)
    assert set(KERNELS) == set(FAMILIES)
    assert STYLES == ("dynamo", "legacy")


@pytest.mark.parametrize(("name", "style"), CASES)
def test_builds_checks_and_runs(name, style):
    model = FAMILIES[name](style)
    onnx.checker.check_model(model, full_check=True)
    assert model.opset_import[0].version == (18 if style == "dynamo" else 14)
    outputs = _ort(model, family_feeds(model, padding=2))
    for out in outputs:
        assert np.isfinite(out).all() and np.abs(out).max() > 0, name


@pytest.mark.parametrize(("name", "style"), CASES)
def test_node_patterns_of_the_exporter(name, style):
    model = FAMILIES[name](style)
    ops = Counter(node.op_type for node in model.graph.node)
    present, absent = PATTERNS[name, style]
    assert present <= set(ops), f"{name} {style} lacks {sorted(present - set(ops))}"
    assert not absent & set(ops), f"{name} {style} has {sorted(absent & set(ops))}"
    if present >= _RUNTIME_SHAPES:
        assert _runtime_reshapes(model) >= 1, "no Reshape takes its shape from Shape -> Gather -> Unsqueeze -> Concat"
    if style == "dynamo":
        assert _runtime_reshapes(model) == 0


def test_dynamo_chunks_are_split_with_num_outputs_and_dfl_projects_bin_indices():
    model = vit_tiny("dynamo")
    splits = [n for n in model.graph.node if n.op_type == "Split"]
    assert [a.i for n in splits for a in n.attribute if a.name == "num_outputs"] == [3, 3]  # one unbind per layer
    yolo = yolo_style("legacy")
    weights = {t.name: numpy_helper.to_array(t) for t in yolo.graph.initializer}
    dfl = next(n for n in yolo.graph.node if n.op_type == "Conv" and n.name.startswith("dfl"))
    np.testing.assert_array_equal(weights[dfl.input[1]].reshape(-1), np.arange(16))


def test_kv_cache_inputs_outputs_and_lengths():
    for name, new in (("gpt2_kv_step", 1), ("gpt2_kv_prefill", 32)):
        model = FAMILIES[name]("legacy")
        shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in model.graph.input}
        assert shapes["input_ids"] == [1, new] and shapes["attention_mask"] == [1, 16 + new]
        assert shapes["past_key_values.1.value"] == [1, 4, 16, 16]
        feeds = family_feeds(model)
        outputs = _outputs(model, feeds)
        assert outputs["present.0.key"].shape == (1, 4, 16 + new, 16)
        # the present cache starts with the past one: the new keys are concatenated after it
        np.testing.assert_array_equal(outputs["present.1.value"][:, :, :16], feeds["past_key_values.1.value"])


def _outputs(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return dict(zip([o.name for o in model.graph.output], _ort(model, feeds), strict=True))


def test_a_step_continues_the_cache_of_a_prefill():
    # 4 tokens after a cache of 1, then 1 more token on the present cache, equals the 5 tokens at once
    rng = np.random.default_rng(3)
    cache = {
        f"past_key_values.{i}.{k}": rng.standard_normal((1, 4, 1, 16)).astype(np.float32)
        for i in range(2)
        for k in ("key", "value")
    }
    ids = rng.integers(0, 100, (1, 5))
    prefill = _outputs(
        gpt2_kv("legacy", new=4, past=1),
        {"input_ids": ids[:, :4], "attention_mask": np.ones((1, 5), np.int64), **cache},
    )
    present = {name: prefill[name.replace("past_key_values", "present")] for name in cache}
    step = _outputs(
        gpt2_kv("dynamo", new=1, past=5),
        {"input_ids": ids[:, 4:], "attention_mask": np.ones((1, 6), np.int64), **present},
    )
    whole = _outputs(
        gpt2_kv("dynamo", new=5, past=1), {"input_ids": ids, "attention_mask": np.ones((1, 6), np.int64), **cache}
    )
    np.testing.assert_allclose(step["hidden_states"][:, 0], whole["hidden_states"][:, -1], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(prefill["hidden_states"], whole["hidden_states"][:, :4], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(step["present.1.value"], whole["present.1.value"], rtol=1e-6, atol=1e-6)


def test_styles_are_checked():
    with pytest.raises(ValueError, match="style must be one of"):
        vit_tiny("onnxscript")


@pytest.mark.parametrize(("name", "style"), CASES)
def test_ir_reference_matches_onnxruntime(name, style):
    model = FAMILIES[name](style)
    feeds = family_feeds(model, seed=1, padding=2)
    want = _ort(model, feeds)
    for graph in (import_model(model), optimize(import_model(model))):
        got = run_graph(graph, feeds)
        for out, expected in zip(graph.outputs, want, strict=True):
            scale = float(np.abs(expected).max())
            np.testing.assert_allclose(got[out], expected, rtol=0, atol=RTOL * scale, err_msg=f"{name} {style} {out}")


@pytest.mark.parametrize(("name", "style"), CASES)
def test_imports_as_the_fused_kernels(name, style):
    graph = optimize(import_model(FAMILIES[name](style)))
    ops = Counter(node.op for node in graph.nodes)
    assert {op: ops[op] for op in KERNELS[name]} == KERNELS[name], dict(ops)
    gelus = [n for n in graph.nodes if getattr(n.attrs.get("activation"), "kind", "") == "gelu"]
    assert len(gelus) == GELU_EPILOGUES.get(name, 0), dict(ops)


@pytest.mark.parametrize("keep_io_types", [True, False])
@pytest.mark.parametrize("name", ["vit_tiny", "bert"])
def test_fp16_conversions_load_and_run(name, keep_io_types):
    for style in STYLES:
        model = fp16(FAMILIES[name](style), keep_io_types)
        types = {v.type.tensor_type.elem_type for v in model.graph.output}
        assert types == {onnx.TensorProto.FLOAT if keep_io_types else onnx.TensorProto.FLOAT16}
        assert {t.data_type for t in model.graph.initializer} >= {onnx.TensorProto.FLOAT16}
        feeds = family_feeds(model, padding=2)
        (want,) = _ort(model, feeds)
        graph = import_model(model)
        got = run_graph(graph, feeds)[graph.outputs[0]]
        # onnxruntime computes in float16 where the graph says so; the IR in float32 on the same weights
        np.testing.assert_allclose(got, want, rtol=0, atol=5e-3 * float(np.abs(want).max()))


def test_quantized_forms_import():
    dynamic = quantize(FAMILIES["bert"]("legacy"), "dynamic")
    static = quantize(FAMILIES["yolo_style"]("dynamo"), "static")
    assert {"DynamicQuantizeLinear", "MatMulInteger"} <= {n.op_type for n in dynamic.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= {n.op_type for n in static.graph.node}
    for model in (dynamic, static):
        assert import_model(model).nodes
