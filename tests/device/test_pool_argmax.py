"""MaxPool's indices (pool2d_argmax) on real adapters (WGSL and GLSL) against the numpy reference and ONNX Runtime."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

import kernelforge
from kernelforge.ops import get_op
from kernelforge.ops.pool_argmax import PoolArgmaxProblem
from kernelforge.testing.ops import check_op, check_sampled_configs, valid_configs

from .test_session import assert_matches_ort

pytestmark = pytest.mark.device
SPEC = get_op("pool2d_argmax")

SHAPES = [
    "max:1x1x1x1:k1",
    "max:1x1x5x5:k5:p2",  # ONNX's precomputed-pads case: windows mostly padding
    "max:1x1x5x5:k2:s2:col",  # ... and its storage_order=1 case
    "max:1x8x13x11:k3:s2:p1",
    "max:2x5x7x9:k3x2:s2x1:p0x1x1x0:col",  # asymmetric pads, column-major
    "max:2x12x17x19:k3:s2:ceil",  # ceil_mode
    "max:1x4x9x10:k3x2:s1:p2x1:d2x3:col",  # dilations
    "max:1x3x1x7:k2x3:s1:p1:d2x1",  # windows without an input tap: -1
    "max:1x3x1x300:k1x5:s1x3",  # a 1-D window over H = 1
]


@pytest.mark.parametrize("shape", SHAPES)
def test_wgsl_shapes_with_sampled_configs(lavapipe, shape):
    configs = check_sampled_configs(lavapipe, SPEC, SPEC.parse_problem(shape), 3, len(shape), rtol=0.0)
    assert len(configs) >= 2


@pytest.mark.parametrize("shape", SHAPES)
def test_glsl_shapes_with_sampled_configs(gl, shape):
    problem = SPEC.parse_problem(shape)
    # every GLSL config: the four of the space, packed rows that end mid-texel included
    configs = valid_configs(SPEC, problem, gl.limits, "glsl")
    assert len(configs) == 4
    for params in configs:
        check_op(gl, SPEC, problem, params, rtol=0.0)


def _special_window() -> np.ndarray:
    """Planes of ties, infinities and NaN: the first maximum, a NaN the max keeps, an all -inf window."""
    nan, inf = np.nan, np.inf
    planes = [
        [[1, 3, 3, 0], [3, 2, 3, 3], [0, 3, 1, 3], [2, 2, 3, 0]],
        [[nan, 5, 1, 9], [2, nan, 9, nan], [-inf, -inf, 7, 7], [-inf, -inf, nan, 7]],
        [[-inf, -inf, inf, 1], [-inf, -inf, 1, inf], [0, nan, 2, 2], [nan, 0, 2, 2]],
    ]
    return np.array(planes, np.float32).reshape(1, 3, 4, 4)


@pytest.mark.parametrize("language", ["wgsl", "glsl"])
@pytest.mark.parametrize("storage_order", [0, 1])
def test_ties_nan_and_infinities(lavapipe, gl, language, storage_order):
    backend = lavapipe if language == "wgsl" else gl
    x = _special_window()
    for kernel, strides, pads in (((2, 2), (2, 2), (0, 0, 0, 0)), ((3, 3), (1, 1), (1, 1, 1, 1))):
        problem = PoolArgmaxProblem(
            1, 3, 4, 4, kernel_shape=kernel, strides=strides, pads=pads, storage_order=storage_order
        )
        want = SPEC.reference(problem, [x])
        for params in valid_configs(SPEC, problem, backend.limits, language)[:4]:
            out = check_op(backend, SPEC, problem, params, rtol=0.0, inputs=[x])
            np.testing.assert_array_equal(out, want)


def _maxpool_model(shape, attrs, opset=13):
    node = helper.make_node("MaxPool", ["x"], ["y", "i"], **attrs)
    graph = helper.make_graph(
        [node],
        "maxpool_indices",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, None),
            helper.make_tensor_value_info("i", TensorProto.INT64, None),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


@pytest.mark.parametrize("language", ["wgsl", "glsl"])
@pytest.mark.parametrize(
    ("shape", "attrs"),
    [
        ((2, 3, 9, 8), {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}),
        ((1, 4, 7, 6), {"kernel_shape": [2, 3], "strides": [2, 1], "storage_order": 1, "ceil_mode": 1}),
        ((1, 2, 8, 7), {"kernel_shape": [3, 2], "strides": [2, 2], "auto_pad": "SAME_UPPER"}),
        ((1, 2, 9, 8), {"kernel_shape": [2, 3], "pads": [1, 0, 0, 2], "dilations": [3, 2], "storage_order": 1}),
        ((2, 3, 20), {"kernel_shape": [4], "strides": [3], "pads": [1, 2]}),  # 1-D
        ((2, 3, 20), {"kernel_shape": [3], "storage_order": 1}),
    ],
)
def test_maxpool_indices_match_onnxruntime(lavapipe, gl, language, shape, attrs):
    backend = lavapipe if language == "wgsl" else gl
    model = _maxpool_model(shape, attrs)
    session = kernelforge.load(model, device=backend.info.index, backend=language)
    # small integers: windows have ties, and the first maximum must win as in ONNX Runtime
    feeds = {"x": np.random.default_rng(3).integers(-3, 4, shape).astype(np.float32)}
    out = session.run(feeds)
    assert out["i"].dtype == np.int64
    assert_matches_ort(model, out, feeds)
