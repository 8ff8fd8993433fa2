"""f16 plans through the runtime on an adapter with ``shader-f16``: Deno's WebGPU (wgpu) on Mesa's lavapipe.

Chromium's WebGPU here runs on SwiftShader, which lacks ``shader-f16``, so the browser tests can only show that an
f16 plan is never taken without it. Deno implements the same WebGPU API on wgpu, which finds lavapipe and its
``shader-f16``: the runtime, unchanged, picks the lavapipe target's f16 plan there, and its results must agree
with the numpy reference within the model-level bound, and differ from float32 by the halves' rounding. ``deno``
is an npm development dependency (``npm ci``, which ``tools/setup.sh`` runs).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kernelforge import _config
from kernelforge.export import export
from kernelforge.export.precision import MODEL_BOUND
from kernelforge.graph.prepare import prepare_graph
from kernelforge.graph.reference import run_graph
from kernelforge.testing.models import MODELS, mlp

from .test_bundle import REPO_DB
from .test_runtime_js import JS_DIR

pytestmark = pytest.mark.device

ROOT = Path(__file__).resolve().parents[2]
DENO = ROOT / "node_modules" / ".bin" / "deno"

SCRIPT = """
const [runtime, bundle, precision] = Deno.args;
const print = (o) => { console.log(JSON.stringify(o)); Deno.exit(0); };
const adapter = await navigator.gpu?.requestAdapter();
if (!adapter) print({ adapter: null });
const { load } = await import(runtime);
// plain file paths: the runtime resolves weights.bin next to the manifest by string joining
const fetch = async (path) => new Response(await Deno.readFile(path));
const x = JSON.parse(await Deno.readTextFile(bundle + "/x.json"));
const m = await load(bundle + "/manifest.json", { fetch, backend: "webgpu", precision, tune: "off" });
const out = await m.run({ [x.name]: new Float32Array(x.values) });
m.dispose();
print({ has: adapter.features.has("shader-f16"), device: m.device, y: Array.from(Object.values(out)[0]) });
"""


def _deno(script: Path, bundle: Path, precision: str, home: Path) -> dict[str, Any]:
    # no update check (nothing downloads at run time) and a cache of its own
    env = {**os.environ, "DENO_NO_UPDATE_CHECK": "1", "DENO_DIR": str(home), "XDG_RUNTIME_DIR": str(home)}
    # the system's Vulkan drivers only: the wgpu backend adds SwiftShader's to this process's loader, and Deno
    # would then take SwiftShader, which has no shader-f16
    icd = _config.swiftshader_icd()
    added = [p for p in env.pop("VK_ADD_DRIVER_FILES", "").split(os.pathsep) if p and p != icd]
    if added:
        env["VK_ADD_DRIVER_FILES"] = os.pathsep.join(added)
    args = [str(DENO), "run", "--allow-read", str(script), (JS_DIR / "kernelforge.js").as_uri(), str(bundle), precision]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=300, env=env, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize("name", ["mlp", "small_cnn"])
def test_an_f16_plan_runs_where_the_adapter_has_shader_f16(tmp_path: Path, name: str) -> None:
    if not DENO.is_file():
        missing = f"{DENO} is missing: run `npm ci` at the repository root"
        if _config.require_device():  # tools/setup.sh installs it: under KF_REQUIRE_DEVICE=1 (CI), a broken set-up
            pytest.fail(f"KF_REQUIRE_DEVICE=1 but {missing}")
        pytest.skip(missing)
    model = mlp(size=128) if name == "mlp" else MODELS[name]()
    report = export(model, tmp_path / "bundle", db=REPO_DB, precision="f16")
    lavapipe = [c for c in report.precision if c.target.startswith("mesa-llvmpipe-vulkan")]
    assert lavapipe and all(c.passed for c in lavapipe), report.summary()
    graph = prepare_graph(model, None)
    x = np.random.default_rng(0).standard_normal(graph.value(graph.inputs[0]).shape).astype(np.float32)
    (tmp_path / "bundle" / "x.json").write_text(json.dumps({"name": graph.inputs[0], "values": x.ravel().tolist()}))
    script = tmp_path / "run.mjs"
    script.write_text(SCRIPT)
    ref = run_graph(graph, {graph.inputs[0]: x})[graph.outputs[0]]

    errors = {}
    for precision in ("auto", "f16", "f32"):
        got = _deno(script, tmp_path / "bundle", precision, tmp_path / "deno")
        if got.get("adapter", "") is None:
            if _config.require_device():
                pytest.fail("KF_REQUIRE_DEVICE=1 but Deno's WebGPU finds no adapter (lavapipe: mesa-vulkan-drivers)")
            pytest.skip("Deno's WebGPU finds no adapter on this machine")
        if not got["has"]:
            no_f16 = f"Deno's adapter ({got['device']['adapter']}) has no shader-f16"
            if _config.require_device():  # lavapipe has it: under KF_REQUIRE_DEVICE=1 (CI), a broken set-up
                pytest.fail(f"KF_REQUIRE_DEVICE=1 but {no_f16}")
            pytest.skip(no_f16)
        f16 = precision != "f32"
        assert got["device"]["match"] == "exact", got["device"]  # lavapipe's own targets
        assert got["device"]["target"].endswith("/wgsl-f16" if f16 else "/wgsl"), got["device"]
        assert got["device"]["precision"] == ("f16" if f16 else "f32"), got["device"]
        y = np.asarray(got["y"], np.float32).reshape(ref.shape)
        errors[precision] = float(np.abs(y - ref).max() / np.abs(ref).max())
    assert errors["f32"] <= 1e-4, errors
    # halves: off the float32 reference by their rounding (so not within float32's 1e-6), within the model bound
    assert 1e-6 < errors["auto"] <= MODEL_BOUND and errors["f16"] == errors["auto"], errors
