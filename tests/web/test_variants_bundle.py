"""A bundle of three variants in headless Chromium: each sequence length on WebGPU and WebGL2 against onnxruntime.

The token model has inputs ``[batch, seq]`` (int64 ids and a float mask, a Softmax over the sequence); it is
exported with ``variants`` for three lengths. One load per backend runs every length, picked by element counts,
by ``{data, dims}`` inputs and by ``run(feeds, {shapes})``; a variant's pipelines (WebGPU) or programs (WebGL2)
are made on its first run, not at load, unless ``load(url, {shapes})`` names it; inputs of a length the bundle
lacks are refused naming the lengths it has.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from kernelforge.export import export
from kernelforge.testing import chromium
from kernelforge.testing.symbolic import seq_attention, seq_feeds

from .test_bundle import REPO_DB

pytestmark = pytest.mark.device

SEQS = (16, 32, 64)

RUN_VARIANTS_JS = """
async ([base, backend, cases, bad]) => {
  const kf = await import(base + "kernelforge.js");
  // count what is expensive to make: WebGPU pipelines, WebGL2 programs
  const proto = backend === "webgpu" ? GPUDevice.prototype : WebGL2RenderingContext.prototype;
  const method = backend === "webgpu" ? "createComputePipelineAsync" : "createProgram";
  const original = proto[method];
  let made = 0;
  proto[method] = function (...args) { made++; return original.apply(this, args); };
  try {
    const m = await kf.load(base + "manifest.json", {backend});
    const out = {backend: m.backend, device: m.device, variants: m.variants, inputs: m.inputs, atLoad: made, runs: []};
    for (const c of cases) {
      const ids = BigInt64Array.from(c.ids, BigInt), mask = new Float32Array(c.mask);
      const before = made;
      const flat = await m.run({ids, mask});
      const built = made - before;
      const dims = await m.run({ids: {data: ids, dims: [1, c.seq]}, mask: {data: mask, dims: [1, c.seq]}});
      const shaped = await m.run({ids, mask}, {shapes: {ids: [1, c.seq], mask: [1, c.seq]}});
      const same = [dims, shaped].every((r) => r.y.every((v, i) => Object.is(v, flat.y[i])));
      const again = made - before - built;
      out.runs.push({seq: c.seq, y: Array.from(flat.y), type: flat.y.constructor.name, same, built, again});
    }
    const reason = (p) => p.then(() => "", (e) => String(e.message || e));
    out.refused = await reason(m.run({ids: new BigInt64Array(bad), mask: new Float32Array(bad)}));
    const badIds = {data: new BigInt64Array(bad), dims: [bad, 1]};
    out.wrongDims = await reason(m.run({ids: badIds, mask: new Float32Array(bad)}));
    m.dispose();
    made = 0;
    const named = await kf.load(base + "manifest.json", {backend, shapes: {ids: [1, cases[1].seq]}});
    out.named = {made, inputs: named.inputs};
    named.dispose();
    return out;
  } finally {
    proto[method] = original;
  }
}
"""


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("variant_bundles")
    shapes = [{"ids": [1, n], "mask": [1, n]} for n in SEQS]
    export(seq_attention(), root / "seq", db=REPO_DB, variants=shapes, name="seq_attention")
    (root / "blank.html").write_text("<!doctype html><title>kernelforge tests</title>")
    with chromium.serve(root) as base:
        yield base


@pytest.mark.parametrize("backend", ["webgpu", "webgl2"])
def test_every_variant_runs_and_matches_onnxruntime(browser_page: Any, served: str, backend: str) -> None:
    session = ort.InferenceSession(seq_attention().SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = {n: seq_feeds(n) for n in SEQS}
    cases = [{"seq": n, **{k: v.reshape(-1).tolist() for k, v in f.items()}} for n, f in feeds.items()]
    if not browser_page.url.startswith(served):
        browser_page.goto(served + "blank.html")
    got = browser_page.evaluate(RUN_VARIANTS_JS, [f"{served}seq/", backend, cases, 24])

    assert got["backend"] == backend
    assert [v["inputs"][0]["shape"] for v in got["variants"]] == [[1, n] for n in SEQS]
    assert [v["outputs"][0]["shape"] for v in got["variants"]] == [[1, n, 16] for n in SEQS]
    assert got["inputs"] == got["variants"][0]["inputs"]
    assert got["atLoad"] == 0, "load() builds no variant of several unless asked"
    for run in got["runs"]:
        want = session.run(None, feeds[run["seq"]])[0]
        values = np.asarray(run["y"], np.float32).reshape(want.shape)
        scale = float(np.abs(want).max())
        np.testing.assert_allclose(values, want, rtol=0, atol=1e-3 * scale, err_msg=f"{backend} seq {run['seq']}")
        assert run["type"] == "Float32Array" and run["same"], run["seq"]
        assert run["built"] > 0 and run["again"] == 0, f"seq {run['seq']}: built on its first run, once"
    # shaders every variant shares (the vertex shader; kernels whose text does not depend on the length) once
    assert sum(r["built"] for r in got["runs"]) > 0
    sizes = "ids [1, 16], mask [1, 16] | ids [1, 32], mask [1, 32] | ids [1, 64], mask [1, 64]"
    assert f'run(): no variant takes "ids" of 24 values, "mask" of 24 values; the bundle has {sizes}' in got["refused"]
    assert 'no variant takes "ids" [24, 1], "mask" of 24 values' in got["wrongDims"]
    assert got["named"]["made"] > 0 and got["named"]["inputs"][0]["shape"] == [1, SEQS[1]]
