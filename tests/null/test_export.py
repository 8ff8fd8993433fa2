"""``kernelforge export`` without a browser: manifest, weights, targets, errors (browser runs: tests/web)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from kernelforge.cli import main
from kernelforge.errors import ExportError
from kernelforge.export import export
from kernelforge.export.bundle import SINGLE_VARIANT_VERSION, manifest_text
from kernelforge.export.targets import keywords
from kernelforge.export.weights import ALIGN, compact
from kernelforge.graph.ir import GraphError
from kernelforge.graph.prepare import model_kernels
from kernelforge.testing.models import mlp, mobilenet_v2_style, save
from kernelforge.testing.tuning import subgroup_db

REPO_DB = Path(__file__).resolve().parents[2] / "tuning_db"


@pytest.fixture(scope="module")
def mnv2(tmp_path_factory):
    return save(mobilenet_v2_style(), tmp_path_factory.mktemp("models") / "mnv2.onnx")


@pytest.fixture(scope="module")
def bundle(mnv2, tmp_path_factory):
    out = tmp_path_factory.mktemp("bundle")
    report = export(mnv2, out, db=REPO_DB)
    return out, report, json.loads((out / "manifest.json").read_text())


def _constant(out: Path, manifest: dict, index: int) -> np.ndarray:
    entry = manifest["constants"][index]
    dtype = "<f2" if manifest["weights"]["dtype"] == "fp16" else "<f4"
    raw = (out / "weights.bin").read_bytes()
    return np.frombuffer(raw, dtype=dtype, count=entry["count"], offset=entry["offset"]).astype(np.float32)


def test_bundle_files_and_manifest_header(bundle):
    out, report, manifest = bundle
    assert sorted(p.name for p in out.iterdir()) == [
        "index.html",
        "kernelforge-tune.js",
        "kernelforge.d.ts",
        "kernelforge.js",
        "manifest.json",
        "weights.bin",
    ]
    assert manifest["format"] == "kernelforge-bundle" and manifest["version"] == SINGLE_VARIANT_VERSION == 3
    assert manifest["model"]["inputs"] == [{"name": "x", "shape": [1, 3, 64, 64], "dtype": "float32"}]
    assert manifest["model"]["outputs"] == [{"name": "logits", "shape": [1, 10], "dtype": "float32"}]
    assert (out / "weights.bin").stat().st_size == manifest["weights"]["bytes"] == report.weights_bytes
    for entry in manifest["constants"]:
        assert entry["offset"] % ALIGN == 0
        assert entry["offset"] + 4 * entry["count"] <= manifest["weights"]["bytes"]
    ids = [t["id"] for t in manifest["targets"]]
    assert ids[-2:] == ["default/wgsl", "default/glsl"]
    assert "google-swiftshader-vulkan/wgsl" in ids and "mesa-llvmpipe-gl-22.3/glsl" in ids


def test_manifest_ends_with_its_integrity_hash_and_carries_the_weights_hash(bundle):
    out, _, manifest = bundle
    text = (out / "manifest.json").read_text()
    # FORMAT.md, "Integrity": the last member, the SHA-256 of the text before it closed by "}"
    body, marker, rest = text.rpartition(',"integrity":"')
    assert marker and rest == f'sha256-{hashlib.sha256((body + "}").encode()).hexdigest()}"}}'
    assert list(manifest)[-1] == "integrity" and manifest["integrity"] == rest[:-2]
    assert json.loads(body + "}") == {k: v for k, v in manifest.items() if k != "integrity"}
    assert manifest["weights"]["sha256"] == hashlib.sha256((out / "weights.bin").read_bytes()).hexdigest()
    assert manifest_text(manifest) == text  # an integrity member already there is replaced, not hashed


def test_manifest_text_hashes_exact_bytes():
    text = manifest_text({"format": "f", "name": "é", "x": 1.5e-05})
    body, _, rest = text.rpartition(',"integrity":"')
    assert body == '{"format":"f","name":"\\u00e9","x":1.5e-05'
    assert rest == f'sha256-{hashlib.sha256((body + "}").encode()).hexdigest()}"}}'


def test_targets_carry_device_match_data_and_sources(bundle):
    _, _, manifest = bundle
    by_id = {t["id"]: t for t in manifest["targets"]}
    swift = by_id["google-swiftshader-vulkan/wgsl"]
    assert swift["device"]["keywords"] == ["swiftshader"] and swift["device"]["vendor"] == "google"
    assert swift["device"]["class"] == "cpu"
    assert by_id["default/wgsl"]["device"] is None
    assert set(by_id["default/wgsl"]["kernels"]) == {"default"}
    kernel_steps = [s for s in swift["plan"]["steps"] if s["op"] != "relayout"]
    assert sum(swift["kernels"].values()) == len(kernel_steps)
    assert sum(n for k, n in swift["kernels"].items() if k != "default") > 0  # the database was used


def test_only_the_models_kernels_are_shipped(tmp_path):
    path = save(mlp(), tmp_path / "mlp.onnx")
    export(path, tmp_path / "b", db=REPO_DB)
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    ops = {s["op"] for t in manifest["targets"] for s in t["plan"]["steps"]}
    assert {op for op, _ in model_kernels(path)} <= ops <= {op for op, _ in model_kernels(path)} | {"relayout"}
    assert "conv2d" not in ops
    assert not any("conv" in text.lower() for text in manifest["shaders"])


def test_wgsl_plan_binds_the_models_weights(bundle, mnv2):
    out, _, manifest = bundle
    plan = next(t for t in manifest["targets"] if t["id"] == "default/wgsl")["plan"]
    model = onnx.load(mnv2)
    head = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    gemm = next(s for s in plan["steps"] if s["op"] == "gemm")
    consts = [_constant(out, manifest, b["constant"]) for b in gemm["bindings"] if "constant" in b]
    # the classifier's weight matrix is bound as the GEMM's B (transposed or not): same values
    weights = [w for w in head.values() if w.ndim == 2]
    assert weights, "the model has a 2-D classifier weight"
    assert any(np.array_equal(np.sort(c), np.sort(weights[0].reshape(-1))) for c in consts)
    buffers = plan["buffers"]
    for step in plan["steps"]:
        assert 0 <= step["shader"] < len(manifest["shaders"])
        assert all(1 <= g <= 65535 for g in step["workgroups"])
        for b in step["bindings"]:
            assert ("constant" in b) != ("buffer" in b)
            if "buffer" in b:
                assert b["bytes"] <= buffers[b["buffer"]]


def test_glsl_plan_references_are_valid(bundle):
    _, _, manifest = bundle
    for target in manifest["targets"]:
        if target["language"] != "glsl":
            continue
        plan = target["plan"]
        n = len(plan["textures"])
        assert manifest["shaders"][plan["vertex"]].startswith("#version 300 es")
        for step in plan["steps"]:
            assert manifest["shaders"][step["shader"]].startswith("#version 300 es")
            assert all(0 <= i["texture"] < n for i in step["inputs"]) and 1 <= len(step["targets"]) <= 4
            first = plan["textures"][step["targets"][0]]
            assert (first["width"], first["height"]) == (step["width"], step["height"])
        assert [o["name"] for o in plan["outputs"]] == ["logits"] and plan["outputs"][0]["size"] == 10
        assert plan["textures"][plan["outputs"][0]["texture"]]["pack"] == 4


def test_fp16_weights_halve_the_file_and_round_trip(mnv2, tmp_path, bundle):
    out32, _, m32 = bundle
    export(mnv2, tmp_path, db=REPO_DB, weights="fp16")
    m16 = json.loads((tmp_path / "manifest.json").read_text())
    assert m16["weights"]["dtype"] == "fp16"
    assert m16["weights"]["bytes"] < 0.6 * m32["weights"]["bytes"]
    # each half constant is some float constant rounded (the two bundles' plans may lay weights out differently:
    # f16 weights have their own records, so a target may choose another layout and ship one constant less)
    fulls = [_constant(out32, m32, i) for i in range(len(m32["constants"]))]
    for i in range(len(m16["constants"])):
        half = _constant(tmp_path, m16, i)
        assert any(f.size == half.size and np.allclose(half, f, rtol=1e-3, atol=1e-7) for f in fulls), i
    assert len(m16["constants"]) >= len(m32["constants"]) - 2


def test_unsupported_node_fails_at_export_naming_it(tmp_path):
    node = helper.make_node("TopK", ["x", "k"], ["y", "idx"], name="my_topk")
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])],
        [helper.make_tensor("k", TensorProto.INT64, [1], [2])],
    )
    path = save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), tmp_path / "topk.onnx")
    with pytest.raises(GraphError, match="TopK node 'my_topk'"):
        export(path, tmp_path / "b", db=REPO_DB)
    assert not (tmp_path / "b").exists()
    assert main(["export", str(path), "--out", str(tmp_path / "c"), "--db", str(REPO_DB)]) == 1
    assert not (tmp_path / "c").exists()


def test_target_selectors(mnv2, tmp_path):
    report = export(mnv2, tmp_path / "a", db=REPO_DB, targets=["swiftshader"])
    assert [t.id for t in report.targets] == ["google-swiftshader-vulkan/wgsl", "default/wgsl", "default/glsl"]
    report = export(mnv2, tmp_path / "b", db=REPO_DB, targets=["glsl"])
    assert [t.id for t in report.targets] == ["mesa-llvmpipe-gl-22.3/glsl", "default/wgsl", "default/glsl"]
    with pytest.raises(ExportError, match="nosuchgpu matched no device"):
        export(mnv2, tmp_path / "c", db=REPO_DB, targets=["nosuchgpu"])


def test_corrupt_database_file_is_named_skipped_for_its_device_and_left_alone(mnv2, tmp_path):
    db = tmp_path / "db"
    shutil.copytree(REPO_DB, db, ignore=shutil.ignore_patterns(".studies", "*.lock"))
    bad = db / "mesa-llvmpipe-vulkan-22.3.json"
    bad.write_text('{"schema_version": 1, "records": {')
    before = bad.read_bytes()
    report = export(mnv2, tmp_path / "b", db=db)
    assert "mesa-llvmpipe-vulkan-22.3.json" in report.summary() and "skipped" in report.summary()
    ids = [t.id for t in report.targets]
    assert "google-swiftshader-vulkan/wgsl" in ids and not any("llvmpipe-vulkan" in i for i in ids)
    with pytest.raises(ExportError, match=r"mesa-llvmpipe-vulkan-22\.3\.json"):  # asked for by name: an error
        export(mnv2, tmp_path / "c", db=db, targets=["llvmpipe-vulkan"])
    assert bad.read_bytes() == before


def test_cli_export(mnv2, tmp_path, capsys):
    out = tmp_path / "bundle"
    assert main(["export", str(mnv2), "--out", str(out), "--targets", "cpu", "--db", str(REPO_DB)]) == 0
    text = capsys.readouterr().out
    assert "google-swiftshader-vulkan/wgsl" in text and "default/glsl" in text and "weights.bin" in text
    assert json.loads((out / "manifest.json").read_text())["model"]["name"] == "mnv2"
    assert main(["export", str(tmp_path / "missing.onnx"), "--out", str(out)]) == 2
    assert main(["export", str(mnv2), "--out", str(out), "--db", str(tmp_path / "nodb")]) == 2
    assert "no such directory" in capsys.readouterr().err


def test_keywords_and_compact():
    assert keywords("google-swiftshader-vulkan", "google", "vulkan") == ["swiftshader"]
    assert keywords("mesa-llvmpipe-gl-22.3", "mesa", "gl") == ["llvmpipe"]
    assert keywords("nvidia-geforce-rtx-3060-vulkan-535.1", "nvidia", "vulkan") == ["geforce", "rtx", "3060"]
    assert compact("#version 300 es\n// note\n  int a = 1; // why\n\n") == "#version 300 es\nint a = 1;\n"


def test_planned_kernels_include_layout_conversions(mnv2, tmp_path):
    from kernelforge.db import TuningDB
    from kernelforge.export.targets import select_targets
    from kernelforge.graph.prepare import planned_kernels

    db = TuningDB(subgroup_db(tmp_path / "db", mnv2, 4, 4))  # an NHWC record, used near its shape too
    swift = next(t for t in select_targets(db, ["swiftshader"]) if not t.is_default)
    planned = planned_kernels(mnv2, swift.info, "wgsl", swift.info.limits, db)
    assert "transpose" in {op for op, _ in planned}  # the NHWC convs need the NCHW input converted
    assert "transpose" not in {op for op, _ in model_kernels(mnv2)}


def test_small_transposes_default_to_the_naive_kernel():
    from kernelforge.ops import Limits, get_op
    from kernelforge.ops.transpose import TransposeProblem

    spec = get_op("transpose")
    assert spec.default_params(TransposeProblem((1, 3, 64, 64), (0, 2, 3, 1)), Limits(), "wgsl")["tiled"] == 0
    assert spec.default_params(TransposeProblem((1, 64, 56, 56), (0, 2, 3, 1)), Limits(), "wgsl")["tiled"] == 1


def test_glsl_textures_are_shared_only_between_disjoint_lifetimes(mnv2, monkeypatch):
    import kernelforge.graph.program_glsl as program_glsl

    captured = []

    def record(program):
        shared = real(program)
        captured.append((program, shared))
        return shared

    real = program_glsl.share_textures
    monkeypatch.setattr(program_glsl, "share_textures", record)
    export_dir = Path(mnv2).parent / "shared"
    export(mnv2, export_dir, db=REPO_DB, targets=["glsl"])
    targets = json.loads((export_dir / "manifest.json").read_text())["targets"]
    shared = [t["plan"] for t in targets if t["language"] == "glsl"]
    assert len(captured) == len(shared) == 2
    for (before, after), written in zip(captured, shared, strict=True):
        assert [(t.width, t.height, t.pack) for t in after.resources] == [
            (t["width"], t["height"], t["pack"]) for t in written["textures"]
        ]
        assert len(after.resources) < len(before.resources)  # some reuse happens
        # where every original texture went, from the identical structure of the two programs
        slot = {}
        for b, a in zip(before.steps, after.steps, strict=True):
            slot.update(zip([x.resource for x in b.outputs], [x.resource for x in a.outputs], strict=True))
            slot.update(zip([x.resource for x in b.inputs], [x.resource for x in a.inputs], strict=True))
        for b, a in zip((*before.inputs, *before.uploads), (*after.inputs, *after.uploads), strict=True):
            slot[b.resource] = a.resource
        for t, s in slot.items():
            assert before.resources[t] == after.resources[s]
        # replay: the texture a pass reads still holds what its producer wrote
        holds = {slot[i.resource]: i.resource for i in (*before.inputs, *before.uploads)}
        for b in before.steps:
            for i in b.inputs:
                assert holds[slot[i.resource]] == i.resource, f"{b.node} reads an overwritten texture"
            assert not {slot[i.resource] for i in b.inputs} & {slot[t.resource] for t in b.outputs}
            for t in b.outputs:
                holds[slot[t.resource]] = t.resource
        for o in before.outputs:
            assert holds[slot[o.resources[0]]] == o.resources[0]


def test_subgroup_kernels_enable_subgroups_and_their_plan_says_the_size(tmp_path):
    model = save(mobilenet_v2_style(), tmp_path / "mnv2.onnx")
    export(model, tmp_path / "b", db=subgroup_db(tmp_path / "db", model, 4, 4))
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    swift, default = manifest["targets"][0], manifest["targets"][1]
    assert swift["plan"]["subgroup_size"] == 4 and "subgroup_size" not in default["plan"]
    shared = {s["shader"] for s in swift["plan"]["steps"] if s["params"].get("sg_share")}
    assert shared and swift["kernels"]["tuned"] == 1  # the record's shape, and convs near it
    assert all(manifest["shaders"][i].startswith("enable subgroups;\n") for i in shared)
    others = {s["shader"] for s in swift["plan"]["steps"]} - shared
    assert others and not any("enable subgroups" in manifest["shaders"][i] for i in others)


@pytest.mark.parametrize("size", [0, 8, "4", True])
def test_subgroup_records_need_the_devices_subgroup_size(tmp_path, size):
    model = save(mobilenet_v2_style(), tmp_path / "mnv2.onnx")
    db = subgroup_db(tmp_path / "db", model, 4, size)
    if size in (0, 8):  # a device without 4-lane subgroups cannot run the record: the plan falls back
        export(model, tmp_path / "b", db=db)
        swift = json.loads((tmp_path / "b" / "manifest.json").read_text())["targets"][0]
        assert "subgroup_size" not in swift["plan"] and "tuned" not in swift["kernels"]
    else:  # the file is data: a non-integer size is an error naming the device, not a kernel choice
        with pytest.raises(ExportError, match=r"google-swiftshader-vulkan.*subgroup_size"):
            export(model, tmp_path / "b", db=db)
