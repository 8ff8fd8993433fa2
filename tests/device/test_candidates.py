"""Every candidate config a bundle ships (FORMAT.md, "Candidates") computes its kernel: run natively, against numpy."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from kernelforge.export import export
from kernelforge.ops import get_op
from kernelforge.testing.models import mobilenet_v2_style, save
from kernelforge.testing.ops import check_op

pytestmark = pytest.mark.device

REPO_DB = Path(__file__).resolve().parents[2] / "tuning_db"


def test_every_candidate_of_a_bundle_matches_the_numpy_reference(lavapipe: Any, tmp_path: Path) -> None:
    path = save(mobilenet_v2_style(), tmp_path / "mnv2.onnx")
    export(path, tmp_path / "b", db=REPO_DB, candidates=4)
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    checked, skipped = set(), set()
    for target in (t for t in manifest["targets"] if t["language"] == "wgsl"):
        for kernel in target["plan"]["kernels"]:
            spec = get_op(kernel["op"])
            problem = spec.parse_problem(kernel["shape"])
            for c in kernel["candidates"]:
                key = json.dumps([kernel["op"], kernel["shape"], c["params"]], sort_keys=True)
                if c.get("subgroup_size", lavapipe.limits.subgroup_size) != lavapipe.limits.subgroup_size:
                    skipped.add(key)  # subgroups of another size than lavapipe's: the browser tests run SwiftShader's
                elif key not in checked:
                    check_op(lavapipe, spec, problem, c["params"])
                    checked.add(key)
    # how many are distinct depends on the database's winners and the byte budget (18 with this stop's records)
    assert len(checked) >= 12 and len(skipped) > 0
