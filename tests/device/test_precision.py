"""Model-level precision: ``load(..., precision=...)`` natively, and the f16 plans ``export`` checks and ships.

Every result is compared with the numpy reference of the float32 graph: within 1e-4 of the largest magnitude in
f32, within the model-level bound (``MODEL_BOUND``) where kernels compute in f16.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest

import kernelforge
from kernelforge.errors import ExportError, KernelforgeError
from kernelforge.export import export
from kernelforge.export import precision as precision_module
from kernelforge.export.precision import MODEL_BOUND
from kernelforge.graph.prepare import prepare_graph
from kernelforge.graph.reference import run_graph
from kernelforge.runtime.session import Session
from kernelforge.testing.models import mlp, small_cnn

pytestmark = pytest.mark.device
REPO_DB = Path(__file__).resolve().parents[2] / "tuning_db"
LAVAPIPE_FILE = "mesa-llvmpipe-vulkan-22.3.json"


def _error(session: Session, model: onnx.ModelProto) -> float:
    feeds = session.random_feeds(np.random.default_rng(0))
    ref = run_graph(prepare_graph(model, None), feeds)
    got = session.run(feeds)
    return max(float(np.abs(got[n] - ref[n]).max() / np.abs(ref[n]).max()) for n in ref)


def _f16_db(tmp_path: Path, model: onnx.ModelProto) -> Path:
    """The repository's database plus, on lavapipe, an f16 record of each GEMM the model runs (as if f16 had won).

    The records are of the model's own shapes: a lower-precision config holds for the shape it was verified on only
    (elsewhere a lookup takes its tiles in f32).
    """
    from kernelforge.db import TuningDB, device_meta, new_record
    from kernelforge.graph.prepare import planned_kernels
    from kernelforge.ops import get_op
    from kernelforge.runtime import open_device
    from kernelforge.templates import kernel_hash

    db = tmp_path / "db"
    shutil.copytree(REPO_DB, db)
    assert json.loads((db / LAVAPIPE_FILE).read_text())["device"].get("f16") is True  # lavapipe's file says so
    backend, tuning, spec = open_device("lavapipe"), TuningDB(db), get_op("gemm")
    info, limits = backend.info, backend.limits
    records = []
    for op, problem in planned_kernels(model, info, "wgsl", limits, tuning):
        if op == "gemm":
            params = {**tuning.params_for(info, op, problem, "wgsl", limits).params, "precision": 1}
            if spec.constraints(problem, params, limits, "wgsl") is None:
                records.append(new_record(spec, "wgsl", problem, kernel_hash(spec, "wgsl"), params, 1e-4, 2e-4, {}, ""))
    assert records
    tuning.update(device_meta(info, limits.subgroup_size, limits.f16), records)
    return db


def test_load_precision_f32_f16_and_auto(lavapipe, tmp_path: Path) -> None:
    model = mlp(size=128)
    f32 = kernelforge.load(model, device="lavapipe", precision="f32", db=REPO_DB)
    f16 = kernelforge.load(model, device="lavapipe", precision="f16", db=REPO_DB)
    gemms = [s for s in f16.steps if s.call.op == "gemm"]
    assert gemms and all(s.params["precision"] == 1 and s.source.endswith(", f16") for s in gemms)
    assert all(s.params.get("precision", 0) == 0 for s in f32.steps)
    assert _error(f32, model) <= 1e-4
    e16 = _error(f16, model)
    assert 0 < e16 <= MODEL_BOUND, e16  # f16 rounding shows, within the bound
    # auto takes what the records say: f16 where the tuner kept it, f32 elsewhere; f32 overrides such records
    db = _f16_db(tmp_path, model)
    auto = kernelforge.load(model, device="lavapipe", db=db)
    forced = kernelforge.load(model, device="lavapipe", db=db, precision="f32")
    tuned = [s for s in auto.steps if s.call.op == "gemm" and s.source.startswith(("tuned", "nearest"))]
    assert tuned and all(s.params["precision"] == 1 for s in tuned)
    assert all(s.params.get("precision", 0) == 0 for s in forced.steps)
    assert any(s.source.endswith(", f32") for s in forced.steps)  # "nearest, f32": the override is shown
    assert _error(forced, model) <= 1e-4


def test_f16_convs_of_a_cnn(lavapipe) -> None:
    model = small_cnn()
    f16 = kernelforge.load(model, device="lavapipe", precision="f16", db=REPO_DB)
    convs = [s for s in f16.steps if s.call.op == "conv2d"]
    assert convs and all(s.params["precision"] == 1 for s in convs)
    assert 0 < _error(f16, model) <= MODEL_BOUND


def test_f16_needs_the_feature_and_a_known_precision(lavapipe) -> None:
    model = mlp(size=64)
    with pytest.raises(KernelforgeError, match="shader-f16"):
        kernelforge.load(model, device="swiftshader", precision="f16")
    with pytest.raises(KernelforgeError, match="precision must be one of auto, f32, f16"):
        kernelforge.load(model, device="lavapipe", precision="half")


def _targets(out: Path) -> list[tuple[str, bool]]:
    manifest = json.loads((out / "manifest.json").read_text())
    return [(t["id"], bool(t["plan"].get("f16"))) for t in manifest["targets"]]


def test_export_auto_ships_f16_plans_only_where_records_compute_in_f16(lavapipe, tmp_path: Path) -> None:
    model = mlp(size=128)
    plain = export(model, tmp_path / "plain", db=REPO_DB)
    assert not plain.precision and not any(f16 for _, f16 in _targets(tmp_path / "plain"))  # lavapipe kept f32
    report = export(model, tmp_path / "auto", db=_f16_db(tmp_path, model))
    ids = _targets(tmp_path / "auto")
    lava = "mesa-llvmpipe-vulkan-22.3/wgsl"
    assert ids.index((lava + "-f16", True)) == ids.index((lava, False)) - 1
    assert ("default/wgsl-f16", True) not in ids  # no record of the defaults computes in f16
    # the f32 plans and every candidate compute in f32: the f16 records reach the f16 plan alone
    manifest = json.loads((tmp_path / "auto" / "manifest.json").read_text())
    f32 = [t for t in manifest["targets"] if t["language"] == "wgsl" and not t["plan"].get("f16")]
    configs = [s["params"] for t in f32 for s in t["plan"]["steps"]]
    configs += [c["params"] for t in f32 for k in t["plan"].get("kernels", []) for c in k["candidates"]]
    assert any("precision" in p for p in configs) and all(p.get("precision", 0) == 0 for p in configs)
    assert all("enable f16" not in manifest["shaders"][s["shader"]] for t in f32 for s in t["plan"]["steps"])
    (check,) = report.precision
    assert check.passed and check.device == "mesa-llvmpipe-vulkan-22.3" and check.inputs == 4
    assert [name for name, _ in check.errors] == ["y"] and 0 < check.errors[0][1] <= MODEL_BOUND
    assert "f16 check mesa-llvmpipe-vulkan-22.3/wgsl-f16" in report.summary() and "shipped" in report.summary()
    none = export(model, tmp_path / "f32", db=_f16_db(tmp_path / "again", model), precision="f32")
    assert not none.precision and not any(f16 for _, f16 in _targets(tmp_path / "f32"))


def test_export_leaves_out_an_f16_plan_over_the_model_bound(lavapipe, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(precision_module, "MODEL_BOUND", 1e-7)  # f16 rounding alone exceeds it
    report = export(mlp(size=128), tmp_path / "b", db=REPO_DB, precision="f16")
    assert report.precision and not any(c.passed for c in report.precision)
    assert not any(f16 for _, f16 in _targets(tmp_path / "b"))
    assert "(bound 1e-07): left out" in report.summary()


def test_export_calibration_inputs(lavapipe, tmp_path: Path) -> None:
    model = mlp(size=128)
    shape = prepare_graph(model, None).value("x").shape
    good = tmp_path / "calib.npz"
    np.savez(good, x=np.random.default_rng(5).standard_normal((3, *shape)).astype(np.float32))
    report = export(model, tmp_path / "b", db=REPO_DB, precision="f16", calibrate=good)
    assert report.precision and all(c.inputs == 4 + 3 for c in report.precision)
    one = tmp_path / "one.npz"
    np.savez(one, x=np.zeros(shape, np.float32))
    assert all(
        c.inputs == 5 for c in export(model, tmp_path / "c", db=REPO_DB, precision="f16", calibrate=one).precision
    )
    bad = {
        "missing input(s) ['x']": {"y": np.zeros(shape, np.float32)},
        "input 'x' has shape (2, 7)": {"x": np.zeros((2, 7), np.float32)},
    }
    for message, arrays in bad.items():
        path = tmp_path / "bad.npz"
        np.savez(path, **arrays)
        with pytest.raises(ExportError, match=rf"--calibrate {re.escape(str(path))}: .*{re.escape(message)}"):
            export(model, tmp_path / "d", db=REPO_DB, precision="f16", calibrate=path)
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ExportError, match=r"cannot read it as a \.npz file"):
        export(model, tmp_path / "e", db=REPO_DB, calibrate=tmp_path / "junk.npz")
    with pytest.raises(ExportError, match="--precision must be one of auto, f32, f16"):
        export(model, tmp_path / "f", db=REPO_DB, precision="bf16")


def test_the_command_line_exports_f16_plans_and_runs_in_f16(lavapipe, tmp_path: Path, capsys) -> None:
    from kernelforge.cli import main
    from kernelforge.testing.models import save

    path = save(mlp(size=128), tmp_path / "mlp.onnx")
    calib = tmp_path / "calib.npz"
    np.savez(calib, x=np.random.default_rng(1).standard_normal((2, 1, 128)).astype(np.float32))
    argv = ["export", str(path), "--out", str(tmp_path / "b"), "--db", str(REPO_DB), "--precision", "f16"]
    assert main([*argv, "--calibrate", str(calib), "--weights", "int8"]) == 0
    text = capsys.readouterr().out
    assert "f16 check default/wgsl-f16: 3 of 4 kernels in f16; error on mesa-llvmpipe-vulkan-22.3, 6 inputs: y " in text
    assert ("default/wgsl-f16", True) in _targets(tmp_path / "b")
    assert main([*argv, "--calibrate", str(tmp_path / "nothing.npz")]) == 2
    assert "--calibrate" in capsys.readouterr().err
    assert main(["run", str(path), "--device", "lavapipe", "--precision", "f16", "--profile"]) == 0
    assert ", f16" in capsys.readouterr().out


@pytest.mark.parametrize(("op", "key"), [("gemm", "64x96x80"), ("conv2d", "1x16x12x12:32x3x3:s1:p1")])
def test_glsl_half_float_targets_round_outputs_to_float16_within_the_f16_bound(gl, op: str, key: str) -> None:
    from kernelforge.ops import get_op
    from kernelforge.ops.spec import F16_TOLERANCE, FLOAT32_TOLERANCE
    from kernelforge.testing.ops import check_op

    spec = get_op(op)
    problem = spec.parse_problem(key)
    params = {**spec.default_params(problem, gl.limits, "glsl"), "precision": 1}
    assert spec.gl_launch(problem, params).half and spec.tolerance(problem, params) == F16_TOLERANCE
    inputs = spec.make_inputs(problem, np.random.default_rng(0))
    out = check_op(gl, spec, problem, params, inputs=inputs)
    want = spec.reference(problem, inputs)
    err = float(np.abs(out - want).max() / np.abs(want).max())
    assert err > FLOAT32_TOLERANCE  # rounded to float16, so it can fail the float32 bound: the halves were drawn
    np.testing.assert_array_equal(out, out.astype(np.float16).astype(np.float32))  # every output is a half


def test_glsl_load_precision_f16_draws_half_float_textures(gl) -> None:
    model = small_cnn()
    f32 = kernelforge.load(model, device=gl.info.index, backend="glsl", precision="f32", db=REPO_DB)
    f16 = kernelforge.load(model, device=gl.info.index, backend="glsl", precision="f16", db=REPO_DB)
    halves = [r for r in f16.program.resources if getattr(r, "dtype", "") == "float16"]
    assert halves and not any(getattr(r, "dtype", "") == "float16" for r in f32.program.resources)
    assert any(s.params.get("precision") == 1 and s.source.endswith(", f16") for s in f16.steps)
    assert _error(f32, model) <= 1e-4
    assert 1e-6 < _error(f16, model) <= MODEL_BOUND
    assert f16.program.texture_bytes < f32.program.texture_bytes  # half the bytes where kernels draw halves
    assert f"activation textures {f16.program.texture_bytes / 2**20:.2f} MiB" in f16.summary()
