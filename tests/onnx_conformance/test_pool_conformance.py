"""The ONNX wheel's ``pytorch-converted`` pooling cases, run through the pool API on both languages.

These models and their expected outputs were produced by PyTorch, not by us: an external conformance set.
The 1-D AvgPool models wrap a 2-D AveragePool in Unsqueeze/Squeeze; those two nodes are applied in numpy.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import kernelforge.api as kops
from kernelforge.tuner.objective import verify

pytestmark = pytest.mark.device
DATA = Path(onnx.__file__).resolve().parent / "backend" / "test" / "data" / "pytorch-converted"
CASES = [
    "test_AvgPool1d",
    "test_AvgPool1d_stride",
    "test_AvgPool2d",
    "test_AvgPool2d_stride",
    "test_MaxPool1d",
    "test_MaxPool1d_stride",
    "test_MaxPool1d_stride_padding_dilation",
    "test_MaxPool2d",
    "test_MaxPool2d_stride_padding_dilation",
]


def _tensor(case: str, name: str) -> np.ndarray:
    return numpy_helper.to_array(onnx.load_tensor(str(DATA / case / "test_data_set_0" / name)))


def _run_graph(case: str, x: np.ndarray, backend: str) -> np.ndarray:
    """Run the model's nodes in order: pools through kernelforge, Unsqueeze/Squeeze (by attribute) in numpy."""
    model = onnx.load(str(DATA / case / "model.onnx"))
    values = {model.graph.input[0].name: x}
    pools = 0
    for node in model.graph.node:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        value = values[node.input[0]]
        if node.op_type == "Unsqueeze":
            out = np.expand_dims(value, tuple(attrs["axes"]))
        elif node.op_type == "Squeeze":
            out = np.squeeze(value, tuple(attrs["axes"]))
        elif node.op_type in ("MaxPool", "AveragePool"):
            assert not attrs.pop("storage_order", 0), f"{case}: storage_order is not supported"
            auto_pad = attrs.pop("auto_pad", b"NOTSET")
            attrs["auto_pad"] = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
            pool = kops.max_pool if node.op_type == "MaxPool" else kops.average_pool
            out = pool(value, **attrs, device="lavapipe" if backend == "wgsl" else "auto", backend=backend)
            pools += 1
        else:
            raise AssertionError(f"{case}: unexpected node {node.op_type}")
        values[node.output[0]] = out
    assert pools == 1, f"{case}: expected one pooling node, ran {pools}"
    return values[model.graph.output[0].name]


def test_the_conformance_set_is_there():
    missing = [c for c in CASES if not (DATA / c / "model.onnx").exists()]
    assert not missing, f"pytorch-converted pool cases missing under {DATA}: {missing}"


@pytest.mark.parametrize("backend", ["wgsl", "glsl"])
@pytest.mark.parametrize("case", CASES)
def test_pytorch_converted_pool(case, backend, lavapipe, gl):
    # the named cases ship in every onnx wheel we support: a missing one is a broken install, not a skip
    assert (DATA / case / "model.onnx").exists(), f"{case} is missing from the onnx wheel at {DATA}"
    expected = _tensor(case, "output_0.pb")
    out = _run_graph(case, _tensor(case, "input_0.pb"), backend)
    assert out.shape == expected.shape, f"{case} on {backend}: shape {out.shape} != {expected.shape}"
    verdict = verify(out, expected.astype(np.float64), rtol=1e-5)
    assert verdict.ok, f"{case} on {backend}: max error {verdict.max_error} > {verdict.tolerance}"
