"""Resize's cubic, antialias, exclude_outside, tf_crop_and_resize and keep_aspect_ratio_policy: the per-axis
math, the reference against onnx.reference and onnxruntime, the tables and templates, the ONNX converter."""

from __future__ import annotations

import itertools

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from kernelforge.errors import ShapeError
from kernelforge.graph.onnx_import import UnsupportedModelError, import_model
from kernelforge.ops import get_op
from kernelforge.ops._resize_axis import axis_taps, kept_range, source_coords, weights, window_width
from kernelforge.ops.resize import DEFAULT_PARAMS, ResizeProblem
from kernelforge.templates import render
from tests.null.test_onnx_import import check_numerics, make_model
from tests.null.test_resize_spec import CASES, onnx_resize

SPEC = get_op("resize")
TAP_MODES = [  # (mode, antialias, exclude_outside, cubic_coeff_a)
    ("cubic", False, False, -0.75),
    ("cubic", False, True, -0.5),
    ("cubic", True, False, -0.75),
    ("cubic", True, True, -0.5),
    ("linear", True, False, -0.75),
    ("linear", True, True, -0.75),
    ("linear", False, True, -0.75),
]
COORDS = ("half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric", "half_pixel_symmetric")
# onnx.reference evaluates the cubic weights in float32 (its cubic_coeff_a is a numpy float32, which makes
# every product with it float32); kernelforge's reference keeps them float64, so they agree to ~1e-6.
CUBIC_TOL = 1e-5


def _problem(h, w, scales=None, sizes=None, mode="linear", antialias=False, exclude=False, a=-0.75, **kw):
    return ResizeProblem(
        2, 3, h, w, scales=scales, sizes=sizes, mode=mode, antialias=antialias, exclude_outside=exclude,
        cubic_coeff_a=a if mode == "cubic" else -0.75, **kw,
    )  # fmt: skip


def _attrs(mode, antialias, exclude, a, **kw):
    attrs = {"mode": mode, "antialias": int(antialias), "exclude_outside": int(exclude), **kw}
    return {**attrs, "cubic_coeff_a": a} if mode == "cubic" else attrs


@pytest.mark.parametrize(("mode", "antialias", "exclude", "a"), TAP_MODES)
def test_tap_modes_match_onnx_reference(mode, antialias, exclude, a):
    rng = np.random.default_rng(7)
    for ((h, w), scales), coord in itertools.product([*CASES, ((13, 11), (0.26, 0.4))], COORDS):
        x = rng.standard_normal((2, 3, h, w)).astype(np.float32)
        attrs = _attrs(mode, antialias, exclude, a, coordinate_transformation_mode=coord)
        fields = (mode, antialias, exclude, a)
        problem = _problem(h, w, scales, None, *fields, coordinate_transformation_mode=coord)
        assert problem.taps
        expected = onnx_resize(x, scales=[1, 1, *scales], **attrs)
        np.testing.assert_allclose(SPEC.reference(problem, [x]), expected, rtol=CUBIC_TOL, atol=CUBIC_TOL)
        by_size = _problem(h, w, None, problem.out_hw, *fields, coordinate_transformation_mode=coord)
        expected = onnx_resize(x, sizes=[2, 3, *problem.out_hw], **attrs)
        np.testing.assert_allclose(SPEC.reference(by_size, [x]), expected, rtol=CUBIC_TOL, atol=CUBIC_TOL)


@pytest.mark.parametrize("mode", ["nearest", "linear", "cubic"])
def test_tf_crop_and_resize_matches_onnx_reference(mode):
    rng = np.random.default_rng(8)
    rois = [(0.2, -0.3, 0.9, 1.4), (0.4, 0.6, 0.6, 0.8), (1.2, 0.5, -0.1, 0.5), (0.0, 0.0, 1.0, 1.0)]
    for (h, w), sizes, roi in itertools.product([(4, 4), (7, 9), (1, 5)], [(3, 3), (5, 11), (1, 2)], rois):
        x = rng.standard_normal((2, 3, h, w)).astype(np.float32)
        crop = {"coordinate_transformation_mode": "tf_crop_and_resize", "extrapolation_value": 2.5}
        problem = _problem(h, w, None, sizes, mode, roi=roi, **crop)
        onnx_roi = [0, 0, roi[0], roi[1], 1, 1, roi[2], roi[3]]
        expected = onnx_resize(x, sizes=[2, 3, *sizes], roi=onnx_roi, **_attrs(mode, False, False, -0.75, **crop))
        np.testing.assert_allclose(SPEC.reference(problem, [x]), expected, rtol=CUBIC_TOL, atol=CUBIC_TOL)
    # scales: output floor(scale * input) and coordinates through the fractional scale * input, as the reference
    x = rng.standard_normal((2, 3, 7, 9)).astype(np.float32)
    crop = {"coordinate_transformation_mode": "tf_crop_and_resize"}
    problem = _problem(7, 9, (2.0, 0.5), None, mode, roi=(0.2, -0.3, 0.9, 1.4), **crop)
    expected = onnx_resize(x, scales=[1, 1, 2.0, 0.5], roi=[0, 0, 0.2, -0.3, 1, 1, 0.9, 1.4], mode=mode, **crop)
    np.testing.assert_allclose(SPEC.reference(problem, [x]), expected, rtol=CUBIC_TOL, atol=CUBIC_TOL)


@pytest.mark.parametrize("policy", ["not_larger", "not_smaller"])
def test_keep_aspect_ratio_policy_matches_onnx_reference(policy):
    rng = np.random.default_rng(9)
    for (h, w), sizes, mode in itertools.product(
        [(2, 2), (2, 4), (5, 7), (9, 4)], [(7, 8), (1, 3), (3, 9), (4, 10)], ["nearest", "linear", "cubic"]
    ):
        x = rng.standard_normal((2, 3, h, w)).astype(np.float32)
        expected = onnx_resize(x, sizes=list(sizes), axes=[2, 3], mode=mode, keep_aspect_ratio_policy=policy)
        if 0 in expected.shape:  # a scale that rounds an axis away: refused (kernelforge has no empty tensors)
            with pytest.raises(ShapeError, match="empty"):
                _problem(h, w, None, sizes, mode, keep_aspect_ratio_policy=policy)
            continue
        problem = _problem(h, w, None, sizes, mode, keep_aspect_ratio_policy=policy)
        assert problem.out_hw == expected.shape[2:]
        np.testing.assert_allclose(SPEC.reference(problem, [x]), expected, rtol=CUBIC_TOL, atol=CUBIC_TOL)
    # one scale for both axes, the output rounded half up: not size / input per axis
    problem = ResizeProblem(1, 1, 2, 4, sizes=(1, 3), keep_aspect_ratio_policy=policy)
    assert problem.scale_factors == ((0.5, 0.5) if policy == "not_larger" else (0.75, 0.75))
    assert problem.out_hw == ((1, 2) if policy == "not_larger" else (2, 3))


def test_antialias_widens_the_window_by_one_over_scale():
    ratio = np.array([0.25, 1.0])
    assert weights(ratio, 2.0, "linear", -0.75, True).shape == (2, 2)  # upsampling: the plain filters' taps
    assert weights(ratio, 2.0, "cubic", -0.75, True).shape == (2, 4)
    assert weights(ratio, 0.5, "linear", -0.75, True).shape == (2, 4)  # 2 * ceil(1 / scale)
    assert weights(ratio, 0.26, "cubic", -0.75, True).shape == (2, 16)  # 2 * ceil(2 / scale)
    assert window_width(0.3, "linear", True) == 8 and window_width(0.25, "cubic", True) == 16
    for scale, mode in itertools.product((0.26, 0.5, 0.6, 1.0, 3.0), ("linear", "cubic")):
        np.testing.assert_allclose(weights(ratio, scale, mode, -0.5, True).sum(axis=1), 1.0, rtol=1e-12)
    # the plain cubic: ratio 1 is an integer coordinate, all weight on its tap
    np.testing.assert_array_equal(weights(np.array([1.0]), 1.0, "cubic", -0.75, False), [[0, 0, 1, 0]])


def test_exclude_outside_drops_the_taps_past_the_edges():
    index, weight = axis_taps(5, 10, 2.0, "cubic", "half_pixel", (0.0, 1.0), -0.75, True, False)
    x, _ = source_coords(5, 10, 2.0, "half_pixel")
    assert x[0] == -0.25 and index.shape == (10, 4)
    np.testing.assert_array_equal(index[0], [0, 0, 0, 1])  # taps -2, -1, 0, 1 clamped
    assert weight[0, 0] == weight[0, 1] == 0 and weight[0, 2:].sum() == pytest.approx(1.0)
    _, kept = axis_taps(5, 10, 2.0, "cubic", "half_pixel", (0.0, 1.0), -0.75, False, False)
    assert kept[0, 1] != 0  # without it the edge pixel's clamped copies keep their weights
    np.testing.assert_allclose(weight.sum(axis=1), 1.0)


def test_crop_extrapolates_a_prefix_and_a_suffix():
    x, outside = source_coords(4, 7, 7 / 4, "tf_crop_and_resize", (-0.5, 1.2))
    assert outside is not None
    np.testing.assert_array_equal(outside, (x < 0) | (x > 3))
    assert kept_range(outside, 7) == (2, 6) and kept_range(None, 7) == (0, 7)
    assert kept_range(np.ones(3, bool), 3) == (0, 0)
    with pytest.raises(ValueError, match="prefix and suffix"):
        kept_range(np.array([False, True, False]), 3)
    problem = SPEC.parse_problem("1x1x4x4:o3,3:linear:tf_crop_and_resize:r0.4,0.6,0.6,0.8:e10")
    assert problem.kept() == ((0, 3), (0, 3))
    problem = SPEC.parse_problem("1x1x4x4:o3,3:linear:tf_crop_and_resize:r0.4,0.6,1.2,1.7:e10")
    assert problem.kept() == ((0, 2), (0, 1))  # H sources 1.2, 2.4, 3.6; W 1.8, 3.45, 5.1 (past 3: extrapolated)


def test_extrapolated_outputs_hold_the_value_as_onnxruntime_writes_them():
    # onnx.reference blends a row extrapolated along H through the W weights (inf becomes NaN or saturates)
    x = np.random.default_rng(2).standard_normal((1, 2, 7, 9)).astype(np.float32)
    for mode, value in (("cubic", -np.inf), ("linear", np.inf), ("nearest", 3.5)):
        attrs = {"mode": mode, "coordinate_transformation_mode": "tf_crop_and_resize", "extrapolation_value": value}
        node = helper.make_node("Resize", ["x", "roi", "", "sizes"], ["y"], **attrs)
        inits = {"roi": np.array([0, 0, 0.2, -0.3, 1, 1, 0.9, 1.4], np.float32), "sizes": np.array([1, 2, 5, 11])}
        model = make_model([node], {"x": [1, 2, 7, 9]}, ["y"], inits, 19)
        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        want = session.run(None, {"x": x})[0]
        problem = ResizeProblem(1, 2, 7, 9, sizes=(5, 11), roi=(0.2, -0.3, 0.9, 1.4), **attrs)
        got = SPEC.reference(problem, [x])
        assert np.isinf(want).any() == np.isinf(value)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_tap_table_holds_index_weight_pairs():
    problem = SPEC.parse_problem("1x1x4x6:s2,0.5:cubic:half_pixel")
    (ih, wh), (iw, ww) = problem.tap_tables()
    assert problem.tap_counts() == (4, 4) and ih.shape == (8, 4) and iw.shape == (3, 4)
    table = problem.table()
    assert table.shape == (8 * 2 + 3 * 2, 4) and table.dtype == np.float32
    np.testing.assert_array_equal(table[0], np.float32([ih[0, 0], wh[0, 0], ih[0, 1], wh[0, 1]]))
    np.testing.assert_array_equal(table[1], np.float32([ih[0, 2], wh[0, 2], ih[0, 3], wh[0, 3]]))
    np.testing.assert_array_equal(table[16 + 2 * 2 + 1], np.float32([iw[2, 2], ww[2, 2], iw[2, 3], ww[2, 3]]))
    # an axis the reference leaves alone is one pair (i, 1), (i, 0); antialias sizes each axis by its scale
    assert SPEC.parse_problem("1x1x4x6:s1,0.3:linear:antialias").tap_counts() == (2, 8)
    assert SPEC.flops(problem) == 2 * 4 * 4 * 8 * 3


def test_existing_modes_render_as_before_and_new_ones_as_branches():
    for text in ("1x4x5x7:s2,2:linear", "1x4x5x7:s2,2:nearest"):
        problem = SPEC.parse_problem(text)
        for language, params in (("wgsl", DEFAULT_PARAMS), ("glsl", {"layout": 0, "square": 0})):
            source = render(SPEC, language, problem, params)
            assert "< KW2" not in source and "let extrap" not in source and "bool outside" not in source
    cubic = SPEC.parse_problem("1x4x5x7:s2,2:cubic")
    assert "for (var b = 0u; b < KW2; b++)" in render(SPEC, "wgsl", cubic, DEFAULT_PARAMS)
    assert "for (int b = 0; b < KW2; b++)" in render(SPEC, "glsl", cubic, {"layout": 1, "square": 1}, target="web")
    crop = SPEC.parse_problem("1x4x7x9:o5,11:linear:tf_crop_and_resize:r0.2,-0.3,0.9,1.4:e-inf")
    wgsl = render(SPEC, "wgsl", crop, DEFAULT_PARAMS)
    assert "const XLO: u32 = 2u;" in wgsl and "select(v, extrap," in wgsl and "mix(top, bottom" in wgsl
    assert SPEC.launch(crop, DEFAULT_PARAMS).uniforms[3] == 0xFF800000
    assert "uintBitsToFloat(4286578688u)" in render(SPEC, "glsl", crop, {"layout": 0, "square": 0})
    assert SPEC.launch(cubic, DEFAULT_PARAMS).uniforms[3] == 0


# --- the ONNX converter ---------------------------------------------------------------------------------------


def resize_model(attrs, roi=None, scales=None, sizes=None, shape=(1, 2, 6, 5), opset=19):
    """Return a one-node Resize model with constant ``roi``, ``scales`` and ``sizes`` where given."""
    inits, names = {}, ["x", "", "", ""]
    for k, (key, value, dtype) in enumerate((("roi", roi, np.float32), ("s", scales, np.float32), ("z", sizes, None))):
        if value is not None:
            inits[key] = np.array(value, dtype or np.int64)
            names[k + 1] = key
    while not names[-1]:
        names.pop()
    return make_model([helper.make_node("Resize", names, ["y"], **attrs)], {"x": list(shape)}, ["y"], inits, opset)


@pytest.mark.parametrize(
    ("attrs", "inputs"),
    [
        ({"mode": "cubic"}, {"scales": [1, 1, 1.5, 0.6]}),
        ({"mode": "cubic", "cubic_coeff_a": -0.5, "exclude_outside": 1}, {"scales": [1, 1, 2, 2]}),
        ({"mode": "cubic", "antialias": 1}, {"sizes": [1, 2, 3, 2]}),
        ({"mode": "linear", "antialias": 1}, {"scales": [1, 1, 0.5, 0.4]}),
        ({"mode": "cubic", "antialias": 1, "coordinate_transformation_mode": "align_corners"}, {"sizes": [1, 2, 4, 3]}),
        (
            {"mode": "linear", "coordinate_transformation_mode": "tf_crop_and_resize", "extrapolation_value": 1.5},
            {"roi": [0, 0, 0.2, -0.3, 1, 1, 0.9, 1.4], "sizes": [1, 2, 5, 8]},
        ),
        (
            {"mode": "cubic", "coordinate_transformation_mode": "tf_crop_and_resize", "axes": [3, 2]},
            {"roi": [-0.3, 0.2, 1.4, 0.9], "sizes": [8, 5]},
        ),
        ({"mode": "linear", "axes": [2, 3], "keep_aspect_ratio_policy": "not_larger"}, {"sizes": [9, 13]}),
        ({"mode": "cubic", "axes": [2, 3], "keep_aspect_ratio_policy": "not_smaller"}, {"sizes": [3, 4]}),
    ],
)
def test_onnx_models_match_onnxruntime(attrs, inputs):
    graph = check_numerics(resize_model(attrs, **inputs))
    (node,) = graph.nodes
    assert node.op == "resize" and node.attrs["mode"] == attrs["mode"]


def test_converter_keeps_the_tensor_when_n_or_c_wins_the_aspect_policy():
    # axes default to all four: N and C's size / input of 1 is the smallest, so nothing is resized
    model = resize_model({"mode": "linear", "keep_aspect_ratio_policy": "not_larger"}, sizes=[1, 2, 12, 10])
    graph = check_numerics(model)
    assert graph.nodes == [] or all(n.op != "resize" for n in graph.nodes)
    one_axis = resize_model({"mode": "linear", "axes": [3], "keep_aspect_ratio_policy": "not_smaller"}, sizes=[8])
    (node,) = import_model(one_axis).nodes
    assert node.attrs["sizes"] == (6, 8) and "keep_aspect_ratio_policy" not in node.attrs


def test_converter_refusals_name_the_reason():
    cases = [
        (resize_model({"mode": "nearest", "antialias": 1}, scales=[1, 1, 2, 2]), "antialias=1 applies to linear"),
        (resize_model({"mode": "nearest", "exclude_outside": 1}, scales=[1, 1, 2, 2]), "exclude_outside=1 applies"),
        (
            resize_model(
                {"mode": "linear", "coordinate_transformation_mode": "tf_crop_and_resize"},
                roi=[0, 0.1, 0, 0, 1, 1, 1, 1],
                sizes=[1, 2, 3, 3],
            ),
            "cropping the N or C axis",
        ),
        (
            resize_model({"mode": "linear", "keep_aspect_ratio_policy": "not_larger"}, sizes=[1, 1, 2, 2]),
            "resizes the N or C axis",
        ),
        (resize_model({"mode": "linear", "keep_aspect_ratio_policy": "fit"}, sizes=[1, 2, 2, 2]), "fit"),
    ]
    for model, reason in cases:
        with pytest.raises((UnsupportedModelError, ShapeError), match=reason):
            import_model(model)
    runtime_roi = resize_model({"mode": "linear", "coordinate_transformation_mode": "tf_crop_and_resize"})
    runtime_roi.graph.node[0].input[:] = ["x", "r", "", "z"]
    runtime_roi.graph.input.append(helper.make_tensor_value_info("r", TensorProto.FLOAT, [8]))
    runtime_roi.graph.initializer.append(helper.make_tensor("z", TensorProto.INT64, [4], [1, 2, 3, 3]))
    with pytest.raises(UnsupportedModelError, match=r"roi needs a runtime value; only a constant is supported"):
        import_model(runtime_roi)
    # a runtime roi is read only by tf_crop_and_resize: other modes run without it, as ONNX defines
    del runtime_roi.graph.node[0].attribute[:]
    runtime_roi.graph.node[0].attribute.append(helper.make_attribute("mode", "linear"))
    (node,) = import_model(runtime_roi).nodes
    assert node.op == "resize" and "roi" not in node.attrs


def test_tap_counts_match_the_tables():
    for text in ("1x1x9x13:s0.3,0.45:cubic:antialias", "1x1x9x13:s1,0.2:linear:antialias", "1x1x9x13:s1.5,2:cubic"):
        problem = SPEC.parse_problem(text)
        (ih, _), (iw, _) = problem.tap_tables()
        assert problem.tap_counts() == (ih.shape[1], iw.shape[1])
