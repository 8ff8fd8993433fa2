"""Attention spec, templates, reference and ONNX Attention import: no device needed."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

from kernelforge.errors import InvalidParamsError, ShapeError
from kernelforge.export import export
from kernelforge.graph.ir import GraphError
from kernelforge.graph.lower import lower
from kernelforge.graph.onnx_import import import_model
from kernelforge.graph.passes import optimize
from kernelforge.graph.reference import run_graph
from kernelforge.ops import Limits, get_op
from kernelforge.ops.attention import NAN_BITS, AttentionProblem
from kernelforge.templates import render
from kernelforge.testing.ops import assert_default_fits, assert_params_reach_template, every_config, valid_configs

SPEC = get_op("attention")
LIMITS = Limits()
TINY = Limits(max_invocations=32, max_wg_x=32, max_wg_y=32, max_workgroup_storage=1024, max_texture_size=2048)
LAVAPIPE = Limits(1024, 1024, 1024, 1024, 32768, wide_tiles=True, subgroup_size=8)
SWIFTSHADER = Limits(max_workgroup_storage=32768, subgroup_size=4)
SHAPES = [
    "1x1x1x1",
    "1x12x128x64",
    "1x12x128x64:m1x1x1x128",
    "1x12x1x64:kv128",  # a decoder step
    "2x3x7x32:kv9:dv16:g1:kt",
    "1x12x197x64",
    "1x2x1024x32:c",
    "1x4x33x12:w1x4x33x33:f-5.0:z",
    "3x2x5x7:kv3:dv5:m3x2x5x3:w5x3:c-1",
    "1x64x128x128",
]


def naive_attention(q, k, v, scale, add=None, select=None, fill=-np.inf, causal=None, k_transposed=False):
    """softmax(scale * Q K^T (masked)) V, written the plain way: the scores materialised, a textbook softmax."""
    q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
    kt = k if k_transposed else np.swapaxes(k, -1, -2)
    group = q.shape[1] // kt.shape[1]
    kt, v = np.repeat(kt, group, axis=1), np.repeat(v, group, axis=1)
    with np.errstate(all="ignore"):
        scores = np.einsum("bhqd,bhdk->bhqk", q, kt) * scale
        if select is not None:
            scores = np.where(np.asarray(select) != 0, scores, fill)
        if add is not None:
            scores = scores + np.asarray(add, np.float64)
        if causal is not None:
            sq, skv = scores.shape[-2:]
            scores = np.where(np.arange(skv)[None, :] <= np.arange(sq)[:, None] + causal, scores, -np.inf)
        e = np.exp(scores - scores.max(axis=-1, keepdims=True))
        return np.einsum("bhqk,bhkd->bhqd", e / e.sum(axis=-1, keepdims=True), v)


# --- problems and keys ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text,fields",
    [
        ("1x12x128x64", {"kv_len": 128, "v_dim": 64, "kv_heads": 12, "scale": 0.125}),
        ("1x12x1x64:kv128", {"q_len": 1, "kv_len": 128}),
        ("2x8x5x16:dv8:g2:kt", {"v_dim": 8, "kv_heads": 2, "k_transposed": True}),
        ("1x2x3x4:s0.3:c", {"scale": 0.3, "causal": 0}),
        ("1x2x3x4:c-2:z", {"causal": -2, "zero_empty": True}),
        ("1x2x3x4:m1x1x1x3", {"add_mask": (1, 1, 1, 3)}),
        ("1x2x3x4:w3x3:f-1e4", {"select_mask": (1, 1, 3, 3), "fill": -10000.0}),
        ("1x2x3x4:w1x2x3x3", {"select_mask": (1, 2, 3, 3), "fill": -math.inf}),
        (" 1X2X3X4:C3 ", {"causal": 3}),
    ],
)
def test_parse_and_key_round_trip(text, fields):
    problem = SPEC.parse_problem(text)
    for name, value in fields.items():
        assert getattr(problem, name) == value, name
    key = SPEC.problem_key(problem)
    assert SPEC.parse_problem(key) == problem and SPEC.problem_key(SPEC.parse_problem(key)) == key
    assert "," not in key and ";" not in key


def test_keys_name_only_what_differs_from_the_defaults():
    assert SPEC.problem_key(AttentionProblem(1, 12, 128, 64)) == "1x12x128x64"
    assert SPEC.problem_key(AttentionProblem(1, 12, 128, 64, scale=0.125)) == "1x12x128x64"
    odd = AttentionProblem(2, 4, 5, 8, 9, 3, 2, True, 0.5, (5, 9), (1, 9), -3.0, 1, True)
    assert SPEC.problem_key(odd) == "2x4x5x8:kv9:dv3:g2:kt:s0.5:m1x1x5x9:w1x1x1x9:f-3.0:c1:z"


@pytest.mark.parametrize(
    "text",
    ["", "1x2x3", "1x2x3x4x5", "1x2x3x0", "1x2x3x4:q1", "1x2x3x4:kv", "1x2x3x4:kvx", "1x2x3x4:ktx",
     "1x2x3x4:s", "1x2x3x4:snan", "1x2x3x4:f1", "1x2x3x4:c:c", "1x2x3x4:m1x2", "1x2x3x4:g3", "1x2x3x4:m1x1x1x1x1"],
)  # fmt: skip
def test_bad_shape_strings(text):
    with pytest.raises(ShapeError, match="attention"):
        SPEC.parse_problem(text)


@pytest.mark.parametrize(
    "kwargs,field",
    [
        ({"kv_heads": 3}, "kv_heads"),
        ({"kv_len": 0}, "kv_len"),
        ({"k_transposed": 1}, "k_transposed"),
        ({"zero_empty": "yes"}, "zero_empty"),
        ({"scale": float("inf")}, "scale"),
        ({"scale": "0.1"}, "scale"),
        ({"fill": float("nan")}, "fill"),
        ({"causal": True}, "causal"),
        ({"add_mask": (2, 1, 1, 1)}, "add_mask"),
        ({"select_mask": (4, 4)}, "select_mask"),
        ({"add_mask": (1, 1, 1, 1, 4)}, "add_mask"),
    ],
)
def test_problem_validation_names_op_and_field(kwargs, field):
    with pytest.raises(ShapeError, match=f"attention: .*{field}"):
        AttentionProblem(1, 2, 3, 4, **kwargs)


def test_from_node_reads_shapes_and_attributes():
    attrs = {"scale": 0.5, "k_transposed": True, "causal": 0, "fill": -1.0, "zero_empty": False}
    call = lower("attention", [(2, 4, 5, 8), (2, 2, 8, 7), (2, 2, 7, 3), None, (5, 7)], attrs, ["q", "k", "v", "", "s"])
    assert call.inputs == ("q", "k", "v", "s")
    p = call.problem
    assert (p.kv_len, p.v_dim, p.kv_heads, p.k_transposed, p.select_mask, p.add_mask) == (
        7,
        3,
        2,
        True,
        (1, 1, 5, 7),
        None,
    )
    with pytest.raises(ShapeError, match=r"attention: q \(1, 2, 3, 4\), K \(1, 2, 5, 3\)"):
        SPEC.from_node([(1, 2, 3, 4), (1, 2, 5, 3), (1, 2, 5, 4)], {})
    with pytest.raises(ShapeError, match="4-D"):
        SPEC.from_node([(2, 3, 4), (2, 3, 4), (2, 3, 4)], {})


def test_from_onnx_maps_attributes_and_names_what_is_refused():
    assert SPEC.from_onnx("Attention", 23, {}) == {"k_transposed": False, "causal": None, "zero_empty": True}
    assert SPEC.from_onnx("Attention", 23, {"is_causal": 1, "scale": 0.25})["causal"] == 0
    # soft-capping and sliding windows: the window's edges relative to the query, the causal limit the tighter
    capped = SPEC.from_onnx("Attention", 25, {"softcap": 30.0, "left_window_size": 4, "right_window_size": 2})
    assert (capped["softcap"], capped["lower"], capped["causal"]) == (30.0, -4, 2)
    causal = SPEC.from_onnx("Attention", 25, {"is_causal": 1, "right_window_size": 2})
    assert causal["causal"] == 0 and "lower" not in causal
    problem = SPEC.from_node([(1, 2, 5, 8)] * 3, capped)
    assert SPEC.problem_key(problem) == "1x2x5x8:c2:lb-4:cap30.0:z"
    assert SPEC.parse_problem(SPEC.problem_key(problem)) == problem
    for attrs, match in [
        ({"softcap": -1.0}, "softcap=-1.0"),
        ({"softmax_precision": 10}, "softmax_precision=10"),
        ({"left_window_size": -4}, "left_window_size=-4"),
        ({"is_causal": 2}, "is_causal=2"),
        ({"scale": float("inf")}, "scale=inf"),
    ]:
        with pytest.raises(ValueError, match=match):
            SPEC.from_onnx("Attention", 25, attrs)


# --- params, constraints and kernels -----------------------------------------------------------------------------


@pytest.mark.parametrize("language", ["wgsl", "glsl"])
def test_every_param_reaches_the_template(language):
    assert_params_reach_template(SPEC, language)


@pytest.mark.parametrize("language", ["wgsl", "glsl"])
@pytest.mark.parametrize("shape", SHAPES)
def test_default_params_always_fit(shape, language):
    problem = SPEC.parse_problem(shape)
    for limits in (LIMITS, TINY, LAVAPIPE, SWIFTSHADER):
        assert_default_fits(SPEC, problem, limits, language)


def test_defaults_assume_no_subgroups_and_the_sharing_kernels_are_seeds():
    prefill, step = SPEC.parse_problem("1x12x128x64"), SPEC.parse_problem("1x12x1x64:kv128")
    for limits in (LIMITS, LAVAPIPE, SWIFTSHADER):  # one device-neutral default: a flash tile, K/V staged
        plain = SPEC.default_params(prefill, limits, "wgsl")
        assert plain["sg_share"] == 0 and plain["stage_kv"] == 1 and plain["vec4"] == 1, limits
        assert SPEC.subgroup_size(plain) == 0
    seeds = SPEC.seed_params(prefill, LAVAPIPE, "wgsl")
    assert seeds[0] == {
        "q_per_wg": 8, "q_per_thread": 2, "tile_kv": 4, "threads_per_q": 1, "vec4": 1, "stage_kv": 0, "sg_share": 8
    }  # fmt: skip
    assert all(s["sg_share"] == 8 and SPEC.constraints(prefill, s, LAVAPIPE, "wgsl") is None for s in seeds)
    # without wide tiles two rows of 64 + 64 floats are too many: one row a thread, scalar loads
    assert SPEC.seed_params(prefill, SWIFTSHADER, "wgsl")[0]["q_per_thread"] == 1
    assert SPEC.seed_params(prefill, LIMITS, "wgsl") == [] and SPEC.seed_params(prefill, LAVAPIPE, "glsl") == []
    assert SPEC.seed_params(step, SWIFTSHADER, "wgsl")[0]["threads_per_q"] == 4  # a decoder step: one query's lanes
    assert SPEC.subgroup_size(SPEC.seed_params(prefill, LAVAPIPE, "wgsl")[0]) == 8


def test_constraints_name_the_reason():
    p = SPEC.parse_problem("1x12x128x64")
    base = {"q_per_wg": 8, "q_per_thread": 1, "tile_kv": 4, "threads_per_q": 1, "vec4": 0, "stage_kv": 0, "sg_share": 0}
    cases = [
        ({"sg_share": 8}, LIMITS, "needs subgroups of exactly 8 lanes; the device has no fixed-size subgroups"),
        ({"sg_share": 8, "stage_kv": 1}, LAVAPIPE, "stage_kv=0"),
        ({"sg_share": 8, "q_per_wg": 4}, LAVAPIPE, "q_per_wg a multiple of 8"),
        ({"sg_share": 8, "threads_per_q": 4, "q_per_wg": 1}, LAVAPIPE, "threads_per_q=8 with q_per_wg=1"),
        ({"tile_kv": 64}, LIMITS, "tile_kv only matters"),
        ({"q_per_thread": 4}, LIMITS, "accumulators per thread"),
        ({"q_per_wg": 64, "threads_per_q": 16}, LIMITS, "1024 invocations"),
        ({"stage_kv": 1, "tile_kv": 64}, LIMITS, "bytes of workgroup memory"),
    ]
    for change, limits, reason in cases:
        assert reason in (SPEC.constraints(p, {**base, **change}, limits, "wgsl") or ""), change
    small = SPEC.parse_problem("1x2x3x8:kv5")
    assert "leave rows idle" in SPEC.constraints(small, base, LIMITS, "wgsl")
    assert "multiples of 16" in SPEC.constraints(small, {**base, "threads_per_q": 4, "vec4": 1}, LIMITS, "wgsl")
    staged = {**base, "q_per_wg": 4, "tile_kv": 32, "stage_kv": 1}
    assert "longer than the 5 keys" in SPEC.constraints(small, staged, LIMITS, "wgsl")
    gl = {"pack": 4, "mrt": 4, "key_block": 4, "square": 0}
    assert "MAX_DRAW_BUFFERS 2" in SPEC.constraints(p, gl, Limits(max_draw_buffers=2), "glsl")
    assert "must divide Dv=6" in SPEC.constraints(SPEC.parse_problem("1x1x4x6"), gl, LIMITS, "glsl")
    assert "Q: a 16x24576 texture" in SPEC.constraints(SPEC.parse_problem("1x12x2048x64"), gl, LIMITS, "glsl")


def test_space_has_valid_points_in_both_languages():
    p = SPEC.parse_problem("1x12x128x64:m1x1x1x128")
    assert len(every_config(SPEC, "wgsl")) == 7 * 3 * 5 * 5 * 2 * 2 * 5
    assert len(valid_configs(SPEC, p, LAVAPIPE, "wgsl")) > 100
    assert len(valid_configs(SPEC, p, LIMITS, "glsl")) >= 8


@pytest.mark.parametrize(
    "bad",
    [
        {"q_per_wg": 8, "q_per_thread": 1, "tile_kv": 16, "threads_per_q": 1, "vec4": 0, "stage_kv": 0},
        {"q_per_wg": 3, "q_per_thread": 1, "tile_kv": 16, "threads_per_q": 1, "vec4": 0, "stage_kv": 0, "sg_share": 0},
        {"q_per_wg": 8, "q_per_thread": 1, "tile_kv": 16, "threads_per_q": 1, "vec4": 0, "stage_kv": 0, "sg_share": 2},
    ],
)
def test_params_are_validated_before_rendering(bad):
    with pytest.raises(InvalidParamsError):
        render(SPEC, "wgsl", SPEC.parse_problem("1x2x8x8"), bad)


def test_rendered_sources_reflect_params():
    p = SPEC.parse_problem("1x2x16x16:m1x1x1x16:w1x2x16x16:c:z")
    base = {"q_per_wg": 8, "q_per_thread": 2, "tile_kv": 4, "threads_per_q": 1, "vec4": 1, "stage_kv": 0}
    plain = render(SPEC, "wgsl", p, {**base, "sg_share": 0})
    assert "@workgroup_size(1, 8, 1)" in plain and "workgroupBarrier(" not in plain and "= subgroup" not in plain
    assert "@binding(4) var<storage, read> am" in plain and "@binding(6) var<storage, read_write> y" in plain
    assert "let ok1 = i32(jj) <= i32(i1) + 0;" in plain and "select(0.0, nan_value, bad)" in plain
    shared = render(SPEC, "wgsl", p, {**base, "sg_share": 8})
    assert "@workgroup_size(8, 1, 1)" in shared and "subgroupBroadcast(kl0, 3u)" in shared
    reduced = render(SPEC, "wgsl", SPEC.parse_problem("1x2x1x16:kv9"), {**base, "q_per_wg": 1, "q_per_thread": 1,
                     "threads_per_q": 4, "vec4": 0, "sg_share": 4})  # fmt: skip
    assert "subgroupAdd(" in reduced and "var<workgroup>" not in reduced and "@workgroup_size(4, 1, 1)" in reduced
    staged = render(SPEC, "wgsl", SPEC.parse_problem("1x2x16x16:kt"), {**base, "threads_per_q": 2, "stage_kv": 1,
                    "sg_share": 0})  # fmt: skip
    assert staged.count("workgroupBarrier()") == 3 and "var<workgroup> part: array<f32, 128>" in staged
    assert "var<storage, read> k: array<f32>" in staged and "let j = e % TK;" in staged
    glsl = render(SPEC, "glsl", p, {"pack": 4, "mrt": 2, "key_block": 4, "square": 1}, target="web")
    assert glsl.startswith("#version 300 es") and "layout(location = 1) out vec4 o1;" in glsl and "kf_coord" in glsl
    assert "uniform sampler2D AM;" in glsl and "uniform sampler2D SM;" in glsl and "int full = kv_end" in glsl
    scalar = render(SPEC, "glsl", SPEC.parse_problem("1x1x3x5:kt"), {"pack": 1, "mrt": 1, "key_block": 1, "square": 0})
    assert "out float o0;" in scalar and "int full = 0;" in scalar and "sampler2D AM" not in scalar


def test_launch_uniforms_carry_mask_strides_and_special_values():
    p = SPEC.parse_problem("2x3x5x8:kv7:m2x1x1x7:w3x5x7")
    launch_params = {"q_per_wg": 2, "q_per_thread": 2, "tile_kv": 16, "threads_per_q": 1, "vec4": 0,
                     "stage_kv": 0, "sg_share": 0}  # fmt: skip
    launch = SPEC.launch(p, launch_params)
    assert launch.workgroups == (12, 1, 1)  # 6 heads x 2 query blocks
    assert launch.uniforms[:6] == (6, 3, 1, 5, 7, 2)
    assert launch.uniforms[6] == 0xFF800000 and launch.uniforms[7] == NAN_BITS
    assert launch.uniforms[8:16] == (7, 0, 0, 1, 0, 35, 7, 1)
    # rows between neighbours along (b, h, s) of Q, K, V and the output, heads first: [B, H, S, D]
    assert launch.uniforms[16:] == (15, 5, 1, 0, 21, 7, 1, 0, 21, 7, 1, 0, 15, 5, 1, 0)
    seq_major = SPEC.launch(SPEC.parse_problem("2x3x5x8:kv7:m2x1x1x7:w3x5x7:lqvo"), launch_params)
    assert seq_major.uniforms[16:] == (15, 1, 3, 0, 21, 7, 1, 0, 21, 1, 3, 0, 15, 1, 3, 0)


def test_gl_launch_views_v_by_rows_of_dv_where_texels_line_up():
    p = SPEC.parse_problem("1x2x3x8:kv5:dv12:m1x1x3x5")
    wide = SPEC.gl_launch(p, {"pack": 4, "mrt": 3, "key_block": 4, "square": 0})
    assert wide.samplers == ("Q", "K", "V", "AM") and (wide.rows, wide.cols) == (18, 4) and len(wide.targets) == 3
    assert [(t.rows, t.cols, t.pack) for t in wide.inputs] == [(6, 8, 4), (10, 8, 4), (10, 12, 4), (3, 5, 4)]
    split = SPEC.gl_launch(p, {"pack": 4, "mrt": 2, "key_block": 4, "square": 1})  # 6 dims per target
    assert (split.inputs[2].rows, split.inputs[2].cols) == (20, 6) and split.targets[0].square


def test_device_inputs_check_counts_and_sizes():
    p = SPEC.parse_problem("1x2x3x4:m3")
    arrays = SPEC.make_inputs(p, np.random.default_rng(0))
    assert [a.shape for a in SPEC.device_inputs(p, {}, arrays)] == [(1, 2, 3, 4)] * 3 + [(1, 1, 1, 3)]
    with pytest.raises(ShapeError, match="4 inputs expected, got 3"):
        SPEC.device_inputs(p, {}, arrays[:3])
    with pytest.raises(ShapeError, match="input 3 has 2 values"):
        SPEC.device_inputs(p, {}, [*arrays[:3], np.zeros(2)])


# --- the reference ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "shape",
    [
        "1x2x5x8",
        "2x3x4x8:kv6:dv5:m2x1x1x6",
        "1x4x5x8:g2:m5x5",
        "1x2x6x4:kv6:m1x2x6x1:w1x1x1x6:f-3.0",
        "2x2x5x8:kv9:kt:c",
        "1x2x7x4:kv7:c2",
        "1x1x1x16:kv33",
        "2x4x3x8:kv5:g1:s0.7:w2x4x3x5",
    ],
)
def test_reference_matches_a_naive_softmax(shape):
    p = SPEC.parse_problem(shape)
    arrays = SPEC.make_inputs(p, np.random.default_rng(1))
    q, k, v, *masks = arrays
    add = masks.pop(0) if p.add_mask else None
    select = masks.pop(0) if p.select_mask else None
    want = naive_attention(q, k, v, p.scale, add, select, p.fill, p.causal, p.k_transposed)
    np.testing.assert_allclose(SPEC.reference(p, arrays), want, rtol=1e-5, atol=1e-6)


def test_reference_nan_and_infinities_follow_the_unfused_softmax():
    p = SPEC.parse_problem("1x1x5x4:kv3:m1x1x5x3")
    q, k, v, mask = SPEC.make_inputs(p, np.random.default_rng(2))
    mask[0, 0, 0] = -np.inf  # fully masked: NaN, as Softmax of -inf
    mask[0, 0, 1, 0] = -np.inf  # one key masked
    q[0, 0, 2, 0] = np.nan  # a NaN score
    q[0, 0, 3] = [np.inf, 0, 0, 0]
    k[0, 0, :, 0] = 1.0  # +inf scores: inf - inf in the softmax
    out = SPEC.reference(p, [q, k, v, mask])
    want = naive_attention(q, k, v, p.scale, mask)
    np.testing.assert_array_equal(np.isnan(out), np.isnan(want))
    assert np.isnan(out[0, 0, [0, 2, 3]]).all() and np.isfinite(out[0, 0, [1, 4]]).all()
    np.testing.assert_allclose(out[0, 0, 1], want[0, 0, 1], rtol=1e-6)
    zero = SPEC.reference(SPEC.parse_problem("1x1x5x4:kv3:m1x1x5x3:z"), [q, k, v, mask])
    assert (zero[0, 0, 0] == 0).all() and np.isnan(zero[0, 0, [2, 3]]).all()
    # an infinite V is multiplied by every weight, zero ones too (0 * inf = NaN), except keys causality drops
    v[0, 0, 2] = np.inf
    causal = SPEC.parse_problem("1x1x5x4:kv3:c0")
    got = SPEC.reference(causal, [np.ones_like(q), k, v])
    assert np.isfinite(got[0, 0, :2]).all() and np.isinf(got[0, 0, 2:]).all()
    # key 2 scores far below the others: its weight underflows to exactly 0, and 0 * inf is NaN
    far = np.full_like(q, -1e4)
    apart = np.zeros_like(k)
    apart[0, 0, 2] = 1.0
    assert np.isnan(SPEC.reference(SPEC.parse_problem("1x1x5x4:kv3"), [far, apart, v])).all()


def test_finfo_min_scores_still_count():
    # Where(mask, scores, finfo.min) on a whole row: every key equally likely, as an unfused softmax gives
    p = SPEC.parse_problem("1x1x2x4:kv3:w1x1x2x3:f-3.4028234663852886e38")
    q, k, v, _ = SPEC.make_inputs(p, np.random.default_rng(3))
    select = np.array([[[[0.0, 0.0, 0.0], [1.0, 0.0, 1.0]]]], np.float32)
    out = SPEC.reference(p, [q, k, v, select])
    np.testing.assert_allclose(out[0, 0, 0], v[0, 0].mean(axis=0), rtol=1e-6)


# --- ONNX Attention ----------------------------------------------------------------------------------------------


def attention_model(shapes, mask=None, opset=23, outputs=1, **attrs):
    """Return an ONNX Attention model over inputs q, k, v (and m: ``(elem_type, shape)``)."""
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in zip("qkv", shapes, strict=True)]
    names = ["q", "k", "v"]
    if mask is not None:
        inputs.append(helper.make_tensor_value_info("m", mask[0], list(mask[1])))
        names.append("m")
    out_names = ["y", "present_key", "present_value", "qk"][:outputs]
    node = helper.make_node("Attention", names, out_names, name="att", **attrs)
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in out_names]
    graph = helper.make_graph([node], "attention", inputs, outs)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def attention_feeds(model, seed=0):
    rng = np.random.default_rng(seed)
    feeds = {}
    for value in model.graph.input:
        shape = [d.dim_value for d in value.type.tensor_type.shape.dim]
        if value.type.tensor_type.elem_type == TensorProto.BOOL:
            feeds[value.name] = rng.random(shape) < 0.7
            feeds[value.name][..., 0, :] = False  # a fully masked row: 0, as ONNX Attention defines
        elif value.name == "m":
            feeds[value.name] = np.where(rng.random(shape) < 0.7, rng.uniform(-1, 0, shape), -np.inf).astype("f4")
        else:
            feeds[value.name] = rng.standard_normal(shape).astype(np.float32)
    return feeds


ONNX_CASES = [
    ({"shapes": [(1, 2, 5, 8), (1, 2, 7, 8), (1, 2, 7, 4)]}, 23),
    ({"shapes": [(2, 4, 5, 8), (2, 2, 7, 8), (2, 2, 7, 8)], "is_causal": 1, "scale": 0.3}, 24),
    ({"shapes": [(1, 2, 5, 8), (1, 2, 7, 8), (1, 2, 7, 8)], "mask": (TensorProto.BOOL, (5, 7))}, 23),
    ({"shapes": [(1, 2, 5, 8), (1, 2, 7, 8), (1, 2, 7, 8)], "mask": (TensorProto.FLOAT, (1, 2, 5, 7))}, 25),
    ({"shapes": [(2, 5, 16), (2, 7, 8), (2, 7, 12)], "q_num_heads": 4, "kv_num_heads": 2, "is_causal": 1,
      "mask": (TensorProto.BOOL, (2, 1, 5, 7))}, 23),
]  # fmt: skip


@pytest.mark.parametrize(("case", "opset"), ONNX_CASES)
def test_onnx_attention_imports_as_one_node_and_matches_onnxruntime(case, opset):
    model = attention_model(opset=opset, **case)
    graph = optimize(import_model(model))
    assert [n.op for n in graph.nodes].count("attention") == 1
    feeds = attention_feeds(model)
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    got = run_graph(graph, feeds)["y"]
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_onnx_attention_refuses_what_it_cannot_run_naming_it():
    shapes = [(1, 2, 5, 8), (1, 2, 7, 8), (1, 2, 7, 8)]
    # what one fused kernel cannot give runs as ONNX's function body instead (tests/null/test_onnx_functions.py)
    for expanded in (attention_model(shapes, softmax_precision=10), attention_model(shapes, outputs=4)):
        assert "attention" not in {node.op for node in import_model(expanded).nodes}
    external = attention_model(shapes)
    external.graph.input.append(helper.make_tensor_value_info("n", TensorProto.INT64, [3]))
    external.graph.node[0].input.extend(["", "", "", "n"])
    with pytest.raises(GraphError, match=r"nonpad_kv_seqlen of shape \(3,\) is not one length per batch \(1,\)"):
        import_model(external)
    both = attention_model(shapes)
    both.graph.input.extend(helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 2, 3, 8]) for n in ("pk", "pv"))
    both.graph.input.append(helper.make_tensor_value_info("n", TensorProto.INT64, [1]))
    both.graph.node[0].input.extend(["", "pk", "pv", "n"])
    with pytest.raises(GraphError, match=r"nonpad_kv_seqlen .* cannot be combined with past_key and past_value"):
        import_model(both)
    lonely = attention_model(shapes)
    lonely.graph.input.append(helper.make_tensor_value_info("past", TensorProto.FLOAT, [1, 2, 3, 8]))
    lonely.graph.node[0].input.extend(["", "past"])
    with pytest.raises(GraphError, match="past_key and past_value must be given together"):
        import_model(lonely)
    long = attention_model(shapes, mask=(TensorProto.FLOAT, (5, 9)))
    with pytest.raises(GraphError, match=r"attn_mask of shape \(5, 9\) is longer than the 7 keys"):
        import_model(long)
    with pytest.raises(GraphError, match="q_num_heads and kv_num_heads"):
        import_model(attention_model([(1, 5, 16), (1, 7, 16), (1, 7, 16)]))


def _with_cache(model, past: int, mask_keys: int | None = None):
    """Add ``past_key``/``past_value`` inputs of ``past`` steps to an Attention model of 4-D K and V."""
    k = model.graph.input[1].type.tensor_type.shape.dim
    v = model.graph.input[2].type.tensor_type.shape.dim
    b, h, d, dv = k[0].dim_value, k[1].dim_value, k[3].dim_value, v[3].dim_value
    model.graph.input.append(helper.make_tensor_value_info("pk", TensorProto.FLOAT, [b, h, past, d]))
    model.graph.input.append(helper.make_tensor_value_info("pv", TensorProto.FLOAT, [b, h, past, dv]))
    node = model.graph.node[0]
    while len(node.input) < 4:
        node.input.append("")
    node.input.extend(["pk", "pv"])
    return model


@pytest.mark.parametrize(
    ("case", "opset"),
    [
        ({"shapes": [(1, 2, 5, 8), (1, 2, 7, 8), (1, 2, 7, 8)], "softcap": 2.0, "is_causal": 1}, 23),
        ({"shapes": [(1, 2, 7, 8), (1, 2, 7, 8), (1, 2, 7, 8)], "left_window_size": 2, "is_causal": 1}, 25),
        ({"shapes": [(2, 2, 6, 8), (2, 2, 6, 8), (2, 2, 6, 4)], "left_window_size": 1, "right_window_size": 2}, 25),
    ],
)
def test_onnx_attention_soft_caps_and_slides_its_window_as_onnx_defines(case, opset):
    model = attention_model(opset=opset, **case)
    graph = optimize(import_model(model))
    assert [n.op for n in graph.nodes].count("attention") == 1
    feeds = attention_feeds(model)
    want = ReferenceEvaluator(model).run(None, feeds)[0]  # ONNX's own definition (opset 25: beyond ORT here)
    np.testing.assert_allclose(run_graph(graph, feeds)["y"], want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "case",
    [
        {"shapes": [(2, 2, 3, 8), (2, 2, 9, 8), (2, 2, 9, 8)]},
        {"shapes": [(2, 2, 3, 8), (2, 2, 9, 8), (2, 2, 9, 8)], "is_causal": 1, "left_window_size": 2},
        {"shapes": [(2, 2, 3, 8), (2, 2, 9, 8), (2, 2, 9, 8)], "mask": (TensorProto.BOOL, (3, 9)), "is_causal": 1},
    ],
)
def test_onnx_attention_external_cache_attends_each_sequences_valid_keys(case):
    model = attention_model(opset=24, **case)
    model.graph.input.append(helper.make_tensor_value_info("n", TensorProto.INT64, [2]))
    node = model.graph.node[0]
    while len(node.input) < 6:
        node.input.append("")
    node.input.append("n")
    graph = optimize(import_model(model))
    (attention,) = [n for n in graph.nodes if n.op == "attention"]
    assert attention.attrs["causal"] is None and "lower" not in attention.attrs  # in the mask, per batch
    feeds = attention_feeds(model)
    feeds["n"] = np.array([5, 9], np.int64)  # the first sequence's cache holds 5 keys, the second is full
    if "mask" in case:
        feeds["m"][...] = True
    want = ReferenceEvaluator(model).run(None, feeds)[0]  # ONNX's own definition (opset 25: beyond ORT here)
    np.testing.assert_allclose(run_graph(graph, feeds)["y"], want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "case",
    [
        {"shapes": [(1, 2, 1, 8), (1, 2, 1, 8), (1, 2, 1, 8)], "is_causal": 1},  # a decoder step
        {"shapes": [(2, 4, 3, 8), (2, 2, 3, 8), (2, 2, 3, 4)], "is_causal": 1},  # grouped heads, 3 new tokens
        # a mask over the past and new keys, and one over the new keys only (padded with -inf, as ONNX does)
        {"shapes": [(1, 2, 3, 8), (1, 2, 3, 8), (1, 2, 3, 8)], "mask": (TensorProto.FLOAT, (1, 2, 3, 8))},
        {"shapes": [(1, 2, 3, 8), (1, 2, 3, 8), (1, 2, 3, 8)], "mask": (TensorProto.BOOL, (3, 3))},
    ],
)
def test_onnx_attention_kv_cache_extends_the_past_and_returns_the_present(case):
    model = _with_cache(attention_model(opset=23, outputs=3, **case), past=5)
    graph = optimize(import_model(model))
    assert [n.op for n in graph.nodes].count("attention") == 1
    feeds = attention_feeds(model)
    if "mask" in case and case["mask"][0] == TensorProto.BOOL:
        feeds["m"][...] = True  # ONNX pads the rest with False: keep every given key, so no row is empty
    if "mask" in case and case["mask"][1][-1] < 8:
        # ONNX Runtime refuses a mask shorter than the keys: ONNX's reference implementation defines it
        results = ReferenceEvaluator(model).run(None, feeds)
    else:
        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        results = session.run(None, feeds)
    want = dict(zip(["y", "present_key", "present_value"], results, strict=True))
    got = run_graph(graph, feeds)
    assert want["present_key"].shape[2] == 5 + case["shapes"][1][2]
    for name, expected in want.items():
        np.testing.assert_allclose(got[name], expected, rtol=1e-5, atol=1e-6, err_msg=name)


def test_export_writes_attention_steps_for_both_languages(tmp_path):
    model = attention_model([(1, 2, 5, 8), (1, 2, 7, 8), (1, 2, 7, 8)], is_causal=1)
    export(model, tmp_path / "bundle", db=Path(__file__).resolve().parents[2] / "tuning_db")
    manifest = json.loads((tmp_path / "bundle" / "manifest.json").read_text())
    languages = set()
    for target in manifest["targets"]:
        (step,) = [s for s in target["plan"]["steps"] if s["op"] == "attention"]
        assert step["node"] == "att", target["id"]
        languages.add(target["language"])
    assert languages == {"wgsl", "glsl"}
