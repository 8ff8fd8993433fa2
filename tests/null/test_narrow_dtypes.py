"""The narrow dtypes (bfloat16, float8, float4, int4/uint4/int2/uint2) at graph edges, in casts and constants.

Edges are checked against ``ml_dtypes`` bit for bit, casts and folded constants against ONNX's reference
implementation (``onnx.reference``), all on the numpy interpreter of the IR (the kernels' own ground truth).
"""

from __future__ import annotations

import re
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from kernelforge.errors import ExportError
from kernelforge.export import export
from kernelforge.export.bundle import JS_DIR, WEB_DTYPES
from kernelforge.graph.dtypes import NARROW, NARROW_ELEMS, cast_array, kind, numpy_dtype
from kernelforge.graph.edges import EdgeError, edge_dtype, from_compute, to_compute
from kernelforge.graph.onnx_import import UnsupportedModelError, import_model
from kernelforge.graph.reference import run_graph

REPO_DB = Path(__file__).resolve().parents[2] / "tuning_db"
FLOATS = [
    "bfloat16",
    "float8_e4m3fn",
    "float8_e4m3fnuz",
    "float8_e5m2",
    "float8_e5m2fnuz",
    "float8_e8m0fnu",
    "float4_e2m1fn",
]
INTS = ["int4", "uint4", "int2", "uint2"]
ELEM = {name: elem for elem, name in NARROW_ELEMS.items()}


def every_value(name: str) -> np.ndarray:
    """Return every bit pattern of a narrow type as an array of that type (NaNs included)."""
    dtype = NARROW[name]
    if dtype.itemsize == 2:
        return np.arange(2**16, dtype=np.uint16).view(dtype)
    bits = 8 if name.startswith("float8") else 4 if name in ("float4_e2m1fn", "int4", "uint4") else 2
    info = ml_dtypes.iinfo(dtype) if kind(dtype) in "iu" else None
    if info is not None:
        return np.arange(info.min, info.max + 1).astype(dtype)
    return np.arange(2**bits, dtype=np.uint8).view(dtype)


def same(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal as float64, NaN where NaN and zeros of the same sign (what a bitwise check means per value)."""
    with np.errstate(invalid="ignore"):
        x, y = a.astype(np.float64), b.astype(np.float64)
    return bool(np.array_equal(x, y, equal_nan=True) and np.array_equal(np.signbit(x), np.signbit(y)))


def model(nodes, inputs, outputs, initializers=(), opset=21):
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info(n, t, s) for n, (t, s) in inputs.items()],
        [helper.make_tensor_value_info(n, t, s) for n, (t, s) in outputs.items()],
        list(initializers),
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def onnx_reference(m, feeds):
    return ReferenceEvaluator(m).run(None, feeds)


# --- edges ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", FLOATS + INTS)
def test_onnx_types_name_their_ml_dtypes(name: str) -> None:
    assert edge_dtype(ELEM[name]) == name
    assert numpy_dtype(name) == np.dtype(getattr(ml_dtypes, name))
    assert kind(numpy_dtype(name)) == ("f" if name in FLOATS else name[0])


def test_numpy_names_are_not_mistaken_for_narrow_ones() -> None:
    # numpy reads "int4" as a 4-byte int32: the table, not np.dtype, names the narrow types
    assert numpy_dtype("int4").itemsize == 1 and numpy_dtype("int32") == np.int32
    assert edge_dtype(TensorProto.FLOAT6E2M3) is None and edge_dtype(TensorProto.STRING) is None


@pytest.mark.parametrize("name", FLOATS + INTS)
def test_every_value_widens_exactly_and_comes_back_unchanged(name: str) -> None:
    values = every_value(name)
    wide = to_compute("x", values, name)
    assert wide.dtype == np.float32
    assert same(wide, values)
    back = from_compute(wide, name)
    assert back.dtype == NARROW[name] and same(back, values)


@pytest.mark.parametrize("name", FLOATS)
def test_outputs_round_to_nearest_even_as_ml_dtypes(name: str) -> None:
    grid = np.unique(every_value(name).astype(np.float32))
    grid = grid[np.isfinite(grid)]
    mids = ((grid[:-1].astype(np.float64) + grid[1:]) / 2).astype(np.float32)  # ties: exact in float32
    rng = np.random.default_rng(0)
    top = min(1.2 * float(ml_dtypes.finfo(NARROW[name]).max), 3e38)
    data = np.concatenate([mids, rng.uniform(-top, top, 500).astype(np.float32), [np.inf, -np.inf]])
    got = from_compute(data, name)
    with np.errstate(all="ignore"):
        assert same(got, data.astype(NARROW[name]))
    # a tie goes to the even neighbour: of the two, the one whose last mantissa bit is 0 (float8e8m0 has no
    # mantissa: its values are already on the grid, as a cast to it leaves them)
    evens = got[: len(mids)].astype(np.float32)
    low, high = grid[:-1], grid[1:]
    assert np.all((evens == low) | (evens == high))
    if name == "float8_e8m0fnu":
        return
    bits = np.array(evens.astype(NARROW[name])).view(np.uint16 if NARROW[name].itemsize == 2 else np.uint8)
    assert np.all(bits % 2 == 0)


@pytest.mark.parametrize("name", INTS)
def test_integer_outputs_round_and_clip_to_the_type(name: str) -> None:
    lo, hi = int(ml_dtypes.iinfo(NARROW[name]).min), int(ml_dtypes.iinfo(NARROW[name]).max)
    data = np.array([lo - 5, lo, 0.4, 0.6, hi, hi + 5, np.nan], np.float32)
    got = from_compute(data, name)
    assert got.dtype == NARROW[name]
    assert got.astype(np.int64).tolist() == [lo, lo, 0, 1, hi, hi, 0]


def test_feeds_are_checked() -> None:
    with pytest.raises(EdgeError, match=r"input 'q': value 8 at index \(1,\) is outside int4's range \[-8, 7\]"):
        to_compute("q", np.array([7, 8]), "int4")
    with pytest.raises(EdgeError, match=r"input 'q': value -1 at index \(0,\) is outside uint2's range \[0, 3\]"):
        to_compute("q", np.array([-1], np.int8), "uint2")
    with pytest.raises(EdgeError, match=r"input 'q': expected int4 data \(integers or bools\), got dtype bfloat16"):
        to_compute("q", np.zeros(2, ml_dtypes.bfloat16), "int4")
    with pytest.raises(EdgeError, match=r"input 'x': expected float data, got dtype <U1"):
        to_compute("x", np.array(["a"]), "float8_e4m3fn")
    # other floats feed a narrow float input as they are (as a float16 input takes float32 data)
    assert to_compute("x", np.array([0.1], np.float64), "bfloat16")[0] == np.float32(0.1)
    assert to_compute("x", np.array([1.5], ml_dtypes.float8_e5m2), "float32")[0] == 1.5
    assert to_compute("q", np.array([-8, 7], ml_dtypes.int4), "int64").tolist() == [-8, 7]


# --- Cast and CastLike ------------------------------------------------------------------------------------------

SPECIALS = np.array(
    [0.3, -0.3, 1e-7, -0.0, 1000.0, -1000.0, 1e6, -1e6, 60000.0, 239.0, 250.0, 460.0, 470.0, np.inf, -np.inf, np.nan],
    np.float32,
)


@pytest.mark.parametrize("saturate", [1, 0])
@pytest.mark.parametrize("name", ["float8_e4m3fn", "float8_e4m3fnuz", "float8_e5m2", "float8_e5m2fnuz"])
def test_cast_to_float8_saturates_as_onnx(name: str, saturate: int) -> None:
    cast = helper.make_node("Cast", ["x"], ["y"], to=ELEM[name], saturate=saturate)
    m = model([cast], {"x": (TensorProto.FLOAT, [16])}, {"y": (ELEM[name], [16])}, opset=21)
    got = run_graph(import_model(m), {"x": SPECIALS})["y"]
    (want,) = onnx_reference(m, {"x": SPECIALS})
    assert got.dtype == want.dtype and same(got, want)
    graph = import_model(m)
    assert [n.op for n in graph.nodes] == ["elementwise", "elementwise"]  # the grid's spacing, the rounding


@pytest.mark.parametrize("name", ["float8_e4m3fn", "float8_e5m2", "float4_e2m1fn"])
def test_a_cast_inside_the_graph_rounds_onto_the_grid(name: str) -> None:
    nodes = [
        helper.make_node("Cast", ["x"], ["c"], to=ELEM[name]),
        helper.make_node("Cast", ["c"], ["c_f"], to=TensorProto.FLOAT),
        helper.make_node("Add", ["c_f", "x"], ["y"]),
    ]
    m = model(nodes, {"x": (TensorProto.FLOAT, [16])}, {"y": (TensorProto.FLOAT, [16])})
    got = run_graph(import_model(m), {"x": SPECIALS})["y"]
    with np.errstate(invalid="ignore"):  # float4e2m1 has no NaN: ml_dtypes gives 0 for one, so does the graph
        rounded = cast_array(SPECIALS, NARROW[name]).astype(np.float32)
    np.testing.assert_array_equal(got, rounded + SPECIALS)


@pytest.mark.parametrize("name", ["bfloat16", "float4_e2m1fn"])
def test_cast_to_bfloat16_and_float4_as_onnx(name: str) -> None:
    cast = helper.make_node("Cast", ["x"], ["y"], to=ELEM[name])
    m = model([cast], {"x": (TensorProto.FLOAT, [16])}, {"y": (ELEM[name], [16])})
    got = run_graph(import_model(m), {"x": SPECIALS})["y"]
    (want,) = onnx_reference(m, {"x": SPECIALS})
    finite = ~np.isnan(SPECIALS)  # float4e2m1 has no NaN: onnx's reference gives a zero of either sign
    assert got.dtype == want.dtype and same(got[finite], want[finite])


@pytest.mark.parametrize("name", INTS)
@pytest.mark.parametrize("source", [TensorProto.FLOAT, TensorProto.INT32])
def test_cast_to_narrow_integers_as_onnx(name: str, source: int) -> None:
    # from floats: truncated toward zero, 0 out of range; from integers: the low bits (two's complement)
    x = np.arange(-19, 20, dtype=np.float32) + (0.75 if source == TensorProto.FLOAT else 0)
    x = x.astype(np.float32 if source == TensorProto.FLOAT else np.int32)
    for op, extra in (("Cast", {"to": ELEM[name]}), ("CastLike", {})):
        inputs = ["x", "like"] if op == "CastLike" else ["x"]
        like = [numpy_helper.from_array(np.zeros(1, NARROW[name]), "like")] if op == "CastLike" else []
        node = helper.make_node(op, inputs, ["y"], **extra)
        m = model([node], {"x": (source, [x.size])}, {"y": (ELEM[name], [x.size])}, like)
        got = run_graph(import_model(m), {"x": x})["y"]
        with np.errstate(invalid="ignore"):  # the reference casts out-of-range floats (to 0)
            (want,) = onnx_reference(m, {"x": x})
        assert got.dtype == want.dtype, op
        assert got.astype(np.int64).tolist() == want.astype(np.int64).tolist(), op


def test_castlike_saturate_and_type_come_from_like() -> None:
    like = numpy_helper.from_array(np.zeros(1, ml_dtypes.float8_e5m2), "like")
    node = helper.make_node("CastLike", ["x", "like"], ["y"], saturate=0)
    m = model([node], {"x": (TensorProto.FLOAT, [16])}, {"y": (TensorProto.FLOAT8E5M2, [16])}, [like])
    got = run_graph(import_model(m), {"x": SPECIALS})["y"]
    (want,) = onnx_reference(m, {"x": SPECIALS})
    assert got.dtype == want.dtype and same(got, want)
    assert np.isinf(got[6])  # 1e6 without saturation: float8e5m2's infinity


def test_casts_to_types_kernelforge_does_not_carry_are_refused() -> None:
    for node in (
        helper.make_node("Cast", ["x"], ["y"], to=TensorProto.FLOAT6E2M3, name="to_e2m3"),
        helper.make_node("CastLike", ["x", "like"], ["y"], name="to_e2m3"),
    ):
        like = helper.make_tensor("like", TensorProto.FLOAT6E2M3, [1], [1.0])
        m = model([node], {"x": (TensorProto.FLOAT, [4])}, {"y": (TensorProto.FLOAT, [4])}, [like], opset=25)
        with pytest.raises(UnsupportedModelError, match=r"node 'to_e2m3' \(opset 25\): .*FLOAT6E2M3.*supported"):
            import_model(m)
    m = model([helper.make_node("Relu", ["x"], ["y"])], {"x": (TensorProto.FLOAT6E2M3, [4])}, {"y": (1, [4])}, (), 25)
    with pytest.raises(UnsupportedModelError, match=r"graph input 'x': dtype FLOAT6E2M3 is not supported \(supported"):
        import_model(m)


# --- constants -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", FLOATS + INTS)
def test_constants_of_narrow_types_load_widened_exactly(name: str) -> None:
    values = every_value(name)
    values = values[~np.isnan(values.astype(np.float32))]
    n, w = values.size, numpy_helper.from_array(values, "w")
    # through a Cast to float
    nodes = [
        helper.make_node("Cast", ["w"], ["w_f"], to=TensorProto.FLOAT),
        helper.make_node("Add", ["x", "w_f"], ["y"]),
    ]
    m = model(nodes, {"x": (TensorProto.FLOAT, [n])}, {"y": (TensorProto.FLOAT, [n])}, [w])
    got = run_graph(import_model(m), {"x": np.zeros(n, np.float32)})["y"]
    np.testing.assert_array_equal(got, values.astype(np.float32))
    # read as a tensor of its own type, beside a runtime input of that type
    concat = helper.make_node("Concat", ["x", "w"], ["y"], axis=0)
    m = model([concat], {"x": (ELEM[name], [2])}, {"y": (ELEM[name], [n + 2])}, [w])
    x = values[:2]
    got = run_graph(import_model(m), {"x": x})["y"]
    assert got.dtype == NARROW[name] and same(got, np.concatenate([x, values]))
    # a graph output that is the constant itself (NaN and the largest values included)
    every = every_value(name)
    m = model([helper.make_node("Identity", ["c"], ["y"])], {}, {"y": (ELEM[name], [every.size])})
    m.graph.initializer.append(numpy_helper.from_array(every, "c"))
    got = run_graph(import_model(m), {})["y"]
    assert got.dtype == NARROW[name] and same(got, every)


@pytest.mark.parametrize("saturate", [1, 0])
def test_a_folded_cast_saturates_as_onnx(saturate: int) -> None:
    c = numpy_helper.from_array(SPECIALS, "c")
    cast = helper.make_node("Cast", ["c"], ["y"], to=TensorProto.FLOAT8E4M3FN, saturate=saturate)
    m = model([cast], {}, {"y": (TensorProto.FLOAT8E4M3FN, [16])}, [c])
    (want,) = onnx_reference(m, {})
    assert same(cast_array(SPECIALS, NARROW["float8_e4m3fn"], bool(saturate)), want)
    # y - 0 keeps a -0 (0 + -0 would not)
    folded = model([cast, helper.make_node("Sub", ["y", "x"], ["z"])], {"x": (1, [16])}, {"z": (1, [16])}, [c])
    z = run_graph(import_model(folded), {"x": np.zeros(16, np.float32)})["z"]
    assert same(z, want.astype(np.float32))


# --- browser bundles -------------------------------------------------------------------------------------------


def test_web_dtypes_are_the_typed_arrays_of_kernelforge_js() -> None:
    text = (JS_DIR / "kernelforge.js").read_text()
    table = re.search(r"float32: Float32Array,(.*?)\}", text, re.S)
    assert table is not None
    names = {"float32", *re.findall(r"(\w+): \w+Array", table.group(1))}
    assert names == WEB_DTYPES


def test_export_refuses_narrow_edges_naming_them(tmp_path: Path) -> None:
    relu = helper.make_node("Relu", ["x"], ["y"])
    m = model([relu], {"x": (TensorProto.BFLOAT16, [1, 8])}, {"y": (TensorProto.INT4, [1, 8])})
    with pytest.raises(
        ExportError, match=r"graph input 'x' is bfloat16; graph output 'y' is int4: kernelforge.js has no typed array"
    ):
        export(m, tmp_path / "b", db=REPO_DB)
    assert not (tmp_path / "b").exists()


# --- QuantizeLinear / DequantizeLinear of the 2-bit integers ------------------------------------------------------


@pytest.mark.parametrize("name", ["int2", "uint2"])
def test_two_bit_quantize_and_dequantize_as_onnx(name: str) -> None:
    x = np.linspace(-3, 3, 25, dtype=np.float32)
    scale = numpy_helper.from_array(np.array(0.5, np.float32), "s")
    zp = numpy_helper.from_array(np.array(1 if name == "uint2" else 0).astype(NARROW[name]), "zp")
    q = helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["q"])
    dq = helper.make_node("DequantizeLinear", ["q", "s", "zp"], ["y"])
    m = model([q, dq], {"x": (TensorProto.FLOAT, [25])}, {"q": (ELEM[name], [25]), "y": (TensorProto.FLOAT, [25])})
    m.graph.initializer.extend([scale, zp])
    got = run_graph(import_model(m), {"x": x})
    want_q, want_y = onnx_reference(m, {"x": x})
    assert got["q"].dtype == want_q.dtype and got["q"].astype(int).tolist() == want_q.astype(int).tolist()
    np.testing.assert_array_equal(got["y"], want_y)
    # a constant folds the same
    folded = model([q, dq], {}, {"y": (TensorProto.FLOAT, [25])}, [numpy_helper.from_array(x, "x"), scale, zp])
    np.testing.assert_array_equal(run_graph(import_model(folded), {})["y"], want_y)
