"""The hand-written browser runtime (kernelforge/export/js/kernelforge.js) on hand-made tiny bundles.

No exporter is involved: every manifest and weights.bin here is written by hand from FORMAT.md, so these tests
pin the runtime to the format. The model is ``z = ((x * w_a + 1) * w_b + 1) ...``, one elementwise
multiply-add per step, each step binding its own constant, over ``x`` of shape [2, 50]. The WGSL plan
ping-pongs two storage buffers; the GLSL plan keeps the 100 values as 25 RGBA32F texels of a 5x5 texture,
where a texel-wise multiply-add needs no addressing. Headless Chromium runs WebGPU and WebGL2 on SwiftShader.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kernelforge.testing import chromium

pytestmark = pytest.mark.browser

JS_DIR = Path(__file__).resolve().parents[2] / "kernelforge" / "export" / "js"
SHAPE = [2, 50]
N = 100

WGSL_MUL_ADD = """
struct Dims { n: u32, pad0: u32, pad1: u32, pad2: u32 }
@group(0) @binding(0) var<uniform> dims: Dims;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) g: vec3<u32>) {
    if (g.x < dims.n) {
        y[g.x] = a[g.x] * w[g.x] + 1.0;
    }
}
"""

GLSL_VERTEX = """#version 300 es
void main() {
    vec2 p = vec2(float((gl_VertexID & 1) << 2) - 1.0, float((gl_VertexID & 2) << 1) - 1.0);
    gl_Position = vec4(p, 0.0, 1.0);
}
"""

GLSL_MUL_ADD = """#version 300 es
precision highp float;
precision highp int;
precision highp sampler2D;
uniform sampler2D u_a;
uniform sampler2D u_w;
layout(location = 0) out vec4 o0;
void main() {
    ivec2 p = ivec2(gl_FragCoord.xy);
    o0 = texelFetch(u_a, p, 0) * texelFetch(u_w, p, 0) + 1.0;
}
"""

# three render targets of 4x1 RGBA32F texels: o0 = the 16 floats of the R32F 4x4 texture u_m1 (flattened),
# o1 = the 4 texels of the RGBA32F 2x2 texture u_m2, o2 = the 4 texels of the input texture u_x
GLSL_COPY = """#version 300 es
precision highp float;
precision highp int;
precision highp sampler2D;
uniform sampler2D u_m1;
uniform sampler2D u_m2;
uniform sampler2D u_x;
layout(location = 0) out vec4 o0;
layout(location = 1) out vec4 o1;
layout(location = 2) out vec4 o2;
void main() {
    int i = int(gl_FragCoord.x);
    vec4 r;
    for (int k = 0; k < 4; k++) {
        int j = 4 * i + k;
        r[k] = texelFetch(u_m1, ivec2(j % 4, j / 4), 0).r;
    }
    o0 = r;
    o1 = texelFetch(u_m2, ivec2(i % 2, i / 2), 0);
    o2 = texelFetch(u_x, ivec2(i, 0), 0);
}
"""

SHADERS = [WGSL_MUL_ADD, GLSL_VERTEX, GLSL_MUL_ADD, GLSL_COPY]
WGSL, VERTEX, GLSL, COPY = range(4)

FLAT = {"rows": 1, "cols": N, "pack": 4, "width": 5, "height": 5}


def pack_constants(arrays: list[np.ndarray], dtype: str = "fp32") -> tuple[list[dict[str, int]], bytes]:
    """Lay constants out as weights.bin does: each at a 16-byte aligned offset, little-endian."""
    blob = bytearray()
    table = []
    for a in arrays:
        blob += bytes(-len(blob) % 16)
        table.append({"offset": len(blob), "count": int(a.size)})
        blob += np.ascontiguousarray(a, dtype="<f4" if dtype == "fp32" else "<f2").tobytes()
    return table, bytes(blob)


def wgsl_plan(ws: list[int], folded: int | None = None) -> dict[str, Any]:
    """Chain ``y = a * w + 1`` over constants ``ws``; ``folded``: also output that constant as ``c``."""
    steps = []
    for k, w in enumerate(ws):
        src, dst = k % 2, (k + 1) % 2
        steps.append(
            {
                "node": f"mul_add_{k}",
                "op": "elementwise",
                "source": "tuned",
                "shader": WGSL,
                "workgroups": [2, 1, 1],
                "uniforms": [N],
                "bindings": [{"buffer": src, "bytes": 4 * N}, {"constant": w}, {"buffer": dst, "bytes": 4 * N}],
            }
        )
    outputs: list[dict[str, Any]] = [{"name": "z", "buffer": len(ws) % 2, "bytes": 4 * N}]
    if folded is not None:
        outputs.append({"name": "c", "constant": folded})
    return {
        "buffers": [4 * N, 4 * N],
        "inputs": [{"name": "x", "buffer": 0, "bytes": 4 * N}],
        "outputs": outputs,
        "steps": steps,
    }


def glsl_plan(ws: list[int], folded: int | None = None) -> dict[str, Any]:
    """The GLSL twin of wgsl_plan: texture 0 is x, then one texture per constant, then two ping-pong textures."""
    distinct = list(dict.fromkeys(ws))
    wtex = {w: 1 + j for j, w in enumerate(distinct)}
    ping = [1 + len(distinct), 2 + len(distinct)]
    steps = []
    prev = 0
    for k, w in enumerate(ws):
        steps.append(
            {
                "node": f"mul_add_{k}",
                "op": "elementwise",
                "source": "default",
                "shader": GLSL,
                "inputs": [{"texture": prev, "sampler": "u_a"}, {"texture": wtex[w], "sampler": "u_w"}],
                "targets": [ping[k % 2]],
                "width": 5,
                "height": 5,
            }
        )
        prev = ping[k % 2]
    outputs: list[dict[str, Any]] = [{"name": "z", "texture": prev, "size": N}]
    if folded is not None:
        outputs.append({"name": "c", "constant": folded})
    return {
        "vertex": VERTEX,
        "textures": [{"width": 5, "height": 5, "pack": 4} for _ in range(3 + len(distinct))],
        "constants": [{"texture": wtex[w], "constant": w, "layout": FLAT} for w in distinct],
        "inputs": [{"name": "x", "texture": 0, "layout": FLAT}],
        "outputs": outputs,
        "steps": steps,
    }


def target(
    tid: str, language: str, plan: dict[str, Any], device: dict[str, Any] | None = None, tuned: int = 0
) -> dict[str, Any]:
    """A manifest target; ``device`` None makes it a default target."""
    kernels = {"tuned": tuned, "nearest": 0, "class": 0, "default": max(0, len(plan["steps"]) - tuned)}
    return {"id": tid, "language": language, "device": device, "kernels": kernels, "plan": plan}


def device(fingerprint: str, vendor: str, cls: str, keywords: list[str]) -> dict[str, Any]:
    """A target's device entry."""
    return {
        "fingerprint": fingerprint,
        "vendor": vendor,
        "class": cls,
        "api": "vulkan",
        "name": fingerprint,
        "keywords": keywords,
    }


def manifest(
    targets: list[dict[str, Any]],
    constants: list[dict[str, int]],
    nbytes: int,
    dtype: str = "fp32",
    outputs: list[dict[str, Any]] | None = None,
    inputs: list[dict[str, Any]] | None = None,
    shaders: list[str] | None = None,
) -> dict[str, Any]:
    """A whole manifest.json of the mul-add model (unless inputs / outputs / shaders say otherwise)."""
    return {
        "format": "kernelforge-bundle",
        "version": 3,
        "generator": "kernelforge tests",
        "model": {
            "name": "mul_add",
            "inputs": inputs or [{"name": "x", "shape": SHAPE}],
            "outputs": outputs or [{"name": "z", "shape": SHAPE}],
        },
        "weights": {"file": "weights.bin", "bytes": nbytes, "dtype": dtype},
        "constants": constants,
        "shaders": shaders or SHADERS,
        "targets": targets,
    }


def seal(man: dict[str, Any], weights: bytes) -> str:
    """manifest.json's text (FORMAT.md, "Integrity"): ``man`` with ``weights.sha256`` of ``weights``, indented, and
    ``,"integrity":"sha256-<hex>"`` put before its closing brace, the SHA-256 of the text before it plus "}"."""
    man = {k: v for k, v in man.items() if k != "integrity"}
    man["weights"] = {**man["weights"], "sha256": hashlib.sha256(weights).hexdigest()}
    body = json.dumps(man, indent=1)
    return f'{body[:-1]},"integrity":"sha256-{hashlib.sha256(body.encode()).hexdigest()}"}}'


def write_bundle(directory: Path, man: dict[str, Any], weights: bytes, demo: bool = False) -> Path:
    """Write manifest.json (sealed for ``weights``) and weights.bin (plus the runtime and demo page when ``demo``)
    into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "manifest.json").write_text(seal(man, weights))
    (directory / "weights.bin").write_bytes(weights)
    if demo:
        for name in ("kernelforge.js", "index.html"):
            shutil.copy(JS_DIR / name, directory / name)
    return directory


def mul_add(x: np.ndarray, *ws: np.ndarray) -> np.ndarray:
    """Numpy reference of the chain, in float32 like the GPU."""
    y = x.astype(np.float32)
    for w in ws:
        y = (y * w.astype(np.float32) + np.float32(1)).astype(np.float32)
    return y


# ---------------------------------------------------------------------------------------------------------------
# page plumbing

PRELUDE = """
const kf = await import(base + "kernelforge.js");
// the error a promise rejects with, or null when it resolves
const reason = async (p) => {
  try { await p; return null; } catch (e) { return {name: e?.name, message: String(e?.message ?? e)}; }
};
const x = (v) => new Float32Array(v);
const plain = (out) => Object.fromEntries(Object.entries(out).map(([k, v]) => [k, Array.from(v)]));
"""


class Site:
    """A served temporary folder: the runtime and a blank page at its root, bundles in sub-folders."""

    def __init__(self, root: Path, base: str, page: Any) -> None:
        self.root = root
        self.base = base
        self.page = page

    def bundle(self, name: str, man: dict[str, Any], weights: bytes, demo: bool = False) -> str:
        """Write a bundle into sub-folder ``name``; return its URL (the folder, ending in "/")."""
        write_bundle(self.root / name, man, weights, demo)
        return f"{self.base}{name}/"

    def js(self, body: str, arg: Any = None) -> Any:
        """Run ``body`` (an async function body seeing base, arg, kf and the PRELUDE helpers) on a fresh page."""
        self.page.goto(self.base + "blank.html")
        return self.page.evaluate(f"async ([base, arg]) => {{ {PRELUDE}\n{body}\n}}", [self.base, arg])


@pytest.fixture
def site(browser_page: Any, tmp_path: Path) -> Iterator[Site]:
    (tmp_path / "blank.html").write_text("<!doctype html><title>kernelforge runtime tests</title>")
    shutil.copy(JS_DIR / "kernelforge.js", tmp_path / "kernelforge.js")
    with chromium.serve(tmp_path) as base:
        try:
            yield Site(tmp_path, base, browser_page)
        finally:
            # leave no wrapped prototypes or served origin behind for the session's other tests
            browser_page.goto("about:blank")


def _random(seed: int, *shape: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _close(got: list[float], want: np.ndarray) -> None:
    # a GPU may fuse a * w + 1 into one rounding, numpy rounds twice
    np.testing.assert_allclose(np.asarray(got, dtype=np.float32), want.reshape(-1), rtol=1e-6, atol=1e-6)


def _chain_bundle(site: Site, language: str, ws: int = 2, folded: bool = True) -> tuple[str, list[np.ndarray]]:
    """A one-target bundle (default/wgsl or default/glsl) of ``ws`` multiply-add steps; return URL, constants."""
    consts = [_random(10 + k, N) for k in range(ws)] + [_random(99, 6)]
    table, blob = pack_constants(consts)
    fold = ws if folded else None
    plan = wgsl_plan(list(range(ws)), fold) if language == "wgsl" else glsl_plan(list(range(ws)), fold)
    outputs = [{"name": "z", "shape": SHAPE}] + ([{"name": "c", "shape": [6]}] if folded else [])
    man = manifest([target(f"default/{language}", language, plan)], table, len(blob), outputs=outputs)
    return site.bundle(language, man, blob), consts


RUN_CHAIN = """
const m = await kf.load(arg.url, {backend: arg.backend});
const [x1, x2] = arg.xs.map(x);
const first = await m.run({x: x1});
// runs share every buffer; started together they must still be serialized
const [a, b] = await Promise.all([m.run({x: x2}), m.run({x: x1})]);
const info = {backend: m.backend, device: m.device, inputs: m.inputs, outputs: m.outputs, first: plain(first),
              a: Array.from(a.z), b: Array.from(b.z), isF32: first.z instanceof Float32Array};
m.dispose();
return info;
"""


# ---------------------------------------------------------------------------------------------------------------
# running plans


@pytest.mark.parametrize(("backend", "language"), [("webgpu", "wgsl"), ("webgl2", "glsl")])
def test_runs_the_plan_and_matches_numpy(site: Site, backend: str, language: str) -> None:
    url, consts = _chain_bundle(site, language)
    x1, x2 = _random(1, N), _random(2, N)
    info = site.js(RUN_CHAIN, {"url": url, "backend": backend, "xs": [x1.tolist(), x2.tolist()]})
    assert info["backend"] == backend
    assert info["device"]["target"] == f"default/{language}"
    assert info["device"]["match"] == "default"
    assert "swiftshader" in info["device"]["adapter"]
    assert info["device"]["class"] == "cpu" and info["device"]["software"] is True
    assert info["device"]["kernels"] == {"tuned": 0, "nearest": 0, "class": 0, "default": 2}
    # a manifest without dtypes: every input and output is float32
    assert info["inputs"] == [{"name": "x", "shape": SHAPE, "dtype": "float32"}]
    assert info["outputs"] == [
        {"name": "z", "shape": SHAPE, "dtype": "float32"},
        {"name": "c", "shape": [6], "dtype": "float32"},
    ]
    assert info["isF32"]
    assert sorted(info["first"]) == ["c", "z"]
    _close(info["first"]["z"], mul_add(x1, *consts[:2]))
    _close(info["a"], mul_add(x2, *consts[:2]))
    _close(info["b"], mul_add(x1, *consts[:2]))
    np.testing.assert_array_equal(np.asarray(info["first"]["c"], dtype=np.float32), consts[2])


RUN_MANY = """
const queue = GPUQueue.prototype, done = queue.onSubmittedWorkDone;
let nudges = 0, hops = 0;
queue.onSubmittedWorkDone = function () { nudges++; return done.call(this); };
const Channel = globalThis.MessageChannel;
globalThis.MessageChannel = class extends Channel { constructor() { super(); hops++; } };
try {
  const m = await kf.load(arg.url, {backend: "webgpu"});
  const xs = arg.xs.map(x);
  const out = [];
  for (let i = 0; i < 60; i++) out.push(Array.from((await m.run({x: xs[i % 2]})).z));
  m.dispose();
  return {out, nudges, hops};
} finally {
  queue.onSubmittedWorkDone = done;
  globalThis.MessageChannel = Channel;
}
"""


def test_every_run_reads_its_own_result_while_readback_is_nudged(site: Site) -> None:
    # after a short run the WebGPU backend pokes the GPU process during the next run's readback (once a run took
    # under 1.5 ms, from message-channel hops as well as timers); with or without the pokes, each run must read
    # back its own outputs (alternating inputs expose a stale or early read)
    url, consts = _chain_bundle(site, "wgsl")
    x1, x2 = _random(3, N), _random(4, N)
    got = site.js(RUN_MANY, {"url": url, "xs": [x1.tolist(), x2.tolist()]})
    print(f"nudges {got['nudges']}, hop loops {got['hops']} in 60 runs")
    assert got["nudges"] > 0, "no run was nudged: the test did not exercise what it is about"
    assert len(got["out"]) == 60
    for i, z in enumerate(got["out"]):
        _close(z, mul_add((x1, x2)[i % 2], *consts[:2]))


def test_webgl2_uploads_by_the_layout_rule(site: Site) -> None:
    # FORMAT.md: value (r, c) of a [rows, cols] matrix goes to float (r * ceil(cols / pack) + c // pack) * pack
    # + c % pack of a zero-filled width * height * pack array. One copy step with three render targets reads
    # the raw floats back: an R32F [3, 5] constant, an RGBA32F [2, 5] constant, and a 7-value input.
    m1, m2 = _random(3, 3, 5), _random(4, 2, 5)
    table, blob = pack_constants([m1, m2])
    plan = {
        "vertex": VERTEX,
        "textures": [
            {"width": 4, "height": 1, "pack": 4},
            {"width": 4, "height": 4, "pack": 1},
            {"width": 2, "height": 2, "pack": 4},
        ]
        + [{"width": 4, "height": 1, "pack": 4}] * 3,
        "constants": [
            {"texture": 1, "constant": 0, "layout": {"rows": 3, "cols": 5, "pack": 1, "width": 4, "height": 4}},
            {"texture": 2, "constant": 1, "layout": {"rows": 2, "cols": 5, "pack": 4, "width": 2, "height": 2}},
        ],
        "inputs": [{"name": "x", "texture": 0, "layout": {"rows": 1, "cols": 7, "pack": 4, "width": 4, "height": 1}}],
        "outputs": [
            {"name": "m1", "texture": 3, "size": 16},
            {"name": "m2", "texture": 4, "size": 16},
            {"name": "xr", "texture": 5, "size": 8},
        ],
        "steps": [
            {
                "node": "copy",
                "op": "relayout",
                "source": "default",
                "shader": COPY,
                "inputs": [
                    {"texture": 1, "sampler": "u_m1"},
                    {"texture": 2, "sampler": "u_m2"},
                    {"texture": 0, "sampler": "u_x"},
                ],
                "targets": [3, 4, 5],
                "width": 4,
                "height": 1,
            }
        ],
    }
    outputs = [{"name": "m1", "shape": [16]}, {"name": "m2", "shape": [16]}, {"name": "xr", "shape": [8]}]
    man = manifest(
        [target("default/glsl", "glsl", plan)], table, len(blob), outputs=outputs, inputs=[{"name": "x", "shape": [7]}]
    )
    url = site.bundle("layout", man, blob)
    xv = _random(5, 7)
    got = site.js(
        "const m = await kf.load(arg.url); const out = plain(await m.run({x: x(arg.x)})); m.dispose(); "
        "return {backend: m.backend, out};",
        {"url": url, "x": xv.tolist()},
    )
    assert got["backend"] == "webgl2"  # the bundle has no wgsl target, so auto falls back
    want1 = np.zeros(16, np.float32)
    want2 = np.zeros(16, np.float32)
    for r in range(3):
        want1[r * 5 : r * 5 + 5] = m1[r]  # pack 1: 5 texels per row
    for r in range(2):
        want2[r * 8 : r * 8 + 5] = m2[r]  # pack 4: ceil(5 / 4) = 2 texels = 8 floats per row
    np.testing.assert_array_equal(np.asarray(got["out"]["m1"], np.float32), want1)
    np.testing.assert_array_equal(np.asarray(got["out"]["m2"], np.float32), want2)
    np.testing.assert_array_equal(np.asarray(got["out"]["xr"], np.float32), np.append(xv, 0))


FP16_SPECIAL = [0.5, -2.0, 65504.0, 2.0**-24, 3 * 2.0**-16, -0.0, 1 / 3, -65504.0, np.inf, -np.inf, np.nan]


@pytest.mark.parametrize(("backend", "language"), [("webgpu", "wgsl"), ("webgl2", "glsl")])
def test_fp16_weights_widen_exactly(site: Site, backend: str, language: str) -> None:
    special = np.array(FP16_SPECIAL, dtype=np.float16)
    w = _random(7, N).astype(np.float16)
    w[: len(special) - 3] = special[:-3]  # the finite ones also go through the GPU
    table, blob = pack_constants([w, special], "fp16")
    plan = wgsl_plan([0], folded=1) if language == "wgsl" else glsl_plan([0], folded=1)
    outputs = [{"name": "z", "shape": SHAPE}, {"name": "c", "shape": [len(special)]}]
    man = manifest([target(f"default/{language}", language, plan)], table, len(blob), "fp16", outputs)
    url = site.bundle("fp16", man, blob)
    xv = np.ones(N, np.float32)
    got = site.js(
        """
        const m = await kf.load(arg.url, {backend: arg.backend});
        const out = await m.run({x: x(arg.x)});
        m.dispose();
        // bit patterns: JSON has no inf, nan or -0
        const bits = (v) => Array.from(new Uint32Array(v.buffer, v.byteOffset, v.length));
        return {z: Array.from(out.z), c: bits(out.c)};
        """,
        {"url": url, "backend": backend, "x": xv.tolist()},
    )
    want = special.astype(np.float32)
    c = np.asarray(got["c"], dtype=np.uint32).view(np.float32)
    assert np.isnan(c[-1])
    np.testing.assert_array_equal(c[:-1].view(np.uint32), want[:-1].view(np.uint32))
    assert c[5] == 0 and np.signbit(c[5])
    assert c[3] == np.float32(2.0**-24)
    _close(got["z"], mul_add(xv, w.astype(np.float32)))


# ---------------------------------------------------------------------------------------------------------------
# target choice


def _matching_bundle(site: Site, keep: set[str]) -> tuple[str, list[np.ndarray]]:
    """Targets of both languages; each binds its own constant, so the output shows which plan ran."""
    consts = [_random(20 + k, N) for k in range(5)]
    table, blob = pack_constants(consts)
    # (id stem, device, constant): the near miss lacks one keyword, the class target comes before the exact one
    entries = [
        ("google-near-miss", device("google-near-miss", "google", "dgpu", ["swiftshader", "radeon"]), 4),
        ("acme-rocket", device("acme-rocket", "acme", "dgpu", ["rocket"]), 0),
        ("mesa-llvmpipe", device("mesa-llvmpipe", "mesa", "cpu", ["llvmpipe"]), 1),
        ("google-swiftshader", device("google-swiftshader", "google", "cpu", ["SwiftShader"]), 2),
        ("default", None, 3),
    ]
    targets = [
        target(f"{stem}/{language}", language, (wgsl_plan if language == "wgsl" else glsl_plan)([k]), dev, tuned=k)
        for language in ("wgsl", "glsl")
        for stem, dev, k in entries
        if stem in keep
    ]
    return site.bundle("match", manifest(targets, table, len(blob)), blob), consts


MATCH_CASES = {
    "exact": ({"google-near-miss", "acme-rocket", "mesa-llvmpipe", "google-swiftshader", "default"}, 2),
    "class": ({"google-near-miss", "acme-rocket", "mesa-llvmpipe", "default"}, 1),
    "default": ({"google-near-miss", "acme-rocket", "default"}, 3),
}
STEMS = {2: "google-swiftshader", 1: "mesa-llvmpipe", 3: "default"}


@pytest.mark.parametrize("backend", ["webgpu", "webgl2"])
@pytest.mark.parametrize("match", list(MATCH_CASES))
def test_target_matching_exact_class_default(site: Site, backend: str, match: str) -> None:
    keep, k = MATCH_CASES[match]
    url, consts = _matching_bundle(site, keep)
    language = "wgsl" if backend == "webgpu" else "glsl"
    xv = _random(6, N)
    got = site.js(
        "const m = await kf.load(arg.url, {backend: arg.backend});"
        "const z = Array.from((await m.run({x: x(arg.x)})).z);"
        "m.dispose(); return {device: m.device, backend: m.backend, z};",
        {"url": url, "backend": backend, "x": xv.tolist()},
    )
    assert got["backend"] == backend
    assert got["device"]["target"] == f"{STEMS[k]}/{language}"
    assert got["device"]["match"] == match
    assert got["device"]["kernels"] == {"tuned": k, "nearest": 0, "class": 0, "default": max(0, 1 - k)}
    _close(got["z"], mul_add(xv, consts[k]))


def test_a_software_or_fallback_adapter_is_said_so(site: Site) -> None:
    url, _ = _chain_bundle(site, "wgsl")
    # the page's real adapter (SwiftShader) under other names: what a hardware GPU and a fallback one report
    got = site.js(
        """
const proto = GPUAdapter.prototype;
const real = Object.getOwnPropertyDescriptor(proto, "info");
const seen = {};
const fakes = {
  hardware: {vendor: "nvidia", architecture: "ampere", device: "", description: ""},
  fallback: {vendor: "acme", architecture: "rocket", device: "", description: "", isFallbackAdapter: true},
};
for (const [name, info] of Object.entries(fakes)) {
  Object.defineProperty(proto, "info", {configurable: true, get() { return info; }});
  try {
    const m = await kf.load(arg.url, {backend: "webgpu"});
    seen[name] = [m.device.software, m.device.class];
    m.dispose();
  } finally {
    Object.defineProperty(proto, "info", real);
  }
}
const m = await kf.load(arg.url, {backend: "webgpu"});
seen.swiftshader = [m.device.software, m.device.class];
m.dispose();
return seen;
""",
        {"url": url},
    )
    assert got == {"hardware": [False, "dgpu"], "fallback": [True, None], "swiftshader": [True, "cpu"]}


def test_forced_target(site: Site) -> None:
    url, consts = _matching_bundle(site, set(MATCH_CASES["exact"][0]))
    xv = _random(8, N)
    got = site.js(
        """
        const run = async (opts) => {
          const m = await kf.load(arg.url, opts);
          const z = Array.from((await m.run({x: x(arg.x)})).z);
          m.dispose();
          return {backend: m.backend, target: m.device.target, match: m.device.match, z};
        };
        return {
          wgsl: await run({target: "default/wgsl"}),
          glsl: await run({target: "default/glsl"}),  // auto: the target's language picks WebGL2
          unknown: await reason(kf.load(arg.url, {target: "nope/wgsl"})),
          mismatch: await reason(kf.load(arg.url, {target: "default/glsl", backend: "webgpu"})),
        };
        """,
        {"url": url, "x": xv.tolist()},
    )
    for language, backend in (("wgsl", "webgpu"), ("glsl", "webgl2")):
        assert got[language]["backend"] == backend
        assert got[language]["target"] == f"default/{language}"
        assert got[language]["match"] == "forced"
        _close(got[language]["z"], mul_add(xv, consts[3]))
    message = got["unknown"]["message"]
    assert '"nope/wgsl"' in message
    assert "default/wgsl" in message and "google-swiftshader/glsl" in message
    assert "glsl" in got["mismatch"]["message"] and "webgpu" in got["mismatch"]["message"]


# ---------------------------------------------------------------------------------------------------------------
# errors


def test_bad_urls_name_the_url_and_status(site: Site) -> None:
    got = site.js(
        """
        return {
          missing: await reason(kf.load(base + "missing/manifest.json")),
          folder: await reason(kf.load(base + "missing/")),
          refused: await reason(kf.load("http://127.0.0.1:9/manifest.json")),
        };
        """
    )
    assert f"{site.base}missing/manifest.json" in got["missing"]["message"]
    assert "HTTP 404" in got["missing"]["message"]
    assert f"{site.base}missing/manifest.json" in got["folder"]["message"]
    assert "http://127.0.0.1:9/manifest.json" in got["refused"]["message"]


def test_bad_manifests_are_rejected(site: Site) -> None:
    _chain_bundle(site, "wgsl")
    good = json.loads((site.root / "wgsl" / "manifest.json").read_text())
    weights = (site.root / "wgsl" / "weights.bin").read_bytes()
    site.bundle("other", {**good, "format": "something-else"}, weights)
    site.bundle("future", {**good, "version": 5}, weights)
    site.bundle("past", {**good, "version": 1}, weights)
    site.bundle("notjson", good, weights)
    (site.root / "notjson" / "manifest.json").write_text("{not json")
    site.bundle("edited", good, weights)
    edited = site.root / "edited" / "manifest.json"
    edited.write_text(edited.read_text().replace('"mul_add"', '"mul_adx"'))
    site.bundle("unsealed", good, weights)
    (site.root / "unsealed" / "manifest.json").write_text(json.dumps({**good, "integrity": None}))
    site.bundle("flipped", good, weights)
    (site.root / "flipped" / "weights.bin").write_bytes(bytes([weights[0] ^ 1]) + weights[1:])
    names = ["other", "future", "past", "notjson", "edited", "unsealed", "flipped"]
    got = site.js(
        "return Object.fromEntries(await Promise.all(arg.map("
        "async (d) => [d, (await reason(kf.load(base + d + '/'))).message])));",
        names,
    )
    assert 'format is "something-else"' in got["other"]
    assert "version 5" in got["future"] and "reads versions 2 to 4" in got["future"]
    assert "version 1" in got["past"] and "re-export" in got["past"]
    assert "not JSON" in got["notjson"] and "notjson/manifest.json" in got["notjson"]
    assert "edited/manifest.json fails its integrity check" in got["edited"]
    assert "unsealed/manifest.json has no integrity hash" in got["unsealed"]
    assert got["flipped"].startswith("kernelforge: weights.bin fails its integrity check")


WRAP_DEVICE_DESTROY = """
let destroyedDevices = 0;
const destroyDevice = GPUDevice.prototype.destroy;
GPUDevice.prototype.destroy = function () { destroyedDevices++; return destroyDevice.call(this); };
"""


@pytest.mark.parametrize("backend", ["webgpu", "webgl2"])
def test_weights_length_is_checked(site: Site, backend: str) -> None:
    language = "wgsl" if backend == "webgpu" else "glsl"
    url, _ = _chain_bundle(site, language)
    weights = site.root / language / "weights.bin"
    blob = weights.read_bytes()
    weights.write_bytes(blob[:-8])
    short = site.js(
        WRAP_DEVICE_DESTROY + "return {...await reason(kf.load(arg.url, {backend: arg.backend})), destroyedDevices};",
        {"url": url, "backend": backend},
    )
    assert (
        short["message"]
        == f"kernelforge: weights.bin is truncated: got {len(blob) - 8} bytes, manifest says {len(blob)}"
    )
    if backend == "webgpu":
        assert short["destroyedDevices"] == 1  # a failed load frees what it made
    weights.write_bytes(blob + bytes(16))
    long = site.js("return reason(kf.load(arg.url, {backend: arg.backend}));", {"url": url, "backend": backend})
    assert f"got {len(blob) + 16} bytes, manifest says {len(blob)}" in long["message"]


def test_run_inputs_are_checked(site: Site) -> None:
    url, _ = _chain_bundle(site, "wgsl")
    got = site.js(
        """
        const m = await kf.load(arg.url);
        const r = {
          short: await reason(m.run({x: new Float32Array(99)})),
          missing: await reason(m.run({})),
          extra: await reason(m.run({x: new Float32Array(100), y: new Float32Array(3)})),
          notArray: await reason(m.run({x: 3})),
          ok: (await m.run({x: Array(100).fill(1)})).z.length,  // plain arrays are widened
        };
        m.dispose();
        r.disposed = await reason(m.run({x: new Float32Array(100)}));
        return r;
        """,
        {"url": url},
    )
    assert '"x"' in got["short"]["message"] and "[2, 50]" in got["short"]["message"]
    assert "99" in got["short"]["message"] and "100" in got["short"]["message"]
    assert 'missing input "x"' in got["missing"]["message"] and "[2, 50]" in got["missing"]["message"]
    assert 'unknown input "y"' in got["extra"]["message"]
    assert '"x"' in got["notArray"]["message"]
    assert got["ok"] == N
    assert "dispose" in got["disposed"]["message"]


@pytest.mark.parametrize(("backend", "language", "index"), [("webgpu", "wgsl", WGSL), ("webgl2", "glsl", GLSL)])
def test_shader_compile_errors_name_the_node_and_log(site: Site, backend: str, language: str, index: int) -> None:
    consts = [_random(1, N)]
    table, blob = pack_constants(consts)
    shaders = list(SHADERS)
    shaders[index] = shaders[index].replace("+ 1.0;", "+ undefined_thing;")
    plan = wgsl_plan([0]) if language == "wgsl" else glsl_plan([0])
    man = manifest([target(f"default/{language}", language, plan)], table, len(blob), shaders=shaders)
    url = site.bundle("broken", man, blob)
    got = site.js("return reason(kf.load(arg.url, {backend: arg.backend}));", {"url": url, "backend": backend})
    message = got["message"]
    assert f"shader {index}" in message and "mul_add_0" in message
    assert "undefined_thing" in message  # the driver's log names the culprit


def test_abort_rejects_with_the_signals_reason(site: Site) -> None:
    url, _ = _chain_bundle(site, "wgsl")
    got = site.js(
        WRAP_DEVICE_DESTROY
        + """
        const before = new AbortController();
        before.abort();
        const during = new AbortController();
        const stages = [];
        const onProgress = (p) => { stages.push(p.stage); if (p.stage === "weights") during.abort(); };
        return {
          before: await reason(kf.load(arg.url, {signal: before.signal})),
          during: await reason(kf.load(arg.url, {signal: during.signal, onProgress})),
          stages, destroyedDevices,
        };
        """,
        {"url": url},
    )
    assert got["before"]["name"] == "AbortError"
    assert got["during"]["name"] == "AbortError"
    assert "weights" in got["stages"]
    assert got["destroyedDevices"] == 1


def test_progress_reports_every_stage(site: Site) -> None:
    url, _ = _chain_bundle(site, "wgsl")
    nbytes = (site.root / "wgsl" / "weights.bin").stat().st_size
    got = site.js(
        "const events = []; const m = await kf.load(arg.url, {onProgress: (p) => events.push(p)}); m.dispose();"
        "return events;",
        {"url": url},
    )
    stages = [e["stage"] for e in got]
    assert stages[0] == "manifest"
    assert {"manifest", "weights", "compile"} == set(stages)
    weights = [e for e in got if e["stage"] == "weights"]
    assert weights[-1] == {"stage": "weights", "loaded": nbytes, "total": nbytes}
    assert [e for e in got if e["stage"] == "compile"][-1] == {"stage": "compile", "loaded": 1, "total": 1}


def test_missing_backends_are_named(site: Site) -> None:
    url, _ = _matching_bundle(site, {"default"})  # both languages
    glsl_url, _ = _chain_bundle(site, "glsl")
    got = site.js(
        """
        const noFloat = WebGL2RenderingContext.prototype.getExtension;
        WebGL2RenderingContext.prototype.getExtension = function (name) {
          return name === "EXT_color_buffer_float" ? null : noFloat.call(this, name);
        };
        const float = await reason(kf.load(arg.glsl, {backend: "webgl2"}));
        WebGL2RenderingContext.prototype.getExtension = noFloat;
        Object.defineProperty(navigator, "gpu", {value: undefined});
        HTMLCanvasElement.prototype.getContext = () => null;
        return {float, gpu: await reason(kf.load(arg.url, {backend: "webgpu"})), none: await reason(kf.load(arg.url))};
        """,
        {"url": url, "glsl": glsl_url},
    )
    assert "EXT_color_buffer_float" in got["float"]["message"]
    assert "WebGPU" in got["gpu"]["message"]
    assert "WebGPU" in got["none"]["message"] and "WebGL2" in got["none"]["message"]


# ---------------------------------------------------------------------------------------------------------------
# dispose


def test_webgpu_dispose_destroys_every_buffer_and_the_device(site: Site) -> None:
    url, _ = _chain_bundle(site, "wgsl")
    got = site.js(
        WRAP_DEVICE_DESTROY
        + """
        const created = [], destroyed = new Set();
        const create = GPUDevice.prototype.createBuffer;
        GPUDevice.prototype.createBuffer = function (d) { const b = create.call(this, d); created.push(b); return b; };
        const destroy = GPUBuffer.prototype.destroy;
        GPUBuffer.prototype.destroy = function () { destroyed.add(this); return destroy.call(this); };
        const m = await kf.load(arg.url);
        await m.run({x: new Float32Array(100)});
        const made = created.length;
        m.dispose();
        m.dispose();  // a second dispose is harmless
        return {made, leaked: created.filter((b) => !destroyed.has(b)).length, destroyedDevices};
        """,
        {"url": url},
    )
    # 2 activation buffers + 2 constants + 1 shared uniform block + 1 readback buffer
    assert got["made"] == 6
    assert got["leaked"] == 0
    assert got["destroyedDevices"] == 1


def test_webgl2_dispose_deletes_everything_and_loses_the_context(site: Site) -> None:
    url, _ = _chain_bundle(site, "glsl")
    got = site.js(
        """
        const P = WebGL2RenderingContext.prototype;
        const track = {};
        for (const kind of ["Texture", "Framebuffer", "Program"]) {
          const live = track[kind] = new Set();
          const create = P["create" + kind], del = P["delete" + kind];
          P["create" + kind] = function () { const o = create.call(this); live.add(o); return o; };
          P["delete" + kind] = function (o) { live.delete(o); return del.call(this, o); };
        }
        let gl;
        const getContext = HTMLCanvasElement.prototype.getContext;
        HTMLCanvasElement.prototype.getContext = function (...a) { return (gl = getContext.apply(this, a)); };
        const m = await kf.load(arg.url, {backend: "webgl2"});
        await m.run({x: new Float32Array(100)});
        const made = Object.fromEntries(Object.entries(track).map(([k, s]) => [k, s.size]));
        m.dispose();
        const left = Object.fromEntries(Object.entries(track).map(([k, s]) => [k, s.size]));
        return {made, left, lost: gl.isContextLost()};
        """,
        {"url": url},
    )
    # textures: x, 2 constants, 2 ping-pong; framebuffers: 2 steps + 1 output; one program
    assert got["made"] == {"Texture": 5, "Framebuffer": 3, "Program": 1}
    assert got["left"] == {"Texture": 0, "Framebuffer": 0, "Program": 0}
    assert got["lost"]


# ---------------------------------------------------------------------------------------------------------------
# the demo page


def _xorshift_inputs(n: int, seed: int) -> np.ndarray:
    """The demo page's deterministic inputs (xorshift32 scaled to [-1, 1))."""
    out = np.empty(n, np.float32)
    s = seed & 0xFFFFFFFF or 1
    for i in range(n):
        s ^= (s << 13) & 0xFFFFFFFF
        s ^= s >> 17
        s ^= (s << 5) & 0xFFFFFFFF
        out[i] = s / 2**31 - 1
    return out


@pytest.mark.parametrize("backend", ["webgpu", "webgl2"])
def test_demo_page_runs_the_bundle(site: Site, backend: str) -> None:
    url, consts = _matching_bundle(site, set(MATCH_CASES["exact"][0]))
    write_bundle(
        site.root / "match",
        json.loads((site.root / "match" / "manifest.json").read_text()),
        (site.root / "match" / "weights.bin").read_bytes(),
        demo=True,
    )
    site.page.goto(f"{url}index.html?backend={backend}")
    site.page.wait_for_function("window.kfDemo !== undefined", timeout=60_000)
    demo = site.page.evaluate("window.kfDemo")
    assert demo.get("done"), demo
    assert demo["backend"] == backend
    assert demo["match"] == "exact"
    assert demo["medianRunMs"] >= 0 and demo["loadMs"] > 0
    want = mul_add(_xorshift_inputs(N, 12345), consts[2])[:8]
    _close(demo["outputs"]["z"], want)
    assert "done" in site.page.inner_text("#status")
    assert "google-swiftshader" in site.page.inner_text("#results")
