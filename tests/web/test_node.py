"""The runtime under Node >= 20 with the ``webgpu`` npm package (Dawn), given ``navigator.gpu`` and a file fetch.

Dawn refuses Mesa's lavapipe (it lacks a Vulkan feature Dawn requires), so on a GPU-less machine the test
retries with Chromium's SwiftShader Vulkan driver added to the loader (``KF_SWIFTSHADER_ICD``, as the wgpu
backend does) and skips when Dawn still finds no adapter.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kernelforge import _config

from .test_runtime_js import JS_DIR, SHAPE, N, manifest, mul_add, pack_constants, target, wgsl_plan, write_bundle

ROOT = Path(__file__).resolve().parents[2]
WEBGPU = ROOT / "node_modules" / "webgpu" / "index.js"

SCRIPT = """
import { readFile } from "node:fs/promises";

const [runtime, webgpu, bundle] = process.argv.slice(2);
const { create, globals } = await import(webgpu);
Object.assign(globalThis, globals);
// Node >= 21 has a read-only navigator of its own
Object.defineProperty(globalThis, "navigator", { value: { gpu: create([]) }, configurable: true });
const print = (o) => { process.stdout.write(JSON.stringify(o) + "\\n"); process.exit(0); };

if (!(await navigator.gpu.requestAdapter())) print({ adapter: null });
const { load } = await import(runtime);
// plain file paths: the runtime resolves weights.bin next to the manifest by string joining
const fetch = async (path) => new Response(await readFile(path));
const m = await load(bundle + "/manifest.json", { fetch, backend: "webgpu" });
const x = new Float32Array(JSON.parse(await readFile(bundle + "/x.json", "utf8")));
const out = await m.run({ x });
const again = await m.run({ x });
m.dispose();
print({ adapter: m.device.adapter, backend: m.backend, target: m.device.target, z: Array.from(out.z),
        c: Array.from(out.c), same: out.z.every((v, i) => v === again.z[i]) });
"""


def _node_run(node: str, script: Path, bundle: Path, env: dict[str, str]) -> dict[str, Any]:
    args = [node, str(script), (JS_DIR / "kernelforge.js").as_uri(), WEBGPU.as_uri(), str(bundle)]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=120, env=env, check=False)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_runtime_runs_under_node_with_dawn(tmp_path: Path) -> None:
    node = shutil.which("node")
    missing = (
        "no node executable on PATH (Node >= 20 runs the runtime outside a browser)"
        if not node
        else f"{WEBGPU.parent} is missing: run `npm ci` at the repository root"
        if not WEBGPU.is_file()
        else ""
    )
    if missing:
        # tools/setup.sh installs both: under KF_REQUIRE_DEVICE=1 (CI) their absence is a broken set-up
        if _config.require_device():
            pytest.fail(f"KF_REQUIRE_DEVICE=1 but {missing}")
        pytest.skip(missing)
    assert node is not None
    rng = np.random.default_rng(0)
    consts = [rng.standard_normal(N).astype(np.float32) for _ in range(2)] + [np.arange(6, dtype=np.float32)]
    table, blob = pack_constants(consts)
    outputs = [{"name": "z", "shape": SHAPE}, {"name": "c", "shape": [6]}]
    man = manifest([target("default/wgsl", "wgsl", wgsl_plan([0, 1], folded=2))], table, len(blob), outputs=outputs)
    bundle = write_bundle(tmp_path / "bundle", man, blob)
    x = rng.standard_normal(N).astype(np.float32)
    (bundle / "x.json").write_text(json.dumps(x.tolist()))
    script = tmp_path / "run.mjs"
    script.write_text(SCRIPT)

    result = _node_run(node, script, bundle, dict(os.environ))
    icd = _config.swiftshader_icd()
    if result["adapter"] is None and icd and not {"VK_ICD_FILENAMES", "VK_DRIVER_FILES"} & set(os.environ):
        extra = os.environ.get("VK_ADD_DRIVER_FILES", "")
        env = {**os.environ, "VK_ADD_DRIVER_FILES": os.pathsep.join(p for p in (extra, icd) if p)}
        result = _node_run(node, script, bundle, env)
    if result["adapter"] is None:
        pytest.skip("Dawn (the webgpu npm package) finds no GPU adapter on this machine")

    assert result["backend"] == "webgpu"
    assert result["target"] == "default/wgsl"
    assert result["same"]
    np.testing.assert_allclose(np.asarray(result["z"], np.float32), mul_add(x, *consts[:2]), rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(result["c"], np.float32), consts[2])
