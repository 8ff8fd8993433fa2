"""conv2d spec: parsing, constraints, defaults, templates and the numpy reference vs onnx.reference (no device)."""

from __future__ import annotations

import numpy as np
import pytest

from kernelforge.errors import InvalidParamsError, ShapeError
from kernelforge.ops import Limits, get_op
from kernelforge.ops._attrs import resolve_auto_pad
from kernelforge.ops._epilogue import Activation
from kernelforge.ops.conv import DEFAULT_PARAMS, DEPTHWISE, DEPTHWISE_DEFAULT, DEPTHWISE_ROWS, ConvProblem
from kernelforge.templates import render
from kernelforge.testing.ops import assert_default_fits, assert_params_reach_template, valid_configs

SPEC = get_op("conv2d")
LIMITS = Limits()
SHAPES = [
    "1x64x56x56:64x3x3:s1:p1",
    "1x3x224x224:64x7x7:s2:p3",
    "1x32x112x112:32x3x3:s1:p1:g32",
    "1x96x112x112:96x3x3:s2:p0,0,1,1:g96",
    "1x320x7x7:1280x1x1",
    "2x6x7x5:10x3x2:s2x1:p1,0,0,1:d1x2",
    "1x1x1x1:1x1x1",
    "1x8x6x6:16x3x3:p1:g2",
    "3x4x9x9:8x3x3:s3:d2:g4",
]


@pytest.mark.parametrize("language", ["wgsl", "glsl"])
def test_every_param_reaches_the_template(language):
    assert_params_reach_template(SPEC, language)


@pytest.mark.parametrize("shape", SHAPES)
def test_parse_and_key_round_trip(shape):
    problem = SPEC.parse_problem(shape)
    key = SPEC.problem_key(problem)
    assert SPEC.parse_problem(key) == problem
    assert SPEC.problem_key(SPEC.parse_problem(key)) == key


def test_parse_options():
    p = SPEC.parse_problem("2x6x7x5:10x3x2:s2x1:p1,0,0,1:d1x2")
    assert (p.strides, p.pads, p.dilations, p.group) == ((2, 1), (1, 0, 0, 1), (1, 2), 1)
    assert (p.oh, p.ow) == (3, 4)
    for bad in ["1x3x8x8", "1x3x8x8:4x3x3:q1", "1x3x8x8:4x3x3:s1:s2", "1x3x8x8:4x3x3:p1,2", "1x3x8x8:4x3x3:s"]:
        with pytest.raises(ShapeError):
            SPEC.parse_problem(bad)
    with pytest.raises(ShapeError, match="group"):
        SPEC.parse_problem("1x6x8x8:4x3x3:g4")
    with pytest.raises(ShapeError, match="does not fit"):
        SPEC.parse_problem("1x3x2x2:4x5x5")


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("language", ["wgsl", "glsl"])
def test_default_params_always_fit(shape, language):
    problem = SPEC.parse_problem(shape)
    params = assert_default_fits(SPEC, problem, LIMITS, language)
    if language == "wgsl" and problem.depthwise:
        assert params["algo"] == DEPTHWISE


def test_constraints_name_the_reason():
    dense = SPEC.parse_problem("1x64x56x56:64x3x3:s1:p1")
    assert "depthwise" in SPEC.constraints(dense, {**DEFAULT_PARAMS, "algo": DEPTHWISE}, LIMITS, "wgsl")
    assert "invocations" in SPEC.constraints(dense, {**DEFAULT_PARAMS, "wg_x": 64, "wg_y": 16}, LIMITS, "wgsl")
    odd = SPEC.parse_problem("1x6x8x8:6x3x3")
    assert "vec_width=4" in SPEC.constraints(odd, DEFAULT_PARAMS, LIMITS, "wgsl")
    assert "vec_c=4" in SPEC.constraints(odd, {**DEFAULT_PARAMS, "vec_width": 1, "vec_c": 4}, LIMITS, "wgsl")
    staged = {**DEFAULT_PARAMS, "algo": 1, "wg_x": 32, "wg_y": 8, "wpt_p": 8, "wpt_o": 8, "tile_k": 16}
    assert "workgroup memory" in SPEC.constraints(dense, staged, LIMITS, "wgsl")
    big = SPEC.parse_problem("1x64x224x224:64x3x3:p1")
    assert "MAX_TEXTURE_SIZE" in SPEC.constraints(big, {"layout": 0, "c_unroll": 1, "square": 0}, LIMITS, "glsl")
    grouped = SPEC.parse_problem("1x6x8x8:6x3x3:g3")
    assert "packed NHWC" in SPEC.constraints(grouped, {"layout": 1, "c_unroll": 1, "square": 0}, LIMITS, "glsl")


def test_space_has_many_valid_points():
    problem = SPEC.parse_problem("1x64x56x56:64x3x3:s1:p1")
    valid = valid_configs(SPEC, problem, LIMITS, "wgsl")
    assert len(valid) > 1000
    assert {p["algo"] for p in valid} == {0, 1} and {p["layout"] for p in valid} == {0, 1}


def test_params_are_validated_before_rendering():
    problem = SPEC.parse_problem("1x8x8x8:8x3x3")
    with pytest.raises(InvalidParamsError, match="algo"):
        render(SPEC, "wgsl", problem, {**DEFAULT_PARAMS, "algo": "0; }"})
    with pytest.raises(InvalidParamsError, match="unknown"):
        render(SPEC, "wgsl", problem, {**DEFAULT_PARAMS, "evil": 1})


@pytest.mark.parametrize(("layout", "language"), [(0, "wgsl"), (1, "wgsl"), (0, "glsl"), (1, "glsl")])
def test_layout_conversion_round_trip(layout, language):
    problem = SPEC.parse_problem("2x8x5x7:4x3x3:p1")
    params = dict(SPEC.default_params(problem, LIMITS, language), layout=layout)
    y = np.arange(np.prod(SPEC.output_shape(problem)), dtype=np.float32).reshape(SPEC.output_shape(problem))
    written = y.transpose(0, 2, 3, 1) if layout == 1 else y
    assert SPEC.device_output_shape(problem, params) == written.shape
    np.testing.assert_array_equal(SPEC.from_device(problem, params, written.reshape(-1)), y)


def _onnx_conv(x, w, b, **attrs):
    import onnx
    from onnx import helper
    from onnx.reference import ReferenceEvaluator

    inputs = ["x", "w"] + (["b"] if b is not None else [])
    node = helper.make_node("Conv", inputs, ["y"], **attrs)
    graph = helper.make_graph(
        [node],
        "conv",
        [helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None) for n in inputs],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    feeds = {"x": x, "w": w} | ({"b": b} if b is not None else {})
    return ReferenceEvaluator(model).run(None, feeds)[0]


@pytest.mark.parametrize("shape", [*SHAPES[2:], "1x5x9x8:6x3x4:s2x3:p2,1,0,3:d2x1"])
def test_reference_matches_onnx_reference(shape):
    q = SPEC.parse_problem(shape)
    q = ConvProblem(**{**q.__dict__, "has_bias": True})
    rng = np.random.default_rng(3)
    x, w, b = SPEC.make_inputs(q, rng)
    expected = _onnx_conv(
        x,
        w,
        b,
        strides=list(q.strides),
        pads=list(q.pads),
        dilations=list(q.dilations),
        group=q.group,
        kernel_shape=[q.kh, q.kw],
    )
    np.testing.assert_allclose(SPEC.reference(q, [x, w, b]), expected, rtol=1e-5, atol=1e-5)


def test_reference_epilogue_order():
    # act(conv + bias + residual): the residual is added before the activation (ResNet block tail)
    q = ConvProblem(
        n=1, c=1, h=1, w=1, m=1, kh=1, kw=1, has_bias=True, has_residual=True, activation=Activation.parse("relu")
    )
    out = SPEC.reference(
        q, [np.full((1, 1, 1, 1), 2.0), np.full((1, 1, 1, 1), 3.0), np.array([-1.0]), np.full((1, 1, 1, 1), -10.0)]
    )
    assert out.item() == 0.0  # relu(6 - 1 - 10)


@pytest.mark.parametrize("mode", ["SAME_UPPER", "SAME_LOWER", "VALID"])
@pytest.mark.parametrize("stride", [1, 2, 3])
def test_auto_pad_matches_onnx(mode, stride):
    rng = np.random.default_rng(stride)
    x = rng.uniform(-1, 1, (1, 2, 7, 8)).astype(np.float32)
    w = rng.uniform(-1, 1, (3, 2, 3, 2)).astype(np.float32)
    (top, bottom), (left, right) = (resolve_auto_pad("conv2d", mode, n, k, stride, 1) for n, k in ((7, 3), (8, 2)))
    pads = (top, left, bottom, right)
    q = ConvProblem(n=1, c=2, h=7, w=8, m=3, kh=3, kw=2, strides=(stride, stride), pads=pads)
    expected = _onnx_conv(x, w, None, strides=[stride, stride], auto_pad=mode, kernel_shape=[3, 2])
    np.testing.assert_allclose(SPEC.reference(q, [x, w]), expected, rtol=1e-5, atol=1e-5)


def test_wide_register_tiles_only_where_the_compiler_handles_them():
    problem = SPEC.parse_problem("1x64x56x56:64x3x3:s1:p1")
    tall = {**DEFAULT_PARAMS, "wg_x": 8, "wg_y": 1, "wpt_p": 16, "wpt_o": 16, "vec_c": 4}
    wide8 = {**tall, "wpt_p": 8}
    assert "accumulators per thread > 64" in (SPEC.constraints(problem, wide8, Limits(), "wgsl") or "")
    assert SPEC.constraints(problem, wide8, Limits(wide_tiles=True), "wgsl") is None
    assert SPEC.constraints(problem, tall, Limits(wide_tiles=True), "wgsl") is None
    assert tall not in SPEC.seed_params(problem, Limits(), "wgsl")
    assert tall in SPEC.seed_params(problem, Limits(wide_tiles=True), "wgsl")


def test_sixteen_pixels_per_thread_only_where_the_compiler_handles_them():
    # 64 accumulators, inside the narrow cap, yet SwiftShader ran out of memory compiling it
    problem = SPEC.parse_problem("1x24x56x56:144x1x1")
    params = {**DEFAULT_PARAMS, "layout": 0, "wg_x": 4, "wg_y": 16, "wpt_p": 16, "wpt_o": 4}
    assert "wpt_p=16" in (SPEC.constraints(problem, params, Limits(), "wgsl") or "")
    assert SPEC.constraints(problem, params, Limits(wide_tiles=True), "wgsl") is None


def test_depthwise_row_window_launch_and_register_cap():
    # 3 output rows of 10 pixels, 4 pixels per thread: 3 tiles per row (the last one half empty), 9 threads
    problem = SPEC.parse_problem("1x8x6x20:8x3x3:s2:p1:g8")
    rows = {**DEPTHWISE_DEFAULT, "algo": DEPTHWISE_ROWS, "wg_x": 4, "wg_y": 2, "wpt_p": 4, "wpt_o": 4}
    assert SPEC.launch(problem, rows).workgroups == (3, 1, 1)  # ceil(3 rows * 3 tiles / 4 threads)
    assert SPEC.launch(problem, {**rows, "algo": DEPTHWISE}).workgroups == (2, 1, 1)  # ceil(30 pixels / 16)
    source = render(SPEC, "wgsl", problem, rows)
    # stride 2, 3 taps over 4 pixels: input columns 0..8 loaded once per kernel row, not 12 times
    assert "let xv0_8 =" in source and "let xv0_9 =" not in source
    wide = {**rows, "wpt_p": 16, "wpt_o": 16, "wg_x": 1, "wg_y": 1}
    assert "row window of 528" in (SPEC.constraints(problem, wide, Limits(wide_tiles=True), "wgsl") or "")
    assert "depthwise" in (SPEC.constraints(SPEC.parse_problem("1x8x6x6:8x3x3"), rows, LIMITS, "wgsl") or "")


def test_subgroup_shared_loads_need_fixed_size_subgroups_and_one_pixel_column():
    problem = SPEC.parse_problem("1x16x9x9:16x3x3:p1")
    shared = {**DEFAULT_PARAMS, "layout": 0, "wg_x": 1, "wg_y": 8, "wpt_p": 8, "wpt_o": 8, "tile_k": 2, "sg_share": 4}
    four = Limits(subgroup_size=4)
    assert SPEC.constraints(problem, shared, four, "wgsl") is None
    assert "no fixed-size subgroups" in (SPEC.constraints(problem, shared, Limits(), "wgsl") or "")
    assert "subgroups of 8" in (SPEC.constraints(problem, shared, Limits(subgroup_size=8), "wgsl") or "")
    for bad in ({"wg_x": 2}, {"wg_y": 2}, {"wpt_p": 2}, {"vec_c": 4, "layout": 1, "tile_k": 4}):
        assert "needs wg_x=1" in (SPEC.constraints(problem, {**shared, **bad}, four, "wgsl") or ""), bad
    assert "direct kernel" in (SPEC.constraints(problem, {**shared, "algo": 1}, four, "wgsl") or "")
    # one load per 4 pixels, broadcast to the rest; a one-dimensional workgroup (naga's rule for lane ids)
    source = render(SPEC, "wgsl", problem, shared)
    assert "@workgroup_size(8, 1, 1)" in source and "@builtin(subgroup_invocation_id) lane" in source
    assert source.count("let xl0_0 =") == 1 and "let xl2_0" not in source
    assert "subgroupBroadcast(xl1_0, 3u)" in source
    unshared = render(SPEC, "wgsl", problem, {**shared, "sg_share": 0})
    assert "subgroupBroadcast(xl" not in unshared and "subgroup_invocation_id" not in unshared
    # seeds are tried only where they can run
    assert shared in SPEC.seed_params(problem, four, "wgsl")
    assert not any(s["sg_share"] for s in SPEC.seed_params(problem, Limits(), "wgsl"))


def test_records_made_before_sg_share_existed_mean_no_sharing():
    old = {k: v for k, v in DEFAULT_PARAMS.items() if k != "sg_share"}
    assert SPEC.validate_params(old, "wgsl")["sg_share"] == 0
    with pytest.raises(InvalidParamsError, match="sg_share"):
        SPEC.validate_params({**old, "sg_share": 3}, "wgsl")


@pytest.mark.parametrize(
    ("shape", "channels"),
    [("1x3x224x224:8x3x3:s2:p1", 8), ("1x8x56x56:8x3x3:p1:g8", 8), ("1x8x56x56:4x1x1", 4), ("1x8x6x6:16x3x3:p1:g4", 4)],
)
def test_defaults_and_seeds_narrow_their_channel_threads_to_the_channels(shape, channels):
    problem = SPEC.parse_problem(shape)
    base = DEPTHWISE_DEFAULT if problem.depthwise else DEFAULT_PARAMS
    fitted = SPEC.default_params(problem, LIMITS, "wgsl")
    need = -(-channels // fitted["vec_width"]) * fitted["vec_width"]
    assert fitted["wg_y"] * fitted["wpt_o"] == max(need, fitted["wpt_o"]) < base["wg_y"] * base["wpt_o"]
    assert fitted["wg_x"] * fitted["wg_y"] == base["wg_x"] * base["wg_y"]  # the threads moved to pixels
    for seed in SPEC.seed_params(problem, LIMITS.__class__(subgroup_size=4), "wgsl"):
        if seed["algo"] != 1 and not seed["sg_share"]:
            assert seed["wg_y"] == 1 or (seed["wg_y"] // 2) * seed["wpt_o"] < need, seed


def test_wide_layers_keep_the_default_and_shared_lanes_stay_on_channels():
    wide = SPEC.parse_problem("1x64x56x56:64x3x3:p1")
    assert SPEC.default_params(wide, LIMITS, "wgsl") == {**DEFAULT_PARAMS, "tile_k": 4}
    narrow = SPEC.parse_problem("1x8x56x56:8x1x1")
    shared = [s for s in SPEC.seed_params(narrow, LIMITS.__class__(subgroup_size=4), "wgsl") if s["sg_share"]]
    assert shared and all(s["wg_x"] == 1 and s["wg_y"] in (4, 8) for s in shared)
