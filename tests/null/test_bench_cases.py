"""The benchmarks' case registry and typed inputs (``benchmarks/_cases.py``, ``benchmarks/browser.py``)."""

from __future__ import annotations

import base64
import re
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import _cases  # noqa: E402
import browser  # noqa: E402
from _browser_peers import HARNESS_JS  # noqa: E402

from kernelforge.testing.models import MODELS  # noqa: E402


def test_every_old_model_is_a_case_and_the_presets_name_cases() -> None:
    assert set(MODELS) <= set(_cases.SPECS)
    assert set(_cases.FAMILY) <= set(_cases.SPECS)
    assert set(browser.DEFAULT_MODELS) <= set(_cases.SPECS)


def test_token_case_feeds_have_the_declared_dtypes_vocab_and_padding() -> None:
    model, feeds = _cases.build("bert_tiny")
    declared = {v.name: v.type.tensor_type.elem_type for v in model.graph.input}
    assert declared == {"input_ids": onnx.TensorProto.INT64, "attention_mask": onnx.TensorProto.INT64}
    ids, mask = feeds["input_ids"], feeds["attention_mask"]
    assert ids.dtype == np.int64 and mask.dtype == np.int64 and ids.shape == mask.shape == (1, 64)
    assert ids.min() >= 0 and ids.max() < 1000 and len(np.unique(ids)) > 20  # drawn over the vocabulary
    assert (mask[0, :-8] == 1).all() and (mask[0, -8:] == 0).all()


def test_float_feeds_are_the_old_standard_normal_draws() -> None:
    model, feeds = _cases.build("small_cnn")
    rng = np.random.default_rng(0)
    for value in model.graph.input:
        shape = tuple(d.dim_value for d in value.type.tensor_type.shape.dim)
        np.testing.assert_array_equal(feeds[value.name], rng.standard_normal(shape).astype(np.float32))


def test_the_quantized_case_is_qdq() -> None:
    model, feeds = _cases.build("mobilenet_v2_style_qdq")
    ops = {n.op_type for n in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert all(a.dtype == np.float32 for a in feeds.values())


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (_cases.CaseSpec("a", "kernelforge.testing.no_such_module", "f"), "not in this checkout"),
        (_cases.CaseSpec("b", "kernelforge.testing.models", "no_such_builder"), "has no builder 'no_such_builder'"),
        (_cases.CaseSpec("c", "kernelforge.testing.models", "mlp", {"width": 3}), "mlp takes no width"),
    ],
)
def test_a_missing_builder_is_unavailable_with_the_reason(spec: _cases.CaseSpec, message: str) -> None:
    with pytest.raises(_cases.Unavailable, match=message):
        _cases.builder(spec)


def test_an_unknown_case_is_a_key_error_naming_the_choices() -> None:
    with pytest.raises(KeyError, match="minilm"):
        _cases.build("no_such_case")


def test_served_input_dtypes_are_the_ones_the_page_has_typed_arrays_for() -> None:
    arrays = re.search(r"const ARRAYS = \{(.*?)\};", HARNESS_JS, re.S)
    assert arrays is not None
    page = set(re.findall(r"(\w+): \w+Array", arrays.group(1)))
    assert page == set(browser.PAGE_DTYPES)
    assert browser.onnx_dtype(np.zeros(2, np.int64)) == "int64"
    assert browser.onnx_dtype(np.zeros(2, np.bool_)) == "bool"
    with pytest.raises(ValueError, match="float16 is not served"):
        browser.onnx_dtype(np.zeros(2, np.float16))


def test_outputs_decode_by_their_typed_array_type() -> None:
    model, feeds = _cases.build("bert_tiny")
    case = browser.Case("bert_tiny", "model", model, feeds)
    ids = np.array([1, -2, 2**40], "<i8")
    sent = {
        "ids": {"type": "BigInt64Array", "data": base64.b64encode(ids.tobytes()).decode()},
        "y": {"type": "Float32Array", "data": base64.b64encode(np.array([0.5], "<f4").tobytes()).decode()},
    }
    got = browser.decode(case, "kf-webgpu", sent)
    np.testing.assert_array_equal(got["ids"], ids)
    assert got["y"].dtype == np.float32 and got["y"][0] == 0.5
    with pytest.raises(ValueError, match="came back as a Float16Array"):
        browser.decode(case, "kf-webgpu", {"y": {"type": "Float16Array", "data": ""}})


@pytest.mark.parametrize(
    ("name", "image", "output"),
    [("vit_tiny", (1, 3, 224, 224), (1, 1000)), ("yolo_style", (1, 3, 320, 320), (1, 84, 40 * 40 + 20 * 20))],
)
def test_the_vision_family_cases_build_at_their_shipped_sizes(
    name: str, image: tuple[int, ...], output: tuple[int, ...]
) -> None:
    model, feeds = _cases.build(name)  # not Unavailable: the families' builders take every size of the case
    (value,) = model.graph.input
    assert feeds[value.name].shape == image and feeds[value.name].dtype == np.float32
    (out,) = model.graph.output
    assert tuple(d.dim_value for d in out.type.tensor_type.shape.dim) == output
