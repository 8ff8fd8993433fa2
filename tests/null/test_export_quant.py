"""Bundles of quantized models: int8 weights in weights.bin, about a quarter of the fp32 model's, decoding exactly."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kernelforge.export import export
from kernelforge.graph import prepare, program, program_glsl
from kernelforge.testing.models import MODELS
from kernelforge.testing.quantized import quantized

REPO_DB = Path(__file__).resolve().parents[2] / "tuning_db"


def decode(entry: dict[str, Any], weights: bytes, dtype: str, constants: Sequence[dict[str, Any]] = ()) -> np.ndarray:
    """Constant values as FORMAT.md defines them (the runtime's reading, in numpy; ``constants``: the manifest's,
    where scales are a constant of their own)."""
    offset, count = entry["offset"], entry["count"]
    if "dtype" not in entry:
        kind = "<f2" if dtype == "fp16" else "<f4"
        return np.frombuffer(weights, kind, count, offset).astype(np.float32)
    kind = {"int8": np.int8, "uint8": np.uint8, "float16": np.dtype("<f2")}[entry["dtype"]]
    q = np.frombuffer(weights, kind, count, offset).astype(np.float64)
    if isinstance(entry["scale"], dict):  # scales in weights.bin, zero points 0
        scale = decode(constants[entry["scale"]["constant"]], weights, dtype).astype(np.float64)
        zp = np.zeros(scale.shape)
    else:
        scale, zp = np.asarray(entry["scale"]), np.asarray(entry["zero_point"])
    channel = np.zeros(count, np.int64)
    if len(scale) > 1:
        shape, axis = entry["shape"], entry["axis"]
        channel = (np.arange(count) // math.prod(shape[axis + 1 :])) % shape[axis]
    # the double product is exact; one rounding to float32
    return ((q - zp[channel]) * scale[channel]).astype(np.float32)


def _bundle(path: Path) -> tuple[dict[str, Any], bytes]:
    return json.loads((path / "manifest.json").read_text()), (path / "weights.bin").read_bytes()


def _weight_constants(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """The constant each GEMM and conv of every target binds as its weight (WGSL binding 2, GLSL texture B/W)."""
    found = []
    for target in manifest["targets"]:
        plan = target["plan"]
        uploads = {c["texture"]: c["constant"] for c in plan.get("constants", [])}
        for step in plan["steps"]:
            if step.get("op") not in ("gemm", "conv2d"):
                continue
            if target["language"] == "wgsl":
                index = step["bindings"][1]["constant"]
            else:
                index = uploads[next(i["texture"] for i in step["inputs"] if i["sampler"] in ("B", "W"))]
            found.append(manifest["constants"][index])
    return found


# weights.bin of a quantized model: its GEMM/conv weights at one byte a value, their scales and zero points
# (8 bytes per output channel: 2 / K of the fp32 weights for K inputs, K = 64 in this MLP) and the float biases
@pytest.mark.parametrize(("name", "kind", "most"), [("mlp", "static_per_channel", 0.29), ("mlp", "dynamic", 0.27)])
def test_quantized_bundle_weights_are_int8_and_a_quarter_of_fp32(
    tmp_path: Path, name: str, kind: str, most: float
) -> None:
    fp32 = export(MODELS[name](), tmp_path / "fp32", db=REPO_DB)
    quant = export(quantized(name, kind), tmp_path / "quant", db=REPO_DB)
    ratio = quant.weights_bytes / fp32.weights_bytes
    assert 0.24 < ratio <= most, (quant.weights_bytes, fp32.weights_bytes)
    manifest, _ = _bundle(tmp_path / "quant")
    weights = _weight_constants(manifest)
    # every weight matrix of every target is int8 that its kernel reads and dequantizes (no scales to widen by)
    assert weights and all(c.get("dtype") == "int8" and "scale" not in c for c in weights), weights


def test_mobilenet_bundle_keeps_its_weights_int8_in_every_target(tmp_path: Path) -> None:
    # the batchnorms after a quantized activation become per-channel float scales and shifts (they cannot fold
    # into the int8 weights across the fake quantization), and every conv adds 8 bytes of scale and zero point
    # per output channel, so the ratio is above a quarter for so small a model (6,304 weights)
    fp32 = export(MODELS["mobilenet_v2_style"](), tmp_path / "fp32", db=REPO_DB)
    quant = export(quantized("mobilenet_v2_style", "static_per_channel"), tmp_path / "quant", db=REPO_DB)
    assert quant.weights_bytes / fp32.weights_bytes < 0.5, (quant.weights_bytes, fp32.weights_bytes)
    manifest, _ = _bundle(tmp_path / "quant")
    weights = _weight_constants(manifest)
    assert {t["language"] for t in manifest["targets"]} == {"wgsl", "glsl"}
    assert weights and all(c.get("dtype") == "int8" and "scale" not in c for c in weights), weights
    textures = [t for target in manifest["targets"] if target["language"] == "glsl" for t in target["plan"]["textures"]]
    assert any(t.get("dtype") == "int8" for t in textures)


@pytest.mark.parametrize("weights", ["fp32", "fp16"])
@pytest.mark.parametrize(
    ("name", "kind"), [("small_cnn", "static"), ("mobilenet_v2_style", "static_per_channel"), ("mlp", "dynamic")]
)
def test_int8_constants_decode_to_the_floats_of_a_float_bundle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, kind: str, weights: str
) -> None:
    # the widening path: constants that no kernel reads as integers (here every one, with GEMMs and convs made to
    # read floats too) are stored as integers with their scales and decode to exactly the floats
    monkeypatch.setattr(prepare, "keep_weights_quantized", lambda graph: 0)
    model = quantized(name, kind)
    export(model, tmp_path / "int8", db=REPO_DB, weights=weights)
    with monkeypatch.context() as patch:  # the same bundle with every constant written as floats
        for module in (program, program_glsl):
            patch.setattr(module, "device_quants", lambda plan, step, spec, device: [None] * len(device))
        export(model, tmp_path / "float", db=REPO_DB)
    (qm, qw), (fm, fw) = _bundle(tmp_path / "int8"), _bundle(tmp_path / "float")
    assert len(qm["constants"]) == len(fm["constants"]) and qm["targets"] == fm["targets"]
    assert any("dtype" in c for c in qm["constants"]) and not any("dtype" in c for c in fm["constants"])
    for mine, theirs in zip(qm["constants"], fm["constants"], strict=True):
        got, want = decode(mine, qw, weights), decode(theirs, fw, "fp32")
        if "dtype" in mine or weights == "fp32":
            np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))
        else:
            np.testing.assert_array_equal(got, want.astype(np.float16).astype(np.float32))


def test_quantize_weights_is_symmetric_per_output_channel_and_exact_on_its_grid() -> None:
    from kernelforge.graph.quant_weights import quantize_weights

    graph = prepare.prepare_graph(MODELS["mobilenet_v2_style"]())
    before = {n.name: graph.value(n.inputs[1]).data.copy() for n in graph.nodes if n.op in ("conv2d", "gemm")}
    weight = next(n.inputs[1] for n in graph.nodes if n.op == "conv2d")
    graph.value(weight).data[1] = 0  # an all-zero output channel
    before[next(n.name for n in graph.nodes if n.inputs[1:2] == [weight])][1] = 0
    assert quantize_weights(graph) == len({n.inputs[1] for n in graph.nodes if n.op in ("conv2d", "gemm")})
    for node in (n for n in graph.nodes if n.op in ("conv2d", "gemm")):
        value = graph.value(node.inputs[1])
        quant, w = value.quant, before[node.name]
        assert quant is not None and quant.dtype == "int8" and not quant.zero_point.any()
        axis = quant.axis
        others = tuple(a for a in range(w.ndim) if a != axis)
        peak = np.abs(w).max(axis=others)
        np.testing.assert_allclose(quant.scale, np.where(peak > 0, peak / 127, 1), rtol=1e-6)
        assert np.abs(quant.q).max() <= 127
        np.testing.assert_array_equal(value.data.view(np.uint32), quant.dequantize().view(np.uint32))
        shape = [-1 if a == axis else 1 for a in range(w.ndim)]
        assert (np.abs(value.data - w) <= quant.scale.reshape(shape) / 2 * (1 + 1e-5)).all()  # half a step
    assert not graph.value(weight).quant.q[1].any() and graph.value(weight).quant.scale[1] == 1


@pytest.mark.parametrize(("name", "most"), [("mlp", 0.29), ("mobilenet_v2_style", 0.5)])
def test_weights_int8_quarters_the_weights_and_every_kernel_reads_integers(
    tmp_path: Path, name: str, most: float
) -> None:
    fp32 = export(MODELS[name](), tmp_path / "fp32", db=REPO_DB)
    int8 = export(MODELS[name](), tmp_path / "int8", db=REPO_DB, weights="int8")
    assert 0.24 < int8.weights_bytes / fp32.weights_bytes <= most, (int8.weights_bytes, fp32.weights_bytes)
    manifest, _ = _bundle(tmp_path / "int8")
    weights = _weight_constants(manifest)
    assert {t["language"] for t in manifest["targets"]} == {"wgsl", "glsl"}
    assert weights and all(c.get("dtype") == "int8" and "scale" not in c for c in weights), weights


def test_an_unknown_weights_format_is_refused_naming_the_choices(tmp_path: Path) -> None:
    from kernelforge.errors import ExportError

    with pytest.raises(ExportError, match=r"--weights must be one of fp32, fp16, int8, int4, got 'int2'"):
        export(MODELS["mlp"](), tmp_path / "b", db=REPO_DB, weights="int2")
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize("name", ["mlp", "small_cnn"])
def test_weights_int4_stores_packed_nibbles_that_unpack_to_the_kernels_integers(tmp_path: Path, name: str) -> None:
    from kernelforge.graph.prepare import prepare_graph

    fp32 = export(MODELS[name](), tmp_path / "fp32", db=REPO_DB)
    int4 = export(MODELS[name](), tmp_path / "int4", db=REPO_DB, weights="int4")
    int8 = export(MODELS[name](), tmp_path / "int8", db=REPO_DB, weights="int8")
    assert int4.weights_bytes < int8.weights_bytes < fp32.weights_bytes, (int4, int8, fp32)
    manifest, blob = _bundle(tmp_path / "int4")
    int4s = [c for c in manifest["constants"] if c.get("dtype") == "int4"]
    assert int4s and all(set(c) == {"offset", "count", "dtype"} for c in int4s)
    # every int4 constant unpacks (low nibble first) to values in [-7, 7] that are some weight's integers, in order
    graph = prepare_graph(MODELS[name](), weights="int4")
    weights = [graph.value(n.inputs[1]).data for n in graph.nodes if n.attrs.get("weight_quant") == "int4"]
    for c in int4s:
        raw = np.frombuffer(blob, np.uint8, -(-c["count"] // 2), c["offset"])
        nibbles = np.stack([raw & 15, raw >> 4], axis=1).reshape(-1)[: c["count"]].astype(np.int8)
        q = np.where(nibbles > 7, nibbles - 16, nibbles)
        assert np.abs(q).max() <= 7 and q.any()
        assert any(w.size in (c["count"], c["count"] - 1) for w in weights), c


@pytest.mark.parametrize("name", ["mlp", "small_cnn"])
def test_int4_kernel_scales_are_stored_as_the_halves_the_graph_computes_with(tmp_path: Path, name: str) -> None:
    from kernelforge.graph.prepare import prepare_graph

    export(MODELS[name](), tmp_path / "int4", db=REPO_DB, weights="int4")
    manifest, blob = _bundle(tmp_path / "int4")
    graph = prepare_graph(MODELS[name](), weights="int4")
    scales = [graph.value(n.inputs[4]).data for n in graph.nodes if n.attrs.get("weight_quant") == "int4"]
    assert scales
    for s in scales:  # rounded to float16 (up: never below the group's peak over 7), so a half holds each exactly
        assert np.array_equal(s.astype(np.float16).astype(np.float32), s)
    halves = [c for c in manifest["constants"] if c.get("dtype") == "float16"]
    assert halves and all(c["scale"] == [1.0] and c["zero_point"] == [0] for c in halves)
    stored = np.concatenate([decode(c, blob, "fp32") for c in halves])
    # every kernel's scales are in the bundle as halves (laid out [groups, channels padded to vec4s])
    assert set(np.concatenate([s.reshape(-1) for s in scales]).tolist()) <= set(stored.tolist())


def test_int4_scale_rounds_up_to_a_half_unless_float16_cannot_hold_it() -> None:
    from kernelforge.ops._qweight import int4_scale

    peak = np.array([0.0, 7.0, 1e-3, 0.7001, 1e-9, 1e6], np.float32)
    s = int4_scale(peak)
    assert s[0] == 1 and s[1] == 1  # an all-zero group; a peak of 7 is exactly 1
    assert (s[1:5] >= peak[1:5] / np.float32(7)).all()  # never below: |w| / scale stays within 7
    assert np.array_equal(s[:5].astype(np.float16).astype(np.float32), s[:5])
    assert (s[1:4] / (peak[1:4] / np.float32(7)) < 1 + 2**-10).all()  # the next half up, not further
    assert s[4] > 0  # below float16's smallest subnormal: its smallest, not 0
    assert s[5] == np.float32(1e6) / np.float32(7)  # beyond float16's range: float32 it stays


def test_int4_problem_keys_are_their_own() -> None:
    from kernelforge.ops import get_op

    gemm = get_op("gemm")
    keys = {
        gemm.problem_key(gemm.parse_problem(s))
        for s in ("64x64x64", "64x64x64/qi8c", "64x64x64/qi4g32", "64x64x64/qi4g16")
    }
    assert len(keys) == 4


@pytest.mark.parametrize("name", ["mlp", "small_cnn"])
def test_weights_fp16_stores_gemm_and_conv_weights_as_the_halves_kernels_read(tmp_path: Path, name: str) -> None:
    from kernelforge.graph.prepare import prepare_graph

    fp32 = export(MODELS[name](), tmp_path / "fp32", db=REPO_DB)
    fp16 = export(MODELS[name](), tmp_path / "fp16", db=REPO_DB, weights="fp16")
    assert fp16.weights_bytes < 0.55 * fp32.weights_bytes, (fp16.weights_bytes, fp32.weights_bytes)
    manifest, blob = _bundle(tmp_path / "fp16")
    assert manifest["weights"]["dtype"] == "fp16"
    weights = _weight_constants(manifest)
    assert weights and all(set(c) == {"offset", "count", "dtype"} and c["dtype"] == "float16" for c in weights)
    glsl = [t["plan"] for t in manifest["targets"] if t["language"] == "glsl"]
    assert glsl and all(any(t.get("dtype") == "float16" for t in plan["textures"]) for plan in glsl)
    # each is 2 bytes a value: the rounded graph's weight, rearranged into the kernel's order
    graph = prepare_graph(MODELS[name](), weights="fp16")
    rounded = [graph.value(n.inputs[1]).data for n in graph.nodes if n.attrs.get("weight_quant") == "float16"]
    assert rounded and all(w is not None for w in rounded)
    for c in weights:
        halves = np.frombuffer(blob, "<f2", c["count"], c["offset"]).astype(np.float32)
        assert any(w.size == halves.size and np.array_equal(np.sort(w.reshape(-1)), np.sort(halves)) for w in rounded)


def test_float16_problem_keys_are_their_own() -> None:
    from kernelforge.ops import get_op

    gemm = get_op("gemm")
    keys = {gemm.problem_key(gemm.parse_problem(s)) for s in ("64x64x64", "64x64x64/qi8c", "64x64x64/qf16")}
    assert keys == {"64x64x64", "64x64x64/qi8c", "64x64x64/qf16"}


@pytest.mark.parametrize("weights", ["int8", "int4"])
def test_embedding_tables_are_stored_int8_per_row_and_decode_to_the_graphs_floats(tmp_path: Path, weights: str) -> None:
    from kernelforge.graph.prepare import prepare_graph
    from kernelforge.graph.quant_weights import TABLE_MIN
    from kernelforge.testing.families import FAMILIES

    model = FAMILIES["bert"]("legacy")
    graph, floats = prepare_graph(model, weights=weights), prepare_graph(model)
    gathered = [n.inputs[0] for n in graph.nodes if n.op == "gather" and graph.value(n.inputs[0]).data is not None]
    big = [t for t in gathered if graph.value(t).data.size >= TABLE_MIN]
    assert big and all(graph.value(t).quant is not None for t in big)
    for t in big:
        quant, data, exact = graph.value(t).quant, graph.value(t).data, floats.value(t).data
        assert quant.axis == 0 and quant.scale.shape == (data.shape[0],) and np.abs(quant.q).max() == 127
        np.testing.assert_array_equal(data, quant.dequantize())
        step = np.abs(exact).max(axis=1, keepdims=True) / 127
        assert (np.abs(data - exact) <= step / 2 * (1 + 1e-5)).all()  # half a step of the row's own scale
    fp32 = export(model, tmp_path / "fp32", db=REPO_DB)
    quantized = export(model, tmp_path / "q", db=REPO_DB, weights=weights)
    manifest, blob = _bundle(tmp_path / "q")
    tables = [c for c in manifest["constants"] if c.get("dtype") == "int8" and "axis" in c]
    assert tables and quantized.weights_bytes < 0.4 * fp32.weights_bytes
    decoded = [decode(c, blob, weights, manifest["constants"]) for c in tables]
    for t in big:
        flat = graph.value(t).data.ravel()
        assert any(d.size == flat.size and np.array_equal(d, flat) for d in decoded)


def test_a_tables_many_row_scales_are_a_float_constant_not_manifest_text(tmp_path: Path) -> None:
    from kernelforge.export.weights import INLINE_SCALES
    from kernelforge.graph.prepare import prepare_graph
    from kernelforge.testing.transformers import bert_style

    model = bert_style(vocab=1000)  # a table of 1,000 rows: 1,000 scales
    export(model, tmp_path / "q", db=REPO_DB, weights="int8")
    manifest, blob = _bundle(tmp_path / "q")
    constants = manifest["constants"]
    (table,) = [c for c in constants if c.get("dtype") == "int8" and "axis" in c]
    assert set(table) == {"offset", "count", "dtype", "scale", "axis", "shape"}, table  # no zero_point: all 0
    scales = constants[table["scale"]["constant"]]
    assert "dtype" not in scales and scales["count"] == table["shape"][0] == 1000 > INLINE_SCALES
    graph = prepare_graph(model, weights="int8")
    (name,) = [n.inputs[0] for n in graph.nodes if n.op == "gather" and graph.value(n.inputs[0]).quant is not None]
    quant = graph.value(name).quant
    np.testing.assert_array_equal(decode(scales, blob, "fp32"), quant.scale)
    np.testing.assert_array_equal(decode(table, blob, "fp32", constants), graph.value(name).data.ravel())
    # a few scales stay in the manifest, as every reader of quantized constants reads them
    assert all(isinstance(c["scale"], list) and len(c["scale"]) <= INLINE_SCALES for c in constants if c is not table
               and "scale" in c)  # fmt: skip
