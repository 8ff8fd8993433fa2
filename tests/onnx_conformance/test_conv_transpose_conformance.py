"""The ONNX wheel's ConvTranspose expectations and its 1-D Conv/pool models, run on both languages.

Three external sets, none produced by us: the ``pytorch-converted`` ConvTranspose2d cases (PyTorch's outputs)
through the op's own kernel; the ``onnx.backend.test.case.node`` ConvTranspose cases (the ONNX authors' numpy
outputs) as whole models through :func:`kernelforge.load` (their W made a constant); and the
``pytorch-converted`` 1-D Conv and pooling models through :func:`kernelforge.load`, which imports their 1-D
nodes as 2-D kernels over a height of 1.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import kernelforge
from kernelforge.api import run_op
from kernelforge.graph.onnx_import import import_model
from kernelforge.graph.reference import run_graph
from kernelforge.ops import get_op
from kernelforge.tuner.objective import verify

pytestmark = pytest.mark.device
DATA = Path(onnx.__file__).resolve().parent / "backend" / "test" / "data" / "pytorch-converted"
SPEC = get_op("conv_transpose2d")
PYTORCH_CASES = ["test_ConvTranspose2d", "test_ConvTranspose2d_no_bias"]
ONE_D_CASES = sorted(p.name for p in DATA.glob("test_*1d*") if p.name.startswith(("test_Conv1d", "test_MaxPool1d")))
ONE_D_CASES += ["test_AvgPool1d", "test_AvgPool1d_stride"]
NODE_CASES = [
    "test_convtranspose",
    "test_convtranspose_1d",
    "test_convtranspose_output_shape",
    "test_convtranspose_pad",
    "test_convtranspose_kernel_shape",
    "test_convtranspose_pads",
    "test_convtranspose_dilations",
    "test_convtranspose_autopad_same",
    "test_convtranspose_group_2",
    "test_convtranspose_group_2_image_3",
    "test_convtranspose_3d",
]
BACKENDS = {"wgsl": "lavapipe", "glsl": "auto"}


def _tensor(case: str, name: str) -> np.ndarray:
    return numpy_helper.to_array(onnx.load_tensor(str(DATA / case / "test_data_set_0" / name)))


def _model(case: str) -> onnx.ModelProto:
    """Return a pytorch-converted model stamped opset 11 (its opset 6 predates kernelforge's oldest, 9).

    Conv, ConvTranspose, MaxPool, AveragePool, Unsqueeze and Squeeze mean the same in 6 and 11 for the
    attributes these models set (explicit pads, no auto_pad or ceil_mode).
    """
    model = onnx.load(str(DATA / case / "model.onnx"))
    for opset in model.opset_import:
        if opset.domain in ("", "ai.onnx"):
            opset.version = max(opset.version, 11)
    return model


def _assert_matches(got: np.ndarray, expected: np.ndarray, what: str) -> None:
    got = np.asarray(got).reshape(expected.shape)
    verdict = verify(got, expected.astype(np.float64), rtol=1e-4)
    assert verdict.ok, f"{what}: max error {verdict.max_error} > {verdict.tolerance}"


def test_the_conformance_sets_are_there():
    assert all((DATA / case / "model.onnx").exists() for case in PYTORCH_CASES)
    assert len(ONE_D_CASES) >= 13, ONE_D_CASES
    assert sorted(_node_cases()) == sorted(NODE_CASES)


@pytest.mark.parametrize("case", PYTORCH_CASES)
@pytest.mark.parametrize("backend", ["wgsl", "glsl"])
def test_pytorch_converted_conv_transpose_kernel(case, backend, lavapipe, gl):
    model = onnx.load(str(DATA / case / "model.onnx"))
    (node,) = model.graph.node
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    weights = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    inputs = [_tensor(case, "input_0.pb"), *(weights[name] for name in node.input[1:] if name)]
    problem = SPEC.from_node([a.shape for a in inputs], SPEC.from_onnx("ConvTranspose", 6, attrs))
    out = run_op("conv_transpose2d", problem, inputs, BACKENDS[backend], backend)
    _assert_matches(out, _tensor(case, "output_0.pb"), f"{case} on {backend}")


@pytest.mark.parametrize("case", PYTORCH_CASES + ONE_D_CASES)
@pytest.mark.parametrize("backend", ["wgsl", "glsl"])
def test_pytorch_converted_models(case, backend, lavapipe, gl):
    model = _model(case)
    x = _tensor(case, "input_0.pb")
    expected = _tensor(case, "output_0.pb")
    device = lavapipe if backend == "wgsl" else gl
    session = kernelforge.load(model, device=device.info.index, backend=backend)
    (name,) = [i.name for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
    (got,) = session.run({name: x}).values()
    _assert_matches(got, expected, f"{case} on {backend}")
    if "1d" in case:  # 1-D windows run as 2-D kernels over a height of 1
        assert {s.call.op for s in session.steps} & {"conv2d", "pool2d"}


@functools.cache
def _node_cases() -> dict[str, Any]:
    from onnx.backend.test.case.node import collect_testcases

    return {case.name: case for case in collect_testcases("ConvTranspose") if "convtranspose" in case.name}


def _node_case(
    name: str, runtime_weight: bool = False
) -> tuple[onnx.ModelProto, dict[str, np.ndarray], list[np.ndarray]]:
    """Return a node case's model with its weight input made an initializer, the remaining feeds and outputs.

    The cases feed W at run time; with ``runtime_weight`` it stays so (a relayout kernel, or for a grouped
    layer one ungrouped kernel per group), else it becomes a constant, rearranged at load.
    """
    case = _node_cases()[name]
    inputs, outputs = case.data_sets[0]
    feeds = {i.name: np.asarray(a) for i, a in zip(case.model.graph.input, inputs, strict=True)}
    model = onnx.ModelProto()
    model.CopyFrom(case.model)
    if runtime_weight:
        return model, feeds, [np.asarray(a) for a in outputs]
    weight = model.graph.node[0].input[1]
    model.graph.initializer.append(numpy_helper.from_array(feeds.pop(weight), weight))
    kept = [i for i in model.graph.input if i.name != weight]
    del model.graph.input[:]
    model.graph.input.extend(kept)
    return model, feeds, [np.asarray(a) for a in outputs]


@pytest.mark.parametrize("name", NODE_CASES)
def test_onnx_node_cases_in_the_numpy_interpreter(name):
    model, feeds, (expected,) = _node_case(name)
    (got,) = run_graph(import_model(model), feeds).values()
    _assert_matches(got, expected, name)


@pytest.mark.parametrize("name", NODE_CASES)
@pytest.mark.parametrize("backend", ["wgsl", "glsl"])
def test_onnx_node_cases(name, backend, lavapipe, gl):
    model, feeds, (expected,) = _node_case(name)
    device = lavapipe if backend == "wgsl" else gl
    session = kernelforge.load(model, device=device.info.index, backend=backend)
    (got,) = session.run(feeds).values()
    _assert_matches(got, expected, f"{name} on {backend}")


@pytest.mark.parametrize("name", NODE_CASES)
@pytest.mark.parametrize("backend", ["wgsl", "glsl"])
def test_onnx_node_cases_with_weights_computed_at_run_time(name, backend, lavapipe, gl):
    model, feeds, (expected,) = _node_case(name, runtime_weight=True)
    device = lavapipe if backend == "wgsl" else gl
    session = kernelforge.load(model, device=device.info.index, backend=backend)
    (got,) = session.run(feeds).values()
    _assert_matches(got, expected, f"{name} on {backend}")
    group = next((a.i for a in model.graph.node[0].attribute if a.name == "group"), 1)
    kernels = [s.call.op for s in session.steps if s.call.op == "conv_transpose2d"]
    w_shape = feeds[model.graph.node[0].input[1]].shape
    # a grouped layer runs one kernel per group; a 3-D one, one per depth tap and one placing depth
    assert len(kernels) == (group if len(w_shape) < 5 else w_shape[2] + 1)


@pytest.mark.parametrize(
    "name", ["test_convtranspose_3d", "test_convtranspose_group_2", "test_convtranspose_group_2_image_3"]
)
@pytest.mark.parametrize("language", ["wgsl", "glsl"])
def test_node_cases_pass_through_the_backend_adapter(name, language, lavapipe, gl):
    # as ONNX's runner gives them: W fed at run time, ONNX's tolerances, exact shapes and dtypes
    from kernelforge.testing.onnx_backend import cases, run_case

    (case,) = [c for c in cases() if c.name == name]
    outcome = run_case(case, (lavapipe if language == "wgsl" else gl).info.index, language)
    assert outcome.passed, outcome
