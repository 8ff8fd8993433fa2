"""Gather spec, templates, ONNX import and export: no device needed."""

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
from kernelforge.graph.onnx_import import import_model
from kernelforge.graph.prepare import model_kernels
from kernelforge.graph.reference import run_graph
from kernelforge.ops import Limits, get_op
from kernelforge.ops.gather import MAX_INDEX, GatherProblem, source_rows
from kernelforge.templates import render
from kernelforge.testing.ops import assert_default_fits, assert_params_reach_template, every_config, valid_configs

SPEC = get_op("gather")
LIMITS = Limits()
TINY = Limits(max_invocations=32, max_wg_x=32, max_wg_y=32, max_workgroup_storage=1024, max_texture_size=2048)
SHAPES = [
    "5:is",  # a scalar out of a vector: a rank-0 output
    "1000x64:i2x7",  # an embedding lookup
    "30522x384:i8x128",  # BERT's token embedding table
    "1x128x768:is:a1",  # the [CLS] pick
    "2x128x3x4x64:i1:a2",  # a q/k/v select
    "4x5x6:i2x3:a-1",  # along the last axis: blocks of one value
    "3x10x5:i4:a1",
    "7x3:i9x2x2",
    "70000x3:i5",
]
REPO_DB = Path(__file__).resolve().parents[2] / "tuning_db"


# --- models (shared with the device and web tests) ---------------------------------------------------------------


def _model(
    nodes: Sequence[onnx.NodeProto],
    inputs: dict[str, Sequence[int]],
    outputs: dict[str, Sequence[int]],
    inits: dict[str, np.ndarray],
    opset: int = 13,
) -> onnx.ModelProto:
    graph = helper.make_graph(
        list(nodes),
        "gather",
        [helper.make_tensor_value_info(k, TensorProto.FLOAT, list(s)) for k, s in inputs.items()],
        [helper.make_tensor_value_info(k, TensorProto.FLOAT, list(s)) for k, s in outputs.items()],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def embedding_model(ids_in_graph: bool, opset: int = 13) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """Return a [1000, 64] table lookup plus a position add, and its feeds.

    ``ids_in_graph``: the ids [2, 7] are a float input cast to INT64 in the graph (a runtime gather); otherwise
    they are an INT64 initializer and the lookup folds at import.
    """
    rng = np.random.default_rng(11)
    table = rng.standard_normal((1000, 64)).astype(np.float32)
    ids = np.array([[3, 999, -1, 0, 17, 5, 5], [2, 7, 100, -1000, 4, 8, 9]])
    pos = rng.standard_normal((2, 7, 64)).astype(np.float32)
    inputs: dict[str, Sequence[int]] = {"pos": (2, 7, 64)}
    feeds = {"pos": pos}
    inits: dict[str, np.ndarray] = {"table": table}
    nodes = [helper.make_node("Gather", ["table", "ids"], ["emb"], name="embed")]
    if ids_in_graph:
        inputs["ids_f"] = (2, 7)
        feeds["ids_f"] = ids.astype(np.float32)
        nodes.insert(0, helper.make_node("Cast", ["ids_f"], ["ids"], to=TensorProto.INT64, name="cast"))
    else:
        inits["ids"] = ids.astype(np.int64)
    nodes.append(helper.make_node("Add", ["emb", "pos"], ["y"], name="add"))
    return _model(nodes, inputs, {"y": (2, 7, 64)}, inits, opset), feeds


def cls_gemm_model(opset: int = 13) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """Return x [2, 8, 16] -> Relu -> Gather(index 0 as a scalar, axis=1) -> Gemm [16, 5] + bias, and its feeds."""
    rng = np.random.default_rng(12)
    nodes = [
        helper.make_node("Relu", ["x"], ["r"], name="relu"),
        helper.make_node("Gather", ["r", "zero"], ["cls"], axis=1, name="cls"),
        helper.make_node("Gemm", ["cls", "w", "b"], ["y"], name="head"),
    ]
    inits = {
        "zero": np.array(0, np.int64),
        "w": rng.standard_normal((16, 5)).astype(np.float32),
        "b": rng.standard_normal(5).astype(np.float32),
    }
    feeds = {"x": rng.standard_normal((2, 8, 16)).astype(np.float32)}
    return _model(nodes, {"x": (2, 8, 16)}, {"y": (2, 5)}, inits, opset), feeds


def runtime_indices_model(opset: int = 13) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """Return Gather(x [3, 4, 10], Cast(idx [2, 3]) to INT64, axis=-1) and Gather(x, [2, -1], axis=-2), and feeds.

    Both data and indices are runtime tensors; the indices are negative and positive, truncated from floats.
    """
    nodes = [
        helper.make_node("Cast", ["idx"], ["ids"], to=TensorProto.INT64, name="cast"),
        helper.make_node("Gather", ["x", "ids"], ["y"], axis=-1, name="last"),
        helper.make_node("Gather", ["x", "rows"], ["z"], axis=-2, name="rows"),
    ]
    rng = np.random.default_rng(13)
    feeds = {
        "x": rng.standard_normal((3, 4, 10)).astype(np.float32),
        "idx": np.array([[9.7, -10.0, 0.2], [-1.5, 4.0, 3.9]], np.float32),
    }
    inits = {"rows": np.array([2, -1], np.int64)}
    outputs = {"y": (3, 4, 2, 3), "z": (3, 2, 10)}
    return _model(nodes, {"x": (3, 4, 10), "idx": (2, 3)}, outputs, inits, opset), feeds


def ort_run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Return ONNX Runtime's outputs by name."""
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds), strict=True))


# --- problems and keys ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text,data,indices,axis,out",
    [
        ("30522x384:i8x128", (30522, 384), (8, 128), 0, (8, 128, 384)),
        ("1x128x768:is:a1", (1, 128, 768), (), 1, (1, 768)),
        ("2x3x4:i5:a-1", (2, 3, 4), (5,), 2, (2, 3, 5)),
        (" 6:I2x2:A0 ", (6,), (2, 2), 0, (2, 2)),
        ("5:is", (5,), (), 0, ()),
    ],
)
def test_parse_and_key_round_trip(text, data, indices, axis, out):
    problem = SPEC.parse_problem(text)
    assert (problem.data, problem.indices, problem.axis) == (data, indices, axis)
    assert SPEC.output_shape(problem) == out
    key = SPEC.problem_key(problem)
    assert SPEC.parse_problem(key) == problem and SPEC.problem_key(SPEC.parse_problem(key)) == key
    assert "," not in key and ";" not in key  # the CLI splits --shape lists on both


def test_key_always_names_indices_and_axis():
    assert SPEC.problem_key(GatherProblem((10, 4), (3,))) == "10x4:i3:a0"
    assert SPEC.problem_key(GatherProblem((2, 9, 4), (), -2)) == "2x9x4:is:a1"


@pytest.mark.parametrize(
    "text", ["", "10x4", "10x4:i", "10x4:i0", "10x4:i3:a2", "10x4:i3:a-3", "10x4:ix3", "10x4:i3:b1", "10x4:is:a"]
)
def test_bad_shape_strings(text):
    with pytest.raises(ShapeError, match="gather"):
        SPEC.parse_problem(text)


@pytest.mark.parametrize(
    "kwargs,field",
    [
        ({"data": (), "indices": (1,)}, "data rank"),
        ({"data": (4, 0), "indices": (1,)}, "data sizes"),
        ({"data": (4,), "indices": (0,)}, "indices sizes"),
        ({"data": (4,), "indices": "3"}, "indices must be a sequence"),
        ({"data": (4, 3), "indices": (2,), "axis": 2}, "axis"),
        ({"data": (4, 3), "indices": (2,), "axis": True}, "axis"),
        ({"data": (2,) * 5, "indices": (1,) * 5}, "output rank 9"),
        ({"data": (MAX_INDEX + 1,), "indices": (1,)}, "float32 indices address at most"),
    ],
)
def test_problem_validation_names_op_and_field(kwargs, field):
    with pytest.raises(ShapeError, match=f"gather: .*{field}"):
        GatherProblem(**kwargs)


def test_view_of_the_problem():
    problem = SPEC.parse_problem("2x9x3x4:i5x2:a1")
    assert (problem.outer, problem.dim, problem.count, problem.inner) == (2, 9, 10, 12)
    assert (problem.rows, problem.size) == (20, 240)
    assert SPEC.shape_vector(problem) == (2.0, 9.0, 10.0, 12.0) and SPEC.flops(problem) == 0.0
    assert SPEC.launch(problem, {"wg": 32, "ept": 2, "vec_width": 4}) == SPEC.launch(
        problem, {"wg": 64, "ept": 1, "vec_width": 4}
    )
    assert SPEC.launch(problem, {"wg": 32, "ept": 1, "vec_width": 4}).uniforms == (60, 0, 0, 0)


# --- graph nodes and ONNX attributes ---------------------------------------------------------------------------


def test_from_node_and_lowering():
    call = lower("gather", [(1000, 64), (2, 7)], {"axis": 0}, ["table", "ids"])
    assert call.inputs == ("table", "ids") and call.problem == GatherProblem((1000, 64), (2, 7), 0)
    assert SPEC.from_node([(2, 8, 16), ()], {"axis": -2}) == GatherProblem((2, 8, 16), (), 1)
    with pytest.raises(ShapeError, match="input 1 is required"):
        SPEC.from_node([(4, 8)], {"axis": 0})
    with pytest.raises(KeyError):
        SPEC.from_node([(4, 8), (2,)], {})


def test_from_onnx_defaults_and_checks_the_axis():
    assert SPEC.from_onnx("Gather", 13, {}) == {"axis": 0}
    assert SPEC.from_onnx("Gather", 11, {"axis": -1}) == {"axis": -1}
    with pytest.raises(ValueError, match=r"axis=1\.5 is not an integer"):
        SPEC.from_onnx("Gather", 13, {"axis": 1.5})


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


def test_defaults_copy_vec4s_and_texels_where_they_can():
    assert SPEC.default_params(SPEC.parse_problem("1000x64:i2x7"), LIMITS, "wgsl")["vec_width"] == 4
    assert SPEC.default_params(SPEC.parse_problem("4x5x6:i2x3:a-1"), LIMITS, "wgsl")["vec_width"] == 1
    assert SPEC.default_params(SPEC.parse_problem("1000x64:i2x7"), LIMITS, "glsl") == {
        "pack": 4,
        "in_pack": 4,
        "square": 0,
    }
    # a 30522-row table is too tall for a row-aligned texture: wrapped square-ish
    assert SPEC.default_params(SPEC.parse_problem("30522x384:i8x128"), LIMITS, "glsl")["square"] == 1


def test_constraints_name_the_reason():
    problem = SPEC.parse_problem("100x6:i5")
    base = {"wg": 64, "ept": 1, "vec_width": 1}
    assert SPEC.constraints(problem, base, LIMITS, "wgsl") is None
    assert "multiple of 4 (it is 6)" in SPEC.constraints(problem, {**base, "vec_width": 4}, LIMITS, "wgsl")
    assert "workgroup of 256" in SPEC.constraints(problem, {**base, "wg": 256}, Limits(max_invocations=128), "wgsl")
    many = SPEC.parse_problem("10x3:i70000x10")
    assert "workgroups per dimension" in SPEC.constraints(
        many, {**base, "wg": 32}, Limits(max_workgroups_per_dim=1000), "wgsl"
    )
    huge = SPEC.parse_problem("1x40000000:i1:a0")
    assert "data: " in SPEC.constraints(huge, {**base, "wg": 256, "ept": 8}, LIMITS, "wgsl")
    wide = SPEC.parse_problem("1000x1:i40000000")
    assert "output: " in SPEC.constraints(wide, {**base, "wg": 256, "ept": 8}, LIMITS, "wgsl")
    table = SPEC.parse_problem("30522x384:i8x128")
    assert "data: " in SPEC.constraints(table, {"pack": 4, "in_pack": 4, "square": 0}, LIMITS, "glsl")
    assert SPEC.constraints(table, {"pack": 4, "in_pack": 4, "square": 1}, LIMITS, "glsl") is None
    row = SPEC.parse_problem("2x16000:i3")  # rows of 16000: 4000 RGBA texels fit, 16000 R32F ones do not
    assert "output: " in SPEC.constraints(row, {"pack": 1, "in_pack": 4, "square": 0}, LIMITS, "glsl")


def test_space_has_valid_points_in_both_languages():
    problem = SPEC.parse_problem("1000x64:i2x7")
    assert len(every_config(SPEC, "wgsl")) == SPEC.space_size("wgsl") == 4 * 4 * 2
    assert len(every_config(SPEC, "glsl")) == SPEC.space_size("glsl") == 8
    for language in ("wgsl", "glsl"):
        assert len(valid_configs(SPEC, problem, LIMITS, language)) == SPEC.space_size(language)
    # blocks of one value: scalars only
    odd = SPEC.parse_problem("4x5x6:i2x3:a-1")
    assert {p["vec_width"] for p in valid_configs(SPEC, odd, LIMITS, "wgsl")} == {1}


@pytest.mark.parametrize(
    "bad",
    [
        {"wg": "64u; } fn evil() {", "ept": 1, "vec_width": 1},
        {"wg": 48, "ept": 1, "vec_width": 1},
        {"wg": 64, "ept": 1, "vec_width": True},
        {"wg": 64, "ept": 1},
        {"wg": 64, "ept": 1, "vec_width": 1, "extra": 1},
    ],
)
def test_params_are_validated_before_rendering(bad):
    with pytest.raises(InvalidParamsError):
        render(SPEC, "wgsl", SPEC.parse_problem("100x8:i5"), bad)


def test_rendered_sources_reflect_params():
    problem = SPEC.parse_problem("3x1000x64:i2x7:a1")
    vec = render(SPEC, "wgsl", problem, {"wg": 128, "ept": 4, "vec_width": 4})
    assert "@workgroup_size(128, 1, 1)" in vec and "array<vec4<f32>>" in vec and vec.count("y[base +") == 4
    assert "const INNER: u32 = 16u;" in vec and "const K: u32 = 14u;" in vec and "const DIM: i32 = 1000;" in vec
    assert "const LO: f32 = -1000.0;" in vec and "const HI: f32 = 999.0;" in vec
    assert "@binding(2) var<storage, read> indices: array<f32>;" in vec and "@binding(3)" in vec
    scalar = render(SPEC, "wgsl", problem, {"wg": 32, "ept": 1, "vec_width": 1})
    assert "array<vec4" not in scalar and "const INNER: u32 = 64u;" in scalar
    aligned = render(SPEC, "glsl", problem, {"pack": 4, "in_pack": 4, "square": 0}, target="web")
    assert aligned.startswith("#version 300 es") and "aligned=True" in aligned and "load1" not in aligned
    assert "clamp(v, -1000.0, 999.0)" in aligned and "const int ROWS = 42;" in aligned
    lanes = render(SPEC, "glsl", problem, {"pack": 4, "in_pack": 1, "square": 1})
    assert "float load1(" in lanes and ".r;" in lanes and "kf_coord" in lanes and "min(c0 + 3, INNER - 1)" in lanes
    single = render(SPEC, "glsl", problem, {"pack": 1, "in_pack": 4, "square": 0})
    assert "out float o0;" in single and "[c % 4]" in single


def test_gl_launch_stores_indices_like_a_model_input():
    launch = SPEC.gl_launch(SPEC.parse_problem("3x10x5:i4x2:a1"), {"pack": 1, "in_pack": 4, "square": 0})
    assert launch.samplers == ("X", "I") and (launch.rows, launch.cols) == (24, 5)
    data, indices = launch.inputs
    assert (data.rows, data.cols, data.pack, data.square) == (30, 5, 4, False)
    assert (indices.rows, indices.cols, indices.pack, indices.square) == (1, 8, 4, True)
    (target,) = launch.targets
    assert (target.rows, target.cols, target.pack, target.square) == (24, 5, 1, False)


def test_device_inputs_are_row_major_views():
    problem = SPEC.parse_problem("2x9x3:i4x2:a1")
    data, indices = SPEC.make_inputs(problem, np.random.default_rng(0))
    views = SPEC.device_inputs(problem, {}, [data, indices])
    assert [v.shape for v in views] == [(18, 3), (8,)] and all(v.dtype == np.float32 for v in views)
    scalar = SPEC.parse_problem("5:is")
    assert [v.shape for v in SPEC.device_inputs(scalar, {}, [np.ones(5), np.float32(2)])] == [(5, 1), (1,)]
    with pytest.raises(ShapeError, match="indices has 3 values"):
        SPEC.device_inputs(problem, {}, [data, np.zeros(3)])
    with pytest.raises(ShapeError, match="2 inputs expected"):
        SPEC.device_inputs(problem, {}, [data])


# --- the reference ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES[:-2])
def test_made_inputs_and_reference_match_np_take(shape):
    problem = SPEC.parse_problem(shape)
    data, indices = SPEC.make_inputs(problem, np.random.default_rng(1))
    assert data.shape == problem.data and indices.shape == problem.indices and indices.dtype == np.float32
    assert indices.min() >= -problem.dim and indices.max() < problem.dim and np.all(indices == np.trunc(indices))
    want = np.take(data, indices.astype(np.int64), axis=problem.axis)  # numpy wraps negatives like ONNX
    got = SPEC.reference(problem, [data, indices])
    assert got.shape == SPEC.output_shape(problem)
    np.testing.assert_array_equal(got, want)


def test_reference_wraps_negatives_and_clamps_out_of_range_indices():
    data = np.arange(12, dtype=np.float32).reshape(4, 3)
    indices = np.array([-1, -4, 3, 4, 100, -5, -1e30, 1e30, 2.9, -0.5, -1.5], np.float32)
    rows = [3, 0, 3, 3, 3, 0, 0, 3, 2, 0, 3]
    np.testing.assert_array_equal(source_rows(indices, 4), rows)
    got = SPEC.reference(GatherProblem((4, 3), (11,), 0), [data, indices])
    np.testing.assert_array_equal(got, data[rows])
    along = SPEC.reference(GatherProblem((4, 3), (), -1), [data, np.float32(-1)])
    np.testing.assert_array_equal(along, data[:, 2])


def test_reference_matches_onnx_reference_evaluator():
    model, feeds = runtime_indices_model()
    want = ReferenceEvaluator(model).run(None, feeds)
    x, ids = feeds["x"], np.trunc(feeds["idx"])
    np.testing.assert_array_equal(SPEC.reference(GatherProblem((3, 4, 10), (2, 3), -1), [x, ids]), want[0])
    rows = np.array([2, -1], np.float32)
    np.testing.assert_array_equal(SPEC.reference(GatherProblem((3, 4, 10), (2,), -2), [x, rows]), want[1])


# --- ONNX import and export ------------------------------------------------------------------------------------


@pytest.mark.parametrize("opset", [11, 13])
def test_runtime_ids_import_as_one_gather_and_match_onnxruntime(opset):
    model, feeds = embedding_model(ids_in_graph=True, opset=opset)
    graph = import_model(model)
    assert [n.op for n in graph.nodes] == ["elementwise", "gather", "elementwise"]
    node = graph.nodes[1]
    assert node.attrs == {"axis": 0} and node.origin.startswith("Gather node 'embed'")
    assert graph.value(node.inputs[0]).shape == (1000, 64) and graph.value(node.inputs[0]).is_const
    np.testing.assert_allclose(run_graph(graph, feeds)["y"], ort_run(model, feeds)["y"], rtol=1e-6, atol=1e-6)
    assert [(op, SPEC.problem_key(p)) for op, p in model_kernels(model) if op == "gather"] == [
        ("gather", "1000x64:i2x7:a0")
    ]


def test_a_gather_of_constants_still_folds():
    model, feeds = embedding_model(ids_in_graph=False)
    graph = import_model(model)
    assert [n.op for n in graph.nodes] == ["elementwise"]
    np.testing.assert_allclose(run_graph(graph, feeds)["y"], ort_run(model, feeds)["y"], rtol=1e-6, atol=1e-6)


def test_scalar_index_drops_the_axis_and_feeds_a_gemm():
    model, feeds = cls_gemm_model()
    graph = import_model(model)
    # the scalar index is a 0-d constant: the gather itself drops the axis
    assert [n.op for n in graph.nodes] == ["elementwise", "gather", "gemm"]
    gather = graph.nodes[1]
    assert graph.value(gather.inputs[1]).shape == () and graph.value(gather.output).shape == (2, 16)
    np.testing.assert_allclose(run_graph(graph, feeds)["y"], ort_run(model, feeds)["y"], rtol=1e-5, atol=1e-5)


def test_runtime_data_and_indices_match_onnxruntime():
    model, feeds = runtime_indices_model()
    graph = import_model(model)
    assert [n.op for n in graph.nodes] == ["elementwise", "gather", "gather"]
    assert [n.attrs["axis"] for n in graph.nodes[1:]] == [2, 1]  # normalised at import
    got, want = run_graph(graph, feeds), ort_run(model, feeds)
    for name in ("y", "z"):
        np.testing.assert_array_equal(got[name], want[name])


def test_out_of_range_constant_index_fails_at_import_naming_the_node():
    model, _ = cls_gemm_model()
    model.graph.initializer[0].CopyFrom(numpy_helper.from_array(np.array(8, np.int64), "zero"))
    with pytest.raises(GraphError, match=r"Gather node 'cls' .*index 8 of 'zero' is out of range \[-8, 7\]"):
        import_model(model)
    bad_axis, _ = cls_gemm_model()
    bad_axis.graph.node[1].attribute[0].i = 3
    with pytest.raises(GraphError, match=r"Gather node 'cls' .*axis 3 is out of range for rank 3"):
        import_model(bad_axis)


def test_export_writes_gather_steps_for_both_languages(tmp_path):
    model, _ = cls_gemm_model()
    export(model, tmp_path / "bundle", db=REPO_DB)
    manifest = json.loads((tmp_path / "bundle" / "manifest.json").read_text())
    languages = set()
    for target in manifest["targets"]:
        (step,) = [s for s in target["plan"]["steps"] if s["op"] == "gather"]
        # the scalar index makes two IR nodes (gather, then a view without the axis)
        assert step["node"] == "cls" and step["source"] != "tuned", target["id"]  # never tuned for this shape
        shader = manifest["shaders"][step["shader"]]
        assert ("const int DIM = 8;" if target["language"] == "glsl" else "const DIM: i32 = 8;") in shader
        languages.add(target["language"])
    assert languages == {"wgsl", "glsl"}
