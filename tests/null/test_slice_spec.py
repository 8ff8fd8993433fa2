"""Slice spec, templates, and ONNX Slice / Split import against onnxruntime: no device needed."""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from kernelforge.errors import InvalidParamsError, ShapeError
from kernelforge.export import export
from kernelforge.graph.ir import GraphError
from kernelforge.graph.onnx_import import UnsupportedModelError, import_model
from kernelforge.graph.prepare import model_kernels
from kernelforge.ops import Limits, get_op
from kernelforge.ops.slice import SliceProblem, window
from kernelforge.templates import render
from kernelforge.testing.ops import assert_default_fits, assert_params_reach_template, every_config, valid_configs

from .test_onnx_import import check_numerics, make_model, ops

SPEC = get_op("slice")
LIMITS = Limits()
TINY = Limits(max_invocations=32, max_wg_x=32, max_wg_y=32, max_workgroup_storage=1024, max_texture_size=2048)
SHAPES = [
    "1x197x2304:s768:e1536:a2",  # the k of a fused qkv projection
    "1x64x80x80:s32:e64:a1",  # the second half of a C2f channel split: one contiguous run
    "1x197x768:s0:e1:a1",  # the [CLS] token
    "4x6:s-1,0:e-100,6:t-1,2",  # rows reversed, every other column
    "8x10:s-1:e-11:a1:t-1",
    "7:s-3:e100",
    "5:s0:e5",  # the whole tensor
    "2x3x4x5x6:s1,-1,0,5:e2,-100,4,0:a0,1,3,4:t1,-1,2,-2",  # rank 5, every kind of axis at once
    "3x1x9:s-1000,0,2:e1000,1,9:t3,1,1",  # starts and ends beyond the bounds
    "40000x6:s0:e5:a1",  # a tall output
    "2x20000:s1:e19999:a1",  # rows too wide for a row-aligned texture
]
REPO_DB = Path(__file__).resolve().parents[2] / "tuning_db"


# --- problems and keys ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", SHAPES)
def test_parse_and_key_round_trip(text: str) -> None:
    problem = SPEC.parse_problem(text)
    key = SPEC.problem_key(problem)
    assert SPEC.parse_problem(key) == problem and SPEC.problem_key(SPEC.parse_problem(key)) == key
    assert ";" not in key  # the CLI splits --shape lists on ';' (this op's syntax has commas)


def test_keys_list_only_the_sliced_axes_resolved() -> None:
    assert SPEC.problem_key(SPEC.parse_problem("1x197x2304:s768:e1536:a-1")) == "1x197x2304:s768:e1536:a2"
    assert SPEC.problem_key(SPEC.parse_problem("4x6:s-1,0:e-100,6:t-1,2")) == "4x6:s3,0:e-5,5:a0,1:t-1,2"
    assert SPEC.problem_key(SPEC.parse_problem("5:s0:e99")) == "5:s0:e5:a0"
    # an end past the last read is tightened: the same window, the same key
    assert SPEC.parse_problem("10:s1:e9:t3") == SPEC.parse_problem("10:s1:e8:t3")


@pytest.mark.parametrize("seed", range(30))
def test_window_clamps_exactly_as_numpy_slicing(seed: int) -> None:
    # Python's slicing resolves negative and out-of-range starts and ends as ONNX Slice does, for either sign
    rng = np.random.default_rng(seed)
    shape = tuple(int(d) for d in rng.integers(1, 7, rng.integers(1, 6)))
    x = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    axes = [int(a) for a in rng.permutation(len(shape))[: rng.integers(1, len(shape) + 1)]]
    starts, ends, steps, index = [], [], [], [slice(None)] * len(shape)
    for a in axes:
        dim = shape[a]
        step = int(rng.choice([-3, -2, -1, 1, 2, 3]))
        start, end = int(rng.integers(-dim - 3, dim + 3)), int(rng.integers(-dim - 3, dim + 3))
        starts.append(start)
        ends.append(end)
        steps.append(step)
        index[a] = slice(start, end, step)
    want = x[tuple(index)]
    signed_axes = [a - len(shape) if k % 2 else a for k, a in enumerate(axes)]  # negative axes too
    if want.size == 0:
        with pytest.raises(ShapeError, match="keeps no values"):
            window(shape, starts, ends, signed_axes, steps)
        return
    problem = window(shape, starts, ends, signed_axes, steps)
    assert SPEC.output_shape(problem) == want.shape
    np.testing.assert_array_equal(SPEC.reference(problem, [x]), want)


@pytest.mark.parametrize(
    "args,match",
    [
        (((4,), [0], [4], None, [0]), "step 0"),
        (((4, 5), [0, 0], [1, 1], [1, -1], None), "repeat axis 1"),
        (((4, 5), [0], [1], [2], None), "axis 2 is out of range"),
        (((4, 5), [0, 1], [1], None, None), "one value per sliced axis"),
        (((4, 5), [3], [1], None, None), "keeps no values"),
        (((4, 5), [-1], [0], None, None), "keeps no values"),
        (((4,), [True], [2], None, None), "starts must hold integers"),
        (((4,), "0", [2], None, None), "starts must be a sequence"),
        (((0,), [0], [2], None, None), "shape sizes"),
    ],
)
def test_window_names_what_is_wrong(args: tuple[Any, ...], match: str) -> None:
    with pytest.raises(ShapeError, match=f"slice: .*{match}"):
        window(*args)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"starts": (0,), "steps": (1, 1), "sizes": (1, 1)}, "starts needs 2 values"),
        ({"starts": (0, 4), "steps": (1, 1), "sizes": (1, 1)}, "axis 1 of size 4 cannot read 1 value"),
        ({"starts": (0, 1), "steps": (1, 2), "sizes": (1, 3)}, "axis 1 of size 4 cannot read 3"),
        ({"starts": (0, 1), "steps": (1, -1), "sizes": (1, 3)}, "in steps of -1"),
        ({"starts": (0, 1), "steps": (1, 0), "sizes": (1, 1)}, "in steps of 0"),
        ({"starts": (0, 0), "steps": (1, 1), "sizes": (1, 0)}, "cannot read 0"),
    ],
)
def test_problem_checks_every_read_lies_inside(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ShapeError, match=match):
        SliceProblem((2, 4), **kwargs)


@pytest.mark.parametrize(
    "text",
    ["", "8x10", "8x10:s0", "8x10:e1", "8x10:s0:e1:s1", "8x10:s0:e1:b1", "8x10:s0:e1:t", "8x:s0:e1", "8x10:s0:e1:a9"],
)
def test_bad_shape_strings(text: str) -> None:
    with pytest.raises(ShapeError, match="slice"):
        SPEC.parse_problem(text)


@pytest.mark.parametrize(
    "text,collapsed,kept_last",
    [
        ("1x197x2304:s768:e1536:a2", ((197, 2304), (768, 1)), ((197, 2304), (768, 1))),
        ("1x64x80x80:s32:e64:a1", ((204800, 1),), ((2560, 80), (80, 1))),
        ("1x197x768:s0:e1:a1", ((768, 1),), ((768, 1),)),
        ("8x10:s-1:e-11:a1:t-1", ((8, 10), (10, -1)), ((8, 10), (10, -1))),
        ("4x3x2:s-1,-1,-1:e-9,-9,-9:t-1,-1,-1", ((24, -1),), ((12, -2), (2, -1))),  # x reversed: one run back
        ("3x4:s1:e2:a0", ((4, 1),), ((4, 1),)),
        ("1x1:s0:e1", ((1, 1),), ((1, 1),)),
    ],
)
def test_collapse_drops_single_axes_and_merges_continuing_ones(text: str, collapsed: Any, kept_last: Any) -> None:
    problem = SPEC.parse_problem(text)
    assert problem.collapse() == collapsed and problem.collapse(keep_last=True) == kept_last
    # the collapsed walk reads exactly what the window does
    x = np.arange(np.prod(problem.shape)).reshape(problem.shape)
    offsets = np.full((), problem.base)
    for size, stride in collapsed:
        offsets = offsets[..., None] + stride * np.arange(size)
    np.testing.assert_array_equal(x.reshape(-1)[offsets.reshape(-1)], SPEC.reference(problem, [x]).reshape(-1))


def test_identity_and_shape_vector() -> None:
    assert SPEC.parse_problem("5x3:s0:e5").identity and SPEC.parse_problem("5x3:s-100:e100:a1").identity
    assert not SPEC.parse_problem("5x3:s0:e4").identity and not SPEC.parse_problem("5:s-1:e-100:t-1").identity
    assert SPEC.shape_vector(SPEC.parse_problem("1x197x2304:s768:e1536:a2")) == (151296.0, 453888.0, 768.0, 1.0)
    assert SPEC.flops(SPEC.parse_problem("5:s1:e3")) == 0.0


# --- params, constraints, defaults -----------------------------------------------------------------------------


@pytest.mark.parametrize("language", ["wgsl", "glsl"])
def test_every_param_reaches_the_template(language: str) -> None:
    assert_params_reach_template(SPEC, language)


@pytest.mark.parametrize("language", ["wgsl", "glsl"])
@pytest.mark.parametrize("shape", SHAPES)
def test_default_params_always_fit(shape: str, language: str) -> None:
    problem = SPEC.parse_problem(shape)
    for limits in (LIMITS, TINY):
        params = assert_default_fits(SPEC, problem, limits, language)
        render(SPEC, language, problem, params)


def test_default_copies_vec4s_where_they_apply() -> None:
    assert SPEC.default_params(SPEC.parse_problem("1x197x2304:s768:e1536:a2"), LIMITS, "wgsl") == {
        "wg_size": 64,
        "ept": 4,
        "vec4": 1,
    }
    assert SPEC.default_params(SPEC.parse_problem("8x10:s-1:e-11:a1:t-1"), LIMITS, "wgsl")["vec4"] == 0
    # rows of 2 values: one or two per invocation, never idle ones
    assert SPEC.default_params(SPEC.parse_problem("9x4:s0:e2:a1"), LIMITS, "wgsl") == {
        "wg_size": 64,
        "ept": 2,
        "vec4": 0,
    }
    assert SPEC.default_params(SPEC.parse_problem("9x4:s0:e2:a1"), TINY, "wgsl")["wg_size"] == 32
    glsl = SPEC.default_params(SPEC.parse_problem("1x197x2304:s768:e1536:a2"), LIMITS, "glsl")
    assert glsl == {"pack": 4, "in_pack": 4, "square": 0}


def test_constraints_name_the_reason() -> None:
    qkv = SPEC.parse_problem("1x197x2304:s768:e1536:a2")
    base = {"wg_size": 64, "ept": 1, "vec4": 0}
    assert SPEC.constraints(qkv, {**base, "vec4": 1}, LIMITS, "wgsl") is None
    assert "exceeds the device limits" in SPEC.constraints(qkv, {**base, "wg_size": 256}, TINY, "wgsl")
    unaligned = SPEC.parse_problem("1x197x2304:s767:e1535:a2")
    assert "not start on a multiple of 4" in SPEC.constraints(unaligned, {**base, "vec4": 1}, LIMITS, "wgsl")
    strided = SPEC.parse_problem("8x16:s0:e16:a1:t2")
    assert "stride 2, not 1" in SPEC.constraints(strided, {**base, "vec4": 1}, LIMITS, "wgsl")
    odd = SPEC.parse_problem("8x16:s0:e6:a1")
    assert "not a multiple of 4" in SPEC.constraints(odd, {**base, "vec4": 1}, LIMITS, "wgsl")
    assert "idle" in SPEC.constraints(odd, {**base, "ept": 8}, LIMITS, "wgsl")
    many = SPEC.parse_problem("70000x2:s0:e1:a1")
    assert "workgroups per dimension" in SPEC.constraints(many, base, Limits(max_workgroups_per_dim=1000), "wgsl")
    huge = SPEC.parse_problem("33554433x2:s0:e1:a1")  # a 256 MiB input
    assert "storage binding" in SPEC.constraints(huge, base, LIMITS, "wgsl")
    wide = SPEC.parse_problem("2x20000:s1:e19999:a1")
    assert "input: " in SPEC.constraints(wide, {"pack": 1, "in_pack": 1, "square": 0}, LIMITS, "glsl")
    assert "MAX_TEXTURE_SIZE" in SPEC.constraints(wide, {"pack": 4, "in_pack": 4, "square": 0}, LIMITS, "glsl")
    assert SPEC.constraints(wide, {"pack": 4, "in_pack": 4, "square": 1}, LIMITS, "glsl") is None


def test_space_sizes_and_valid_points() -> None:
    assert len(every_config(SPEC, "wgsl")) == SPEC.space_size("wgsl") == 4 * 4 * 2
    assert len(every_config(SPEC, "glsl")) == SPEC.space_size("glsl") == 8
    qkv = SPEC.parse_problem("1x197x2304:s768:e1536:a2")
    assert len(valid_configs(SPEC, qkv, LIMITS, "wgsl")) == 32
    assert {p["vec4"] for p in valid_configs(SPEC, SPEC.parse_problem("8x10:s-1:e-11:a1:t-1"), LIMITS, "wgsl")} == {0}


@pytest.mark.parametrize(
    "bad",
    [
        {"wg_size": "64u; } fn evil() {", "ept": 1, "vec4": 0},
        {"wg_size": 48, "ept": 1, "vec4": 0},
        {"wg_size": 64, "ept": 1, "vec4": True},
        {"wg_size": 64, "ept": 1},
        {"wg_size": 64, "ept": 1, "vec4": 0, "extra": 1},
    ],
)
def test_params_are_validated_before_rendering(bad: dict[str, Any]) -> None:
    with pytest.raises(InvalidParamsError):
        render(SPEC, "wgsl", SPEC.parse_problem("8x16:s0:e8:a1"), bad)


def test_rendered_sources_reflect_params() -> None:
    qkv = SPEC.parse_problem("1x197x2304:s768:e1536:a2")
    vec = render(SPEC, "wgsl", qkv, {"wg_size": 128, "ept": 2, "vec4": 1})
    assert "@workgroup_size(128, 1, 1)" in vec and "var<storage, read> x: array<vec4<f32>>" in vec
    assert "const COLS: u32 = 192u;" in vec and "const BASE: i32 = 192;" in vec and "* (576);" in vec
    assert vec.count("if (c < COLS)") == 2
    scalar = render(SPEC, "wgsl", qkv, {"wg_size": 64, "ept": 8, "vec4": 0})
    assert "array<f32>" in scalar and "const BASE: i32 = 768;" in scalar and scalar.count("if (c < COLS)") == 8
    back = render(SPEC, "wgsl", SPEC.parse_problem("8x10:s-1:e-11:a1:t-1"), {"wg_size": 32, "ept": 1, "vec4": 0})
    assert "const STEP: i32 = -1;" in back and "const BASE: i32 = 9;" in back
    glsl = render(SPEC, "glsl", qkv, {"pack": 4, "in_pack": 4, "square": 1}, target="web")
    assert glsl.startswith("#version 300 es") and "vec_copy=True" in glsl and "kf_coord" in glsl
    lanes = render(SPEC, "glsl", SPEC.parse_problem("8x10:s-1:e-11:a1:t-1"), {"pack": 4, "in_pack": 1, "square": 0})
    assert "vec_copy=False" in lanes and "const int STEP = -1;" in lanes and "load1(base + min(c0 + 3" in lanes


def test_gl_launch_views_the_last_axes() -> None:
    launch = SPEC.gl_launch(SPEC.parse_problem("2x3x8:s1:e5:a2:t2"), {"pack": 4, "in_pack": 1, "square": 0})
    assert (launch.rows, launch.cols) == (6, 2) and launch.samplers == ("X",)
    assert [(t.rows, t.cols, t.pack) for t in (*launch.inputs, *launch.targets)] == [(6, 8, 1), (6, 2, 4)]


def test_device_inputs_check_the_size() -> None:
    problem = SPEC.parse_problem("2x3:s0:e1:a1")
    (x,) = SPEC.device_inputs(problem, {}, [np.arange(6, dtype=np.float64)])
    assert x.shape == (2, 3) and x.dtype == np.float32
    with pytest.raises(ShapeError, match="x has 5 values"):
        SPEC.device_inputs(problem, {}, [np.zeros(5)])


# --- ONNX models ---------------------------------------------------------------------------------------------


def _ints(values: Sequence[int]) -> np.ndarray:
    return np.array(values, np.int64)


def slice_model(
    shape: Sequence[int],
    starts: Sequence[int],
    ends: Sequence[int],
    axes: Sequence[int] | None,
    steps: Sequence[int] | None,
    opset: int,
) -> onnx.ModelProto:
    """Return x -> Slice -> y, attributes before opset 10, constant inputs from it on."""
    if opset < 10:
        assert steps is None
        attrs = {"starts": list(starts), "ends": list(ends)} | ({"axes": list(axes)} if axes is not None else {})
        node = helper.make_node("Slice", ["x"], ["y"], name="sl", **attrs)
        return make_model([node], {"x": shape}, ["y"], opset=opset)
    inits = {"starts": _ints(starts), "ends": _ints(ends)}
    names = ["x", "starts", "ends"]
    if axes is not None or steps is not None:
        inits["axes"] = _ints(axes if axes is not None else range(len(starts)))
        names.append("axes")
    if steps is not None:
        inits["steps"] = _ints(steps)
        names.append("steps")
    node = helper.make_node("Slice", names, ["y"], name="sl")
    return make_model([node], {"x": shape}, ["y"], inits, opset)


def split_model(
    shape: Sequence[int], axis: int, count: int, sizes: Sequence[int] | None, opset: int, num_outputs: bool = False
) -> onnx.ModelProto:
    """Return x -> Split into ``count`` outputs (sizes as the opset spells them), each output -> Relu."""
    outs = [f"p{k}" for k in range(count)]
    attrs: dict[str, Any] = {"axis": axis}
    inputs, inits = ["x"], {}
    if num_outputs:
        attrs["num_outputs"] = count
    elif sizes is not None and opset < 13:
        attrs["split"] = list(sizes)
    elif sizes is not None:
        inputs.append("split")
        inits["split"] = _ints(sizes)
    nodes = [helper.make_node("Split", inputs, outs, name="sp", **attrs)]
    nodes += [helper.make_node("Relu", [o], [f"y{k}"], name=f"relu{k}") for k, o in enumerate(outs)]
    return make_model(nodes, {"x": shape}, [f"y{k}" for k in range(count)], inits, opset)


def qkv_split_model(opset: int = 13, tokens: int = 6, width: int = 16) -> onnx.ModelProto:
    """Return x [1, tokens, width] -> MatMul [width, 3 width] -> Split(3) -> q, k, v -> attention -> y."""
    rng = np.random.default_rng(7)
    # the sizes as each opset spells them: an attribute, a constant input, or num_outputs
    split: dict[str, Any] = {"num_outputs": 3} if opset >= 18 else {"split": [width] * 3} if opset < 13 else {}
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["qkv"], name="proj"),
        helper.make_node("Split", ["qkv", "sizes"] if 13 <= opset < 18 else ["qkv"], ["q", "k", "v"], axis=-1, **split),
        helper.make_node("Mul", ["q", "scale"], ["qs"], name="scale_q"),
        helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 2, 1], name="k_t"),
        helper.make_node("MatMul", ["qs", "kt"], ["att"], name="scores"),
        helper.make_node("Softmax", ["att"], ["p"], axis=-1, name="softmax"),
        helper.make_node("MatMul", ["p", "v"], ["y"], name="mix"),
    ]
    inits = {
        "w": (rng.standard_normal((width, 3 * width)) / np.sqrt(width)).astype(np.float32),
        "scale": np.float32(1 / np.sqrt(width)),
    }
    if 13 <= opset < 18:
        inits["sizes"] = _ints([width] * 3)
    return make_model(nodes, {"x": [1, tokens, width]}, ["y"], inits, opset)


def c2f_model(opset: int = 13, split: str = "Split", channels: int = 8, size: int = 10) -> onnx.ModelProto:
    """Return YOLOv8's C2f block: Conv 1x1 -> two halves (Split, or two Slices) -> Conv 3x3 -> Concat -> Conv."""
    rng = np.random.default_rng(8)
    half = channels // 2

    def weight(m: int, c: int, k: int) -> np.ndarray:
        return (rng.standard_normal((m, c, k, k)) / np.sqrt(c * k * k)).astype(np.float32)

    inits: dict[str, np.ndarray] = {"w1": weight(channels, channels, 1), "w2": weight(half, half, 3)}
    inits["w3"] = weight(channels, channels + half, 1)
    nodes = [helper.make_node("Conv", ["x", "w1"], ["h"], name="cv1")]
    if split == "Split":
        sizes = {"split": [half, half]} if opset < 13 else {}
        if opset >= 13:
            inits["halves"] = _ints([half, half])
        inputs = ["h", "halves"] if opset >= 13 else ["h"]
        nodes.append(helper.make_node("Split", inputs, ["a", "b"], axis=1, name="chunk", **sizes))
    elif opset < 10:  # legacy exports: one Slice per half, attributes
        nodes.append(helper.make_node("Slice", ["h"], ["a"], starts=[0], ends=[half], axes=[1], name="sa"))
        nodes.append(helper.make_node("Slice", ["h"], ["b"], starts=[half], ends=[channels], axes=[1], name="sb"))
    else:
        inits.update(lo=_ints([0]), mid=_ints([half]), hi=_ints([1 << 62]), ch=_ints([1]))
        nodes.append(helper.make_node("Slice", ["h", "lo", "mid", "ch"], ["a"], name="sa"))
        nodes.append(helper.make_node("Slice", ["h", "mid", "hi", "ch"], ["b"], name="sb"))
    nodes += [
        helper.make_node("Conv", ["b", "w2"], ["c"], pads=[1, 1, 1, 1], name="m0"),
        helper.make_node("Relu", ["c"], ["cr"], name="act"),
        helper.make_node("Concat", ["a", "b", "cr"], ["cat"], axis=1, name="cat"),
        helper.make_node("Conv", ["cat", "w3"], ["y"], name="cv2"),
    ]
    return make_model(nodes, {"x": [1, channels, size, size]}, ["y"], inits, opset)


def cls_token_model(opset: int = 13, tokens: int = 5, width: int = 12) -> onnx.ModelProto:
    """Return x [2, tokens, width] -> x[:, 0] (Slice + Squeeze) -> Gemm: a classifier head on the [CLS] token."""
    rng = np.random.default_rng(9)
    nodes = [
        helper.make_node("Slice", ["x", "zero", "one", "one"], ["cls1"], name="cls"),
        helper.make_node("Squeeze", ["cls1", "one"], ["cls"], name="squeeze"),
        helper.make_node("Gemm", ["cls", "w"], ["y"], transB=1, name="head"),
    ]
    inits = {"zero": _ints([0]), "one": _ints([1]), "w": rng.standard_normal((3, width)).astype(np.float32)}
    return make_model(nodes, {"x": [2, tokens, width]}, ["y"], inits, opset)


SLICE_CASES = [
    ((4, 6, 5), [1], [3], [1], None),
    ((4, 6, 5), [-3, 1], [1000, -1], [-1, 0], None),
    ((4, 6, 5), [-1, 1], [-100, 5], [0, -1], [-2, 3]),  # reversed with a step, a negative axis
    ((3, 7), [-1000, 2], [1000, -1], None, [1, 2]),  # starts and ends beyond the bounds clamp
    ((2, 3, 4, 5, 6), [5, -1], [0, -1000], [4, 1], [-2, -1]),
    ((9,), [8], [-10], [0], [-3]),
]


# opset 9's attribute form has no steps: it runs the cases without any
SLICE_OPSETS = [(opset, case) for opset in (9, 10, 13) for case in SLICE_CASES if opset >= 10 or case[4] is None]


@pytest.mark.parametrize(("opset", "case"), SLICE_OPSETS)
def test_slice_of_runtime_data_matches_onnxruntime(opset: int, case: tuple[Any, ...]) -> None:
    graph = check_numerics(slice_model(*case, opset))
    assert ops(graph) == ["slice"] and graph.nodes[0].origin.startswith(f"Slice node 'sl' (opset {opset})")


@pytest.mark.parametrize("opset", [9, 13])
def test_slice_of_the_whole_tensor_is_an_alias(opset: int) -> None:
    graph = check_numerics(slice_model((3, 4), [0, -9], [3, 99], None, None, opset))
    assert ops(graph) == ["reshape"]  # only the output binding: no kernel


@pytest.mark.parametrize(
    "opset,axis,count,sizes,num_outputs",
    [
        (11, 1, 3, [2, 4, 1], False),
        (11, -1, 2, None, False),  # equal parts
        (13, 0, 3, [1, 2, 1], False),
        (13, 2, 4, None, False),
        (18, 1, 3, None, True),  # 7 into ceil(7 / 3) = 3, 3, and 1
        (18, -1, 4, None, True),  # 8 into 2, 2, 2, 2
        (18, 0, 2, [3, 1], False),
    ],
)
def test_split_of_runtime_data_matches_onnxruntime(
    opset: int, axis: int, count: int, sizes: list[int] | None, num_outputs: bool
) -> None:
    graph = check_numerics(split_model((4, 7, 8), axis, count, sizes, opset, num_outputs))
    assert ops(graph).count("slice") == count and ops(graph).count("elementwise") == count


def test_an_empty_split_part_is_skipped_by_concat() -> None:
    nodes = [
        helper.make_node("Split", ["x", "sizes"], ["a", "b", "c"], axis=-1, name="sp"),
        helper.make_node("Concat", ["c", "b", "a"], ["y"], axis=2, name="cat"),
    ]
    graph = check_numerics(make_model(nodes, {"x": [2, 3, 9]}, ["y"], {"sizes": _ints([2, 0, 7])}))
    assert ops(graph) == ["slice", "slice", "concat"]


def test_split_outputs_nothing_reads_emit_nothing() -> None:
    nodes = [helper.make_node("Split", ["x"], ["a", "b", "c"], axis=1, num_outputs=3, name="sp")]
    nodes.append(helper.make_node("Relu", ["b"], ["y"], name="relu"))
    graph = import_model(make_model(nodes, {"x": [2, 9]}, ["y"], opset=18))
    assert ops(graph) == ["slice", "elementwise"] and graph.nodes[0].attrs["starts"] == (3,)
    # a Split into one part is the tensor itself
    one = [helper.make_node("Split", ["x"], ["a"], axis=0, name="sp"), helper.make_node("Relu", ["a"], ["y"])]
    assert ops(check_numerics(make_model(one, {"x": [2, 9]}, ["y"]))) == ["elementwise"]


def test_constant_split_and_slice_still_fold() -> None:
    nodes = [
        helper.make_node("Split", ["k", "sizes"], ["k0", "k1"], axis=0, name="sp"),
        helper.make_node("Slice", ["k1", "st", "en"], ["k1s"], name="sl"),
        helper.make_node("Add", ["x", "k0"], ["a"]),
        helper.make_node("Mul", ["a", "k1s"], ["y"]),
    ]
    inits = {"k": np.arange(10, dtype=np.float32).reshape(5, 2), "sizes": _ints([1, 4])}
    inits |= {"st": _ints([-1]), "en": _ints([1000])}
    graph = check_numerics(make_model(nodes, {"x": [1, 2]}, ["y"], inits))
    assert ops(graph) == ["elementwise", "elementwise"]  # k0 and k1s became constants


@pytest.mark.parametrize("opset", [11, 13, 18])
def test_qkv_split_imports_as_three_slices(opset: int) -> None:
    graph = check_numerics(qkv_split_model(opset))
    slices = [n for n in graph.nodes if n.op == "slice"]
    assert [n.attrs["starts"] for n in slices] == [(0,), (16,), (32,)]
    assert {(op, SPEC.problem_key(p)) for op, p in model_kernels(qkv_split_model(opset)) if op == "slice"} == {
        ("slice", "1x6x48:s0:e16:a2"),
        ("slice", "1x6x48:s16:e32:a2"),
        ("slice", "1x6x48:s32:e48:a2"),
    }


@pytest.mark.parametrize(("opset", "split"), [(11, "Split"), (13, "Split"), (9, "Slice"), (13, "Slice")])
def test_c2f_block_imports_and_matches_onnxruntime(opset: int, split: str) -> None:
    graph = check_numerics(c2f_model(opset, split))
    assert ops(graph).count("slice") == 2 and ops(graph).count("conv2d") == 3 and "concat" in ops(graph)


def test_cls_token_slice_and_squeeze() -> None:
    graph = check_numerics(cls_token_model())
    assert ops(graph)[:2] == ["slice", "reshape"]


# --- errors --------------------------------------------------------------------------------------------------


def test_runtime_starts_and_split_sizes_are_named() -> None:
    # integers computed from a runtime tensor (graph inputs are float32 only)
    nodes = [
        helper.make_node("Cast", ["s"], ["starts"], to=TensorProto.INT64),
        helper.make_node("Cast", ["s2"], ["sizes"], to=TensorProto.INT64),
        helper.make_node("Slice", ["x", "starts", "ends"], ["a"], name="sl"),
        helper.make_node("Split", ["a", "sizes"], ["b", "c"], axis=1, name="sp"),
        helper.make_node("Add", ["b", "c"], ["y"]),
    ]
    model = make_model(nodes, {"x": [4, 6], "s": [1], "s2": [2]}, ["y"], {"ends": _ints([3])})
    with pytest.raises(UnsupportedModelError) as info:
        import_model(model)
    lines = str(info.value).splitlines()[1:]
    assert lines == [
        "Slice node 'sl' (opset 13): input 1 ('starts') needs a runtime value; only a constant is supported",
        "Split node 'sp' (opset 13): input 1 ('sizes') needs a runtime value; only a constant is supported",
    ]


@pytest.mark.parametrize(
    "node,opset,match",
    [
        (helper.make_node("Split", ["x"], ["a", "b"], axis=1, split=[2, 2], name="sp"), 11, r"split sizes \[2, 2\]"),
        (helper.make_node("Split", ["x"], ["a", "b"], axis=0, name="sp"), 13, "does not split into 2 equal parts"),
        (helper.make_node("Split", ["x"], ["a", "b"], axis=2, name="sp"), 13, "axis 2 is out of range"),
        (helper.make_node("Split", ["x"], ["a", "b"], axis=1, num_outputs=3, name="sp"), 18, "num_outputs=3"),
    ],
)
def test_bad_splits_name_the_node(node: onnx.NodeProto, opset: int, match: str) -> None:
    nodes = [node, helper.make_node("Add", ["a", "b"], ["y"])]
    with pytest.raises(GraphError, match=rf"Split node 'sp' \(opset {opset}\): .*{match}"):
        import_model(make_model(nodes, {"x": [3, 5]}, ["y"], opset=opset))


def test_bad_slices_name_the_node() -> None:
    with pytest.raises(GraphError, match=r"Slice node 'sl' \(opset 13\): slice: step 0"):
        import_model(slice_model((3, 4), [0], [2], [1], [0], 13))
    # a window of no values is no error: an empty constant (tests/null/test_onnx_empty.py)
    empty = import_model(slice_model((3, 4), [3], [1], [1], None, 13)).value("y").data
    assert empty is not None and empty.shape == (3, 0)
    with pytest.raises(GraphError, match=r"Slice node 'sl' \(opset 10\): slice: axis 5 is out of range"):
        import_model(slice_model((3, 4), [0], [1], [5], None, 10))


# --- export --------------------------------------------------------------------------------------------------


def test_export_writes_slice_steps_for_both_languages(tmp_path: Path) -> None:
    export(qkv_split_model(), tmp_path / "bundle", db=REPO_DB)
    manifest = json.loads((tmp_path / "bundle" / "manifest.json").read_text())
    languages = set()
    for target in manifest["targets"]:
        steps = [s for s in target["plan"]["steps"] if s["op"] == "slice"]
        assert len(steps) == 3, target["id"]
        languages.add(target["language"])
    assert languages == {"wgsl", "glsl"}


def test_every_wgsl_and_glsl_config_renders() -> None:
    for shape, language in itertools.product(SHAPES[:6], ("wgsl", "glsl")):
        problem = SPEC.parse_problem(shape)
        for params in valid_configs(SPEC, problem, LIMITS, language):
            assert "{{" not in render(SPEC, language, problem, params)
