"""Attention on every adapter (WGSL, GLSL) against numpy; transformer layers and ONNX Attention vs ONNX Runtime."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import kernelforge
from kernelforge.ops import get_op
from kernelforge.runtime.kernel import prepare
from kernelforge.testing.ops import check_op, check_sampled_configs, quick_tune, sampled_configs
from kernelforge.testing.transformers import TRANSFORMERS, token_feeds

from ..null.test_attention_spec import ONNX_CASES, attention_feeds, attention_model
from ..null.test_fuse_attention import chain_model

pytestmark = pytest.mark.device
SPEC = get_op("attention")

SHAPES = [
    "1x4x1x64:kv37:m1x1x1x37",  # a decoder step: one query against the cache
    "2x3x7x32:m2x1x1x7",  # BERT's padding mask
    "1x2x7x64:kv9:c2:kt",  # K given transposed, causal with an offset
    "1x12x128x64:m1x1x1x128",  # MiniLM / BERT-base heads
    "1x3x197x64",  # ViT-B/16: 196 patches and [CLS]
    "1x4x23x32:kv23:g2:dv16:w1x1x23x23:f-3.4028234663852886e38",  # GPT-2's Where(causal, scores, finfo.min)
    "2x2x9x12:kv5:m9x5:c-1:z",  # a mask over (q, k), empty first rows as ONNX Attention
    # sequence-major tensors, read and written where the projections put them ([B, S, H, D])
    "2x3x7x32:m2x1x1x7:lqkvo",
    "1x4x23x32:kv23:g2:dv16:c:lqo",  # grouped K/V heads first, Q and the output sequence-major
    "1x2x9x16:kv11:kt:lqv",  # Kᵀ with a sequence-major Q and V
    # Gemma-2-style soft-capping, and sliding windows (a lower edge, with and without the causal limit)
    "1x2x9x16:kv13:cap5.0:c4:lb0:m1x1x1x13",
    "2x2x7x8:kv7:lb-2:w2x1x7x7",
    "1x1x5x8:kv9:c1:lb3:z",  # rows whose window holds no key: 0, as ONNX Attention
]


@pytest.mark.parametrize("shape", SHAPES)
def test_wgsl_shapes_with_sampled_configs(wgsl_device, shape):
    configs = check_sampled_configs(wgsl_device, SPEC, SPEC.parse_problem(shape), 2, len(shape))
    assert len(configs) >= 2


@pytest.mark.parametrize("shape", SHAPES)
def test_glsl_shapes_with_sampled_configs(gl, shape):
    configs = check_sampled_configs(gl, SPEC, SPEC.parse_problem(shape), 2, len(shape))
    assert len(configs) >= 2


def test_wgsl_kernel_shapes_on_lavapipe(lavapipe):
    # every way of splitting the work: shared sums, staged tiles, subgroup broadcasts and sums, several rows
    problem = SPEC.parse_problem("1x2x19x16:kv21:m1x1x19x21:c3")
    base = {"q_per_wg": 4, "q_per_thread": 1, "tile_kv": 4, "threads_per_q": 1, "vec4": 0, "stage_kv": 0, "sg_share": 0}
    configs = [
        base,
        {**base, "threads_per_q": 4, "tile_kv": 8, "vec4": 1},
        {**base, "threads_per_q": 2, "tile_kv": 16, "stage_kv": 1, "q_per_thread": 2},
        {**base, "q_per_wg": 8, "sg_share": 8, "q_per_thread": 2},
        {**base, "q_per_wg": 8, "sg_share": 8, "vec4": 1},
        {**base, "q_per_wg": 1, "threads_per_q": 8, "sg_share": 8},
    ]
    seq_major = SPEC.parse_problem("2x2x19x16:kv21:g1:m2x1x19x21:c3:lqkvo")
    windowed = SPEC.parse_problem("1x2x19x16:kv21:c2:lb-5:cap3.0")
    for params in configs:
        check_op(lavapipe, SPEC, problem, params)
        check_op(lavapipe, SPEC, seq_major, params)
        check_op(lavapipe, SPEC, windowed, params)
    transposed = SPEC.parse_problem("1x2x19x16:kv21:kt")
    check_op(lavapipe, SPEC, transposed, {**base, "stage_kv": 1, "tile_kv": 8, "vec4": 1})
    check_op(lavapipe, SPEC, transposed, {**base, "q_per_wg": 8, "sg_share": 8, "vec4": 1})


def test_glsl_every_config(gl):
    for shape in (
        "1x2x7x8:kv9:m1x1x1x9:c1",
        "1x1x6x12:kv6:dv6:kt:w6x6:f-2.0",
        "2x2x7x8:kv5:g1:m2x1x1x5:lqkvo",
        "1x2x7x8:kv11:c3:lb-1:cap2.5",
    ):
        problem = SPEC.parse_problem(shape)
        for pack in (1, 4):
            for mrt in (1, 2):
                for key_block in (1, 4):
                    params = {"pack": pack, "mrt": mrt, "key_block": key_block, "square": mrt - 1}
                    check_op(gl, SPEC, problem, params)


def _nan_inputs() -> tuple[Any, list[np.ndarray]]:
    problem = SPEC.parse_problem("1x2x9x8:kv11:m1x2x9x11")
    q, k, v, mask = SPEC.make_inputs(problem, np.random.default_rng(5))
    mask[0, 0, 0] = -np.inf  # a fully masked row
    mask[0, 1, 1, :5] = -np.inf  # a partly masked one
    q[0, 0, 2, 3] = np.nan  # a NaN score
    q[0, 1, 3] = np.inf  # infinite scores
    return problem, [q, k, v, mask]


def _assert_same_nans(out: np.ndarray, want: np.ndarray, what: str) -> None:
    np.testing.assert_array_equal(np.isnan(out), np.isnan(want), err_msg=what)
    finite = np.isfinite(want)
    np.testing.assert_allclose(out[finite], want[finite], rtol=1e-4, atol=1e-5, err_msg=what)


def _check_nans(backend: Any) -> None:
    problem, inputs = _nan_inputs()
    want = SPEC.reference(problem, inputs)
    assert np.isnan(want[0, 0, 0]).all() and np.isnan(want[0, 0, 2]).all() and np.isnan(want[0, 1, 3]).all()
    zero = SPEC.parse_problem("1x2x9x8:kv11:m1x2x9x11:z")
    for params in sampled_configs(SPEC, problem, backend.limits, backend.language, 4, 7):
        out = prepare(backend, SPEC, problem, params, inputs).run()
        _assert_same_nans(out, want, f"{backend.info.slug} {params}")
        empty = prepare(backend, SPEC, zero, params, inputs).run()
        assert (empty[0, 0, 0] == 0).all(), params


def test_wgsl_nan_and_infinities_as_onnx_runtime(wgsl_device):
    _check_nans(wgsl_device)


def test_glsl_nan_and_infinities_as_onnx_runtime(gl):
    _check_nans(gl)


@pytest.mark.parametrize("language", ["wgsl", "glsl"])
def test_finfo_min_fill_keeps_every_key_of_a_masked_row(lavapipe, gl, language):
    backend = lavapipe if language == "wgsl" else gl
    problem = SPEC.parse_problem("1x1x3x4:kv5:w1x1x3x5:f-3.4028234663852886e38")
    q, k, v, _ = SPEC.make_inputs(problem, np.random.default_rng(6))
    select = np.ones((1, 1, 3, 5), np.float32)
    select[0, 0, 1] = 0.0  # Where(mask, scores, finfo.min) with nothing kept: the mean of V
    out = check_op(
        backend, SPEC, problem, SPEC.default_params(problem, backend.limits, language), inputs=[q, k, v, select]
    )
    np.testing.assert_allclose(out[0, 0, 1], v[0, 0].mean(axis=0), rtol=1e-5)


def test_tuner_smoke(tmp_path, lavapipe):
    problem = SPEC.parse_problem("1x4x64x32:m1x1x1x64")
    result = quick_tune(lavapipe, SPEC, problem, tmp_path)
    assert result.record is not None and result.best_time <= result.default_time
    check_op(lavapipe, SPEC, problem, result.record.params)


# --- sessions against ONNX Runtime -------------------------------------------------------------------------------

RTOL = 1e-4  # of the output's largest magnitude


@pytest.fixture(scope="module", params=["wgsl", "glsl"])
def device(request: pytest.FixtureRequest) -> tuple[Any, str]:
    """(device info, language): lavapipe for WGSL, llvmpipe-GL for GLSL."""
    backend = request.getfixturevalue("lavapipe" if request.param == "wgsl" else "gl")
    return backend.info, request.param


def _check_model(model: onnx.ModelProto, feeds: dict[str, np.ndarray], device: tuple[Any, str]) -> Any:
    info, language = device
    session = kernelforge.load(model, device=info.index, backend=language)
    got = session.run(feeds)
    ort_session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    want = dict(zip([o.name for o in ort_session.get_outputs()], ort_session.run(None, feeds), strict=True))
    for name, expected in want.items():
        assert got[name].shape == expected.shape, name
        np.testing.assert_array_equal(np.isnan(got[name]), np.isnan(expected), err_msg=f"{language} {name}")
        scale = max(float(np.nanmax(np.abs(expected))), 1e-6)
        np.testing.assert_allclose(got[name], expected, rtol=0, atol=RTOL * scale, err_msg=f"{language} {name}")
    return session


@pytest.mark.parametrize(
    "family,kwargs",
    [
        ("bert_style", {}),
        ("bert_style", {"batch": 2, "layers": 2, "seq": 7, "scale": "split"}),
        ("bert_style", {"opset": 14, "scale": "mul"}),
        ("gpt2_style", {}),
        ("gpt2_style", {"mask": "add", "layers": 2}),
    ],
)
def test_transformer_layers_run_one_attention_kernel_per_layer(device, family, kwargs):
    model = TRANSFORMERS[family](**kwargs)
    for seed in (0, 1):
        session = _check_model(model, token_feeds(model, seed=seed, padding=2), device)
    ops = [s.call.op for s in session.steps]
    assert ops.count("attention") == kwargs.get("layers", 1) and "softmax" not in ops


@pytest.mark.parametrize(("case", "opset"), ONNX_CASES)
def test_onnx_attention_matches_onnxruntime(device, case, opset):
    model = attention_model(opset=opset, **case)
    session = _check_model(model, attention_feeds(model), device)
    assert [s.call.op for s in session.steps].count("attention") == 1


def test_a_long_sequence_needs_no_score_matrix(device):
    seq = 1024
    model, feeds = chain_model(mask="runtime", dims=(1, 2, seq, seq, 32, 32))
    session = _check_model(model, feeds, device)
    assert [s.call.op for s in session.steps] == ["elementwise", "attention"]
    largest = max(r.nbytes if hasattr(r, "nbytes") else 4 * r.floats for r in session.program.resources)
    assert largest < 4 * seq * seq // 4, f"a resource of {largest} bytes: scores of one head take {4 * seq * seq}"
