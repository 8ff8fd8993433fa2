"""The kernelforge command, in-process and as a real subprocess."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from kernelforge.cli import main

pytestmark = pytest.mark.device


def test_devices_json(lavapipe, capsys):
    assert main(["devices", "--json"]) == 0
    devices = json.loads(capsys.readouterr().out)
    # one driver can serve two kernel languages (wgpu's GL backend and moderngl): same fingerprint, apart by language
    assert devices and len({(d["fingerprint"], d["language"]) for d in devices}) == len(devices)
    for d in devices:
        assert d["class"] in ("igpu", "dgpu", "cpu", "other")
        assert d["api"] in ("vulkan", "metal", "d3d12", "gl")
        for key in ("max_invocations", "max_wg_x", "max_workgroup_storage", "max_storage_binding"):
            assert d["limits"][key] > 0
    assert any(d["fingerprint"].startswith("mesa-llvmpipe-vulkan") for d in devices)
    assert any(d["language"] == "glsl" and d["backend"] == "moderngl" for d in devices)


def test_devices_text(lavapipe, capsys):
    assert main(["devices"]) == 0
    out = capsys.readouterr().out
    assert "mesa-llvmpipe-vulkan" in out and "invocations/workgroup" in out


def test_tune_igpu_fails_with_the_device_list(lavapipe):
    proc = subprocess.run(
        [sys.executable, "-m", "kernelforge.cli", "tune", "--device", "igpu", "--shape", "8x8x8"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "no integrated GPU" in proc.stderr
    assert "mesa-llvmpipe-vulkan" in proc.stderr


def test_unknown_device_and_bad_shape(lavapipe, capsys, tmp_path):
    assert main(["tune", "--device", "no-such-gpu", "--shape", "8x8x8", "--db", str(tmp_path)]) == 2
    assert "no device matching 'no-such-gpu'" in capsys.readouterr().err
    assert main(["tune", "--device", "lavapipe", "--shape", "8x8", "--db", str(tmp_path)]) == 2  # a usage error
    assert "is not MxNxK" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["tune", "--device", "lavapipe", "--op", "nope", "--shape", "8x8x8", "--db", str(tmp_path)])
    assert exit_info.value.code == 2
    assert "invalid choice: 'nope'" in capsys.readouterr().err


def test_tune_show_merge(lavapipe, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("KF_PROGRESS", "0")
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(["tune", "--device", "lavapipe", "--shape", "16x16x16,9x7x5", "--trials", "4", "--db", str(a)]) == 0
    out = capsys.readouterr().out
    assert "speedup" in out and "16x16x16" in out and "9x7x5" in out
    assert main(["db", "show", "--db", str(a)]) == 0
    shown = capsys.readouterr().out
    assert "mesa-llvmpipe-vulkan" in shown and "GFLOP/s" in shown
    assert main(["db", "merge", str(a), "--db", str(b)]) == 0
    assert "2 of 2 records taken" in capsys.readouterr().out
    assert main(["db", "merge", str(a), "--db", str(b)]) == 0  # same times: nothing is faster
    assert "0 of 2 records taken" in capsys.readouterr().out


def test_db_prune_removes_only_stale_records(capsys, tmp_path):
    from kernelforge.db import TuningDB, device_meta, new_record
    from kernelforge.devices import DeviceInfo
    from kernelforge.ops import Limits, get_op
    from kernelforge.templates import kernel_hash

    spec = get_op("gemm")
    info = DeviceInfo(
        0, "wgpu", "wgsl", "vulkan", "mesa-x-vulkan", "mesa", 0, 0, "1", "CPU", "cpu", "mesa-x-vulkan", Limits()
    )
    params = spec.default_params(spec.parse_problem("32x32x32"), info.limits, "wgsl")

    def record(shape: str, template_hash: str):
        return new_record(spec, "wgsl", spec.parse_problem(shape), template_hash, params, 1e-3, 2e-3, {}, "1")

    db = TuningDB(tmp_path)
    current = kernel_hash(spec, "wgsl")
    db.update(device_meta(info), [record("32x32x32", current), record("32x32x32", "0" * 64), record("8x8x8", "1" * 64)])
    corrupt = tmp_path / "mesa-y-vulkan.json"
    corrupt.write_text("{ not json")
    assert main(["db", "prune", "--db", str(tmp_path)]) == 1  # the corrupt file is named and left alone
    out = capsys.readouterr().out
    assert "mesa-x-vulkan.json: 2 stale records removed" in out and str(corrupt) in out
    assert corrupt.read_text() == "{ not json"
    left = db.load(tmp_path / "mesa-x-vulkan.json").records
    assert [(r.shape, r.template_hash) for r in left.values()] == [("32x32x32", current)]
    corrupt.unlink()
    assert main(["db", "prune", "--db", str(tmp_path)]) == 0
    assert "0 stale records removed" in capsys.readouterr().out


def test_db_show_reports_corrupt_file(capsys, tmp_path):
    bad = tmp_path / "mesa-x-vulkan.json"
    bad.write_text("{ not json")
    assert main(["db", "show", "--db", str(tmp_path)]) == 1
    assert str(bad) in capsys.readouterr().out
    assert bad.read_text() == "{ not json"


def test_db_import_stores_good_reports_and_names_bad_ones(capsys, tmp_path):
    from kernelforge.testing.tuning import tuning_report

    slug = "google-swiftshader-webgpu"
    good, bad, slower = tmp_path / "good.json", tmp_path / "bad.json", tmp_path / "slower.json"
    good.write_text(json.dumps(tuning_report(ms=0.5)))
    tampered = tuning_report(ms=0.1)
    tampered["kernels"][1]["candidates"][1]["params"]["wg_x"] = "8; } fn evil() {"
    bad.write_text(json.dumps(tampered))
    late = tuning_report(ms=0.9)
    late["kernels"].append({**late["kernels"][0], "shape": "32x32x32", "winner": None})
    slower.write_text(json.dumps(late))
    db = tmp_path / "db"
    assert main(["db", "import", str(bad), str(good), "--db", str(db)]) == 1  # the good one is still imported
    out = capsys.readouterr().out
    assert (
        f"{bad}: rejected, nothing written: kernels[1] (conv2d 1x32x16x16:32x3x3:s1x1:p1,1,1,1:d1x1:g32): "
        "candidates[1] params: conv2d parameter wg_x must be an integer, got '8; } fn evil() {'"
    ) in out
    assert f"{good}: 2 records of {slug} written (new or faster), 0 kept (stored one faster), 0 not measured" in out
    assert main(["db", "import", str(slower), "--db", str(db)]) == 0
    out = capsys.readouterr().out
    assert f"{slower}: 0 records of {slug} written (new or faster), 2 kept (stored one faster), 1 not measured" in out
    assert main(["db", "show", "--db", str(db)]) == 0
    shown = capsys.readouterr().out
    assert slug in shown and "browser device: Chrome 156.0.0.0 headless" in shown and "0.50 ms" in shown


def test_db_import_leaves_a_corrupt_database_file_untouched(capsys, tmp_path):
    from kernelforge.testing.tuning import tuning_report

    report = tmp_path / "r.json"
    report.write_text(json.dumps(tuning_report()))
    corrupt = tmp_path / "google-swiftshader-webgpu.json"
    corrupt.write_text("{ not json")
    assert main(["db", "import", str(report), "--db", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert f"{report}: not imported, nothing written: tuning database file {corrupt} is corrupt" in out
    assert corrupt.read_text() == "{ not json"


def test_db_import_of_a_file_that_is_not_a_report_is_one_line(tmp_path):
    report = tmp_path / "r.json"
    report.write_text("<html>not json</html>")
    proc = subprocess.run(
        [sys.executable, "-m", "kernelforge.cli", "db", "import", str(report), "--db", str(tmp_path / "db")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    expected = "not a tuning report (not JSON: Expecting value: line 1 column 1 (char 0))"
    assert proc.stdout.strip().endswith(f"{report}: rejected, nothing written: {expected}")
