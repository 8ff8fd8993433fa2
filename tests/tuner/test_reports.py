"""Tuning reports from kernelforge.js: good ones become records, tampered ones are named and write nothing."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from kernelforge.db import TuningDB
from kernelforge.errors import DatabaseError
from kernelforge.export.targets import select_targets
from kernelforge.ops import get_op
from kernelforge.testing.tuning import SWIFTSHADER_ADAPTER, tuning_report
from kernelforge.tuner import reports
from kernelforge.tuner.reports import ReportError, import_report, parse_report, read_report

SLUG = "google-swiftshader-webgpu"
GEMM = "kernels[0] (gemm 64x64x64)"
CONV = "kernels[1] (conv2d 1x32x16x16:32x3x3:s1x1:p1,1,1,1:d1x1:g32)"


def write(path: Path, report: Any) -> Path:
    path.write_text(json.dumps(report))
    return path


def test_a_good_report_makes_records_of_the_browser_device(tmp_path):
    report = tuning_report()
    report["kernels"].append({**copy.deepcopy(report["kernels"][0]), "shape": "32x32x32", "winner": None})
    done = import_report(write(tmp_path / "r.json", report), TuningDB(tmp_path / "db"))
    assert (done.file, done.fingerprint, done.written, done.kept, done.skipped) == ("r.json", SLUG, 2, 0, 1)
    loaded = TuningDB(tmp_path / "db").load(tmp_path / "db" / f"{SLUG}.json")
    assert loaded.rejected == []
    assert loaded.device["adapter"] == SWIFTSHADER_ADAPTER["desc"]
    assert loaded.device["subgroup_size"] == 4 and loaded.device["class"] == "cpu"
    assert loaded.device["driver"] == "Chrome 156.0.0.0 headless"
    by_op = {r.op: r for r in loaded.records.values()}
    assert set(by_op) == {"gemm", "conv2d"}
    for record, kernel in zip((by_op["gemm"], by_op["conv2d"]), report["kernels"], strict=False):
        # the stored params carry the tunables the report's configs predate (conv's precision) at their absent value
        assert record.params == get_op(record.op).validate_params(kernel["candidates"][1]["params"], "wgsl")
        assert (record.time_s, record.default_time_s) == pytest.approx((0.5e-3, 1e-3))
        assert record.shape == kernel["shape"] and record.driver == "Chrome 156.0.0.0 headless"
        assert record.trials == {
            "source": "report",
            "report": {
                "file": "r.json",
                "generator": "kernelforge 0.9.0",
                "manifest": report["manifest"],
                "model": "small_cnn",
                "target": "mesa-llvmpipe-vulkan-22.3/wgsl",
                "match": "class",
                "clock": "timestamp",
                "candidates": 2,
            },
        }


def test_the_next_export_matches_the_reporting_browser_exactly(tmp_path):
    import_report(write(tmp_path / "r.json", tuning_report()), TuningDB(tmp_path))
    (target,) = [t for t in select_targets(TuningDB(tmp_path)) if not t.is_default]
    assert target.id == f"{SLUG}/wgsl" and target.device is not None
    desc = SWIFTSHADER_ADAPTER["desc"]
    assert target.device["vendor"] in desc
    assert target.device["keywords"] and all(word in desc for word in target.device["keywords"])
    assert target.info.limits.subgroup_size == 4


def test_a_slower_report_keeps_the_faster_record_and_a_faster_one_replaces_it(tmp_path):
    db = TuningDB(tmp_path / "db")
    import_report(write(tmp_path / "a.json", tuning_report(ms=0.5)), db)
    slower = import_report(write(tmp_path / "b.json", tuning_report(ms=0.8)), db)
    assert (slower.written, slower.kept) == (0, 2)
    times = {r.op: r.time_s for r in db.load(tmp_path / "db" / f"{SLUG}.json").records.values()}
    assert times == pytest.approx({"gemm": 0.5e-3, "conv2d": 0.5e-3})
    faster = import_report(write(tmp_path / "c.json", tuning_report(ms=0.25)), db)
    assert (faster.written, faster.kept) == (2, 0)
    records = db.load(tmp_path / "db" / f"{SLUG}.json").records.values()
    assert {r.trials["report"]["file"] for r in records} == {"c.json"}


def test_default_time_is_the_winners_when_the_default_was_not_timed():
    report = tuning_report()
    report["kernels"][0]["candidates"][0]["ms"] = None
    del report["kernels"][1]["candidates"][0]
    report["kernels"][1]["winner"] = 0
    for record in parse_report(report, "r.json").records:
        assert record.default_time_s == record.time_s


def test_an_adapter_with_shader_f16_is_filed_so_an_export_may_give_it_an_f16_plan(tmp_path):
    assert "f16" not in parse_report(tuning_report(), "r.json").meta  # SwiftShader's adapter has no shader-f16
    report = tuning_report(adapter={**SWIFTSHADER_ADAPTER, "f16": True})
    parsed = parse_report(report, "r.json")
    assert parsed.meta["f16"] is True and parsed.info.limits.f16
    import_report(write(tmp_path / "r.json", report), TuningDB(tmp_path / "db"))
    (target,) = [t for t in select_targets(TuningDB(tmp_path / "db"), ["all"]) if t.info.slug == SLUG]
    assert target.f16


def test_a_device_without_a_fixed_subgroup_size_has_none():
    adapter = {**SWIFTSHADER_ADAPTER, "subgroupSize": 0}
    assert "subgroup_size" not in parse_report(tuning_report(adapter=adapter), "r.json").meta
    adapter["subgroupSize"] = 6  # not a WGSL subgroup size: no subgroup kernels for it
    assert "subgroup_size" not in parse_report(tuning_report(adapter=adapter), "r.json").meta


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """Return a tampering that sets the field at a dotted path (``kernels.1.candidates.0.ms``)."""

    def tamper(report: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = report
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        if value is _DELETE:
            del node[last]
        else:
            node[int(last) if isinstance(node, list) else last] = value

    return tamper


_DELETE = object()
WINNER = "kernels.1.candidates.1"

TAMPERED = [
    (_set(f"{WINNER}.params.wg_x", "8; } fn evil() {"), f"{CONV}: candidates[1] params: conv2d parameter wg_x must"),
    (_set("kernels.0.candidates.0.params.wg_x", 3), f"{GEMM}: candidates[0] params: gemm parameter wg_x=3 is not one"),
    (_set(f"{WINNER}.params.wg_x", True), f"{CONV}: candidates[1] params: conv2d parameter wg_x must be an integer"),
    (_set(f"{WINNER}.params.wg_x", 1e9), "conv2d parameter wg_x must be an integer, got 1000000000.0"),
    (_set(f"{WINNER}.params.evil", 1), f"{CONV}: candidates[1] params: unknown conv2d parameter(s) ['evil']"),
    (_set(f"{WINNER}.params.x y", 1), "candidates[1] params: 'x y' is not a conv2d parameter name"),
    (_set(f"{WINNER}.params.wg_x", _DELETE), "missing conv2d parameter 'wg_x'"),
    (_set(f"{WINNER}.params", "wg_x=8"), f"{CONV}: candidates[1] params: must be an object, got a string"),
    (_set("kernels.1.op", "conv"), "kernels[1] (conv 1x32x16x16:32x3x3:s1x1:p1,1,1,1:d1x1:g32): unknown op 'conv'"),
    (_set("kernels.1.op", 7), "kernels[1].op: must be a string, got a number"),
    (_set("kernels.1.language", "glsl"), f"{CONV}: language 'glsl': a WebGPU report's kernels are wgsl"),
    (_set("kernels.0.shape", "64xbanana"), "kernels[0] (gemm 64xbanana): shape: "),
    (_set("kernels.0.shape", "64x64\x1b[2J"), "kernels[0].shape: '64x64\\x1b[2J' has control characters"),
    (_set("kernels.0.template", "0" * 64), f"{GEMM}: template '000000000000' is not this kernelforge's gemm wgsl"),
    (_set(f"{WINNER}.ms", -0.5), f"{CONV}: candidates[1].ms: must be a finite number > 0, got -0.5"),
    (_set(f"{WINNER}.ms", float("nan")), f"{CONV}: candidates[1].ms: must be a finite number > 0, got nan"),
    (_set("kernels.0.candidates.0.ms", 0), f"{GEMM}: candidates[0].ms: must be a finite number > 0, got 0"),
    (_set(f"{WINNER}.ms", "0.5"), "candidates[1].ms: must be a finite number > 0, got '0.5'"),
    (_set(f"{WINNER}.ms", None), f"{CONV}: winner candidates[1] has no time"),
    (_set(f"{WINNER}.ms", 1e-320), f"{CONV}: winner candidates[1] time 1e-320 ms is too small"),
    (_set("kernels.1.winner", 3), f"{CONV}: winner 3 is not the index of one of its 3 candidates"),
    (_set("kernels.1.winner", -1), f"{CONV}: winner -1 is not the index"),
    (_set("kernels.1.winner", True), f"{CONV}: winner True is not the index"),
    (_set("kernels.1.winner", "1"), f"{CONV}: winner '1' is not the index"),
    (_set("kernels.0.candidates.1.params.wg_x", 64), f"{GEMM}: winner candidates[1] params cannot run this problem on"),
    (_set("kernels.1.candidates", {}), f"{CONV}: candidates: must be an array, got an object"),
    (_set("kernels.1.candidates.2.error", 5), f"{CONV}: candidates[2].error: must be a string"),
    (_set("kernels.1.candidates.2.from", _DELETE), f"{CONV}: candidates[2]: missing field 'from'"),
    (_set("kernels.1.steps", -1), f"{CONV}: steps: must be an integer from 0"),
    (_set("kernels.1", []), "kernels[1]: must be an object, got an array"),
    (_set("kernels", {}), "kernels: must be an array, got an object"),
    (_set("format", "something-else"), "not a tuning report ('format' is 'something-else'"),
    (_set("version", 2), "report version 2 was made by a newer kernelforge (this one reads version 1)"),
    (_set("version", 0), "unsupported report version 0"),
    (_set("version", "1"), "unsupported report version '1'"),
    (_set("backend", "webgl2"), "backend 'webgl2' is not supported: only WebGPU reports"),
    (_set("manifest", "sha256-xyz"), "manifest: 'sha256-xyz' is not 'sha256-' and 64 lower-case hex digits"),
    (_set("clock", "sundial"), "clock: 'sundial' is not one of ['timestamp', 'wall']"),
    (_set("spent_ms", -1), "spent_ms: must be a finite number >= 0"),
    (_set("generator", "x" * 201), "generator: 201 characters (at most 200)"),
    (_set("model", _DELETE), "report: missing field 'model'"),
    (_set("adapter", "swiftshader"), "adapter: must be an object, got a string"),
    (_set("adapter.vendor", None), "adapter.vendor: must be a string, got null"),
    (_set("adapter.desc", "nvidia geforce rtx 4090"), "adapter.desc: 'nvidia geforce rtx 4090' is not the lower-cased"),
    (_set("adapter.fallback", "no"), "adapter.fallback: must be true or false, got a string"),
    (_set("adapter.subgroupSize", 4.5), "adapter.subgroupSize: must be an integer from 0 to 1024, got 4.5"),
    (_set("adapter.f16", "yes"), "adapter.f16: must be true or false, got a string"),
    (_set("adapter.limits.maxComputeWorkgroupSizeX", "256"), "adapter.limits.maxComputeWorkgroupSizeX: must be an"),
    (_set("adapter.limits.maxComputeWorkgroupSizeX", -1), "adapter.limits.maxComputeWorkgroupSizeX: must be an"),
    (_set("adapter.limits", []), "adapter.limits: must be an object, got an array"),
    (_set("adapter.userAgent", _DELETE), "adapter: missing field 'userAgent'"),
]


@pytest.mark.parametrize(("tamper", "message"), TAMPERED, ids=[m for _, m in TAMPERED])
def test_a_tampered_report_is_named_and_writes_nothing(tmp_path, tamper, message):
    report = tuning_report()
    tamper(report)
    path = tmp_path / "r.json"
    path.write_text(json.dumps(report))  # NaN is written as JSON's NaN extension: refused by the reader itself
    db = TuningDB(tmp_path / "db")
    with pytest.raises(ReportError) as info:
        parse_report(report, "r.json")
    assert str(info.value).startswith("r.json: ") and message in str(info.value)
    assert info.value.file == "r.json" and message in f"r.json: {info.value.detail}"
    with pytest.raises(ReportError, match=r"^.*r\.json: "):
        import_report(path, db)
    assert not (tmp_path / "db").exists() or list((tmp_path / "db").iterdir()) == []


def test_one_bad_record_rejects_the_report_over_a_stored_one(tmp_path):
    db = TuningDB(tmp_path)
    import_report(write(tmp_path / "good.json", tuning_report()), db)
    before = (tmp_path / f"{SLUG}.json").read_text()
    report = tuning_report(ms=0.1)  # faster: its first record would be written, were the report taken
    report["kernels"][1]["template"] = "f" * 64
    with pytest.raises(ReportError, match="stale record"):
        import_report(write(tmp_path / "bad.json", report), db)
    assert (tmp_path / f"{SLUG}.json").read_text() == before


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{ not json", "r.json: not a tuning report (not JSON: "),
        ("", "r.json: not a tuning report (not JSON: "),
        ("[1, 2]", "r.json: not a tuning report (a JSON document that is an array, not an object)"),
        ('{"format": "kernelforge-tuning-report", "version": NaN}', "r.json: refused: NaN is not a number JSON allows"),
        ("[" * 100 + "]" * 100, "r.json: refused: nesting 100 deep"),
        ('{"format": "kernelforge-tuning-report", "version": 1' + "1" * 30 + "}", "r.json: refused: an integer of 31"),
        (b"\xff\xfe{}", "r.json: not a tuning report (not UTF-8 text)"),
    ],
)
def test_a_file_that_is_not_a_report_is_named(tmp_path, text, message):
    path = tmp_path / "r.json"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(ReportError) as info:
        read_report(path)
    assert str(info.value).startswith(message.replace("r.json", str(path), 1))


def test_a_report_too_large_is_refused_unread(tmp_path, monkeypatch):
    monkeypatch.setattr(reports, "MAX_BYTES", 1000)
    path = write(tmp_path / "r.json", tuning_report())
    with pytest.raises(ReportError, match="more than 0 MiB: not a tuning report"):
        read_report(path)


def test_a_winner_that_breaks_a_constraint_names_the_device_and_the_reason():
    report = tuning_report()
    report["kernels"][0]["candidates"][1]["params"]["wg_x"] = 64  # 64 x 8 invocations
    with pytest.raises(ReportError, match=f"on {SLUG}: 512 invocations per workgroup > device limit 256"):
        parse_report(report, "r.json")


def test_a_missing_report_is_named(tmp_path):
    with pytest.raises(ReportError, match=r"nope\.json: cannot be read"):
        read_report(tmp_path / "nope.json")


def test_a_corrupt_database_file_is_reported_and_left_untouched(tmp_path):
    corrupt = tmp_path / "db" / f"{SLUG}.json"
    corrupt.parent.mkdir()
    corrupt.write_text("{ not json")
    with pytest.raises(DatabaseError, match="corrupt"):
        import_report(write(tmp_path / "r.json", tuning_report()), TuningDB(tmp_path / "db"))
    assert corrupt.read_text() == "{ not json"


def test_an_adapter_the_browser_did_not_name_is_refused():
    adapter = {**SWIFTSHADER_ADAPTER, "vendor": "", "architecture": "", "description": "", "desc": ""}
    with pytest.raises(ReportError, match="the browser named no adapter"):
        parse_report(tuning_report(adapter=adapter), "r.json")
