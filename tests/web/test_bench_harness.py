"""The browser benchmark's page harness on a token model: int64 inputs reach kernelforge.js.

``benchmarks/browser.py`` serves ``bert_tiny`` (int64 ``input_ids`` and ``attention_mask``) and runs one engine
per fresh Chromium; each must load, answer like ONNX Runtime CPU and be timed. A page that feeds an input with
another dtype than the bundle's manifest declares fails at load, naming the input. The peers (onnxruntime-web,
TF.js) are installed from npm only when the benchmark runs, so their engines are exercised there, not here.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kernelforge import _config
from kernelforge.testing import chromium

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import _cases  # noqa: E402
import browser  # noqa: E402

LIMITS = browser.Limits(load=120.0, run=60.0, budget=10.0, warmup=1)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, browser.Case]]]:
    """The harness, the peers (when installed) and two bert_tiny cases: as built, and with a float32 mask."""
    reason = chromium.available()
    if reason:
        if _config.require_device():
            pytest.fail(f"KF_REQUIRE_DEVICE=1 but {reason}")
        pytest.skip(reason)
    folder = tmp_path_factory.mktemp("bench-harness")
    browser.write_harness(folder)
    model, feeds = _cases.build("bert_tiny")
    cases = {
        "int64": browser.Case("bert_tiny", "model", model, feeds),
        "float_mask": browser.Case(
            "bert_tiny_float_mask", "model", model, {**feeds, "attention_mask": feeds["attention_mask"].astype("f4")}
        ),
    }
    for case in cases.values():
        case.reference = browser.reference(cases["int64"])
        browser.write_case(case, folder, kf=True)
        assert case.export_error is None
    with chromium.serve(folder) as base_url:
        yield base_url, cases


def run(served: tuple[str, dict[str, browser.Case]], case: str, engine: str) -> dict[str, Any]:
    base_url, cases = served
    # the harness drives its own Playwright, whose sync API refuses a thread where another one (the suite's
    # page) already runs an event loop: it gets a thread of its own, as in the benchmark's process
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(browser.bench, cases[case], engine, base_url, 2, LIMITS, {}).result()


@pytest.mark.parametrize("engine", ["kf-webgpu", "kf-webgl2"])
def test_int64_token_inputs_run_and_match_onnxruntime(served: tuple[str, dict[str, browser.Case]], engine: str) -> None:
    row = run(served, "int64", engine)
    assert row.get("error") is None, row.get("console")
    assert row["max rel err"] < 1e-3
    assert row["load+first ms"] == pytest.approx(row["load ms"] + row["first ms"])
    assert row["runs"] >= 1 and row["median ms"] == np.median(row["times ms"])


def test_a_dtype_the_manifest_does_not_declare_fails_at_load(served: tuple[str, dict[str, browser.Case]]) -> None:
    row = run(served, "float_mask", "kf-webgpu")
    assert 'manifest input "attention_mask" is int64; the page feeds float32' in row["error"]
    assert row.get("median ms") is None
