"""Bundles of several variants (shape sets of a model with a symbolic sequence length), without a browser.

The token model (``kernelforge.testing.symbolic``) binds the same weights at every length: a bundle of three
lengths must hold each weight once (``weights.bin`` byte for byte the one-variant bundle's), every shader text
once, and keep a single-variant bundle in the version-3 layout. Browser runs: ``tests/web/test_variants_bundle.py``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from kernelforge.errors import ExportError
from kernelforge.export import export
from kernelforge.export.bundle import FORMAT_VERSION, SINGLE_VARIANT_VERSION, manifest_text
from kernelforge.graph.onnx_import import ModelError, import_model
from kernelforge.graph.reference import run_graph
from kernelforge.testing.symbolic import seq_attention, seq_feeds

REPO_DB = Path(__file__).resolve().parents[2] / "tuning_db"
SEQS = (32, 64, 128)


def shapes(seq: int) -> dict[str, list[int]]:
    return {"ids": [1, seq], "mask": [1, seq]}


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("variants")
    model = seq_attention()
    one = export(model, root / "one", db=REPO_DB, input_shapes=shapes(32), name="seq")
    three = export(model, root / "three", db=REPO_DB, variants=[shapes(n) for n in SEQS], name="seq")
    return {"root": root, "one": one, "three": three}


def _manifest(root: Path, name: str) -> dict[str, Any]:
    return json.loads((root / name / "manifest.json").read_text())


def _plans(manifest: dict[str, Any]) -> list[tuple[int, dict[str, Any]]]:
    return [(k, t) for k, v in enumerate(manifest["variants"]) for t in v["targets"]]


def test_the_model_matches_onnxruntime_at_every_length() -> None:
    model = seq_attention()
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    for seq in SEQS:
        feeds = seq_feeds(seq)
        graph = import_model(model, shapes(seq))
        got = run_graph(graph, feeds)["y"]
        want = session.run(None, feeds)[0]
        assert got.shape == want.shape == (1, seq, 16)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * float(np.abs(want).max()))


def test_three_variants_store_each_weight_once(bundles: dict[str, Any]) -> None:
    root, one, three = bundles["root"], bundles["one"], bundles["three"]
    single, multi = _manifest(root, "one"), _manifest(root, "three")
    # no constant depends on the length: weights.bin is the one-variant bundle's, byte for byte
    assert (root / "three" / "weights.bin").read_bytes() == (root / "one" / "weights.bin").read_bytes()
    assert three.weights_bytes == one.weights_bytes and multi["constants"] == single["constants"]
    assert multi["weights"] == single["weights"]
    # every plan of every variant binds constants of the one shared table
    used = set()
    for _, target in _plans(multi):
        plan = target["plan"]
        if target["language"] == "wgsl":
            used |= {b["constant"] for s in plan["steps"] for b in s["bindings"] if "constant" in b}
        else:
            used |= {c["constant"] for c in plan.get("constants", [])}
    assert used == set(range(len(multi["constants"])))
    print(
        f"\nseq_attention, {len(single['targets'])} targets: 1 variant: weights.bin {one.weights_bytes} B, "
        f"manifest {one.manifest_bytes} B, {one.shaders} shaders; {len(SEQS)} variants: weights.bin "
        f"{three.weights_bytes} B, manifest {three.manifest_bytes} B, {three.shaders} shaders"
    )


def test_shaders_are_stored_once_and_shared_across_variants(bundles: dict[str, Any]) -> None:
    multi = _manifest(bundles["root"], "three")
    assert len(set(multi["shaders"])) == len(multi["shaders"])
    users: dict[int, set[int]] = {}
    for k, target in _plans(multi):
        plan = target["plan"]
        candidates = [c["shader"] for kernel in plan.get("kernels", []) for c in kernel["candidates"]]
        for index in [s["shader"] for s in plan["steps"]] + candidates + ([plan["vertex"]] if "vertex" in plan else []):
            users.setdefault(index, set()).add(k)
    assert set(users) == set(range(len(multi["shaders"])))
    shared = [i for i, ks in users.items() if ks == set(range(len(SEQS)))]
    assert shared, "the vertex shader, at least, serves every variant"
    # a length-specialised kernel per variant, but far fewer than three bundles' worth
    single = _manifest(bundles["root"], "one")
    assert len(single["shaders"]) < len(multi["shaders"]) < len(SEQS) * len(single["shaders"])


def _without_candidates(targets: list[dict[str, Any]]) -> list[dict[str, Any]]:
    stripped = []
    for target in targets:
        plan = {k: v for k, v in target["plan"].items() if k != "kernels"}
        if "steps" in plan and "vertex" not in plan:
            plan["steps"] = [{k: v for k, v in s.items() if k != "kernel"} for s in plan["steps"]]
        stripped.append({**target, "plan": plan})
    return stripped


def test_the_manifest_of_several_variants(bundles: dict[str, Any]) -> None:
    root = bundles["root"]
    multi, single = _manifest(root, "three"), _manifest(root, "one")
    assert multi["version"] == FORMAT_VERSION == 4 and single["version"] == SINGLE_VARIANT_VERSION == 3
    assert multi["model"] == {"name": "seq"} and "targets" not in multi
    assert list(multi)[-2:] == ["variants", "integrity"]
    for seq, variant in zip(SEQS, multi["variants"], strict=True):
        assert variant["inputs"] == [
            {"name": "ids", "shape": [1, seq], "dtype": "int64"},
            {"name": "mask", "shape": [1, seq], "dtype": "float32"},
        ]
        assert variant["outputs"] == [{"name": "y", "shape": [1, seq, 16], "dtype": "float32"}]
        assert [t["id"] for t in variant["targets"]] == [t["id"] for t in single["targets"]]
        wgsl = next(t for t in variant["targets"] if t["id"] == "default/wgsl")["plan"]
        assert wgsl["inputs"][0] == {"name": "ids", "buffer": wgsl["inputs"][0]["buffer"], "bytes": 4 * seq}
    # the first variant's plans are those of a bundle of that length alone, but for the candidates: the bundle's
    # byte budget for them is spent on the costliest kernels of all variants
    assert _without_candidates(multi["variants"][0]["targets"]) == _without_candidates(single["targets"])
    # the integrity hash covers the variants: the text is the hash of everything before it
    assert manifest_text(multi) == (root / "three" / "manifest.json").read_text()
    report = bundles["three"]
    assert [v.inputs for v in report.variants] == [{"ids": (1, n), "mask": (1, n)} for n in SEQS]
    assert report.targets == report.variants[0].targets
    text = report.summary()
    assert "variant 3: ids [1, 128], mask [1, 128]" in text and text.count("default/wgsl") == len(SEQS)


def test_one_variant_is_the_version_3_bundle(tmp_path: Path) -> None:
    model = seq_attention()
    export(model, tmp_path / "a", db=REPO_DB, input_shapes=shapes(64))
    export(model, tmp_path / "b", db=REPO_DB, variants=[{"ids": [1, 64]}], input_shapes={"mask": [1, 64]})
    for file in ("manifest.json", "weights.bin"):
        assert (tmp_path / "a" / file).read_bytes() == (tmp_path / "b" / file).read_bytes(), file


def test_variant_errors(tmp_path: Path) -> None:
    model = seq_attention()
    same = r"variants 1 and 3 have the same input shapes \(ids \[1, 8\], mask \[1, 8\]\)"
    with pytest.raises(ExportError, match=same):
        export(model, tmp_path / "b", db=REPO_DB, variants=[shapes(8), shapes(16), shapes(8)])
    with pytest.raises(ExportError, match="variants is empty"):
        export(model, tmp_path / "b", db=REPO_DB, variants=[])
    with pytest.raises(ModelError, match=r"input_shapes names unknown input\(s\) \['tokens'\]"):
        export(model, tmp_path / "b", db=REPO_DB, variants=[shapes(8), {"tokens": [1, 4]}])
    assert not (tmp_path / "b").exists(), "nothing is written before every variant is planned"


def test_an_open_sequence_dim_names_itself_and_both_ways_to_set_it() -> None:
    with pytest.raises(ModelError) as info:
        import_model(seq_attention())
    message = str(info.value)
    assert "input 'ids' has symbolic dim 1 ('seq') in ['batch', 'seq']" in message
    assert "input_shapes={'ids': [1, <seq>]}" in message
    assert "--shape ids=1x<seq> or --dim seq=N" in message
    # the symbolic batch dim alone defaults to 1
    assert import_model(seq_attention(), {"ids": [1, 4], "mask": [1, 4]}).values["y"].shape == (1, 4, 16)
