"""The nine ``light_*`` models of the onnx wheel, natively on both backends, against ONNX Runtime CPU.

Each model runs twice: as shipped (every weight 0.02, so outputs are nearly uniform) and with random
weights (:func:`kernelforge.testing.light.randomized`), which makes a wrong kernel visible.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import kernelforge
from kernelforge.testing.light import light_models, randomized

from .test_session import assert_matches_ort

pytestmark = [pytest.mark.device, pytest.mark.slow]

LIGHT = light_models()


def test_all_nine_light_models_are_shipped() -> None:
    assert sorted(LIGHT) == sorted(
        [
            "bvlc_alexnet",
            "densenet121",
            "inception_v1",
            "inception_v2",
            "resnet50",
            "shufflenet",
            "squeezenet",
            "vgg19",
            "zfnet512",
        ]
    )


@pytest.mark.parametrize("language", ["wgsl", "glsl"])
@pytest.mark.parametrize("name", sorted(LIGHT))
def test_light_model_matches_onnxruntime(name: str, language: str, request: pytest.FixtureRequest) -> None:
    backend: Any = request.getfixturevalue("lavapipe" if language == "wgsl" else "gl")
    path = LIGHT[name]
    model = onnx.load(str(path))
    session = kernelforge.load(model, device=backend.info.index, backend=language)
    rng = np.random.default_rng(0)
    feeds = {n: rng.standard_normal(shape).astype(np.float32) for n, shape in session.inputs}
    outputs = session.run(feeds)
    assert_matches_ort(model, outputs, feeds)
    # the stored reference output has the same shape (its input is not shipped beside it)
    stored = onnx.TensorProto()
    stored.ParseFromString(path.with_name(f"{path.stem}_output_0.pb").read_bytes())
    (got,) = outputs.values()
    assert got.shape == numpy_helper.to_array(stored).shape

    random_model = randomized(model, seed=1)
    random_session = kernelforge.load(random_model, device=backend.info.index, backend=language)
    outputs = random_session.run(feeds)
    assert_matches_ort(random_model, outputs, feeds)
    (got,) = outputs.values()
    assert float(got.std()) > 0  # random weights: not the uniform output of the shipped weights
