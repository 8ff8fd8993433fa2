"""pool2d_argmax (MaxPool's indices) spec, reference semantics, templates and import: no device needed."""

from __future__ import annotations

import itertools
import re

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from kernelforge.errors import ShapeError
from kernelforge.graph.ir import GraphError
from kernelforge.graph.onnx_import import import_model
from kernelforge.ops import Limits, get_op
from kernelforge.ops.pool_argmax import PoolArgmaxProblem, argmax_indices
from kernelforge.templates import render
from kernelforge.testing.ops import assert_default_fits, assert_params_reach_template, every_config

from .test_onnx_import import check_numerics, make_model, ops

SPEC = get_op("pool2d_argmax")
LIMITS = Limits()
LANGUAGES = ["wgsl", "glsl"]
SHAPES = [
    "max:1x1x1x1:k1",
    "max:1x64x112x112:k3:s2:p1",
    "max:2x13x17x19:k3x2:s2x3:p0x1x2x0:ceil:col",
    "max:1x7x1x20000:k1x200:s1x10:p0x100x0x100:d1x10",  # wider than any texture row
    "max:1x1x4096x4096:k2:s2",  # 2^24 elements: the largest input
]


def _maxpool(shape, attrs, outputs=("y", "i"), name=""):
    """A MaxPool model; its indices output is int64."""
    model = make_model([helper.make_node("MaxPool", ["x"], ["y", "i"], name=name, **attrs)], {"x": shape}, outputs)
    for out in model.graph.output:
        if out.name == "i":
            out.type.tensor_type.elem_type = TensorProto.INT64
    return model


@pytest.mark.parametrize("language", LANGUAGES)
def test_every_param_reaches_the_template(language):
    assert_params_reach_template(SPEC, language)


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("shape", SHAPES)
def test_default_params_always_fit(shape, language):
    problem = SPEC.parse_problem(shape)
    for limits in (LIMITS, Limits(max_invocations=16, max_wg_x=16)):
        params = assert_default_fits(SPEC, problem, limits, language)
        assert render(SPEC, language, problem, params)


@pytest.mark.parametrize("language", LANGUAGES)
def test_whole_space_renders(language):
    problems = [SPEC.parse_problem(s) for s in ("max:2x8x7x5:k3:s2:p1:ceil", "max:1x4x3x9:k2:d1x3:col")]
    for problem, params in itertools.product(problems, every_config(SPEC, language)):
        text = render(SPEC, language, problem, params)
        assert "{{" not in text
        column_major = re.search(r"best_w\)? \* (H|dims\.h)", text) is not None  # h + w*H
        assert column_major == (problem.storage_order == 1)


def test_shape_syntax_and_keys_round_trip():
    problem = SPEC.parse_problem("max:1x1x5x5:k2:s2:col")
    assert problem.storage_order == 1 and problem.kernel_shape == (2, 2) and problem.strides == (2, 2)
    assert SPEC.problem_key(problem) == "max:1x1x5x5:k2x2:s2x2:p0x0x0x0:col"
    assert get_op("pool2d").problem_key(problem.pool) == "max:1x1x5x5:k2x2:s2x2:p0x0x0x0"
    for shape in SHAPES:
        problem = SPEC.parse_problem(shape)
        assert SPEC.parse_problem(SPEC.problem_key(problem)) == problem


@pytest.mark.parametrize(
    "text",
    ["avg:1x1x4x4:k2", "gmax:1x1x4x4", "max:1x1x4x4", "max:1x1x4x4:k2:cip", "max:1x1x4097x4097:k2", "col"],
)
def test_bad_shape_strings(text):
    with pytest.raises(ShapeError):
        SPEC.parse_problem(text)


def test_problem_validation_names_the_field():
    with pytest.raises(ShapeError, match="storage_order"):
        PoolArgmaxProblem(1, 1, 4, 4, kernel_shape=(2, 2), storage_order=2)
    with pytest.raises(ShapeError, match="2\\^24"):
        PoolArgmaxProblem(1, 2, 4096, 4096, kernel_shape=(2, 2))
    with pytest.raises(ShapeError, match="windowed max"):
        PoolArgmaxProblem(1, 1, 4, 4, mode="avg", kernel_shape=(2, 2))


def test_constraints_name_the_reason():
    wide = SPEC.parse_problem("max:1x7x1x20000:k1x200:s1x10")
    assert "MAX_TEXTURE_SIZE" in SPEC.constraints(wide, {"pack": 1, "square": 0}, LIMITS, "glsl")
    problem = SPEC.parse_problem("max:1x6x8x8:k2")
    reason = SPEC.constraints(problem, {"wg_size": 256, "wpt_w": 1}, Limits(max_invocations=128), "wgsl")
    assert "workgroup limits" in reason


def test_reference_gives_onnx_cases_outputs():
    # ONNX's test_maxpool_with_argmax_2d_precomputed_pads and _strides (storage_order=1)
    x = np.arange(1, 26, dtype=np.float32).reshape(1, 1, 5, 5)
    pads = argmax_indices(SPEC.parse_problem("max:1x1x5x5:k5:p2"), x)
    np.testing.assert_array_equal(pads[0, 0, :, 0], [12, 17, 22, 22, 22])
    np.testing.assert_array_equal(pads[0, 0, 0], [12, 13, 14, 14, 14])
    strides = argmax_indices(SPEC.parse_problem("max:1x1x5x5:k2:s2:col"), x)
    np.testing.assert_array_equal(strides[0, 0], [[6, 16], [8, 18]])


def test_reference_ties_nan_and_empty_windows():
    x = np.array([[3, 1, 3], [3, np.nan, np.nan], [-np.inf, -np.inf, 2]], np.float32).reshape(1, 1, 3, 3)
    first = argmax_indices(PoolArgmaxProblem(1, 1, 3, 3, kernel_shape=(1, 3)), x)[0, 0, :, 0]
    assert first.tolist() == [0, 4, 8]  # the first maximum; the first NaN; -inf taps lose to 2
    all_inf = np.full((1, 1, 2, 2), -np.inf, np.float32)
    assert argmax_indices(PoolArgmaxProblem(1, 1, 2, 2, kernel_shape=(2, 2)), all_inf).item() == 0
    # a window over padding only (dilation skips the single row): -1
    none = PoolArgmaxProblem(1, 1, 1, 3, kernel_shape=(2, 1), pads=(1, 0, 1, 0), dilations=(2, 1))
    assert (argmax_indices(none, np.ones((1, 1, 1, 3), np.float32)) == -1).all()


@pytest.mark.parametrize(
    ("shape", "attrs"),
    [
        ("max:2x3x7x9:k3x2:s1:p1x1x1x1", {"kernel_shape": [3, 2], "pads": [1, 1, 1, 1]}),
        ("max:2x3x7x9:k3x2:s2x1:p0x1x1x0", {"kernel_shape": [3, 2], "strides": [2, 1], "pads": [0, 1, 1, 0]}),
        ("max:1x2x8x8:k3:s2:p1:ceil", {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1] * 4, "ceil_mode": 1}),
        ("max:1x2x9x8:k2:s1:d2", {"kernel_shape": [2, 2], "dilations": [2, 2]}),
        ("max:1x2x7x5:k3:s2:col", {"kernel_shape": [3, 3], "strides": [2, 2], "storage_order": 1}),
        ("max:2x2x6x5:k2:s1:col", {"kernel_shape": [2, 2], "storage_order": 1}),
    ],
)
def test_reference_matches_onnxruntime(shape, attrs):
    problem = SPEC.parse_problem(shape)
    x = SPEC.make_inputs(problem, np.random.default_rng(0))[0]  # small integers: many ties
    model = _maxpool(list(x.shape), attrs)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_array_equal(argmax_indices(problem, x), session.run(None, {"x": x})[1])


@pytest.mark.parametrize(
    ("shape", "attrs"),
    [
        ([2, 3, 9, 8], {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}),
        ([1, 2, 8, 7], {"kernel_shape": [3, 2], "strides": [2, 2], "auto_pad": "SAME_LOWER", "storage_order": 1}),
        ([2, 3, 20], {"kernel_shape": [4], "strides": [3], "pads": [1, 2], "storage_order": 1}),  # 1-D
    ],
)
def test_import_runs_the_indices_as_onnxruntime(shape, attrs):
    model = _maxpool(shape, attrs)
    x = np.random.default_rng(1).integers(-3, 4, shape).astype(np.float32)
    graph = check_numerics(model, {"x": x})
    assert ops(graph).count("pool2d") == 1 and ops(graph).count("pool2d_argmax") == 1


def test_unread_indices_run_no_kernel():
    graph = import_model(_maxpool([1, 2, 4, 4], {"kernel_shape": [2, 2]}, ["y"]))
    assert "pool2d_argmax" not in ops(graph)


def test_indices_past_2_24_are_refused_naming_the_node():
    model = _maxpool([1, 1, 4097, 4097], {"kernel_shape": [2, 2], "strides": [2, 2]}, name="big")
    with pytest.raises(GraphError, match=r"MaxPool node 'big'.*2\^24"):
        import_model(model)
