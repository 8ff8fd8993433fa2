"""Tuning database: round trip, fallback order, corrupt files, concurrent writers, hostile records."""

from __future__ import annotations

import json
import multiprocessing
import warnings

import pytest

from kernelforge.db import SCHEMA_VERSION, Query, Record, TuningDB, device_meta, new_record
from kernelforge.devices import DeviceInfo
from kernelforge.errors import DatabaseError
from kernelforge.ops import Limits, get_op
from kernelforge.ops.gemm import DEFAULT_PARAMS
from kernelforge.templates import kernel_hash

SPEC = get_op("gemm")
HASH = kernel_hash(SPEC, "wgsl")
FAST = {
    "wg_x": 8,
    "wg_y": 8,
    "wpt_m": 8,
    "wpt_n": 8,
    "tile_k": 4,
    "vec_width": 4,
    "vec_a": 4,
    "staging": 0,
    "precision": 0,
}
OTHER = {
    "wg_x": 16,
    "wg_y": 4,
    "wpt_m": 4,
    "wpt_n": 8,
    "tile_k": 8,
    "vec_width": 4,
    "vec_a": 1,
    "staging": 1,
    "precision": 0,
}
SCALAR = {
    "wg_x": 4,
    "wg_y": 4,
    "wpt_m": 2,
    "wpt_n": 2,
    "tile_k": 4,
    "vec_width": 1,
    "vec_a": 1,
    "staging": 0,
    "precision": 0,
}


def device(slug: str, cls: str = "cpu", vendor: str = "mesa", index: int = 0) -> DeviceInfo:
    return DeviceInfo(index, "wgpu", "wgsl", "vulkan", slug, vendor, 0, 0, "drv 1.0", "CPU", cls, slug, Limits())


def record(shape: str, params, time_s: float = 0.01, template_hash: str = HASH) -> Record:
    problem = SPEC.parse_problem(shape)
    return new_record(SPEC, "wgsl", problem, template_hash, params, time_s, 2 * time_s, {"ok": 3}, "drv")


def lookup(db: TuningDB, info: DeviceInfo, shape: str):
    return db.lookup(Query(info, SPEC, "wgsl", SPEC.parse_problem(shape), Limits(), HASH))


def test_round_trip(tmp_path):
    db = TuningDB(tmp_path)
    info = device("mesa-llvmpipe-vulkan-22.3")
    rec = record("64x64x64", FAST)
    assert db.update(device_meta(info), [rec]) == 1
    data = json.loads((tmp_path / "mesa-llvmpipe-vulkan-22.3.json").read_text())
    assert data["schema_version"] == SCHEMA_VERSION
    loaded = TuningDB(tmp_path).load(tmp_path / "mesa-llvmpipe-vulkan-22.3.json")
    assert loaded.records == {rec.key: rec}
    assert loaded.rejected == []
    assert rec.kernelforge_version and rec.date and rec.gflops > 0


def test_fallback_order(tmp_path):
    db = TuningDB(tmp_path)
    me = device("mesa-me-vulkan-1.0")
    sibling = device("mesa-sibling-vulkan-1.0")  # same class and vendor
    cousin = device("google-cousin-vulkan", vendor="google")  # same class only
    stranger = device("nvidia-big-vulkan-550", cls="dgpu", vendor="nvidia")
    db.update(device_meta(stranger), [record("64x64x64", SCALAR)])
    assert lookup(db, me, "64x64x64").source == "default"
    assert lookup(db, me, "64x64x64").params == DEFAULT_PARAMS
    db.update(device_meta(cousin), [record("64x64x64", OTHER)])
    got = lookup(db, me, "64x64x64")
    assert (got.source, got.params, got.device) == ("class", OTHER, "google-cousin-vulkan")
    db.update(device_meta(sibling), [record("64x64x64", SCALAR)])
    assert (lookup(db, me, "64x64x64").source, lookup(db, me, "64x64x64").params) == ("vendor", SCALAR)
    db.update(device_meta(me), [record("512x512x512", OTHER), record("8x8x8", SCALAR)])
    near = lookup(db, me, "400x400x400")
    assert (near.source, near.params) == ("nearest", OTHER)
    db.update(device_meta(me), [record("400x400x400", FAST)])
    exact = lookup(db, me, "400x400x400")
    assert (exact.source, exact.params) == ("tuned", FAST)


def test_stale_records_warm_start_and_stay_until_pruned(tmp_path):
    db = TuningDB(tmp_path)
    me = device("mesa-me-vulkan-1.0")
    old, older = "0" * 64, "1" * 64
    db.update(
        device_meta(me),
        [
            record("64x64x64", FAST, 0.01, old),
            record("64x64x64", OTHER, 0.02, older),
            record("61x61x61", SCALAR, 0.01, old),  # another shape
            record("128x128x128", SCALAR),  # current template, another shape
        ],
    )
    query = Query(me, SPEC, "wgsl", SPEC.parse_problem("64x64x64"), Limits(), HASH)
    # stale records are never looked up, but the exact shape's are offered to the tuner, fastest first
    assert lookup(db, me, "64x64x64").source == "nearest"
    assert db.stale_params(query) == [FAST, OTHER]
    odd = Query(me, SPEC, "wgsl", SPEC.parse_problem("61x61x61"), Limits(), HASH)
    assert db.stale_params(odd) == [SCALAR]
    # a fresh record of the shape does not delete them (another version's code may still use them) ...
    db.update(device_meta(me), [record("64x64x64", SCALAR)])
    assert len(db.load(db.path_for(me.slug)).records) == 5
    assert lookup(db, me, "64x64x64").params == SCALAR
    # ... pruning does, and only them
    assert db.prune(lambda op, language: HASH) == [(db.path_for(me.slug), 3)]
    shapes = sorted(r.shape for r in db.load(db.path_for(me.slug)).records.values())
    assert shapes == ["128x128x128", "64x64x64"]
    assert db.stale_params(query) == []


def test_nearest_skips_records_that_do_not_fit(tmp_path):
    db = TuningDB(tmp_path)
    me = device("mesa-me-vulkan-1.0")
    db.update(device_meta(me), [record("512x512x512", FAST), record("8x8x8", SCALAR)])
    # N=511 cannot take the vec4 record of the nearer shape, so the scalar one is used
    got = lookup(db, me, "511x511x511")
    assert (got.source, got.params) == ("nearest", SCALAR)


def test_a_lower_precision_record_keeps_its_precision_for_its_own_shape_only(tmp_path):
    db = TuningDB(tmp_path)
    me, other = device("mesa-me-vulkan-1.0"), device("mesa-other-vulkan-1.0")
    half = {**FAST, "precision": 1}
    db.update(device_meta(me, f16=True), [record("512x512x512", half)])
    f16 = Limits(f16=True)
    exact = db.lookup(Query.make(me, "gemm", SPEC.parse_problem("512x512x512"), "wgsl", f16))
    assert (exact.source, exact.params) == ("tuned", half)  # verified against GEMM's f16 bound on this shape
    near = db.lookup(Query.make(me, "gemm", SPEC.parse_problem("500x512x512"), "wgsl", f16))
    assert (near.source, near.params) == ("nearest", FAST)  # elsewhere: the same tiles in float32
    # another device of the class (even one without shader-f16) takes the tiles in float32 too
    assert lookup(db, other, "512x512x512").params == FAST


def test_stale_template_records_are_ignored(tmp_path):
    db = TuningDB(tmp_path)
    me = device("mesa-me-vulkan-1.0")
    db.update(device_meta(me), [record("64x64x64", FAST, template_hash="0" * 64)])
    assert lookup(db, me, "64x64x64").source == "default"


def test_corrupt_file_is_reported_and_never_overwritten(tmp_path):
    db = TuningDB(tmp_path)
    me = device("mesa-me-vulkan-1.0")
    path = tmp_path / "mesa-me-vulkan-1.0.json"
    path.write_text('{"schema_version": 1, "records": {')
    before = path.read_bytes()
    with pytest.raises(DatabaseError, match=str(path)):
        db.update(device_meta(me), [record("64x64x64", FAST)])
    assert path.read_bytes() == before
    with pytest.warns(UserWarning, match="corrupt"):
        assert lookup(db, me, "64x64x64").source == "default"
    assert path.read_bytes() == before


@pytest.mark.parametrize(
    "payload,match",
    [
        ({"records": {}}, "schema_version"),
        ({"schema_version": 99, "device": {}, "records": {}}, "schema_version 99"),
        ({"schema_version": 1, "device": {"fingerprint": "someone-else"}, "records": {}}, "does not match"),
        ([1, 2], "schema_version"),
    ],
)
def test_bad_files(tmp_path, payload, match):
    path = tmp_path / "mesa-me-vulkan-1.0.json"
    path.write_text(json.dumps(payload))
    with pytest.raises(DatabaseError, match=match):
        TuningDB(tmp_path).load(path)


@pytest.mark.parametrize(
    "param,value",
    [
        ("wg_x", "8u, 1, 1) fn evil() { loop {} } @compute @workgroup_size(8"),
        ("tile_k", 3),
        ("vec_width", 4.5),
        ("staging", True),
    ],
)
def test_crafted_record_with_code_is_rejected(tmp_path, param, value):
    db = TuningDB(tmp_path)
    me = device("mesa-me-vulkan-1.0")
    good = record("32x32x32", FAST)
    db.update(device_meta(me), [good, record("64x64x64", FAST)])
    path = tmp_path / "mesa-me-vulkan-1.0.json"
    data = json.loads(path.read_text())
    bad_key = record("64x64x64", FAST).key
    data["records"][bad_key]["params"][param] = value
    path.write_text(json.dumps(data))
    loaded = TuningDB(tmp_path).load(path)
    assert list(loaded.records) == [good.key]
    assert loaded.rejected and loaded.rejected[0][0] == bad_key and param in loaded.rejected[0][1]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = lookup(TuningDB(tmp_path), me, "64x64x64")
    assert got.source == "nearest" and got.params == FAST  # the crafted record never reached lookup


def test_merge_keeps_the_faster_record(tmp_path):
    db = TuningDB(tmp_path)
    meta = device_meta(device("mesa-me-vulkan-1.0"))
    db.update(meta, [record("64x64x64", FAST, 0.010), record("32x32x32", FAST, 0.001)])
    written = db.update(meta, [record("64x64x64", OTHER, 0.005), record("32x32x32", OTHER, 0.002)], keep_faster=True)
    assert written == 1
    loaded = db.load(tmp_path / "mesa-me-vulkan-1.0.json")
    by_shape = {r.shape: r for r in loaded.records.values()}
    assert by_shape["64x64x64"].params == OTHER
    assert by_shape["32x32x32"].params == FAST


def _writer(root: str, worker: int, count: int) -> None:
    db = TuningDB(root)
    meta = device_meta(device("mesa-shared-vulkan-1.0"))
    for i in range(count):
        db.update(meta, [record(f"{worker + 1}x{i + 1}x8", SCALAR)])


def test_concurrent_writers_lose_nothing(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), w, 15)) for w in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    loaded = TuningDB(tmp_path).load(tmp_path / "mesa-shared-vulkan-1.0.json")
    assert len(loaded.records) == 45
    assert not list(tmp_path.glob("*.tmp"))


def test_candidates_are_ordered_and_unique(tmp_path):
    db = TuningDB(tmp_path)
    me = device("mesa-me-vulkan-1.0")
    sibling = device("mesa-sibling-vulkan-1.0")
    db.update(device_meta(me), [record("64x64x64", FAST), record("512x512x512", FAST), record("8x8x8", SCALAR)])
    db.update(device_meta(sibling), [record("64x64x64", OTHER)])
    found = db.candidates(Query(me, SPEC, "wgsl", SPEC.parse_problem("64x64x64"), Limits(), HASH))
    assert [(f.source, f.params) for f in found] == [("tuned", FAST), ("nearest", SCALAR), ("vendor", OTHER)]
