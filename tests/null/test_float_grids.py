"""Rounding onto the float8, float4e2m1 and float8e8m0 grids inside a graph, on the numpy interpreter of the IR.

The programs of :mod:`kernelforge.graph.float_grids` are checked against ``ml_dtypes`` (float8, float4) and
:func:`kernelforge.graph.dtypes.to_e8m0` (float8e8m0), itself checked against ONNX's reference where the
spec's table and the reference agree; ``tests/device/test_float_grids.py`` runs the same programs on the GPUs.
"""

from __future__ import annotations

from pathlib import Path

import ml_dtypes
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from kernelforge.errors import ExportError
from kernelforge.export import export
from kernelforge.graph.dtypes import E8M0_MIN, NARROW, NARROW_ELEMS, ROUND_MODES, cast_array, to_e8m0
from kernelforge.graph.edges import from_compute
from kernelforge.graph.float_grids import GRIDS
from kernelforge.graph.onnx_import import UnsupportedModelError, import_model
from kernelforge.graph.passes import optimize
from kernelforge.graph.reference import run_graph
from kernelforge.ops import _expr

REPO_DB = Path(__file__).resolve().parents[2] / "tuning_db"
ELEM = {name: elem for elem, name in NARROW_ELEMS.items()}


def grid_values(name: str) -> np.ndarray:
    """The finite values of a float8/float4 type, ascending, as float64."""
    bits = 4 if name == "float4_e2m1fn" else 8
    values = np.arange(2**bits, dtype=np.uint8).view(NARROW[name]).astype(np.float64)
    return np.unique(values[np.isfinite(values)])


def grid_probes(name: str) -> np.ndarray:
    """Every finite value of a float8/float4 type, each tie between neighbours and 1 and 2 ULP on both sides of
    it, values beyond the largest (its overflow tie too), infinities, NaN and values far below the smallest."""
    grid = grid_values(name)
    ties = ((grid[1:] + grid[:-1]) / 2).astype(np.float32)  # exact in float32
    near = [ties]
    for toward in (np.inf, -np.inf):
        once = np.nextafter(ties, np.float32(toward))
        near += [once, np.nextafter(once, np.float32(toward))]
    top = float(grid[-1])
    step = top - float(grid[-2])
    beyond = [top + step / 2, top + step, 2 * top, 1e30, 3e38, np.inf, np.nan, 1e-30, 1e-40]
    beyond = np.float32(beyond + [-b for b in beyond])
    return np.concatenate([grid.astype(np.float32), *near, beyond])


def e8m0_probes() -> np.ndarray:
    """Every float8e8m0 value that is a float32 normal, the ties halfway in each binade and their neighbours,
    0, negatives, infinities, NaN and the largest float32 values."""
    powers = np.ldexp(np.float32(1), np.arange(-126, 128)).astype(np.float32)
    ties = (powers * np.float32(1.5)).astype(np.float32)
    near = [np.nextafter(v, np.float32(t)) for v in (powers, ties) for t in (0, np.inf)]
    extra = np.float32([0, -0.0, np.inf, -np.inf, np.nan, 3e38, 3.4028235e38, 1.7e38, -3.0, -0.3])
    x = np.concatenate([powers, ties, *near, -powers[::9], extra])
    return x[~(np.abs(x) < 2.0**-126) | (x == 0)]  # float32 subnormals apart: a device may flush them


def cast_model(to: int, n: int, **attrs: object) -> onnx.ModelProto:
    """x (float) -> Cast(to) -> Cast(float) -> y: the rounding happens inside the graph, not at its output."""
    nodes = [helper.make_node("Cast", ["x"], ["c"], to=to, **attrs), helper.make_node("Cast", ["c"], ["y"], to=1)]
    graph = helper.make_graph(
        nodes,
        "cast",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [n])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [n])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 25)])


def expected(name: str, x: np.ndarray, saturate: bool) -> np.ndarray:
    """ml_dtypes' rounding (ONNX's Cast); float4e2m1 has no NaN and the graph gives 0 for one, as ml_dtypes."""
    with np.errstate(all="ignore"):
        want = cast_array(x, NARROW[name], saturate).astype(np.float32)
    return np.where(np.isnan(x), 0, want) if name == "float4_e2m1fn" else want


def same(a: np.ndarray, b: np.ndarray, signed: bool = True) -> bool:
    """Equal as float64, NaN where NaN, and zeros and NaNs of one sign (unless not ``signed``: the ``fnuz``
    types have one zero and one NaN)."""
    x, y = a.astype(np.float64), b.astype(np.float64)
    signs = (np.signbit(x) == np.signbit(y)) | (not signed and ((x == 0) | np.isnan(x)))
    return bool(np.array_equal(x, y, equal_nan=True) and np.all(signs))


def test_the_grids_are_the_types_of_ml_dtypes() -> None:
    assert sorted(GRIDS) == sorted(n for n in NARROW if n.startswith(("float8", "float4")) and "e8m0" not in n)
    e4m3, e5m2, e2m1 = GRIDS["float8_e4m3fn"], GRIDS["float8_e5m2"], GRIDS["float4_e2m1fn"]
    assert (e4m3.mantissa, e4m3.emin, e4m3.emax, e4m3.largest, e4m3.overflow) == (3, -6, 8, 448.0, "nan")
    assert (e5m2.mantissa, e5m2.emin, e5m2.emax, e5m2.largest, e5m2.overflow) == (2, -14, 15, 57344.0, "inf")
    assert (e2m1.mantissa, e2m1.emin, e2m1.emax, e2m1.largest, e2m1.overflow) == (1, 0, 2, 6.0, "clip")
    assert GRIDS["float8_e4m3fnuz"].largest == 240 and GRIDS["float8_e5m2fnuz"].overflow == "nan"


@pytest.mark.parametrize("saturate", [1, 0])
@pytest.mark.parametrize("name", sorted(GRIDS))
def test_a_cast_rounds_every_value_and_tie_as_ml_dtypes(name: str, saturate: int) -> None:
    x = grid_probes(name)
    graph = import_model(cast_model(ELEM[name], x.size, saturate=saturate))
    got = run_graph(graph, {"x": x})["y"]
    assert same(got, expected(name, x, bool(saturate)), signed=not name.endswith("fnuz"))
    # the programs stay within the expression language's limits: two kernels at most once fused
    assert len([n for n in optimize(graph).nodes if n.op == "elementwise"]) <= 2
    for node in graph.nodes:
        if node.op == "elementwise":
            _expr.parse(node.attrs["expr"])


def test_a_saturating_float8e4m3_cast_is_one_kernel_and_float8e5m2_two() -> None:
    # the spacing has one select per binade: float8e5m2's 30 binades do not fit into one program twice
    for name, kernels in (("float8_e4m3fn", 1), ("float8_e5m2", 2), ("float4_e2m1fn", 1)):
        graph = optimize(import_model(cast_model(ELEM[name], 8)))
        assert [n.op for n in graph.nodes if n.op != "reshape"] == ["elementwise"] * kernels, name


def quantize_model(name: str, scale: np.ndarray, n: int, saturate: int = 1, opset: int = 21) -> onnx.ModelProto:
    """x [k, n] -> QuantizeLinear (a scale per row) -> y_q (an output) -> DequantizeLinear -> y; and each row
    alone (Split) through QuantizeLinear and DequantizeLinear with its scale as one value -> y_<row>.

    A one-value scale reaches the kernel as a literal: a constant divisor, which some drivers turn into a
    multiplication by its reciprocal."""
    k = scale.size
    inits = [
        numpy_helper.from_array(scale.astype(np.float32), "s"),
        numpy_helper.from_array(np.zeros(k, NARROW[name]), "z"),
        numpy_helper.from_array(np.zeros((), NARROW[name]), "z1"),
        *(numpy_helper.from_array(np.array(v, np.float32), f"s{r}") for r, v in enumerate(scale)),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "z"], ["y_q"], axis=0, saturate=saturate),
        helper.make_node("DequantizeLinear", ["y_q", "s", "z"], ["y"], axis=0),
        helper.make_node("Split", ["x"], [f"x{r}" for r in range(k)], axis=0, num_outputs=k),
    ]
    outputs = [
        helper.make_tensor_value_info("y_q", ELEM[name], [k, n]),
        helper.make_tensor_value_info("y", TensorProto.FLOAT, [k, n]),
    ]
    for r in range(k):
        nodes += [
            helper.make_node("QuantizeLinear", [f"x{r}", f"s{r}", "z1"], [f"q{r}"], saturate=saturate),
            helper.make_node("DequantizeLinear", [f"q{r}", f"s{r}", "z1"], [f"y{r}"]),
        ]
        outputs.append(helper.make_tensor_value_info(f"y{r}", TensorProto.FLOAT, [1, n]))
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [k, n])]
    graph = helper.make_graph(nodes, "qdq", inputs, outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def tie_inputs(name: str, scale: np.ndarray) -> np.ndarray:
    """Rows ``scale[i] * (grid values, ties and their neighbours)``: float32 products whose quotients by the
    scale land on, or a few ULP beside, the ties of the grid."""
    probes = grid_probes(name)
    with np.errstate(over="ignore"):
        return np.stack([(probes.astype(np.float64) * s).astype(np.float32) for s in scale])


def compared(m: onnx.ModelProto, got: dict[str, np.ndarray], x: np.ndarray) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(output, got as float32, ONNX's reference as float32) for each output of a :func:`quantize_model`."""
    with np.errstate(all="ignore"):
        wants = ReferenceEvaluator(m).run(None, {"x": x})
    pairs = []
    float4 = m.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT4E2M1
    for info, want in zip(m.graph.output, wants, strict=True):
        assert got[info.name].dtype == want.dtype, info.name
        want = want.astype(np.float32)
        if float4:  # no NaN: ml_dtypes gives -0 for one, the graph 0
            want = np.where(np.isnan(x if want.shape == x.shape else x[int(info.name[1:])]), 0, want)
        pairs.append((info.name, got[info.name].astype(np.float32), want))
    return pairs


@pytest.mark.parametrize("saturate", [1, 0])
@pytest.mark.parametrize("name", ["float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float4_e2m1fn"])
def test_quantize_linear_rounds_the_float32_quotient_as_onnx(name: str, saturate: int) -> None:
    scale = np.float32([3.0, 0.1, 0.00784313678741455, 1.7, 2.0])
    x = tie_inputs(name, scale)
    m = quantize_model(name, scale, x.shape[1], saturate, opset=21 if name != "float4_e2m1fn" else 23)
    got = run_graph(import_model(m), {"x": x})
    for out, value, want in compared(m, got, x):
        np.testing.assert_array_equal(value, want, err_msg=out)
    # ties really are there: float32 quotients exactly halfway between two neighbours of the grid
    with np.errstate(all="ignore"):
        q = np.abs(x / scale[:, None]).astype(np.float64)
    grid = grid_values(name)
    at = np.clip(np.searchsorted(grid, q), 1, grid.size - 1)
    assert (grid[at - 1] + grid[at] == 2 * q).sum() >= 5 * (grid.size // 2)


def dynamic_fp8_model() -> onnx.ModelProto:
    """Per-tensor dynamic float8 scaling: s = max|x| / 448 computed at run time, x -> Q -> DQ -> y."""
    consts = [
        numpy_helper.from_array(np.array(448, np.float32), "fp8_max"),
        numpy_helper.from_array(np.zeros((), ml_dtypes.float8_e4m3fn), "z"),
    ]
    nodes = [
        helper.make_node("Abs", ["x"], ["a"]),
        helper.make_node("ReduceMax", ["a"], ["amax"], keepdims=0),
        helper.make_node("Div", ["amax", "fp8_max"], ["s"]),
        helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
        helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "dynamic_fp8",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 32])],
        consts,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])


def test_a_scale_computed_at_run_time_quantizes_to_float8() -> None:
    m = dynamic_fp8_model()
    x = np.random.default_rng(0).standard_normal((4, 32)).astype(np.float32) * 7
    (want,) = ReferenceEvaluator(m).run(None, {"x": x})
    np.testing.assert_array_equal(run_graph(import_model(m), {"x": x})["y"], want)
    assert len(np.unique(want)) < 100  # rounded onto float8's grid: a few values
    runtime_zero = model_with_runtime_zero_point()
    with pytest.raises(UnsupportedModelError, match=r"a float8_e4m3fn zero point must be a constant 0"):
        import_model(runtime_zero)


def model_with_runtime_zero_point() -> onnx.ModelProto:
    node = helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"])
    graph = helper.make_graph(
        [node],
        "runtime_zp",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [4]),
            helper.make_tensor_value_info("s", TensorProto.FLOAT, []),
            helper.make_tensor_value_info("z", TensorProto.FLOAT8E4M3FN, []),
        ],
        [helper.make_tensor_value_info("q", TensorProto.FLOAT8E4M3FN, [4])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])


def test_quantize_and_dequantize_fold_on_constants() -> None:
    w = numpy_helper.from_array(np.float32([0.3, -500, 17.5, 1e9, np.nan, 0.0]).reshape(2, 3), "w")
    s = numpy_helper.from_array(np.float32([0.5, 3]), "s")
    z = numpy_helper.from_array(np.zeros(2, ml_dtypes.float8_e5m2), "z")
    nodes = [
        helper.make_node("QuantizeLinear", ["w", "s", "z"], ["q"], axis=0, saturate=0),
        helper.make_node("DequantizeLinear", ["q", "s", "z"], ["d"], axis=0),
        helper.make_node("Add", ["x", "d"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "fold",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
        [w, s, z],
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    ir = import_model(m)
    assert [n.op for n in ir.nodes] == ["elementwise"]  # only the Add: Q and DQ folded
    x = np.zeros((2, 3), np.float32)
    with np.errstate(all="ignore"):
        (want,) = ReferenceEvaluator(m).run(None, {"x": x})
    np.testing.assert_array_equal(run_graph(ir, {"x": x})["y"], want)


def test_a_nonzero_float_zero_point_is_refused() -> None:
    m = quantize_model("float8_e4m3fn", np.float32([1.0]), 4)
    m.graph.initializer[1].CopyFrom(numpy_helper.from_array(np.ones(1, ml_dtypes.float8_e4m3fn), "z"))
    with pytest.raises(UnsupportedModelError, match=r"a float8_e4m3fn zero point other than 0 is not supported"):
        import_model(m)


# --- float8e8m0 -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("saturate", [True, False])
@pytest.mark.parametrize("round_mode", ROUND_MODES)
def test_to_e8m0_is_onnx_reference_where_the_spec_agrees(round_mode: str, saturate: bool) -> None:
    x = e8m0_probes()
    got = to_e8m0(x, saturate, round_mode)
    want = onnx.numpy_helper.to_float8e8m0(x, saturate, round_mode)
    # the spec's table, not the reference: infinities saturate, 0 is out of range (NaN without saturation)
    differ = np.isinf(x) | ((x == 0) & (not saturate))
    np.testing.assert_array_equal(got.view(np.uint8)[~differ], want.view(np.uint8)[~differ])
    assert np.isnan(got[differ].astype(np.float32)).all() if not saturate else (got[np.isinf(x)] == 2.0**127).all()


def test_to_e8m0_rounding_modes() -> None:
    x = np.float32([1.0, 1.25, 1.5, 1.75, 3.0, 0.7, 2.0**-127, 1e-40, 0.0, 2.0**127 * 1.5, np.inf, np.nan])
    table = {
        ("up", True): [1, 2, 2, 2, 4, 1, 2**-127, 2**-127, 2**-127, 2**127, 2**127, np.nan],
        ("down", True): [1, 1, 1, 1, 2, 0.5, 2**-127, 2**-127, 2**-127, 2**127, 2**127, np.nan],
        ("nearest", True): [1, 1, 2, 2, 4, 0.5, 2**-127, 2**-127, 2**-127, 2**127, 2**127, np.nan],
        ("up", False): [1, 2, 2, 2, 4, 1, 2**-127, 2**-127, np.nan, np.nan, np.nan, np.nan],
        ("down", False): [1, 1, 1, 1, 2, 0.5, 2**-127, np.nan, np.nan, 2**127, np.nan, np.nan],
        ("nearest", False): [1, 1, 2, 2, 4, 0.5, 2**-127, np.nan, np.nan, np.nan, np.nan, np.nan],
    }
    for (mode, saturate), want in table.items():
        got = to_e8m0(x, saturate, mode).astype(np.float64)
        np.testing.assert_array_equal(got, np.array(want, np.float64), err_msg=f"{mode} saturate={saturate}")
    with pytest.raises(ValueError, match="round_mode='odd'"):
        to_e8m0(x, True, "odd")


@pytest.mark.parametrize("saturate", [1, 0])
@pytest.mark.parametrize("round_mode", ROUND_MODES)
def test_a_cast_to_e8m0_rounds_as_the_spec(round_mode: str, saturate: int) -> None:
    x = np.concatenate([e8m0_probes(), np.float32([2.0**-127, 1e-40, 2.0**-128 * 1.5, 2.0**-149])])
    graph = import_model(cast_model(TensorProto.FLOAT8E8M0, x.size, saturate=saturate, round_mode=round_mode))
    got = run_graph(graph, {"x": x})["y"]
    assert same(got, to_e8m0(x, bool(saturate), round_mode).astype(np.float32))


def test_e8m0_edges_and_constants() -> None:
    # a 0 read back as float8e8m0 is its smallest value, flushed by the device
    assert from_compute(np.float32([0.0, 4.0, np.nan]), "float8_e8m0fnu").view(np.uint8).tolist() == [0, 129, 255]
    assert from_compute(np.float32([E8M0_MIN]), "float8_e8m0fnu").view(np.uint8).tolist() == [0]
    # a constant cast folds with its round_mode
    c = numpy_helper.from_array(np.float32([0.0, 1.5, 3.0, np.inf]), "c")
    cast = helper.make_node("Cast", ["c"], ["y"], to=TensorProto.FLOAT8E8M0, round_mode="down", saturate=0)
    graph = helper.make_graph([cast], "g", [], [helper.make_tensor_value_info("y", TensorProto.FLOAT8E8M0, [4])], [c])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 25)])
    got = run_graph(import_model(m), {})["y"]
    assert got.dtype == NARROW["float8_e8m0fnu"] and same(got, to_e8m0(np.float32([0, 1.5, 3, np.inf]), False, "down"))
    bad = cast_model(TensorProto.FLOAT8E8M0, 4, round_mode="odd")
    with pytest.raises(Exception, match=r"round_mode='odd' is not one of up, down, nearest"):
        import_model(bad)


# --- bundles ------------------------------------------------------------------------------------------------------


def test_bundles_keep_narrow_floats_inside_and_refuse_them_at_edges(tmp_path: Path) -> None:
    m = quantize_model("float8_e4m3fn", np.float32([0.5]), 8)
    with pytest.raises(ExportError, match=r"graph output 'y_q' is float8_e4m3fn: kernelforge.js has no typed array"):
        export(m, tmp_path / "refused", db=REPO_DB)
    del m.graph.output[0]  # the float8 tensor is internal only: float32 on the device
    report = export(m, tmp_path / "ok", db=REPO_DB)
    assert report.shaders >= 1
    cast = helper.make_node("Cast", ["x"], ["y"], to=TensorProto.FLOAT8E8M0)
    graph = helper.make_graph(
        [cast],
        "e8m0",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT8E8M0, [4])],
    )
    e8m0 = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 25)])
    with pytest.raises(ExportError, match=r"graph output 'y' is float8_e8m0fnu"):
        export(e8m0, tmp_path / "e8m0", db=REPO_DB)
