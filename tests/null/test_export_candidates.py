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
from kernelforge.export.candidates import DEFAULT_CANDIDATES
from kernelforge.export.targets import BROWSER_LIMITS
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
            offered += any(c["from"] == "default" and c["params"] == default for c in kernel["candidates"])
    assert offered > 0


def test_candidates_1_ships_none_and_the_cli_refuses_0(tmp_path: Path, mnv2: Path, capsys: Any) -> None:
    manifest = _manifest(mnv2, tmp_path / "b", 1)
    assert all("kernels" not in t["plan"] for t in manifest["targets"])
    assert main(["export", str(mnv2), "--out", str(tmp_path / "c"), "--candidates", "0", "--db", str(REPO_DB)]) == 2
    assert "--candidates 0: give 1 (no candidates) or more" in capsys.readouterr().err
    assert main(["export", str(mnv2), "--out", str(tmp_path / "d"), "--candidates", "2", "--db", str(REPO_DB)]) == 0
    assert "kernels" in json.loads((tmp_path / "d" / "manifest.json").read_text())["targets"][-2]["plan"]
