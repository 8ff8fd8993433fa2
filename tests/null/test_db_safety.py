"""The tuning database never loses a record, never trades a faster one for a slower one, and one bad file
costs only its own device."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import pytest

from kernelforge.cli import main
from kernelforge.db import Query, TuningDB, device_meta, new_record
from kernelforge.devices import DeviceInfo
from kernelforge.errors import DatabaseError
from kernelforge.ops import Limits

from .test_db import FAST, HASH, SPEC
from .test_db import SCALAR as SLOW

DATA = Path(__file__).resolve().parents[1] / "data"
CORPUS = sorted((DATA / "bad_db").glob("*.json"))


def device(slug: str) -> DeviceInfo:
    return DeviceInfo(0, "wgpu", "wgsl", "vulkan", slug, "mesa", 0, 0, "1", "CPU", "cpu", slug, Limits())


def record(shape: str, params, time_s: float):
    return new_record(SPEC, "wgsl", SPEC.parse_problem(shape), HASH, params, time_s, 2 * time_s, {}, "1")


@pytest.mark.parametrize("path", CORPUS, ids=[p.stem for p in CORPUS])
def test_every_bad_file_is_reported_skipped_for_its_device_and_left_alone(tmp_path, path):
    bad = tmp_path / "mesa-bad-vulkan-1.0.json"
    shutil.copyfile(path, bad)
    before = bad.read_bytes()
    db = TuningDB(tmp_path)
    with pytest.raises(DatabaseError, match=str(bad)):
        db.load(bad)
    with pytest.raises(DatabaseError, match=str(bad)):  # a tune never overwrites it
        db.update(device_meta(device("mesa-bad-vulkan-1.0")), [record("8x8x8", FAST, 1e-3)])
    # another device keeps working: its lookups, the lookups of the bad one (defaults) and a write of its own
    good = device("mesa-good-vulkan-1.0")
    db.update(device_meta(good), [record("8x8x8", FAST, 1e-3)])
    problem = SPEC.parse_problem("8x8x8")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        found = db.lookup(Query(good, SPEC, "wgsl", problem, Limits(), HASH))
        fallback = db.lookup(Query(device("mesa-bad-vulkan-1.0"), SPEC, "wgsl", problem, Limits(), HASH))
    assert (found.source, found.params) == ("tuned", FAST)
    assert fallback.source == "vendor"  # the good device's record, the bad file skipped
    assert any(str(bad) in str(w.message) for w in caught)
    assert main(["db", "show", "--db", str(tmp_path)]) == 1
    assert bad.read_bytes() == before


def test_an_oversized_file_is_refused_before_it_is_read(tmp_path, monkeypatch):
    from kernelforge.db import _json

    path = tmp_path / "mesa-big-vulkan-1.0.json"
    path.write_text(json.dumps({"schema_version": 1, "device": {"fingerprint": path.stem}, "records": {}}))
    monkeypatch.setattr(_json, "MAX_BYTES", 16)
    with pytest.raises(DatabaseError, match="bytes"):
        TuningDB(tmp_path).load(path)


def _newer_db(tmp_path: Path) -> tuple[TuningDB, Path, dict]:
    data = json.loads((DATA / "newer_records.json").read_text())
    data["device"]["fingerprint"] = "mesa-me-vulkan-1.0"
    path = tmp_path / "mesa-me-vulkan-1.0.json"
    path.write_text(json.dumps(data))
    return TuningDB(tmp_path), path, data["records"]


def test_records_of_a_newer_version_are_kept_verbatim_on_every_rewrite(tmp_path):
    db, path, newer = _newer_db(tmp_path)
    loaded = db.load(path)
    assert not loaded.records and len(loaded.rejected) == 2
    meta = device_meta(device("mesa-me-vulkan-1.0"))
    assert db.update(meta, [record("16x16x16", FAST, 1e-3)]) == 1  # a tune
    assert db.prune(lambda op, language: HASH) == [(path, 0)]  # unreadable records are not judged stale
    rewritten = json.loads(path.read_text())["records"]
    for key, raw in newer.items():
        assert rewritten[key] == raw
    assert len(rewritten) == 3
    # db merge into another database copies them too
    other = tmp_path / "other"
    other.mkdir()
    shutil.copyfile(path, other / path.name)
    target = tmp_path / "target"
    assert main(["db", "merge", str(other), "--db", str(target)]) == 0
    merged = json.loads((target / path.name).read_text())["records"]
    assert {k: merged[k] for k in newer} == newer and len(merged) == 3


def test_a_record_is_replaced_only_by_a_faster_one_unless_replace(tmp_path):
    db = TuningDB(tmp_path)
    meta = device_meta(device("mesa-me-vulkan-1.0"))
    (first,) = db.store(meta, [record("64x64x64", FAST, 0.111e-3)])
    assert first.written and first.previous_time_s is None
    (slower,) = db.store(meta, [record("64x64x64", SLOW, 0.553e-3)])
    assert not slower.written and slower.previous_time_s == pytest.approx(0.111e-3)
    stored = db.load(tmp_path / "mesa-me-vulkan-1.0.json").records
    assert [r.params for r in stored.values()] == [FAST]
    (faster,) = db.store(meta, [record("64x64x64", SLOW, 0.05e-3)])
    assert faster.written and faster.previous_time_s == pytest.approx(0.111e-3)
    (forced,) = db.store(meta, [record("64x64x64", FAST, 0.9e-3)], replace=True)
    assert forced.written
    assert [r.time_s for r in db.load(tmp_path / "mesa-me-vulkan-1.0.json").records.values()] == [0.9e-3]


def test_a_record_meeting_an_unreadable_one_is_not_written_unless_replace(tmp_path):
    db, path, newer = _newer_db(tmp_path)
    key = next(iter(newer))
    meta = device_meta(device("mesa-me-vulkan-1.0"))
    clash = record("8x8x8", FAST, 1e-6)
    original = dict(newer)
    # a readable record under the same key as an unreadable one: the time of the unreadable one is unknown
    data = json.loads(path.read_text())
    data["records"][clash.key] = data["records"].pop(key)
    path.write_text(json.dumps(data))
    (outcome,) = db.store(meta, [clash])
    assert not outcome.written
    assert json.loads(path.read_text())["records"][clash.key] == original[key]
