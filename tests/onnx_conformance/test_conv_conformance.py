"""The ONNX wheel's ``pytorch-converted`` Conv cases, run through :func:`kernelforge.ops.conv2d` on both languages.

These models and their expected outputs were produced by PyTorch, not by us: an external conformance set.
Conv1d cases run as 2-D convs over a height of 1.
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
CASES = sorted(p.name for p in DATA.glob("test_Conv[12]d*") if (p / "model.onnx").exists()) if DATA.exists() else []


def _load(case: str):
    model = onnx.load(str(DATA / case / "model.onnx"))
    (node,) = [n for n in model.graph.node if n.op_type == "Conv"]
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    weights = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    x = numpy_helper.to_array(onnx.load_tensor(str(DATA / case / "test_data_set_0" / "input_0.pb")))
    expected = numpy_helper.to_array(onnx.load_tensor(str(DATA / case / "test_data_set_0" / "output_0.pb")))
    w = weights[node.input[1]]
    bias = weights[node.input[2]] if len(node.input) > 2 and node.input[2] else None
    return x, w, bias, attrs, expected


def _as_2d(x, w, attrs):
    """Map a 1-D conv onto a 2-D one with height 1 (and pass 2-D attributes through)."""
    if x.ndim == 4:
        return x, w, attrs
    pads = list(attrs.get("pads", [0, 0]))
    return (
        x[:, :, None, :],
        w[:, :, None, :],
        {
            "strides": [1, *attrs.get("strides", [1])],
            "dilations": [1, *attrs.get("dilations", [1])],
            "pads": [0, pads[0], 0, pads[1]],
            "group": attrs.get("group", 1),
        },
    )


def test_the_conformance_set_is_there():
    assert len(CASES) >= 15, f"expected the pytorch-converted Conv cases under {DATA}, found {CASES}"


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("backend", ["wgsl", "glsl"])
def test_pytorch_converted_conv(case, backend, lavapipe, gl):
    x, w, bias, attrs, expected = _load(case)
    x2, w2, attrs2 = _as_2d(x, w, attrs)
    out = kops.conv2d(
        x2,
        w2,
        bias,
        strides=attrs2.get("strides"),
        pads=attrs2.get("pads"),
        dilations=attrs2.get("dilations"),
        group=int(attrs2.get("group", 1)),
        device="lavapipe" if backend == "wgsl" else "auto",
        backend=backend,
    )
    out = out.reshape(expected.shape)
    verdict = verify(out, expected.astype(np.float64), rtol=1e-4)
    assert verdict.ok, f"{case} on {backend}: max error {verdict.max_error} > {verdict.tolerance}"
