"""pool2d spec, shape syntax, reference semantics and templates: no device needed."""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest

import kernelforge.api as kops
from kernelforge.errors import InvalidParamsError, ShapeError
from kernelforge.ops import Limits, get_op
from kernelforge.ops._attrs import resolve_auto_pad
from kernelforge.ops.pool import DEFAULT_PARAMS, GLSL_DEFAULT_PARAMS, PoolProblem, output_size
from kernelforge.templates import render
from kernelforge.testing.ops import assert_default_fits, assert_params_reach_template, every_config, valid_configs

SPEC = get_op("pool2d")
LIMITS = Limits()
LANGUAGES = ["wgsl", "glsl"]
ODD_SHAPES = [
    "max:1x1x1x1:k1",
    "avg:1x1x1x1:k1:cip",
    "max:1x64x112x112:k3:s2:p1",
    "avg:3x5x7x11:k7x11",  # kernel == input
    "avg:2x13x17x19:k3x2:s2x3:p0x1x2x0:ceil:cip",
    "max:1x7x1x220000:k1x200:s1x10:p0x100x0x100:d1x10",  # 1-D, wider than any texture
    "max:1x1x1000x1000:k60x80:s10:p10x20:d10",
    "max:2x3x8x8:k2:s2:p1:ceil",
    "gavg:1x512x7x7",
    "gmax:4x3x1x1",
    "gavg:1x5000x1x3",  # more channels than MAX_TEXTURE_SIZE
    "gmax:1x4x300x300",
]


@pytest.mark.parametrize("language", LANGUAGES)
def test_every_param_reaches_the_template(language):
    assert_params_reach_template(SPEC, language)


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("shape", ODD_SHAPES)
def test_default_params_always_fit(shape, language):
    problem = SPEC.parse_problem(shape)
    for limits in (LIMITS, Limits(max_invocations=16, max_wg_x=16, max_workgroup_storage=1024)):
        params = assert_default_fits(SPEC, problem, limits, language)
        assert render(SPEC, language, problem, params)


def test_builtin_defaults():
    problem = SPEC.parse_problem("max:1x32x56x56:k3:s2:p1")
    assert SPEC.default_params(problem, LIMITS, "wgsl") == DEFAULT_PARAMS
    assert SPEC.default_params(problem, LIMITS, "glsl") == GLSL_DEFAULT_PARAMS
    # a row wider than MAX_TEXTURE_SIZE degrades to square-ish textures instead of failing
    wide = SPEC.parse_problem("max:1x7x1x220000:k1x200:s1x10")
    assert SPEC.default_params(wide, LIMITS, "glsl")["square"] == 1


def test_constraints_name_the_reason():
    odd_c = SPEC.parse_problem("max:1x6x8x8:k2")
    assert "C % 4" in SPEC.constraints(odd_c, {**DEFAULT_PARAMS, "layout": 1}, LIMITS, "wgsl")
    assert "workgroup limits" in SPEC.constraints(
        odd_c, {**DEFAULT_PARAMS, "wg_size": 256}, Limits(max_invocations=128), "wgsl"
    )
    glob = SPEC.parse_problem("gavg:1x8x8x8")
    assert SPEC.constraints(glob, {**DEFAULT_PARAMS, "wpt_w": 4}, LIMITS, "wgsl") is None
    vec = {"wg_size": 256, "wpt_w": 1, "layout": 1}
    assert "workgroup memory" in SPEC.constraints(glob, vec, Limits(max_workgroup_storage=2048), "wgsl")
    wide = SPEC.parse_problem("max:1x7x1x220000:k1x200:s1x10")
    assert "MAX_TEXTURE_SIZE" in SPEC.constraints(wide, GLSL_DEFAULT_PARAMS, LIMITS, "glsl")
    huge = SPEC.parse_problem("max:64x64x512x512:k1")
    assert "storage binding" in SPEC.constraints(huge, DEFAULT_PARAMS, LIMITS, "wgsl")


def test_big_dispatches_wrap_into_2d_grids():
    problem = SPEC.parse_problem("max:8x64x224x224:k1")
    launch = SPEC.launch(problem, {"wg_size": 8, "wpt_w": 1, "layout": 0})
    gx, gy, gz = launch.workgroups
    assert gx == 65535 and gz == 1 and gx * gy * 8 >= launch.uniforms[7] > (gx * (gy - 1)) * 8 - 8 * 65535
    assert SPEC.constraints(problem, {"wg_size": 8, "wpt_w": 1, "layout": 0}, LIMITS, "wgsl") is None


def test_space_has_valid_points_per_problem_kind():
    for shape in ("max:1x16x9x9:k3:s2:p1", "gavg:1x16x7x7"):
        problem = SPEC.parse_problem(shape)
        for language in LANGUAGES:
            valid = valid_configs(SPEC, problem, LIMITS, language)
            assert len(valid) >= 8, (shape, language)


@pytest.mark.parametrize(
    "bad",
    [
        {**DEFAULT_PARAMS, "wg_size": "64u; } fn evil() { "},
        {**DEFAULT_PARAMS, "wg_size": 48},
        {**DEFAULT_PARAMS, "layout": True},
        {**DEFAULT_PARAMS, "extra": 1},
        {k: v for k, v in DEFAULT_PARAMS.items() if k != "wpt_w"},
    ],
)
def test_params_are_validated_before_rendering(bad):
    with pytest.raises(InvalidParamsError):
        render(SPEC, "wgsl", SPEC.parse_problem("max:1x4x8x8:k2"), bad)


def test_rendered_sources_reflect_params_and_attributes():
    problem = SPEC.parse_problem("avg:1x8x9x9:k3x2:s2:p0x1x1x0:d2x1:cip")
    text = render(SPEC, "wgsl", problem, {"wg_size": 128, "wpt_w": 4, "layout": 1})
    assert "@workgroup_size(128, 1, 1)" in text and "array<vec4<f32>>" in text
    assert "const KW: i32 = 2;" in text and "const PL: i32 = 1;" in text and "const DH: i32 = 2;" in text
    assert "row_counts" in text  # count_include_pad counts the padding taps
    glob = render(SPEC, "wgsl", SPEC.parse_problem("gmax:1x8x5x5"), {"wg_size": 64, "wpt_w": 1, "layout": 0})
    assert "var<workgroup> partial: array<f32, 64>" in glob and "t < 1u" in glob and "t < 32u" in glob
    for target, version in (("native", "#version 330"), ("web", "#version 300 es")):
        frag = render(SPEC, "glsl", problem, {"layout": 1, "square": 1, "unroll": 2}, target)
        assert frag.startswith(version) and "out vec4 o0" in frag and "kf_coord" in frag
    unpacked = render(SPEC, "glsl", problem, GLSL_DEFAULT_PARAMS)
    assert "out float o0" in unpacked and "texelFetch(X, ivec2(" in unpacked


@pytest.mark.parametrize("language", LANGUAGES)
def test_whole_space_renders(language):
    problems = [SPEC.parse_problem(s) for s in ("max:2x8x7x5:k3:s2:p1:ceil", "avg:1x4x3x3:k2:cip", "gavg:2x8x3x3")]
    rendered = 0
    for problem, params in itertools.product(problems, every_config(SPEC, language)):
        if SPEC.constraints(problem, params, LIMITS, language) is None:
            assert "{{" not in render(SPEC, language, problem, params)
            rendered += 1
    assert rendered > 20


@pytest.mark.parametrize(
    "text",
    [
        "",
        "max:1x1x1x1",  # no kernel
        "sum:1x1x1x1:k1",
        "max:1x1x1:k1",
        "max:0x1x1x1:k1",
        "max:1x1x4x4:k5",  # larger than the input
        "max:1x1x4x4:k2:k3",
        "max:1x1x4x4:k2:p1x2x3",
        "max:1x1x4x4:k2:cip",  # count_include_pad is for average pooling
        "avg:1x1x4x4:k2:q1",
        "gavg:1x1x4x4:k2",
        "max:1x1x4x4:k2;evil",
    ],
)
def test_bad_shape_strings(text):
    with pytest.raises(ShapeError):
        SPEC.parse_problem(text)


def test_shape_syntax_and_keys_round_trip():
    problem = SPEC.parse_problem("max:1x64x112x112:k3:s2:p1")
    assert (problem.kernel_shape, problem.strides, problem.pads) == ((3, 3), (2, 2), (1, 1, 1, 1))
    assert SPEC.problem_key(problem) == "max:1x64x112x112:k3x3:s2x2:p1x1x1x1"
    assert SPEC.parse_problem("avg:1x1x5x5:k2:p1x2").pads == (1, 2, 1, 2)
    assert SPEC.parse_problem("avg:1x1x5x5:k2:p0x1x2x0").pads == (0, 1, 2, 0)
    glob = SPEC.parse_problem("gavg:1x512x7x7")
    assert glob.global_ and glob.kernel_shape == (7, 7) and SPEC.output_shape(glob) == (1, 512, 1, 1)
    keys = set()
    problems = [SPEC.parse_problem(s) for s in ODD_SHAPES]
    for mode, k, s, p, d, ceil, cip in itertools.product(
        ("max", "avg"),
        ((1, 1), (2, 3)),
        ((1, 1), (3, 2)),
        ((0, 0, 0, 0), (1, 0, 0, 1)),
        ((1, 1), (2, 1)),
        (0, 1),
        (0, 1),
    ):
        if not (mode == "max" and cip):
            problems.append(PoolProblem(2, 3, 9, 8, mode, k, s, p, d, ceil, cip))
    for problem in problems:
        key = SPEC.problem_key(problem)
        assert SPEC.parse_problem(key) == problem, key
        keys.add(key)
    assert len(keys) == len(set(problems))


def test_problem_validation_names_the_field():
    cases = [
        (dict(kernel_shape=(0, 1)), "kernel_shape"),
        (dict(pads=(0, -1, 0, 0)), "pads"),
        (dict(strides=(1,)), "strides"),
        (dict(dilations=(1, True)), "dilations"),
        (dict(ceil_mode=2), "ceil_mode"),
        (dict(mode="sum"), "mode"),
        (dict(mode="max", count_include_pad=1), "count_include_pad"),
        (dict(global_=True, strides=(2, 2)), "global"),
    ]
    for kwargs, field in cases:
        with pytest.raises(ShapeError, match=field) as info:
            PoolProblem(1, 2, 4, 4, **kwargs)
        assert "pool2d" in str(info.value)


def test_output_size_follows_onnx():
    # floor mode, then ceil mode, then ceil mode dropping a last window that starts in the end padding
    assert output_size(7, 3, 2, 1, 1, 1, 0) == 4
    assert output_size(4, 3, 3, 0, 0, 1, 0) == 1
    assert output_size(4, 3, 3, 0, 0, 1, 1) == 2
    assert output_size(4, 1, 2, 1, 1, 1, 1) == 3  # windows at -1, 1, 3; one at 5 would start in padding
    assert output_size(5, 2, 1, 0, 0, 3, 0) == 2  # dilated window spans 4
    assert output_size(3, 5, 1, 0, 0, 1, 0) <= 0


def test_auto_pad_resolution():
    assert resolve_auto_pad("pool2d", "NOTSET", 7, 3, 2, 1) is None
    assert resolve_auto_pad("pool2d", "VALID", 7, 3, 2, 1) == (0, 0)
    assert resolve_auto_pad("pool2d", "SAME_UPPER", 7, 4, 1, 1) == (1, 2)
    assert resolve_auto_pad("pool2d", "SAME_LOWER", 7, 4, 1, 1) == (2, 1)
    assert resolve_auto_pad("pool2d", "SAME_UPPER", 6, 1, 4, 1) == (0, 0)  # a stride past the window pads nothing
    for size, k, s, d in itertools.product((1, 5, 8), (1, 2, 3), (1, 2, 3), (1, 2)):
        begin, end = resolve_auto_pad("pool2d", "SAME_UPPER", size, k, s, d)
        assert output_size(size, k, s, begin, end, d, 0) == -(-size // s)


def test_reference_by_hand():
    x = np.arange(1, 6, dtype=np.float32).reshape(1, 1, 1, 5)
    avg = PoolProblem(1, 1, 1, 5, "avg", (1, 2), (1, 2), (0, 1, 0, 0), ceil_mode=1)
    np.testing.assert_allclose(SPEC.reference(avg, [x]).ravel(), [1, 2.5, 4.5])
    cip = PoolProblem(1, 1, 1, 5, "avg", (1, 2), (1, 2), (0, 1, 0, 0), ceil_mode=1, count_include_pad=1)
    np.testing.assert_allclose(SPEC.reference(cip, [x]).ravel(), [0.5, 2.5, 4.5])  # the overhang never counts
    dil = PoolProblem(1, 1, 1, 5, "max", (1, 2), (1, 1), (0, 0, 0, 0), (1, 3))
    np.testing.assert_allclose(SPEC.reference(dil, [-x]).ravel(), [-1, -2])
    # windows with no input tap: 0 for max, NaN for an average over input taps only, 0 counting padding
    empty = [
        PoolProblem(1, 1, 1, 3, m, (1, 2), (1, 2), (0, 3, 0, 3), count_include_pad=c)
        for m, c in (("max", 0), ("avg", 0), ("avg", 1))
    ]
    outs = [SPEC.reference(p, [x[..., :3]]).ravel() for p in empty]
    np.testing.assert_allclose(outs[0], [0, 1, 3, 0])
    np.testing.assert_allclose(outs[1], [np.nan, 1, 2.5, np.nan])
    np.testing.assert_allclose(outs[2], [0, 0.5, 2.5, 0])


def test_layout_conversion_round_trips():
    problem = SPEC.parse_problem("max:2x8x5x7:k3:s2:p1")
    x = SPEC.make_inputs(problem, np.random.default_rng(0))[0]
    nhwc = {"wg_size": 64, "wpt_w": 1, "layout": 1}
    (dev,) = SPEC.device_inputs(problem, nhwc, [x])
    np.testing.assert_array_equal(dev, x.transpose(0, 2, 3, 1))
    ref = SPEC.reference(problem, [x])
    written = ref.transpose(0, 2, 3, 1).reshape(-1)  # what an NHWC kernel writes
    assert SPEC.device_output_shape(problem, nhwc) == (2, 3, 4, 8)
    np.testing.assert_array_equal(SPEC.from_device(problem, nhwc, written), ref)
    glsl_rows = ref.transpose(0, 2, 3, 1).reshape(2 * 3 * 4, 8)  # the [N*OH*OW, C] matrix of the GLSL kernel
    np.testing.assert_array_equal(SPEC.from_device(problem, {**GLSL_DEFAULT_PARAMS, "layout": 1}, glsl_rows), ref)


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: kops.max_pool(np.zeros((1, 1, 4, 4)), [2]), "max_pool: kernel_shape"),
        (lambda: kops.max_pool(np.zeros((1, 1, 4, 4)), [2, 2], pads=[1, 1]), "max_pool: pads"),
        (lambda: kops.max_pool(np.zeros((1, 1, 4, 4)), [2, 2], strides=[0, 1]), "max_pool: strides"),
        (lambda: kops.max_pool(np.zeros((1, 1, 4, 4)), [5, 5]), "max_pool: kernel_shape"),
        (lambda: kops.max_pool(np.zeros((4, 4)), [2]), "max_pool: x"),
        (lambda: kops.max_pool(np.zeros((1, 1, 4, 4)), [2, 2], auto_pad="SAME"), "max_pool: auto_pad"),
        (lambda: kops.max_pool(np.zeros((1, 1, 4, 4)), [2, 2], pads=[1] * 4, auto_pad="VALID"), "max_pool: pads"),
        (lambda: kops.average_pool(np.zeros((1, 1, 4)), [2], count_include_pad=3), "average_pool: count_include_pad"),
        (lambda: kops.average_pool(np.array([["a"]]), [2]), "average_pool: x"),
        (lambda: kops.global_average_pool(np.zeros((1, 0, 3))), "global_average_pool: x"),
        (lambda: kops.global_max_pool(np.zeros((2, 3))), "global_max_pool: x"),
    ],
)
def test_api_rejects_bad_input_before_any_device(call, match):
    with pytest.raises(ShapeError, match=match):
        call()


# --- the numpy reference against ONNX's own implementations (single-node graphs) ---------------------------


def _model(op, shape, **attrs):
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    graph = helper.make_graph([helper.make_node(op, ["x"], ["y"], **attrs)], "pool", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10  # what the installed onnxruntime reads
    return model


def _attrs(p: PoolProblem):
    if p.global_:
        return {}
    attrs = dict(kernel_shape=list(p.kernel_shape), strides=list(p.strides), pads=list(p.pads), ceil_mode=p.ceil_mode)
    attrs["dilations"] = list(p.dilations)
    if p.mode == "avg":
        attrs["count_include_pad"] = p.count_include_pad
    return attrs


def _onnx_op(p: PoolProblem) -> str:
    return ("Global" if p.global_ else "") + ("MaxPool" if p.mode == "max" else "AveragePool")


# Cases where onnx.reference is right. It is wrong (ORT and the spec agree with us) for MaxPool with unit
# strides and dilations plus asymmetric pads (it reads pads as t, b, l, r) or ceil_mode, and for
# AveragePool in ceil_mode when the last window overhangs by 2 or more (it shifts every window).
REFERENCE_CASES = [
    "max:1x3x7x7:k3:s2:p1",
    "max:2x5x9x8:k3x2:s2x3:p0x1x2x0:ceil",
    "max:1x2x6x7:k2x3:s2:p1:d2",
    "max:1x2x1x9:k1x3:s1x2:p0x1x0x1",
    "max:1x2x1x5:k1x2:s1x2:p0x3x0x3",  # windows entirely in padding: 0
    "max:3x2x4x4:k2",
    "avg:1x3x7x7:k3:s2:p1",
    "avg:1x3x7x7:k3:s2:p1:cip",
    "avg:2x3x5x6:k2x3:s1:p1x0x0x2:cip",
    "avg:1x2x8x9:k3:s2:p1:ceil:cip",
    "avg:1x2x6x6:k2:s2:d2x1:p1",
    "avg:1x2x1x5:k1x2:p0x3x0x3",  # windows entirely in padding: NaN
    "avg:1x2x1x5:k1x2:p0x3x0x3:cip",
    "avg:1x1x1x1:k1",
    "gavg:2x3x7x5",
    "gmax:2x3x1x1",
    "gmax:1x5x4x9",
]


@pytest.mark.parametrize("shape", REFERENCE_CASES)
def test_reference_matches_onnx_reference(shape):
    from onnx.reference import ReferenceEvaluator

    problem = SPEC.parse_problem(shape)
    x = SPEC.make_inputs(problem, np.random.default_rng(3))[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # onnx.reference averages empty windows
        expected = ReferenceEvaluator(_model(_onnx_op(problem), x.shape, **_attrs(problem))).run(None, {"x": x})[0]
    np.testing.assert_allclose(SPEC.reference(problem, [x]), expected, rtol=1e-6, atol=1e-6, equal_nan=True)


def test_reference_matches_onnxruntime_on_random_attributes():
    import onnxruntime as ort

    ort.set_default_logger_severity(3)
    rng = np.random.default_rng(5)
    checked = 0
    while checked < 60:
        k = tuple(int(v) for v in rng.integers(1, 4, 2))
        # ORT rejects pads >= kernel; windows without input taps are left to onnx.reference (above)
        pads = tuple(int(rng.integers(0, k[i % 2])) for i in range(4))
        d = tuple(int(v) for v in rng.integers(1, 3, 2))
        mode = str(rng.choice(["max", "avg"]))
        cip = int(rng.integers(0, 2)) if mode == "avg" else 0
        try:
            problem = PoolProblem(
                int(rng.integers(1, 3)),
                int(rng.integers(1, 6)),
                int(rng.integers(1, 12)),
                int(rng.integers(1, 12)),
                mode,
                k,
                tuple(int(v) for v in rng.integers(1, 4, 2)),
                pads,
                d,
                int(rng.integers(0, 2)),
                cip,
            )
        except ShapeError:
            continue
        x = SPEC.make_inputs(problem, rng)[0]
        ref = SPEC.reference(problem, [x])
        if np.isnan(ref).any() or (problem.mode == "max" and (ref == 0).any()):
            continue  # a window without input taps (dilation jumping over a small input)
        model = _model(_onnx_op(problem), x.shape, **_attrs(problem))
        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        np.testing.assert_allclose(ref, session.run(None, {"x": x})[0], rtol=1e-5, atol=1e-6, err_msg=str(problem))
        checked += 1
