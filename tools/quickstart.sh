#!/usr/bin/env bash
# The main job end to end on the software GPU: set up, list devices, tune GEMM, use the tuned kernel.
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

echo "== tuning database"
kernelforge db show --db "$db"

echo "== kernelforge.ops.gemm with the tuned kernel, checked against numpy"
KF_DB_DIR="$db" python - <<'PY'
import time

import numpy as np

import kernelforge.ops as kops
from kernelforge.runtime import open_device
from kernelforge.runtime.api import choose_params
from kernelforge.ops.gemm import GemmProblem

rng = np.random.default_rng(0)
a = rng.standard_normal((512, 512), dtype=np.float32)
b = rng.standard_normal((512, 512), dtype=np.float32)
bias = rng.standard_normal(512, dtype=np.float32)
chosen = choose_params(open_device("lavapipe"), "gemm", GemmProblem(512, 512, 512, has_bias=True))
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
PY
