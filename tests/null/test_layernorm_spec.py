"""LayerNormalization spec, templates, ONNX import and export: no device needed."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from kernelforge.errors import InvalidParamsError, ShapeError
from kernelforge.export import export
from kernelforge.graph.ir import GraphError
from kernelforge.graph.lower import lower
from kernelforge.graph.onnx_import import UnsupportedModelError, import_model
from kernelforge.graph.passes import optimize
from kernelforge.graph.prepare import model_kernels
from kernelforge.graph.reference import run_graph
from kernelforge.ops import Limits, get_op
from kernelforge.ops.layernorm import LayerNormProblem
from kernelforge.templates import render
from kernelforge.testing.ops import assert_default_fits, assert_params_reach_template, every_config, valid_configs

SPEC = get_op("layernorm")
LIMITS = Limits()
TINY = Limits(max_invocations=32, max_wg_x=32, max_wg_y=32, max_workgroup_storage=1024, max_texture_size=2048)
SHAPES = [
    "1",
    "1x1",
    "7",
    "5x3",
    "128x384",
    "2x4096",
    "1x16384",
    "4x1x768",
    "2x3x4x5:a1",
    "2x3x4x5:a0",
    "8x16x32:a-2",
    "65536x3",
    "200000x8",
    "3x7:nb",
]
REPO_DB = Path(__file__).resolve().parents[2] / "tuning_db"


def layernorm_model(
    x_shape: Sequence[int],
    axis: int = -1,
    epsilon: float = 1e-5,
    bias: bool = True,
    opset: int = 17,
    params_as_inputs: bool = False,
    **attrs: int,
) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """Return a one-node LayerNormalization model and its feeds (Scale, B: initializers or ``params_as_inputs``)."""
    rng = np.random.default_rng(3)
    first = axis % len(x_shape)
    normalised = list(x_shape[first:])
    offsets = rng.uniform(-3, 3, (*x_shape[:first], *[1] * len(normalised)))  # one per normalised row
    x = (offsets + rng.standard_normal(x_shape)).astype(np.float32)
    params = {"scale": rng.uniform(0.5, 1.5, normalised).astype(np.float32)}
    if bias:
        params["bias"] = rng.uniform(-1, 1, normalised).astype(np.float32)
    node = helper.make_node("LayerNormalization", ["x", *params], ["y"], axis=axis, epsilon=epsilon, name="ln", **attrs)
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x_shape))]
    feeds = {"x": x}
    if params_as_inputs:
        inputs += [helper.make_tensor_value_info(k, TensorProto.FLOAT, list(v.shape)) for k, v in params.items()]
        feeds.update(params)
        inits = []
    else:
        inits = [numpy_helper.from_array(v, k) for k, v in params.items()]
    graph = helper.make_graph(
        [node], "layernorm", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(x_shape))], inits
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8 if opset <= 17 else 10
    onnx.checker.check_model(model, full_check=True)
    return model, feeds


def mlp_layernorm_model(opset: int = 17) -> onnx.ModelProto:
    """Return x [2, 5, 8] -> MatMul [8, 16] -> LayerNormalization over the last axis -> Relu."""
    rng = np.random.default_rng(5)
    inits = [
        numpy_helper.from_array(rng.standard_normal((8, 16)).astype(np.float32), "w"),
        numpy_helper.from_array(rng.uniform(0.5, 1.5, 16).astype(np.float32), "gamma"),
        numpy_helper.from_array(rng.uniform(-1, 1, 16).astype(np.float32), "beta"),
    ]
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"),
        helper.make_node("LayerNormalization", ["h", "gamma", "beta"], ["n"], axis=-1, epsilon=1e-5, name="ln"),
        helper.make_node("Relu", ["n"], ["y"], name="relu"),
    ]
    graph = helper.make_graph(
        nodes,
        "mlp_layernorm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 5, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 5, 16])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8 if opset <= 17 else 10
    onnx.checker.check_model(model, full_check=True)
    return model


# --- problems and keys ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text,shape,axis,epsilon,bias",
    [
        ("128x384", (128, 384), 1, 1e-5, True),
        ("128x384:a-1", (128, 384), 1, 1e-5, True),
        ("2x8x16:a1", (2, 8, 16), 1, 1e-5, True),
        ("2x8x16:a-3", (2, 8, 16), 0, 1e-5, True),
        (" 4x768:e1e-12:nb ", (4, 768), 1, 1e-12, False),
        ("4x768:a0:e0.001", (4, 768), 0, 1e-3, True),
        ("5:nb", (5,), 0, 1e-5, False),
    ],
)
def test_parse_and_key_round_trip(text, shape, axis, epsilon, bias):
    problem = SPEC.parse_problem(text)
    assert (problem.shape, problem.axis, problem.epsilon, problem.has_bias) == (shape, axis, epsilon, bias)
    key = SPEC.problem_key(problem)
    assert SPEC.parse_problem(key) == problem and SPEC.problem_key(SPEC.parse_problem(key)) == key
    assert "," not in key and ";" not in key  # the CLI splits --shape lists on both


def test_keys_name_only_what_differs_from_the_defaults():
    assert SPEC.problem_key(LayerNormProblem((128, 384))) == "128x384:a1"
    assert SPEC.problem_key(LayerNormProblem((2, 3, 4), 1, 1e-12, False)) == "2x3x4:a1:e1e-12:nb"
    # an epsilon read from a model is a float32: it makes the same problem as the decimal typed by hand
    from_model = LayerNormProblem((4, 8), -1, float(np.float32(1e-5)))
    assert from_model == LayerNormProblem((4, 8)) and SPEC.problem_key(from_model) == "4x8:a1"


@pytest.mark.parametrize(
    "text",
    ["", "8x", "x8", "8x0", "8,1000", "8x10:a2", "8x10:a-3", "8x10:b1", "8x10:a", "8x10:e", "8x10:e1e", "8x10:nb:a1"],
)
def test_bad_shape_strings(text):
    with pytest.raises(ShapeError, match="layernorm"):
        SPEC.parse_problem(text)


@pytest.mark.parametrize(
    "kwargs,field",
    [
        ({"shape": (), "axis": 0}, "rank"),
        ({"shape": (2, 0), "axis": 0}, "shape"),
        ({"shape": (2, 3), "axis": 2}, "axis"),
        ({"shape": (2, 3), "axis": True}, "axis"),
        ({"shape": (2, 3), "epsilon": -1.0}, "epsilon"),
        ({"shape": (2, 3), "epsilon": float("nan")}, "epsilon"),
        ({"shape": (2, 3), "epsilon": "1e-5"}, "epsilon"),
        ({"shape": (2, 3), "has_bias": 1}, "has_bias"),
        ({"shape": (1,) * 9, "axis": 0}, "rank"),
    ],
)
def test_problem_validation_names_op_and_field(kwargs, field):
    with pytest.raises(ShapeError, match=f"layernorm: .*{field}"):
        LayerNormProblem(**kwargs)


def test_rows_and_length_view():
    problem = SPEC.parse_problem("2x3x4x5:a1")
    assert (problem.rows, problem.length, problem.size) == (2, 60, 120)
    assert SPEC.shape_vector(problem) == (2.0, 60.0)
    assert SPEC.output_shape(problem) == (2, 3, 4, 5)
    assert SPEC.launch(problem, {"threads": 4, "rows_per_wg": 2, "one_pass": 0}).uniforms[:2] == (2, 60)


# --- graph nodes and ONNX attributes ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "x,scale,bias,axis",
    [
        ((4, 8), (8,), (8,), -1),
        ((4, 8), (1, 8), None, -1),
        ((2, 3, 4), (3, 4), (1, 1, 3, 4), 1),
        ((2, 1, 4), (4,), (1, 4), 1),  # a size-1 normalised axis may be dropped from Scale
        ((6,), (6,), (6,), 0),
    ],
)
def test_from_node_accepts_the_normalised_shape(x, scale, bias, axis):
    call = lower("layernorm", [x, scale, bias], {"axis": axis, "epsilon": 1e-5}, ["x", "s", "b" if bias else ""])
    assert call.problem.has_bias == (bias is not None)
    assert call.inputs == (("x", "s", "b") if bias else ("x", "s"))
    # a node with B left out entirely (two inputs) is the same problem
    if bias is None:
        assert SPEC.from_node([x, scale], {"axis": axis, "epsilon": 1e-5}) == call.problem


@pytest.mark.parametrize(
    "x,scale,bias,axis,bad",
    [
        ((4, 8), (4,), None, -1, "Scale of shape (4,)"),
        ((4, 8), (8,), (1,), -1, "B of shape (1,)"),
        ((2, 3, 4), (4,), None, 1, "Scale of shape (4,)"),
        ((2, 3, 4), (3, 1), None, 1, "Scale of shape (3, 1)"),
        ((2, 3, 4), (3, 4), (4, 3), 1, "B of shape (4, 3)"),
        ((4, 8), (8, 1), None, -1, "Scale of shape (8, 1)"),
    ],
)
def test_from_node_rejects_other_scale_and_bias_shapes_naming_both(x, scale, bias, axis, bad):
    with pytest.raises(ShapeError) as info:
        SPEC.from_node([x, scale, bias], {"axis": axis, "epsilon": 1e-5})
    message = str(info.value)
    assert bad in message and str(tuple(x)) in message and str(tuple(x[axis % len(x) :])) in message


def test_from_node_needs_x_and_scale():
    with pytest.raises(ShapeError, match="input 1 is required"):
        SPEC.from_node([(4, 8)], {"axis": -1, "epsilon": 1e-5})
    with pytest.raises(KeyError):
        SPEC.from_node([(4, 8), (8,)], {"axis": -1})


def test_from_onnx_defaults_and_float32_epsilon():
    assert SPEC.from_onnx("LayerNormalization", 17, {}) == {"axis": -1, "epsilon": 1e-5}
    attrs = {"axis": 1, "epsilon": float(np.float32(1e-12)), "stash_type": 1}
    assert SPEC.from_onnx("LayerNormalization", 18, attrs) == {"axis": 1, "epsilon": 1e-12}


@pytest.mark.parametrize(
    "attrs,match",
    [
        ({"stash_type": 0}, "stash_type=0 is not supported"),
        ({"stash_type": 10}, "stash_type=10 is not supported"),
        ({"epsilon": -1.0}, "epsilon"),
        ({"epsilon": float("inf")}, "epsilon"),
    ],
)
def test_from_onnx_rejects_unsupported_attributes(attrs, match):
    with pytest.raises(ValueError, match=match):
        SPEC.from_onnx("LayerNormalization", 17, attrs)


# --- params, constraints, defaults ---------------------------------------------------------------------------


@pytest.mark.parametrize("language", ["wgsl", "glsl"])
def test_every_param_reaches_the_template(language):
    assert_params_reach_template(SPEC, language)


@pytest.mark.parametrize("language", ["wgsl", "glsl"])
@pytest.mark.parametrize("shape", SHAPES)
def test_default_params_always_fit(shape, language):
    problem = SPEC.parse_problem(shape)
    for limits in (LIMITS, TINY):
        if language == "glsl" and limits is TINY and problem.length > 4 * limits.max_texture_size:
            # a row wider than 4 texture widths only fits wrapped square-ish: the last fallback
            assert SPEC.default_params(problem, limits, language)["square"] == 1
        params = assert_default_fits(SPEC, problem, limits, language)
        render(SPEC, language, problem, params)


def test_default_picks_a_thread_per_short_row_and_a_workgroup_per_long_row():
    short = SPEC.default_params(SPEC.parse_problem("4096x8"), LIMITS, "wgsl")
    assert short == {"threads": 1, "rows_per_wg": 64, "one_pass": 0}
    long = SPEC.default_params(SPEC.parse_problem("128x384"), LIMITS, "wgsl")
    assert long == {"threads": 64, "rows_per_wg": 1, "one_pass": 0}
    mid = SPEC.default_params(SPEC.parse_problem("100x40"), LIMITS, "wgsl")
    assert mid == {"threads": 16, "rows_per_wg": 4, "one_pass": 0}
    assert SPEC.default_params(SPEC.parse_problem("128x384"), LIMITS, "glsl") == {
        "pack": 4,
        "square": 0,
        "one_pass": 0,
    }


def test_seed_is_the_default_in_one_pass():
    problem = SPEC.parse_problem("128x384")
    for language in ("wgsl", "glsl"):
        (seed,) = SPEC.seed_params(problem, LIMITS, language)
        assert seed == {**SPEC.default_params(problem, LIMITS, language), "one_pass": 1}


def test_constraints_name_the_reason():
    problem = SPEC.parse_problem("64x1000")
    base = {"threads": 64, "rows_per_wg": 1, "one_pass": 0}
    assert "invocations" in SPEC.constraints(problem, {**base, "rows_per_wg": 8}, LIMITS, "wgsl")
    assert "per-axis" in SPEC.constraints(problem, {**base, "threads": 256}, Limits(max_wg_x=128), "wgsl")
    assert "workgroup memory" in SPEC.constraints(problem, base, Limits(max_workgroup_storage=256), "wgsl")
    assert "idle" in SPEC.constraints(SPEC.parse_problem("64x3"), base, LIMITS, "wgsl")
    assert "rows idle" in SPEC.constraints(SPEC.parse_problem("2x1000"), {**base, "rows_per_wg": 4}, LIMITS, "wgsl")
    huge = SPEC.parse_problem("33554433x2")  # 256 MiB
    assert "storage binding" in SPEC.constraints(huge, {**base, "threads": 2, "rows_per_wg": 128}, LIMITS, "wgsl")
    many = SPEC.parse_problem("70000x2")
    assert "workgroups per dimension" in SPEC.constraints(
        many, {**base, "threads": 1}, Limits(max_workgroups_per_dim=1000), "wgsl"
    )
    wide = SPEC.parse_problem("2x20000")
    assert "x: " in SPEC.constraints(wide, {"pack": 1, "square": 0, "one_pass": 0}, LIMITS, "glsl")
    assert "MAX_TEXTURE_SIZE" in SPEC.constraints(wide, {"pack": 4, "square": 0, "one_pass": 0}, LIMITS, "glsl")
    assert SPEC.constraints(wide, {"pack": 4, "square": 1, "one_pass": 0}, LIMITS, "glsl") is None


def test_space_has_valid_points_in_both_languages():
    problem = SPEC.parse_problem("128x500")
    assert len(every_config(SPEC, "wgsl")) == SPEC.space_size("wgsl") == 9 * 9 * 2
    assert len(every_config(SPEC, "glsl")) == SPEC.space_size("glsl") == 8
    for language in ("wgsl", "glsl"):
        valid = valid_configs(SPEC, problem, LIMITS, language)
        assert SPEC.space_size(language) >= len(valid) > 3
    # a row of one element: one thread per row, any rows per workgroup
    assert {p["threads"] for p in valid_configs(SPEC, SPEC.parse_problem("300x1"), LIMITS, "wgsl")} == {1}


@pytest.mark.parametrize(
    "bad",
    [
        {"threads": "64u; } fn evil() {", "rows_per_wg": 1, "one_pass": 0},
        {"threads": 3, "rows_per_wg": 1, "one_pass": 0},
        {"threads": 64, "rows_per_wg": 1, "one_pass": True},
        {"threads": 64, "rows_per_wg": 1},
        {"threads": 64, "rows_per_wg": 1, "one_pass": 0, "extra": 1},
    ],
)
def test_params_are_validated_before_rendering(bad):
    with pytest.raises(InvalidParamsError):
        render(SPEC, "wgsl", SPEC.parse_problem("8x1000"), bad)


def test_rendered_sources_reflect_params():
    problem = SPEC.parse_problem("8x1000:e1e-12")
    two = render(SPEC, "wgsl", problem, {"threads": 64, "rows_per_wg": 2, "one_pass": 0})
    assert "@workgroup_size(64, 2, 1)" in two and "var<workgroup> red_a: array<f32, 128>" in two
    assert two.count("workgroupBarrier()") == 2 * (1 + 6)  # mean and variance: a store + log2(64) steps each
    assert "const EPS: f32 = 1e-12;" in two and "@binding(4) var<storage, read_write> y" in two
    one = render(SPEC, "wgsl", problem, {"threads": 64, "rows_per_wg": 2, "one_pass": 1})
    assert one.count("workgroupBarrier()") == 1 + 6 and "let k = x[base];" in one and "q / n - shift" in one
    single = render(SPEC, "wgsl", SPEC.parse_problem("8x1000:nb"), {"threads": 1, "rows_per_wg": 8, "one_pass": 0})
    assert "var<workgroup>" not in single and "workgroupBarrier" not in single
    assert "bias" not in single.split("fn main")[1] and "@binding(3) var<storage, read_write> y" in single
    glsl = render(SPEC, "glsl", SPEC.parse_problem("3x10"), {"pack": 4, "square": 1, "one_pass": 1}, target="web")
    assert glsl.startswith("#version 300 es") and "vec4 load(int row, int texel)" in glsl and "kf_coord" in glsl
    assert "uniform sampler2D B;" in glsl and "vec4 tail = load(rr, FULL);" in glsl and "float d1 =" in glsl
    plain = render(SPEC, "glsl", SPEC.parse_problem("3x8:nb"), {"pack": 1, "square": 0, "one_pass": 0})
    assert "float load(" in plain and "uniform sampler2D B;" not in plain and "vec4 tail" not in plain


def test_gl_launch_binds_scale_and_bias_as_one_row_of_the_same_packing():
    launch = SPEC.gl_launch(SPEC.parse_problem("6x10"), {"pack": 4, "square": 0, "one_pass": 0})
    assert launch.samplers == ("X", "S", "B") and (launch.rows, launch.cols) == (6, 10)
    assert [(t.rows, t.cols, t.pack) for t in launch.inputs] == [(6, 10, 4), (1, 10, 4), (1, 10, 4)]
    assert launch.targets == (launch.inputs[0],)
    nb = SPEC.gl_launch(SPEC.parse_problem("6x10:nb"), {"pack": 1, "square": 1, "one_pass": 0})
    assert nb.samplers == ("X", "S") and all(t.square for t in nb.inputs)


def test_device_inputs_are_row_major_views():
    problem = SPEC.parse_problem("2x3x4:a1")
    x, scale, bias = SPEC.make_inputs(problem, np.random.default_rng(0))
    assert x.shape == (2, 3, 4) and scale.shape == bias.shape == (3, 4)
    views = SPEC.device_inputs(problem, {}, [x, scale.reshape(1, 3, 4), bias])
    assert [v.shape for v in views] == [(2, 12), (12,), (12,)]
    np.testing.assert_array_equal(views[1], scale.reshape(-1))
    with pytest.raises(ShapeError, match="Scale has 4 values"):
        SPEC.device_inputs(problem, {}, [x, scale[0], bias])
    with pytest.raises(ShapeError, match="3 inputs expected"):
        SPEC.device_inputs(problem, {}, [x, scale])


# --- the reference ---------------------------------------------------------------------------------------------


def test_reference_matches_a_hand_computation():
    x = np.array([[1.0, 2.0, 3.0, 6.0], [-1.0, -1.0, 1.0, 1.0]], np.float32)
    scale = np.array([1.0, 2.0, 0.5, -1.0], np.float32)
    bias = np.array([0.0, 1.0, -1.0, 0.5], np.float32)
    # row 0: mean 3, var (4 + 1 + 0 + 9) / 4 = 3.5; row 1: mean 0, var 1
    eps = 0.25
    r0 = np.array([-2.0, -1.0, 0.0, 3.0]) / np.sqrt(3.75)
    r1 = np.array([-1.0, -1.0, 1.0, 1.0]) / np.sqrt(1.25)
    want = np.stack([r0, r1]) * scale + bias
    problem = LayerNormProblem(x.shape, -1, eps, True)
    np.testing.assert_allclose(SPEC.reference(problem, [x, scale, bias]), want, rtol=1e-6)
    no_bias = LayerNormProblem(x.shape, -1, eps, False)
    np.testing.assert_allclose(SPEC.reference(no_bias, [x, scale]), np.stack([r0, r1]) * scale, rtol=1e-6)
    # over both axes: one row of 8
    whole = LayerNormProblem(x.shape, 0, eps, False)
    flat = x.reshape(-1).astype(np.float64)
    want_whole = (flat - flat.mean()) / np.sqrt(flat.var() + eps) * np.tile(scale, 2)
    got = SPEC.reference(whole, [x, np.tile(scale, 2).reshape(2, 4)])
    np.testing.assert_allclose(got.reshape(-1), want_whole, rtol=1e-6)


@pytest.mark.parametrize(
    "shape,axis,epsilon,bias",
    [((3, 4), -1, 1e-5, True), ((2, 3, 5), 1, 1e-3, True), ((2, 3, 5), -1, 1e-12, False), ((7,), 0, 0.1, True)],
)
def test_reference_matches_onnx_reference_evaluator(shape, axis, epsilon, bias):
    model, feeds = layernorm_model(shape, axis, epsilon, bias)
    want = ReferenceEvaluator(model).run(None, feeds)[0]
    problem = LayerNormProblem(shape, axis, epsilon, bias)
    scale_bias = [numpy_helper.to_array(t) for t in model.graph.initializer]
    got = SPEC.reference(problem, [feeds["x"], *scale_bias])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_made_inputs_have_offset_rows():
    problem = SPEC.parse_problem("64x256")
    x, scale, bias = SPEC.make_inputs(problem, np.random.default_rng(0))
    means = x.mean(axis=1)
    assert np.abs(means).max() > 5 and x.std(axis=1).min() > 0.3
    assert scale.shape == bias.shape == (256,) and scale.min() >= 0.5
    assert len(SPEC.make_inputs(SPEC.parse_problem("4x8:nb"), np.random.default_rng(0))) == 2


# --- ONNX import and export ------------------------------------------------------------------------------------


@pytest.mark.parametrize("opset", [17, 18])
def test_model_imports_as_one_layernorm_node_and_matches_onnxruntime(opset):
    model = mlp_layernorm_model(opset)
    graph = import_model(model)
    assert [n.op for n in graph.nodes] == ["reshape", "gemm", "reshape", "layernorm", "elementwise"]
    node = next(n for n in graph.nodes if n.op == "layernorm")
    assert node.attrs == {"axis": -1, "epsilon": 1e-5} and node.origin.startswith("LayerNormalization node 'ln'")
    x = np.random.default_rng(0).standard_normal((2, 5, 8)).astype(np.float32)
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    np.testing.assert_allclose(run_graph(graph, {"x": x})["y"], want[0], rtol=1e-4, atol=1e-4)
    assert [(op, SPEC.problem_key(p)) for op, p in model_kernels(model) if op == "layernorm"] == [
        ("layernorm", "2x5x16:a2")
    ]


@pytest.mark.parametrize(
    "shape,axis,bias,as_inputs",
    [((3, 4, 8), -1, True, False), ((3, 4, 8), 1, False, False), ((2, 6), -2, True, True), ((4, 5), -1, False, True)],
)
def test_runtime_and_constant_scale_import_and_run(shape, axis, bias, as_inputs):
    model, feeds = layernorm_model(shape, axis, 1e-4, bias, params_as_inputs=as_inputs)
    graph = import_model(model)
    assert [n.op for n in graph.nodes] == ["layernorm"]
    assert len(graph.nodes[0].inputs) == (3 if bias else 2)
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    np.testing.assert_allclose(run_graph(graph, feeds)["y"], want, rtol=1e-4, atol=1e-4)


def test_bad_scale_shape_fails_at_import_naming_the_node_and_shapes():
    model, _ = layernorm_model((4, 8))
    model.graph.initializer[0].CopyFrom(numpy_helper.from_array(np.ones((1,), np.float32), "scale"))
    with pytest.raises(GraphError, match=r"LayerNormalization node 'ln' .*Scale of shape \(1,\).*\(8,\)"):
        import_model(model)


def test_unsupported_stash_type_is_listed():
    stash, _ = layernorm_model((4, 8), stash_type=0)
    with pytest.raises(UnsupportedModelError, match=r"LayerNormalization node 'ln' \(opset 17\): stash_type=0"):
        import_model(stash)


@pytest.mark.parametrize(("shape", "axis"), [((4, 8), -1), ((2, 3, 5, 4), 2), ((3, 6), 0)])
def test_mean_and_inv_std_dev_outputs_match_onnxruntime_and_cost_nothing_unused(shape, axis):
    model, feeds = layernorm_model(shape, axis=axis, epsilon=1e-3)
    node = model.graph.node[0]
    node.output.extend(["mean", "inv_std"])
    model.graph.output.extend(helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("mean", "inv_std"))
    graph = optimize(import_model(model))
    assert [n.op for n in graph.nodes].count("reduce") == 2
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
    got = run_graph(graph, feeds)
    for name, expected in zip(("y", "mean", "inv_std"), want, strict=True):
        assert got[name].shape == expected.shape, name
        np.testing.assert_allclose(got[name], expected, rtol=1e-5, atol=1e-5, err_msg=name)
    # outputs nobody reads are not computed
    del model.graph.output[1:]
    assert [n.op for n in optimize(import_model(model)).nodes] == ["layernorm"]


def test_export_writes_layernorm_steps_for_both_languages(tmp_path):
    model = mlp_layernorm_model()
    export(model, tmp_path / "bundle", db=REPO_DB)
    manifest = json.loads((tmp_path / "bundle" / "manifest.json").read_text())
    languages = set()
    for target in manifest["targets"]:
        (step,) = [s for s in target["plan"]["steps"] if s["op"] == "layernorm"]
        # the mlp's own shape was never tuned: a stored neighbour's params or the default
        assert step["node"] == "ln" and step["source"] != "tuned", target["id"]
        assert "EPS" in manifest["shaders"][step["shader"]]
        languages.add(target["language"])
    assert languages == {"wgsl", "glsl"}
