"""ONNX's own node test cases (shipped with the onnx wheel) driven through :class:`KernelforgeBackend`.

Every case whose op types kernelforge supports runs on lavapipe (WGSL) and llvmpipe (GLSL) and must match ONNX's
expected outputs within the tolerances ONNX's runner uses, or fail to load with one of the documented
limitations (:data:`LIMITS`). Every other case must be refused at load naming an op type it lacks: nothing is
skipped. ``benchmarks/conformance.py`` prints the counts.
"""

from __future__ import annotations

import re

import pytest

from kernelforge.graph.onnx_import import UnsupportedModelError, import_model
from kernelforge.testing.onnx_backend import LIMITS, cases, op_types, run_case, supported_op_types

pytestmark = pytest.mark.device

CASES = {c.name: c for c in cases()}
SUPPORTED = supported_op_types()
RUNNABLE = sorted(name for name, c in CASES.items() if op_types(c.model) <= SUPPORTED)
UNSUPPORTED_TYPES = sorted({t for c in CASES.values() for t in op_types(c.model) - SUPPORTED})


def test_the_cases_are_there():
    assert len(CASES) >= 1800, f"expected ONNX's node cases, found {len(CASES)}"
    assert len(RUNNABLE) >= 700


@pytest.mark.parametrize("name", RUNNABLE)
@pytest.mark.parametrize("language", ["wgsl", "glsl"])
def test_case_passes_or_hits_a_documented_limit(name, language, lavapipe, gl):
    device = lavapipe if language == "wgsl" else gl
    outcome = run_case(CASES[name], device.info.index, language)
    assert outcome.error is None, f"{name} ({language}): {outcome.error}"
    assert outcome.passed or outcome.limit in LIMITS


@pytest.mark.parametrize("op_type", UNSUPPORTED_TYPES)
def test_unsupported_op_types_are_named_at_load(op_type):
    named = re.escape(op_type.split(":")[-1])
    for case in CASES.values():
        if op_type not in op_types(case.model):
            continue
        with pytest.raises(UnsupportedModelError, match=rf"{named} node '[^']*' \(opset \d+\): (op type|domain)"):
            import_model(case.model)
