"""The other browser engines of ``benchmarks/browser.py``: npm install, serving layout, page harness, sizes.

The peers (onnxruntime-web, TF.js) are pinned in ``benchmarks/peers/package.json`` + ``package-lock.json``
and installed at benchmark time with ``npm ci`` into ``benchmarks/peers/node_modules`` (git-ignored): nothing
of theirs is committed. Their dist folders are symlinked into the served folder beside the kernelforge
bundles, so every engine is fetched from the same local HTTP server by the same headless Chromium.

The page harness (:data:`HARNESS_JS`) is one ES module with one loader per engine; each loader returns
``{run(feeds) -> {name: typed array}, info, dispose()}``, and :func:`harness` times load, the first run
and the timed runs the same way for all of them. Inputs are fetched as the typed array of their dtype
(``BigInt64Array`` for int64, ``Uint8Array`` for bool); outputs go back with their array type's name.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path

PEERS_DIR = Path(__file__).resolve().parent / "peers"
ROOT = PEERS_DIR.parent.parent
PACKAGES = {"onnxruntime-web": "1.30.0", "@tensorflow/tfjs": "4.22.0", "@tensorflow/tfjs-backend-webgpu": "4.22.0"}
"""What ``peers/package.json`` pins; checked against what ``node_modules`` holds before a run."""

LINKS = {
    "ort": "onnxruntime-web/dist",
    "tfjs-core": "@tensorflow/tfjs-core/dist",
    "tfjs-webgpu": "@tensorflow/tfjs-backend-webgpu/dist",
    "tfjs-webgl": "@tensorflow/tfjs-backend-webgl/dist",
}
"""Served folder ``peers/<key>`` -> dist folder under ``node_modules`` (core and backends, not the tfjs
umbrella bundle: the benchmark needs ops and one backend, not layers, converter and data)."""

EXPECTED_FILES = {
    "ort-webgpu": [
        "ort/ort.webgpu.min.mjs",
        "ort/ort-wasm-simd-threaded.asyncify.mjs",
        "ort/ort-wasm-simd-threaded.asyncify.wasm",
    ],
    "ort-wasm": ["ort/ort.wasm.min.mjs", "ort/ort-wasm-simd-threaded.mjs", "ort/ort-wasm-simd-threaded.wasm"],
    "tfjs-webgpu": ["tfjs-core/tf-core.es2017.min.js", "tfjs-webgpu/tf-backend-webgpu.es2017.min.js"],
    "tfjs-webgl": ["tfjs-core/tf-core.es2017.min.js", "tfjs-webgl/tf-backend-webgl.es2017.min.js"],
}
"""The code each peer engine is expected to fetch (under ``peers/``), for the size table when the engine
did not run; a run records what the page actually fetched instead."""


class PeerError(RuntimeError):
    """The peers could not be installed."""


def installed_versions() -> dict[str, str | None]:
    """Return package -> version found in ``peers/node_modules`` (None when missing)."""
    found: dict[str, str | None] = {}
    for name in PACKAGES:
        meta = PEERS_DIR / "node_modules" / name / "package.json"
        found[name] = json.loads(meta.read_text()).get("version") if meta.is_file() else None
    return found


def ensure_installed(log: bool = True) -> dict[str, str]:
    """Install the pinned peers with ``npm ci`` unless ``node_modules`` already holds exactly those versions.

    Returns:
        Package -> installed version.

    Raises:
        PeerError: When npm is missing or ``npm ci`` fails, or the versions still differ afterwards.
    """
    if installed_versions() != PACKAGES:
        npm = shutil.which("npm")
        if npm is None:
            raise PeerError("npm is not on PATH; install Node.js or pass --skip-peers")
        if log:
            print(f"npm ci --prefix {PEERS_DIR.relative_to(ROOT)} ...", flush=True)
        # ci, not install: the lock file decides every version, transitive ones included
        done = subprocess.run(
            [npm, "ci", "--prefix", str(PEERS_DIR), "--no-audit", "--no-fund"],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise PeerError(f"npm ci failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    found = installed_versions()
    if found != PACKAGES:
        raise PeerError(f"peers/node_modules holds {found}, expected {PACKAGES}")
    return dict(PACKAGES)


def link_peers(served: Path) -> None:
    """Symlink the peers' dist folders into ``served/peers/`` (the HTTP server follows links)."""
    peers = served / "peers"
    peers.mkdir(parents=True, exist_ok=True)
    for key, dist in LINKS.items():
        target = PEERS_DIR / "node_modules" / dist
        if not target.is_dir():
            raise PeerError(f"{target} is missing (did npm ci run?)")
        link = peers / key
        if not link.exists():
            link.symlink_to(target, target_is_directory=True)


def gzip_size(data: bytes) -> int:
    """Return the size of ``data`` after ``gzip -9`` (the binary when present, else Python's zlib level 9)."""
    exe = shutil.which("gzip")
    if exe:
        done = subprocess.run([exe, "-9", "-n", "-c"], input=data, capture_output=True, check=True)
        return len(done.stdout)
    return len(gzip.compress(data, compresslevel=9, mtime=0))


def terser() -> Path | None:
    """Return the terser CLI of the root ``node_modules`` (a devDependency of package.json), if installed."""
    exe = ROOT / "node_modules" / ".bin" / "terser"
    return exe if exe.is_file() and os.access(exe, os.X_OK) else None


def minify(source: Path, defines: Iterable[str] = ()) -> bytes:
    """Return ``source`` minified by terser as an ES module (compress + mangle), with ``--define`` globals.

    Raises:
        PeerError: When terser is missing or fails.
    """
    exe = terser()
    if exe is None:
        raise PeerError("terser missing: run `npm ci` in the repository root (terser is in package.json)")
    args = [str(exe), str(source), "--module", "--compress", "--mangle"]
    for define in defines:
        args += ["--define", define]
    done = subprocess.run(args, capture_output=True, check=False)
    if done.returncode != 0:
        raise PeerError(f"terser failed: {done.stderr.decode(errors='replace').strip()[-1000:]}")
    return done.stdout


HARNESS_HTML = """<!doctype html>
<meta charset="utf-8">
<title>kernelforge browser benchmark</title>
<link rel="icon" href="data:,">
<p>driven by benchmarks/browser.py</p>
"""

HARNESS_JS = r"""// Page side of benchmarks/browser.py: one loader per engine, one timing loop for all.
const state = (window.__kf = window.__kf || {phase: "idle", result: {}, done: false});

// input dtype (ONNX's name) -> the typed array both runtimes take: kernelforge.js reads int64 from
// BigInt64Array and bool from Uint8Array, as ort.Tensor does
const ARRAYS = {
  float32: Float32Array, int64: BigInt64Array, int32: Int32Array, int8: Int8Array, uint8: Uint8Array,
  bool: Uint8Array,
};

function b64(array) {
  // outputs go back to Python as base64 of their bytes (and the array's type): exact, and far smaller than JSON
  const bytes = new Uint8Array(array.buffer, array.byteOffset, array.byteLength);
  let text = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    text += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  }
  return {type: array.constructor.name, data: btoa(text)};
}

async function fetchTyped(url, dtype = "float32") {
  const Type = ARRAYS[dtype];
  if (!Type) throw new Error(`${url}: no typed array for input dtype ${dtype}`);
  const response = await fetch(url);
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
  return new Type(await response.arrayBuffer());
}

function loadScript(src) {
  return new Promise((resolve, reject) => {
    const script = document.createElement("script");
    script.src = src;
    script.onload = resolve;
    script.onerror = () => reject(new Error(`could not load ${src}`));
    document.head.appendChild(script);
  });
}

function withTimeout(promise, ms, what) {
  let timer;
  const limit = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} timed out after ${ms / 1000} s`)), ms);
  });
  return Promise.race([promise, limit]).finally(() => clearTimeout(timer));
}

function plain(value) {
  try {
    return JSON.parse(JSON.stringify(value ?? null));
  } catch (error) {
    return String(value);
  }
}

async function kernelforge(c, options) {
  const {load} = await import(`./${c.bundle}kernelforge.js`);
  const model = await load(new URL(`${c.bundle}manifest.json`, location.href).href, options);
  // the page feeds each input as the typed array of its ONNX dtype; the manifest must declare the same
  // (kernelforge.js would take a Float32Array of token ids too, which would hide an export that lost int64)
  for (const {name, dtype} of model.inputs) {
    if (!c.inputs[name]) throw new Error(`manifest input "${name}" is not among the served inputs`);
    if (dtype !== c.inputs[name].dtype) {
      throw new Error(`manifest input "${name}" is ${dtype}; the page feeds ${c.inputs[name].dtype}`);
    }
  }
  return {
    run: (feeds) => model.run(feeds),
    info: {backend: plain(model.backend), device: plain(model.device)},
    dispose: () => model.dispose(),
  };
}

async function onnxruntime(c, file, provider) {
  const ort = await import(`./${c.peers}ort/${file}`);
  // no COOP/COEP headers on this server, so no SharedArrayBuffer: one wasm thread, said explicitly
  ort.env.wasm.numThreads = 1;
  ort.env.wasm.wasmPaths = new URL(`${c.peers}ort/`, location.href).href;
  ort.env.logLevel = "error";
  const session = await ort.InferenceSession.create(new URL(c.onnx, location.href).href, {
    executionProviders: [provider],
  });
  return {
    async run(feeds) {
      const tensors = {};
      for (const [name, data] of Object.entries(feeds)) {
        tensors[name] = new ort.Tensor(c.inputs[name].dtype, data, c.inputs[name].shape);
      }
      const results = await session.run(tensors);
      const out = {};
      for (const name of session.outputNames) {
        out[name] = await results[name].getData();  // CPU location: a copy already read back
        results[name].dispose();
      }
      return out;
    },
    info: {version: ort.env.versions ? ort.env.versions.web : null, provider},
    dispose: () => session.release(),
  };
}

async function tensorflow(c, backend) {
  await loadScript(`${c.peers}tfjs-core/tf-core.es2017.min.js`);
  await loadScript(backend === "webgpu"
    ? `${c.peers}tfjs-webgpu/tf-backend-webgpu.es2017.min.js`
    : `${c.peers}tfjs-webgl/tf-backend-webgl.es2017.min.js`);
  const tf = window.tf;
  if (!(await tf.setBackend(backend))) throw new Error(`tf.setBackend("${backend}") failed`);
  await tf.ready();
  const op = c.tfjs;
  // the weights are uploaded once, as a model's constants are at load by the other engines
  const weight = tf.tensor(await fetchTyped(op.weight), op.weightShape, "float32");
  return {
    async run(feeds) {
      const x = tf.tensor(feeds[op.input], c.inputs[op.input].shape, "float32");
      const y = op.op === "matmul" ? tf.matMul(x, weight) : tf.conv2d(x, weight, op.strides, op.pad);
      const data = await y.data();  // the readback, as run() of the other engines includes it
      x.dispose();
      y.dispose();
      return {[op.output]: data};
    },
    info: {version: tf.version_core, backend: tf.getBackend()},
    dispose: () => weight.dispose(),
  };
}

const ENGINES = {
  "kf-webgpu": (c) => kernelforge(c, {backend: "webgpu"}),
  "kf-webgpu-default": (c) => kernelforge(c, {backend: "webgpu", target: "default/wgsl"}),
  "kf-webgl2": (c) => kernelforge(c, {backend: "webgl2"}),
  "ort-webgpu": (c) => onnxruntime(c, "ort.webgpu.min.mjs", "webgpu"),
  "ort-wasm": (c) => onnxruntime(c, "ort.wasm.min.mjs", "wasm"),
  "tfjs-webgpu": (c) => tensorflow(c, "webgpu"),
  "tfjs-webgl": (c) => tensorflow(c, "webgl"),
};

async function bench(c) {
  const result = state.result;
  const feeds = {};
  for (const [name, input] of Object.entries(c.inputs)) feeds[name] = await fetchTyped(input.url, input.dtype);
  state.phase = "load";
  let start = performance.now();
  const engine = await withTimeout(ENGINES[c.engine](c), c.loadTimeoutMs, "load");
  result.load_ms = performance.now() - start;
  result.info = engine.info;
  state.phase = "first run";
  start = performance.now();
  const first = await withTimeout(engine.run(feeds), c.runTimeoutMs, "first run");
  result.first_ms = performance.now() - start;
  result.outputs = Object.fromEntries(Object.entries(first).map(([name, array]) => [name, b64(array)]));
  const warm = performance.now();
  for (let i = 1; i <= c.warmup || performance.now() - warm < c.warmupMs; i++) {
    state.phase = `warm-up run ${i}`;
    await withTimeout(engine.run(feeds), c.runTimeoutMs, state.phase);
  }
  const times = (result.times = []);
  const begin = performance.now();
  while (times.length < c.runs) {
    // a slow engine stops early when the next run would overrun its budget; at least one timed run
    const spent = performance.now() - begin;
    if (times.length > 0 && spent + times[times.length - 1] > c.budgetMs) break;
    state.phase = `run ${times.length + 1}`;
    start = performance.now();
    await withTimeout(engine.run(feeds), c.runTimeoutMs, state.phase);
    times.push(performance.now() - start);
  }
  state.phase = "dispose";
  engine.dispose();
  return result;
}

export function start(c) {
  state.phase = "start";
  bench(c).then(
    () => { state.phase = "done"; state.done = true; },
    (error) => { state.error = String((error && error.stack) || error); state.done = true; },
  );
}
"""


def write_harness(served: Path) -> None:
    """Write the harness page and module at the root of the served folder."""
    (served / "harness.html").write_text(HARNESS_HTML)
    (served / "harness.mjs").write_text(HARNESS_JS)
