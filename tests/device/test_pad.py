"""Pad on real adapters (WGSL and GLSL) against the numpy reference, onnx.reference and numpy's np.pad."""

from __future__ import annotations

import numpy as np
import pytest

import kernelforge.api as kops
from kernelforge.errors import ShapeError
from kernelforge.ops import get_op
from kernelforge.testing.ops import check_op, every_config

pytestmark = pytest.mark.device
SPEC = get_op("pad")

SHAPES = [
    "1:p0,0",
    "1:p3,2:edge",
    "7:p6,6:reflect",  # reflect pads up to size - 1
    "13:p-3,5:reflect",  # crop one side, reflect the other within the kept range
    "5x7:p-1,2,3,-2:constant:v1.5",
    "3x1x4:p1,2,0,2,3,1:edge",  # a size-1 axis padded by edge
    "2x3x5x7:p0,1,2,-1,1,0,3,2:reflect",
    "1x3x17x13:p0,0,1,1,0,0,1,1:reflect",
    "2x3x4x5x3x2:p1,0,1,0,1,1,0,1,1,0,1,1:constant:v-2.5",  # rank 6
    "1x1x1x1x1x1:p1,1,1,1,1,1,1,1,1,1,1,1:edge",
    "31x37:p0,-30,0,5:reflect",
    "4x5:p-4,0,2,0:constant:v0.25",  # a whole axis cropped away, then filled with the value
    "3x67:p2,9,1,11:reflect",  # pads past the kept size bounce (numpy / onnx.reference semantics)
    "1x3x4x5:p0,0,1,1,0,0,1,1:wrap",
    "13:p-3,17:wrap",  # crop one side, wrap more than the kept size around the other
    "2x3x5x7:p0,-1,9,2,1,0,-2,4:wrap",
    "3x1x4:p1,2,0,2,3,1:wrap",  # a size-1 axis wraps onto itself
]


@pytest.mark.parametrize("shape", SHAPES)
def test_shapes_wgsl(lavapipe, shape):
    problem = SPEC.parse_problem(shape)
    rng = np.random.default_rng(len(shape))
    every = every_config(SPEC, "wgsl")
    configs = [SPEC.default_params(problem, lavapipe.limits, "wgsl")] + [
        every[int(i)] for i in rng.choice(len(every), 3)
    ]
    for params in configs:
        assert SPEC.constraints(problem, params, lavapipe.limits, "wgsl") is None
        check_op(lavapipe, SPEC, problem, params)


@pytest.mark.parametrize("shape", SHAPES)
def test_shapes_glsl(gl, shape):
    problem = SPEC.parse_problem(shape)
    for params in every_config(SPEC, "glsl"):  # the whole (small) GLSL space
        check_op(gl, SPEC, problem, params)


def test_every_wgsl_device_runs_pad(wgsl_device):
    for shape in ("2x3x5x7:p0,1,2,-1,1,0,3,2:reflect", "5x7:p-1,2,3,-2:constant:v1.5"):
        problem = SPEC.parse_problem(shape)
        for params in (SPEC.default_params(problem, wgsl_device.limits, "wgsl"), {"wg_size": 32, "ept": 8}):
            check_op(wgsl_device, SPEC, problem, params)


@pytest.mark.parametrize("backend", ["wgsl", "glsl"])
def test_public_api_matches_numpy(lavapipe, gl, backend):
    device = "lavapipe" if backend == "wgsl" else "auto"
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 3, 5, 4)).astype(np.float32)
    out = kops.pad(x, [0, 0, 1, 3, 0, 0, 2, 1], mode="reflect", device=device, backend=backend)
    np.testing.assert_array_equal(out, np.pad(x, ((0, 0), (0, 0), (1, 2), (3, 1)), mode="reflect"))
    # axes, negative pads (crop), ints converted
    out = kops.pad(np.arange(12).reshape(3, 4), [-1, 2], mode="edge", axes=[-1], device=device, backend=backend)
    np.testing.assert_array_equal(out, np.pad(np.arange(12).reshape(3, 4)[:, 1:], ((0, 0), (0, 2)), mode="edge"))
    # -inf, the padding a max pool wants: exact through the float32 bits
    out = kops.pad(x, [1, 1], constant_value=-np.inf, axes=[2], device=device, backend=backend)
    np.testing.assert_array_equal(out, np.pad(x, ((0, 0), (0, 0), (1, 1), (0, 0)), constant_values=-np.inf))


def test_public_api_rejects_bad_input(lavapipe):
    with pytest.raises(ShapeError, match="pad: pads needs 4"):
        kops.pad(np.ones((2, 3)), [1, 1], device="lavapipe")
    with pytest.raises(ShapeError, match="pad: x must have rank"):
        kops.pad(np.ones((1,) * 7), [0] * 14, device="lavapipe")
    with pytest.raises(ShapeError, match="pad: constant_value"):
        kops.pad(np.ones(3), [1, 1], constant_value=True, device="lavapipe")
    with pytest.raises(ShapeError, match="pad: mode"):
        kops.pad(np.ones(3), [1, 1], mode="circular", device="lavapipe")
    with pytest.raises(ShapeError, match="dtype"):
        kops.pad(np.array(["a"]), [1, 1], device="lavapipe")
    with pytest.raises(ShapeError, match="pad: axes"):
        kops.pad(np.ones((2, 3)), [1, 1], axes=[2], device="lavapipe")


@pytest.mark.parametrize("backend", ["wgsl", "glsl"])
def test_single_node_onnx_graphs(lavapipe, gl, backend):
    from tests.null.test_pad_spec import _onnx_pad

    device = "lavapipe" if backend == "wgsl" else "auto"
    rng = np.random.default_rng(9)
    x = rng.standard_normal((1, 3, 6, 5)).astype(np.float32)
    for mode, pads, axes, value in (
        ("reflect", [0, 0, 2, 4, 0, 0, 3, 1], None, None),
        ("edge", [1, 2, 0, 3], [1, -1], None),
        ("constant", [2, 1, 1, 0], [2, 3], -1.5),
        ("wrap", [0, 0, 3, 2, 0, 0, 1, 6], None, None),
    ):
        _, expected = _onnx_pad(x, pads, mode, value, axes)
        got = kops.pad(x, pads, mode, 0.0 if value is None else value, axes, device=device, backend=backend)
        np.testing.assert_array_equal(got, expected)
