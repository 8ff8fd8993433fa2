"""Empty tensors (a dim of 0) on the software GPUs: ONNX's node cases with them, a model against ONNX Runtime."""

from __future__ import annotations

from typing import Any

import pytest

import kernelforge
from kernelforge.testing.onnx_backend import cases, run_case

from ..null.test_onnx_empty import empty_pieces_model
from .test_session import assert_matches_ort

pytestmark = pytest.mark.device

EMPTY_CASES = (
    "test_causal_conv_with_state_kernel_size_one_expanded",
    "test_constantofshape_int_shape_zero",
    "test_reduce_max_empty_set",
    "test_reduce_max_empty_set_bool",
    "test_reduce_min_empty_set",
    "test_reduce_sum_empty_set_non_reduced_axis_zero",
    "test_reshape_allowzero_reordered",
    "test_shape_start_greater_than_end",
    "test_slice_start_out_of_bounds",
    "test_split_zero_size_splits_opset13",
    "test_split_zero_size_splits_opset18",
    "test_tril_zero",
    "test_triu_zero",
)
"""ONNX node cases with an empty input, output or intermediate: each must pass, not merely hit a limit."""


@pytest.fixture(scope="module")
def node_cases() -> dict[str, Any]:
    return {c.name: c for c in cases() if c.name in EMPTY_CASES}


@pytest.fixture(scope="module", params=["wgsl", "glsl"])
def device(request: pytest.FixtureRequest) -> tuple[Any, str]:
    """(device info, language): lavapipe for WGSL, llvmpipe-GL for GLSL."""
    backend = request.getfixturevalue("lavapipe" if request.param == "wgsl" else "gl")
    return backend.info, request.param


@pytest.mark.parametrize("name", EMPTY_CASES)
def test_node_cases_with_empty_tensors_pass(name: str, node_cases: dict[str, Any], device: tuple[Any, str]) -> None:
    info, language = device
    outcome = run_case(node_cases[name], info.index, language)
    assert outcome.passed, f"{name} ({language}): {outcome.limit or outcome.error}"


@pytest.mark.parametrize("extremes", [True, False])
def test_empty_pieces_match_onnxruntime(extremes: bool, device: tuple[Any, str]) -> None:
    info, language = device
    model, feeds = empty_pieces_model(extremes)
    session = kernelforge.load(model, device=info.index, backend=language)
    assert dict(session.outputs) == {"y": (2, 6), "e": (2, 0), "w": (2, 0), "s": (0,)}
    assert session.dtypes["s"] == "int64"
    # one kernel: y = (x + 0) * x + x (the empty Split piece, its sums and Max(x, -inf) fold away)
    assert [s.call.op for s in session.steps] == ["elementwise"]
    first = session.run(feeds)
    assert_matches_ort(model, first, feeds)
    again = session.run(feeds)
    assert all((again[k] == v).all() and again[k].shape == v.shape for k, v in first.items())
