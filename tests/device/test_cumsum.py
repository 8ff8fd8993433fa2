"""CumSum on real adapters (WGSL and GLSL) against the numpy reference, every exclusive/reverse combination."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import kernelforge
from kernelforge.ops import get_op
from kernelforge.ops.cumsum import CumSumProblem
from kernelforge.runtime.kernel import prepare
from kernelforge.testing.ops import check_op, check_sampled_configs

from ..null.test_onnx_scan import left_padded_mask, position_ids_model
from .test_session import assert_matches_ort

pytestmark = pytest.mark.device
SPEC = get_op("cumsum")
FLAGS = ["", ":excl", ":rev", ":excl:rev"]

SHAPES = [
    "1",
    "7:a0",
    "1x2048",  # an attention mask's cumsum(-1)
    "3x5x7:a1",
    "3x5x7:a0",
    "4x9:a1",  # rows ending mid-texel
    "300x3:a0",  # long strided rows
    "13x1x7:a1",  # a size-1 axis
    "2x3x4x5:a2",
]


@pytest.mark.parametrize(("shape", "flags"), list(itertools.product(SHAPES, FLAGS)))
def test_wgsl_shapes_with_sampled_configs(lavapipe, shape, flags):
    check_sampled_configs(lavapipe, SPEC, SPEC.parse_problem(shape + flags), 2, len(shape))


@pytest.mark.parametrize(("shape", "flags"), list(itertools.product(SHAPES, FLAGS)))
def test_glsl_every_config(gl, shape, flags):
    problem = SPEC.parse_problem(shape + flags)
    for pack, square in itertools.product((1, 4), (0, 1)):
        check_op(gl, SPEC, problem, {"pack": pack, "square": square})


@pytest.mark.parametrize("language", ["wgsl", "glsl"])
@pytest.mark.parametrize("flags", FLAGS)
def test_position_ids_are_exact(lavapipe, gl, language, flags):
    # a left-padded attention mask: running counts of ones, exact in float32
    backend = lavapipe if language == "wgsl" else gl
    mask = np.ones((3, 1500), np.float32)
    mask[1, :700] = 0
    mask[2, ::3] = 0
    problem = SPEC.parse_problem("3x1500" + flags)
    configs = [SPEC.default_params(problem, backend.limits, language)]
    configs += [{"rows_per_wg": 1}] if language == "wgsl" else [{"pack": 1, "square": 1}]
    for params in configs:
        check_op(backend, SPEC, problem, params, rtol=0.0, inputs=[mask])


@pytest.mark.parametrize("language", ["wgsl", "glsl"])
def test_a_nan_propagates_along_the_row(lavapipe, gl, language):
    backend = lavapipe if language == "wgsl" else gl
    x = np.arange(24, dtype=np.float32).reshape(3, 8)
    x[1, 3] = np.nan
    problem = CumSumProblem(x.shape, 1)
    params = SPEC.default_params(problem, backend.limits, language)
    out = prepare(backend, SPEC, problem, params, [x]).run()
    np.testing.assert_array_equal(out, SPEC.reference(problem, [x]))  # NaN where the reference has it
    assert np.isnan(out[1, 3:]).all() and not np.isnan(out[[0, 2]]).any() and not np.isnan(out[1, :3]).any()


@pytest.mark.parametrize("cast", [True, False])
@pytest.mark.parametrize("language", ["wgsl", "glsl"])
def test_gpt2_position_ids_match_onnxruntime(lavapipe, gl, language, cast):
    # attention_mask -> [Cast] -> CumSum(-1) -> Sub 1 -> Where(mask == 0, 1) -> Gather of the position table
    backend = lavapipe if language == "wgsl" else gl
    model = position_ids_model(batch=3, seq=40, cast=cast)
    session = kernelforge.load(model, device=backend.info.index, backend=language)
    mask = left_padded_mask(batch=3, seq=40)
    mask[2, :17] = 0
    feeds = {"attention_mask": mask}
    assert "cumsum" in [n.op for n in session.graph.nodes]
    assert_matches_ort(model, session.run(feeds), feeds)


def test_every_wgsl_device_runs_cumsum(wgsl_device):
    for flags in FLAGS:
        problem = SPEC.parse_problem("6x37x5:a1" + flags)
        for params in (SPEC.default_params(problem, wgsl_device.limits, "wgsl"), {"rows_per_wg": 4}):
            check_op(wgsl_device, SPEC, problem, params)
