"""The reduce op's spec: problems, keys, params, constraints, rendering and the float64 reference (no device)."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from kernelforge.errors import InvalidParamsError, ShapeError
from kernelforge.graph.lower import lower
from kernelforge.graph.onnx_reduce import KINDS as ONNX_KINDS
from kernelforge.graph.program import kernel_program, output_order
from kernelforge.ops import Limits, get_op
from kernelforge.ops.reduce import KINDS, NHWC, ReduceProblem, reduce_array, reduce_view
from kernelforge.templates import render
from kernelforge.testing.ops import assert_default_fits, assert_params_reach_template, every_config, valid_configs

SPEC = get_op("reduce")
LIMITS = Limits()
TINY = Limits(max_invocations=32, max_wg_x=32, max_wg_y=32, max_workgroup_storage=256, max_texture_size=2048)
SHAPES = [
    "1",
    "7",
    "5x3:a0",
    "128x384:a1",
    "1x512x32x32:a2.3:mean",
    "1x1280x7x7:a2.3",
    "2x64x16:a1:max",
    "4x1x768:a1.2",
    "2x3x4x5:a1.2:log_sum_exp",
    "8x16x32:a0:prod",
    "65536x3:a1",
    "3x200000:a1",
    "200000x8:a0",
    "2x3x4x5",
]


# --- problems and keys ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text,shape,axes,kind",
    [
        ("128x384:a1:sum", (128, 384), (1,), "sum"),
        ("128x384:a-1", (128, 384), (1,), "sum"),
        ("1x512x32x32:a2.3:mean", (1, 512, 32, 32), (2, 3), "mean"),
        ("1x512x32x32:a-1.-2:mean", (1, 512, 32, 32), (2, 3), "mean"),
        (" 6x5:LOG_SUM_EXP ", (6, 5), (0, 1), "log_sum_exp"),
        ("2x3x4:a1.1", (2, 3, 4), (1,), "sum"),
        ("2x1x4:a0.2", (2, 1, 4), (0, 2), "sum"),  # adjacent once the size-1 axis is ignored
        ("9", (9,), (0,), "sum"),
    ],
)
def test_parse_and_key_round_trip(text, shape, axes, kind):
    problem = SPEC.parse_problem(text)
    assert (problem.shape, problem.axes, problem.kind) == (shape, axes, kind)
    key = SPEC.problem_key(problem)
    assert SPEC.parse_problem(key) == problem and SPEC.problem_key(SPEC.parse_problem(key)) == key
    assert "," not in key and ";" not in key  # the CLI splits --shape lists on both


@pytest.mark.parametrize(
    "text", ["", "8x", "8x0", "8,100", "8x10:a2", "8x10:a", "8x10:a1:avg", "8x10:sum:a1", "8x10:a1..0", "2x3x4:a0.2"]
)
def test_bad_shape_strings(text):
    with pytest.raises(ShapeError, match="reduce"):
        SPEC.parse_problem(text)


@pytest.mark.parametrize(
    "kwargs,field",
    [
        ({"shape": ()}, "rank"),
        ({"shape": (2, 0)}, "shape"),
        ({"shape": (2, 3), "axes": (2,)}, "axis"),
        ({"shape": (2, 3), "axes": (True,)}, "axis"),
        ({"shape": (2, 3), "axes": ()}, "at least one axis"),
        ({"shape": (2, 3), "axes": "1"}, "axes"),
        ({"shape": (2, 3), "kind": "average"}, "kind"),
        ({"shape": (2, 3, 4), "axes": (0, 2)}, "not adjacent"),
    ],
)
def test_problem_validation_names_op_and_field(kwargs, field):
    with pytest.raises(ShapeError, match=f"reduce: .*{field}"):
        ReduceProblem(**kwargs)


@pytest.mark.parametrize(
    "shape,axes,view",
    [
        ((2, 3, 4, 5), (1, 2), (2, 12, 5)),
        ((2, 3, 4, 5), (0,), (1, 2, 60)),
        ((2, 3, 4, 5), (3,), (24, 5, 1)),
        ((2, 3, 4, 5), (0, 1, 2, 3), (1, 120, 1)),
        ((2, 1, 4), (0, 2), (1, 8, 1)),
        ((2, 5, 1), (2,), (10, 1, 1)),  # a size-1 reduction: every output is one element
        ((1, 8, 1, 1), (0, 2, 3), (1, 1, 8)),
    ],
)
def test_view(shape, axes, view):
    assert reduce_view(shape, axes) == view
    problem = ReduceProblem(shape, axes)
    assert (problem.outer, problem.length, problem.inner) == view and problem.outputs == view[0] * view[2]
    assert SPEC.shape_vector(problem) == tuple(float(v) for v in view)
    assert SPEC.output_shape(problem) == tuple(1 if a in axes else d for a, d in enumerate(shape))
    assert reduce_view((2, 3, 4), (0, 2)) is None


def test_from_node_and_lowering():
    call = lower("reduce", [(2, 3, 4)], {"axes": (1,), "kind": "l2"}, ["x"])
    assert call.problem == ReduceProblem((2, 3, 4), (1,), "l2") and call.inputs == ("x",)
    assert SPEC.from_node([(2, 3)], {"axes": None, "kind": "max"}).axes == (0, 1)
    with pytest.raises(ShapeError, match="input 0 is required"):
        SPEC.from_node([], {"axes": None, "kind": "max"})
    with pytest.raises(KeyError):
        SPEC.from_node([(2, 3)], {"axes": (1,)})


# --- params, constraints, defaults ---------------------------------------------------------------------------


@pytest.mark.parametrize("language", ["wgsl", "glsl"])
def test_every_param_reaches_the_template(language):
    assert_params_reach_template(SPEC, language)


@pytest.mark.parametrize("language", ["wgsl", "glsl"])
@pytest.mark.parametrize("shape", SHAPES)
def test_default_params_always_fit(shape, language):
    problem = SPEC.parse_problem(shape)
    for limits in (LIMITS, TINY):
        params = assert_default_fits(SPEC, problem, limits, language)
        render(SPEC, language, problem, params)


def test_default_adapts_to_the_view():
    # about 4096 invocations, at least 8 elements (or vec4s) each: many short rows get a thread each
    assert SPEC.default_params(SPEC.parse_problem("128x384:a1"), LIMITS, "wgsl") == {
        "threads": 16, "outputs_per_wg": 8, "vec4": 1, "tree": 0, "layout": 0,
    }  # fmt: skip
    short = SPEC.default_params(SPEC.parse_problem("65536x3:a1"), LIMITS, "wgsl")
    assert short == {"threads": 1, "outputs_per_wg": 128, "vec4": 0, "tree": 0, "layout": 0}
    few = SPEC.default_params(SPEC.parse_problem("2x65536:a1"), LIMITS, "wgsl")
    assert few == {"threads": 64, "outputs_per_wg": 2, "vec4": 1, "tree": 1, "layout": 0}
    # a spatial mean of channels-last data: 4 channels per vec4, threads share the rows
    strided = SPEC.default_params(SPEC.parse_problem("1x49x1280:a1:mean"), LIMITS, "wgsl")
    assert strided == {"threads": 8, "outputs_per_wg": 16, "vec4": 1, "tree": 0, "layout": 0}
    assert SPEC.default_params(SPEC.parse_problem("5x3:a1"), LIMITS, "wgsl")["vec4"] == 0
    assert SPEC.default_params(SPEC.parse_problem("128x384:a1"), LIMITS, "glsl") == {"pack": 4, "square": 0}


@pytest.mark.parametrize(
    "shape", ["2x16x10x10:a2.3", "1x3x7x7:a2.3:max", "2x8x4x4:a1", "1x512x32x32:a2.3:mean", "1x1280x7x7:a1.2.3"]
)
def test_default_of_a_feature_map_also_fits_channels_last(shape):
    # layout assignment switches a kernel to its region's layout by flipping ``layout`` of its params
    problem = SPEC.parse_problem(shape)
    default = SPEC.default_params(problem, LIMITS, "wgsl")
    assert default["layout"] == 0 and SPEC.constraints(problem, {**default, "layout": 1}, LIMITS, "wgsl") is None


def test_constraints_name_the_reason():
    problem = SPEC.parse_problem("64x1000:a1")
    base = {"threads": 64, "outputs_per_wg": 1, "vec4": 0, "tree": 1, "layout": 0}
    assert "invocations" in SPEC.constraints(problem, {**base, "outputs_per_wg": 8}, LIMITS, "wgsl")
    assert "per-axis" in SPEC.constraints(problem, {**base, "threads": 256}, Limits(max_wg_x=128), "wgsl")
    assert "workgroup memory" in SPEC.constraints(problem, base, Limits(max_workgroup_storage=128), "wgsl")
    assert "idle on 3" in SPEC.constraints(SPEC.parse_problem("64x3:a1"), base, LIMITS, "wgsl")
    assert "outputs_per_wg=4" in SPEC.constraints(
        SPEC.parse_problem("2x1000:a1"), {**base, "outputs_per_wg": 4}, LIMITS, "wgsl"
    )
    assert "tree=1 with threads=1" in SPEC.constraints(problem, {**base, "threads": 1}, LIMITS, "wgsl")
    assert "vec4=1 needs" in SPEC.constraints(SPEC.parse_problem("64x999:a1"), {**base, "vec4": 1}, LIMITS, "wgsl")
    assert "vec4=1 needs" in SPEC.constraints(
        SPEC.parse_problem("4x8x6:a1"), {**base, "threads": 8, "vec4": 1}, LIMITS, "wgsl"
    )
    assert "layout=1 needs a rank-4" in SPEC.constraints(problem, {**base, "layout": 1}, LIMITS, "wgsl")
    chw = SPEC.parse_problem("2x8x4x4:a0.1")  # N and C: adjacent in NCHW, not in NHWC
    assert "adjacent in NHWC" in SPEC.constraints(chw, {**base, "threads": 16, "layout": 1}, LIMITS, "wgsl")
    huge = SPEC.parse_problem("33554433x2:a1")  # 256 MiB
    assert "storage binding" in SPEC.constraints(
        huge, {**base, "threads": 1, "outputs_per_wg": 128, "tree": 0}, LIMITS, "wgsl"
    )
    many = SPEC.parse_problem("70000x2:a1")
    too_many = SPEC.constraints(many, {**base, "threads": 1, "tree": 0}, Limits(max_workgroups_per_dim=1000), "wgsl")
    assert "workgroups per dimension" in too_many
    wide = SPEC.parse_problem("2x20000:a1")
    assert "x: " in SPEC.constraints(wide, {"pack": 1, "square": 0}, LIMITS, "glsl")
    assert SPEC.constraints(wide, {"pack": 1, "square": 1}, LIMITS, "glsl") is None
    tall = SPEC.parse_problem("20000x3:a1")
    assert "x: a 3x20000 texture" in SPEC.constraints(tall, {"pack": 1, "square": 0}, LIMITS, "glsl")


def test_space_has_valid_points_in_both_languages():
    problem = SPEC.parse_problem("1x64x16x16:a2.3:mean")
    assert len(every_config(SPEC, "wgsl")) == SPEC.space_size("wgsl") == 9 * 9 * 2 * 2 * 2
    assert len(every_config(SPEC, "glsl")) == SPEC.space_size("glsl") == 4
    for language in ("wgsl", "glsl"):
        valid = valid_configs(SPEC, problem, LIMITS, language)
        assert SPEC.space_size(language) >= len(valid) > 3
    wgsl = valid_configs(SPEC, problem, LIMITS, "wgsl")
    assert {p["layout"] for p in wgsl} == {0, 1} and {p["tree"] for p in wgsl} == {0, 1}
    # a row of one element: one thread per output
    assert {p["threads"] for p in valid_configs(SPEC, SPEC.parse_problem("300x1:a1"), LIMITS, "wgsl")} == {1}


@pytest.mark.parametrize(
    "bad",
    [
        {"threads": "64u; } fn evil() {", "outputs_per_wg": 1, "vec4": 0, "tree": 1, "layout": 0},
        {"threads": 3, "outputs_per_wg": 1, "vec4": 0, "tree": 1, "layout": 0},
        {"threads": 64, "outputs_per_wg": 1, "vec4": 0, "tree": True, "layout": 0},
        {"threads": 64, "outputs_per_wg": 1, "vec4": 0, "tree": 1},
        {"threads": 64, "outputs_per_wg": 1, "vec4": 0, "tree": 1, "layout": 0, "extra": 1},
    ],
)
def test_params_are_validated_before_rendering(bad):
    with pytest.raises(InvalidParamsError):
        render(SPEC, "wgsl", SPEC.parse_problem("8x1000:a1"), bad)


def test_rendered_sources_reflect_params():
    problem = SPEC.parse_problem("8x1000:a1:max")
    tree = render(SPEC, "wgsl", problem, {"threads": 64, "outputs_per_wg": 2, "vec4": 1, "tree": 1, "layout": 0})
    assert "@workgroup_size(64, 2, 1)" in tree and "var<workgroup> red: array<f32, 128>" in tree
    assert "var<storage, read> x: array<vec4<f32>>" in tree and "var<storage, read_write> y: array<f32>" in tree
    assert tree.count("workgroupBarrier()") == 1 + 6 and "kf_max_s(kf_max_s(ax.x, ax.y)" in tree
    flat = render(SPEC, "wgsl", problem, {"threads": 64, "outputs_per_wg": 2, "vec4": 0, "tree": 0, "layout": 0})
    assert flat.count("workgroupBarrier()") == 1 and "for (var k = 1u; k < THREADS; k += 1u)" in flat
    lse = render(SPEC, "wgsl", SPEC.parse_problem("8x1000:a1:log_sum_exp"), {**_p(64, 2), "tree": 0})
    # the max: stored, merged by one thread, read by all (then a guard before red is reused); the sum: stored
    assert lse.count("workgroupBarrier()") == 3 + 1
    single = render(SPEC, "wgsl", SPEC.parse_problem("4x8x12:a1:l2"), _p(1, 16, vec4=1, tree=0))
    assert "var<workgroup>" not in single and "array<vec4<f32>>" in single and "sqrt(acc)" in single
    assert "y: array<vec4<f32>>" in single  # four neighbouring outputs per item
    glsl = render(SPEC, "glsl", SPEC.parse_problem("3x10:a1:prod"), {"pack": 4, "square": 1}, target="web")
    assert glsl.startswith("#version 300 es") and "float reduce_row(int q)" in glsl and "kf_coord" in glsl
    assert "vec4 tail = load(q, 2);" in glsl and "a = a * tail.y;" in glsl and "a = a * tail.z" not in glsl
    col = render(SPEC, "glsl", SPEC.parse_problem("3x10x8:a1:mean"), {"pack": 1, "square": 0})
    assert "float reduce_col(int o, int cg)" in col and "/ float(R)" in col and "vec4 tail" not in col


def _p(threads: int, per_wg: int, vec4: int = 0, tree: int = 1, layout: int = 0) -> dict[str, int]:
    return {"threads": threads, "outputs_per_wg": per_wg, "vec4": vec4, "tree": tree, "layout": layout}


def test_launch_counts_items_in_the_units_the_kernel_reads():
    problem = SPEC.parse_problem("3x40x8:a1")
    assert SPEC.launch(problem, _p(4, 4)).uniforms == (24, 40, 8, 40)
    assert SPEC.launch(problem, _p(4, 2, vec4=1)).uniforms == (6, 40, 2, 40)
    assert SPEC.launch(problem, _p(4, 2)).workgroups == (12, 1, 1)
    rows = SPEC.parse_problem("5x64:a1")
    assert SPEC.launch(rows, _p(4, 2, vec4=1)).uniforms == (5, 16, 1, 64)
    nhwc = SPEC.parse_problem("2x8x4x5:a2.3")  # NHWC view: [2, 20, 8]
    assert SPEC.launch(nhwc, _p(4, 4, vec4=1, layout=1)).uniforms == (4, 20, 2, 20)


def test_nhwc_layout_reads_and_writes_channels_last():
    problem = SPEC.parse_problem("2x8x4x5:a2.3:mean")
    params = _p(4, 4, vec4=1, layout=1)
    assert SPEC.input_layouts(problem, params) == (NHWC,) and SPEC.output_layout(problem, params) == NHWC
    assert SPEC.input_layouts(problem, _p(4, 4)) == (None,) and SPEC.output_layout(problem, _p(4, 4)) is None
    x = np.arange(2 * 8 * 4 * 5, dtype=np.float32).reshape(2, 8, 4, 5)
    (device,) = SPEC.device_inputs(problem, params, [x])
    np.testing.assert_array_equal(device, x.transpose(0, 2, 3, 1))
    assert SPEC.device_output_shape(problem, params) == (2, 1, 1, 8)
    assert output_order(SPEC, problem, params, 16, "test") == NHWC  # from_device undoes what output_layout says
    program = kernel_program(SPEC, problem, params, LIMITS, "wgsl", [x])
    assert program.outputs[0].perm == NHWC


def test_gl_launch_views():
    rows = SPEC.gl_launch(SPEC.parse_problem("6x10:a1"), {"pack": 4, "square": 0})
    assert [(t.rows, t.cols, t.pack) for t in (*rows.inputs, *rows.targets)] == [(6, 10, 4), (1, 6, 4)]
    assert (rows.rows, rows.cols, rows.samplers) == (1, 6, ("X",))
    cols = SPEC.gl_launch(SPEC.parse_problem("2x3x4x5:a1.2"), {"pack": 1, "square": 1})
    assert [(t.rows, t.cols, t.square) for t in (*cols.inputs, *cols.targets)] == [(24, 5, True), (2, 5, True)]


def test_device_inputs_check_the_size():
    problem = SPEC.parse_problem("2x3x4:a1")
    (x,) = SPEC.make_inputs(problem, np.random.default_rng(0))
    assert SPEC.device_inputs(problem, _p(1, 1, tree=0), [x])[0].shape == (2, 3, 4)
    with pytest.raises(ShapeError, match="x has 12 values"):
        SPEC.device_inputs(problem, _p(1, 1, tree=0), [x[0]])


# --- the reference ---------------------------------------------------------------------------------------------


def test_reference_matches_hand_computations():
    x = np.array([[1.0, -2.0, 3.0, 4.0], [0.5, 0.5, -1.0, 2.0]], np.float32)
    want = {
        "sum": [6.0, 2.0],
        "mean": [1.5, 0.5],
        "max": [4.0, 2.0],
        "min": [-2.0, -1.0],
        "prod": [-24.0, -0.5],
        "l1": [10.0, 4.0],
        "l2": [np.sqrt(30.0), np.sqrt(5.5)],
        "sum_square": [30.0, 5.5],
        "log_sum": [np.log(6.0), np.log(2.0)],
        "log_sum_exp": [np.log(np.exp(x[0].astype(np.float64)).sum()), np.log(np.exp(x[1].astype(np.float64)).sum())],
    }
    assert sorted(want) == sorted(KINDS)
    for kind, values in want.items():
        got = SPEC.reference(ReduceProblem(x.shape, (1,), kind), [x])
        assert got.shape == (2, 1) and got.dtype == np.float32
        np.testing.assert_allclose(got[:, 0], values, rtol=1e-6, err_msg=kind)


def test_reference_of_special_values_follows_onnx():
    nan, inf = np.nan, np.inf
    x = np.array([[1, nan, 2], [1, inf, 3], [-inf, -inf, -inf], [inf, -inf, 1], [1e30, 3e38, -1]], np.float32)

    def run(kind: str) -> list[float]:
        return SPEC.reference(ReduceProblem(x.shape, (1,), kind), [x])[:, 0].tolist()

    big = float(np.float32(3e38))
    np.testing.assert_array_equal(run("max"), [nan, inf, -inf, inf, big])  # NaN anywhere: NaN
    np.testing.assert_array_equal(run("min"), [nan, 1, -inf, -inf, -1])
    np.testing.assert_array_equal(run("sum")[:4], [nan, inf, -inf, nan])
    lse = run("log_sum_exp")  # stable: shifted by the largest finite element, so 3e38 stays finite
    np.testing.assert_array_equal(lse[:4], [nan, inf, -inf, inf])
    np.testing.assert_allclose(lse[4], big, rtol=1e-6)
    logs = SPEC.reference(ReduceProblem((3, 2), (1,), "log_sum"), [np.array([[1, -1], [-1, -1], [2, 3]], np.float32)])
    np.testing.assert_array_equal(logs[:2, 0], [-inf, nan])


@pytest.mark.parametrize("kind", KINDS)
def test_reference_matches_onnx_reference_evaluator(kind):
    (op,) = [name for name, k in ONNX_KINDS.items() if k == kind]
    x = np.random.default_rng(2).uniform(0.1, 2.0, (2, 3, 4, 5)).astype(np.float32)
    node = helper.make_node(op, ["x", "axes"], ["y"], keepdims=1)
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.array([1, 2], np.int64), "axes")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    want = ReferenceEvaluator(model).run(None, {"x": x})[0]
    got = SPEC.reference(ReduceProblem(x.shape, (1, 2), kind), [x])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_reduce_array_keeps_integer_dtypes_and_drops_axes():
    shape = np.array([2, 3, 4], np.int64)
    assert reduce_array(shape, [0], "prod", keepdims=False).dtype == np.int64
    assert int(reduce_array(shape, [0], "prod", keepdims=False)) == 24
    assert reduce_array(np.ones((2, 3, 4), np.float32), [0, 2], "sum", keepdims=False).shape == (3,)
    with pytest.raises(ValueError, match="unknown reduction kind"):
        reduce_array(shape, None, "avg")


def test_made_inputs_suit_the_kind():
    rng = np.random.default_rng(0)
    (x,) = SPEC.make_inputs(SPEC.parse_problem("2x4096:a1:prod"), rng)
    assert np.isfinite(SPEC.reference(SPEC.parse_problem("2x4096:a1:prod"), [x])).all() and x.min() > 0.9
    (x,) = SPEC.make_inputs(SPEC.parse_problem("2x64:a1:log_sum"), rng)
    assert x.min() >= 0.0
    (x,) = SPEC.make_inputs(SPEC.parse_problem("2x64:a1:sum"), rng)
    assert x.mean() > 0.2  # offset: the sum does not cancel
