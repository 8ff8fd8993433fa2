"""ONNX's node cases for BatchNormalization's training mode and MaxPool's Indices output pass on both languages.

``test_node_cases.py`` accepts a documented limit too; these cases ran into one before and must now pass.
"""

from __future__ import annotations

import pytest

from kernelforge.testing.onnx_backend import cases, run_case

pytestmark = pytest.mark.device

NAMES = [
    "test_batchnorm_example_training_mode",
    "test_batchnorm_epsilon_training_mode",
    "test_maxpool_with_argmax_2d_precomputed_pads",
    "test_maxpool_with_argmax_2d_precomputed_strides",
]
CASES = {c.name: c for c in cases() if c.name in NAMES}


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("language", ["wgsl", "glsl"])
def test_case_passes(name, language, lavapipe, gl):
    device = lavapipe if language == "wgsl" else gl
    assert run_case(CASES[name], device.info.index, language).passed
