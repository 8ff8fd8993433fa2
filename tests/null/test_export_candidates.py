"""Candidate configs in a bundle (FORMAT.md, "Candidates"), without a browser: what ships, and what does not."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import pytest

from kernelforge.cli import main
from kernelforge.export import export
from kernelforge.export.candidates import BYTE_BUDGET, DEFAULT_CANDIDATES, Proposal, allocate
from kernelforge.export.targets import BROWSER_LIMITS
from kernelforge.export.weights import Shaders
from kernelforge.ops import get_op
from kernelforge.templates import kernel_hash
from kernelforge.testing.models import mobilenet_v2_style, save

REPO_DB = Path(__file__).resolve().parents[2] / "tuning_db"
DEVICES = {p.stem for p in REPO_DB.glob("*.json")}


@pytest.fixture(scope="module")
def mnv2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save(mobilenet_v2_style(), tmp_path_factory.mktemp("models") / "mnv2.onnx")


def _manifest(mnv2: Path, out: Path, k: int) -> dict[str, Any]:
    export(mnv2, out, db=REPO_DB, candidates=k)
    return json.loads((out / "manifest.json").read_text())


@pytest.fixture(scope="module", params=[DEFAULT_CANDIDATES, 3, 5])
def bundle(request: pytest.FixtureRequest, mnv2: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[int, dict]:
    return request.param, _manifest(mnv2, tmp_path_factory.mktemp("bundle"), request.param)


def _bindings(text: str) -> int:
    return max(int(b) for b in re.findall(r"@binding\s*\(\s*(\d+)", text))


def test_every_wgsl_plan_carries_candidates_and_no_glsl_plan_does(bundle: tuple[int, dict]) -> None:
    _, manifest = bundle
    for target in manifest["targets"]:
        plan = target["plan"]
        if target["language"] == "glsl":
            assert "kernels" not in plan and all("kernel" not in s for s in plan["steps"])
            continue
        assert plan["kernels"], target["id"]
        used = {s["kernel"] for s in plan["steps"] if "kernel" in s}
        assert used == set(range(len(plan["kernels"]))), f"{target['id']}: a kernel row no step uses"


def test_a_candidate_is_a_valid_other_config_binding_what_its_step_binds(bundle: tuple[int, dict]) -> None:
    _, manifest = bundle
    shaders = manifest["shaders"]
    for target in (t for t in manifest["targets"] if t["language"] == "wgsl"):
        plan = target["plan"]
        for step in (s for s in plan["steps"] if "kernel" in s):
            kernel = plan["kernels"][step["kernel"]]
            spec = get_op(kernel["op"])
            problem = spec.parse_problem(kernel["shape"])
            assert spec.problem_key(problem) == kernel["shape"] and kernel["template"] == kernel_hash(spec, "wgsl")
            assert step["op"] == kernel["op"]
            for c in kernel["candidates"]:
                assert c["params"] != step["params"], f"{step['node']}: its own config again"
                assert c["from"] in {"default", "seed"} | DEVICES
                size = spec.subgroup_size(c["params"])
                assert c.get("subgroup_size", 0) == size
                # a subgroup config goes with any plan that uses none, or one of its size only
                assert plan.get("subgroup_size", size) == size or not size
                limits = dataclasses.replace(BROWSER_LIMITS, subgroup_size=size)
                assert spec.validate_params(c["params"], "wgsl") == c["params"]
                assert spec.constraints(problem, c["params"], limits, "wgsl") is None
                assert shaders[c["shader"]].startswith("enable subgroups;") == bool(size)
                assert _bindings(shaders[c["shader"]]) == len(step["bindings"])
                launch = spec.launch(problem, c["params"])
                assert c["workgroups"] == list(launch.workgroups) and c["uniforms"] == list(launch.uniforms)


def test_at_most_k_minus_1_candidates_without_subgroups_and_as_many_per_subgroup_size(bundle: tuple[int, dict]) -> None:
    k, manifest = bundle
    most = 0
    for target in (t for t in manifest["targets"] if t["language"] == "wgsl"):
        for kernel in target["plan"]["kernels"]:
            for size in {c.get("subgroup_size", 0) for c in kernel["candidates"]}:
                same = [c for c in kernel["candidates"] if c.get("subgroup_size", 0) == size]
                assert len(same) <= k - 1, (target["id"], kernel["shape"], size)
                most = max(most, len(same))
            configs = [json.dumps(c["params"], sort_keys=True) for c in kernel["candidates"]]
            assert len(set(configs)) == len(configs)
    assert most == k - 1


def test_the_default_config_is_offered_where_the_plan_runs_another(tmp_path: Path, mnv2: Path) -> None:
    manifest = _manifest(mnv2, tmp_path / "b", DEFAULT_CANDIDATES)
    offered = 0
    for target in (t for t in manifest["targets"] if t["language"] == "wgsl" and t["id"] != "default/wgsl"):
        plan = target["plan"]
        for step in (s for s in plan["steps"] if "kernel" in s and s["source"] != "default"):
            kernel = plan["kernels"][step["kernel"]]
            spec = get_op(kernel["op"])
            default = spec.default_params(spec.parse_problem(kernel["shape"]), BROWSER_LIMITS, "wgsl")
            default = spec.validate_params(default, "wgsl")  # with the tunables its table predates (precision)
            offered += any(c["from"] == "default" and c["params"] == default for c in kernel["candidates"])
    assert offered > 0


def test_candidates_1_ships_none_and_the_cli_refuses_0(tmp_path: Path, mnv2: Path, capsys: Any) -> None:
    manifest = _manifest(mnv2, tmp_path / "b", 1)
    assert all("kernels" not in t["plan"] for t in manifest["targets"])
    assert main(["export", str(mnv2), "--out", str(tmp_path / "c"), "--candidates", "0", "--db", str(REPO_DB)]) == 2
    assert "--candidates 0: give 1 (no candidates) or more" in capsys.readouterr().err
    assert main(["export", str(mnv2), "--out", str(tmp_path / "d"), "--candidates", "2", "--db", str(REPO_DB)]) == 0
    assert "kernels" in json.loads((tmp_path / "d" / "manifest.json").read_text())["targets"][-2]["plan"]


def test_a_record_of_other_buffer_layouts_is_offered_in_the_steps_layouts(tmp_path: Path, mnv2: Path) -> None:
    # a GPU that won with NCHW activations and OIHW weights: its configs are offered in the plan's own layouts
    db = tmp_path / "db"
    db.mkdir()
    data = json.loads((REPO_DB / "google-swiftshader-vulkan.json").read_text())
    data["device"].update({"fingerprint": "acme-gpu-vulkan", "vendor": "acme", "name": "ACME GPU", "class": "dgpu"})
    data["device"]["subgroup_size"] = 0
    records = {}
    for key, record in data["records"].items():
        if record["op"] == "conv2d" and record["language"] == "wgsl" and not record["params"].get("sg_share"):
            records[key] = {**record, "params": {**record["params"], "layout": 0, "w_layout": 0}}
    assert records
    data["records"] = records
    (db / "acme-gpu-vulkan.json").write_text(json.dumps(data))
    export(mnv2, tmp_path / "b", db=db, candidates=DEFAULT_CANDIDATES)
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    plan = next(t for t in manifest["targets"] if t["id"] == "default/wgsl")["plan"]
    wanted = [dict(r["params"]) for r in records.values()]
    adapted = 0
    for step in (s for s in plan["steps"] if "kernel" in s):
        for c in plan["kernels"][step["kernel"]]["candidates"]:
            if c["from"] == "acme-gpu-vulkan":
                assert (c["params"]["layout"], c["params"]["w_layout"]) == (
                    step["params"]["layout"],
                    step["params"]["w_layout"],
                )
                adapted += {**c["params"], "layout": 0, "w_layout": 0} in wanted
    assert adapted > 0


def _candidate_bytes(manifest: dict[str, Any]) -> tuple[int, int]:
    """Return the bytes of the shader texts only candidates use, and of those the steps use."""
    steps, only = set(), set()
    for target in manifest["targets"]:
        plan = target["plan"]
        steps |= {s["shader"] for s in plan["steps"]} | ({plan["vertex"]} if "vertex" in plan else set())
        only |= {c["shader"] for k in plan.get("kernels", []) for c in k["candidates"]}
    size = lambda ids: sum(len(json.dumps(manifest["shaders"][i])) + 1 for i in ids)  # noqa: E731
    return size(only - steps), size(steps)


def test_candidates_fit_the_byte_budget(tmp_path: Path, mnv2: Path) -> None:
    plain = tmp_path / "plain"
    export(mnv2, plain, db=REPO_DB, candidates=1)
    base = len((plain / "manifest.json").read_bytes())
    for k in (DEFAULT_CANDIDATES, 6):
        manifest = _manifest(mnv2, tmp_path / f"k{k}", k)
        added, shaders = _candidate_bytes(manifest)
        grown = len((tmp_path / f"k{k}" / "manifest.json").read_bytes()) - base
        assert 0 < added < grown <= BYTE_BUDGET * shaders, k


def _row(cost: float, *texts: str) -> dict[str, Any]:
    entries = [{"params": {"n": i}, "shader": t, "workgroups": [1, 1, 1], "uniforms": []} for i, t in enumerate(texts)]
    return {"op": "gemm", "shape": f"s{cost}", "template": "t", "candidates": entries, "cost": cost, "steps": 1}


def test_the_budget_goes_to_the_costliest_kernels_and_texts_already_shipped_cost_only_their_entry() -> None:
    shaders = Shaders()
    shaders.add("base" + "y" * 5996)
    b, c, d = ("b" + "x" * 999, "c" + "x" * 999, "d" + "x" * 999)
    cheap, costly = _row(1, "base" + "y" * 5996, "a" + "x" * 999), _row(100, b, c)
    proposals = [Proposal([cheap, costly], [0, 1, 1]), Proposal([_row(50, d)], [0, None])]
    (first, steps_a), (second, steps_b) = allocate(proposals, shaders, 0.5)  # 3,000 bytes: 2 new texts
    assert [r["shape"] for r in first] == ["s1", "s100"] and second == [] and steps_b == [None, None]
    assert steps_a == [0, 1, 1]
    assert [shaders.texts[e["shader"]] for e in first[1]["candidates"]] == [b + "\n", c + "\n"]  # both texts
    assert [e["params"] for e in first[0]["candidates"]] == [{"n": 0}]  # its text was shipped: the entry fits
    assert all("cost" not in r and "steps" not in r for r in first)


def test_f16_records_never_reach_an_f32_bundle(tmp_path: Path) -> None:
    # with precision "f32", a device's f16 GEMM winners serve native runs only: every plan and candidate of the
    # bundle computes in f32 (tests/device/test_precision.py: with "auto" they go to the device's f16 plan alone)
    from kernelforge.testing.models import MODELS

    db = tmp_path / "db"
    db.mkdir()
    name = "mesa-llvmpipe-vulkan-22.3.json"
    data = json.loads((REPO_DB / name).read_text())
    gemms = [r for r in data["records"].values() if r["op"] == "gemm" and r["language"] == "wgsl"]
    assert gemms
    for record in gemms:
        record["params"]["precision"] = 1
    (db / name).write_text(json.dumps(data))
    export(save(MODELS["mlp"](), tmp_path / "mlp.onnx"), tmp_path / "b", db=db, candidates=4, precision="f32")
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    configs = [
        params
        for t in manifest["targets"]
        if t["language"] == "wgsl"
        for params in [s["params"] for s in t["plan"]["steps"]]
        + [c["params"] for k in t["plan"].get("kernels", []) for c in k["candidates"]]
    ]
    assert any("precision" in p for p in configs)
    assert all(p.get("precision", 0) == 0 for p in configs)
    assert all("enable f16" not in text for text in manifest["shaders"])
    assert not any(t["plan"].get("f16") for t in manifest["targets"])
