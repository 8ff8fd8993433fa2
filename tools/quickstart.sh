#!/usr/bin/env bash
# The main job end to end on the software GPU: set up, list devices, tune GEMM and conv, use the tuned kernels.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
db=out/quickstart_db

echo "== devices"
kernelforge devices

echo "== tune GEMM on lavapipe (results go to $db; the committed tuning_db/ is left alone)"
kernelforge tune --device lavapipe --shape 256x256x256,512x512x512 --trials 25 --db "$db"

echo "== tune the WebGL2-style GLSL GEMM on llvmpipe"
kernelforge tune --device llvmpipe --backend glsl --shape 256x256x256 --trials 15 --db "$db"

echo "== tune a conv layer (3x3, NCHW semantics; algorithm and layouts are searched too)"
kernelforge tune --device lavapipe --op conv2d --shape "1x32x28x28:32x3x3:s1:p1" --trials 12 --db "$db"

echo "== a small MobileNetV2-style ONNX model: tune its kernels, then run it natively on them"
mkdir -p out
python -c "from kernelforge.testing.models import MODELS, save; save(MODELS['mobilenet_v2_style'](), 'out/mnv2.onnx')"
kernelforge tune --model out/mnv2.onnx --device lavapipe --trials-per-kernel 6 --time-budget 240 --db "$db"
python -c "import numpy as np; np.save('out/mnv2_x.npy', np.random.default_rng(0).standard_normal((1, 3, 64, 64), dtype=np.float32))"
kernelforge run out/mnv2.onnx --device lavapipe --db "$db" --input x=out/mnv2_x.npy --output out/mnv2_y.npz \
  --bench 5 --profile
python - <<'PY'
import numpy as np
import onnxruntime as ort

x = np.load("out/mnv2_x.npy")
(want,) = ort.InferenceSession("out/mnv2.onnx", providers=["CPUExecutionProvider"]).run(None, {"x": x})
got = np.load("out/mnv2_y.npz")["logits"]
err = float(np.abs(got - want).max() / np.abs(want).max())
print(f"kernelforge vs ONNX Runtime CPU: max error {err:.2e} of the largest logit")
assert err < 1e-3
PY

echo "== tune the model for headless Chromium's WebGPU: natively on the same SwiftShader (device-faithful tuning)"
kernelforge tune --model out/mnv2.onnx --device swiftshader --trials-per-kernel 4 --time-budget 150 --db "$db"

echo "== export the model as a browser bundle (WebGPU + WebGL2 plans, tuned where the database has records)"
kernelforge export out/mnv2.onnx --out out/mnv2_bundle --db "$db"
echo "   serve it: python -m http.server -d out/mnv2_bundle 8000, then open http://127.0.0.1:8000/"

echo "== run the bundle in headless Chromium (WebGPU on SwiftShader, then WebGL2), checked against ONNX Runtime"
python - <<'PY'
import numpy as np
import onnxruntime as ort

from kernelforge.testing import chromium

x = np.load("out/mnv2_x.npy")
(want,) = ort.InferenceSession("out/mnv2.onnx", providers=["CPUExecutionProvider"]).run(None, {"x": x})
js = """async ([base, backend, x]) => {
  const kf = await import(base + "kernelforge.js");
  let t = performance.now();
  const m = await kf.load(base + "manifest.json", {backend});
  const load = performance.now() - t;
  t = performance.now();
  const out = await m.run({x: new Float32Array(x)});
  const first = performance.now() - t;
  t = performance.now();
  await m.run({x: new Float32Array(x)});
  const second = performance.now() - t;
  const info = {backend: m.backend, device: m.device, y: Array.from(out.logits), load, first, second};
  m.dispose();
  return info;
}"""
with chromium.serve("out/mnv2_bundle") as base, chromium.page() as page:
    page.goto(base + "manifest.json")  # any page of the origin: the runtime is imported below
    for backend in ("webgpu", "webgl2"):
        r = page.evaluate(js, [base, backend, x.reshape(-1).tolist()])
        err = float(np.abs(np.asarray(r["y"]) - want.reshape(-1)).max() / np.abs(want).max())
        d = r["device"]
        print(f"  {r['backend']:7} target {d['target']} ({d['match']}): load {r['load']:.0f} ms, first run "
              f"{r['first']:.1f} ms, second {r['second']:.1f} ms; max error vs ONNX Runtime {err:.2e}")
        assert err < 1e-3
PY

echo "== tuning database"
kernelforge db show --db "$db"

echo "== kernelforge.api.gemm with the tuned kernel, checked against numpy"
KF_DB_DIR="$db" python - <<'PY'
import time

import numpy as np

import kernelforge.api as kops
from kernelforge import _config
from kernelforge.db import TuningDB
from kernelforge.ops.gemm import GemmProblem
from kernelforge.runtime import open_device

rng = np.random.default_rng(0)
a = rng.standard_normal((512, 512), dtype=np.float32)
b = rng.standard_normal((512, 512), dtype=np.float32)
bias = rng.standard_normal(512, dtype=np.float32)
lavapipe = open_device("lavapipe")
problem = GemmProblem(512, 512, 512, has_bias=True)
chosen = TuningDB(_config.db_dir()).params_for(lavapipe.info, "gemm", problem, "wgsl", lavapipe.limits)
start = time.perf_counter()
c = kops.gemm(a, b, bias=bias, activation="relu", device="lavapipe")
elapsed = time.perf_counter() - start
err = float(np.abs(c - np.maximum(a @ b + bias, 0)).max())
print(f"512x512x512 relu(a@b+bias): params from '{chosen.source}', {elapsed * 1e3:.1f} ms "
      f"(incl. upload+compile), max |error| vs numpy {err:.2e}")
assert err < 1e-3
c = kops.gemm(a[:256, :256], b[:256, :256], backend="glsl")
err = float(np.abs(c - a[:256, :256] @ b[:256, :256]).max())
print(f"256x256x256 on GLSL (moderngl): max |error| vs numpy {err:.2e}")
assert err < 1e-3
x = rng.standard_normal((1, 32, 28, 28), dtype=np.float32)
w = rng.standard_normal((32, 32, 3, 3), dtype=np.float32) * 0.1
skip = rng.standard_normal((1, 32, 28, 28), dtype=np.float32)
y = kops.conv2d(x, w, bias[:32], pads=(1, 1, 1, 1), activation="relu", residual=skip, device="lavapipe")
from kernelforge.ops import get_op
from kernelforge.ops.conv import ConvProblem
from kernelforge.ops._epilogue import Activation
problem = ConvProblem(1, 32, 28, 28, 32, 3, 3, pads=(1, 1, 1, 1), has_bias=True, has_residual=True,
                      activation=Activation.parse("relu"))
err = float(np.abs(y - get_op("conv2d").reference(problem, [x, w, bias[:32], skip])).max())
print(f"conv2d 1x32x28x28 3x3 + bias + residual + relu, one kernel: max |error| vs numpy {err:.2e}")
assert err < 1e-3
PY
