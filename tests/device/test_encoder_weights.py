"""Compressed bundle weights keep an encoder within its stated bound (``ENCODER_MIN_COS``), on lavapipe.

A BERT-style encoder (its token table large enough to be stored int8) is loaded with fp16, int8 and int4
weights (int4 rounded by GPTQ against calibration inputs, as ``--calibrate`` does) and run on token ids the
rounding never saw; every token's hidden state must keep the stated cosine similarity to ONNX Runtime's float32
run.
"""

from __future__ import annotations

import numpy as np
import pytest

from kernelforge.testing.quantized import ENCODER_MIN_COS, cosines

pytestmark = pytest.mark.device

SEQ, VOCAB = 32, 1000


def _feeds(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    mask = np.ones((1, SEQ), np.int64)
    mask[:, SEQ - 6 :] = 0  # a padded sentence
    return {"input_ids": rng.integers(0, VOCAB, (1, SEQ)).astype(np.int64), "attention_mask": mask}


@pytest.fixture(scope="module")
def encoder():
    from kernelforge.testing.transformers import bert_style

    return bert_style(seq=SEQ, hidden=128, heads=2, layers=2, vocab=VOCAB)


def _min_cos(session, model) -> float:
    import onnxruntime as ort

    ref = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    worst = 1.0
    for seed in range(100, 104):
        feeds = _feeds(seed)
        (want,) = ref.run(None, feeds)
        (got,) = session.run(feeds).values()
        worst = min(worst, float(cosines(got, want).min()))
    return worst


@pytest.mark.parametrize("weights", ["fp16", "int8", "int4"])
def test_compressed_weights_keep_every_token_within_the_encoder_bound(lavapipe, encoder, weights):
    import kernelforge

    calibration = [_feeds(seed) for seed in range(16)] if weights == "int4" else []
    session = kernelforge.load(encoder, device=lavapipe.info.index, weights=weights, calibration=calibration)
    if weights != "fp16":  # the token table is int8 (the runtime widens it at load), the GEMMs read integers
        table = next(session.graph.value(n.inputs[0]) for n in session.graph.nodes if n.op == "gather")
        assert table.quant is not None and table.quant.dtype == "int8"
        assert any(n.attrs.get("weight_quant") == weights for n in session.graph.nodes)
    worst = _min_cos(session, encoder)
    assert worst >= ENCODER_MIN_COS[weights], f"{weights}: smallest token cosine {worst:.6f}"
