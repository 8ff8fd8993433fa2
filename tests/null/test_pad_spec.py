"""Pad spec, reference (vs numpy, onnx.reference and onnxruntime), parsing and templates: no device needed."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from kernelforge.errors import InvalidParamsError, ShapeError
from kernelforge.ops import Limits, get_op
from kernelforge.ops.pad import DEFAULT_PARAMS, PadProblem, full_pads
from kernelforge.templates import render
from kernelforge.testing.ops import assert_default_fits, assert_params_reach_template, every_config

SPEC = get_op("pad")
LIMITS = Limits()
MODES = ("constant", "reflect", "edge", "wrap")


def _onnx_pad(x, pads, mode, value=None, axes=None, opset=19):
    """Run one ONNX Pad node through onnx.reference."""
    from onnx import TensorProto, helper
    from onnx.reference import ReferenceEvaluator

    inputs, inits = ["x", "pads"], [helper.make_tensor("pads", TensorProto.INT64, [len(pads)], list(pads))]
    if value is not None or axes is not None:
        inputs.append("value" if value is not None else "")
        if value is not None:
            inits.append(helper.make_tensor("value", TensorProto.FLOAT, [], [value]))
    if axes is not None:
        inputs.append("axes")
        inits.append(helper.make_tensor("axes", TensorProto.INT64, [len(axes)], list(axes)))
    node = helper.make_node("Pad", inputs, ["y"], mode=mode)
    graph = helper.make_graph(
        [node],
        "pad",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)
    return model, ReferenceEvaluator(model).run(None, {"x": x})[0]


def _problem(shape, pads, mode="constant", value=0.0, axes=None):
    return PadProblem(tuple(shape), full_pads(shape, pads, axes), mode, value)


@pytest.mark.parametrize("language", ["wgsl", "glsl"])
def test_every_param_reaches_the_template(language):
    assert_params_reach_template(SPEC, language)


@pytest.mark.parametrize(
    "shape",
    [
        "1:p0,0",
        "7:p3,-2:reflect",
        "1x1x1x1x1x1:p0,0,0,0,0,1,1,0,0,0,0,0",
        "3x224x224:p0,1,1,0,1,1:edge",
        "5000x3:p0,0,0,0",
        "1x1x20000:p0,0,5,0,0,5:reflect",
        "5000x5000:p1,1,1,1",
    ],
)
@pytest.mark.parametrize("language", ["wgsl", "glsl"])
def test_default_params_always_fit(shape, language):
    problem = SPEC.parse_problem(shape)
    for limits in (LIMITS, Limits(max_invocations=32, max_wg_x=32), Limits(max_texture_size=16384)):
        assert_default_fits(SPEC, problem, limits, language)


def test_no_fitting_config_is_a_shape_error():
    problem = SPEC.parse_problem("9000x9000:p1,1,1,1")
    for language in ("wgsl", "glsl"):
        with pytest.raises(ShapeError, match=f"no built-in {language} config"):
            SPEC.default_params(problem, LIMITS, language)


def test_tall_output_falls_back_to_square_textures():
    problem = SPEC.parse_problem("5000x3:p1,0,1,0:edge")
    assert "MAX_TEXTURE_SIZE" in SPEC.constraints(problem, {"pack": 4, "square": 0}, LIMITS, "glsl")
    assert SPEC.default_params(problem, LIMITS, "glsl")["square"] == 1


def test_constraints_name_the_reason():
    problem = SPEC.parse_problem("64x64:p1,1,1,1")
    assert "workgroup" in SPEC.constraints(problem, {"wg_size": 256, "ept": 1}, Limits(max_invocations=128), "wgsl")
    huge = SPEC.parse_problem("4096x4096x4:p0,0,0,0,0,0")
    assert "storage binding" in SPEC.constraints(huge, DEFAULT_PARAMS, LIMITS, "wgsl")
    # the 1-D grid spills into y: 65535 * 2 threads' worth of workgroups still dispatches
    wide = SPEC.parse_problem("131072x1:p0,0,0,0")
    launch = SPEC.launch(wide, {"wg_size": 1, "ept": 1})
    assert launch.workgroups == (65535, 3, 1) and launch.uniforms[0] == 131072
    assert SPEC.constraints(wide, {"wg_size": 1, "ept": 1}, LIMITS, "wgsl") is None


@pytest.mark.parametrize(
    "text",
    [
        "",
        "3x4",
        "3x4:",
        "3x4:p1,1",
        "3x4:p1,1,1",
        "3x4:p1,1,1,1:circular",
        "3:p-3,1:wrap",
        "3x4:p1,1,1,1:reflect:edge",
        "3x4:p1,1,1,1:vx",
        "3x4:q1",
        "0x4:p0,0,0,0",
        "1x1x1x1x1x1x1:p0,0,0,0,0,0,0,0,0,0,0,0,0,0",
        "3x4:p1,1:a2",
        "3x4:p1,1,1,1:a0,0",
        "3:p-2,-1",
        "3:p-3,0",
        "3:p-3,1:edge",
        "3:p1,1:p1,1",
    ],
)
def test_bad_shape_strings(text):
    with pytest.raises(ShapeError):
        SPEC.parse_problem(text)


def test_shape_keys_round_trip():
    assert SPEC.shape_separator == ";"  # keys hold commas: the CLI splits several shapes on ";" only
    for text in (
        "1x3x224x224:p0,0,1,1,0,0,1,1:reflect",
        "5x7:p0,-1,0,2:constant:v1.5",
        "7:p2,3:edge",
        "2x2:p1,1,1,1:constant:v-inf",
        "4:p1,1:constant",
        "3x5:p2,-1,4,7:wrap",
    ):
        problem = SPEC.parse_problem(text)
        assert SPEC.problem_key(problem) == text
        assert SPEC.parse_problem(SPEC.problem_key(problem)) == problem
    # axes and defaults are normalized: equal problems, equal keys
    assert SPEC.parse_problem("5x7:p-1,2:v1.5:a1") == SPEC.parse_problem("5x7:p0,-1,0,2:constant:v1.5")
    assert SPEC.problem_key(SPEC.parse_problem("4:p1,1:v0")) == "4:p1,1:constant"


def test_full_pads_and_axes():
    assert full_pads((2, 3, 4), [1, 2], axes=[-1]) == (0, 0, 1, 0, 0, 2)
    assert full_pads((2, 3, 4), [1, 2, 3, 4], axes=[2, 0]) == (2, 0, 1, 4, 0, 3)
    with pytest.raises(ShapeError, match="axes entry 3"):
        full_pads((2, 3, 4), [1, 2], axes=[3])
    with pytest.raises(ShapeError, match="pads needs 6"):
        full_pads((2, 3, 4), [1, 2])
    with pytest.raises(ShapeError, match="integers"):
        full_pads((2,), [1.5, 2])


@pytest.mark.parametrize("mode", MODES)
def test_reference_matches_numpy_pad(mode):
    rng = np.random.default_rng(1)
    cases = [
        ((1,), (0, 3)),
        ((5,), (4, 4)),
        ((5,), (7, 9)),
        ((3, 1, 4), (1, 2, 0, 0, 3, 3)),
        ((2, 3, 4, 5, 1, 2), (1,) * 12),
    ]
    for shape, pads in cases:
        if mode == "reflect" and 1 in shape:
            continue
        x = rng.standard_normal(shape).astype(np.float32)
        problem = _problem(shape, pads, mode, 0.5)
        width = [(pads[i], pads[len(shape) + i]) for i in range(len(shape))]
        kw = {"constant_values": 0.5} if mode == "constant" else {}
        np.testing.assert_array_equal(SPEC.reference(problem, [x]), np.pad(x, width, mode=mode, **kw))


@pytest.mark.parametrize("mode", MODES)
def test_reference_matches_onnx_reference(mode):
    rng = np.random.default_rng(2)
    cases = [
        ((7,), [6, 6], None),  # reflect pads up to size - 1
        ((4, 5), [0, 4, 3, 0], None),
        ((2, 3, 4), [1, 3], [-1]),  # axes
        ((1, 3, 1, 5), [0, 0, 2, 1, 0, 1, 0, 4], None),  # size-1 axes padded by edge/constant
        ((3, 2, 2, 3, 1, 2), [1, 1, 1, 1, 2, 1], [2, 0, 3]),
    ]
    for shape, pads, axes in cases:
        problem = _problem(shape, pads, mode, -2.25, axes)
        if mode == "reflect" and any(s == 1 and p for s, p in zip(shape, problem.pads * 2, strict=False)):
            continue
        x = rng.standard_normal(shape).astype(np.float32)
        _, expected = _onnx_pad(x, pads, mode, -2.25 if mode == "constant" else None, axes)
        np.testing.assert_array_equal(SPEC.reference(problem, [x]), expected)


def test_negative_pads_match_onnxruntime():
    # onnx.reference's np.pad cannot crop; onnxruntime implements negative pads (crop first, then pad)
    import onnxruntime as ort

    rng = np.random.default_rng(3)
    cases = [
        ((5,), [-1, 3], "reflect"),
        ((5,), [2, -1], "reflect"),
        ((6, 7), [-2, 2, 1, -4], "reflect"),
        ((6, 7), [-2, 3, 1, -4], "edge"),
        ((4, 5, 3), [-1, 0, 2, -2, 1, -1], "constant"),
        ((4, 5), [-4, 0, 2, 0], "constant"),  # an axis cropped to nothing, then padded with the value
        ((5,), [-1, 3], "wrap"),
        ((5,), [7, -2], "wrap"),  # pads past the kept size wrap around again
        ((3, 4), [-1, 2, 1, -1], "wrap"),
    ]
    for shape, pads, mode in cases:
        x = rng.standard_normal(shape).astype(np.float32)
        from onnx import TensorProto, helper

        node = helper.make_node("Pad", ["x", "pads", "value"], ["y"], mode=mode)
        inits = [
            helper.make_tensor("pads", TensorProto.INT64, [len(pads)], pads),
            helper.make_tensor("value", TensorProto.FLOAT, [], [0.75]),
        ]
        graph = helper.make_graph(
            [node],
            "pad",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
            inits,
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)], ir_version=9)
        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        expected = session.run(None, {"x": x})[0]
        got = SPEC.reference(_problem(shape, pads, mode, 0.75), [x])
        np.testing.assert_array_equal(got, expected, err_msg=f"{shape} {pads} {mode}")


def test_problem_validation_names_the_field():
    with pytest.raises(ShapeError, match="crop more"):
        _problem((3,), [-2, -2])
    with pytest.raises(ShapeError, match="empty"):
        _problem((3,), [-2, -1])
    with pytest.raises(ShapeError, match="reflect mode needs"):
        _problem((3,), [-3, 2], "reflect")
    with pytest.raises(ShapeError, match="wrap mode needs"):
        _problem((3,), [-3, 2], "wrap")
    with pytest.raises(ShapeError, match="mode"):
        _problem((3,), [1, 1], "circular")
    with pytest.raises(ShapeError, match="constant_value"):
        PadProblem((3,), (1, 1), "constant", "1")  # type: ignore[arg-type]
    with pytest.raises(ShapeError, match="shape"):
        PadProblem((0,), (1, 1))


@pytest.mark.parametrize(
    "bad",
    [
        {**DEFAULT_PARAMS, "wg_size": "64u; } fn evil() {"},
        {**DEFAULT_PARAMS, "ept": 3},
        {"wg_size": 64},
        {**DEFAULT_PARAMS, "x": 1},
    ],
)
def test_params_are_validated_before_rendering(bad):
    with pytest.raises(InvalidParamsError):
        render(SPEC, "wgsl", SPEC.parse_problem("4x4:p1,1,1,1"), bad)


def test_rendered_sources_reflect_problem_and_params():
    problem = SPEC.parse_problem("3x4x5:p0,1,2,0,-1,3:reflect")
    wgsl = render(SPEC, "wgsl", problem, {"wg_size": 128, "ept": 8})
    assert "@workgroup_size(128, 1, 1)" in wgsl and "const EPT: u32 = 8u;" in wgsl
    assert "% 4;" in wgsl  # reflect period 2 * (3 - 1) of the middle axis (4 elements, one cropped)
    assert "value" not in wgsl.split("fn main")[1]  # no constant in reflect mode
    const = SPEC.parse_problem("3x4:p1,1,1,1:v-inf")
    assert "bitcast<f32>(dims.value_bits)" in render(SPEC, "wgsl", const, DEFAULT_PARAMS)
    assert SPEC.launch(const, DEFAULT_PARAMS).uniforms[2] == 0xFF800000
    glsl = render(SPEC, "glsl", const, {"pack": 4, "square": 1}, target="web")
    assert glsl.startswith("#version 300 es") and "uintBitsToFloat(4286578688u)" in glsl
    assert "kf_coord(" in glsl.split("float load")[1] and "int(gl_FragCoord.y) * 4" in glsl  # square layouts


def test_wrap_takes_indices_modulo_the_kept_range():
    problem = SPEC.parse_problem("5:p7,-2:wrap")  # kept [0, 3), 7 padded before: 7 mod 3 = 1 leads
    np.testing.assert_array_equal(SPEC.reference(problem, [np.arange(5, dtype=np.float32)]), [2, 0, 1] * 3 + [2])
    assert SPEC.problem_key(problem) == "5:p7,-2:wrap"
    wgsl = render(SPEC, "wgsl", problem, DEFAULT_PARAMS)
    assert "+ 9) % 3" in wgsl  # offset ceil(7 / 3) * 3 keeps the remainder's operand non-negative
    glsl = render(SPEC, "glsl", problem, {"pack": 1, "square": 0})
    assert "+ 9) % 3" in glsl


def test_every_mode_renders_in_both_languages():
    for mode, language in itertools.product(MODES, ("wgsl", "glsl")):
        problem = SPEC.parse_problem(f"2x3x4x5x2x3:p1,0,2,0,1,2,0,1,-1,0,1,1:{mode}")
        for params in every_config(SPEC, language):
            assert "main" in render(SPEC, language, problem, params)
