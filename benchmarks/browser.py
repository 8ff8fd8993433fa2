"""Browser benchmark: kernelforge bundles vs onnxruntime-web and TF.js in the same headless Chromium.

    python benchmarks/browser.py [--models mlp,small_cnn,mobilenet_v2_style,resnet18_style | --family]
                                 [--micro matmul_512,conv3x3_32x56] [--engines kf-webgpu,...]
                                 [--runs 10] [--warmup 3] [--warmup-s 2] [--budget 60] [--quick] [--out FILE]
                                 [--skip-peers]

Model cases are those of ``benchmarks/_cases.py``: the builders of :mod:`kernelforge.testing.models` (the
default four) and the models people ship, which ``--family`` selects instead of the defaults (and no micro
cases): ``minilm`` (a MiniLM-L6-shaped BERT encoder, int64 ``input_ids`` and ``attention_mask``),
``vit_tiny``, ``yolo_style`` (builders of ``kernelforge.testing.families``, reported as unavailable where
that module is missing) and ``mobilenet_v2_style_qdq`` (QDQ int8); ``bert_tiny`` is a small encoder for smoke
runs. Micro-benchmarks are built here with ``onnx.helper``: ``matmul_512`` (a 512x512 input times a
512x512 constant), ``conv3x3_32x56`` (a 3x3, pad-1 convolution of a 1x32x56x56 input by 32 filters), and
``attention_minilm`` and ``attention_vit`` (the scaled dot-product attention of MiniLM's and ViT-tiny's heads as
exporters write it: one attention kernel in kernelforge; not run by TF.js).
Every case is exported as a kernelforge bundle and served, with its .onnx and its seeded inputs (each of
its declared dtype: kernelforge gets int64 as ``BigInt64Array``, onnxruntime-web as an ``int64``
``ort.Tensor``; a bundle whose manifest declares another dtype for an input fails at load), from one local
HTTP server. Engines:

- ``kf-webgpu``: kernelforge on WebGPU, target chosen by the runtime (tuned plan for the adapter if any);
- ``kf-webgpu-default``: kernelforge on WebGPU forced to ``default/wgsl`` (what tuning is worth);
- ``kf-webgl2``: kernelforge on WebGL2;
- ``ort-webgpu`` / ``ort-wasm``: onnxruntime-web's WebGPU and wasm execution providers (one wasm thread:
  the server sends no COOP/COEP headers, so the page is not cross-origin isolated);
- ``tfjs-webgpu`` / ``tfjs-webgl``: TF.js ``tf.matMul`` / ``tf.conv2d`` (NHWC input, HWIO filter, both
  transposed in Python beforehand) on the micro cases only: TF.js does not read ONNX.

Each (case, engine) runs in a freshly launched browser, so every load is cold (nothing cached by an earlier
engine: the server also sends ``Cache-Control: no-store``). Per engine: load (importing the runtime's code and
creating the model until it can run: fetches, wasm and shader compiles included), first run (input upload,
compute, readback), ``--warmup`` untimed runs, continued until ``--warmup-s`` seconds have passed (every
engine's first runs still warm up JIT code and caches: ORT-Web's first timed MLP run took 29 ms against its
11-13 ms median; kernelforge's MLP runs read 2-15 ms over the first 15 or so after 3 warm-up runs, then
1.5-2 ms) and the median of up to ``--runs``
runs; a slow engine stops early when its next run would overrun ``--budget`` seconds (at least one timed
run). The first run's outputs are compared with ONNX Runtime CPU in Python: the largest ``|got - expected|``
relative to the output's largest magnitude. A failure (load error, timeout, a crash) becomes that row's error,
the other engines still run.

Prints the timing table (per row load, first run, their sum: the wait before a page's first answer, the
steady-state median, its speedup over ``ort-webgpu``'s median and its load + first run relative to
``ort-webgpu``'s; unavailable cases listed below), kernelforge's chosen WebGPU/WebGL2 target per
case, and the runtime sizes (kernelforge.js minified by the root ``node_modules`` terser then ``gzip -9``,
full and WebGPU-only with ``--define KF_WEBGL2=false``; the peers' files the pages actually fetched, gzip -9).
Writes ``benchmarks/results/browser.json`` (``browser-quick.json`` with ``--quick``: 3 runs, 20 s budgets).
"""

from __future__ import annotations

import argparse
import base64
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _browser_peers import (
    EXPECTED_FILES,
    PEERS_DIR,
    PeerError,
    ensure_installed,
    gzip_size,
    link_peers,
    minify,
    write_harness,
)
from _cases import FAMILY, SPECS, Unavailable, build, seeded_feeds
from _common import table, write_json

from kernelforge.errors import KernelforgeError
from kernelforge.export import export
from kernelforge.export.bundle import JS_DIR
from kernelforge.testing import chromium

KF_ENGINES = ("kf-webgpu", "kf-webgpu-default", "kf-webgl2")
ORT_ENGINES = ("ort-webgpu", "ort-wasm")
TFJS_ENGINES = ("tfjs-webgpu", "tfjs-webgl")
ENGINES = KF_ENGINES + ORT_ENGINES + TFJS_ENGINES
BASELINE = "ort-webgpu"
DEFAULT_MODELS = ("mlp", "small_cnn", "mobilenet_v2_style", "resnet18_style")
MICRO = ("matmul_512", "conv3x3_32x56", "attention_minilm", "attention_vit")
PAGE_DTYPES = ("float32", "int64", "int32", "int8", "uint8", "bool")
"""Input dtypes the page harness fetches into a typed array (its ``ARRAYS``)."""
ARRAY_DTYPES = {
    "Float32Array": "<f4",
    "Float64Array": "<f8",
    "BigInt64Array": "<i8",
    "BigUint64Array": "<u8",
    "Int32Array": "<i4",
    "Uint32Array": "<u4",
    "Int16Array": "<i2",
    "Uint16Array": "<u2",
    "Int8Array": "i1",
    "Uint8Array": "u1",
}
"""Typed array name -> the numpy dtype of its bytes, for the outputs the page sends back."""
START = f"load+first / {BASELINE}"
COLUMNS = [
    "case",
    "engine",
    "load ms",
    "first ms",
    "load+first ms",
    "median ms",
    "runs",
    f"vs {BASELINE}",
    START,
    "max rel err",
    "error",
]
SIZE_COLUMNS = ["runtime", "files", "raw KiB", "min KiB", "gzip KiB", "min+gzip KiB"]


@dataclass(frozen=True)
class TfjsOp:
    """The same computation as a micro case for TF.js, in TF.js's layouts."""

    op: str
    """``matmul`` or ``conv2d``."""
    input: str
    feeds: dict[str, np.ndarray]
    """The input in TF.js's layout (NHWC for conv2d)."""
    weight: np.ndarray
    """The constant in TF.js's layout (HWIO for conv2d)."""
    output: str
    to_onnx: tuple[int, ...] | None = None
    """Transpose taking TF.js's output layout back to the ONNX model's (None: same layout)."""
    strides: int = 1
    pad: str = "same"


@dataclass
class Case:
    """One model every engine runs: its ONNX, seeded inputs, ONNX Runtime CPU outputs and TF.js twin."""

    name: str
    kind: str
    model: onnx.ModelProto
    feeds: dict[str, np.ndarray]
    reference: dict[str, np.ndarray] = field(default_factory=dict)
    tfjs: TfjsOp | None = None
    export_error: str | None = None
    targets: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class Limits:
    """Time limits of one engine on one case, in seconds."""

    load: float
    run: float
    budget: float
    warmup: int = 0
    """Untimed runs between the first run and the timed ones, the same for every engine."""
    warmup_s: float = 0.0
    """Warm-up goes on until this many seconds have passed too (the browser's start-up work settles)."""

    @property
    def hard(self) -> float:
        """Return the Python-side deadline: every in-page limit plus slack for launch and page start."""
        return self.load + (2 + self.warmup) * self.run + self.warmup_s + self.budget + 60


def _micro_model(name: str, node: onnx.NodeProto, x_shape: list[int], w: np.ndarray, y_shape: list[int]) -> Any:
    graph = helper.make_graph(
        [node],
        name,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape)],
        [numpy_helper.from_array(w, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="kernelforge-bench")
    model.ir_version = 8  # onnxruntime-web 1.30 and Python onnxruntime both read IR 8
    onnx.checker.check_model(model, full_check=True)
    return model


def micro_case(name: str) -> Case:
    """Build a micro-benchmark case: its ONNX model, inputs and the TF.js equivalent."""
    weights = np.random.default_rng(1)
    if name == "matmul_512":
        w = (weights.standard_normal((512, 512)) / np.sqrt(512)).astype(np.float32)
        model = _micro_model(name, helper.make_node("MatMul", ["x", "w"], ["y"]), [512, 512], w, [512, 512])
        feeds = seeded_feeds(model)
        return Case(name, "micro", model, feeds, tfjs=TfjsOp("matmul", "x", feeds, w, "y"))
    if name == "conv3x3_32x56":
        w = (weights.standard_normal((32, 32, 3, 3)) * np.sqrt(2.0 / (32 * 9))).astype(np.float32)
        node = helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1])
        model = _micro_model(name, node, [1, 32, 56, 56], w, [1, 32, 56, 56])
        feeds = seeded_feeds(model)
        # TF.js convolves NHWC inputs with [h, w, in, out] filters; its NHWC output goes back with (0, 3, 1, 2)
        nhwc = {"x": np.ascontiguousarray(feeds["x"].transpose(0, 2, 3, 1))}
        hwio = np.ascontiguousarray(w.transpose(2, 3, 1, 0))
        return Case(name, "micro", model, feeds, tfjs=TfjsOp("conv2d", "x", nhwc, hwio, "y", to_onnx=(0, 3, 1, 2)))
    if name in ("attention_minilm", "attention_vit"):
        return Case(name, "micro", *_attention_model(name))
    raise ValueError(f"unknown micro case {name!r}; choose from {', '.join(MICRO)}")


def _attention_model(name: str) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """Scaled dot-product attention as exporters write it (MatMul, Transpose, Mul, Add, Softmax, MatMul).

    ``attention_minilm``: MiniLM's heads (12 of 32 values, 128 tokens, the last 28 of them padding: an additive
    -10000 mask); ``attention_vit``: ViT-tiny's (3 of 64 values, 197 tokens, no mask). kernelforge runs each
    as one ``attention`` kernel.
    """
    heads, seq, size = (12, 128, 32) if name == "attention_minilm" else (3, 197, 64)
    shape = [1, heads, seq, size]
    nodes = [
        helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 1, 3, 2]),
        helper.make_node("MatMul", ["q", "kt"], ["qk"]),
        helper.make_node("Mul", ["qk", "scale"], ["scaled"]),
    ]
    consts = [numpy_helper.from_array(np.array(1 / np.sqrt(size), np.float32), "scale")]
    scores = "scaled"
    if name == "attention_minilm":
        mask = np.zeros((1, 1, 1, seq), np.float32)
        mask[..., 100:] = -10000.0  # a 100-token sentence padded to 128
        consts.append(numpy_helper.from_array(mask, "mask"))
        nodes.append(helper.make_node("Add", ["scaled", "mask"], ["masked"]))
        scores = "masked"
    nodes += [helper.make_node("Softmax", [scores], ["p"], axis=-1), helper.make_node("MatMul", ["p", "v"], ["y"])]
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, shape) for n in "qkv"]
    graph = helper.make_graph(
        nodes, name, inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)], consts
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="kernelforge-bench")
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model, seeded_feeds(model)


def model_cases(names: Sequence[str]) -> tuple[list[Case], dict[str, str]]:
    """Build the model cases; return them and, by name, why each case that could not be built is missing."""
    cases, unavailable = [], {}
    for name in names:
        try:
            model, feeds = build(name)
        except Unavailable as exc:
            unavailable[name] = str(exc)
            print(f"not run: {exc}", flush=True)
            continue
        cases.append(Case(name, "model", model, feeds))
    return cases, unavailable


def reference(case: Case) -> dict[str, np.ndarray]:
    """Return ONNX Runtime CPU's outputs of a case by output name."""
    import onnxruntime as ort

    session = ort.InferenceSession(case.model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, case.feeds), strict=True))


def rel_error(got: Mapping[str, np.ndarray], expected: Mapping[str, np.ndarray]) -> float:
    """Return the largest ``|got - expected|`` over all outputs, relative to each output's largest magnitude.

    Raises:
        ValueError: When an output is missing or has the wrong number of values.
    """
    worst = 0.0
    for name, want in expected.items():
        if name not in got:
            raise ValueError(f"no output {name!r} (got {sorted(got)})")
        if got[name].size != want.size:
            raise ValueError(f"output {name!r} has {got[name].size} values, expected {want.size}")
        scale = float(np.abs(want).max()) or 1.0
        diff = np.abs(got[name].reshape(want.shape).astype(np.float64) - want)
        worst = max(worst, float(np.nanmax(diff)) / scale if not np.isnan(diff).any() else float("nan"))
    return worst


def write_case(case: Case, served: Path, kf: bool) -> None:
    """Write a case's .onnx, input and TF.js files under ``served/cases/<name>/`` and export its bundle."""
    folder = served / "cases" / case.name
    folder.mkdir(parents=True)
    onnx.save_model(case.model, str(folder / "model.onnx"))
    for name, array in case.feeds.items():
        (folder / f"input_{name}.bin").write_bytes(array.astype(array.dtype.newbyteorder("<")).tobytes())
    if case.tfjs is not None:
        for name, array in case.tfjs.feeds.items():
            (folder / f"tfjs_input_{name}.bin").write_bytes(array.astype("<f4").tobytes())
        (folder / "tfjs_weight.bin").write_bytes(case.tfjs.weight.astype("<f4").tobytes())
    if not kf:
        return
    try:
        report = export(folder / "model.onnx", folder / "bundle", targets=("all",), weights="fp32")
    except KernelforgeError as exc:
        # every kernelforge engine of this case reports this; the peers still run
        case.export_error = f"export failed: {type(exc).__name__}: {str(exc).splitlines()[0]}"
        return
    case.targets = [{"id": t.id, "steps": t.steps, "kernels": t.kernels} for t in report.targets]


def onnx_dtype(array: np.ndarray) -> str:
    """Return the ONNX type name of an input (``float32``, ``int64``, ``bool``, ...), as ``ort.Tensor`` takes it.

    Raises:
        ValueError: For a dtype the page harness has no typed array for.
    """
    name = "bool" if array.dtype == np.bool_ else array.dtype.name
    if name not in PAGE_DTYPES:
        raise ValueError(f"input dtype {array.dtype} is not served (served: {', '.join(PAGE_DTYPES)})")
    return name


def engine_config(case: Case, engine: str, runs: int, limits: Limits) -> dict[str, Any]:
    """Return what the page harness needs to run one engine on one case (URLs relative to the page)."""
    base = f"cases/{case.name}/"
    tf = engine.startswith("tfjs-")
    feeds = case.tfjs.feeds if tf and case.tfjs is not None else case.feeds
    prefix = "tfjs_input_" if tf else "input_"
    config: dict[str, Any] = {
        "engine": engine,
        "bundle": f"{base}bundle/",
        "onnx": f"{base}model.onnx",
        "peers": "peers/",
        "inputs": {
            n: {"url": f"{base}{prefix}{n}.bin", "shape": list(a.shape), "dtype": onnx_dtype(a)}
            for n, a in feeds.items()
        },
        "runs": runs,
        "warmup": limits.warmup,
        "warmupMs": limits.warmup_s * 1e3,
        "budgetMs": limits.budget * 1e3,
        "loadTimeoutMs": limits.load * 1e3,
        "runTimeoutMs": limits.run * 1e3,
        "tfjs": None,
    }
    if tf and case.tfjs is not None:
        op = case.tfjs
        config["tfjs"] = {
            "op": op.op,
            "input": op.input,
            "output": op.output,
            "weight": f"{base}tfjs_weight.bin",
            "weightShape": list(op.weight.shape),
            "strides": op.strides,
            "pad": op.pad,
        }
    return config


def drive(base_url: str, config: dict[str, Any], limits: Limits) -> tuple[dict[str, Any], list[str], list[str]]:
    """Run one engine on one case in a fresh headless Chromium.

    Returns:
        The harness state (``load_ms``, ``first_ms``, ``times``, ``outputs``, ``info``, maybe ``error``), the
        paths the page fetched, and the page's console errors and warnings.
    """
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    fetched: list[str] = []
    console: list[str] = []
    with chromium.page() as page:
        page.on("request", lambda request: fetched.append(urlparse(request.url).path))
        page.on("pageerror", lambda error: console.append(f"pageerror: {error}"))
        page.on("console", lambda m: console.append(f"{m.type}: {m.text}") if m.type in ("error", "warning") else None)
        page.goto(f"{base_url}harness.html")
        # started without awaiting: a hung engine must not block Python, which polls under its own deadline
        page.evaluate("c => import('./harness.mjs').then(m => m.start(c))", config)
        try:
            done = page.wait_for_function(
                "() => window.__kf.done && JSON.stringify(window.__kf)", timeout=limits.hard * 1e3, polling=200
            )
            state: dict[str, Any] = json.loads(done.json_value())
        except PlaywrightTimeout:
            try:  # whatever the page measured before the deadline, if it still answers
                partial = page.wait_for_function("() => JSON.stringify(window.__kf)", timeout=5000)
                state = json.loads(partial.json_value())
            except PlaywrightTimeout:
                state = {"phase": "unresponsive", "result": {}}
            state["error"] = f"no result after {limits.hard:.0f} s (in {state.get('phase')})"
    result = dict(state.get("result") or {})
    if state.get("error"):
        result["error"] = state["error"]
    return result, fetched, console


def decode(case: Case, engine: str, outputs: Mapping[str, Mapping[str, str]]) -> dict[str, np.ndarray]:
    """Return an engine's base64 outputs (``{type: typed array name, data}``) as arrays in the model's layout.

    Raises:
        ValueError: For a typed array type with no numpy twin.
    """
    arrays = {}
    for name, out in outputs.items():
        if out.get("type") not in ARRAY_DTYPES:
            raise ValueError(f"output {name!r} came back as a {out.get('type')}")
        arrays[name] = np.frombuffer(base64.b64decode(out["data"]), dtype=ARRAY_DTYPES[out["type"]])
    op = case.tfjs
    if engine.startswith("tfjs-") and op is not None and op.to_onnx is not None:
        want = case.reference[op.output].shape
        tf_shape = tuple(want[i] for i in np.argsort(op.to_onnx))  # the NHWC shape TF.js returned
        arrays[op.output] = arrays[op.output].reshape(tf_shape).transpose(op.to_onnx)
    return arrays


def first_line(text: str, limit: int = 400) -> str:
    """Return the first non-empty line of an error text, shortened for a table."""
    line = next((s.strip() for s in text.splitlines() if s.strip()), text)
    return line if len(line) <= limit else line[: limit - 3] + "..."


def bench(
    case: Case, engine: str, base_url: str, runs: int, limits: Limits, fetched_by_engine: dict[str, list[str]]
) -> dict[str, Any]:
    """Run one engine on one case; return its row (an error string instead of numbers when it failed)."""
    row: dict[str, Any] = {"case": case.name, "kind": case.kind, "engine": engine}
    if engine in KF_ENGINES and case.export_error:
        row["error"] = case.export_error
        return row
    started = time.perf_counter()
    try:
        result, fetched, console = drive(base_url, engine_config(case, engine, runs, limits), limits)
    except Exception as exc:  # a browser crash or Playwright error is this row's result, not the run's end
        row["error"] = f"{type(exc).__name__}: {first_line(str(exc))}"
        return row
    fetched_by_engine.setdefault(engine, fetched)
    times = result.get("times") or []
    load, first = result.get("load_ms"), result.get("first_ms")
    row.update(
        {
            "load ms": load,
            "first ms": first,
            # what a page waits for before its first answer: the number a user sees
            "load+first ms": load + first if load is not None and first is not None else None,
            "median ms": statistics.median(times) if times else None,
            "runs": len(times),
            "times ms": times,
            "wall s": time.perf_counter() - started,
            "info": result.get("info"),
        }
    )
    device = (result.get("info") or {}).get("device") or {}
    if engine in KF_ENGINES and isinstance(device, dict):
        row["target"], row["match"], row["adapter"] = device.get("target"), device.get("match"), device.get("adapter")
    errors = [result["error"]] if result.get("error") else []
    if result.get("outputs"):
        try:
            row["max rel err"] = rel_error(decode(case, engine, result["outputs"]), case.reference)
        except ValueError as exc:
            errors.append(f"outputs: {exc}")
    if errors:
        row["error"] = first_line(errors[0])
        row["console"] = console[-10:]  # the page's last complaints, for the JSON only
    return row


def add_speedups(rows: list[dict[str, Any]]) -> None:
    """Set each row's baseline median / its median, and its load + first run / the baseline's, per case."""
    base = {r["case"]: r for r in rows if r["engine"] == BASELINE}
    for row in rows:
        ref = base.get(row["case"], {})
        median, own = ref.get("median ms"), row.get("median ms")
        row[f"vs {BASELINE}"] = median / own if median and own else None
        start, own_start = ref.get("load+first ms"), row.get("load+first ms")
        row[START] = own_start / start if start and own_start else None


def code_files(paths: Sequence[str]) -> list[str]:
    """Return the fetched runtime-code paths under ``/peers/`` (no model data), first fetch order, unique."""
    picked = [p.removeprefix("/peers/") for p in paths if p.startswith("/peers/")]
    return list(dict.fromkeys(p for p in picked if p.endswith((".js", ".mjs", ".wasm"))))


def runtime_sizes(served: Path, fetched: Mapping[str, list[str]], peers: bool) -> list[dict[str, Any]]:
    """Return the size rows: kernelforge.js full and WebGPU-only, then each peer engine's fetched code."""
    rows: list[dict[str, Any]] = []
    source = JS_DIR / "kernelforge.js"
    if not source.is_file():
        rows.append({"runtime": "kernelforge.js", "error": f"{source} missing"})
    else:
        raw = source.read_bytes()
        for label, defines in (("kernelforge.js", ()), ("kernelforge.js WebGPU only", ("KF_WEBGL2=false",))):
            row: dict[str, Any] = {"runtime": label, "files": "kernelforge.js", "raw bytes": len(raw)}
            row["gzip bytes"] = gzip_size(raw)
            try:
                small = minify(source, defines)
            except PeerError as exc:
                row["error"] = str(exc)
            else:
                row["min bytes"], row["min+gzip bytes"] = len(small), gzip_size(small)
                if defines and b"KF_WEBGL2" not in raw:
                    row["error"] = "kernelforge.js does not read KF_WEBGL2: same as full"
            rows.append(row)
        # kernel selection: fetched only on a GPU without an exact target (FORMAT.md, "Candidates")
        tune = JS_DIR / "kernelforge-tune.js"
        row = {"runtime": "+ kernelforge-tune.js", "files": tune.name, "raw bytes": len(tune.read_bytes())}
        row["gzip bytes"] = gzip_size(tune.read_bytes())
        try:
            small = minify(tune, ())
        except PeerError as exc:
            row["error"] = str(exc)
        else:
            row["min bytes"], row["min+gzip bytes"] = len(small), gzip_size(small)
        rows.append(row)
    if not peers:
        return rows
    for engine in ORT_ENGINES + TFJS_ENGINES:
        loaded = code_files(fetched.get(engine, []))
        files = loaded or EXPECTED_FILES[engine]
        blobs = [(served / "peers" / f).read_bytes() for f in files]
        rows.append(
            {
                "runtime": engine if loaded else f"{engine} (expected files)",
                "files": " + ".join(Path(f).name for f in files),
                "raw bytes": sum(len(b) for b in blobs),
                # the peers ship minified already: their min size is the raw size
                "min bytes": sum(len(b) for b in blobs),
                "gzip bytes": sum(gzip_size(b) for b in blobs),
                "min+gzip bytes": sum(gzip_size(b) for b in blobs),
            }
        )
    return rows


def size_table(rows: Sequence[dict[str, Any]]) -> str:
    """Format the size rows in KiB."""
    kib = []
    for row in rows:
        shown = {"runtime": row["runtime"], "files": row.get("files")}
        for unit in ("raw", "min", "gzip", "min+gzip"):
            value = row.get(f"{unit} bytes")
            shown[f"{unit} KiB"] = value / 1024 if value is not None else None
        kib.append(shown)
    text = table(kib, SIZE_COLUMNS)
    notes = [f"  {r['runtime']}: {r['error']}" for r in rows if r.get("error")]
    return text + ("\n" + "\n".join(notes) if notes else "")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=None, help="cases of _cases.py: " + ", ".join(SPECS))
    parser.add_argument("--micro", default=None, help="micro cases ('' for none): " + ", ".join(MICRO))
    parser.add_argument("--family", action="store_true", help="models " + ",".join(FAMILY) + " and no micro cases")
    parser.add_argument("--engines", default=",".join(ENGINES), help="engines to run: " + ", ".join(ENGINES))
    parser.add_argument("--runs", type=int, default=None, help="timed runs per engine (default 10, --quick 3)")
    parser.add_argument("--budget", type=float, default=None, help="seconds of timed runs per engine (60, quick 20)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed runs before the timed ones (3, quick 1)")
    parser.add_argument(
        "--warmup-s", type=float, default=None, help="and untimed runs until this many seconds (2, quick 0.5)"
    )
    parser.add_argument("--load-timeout", type=float, default=300.0, help="seconds allowed for one load")
    parser.add_argument("--run-timeout", type=float, default=120.0, help="seconds allowed for one run")
    parser.add_argument("--quick", action="store_true", help="3 runs and a 20 s budget per engine")
    parser.add_argument("--skip-peers", action="store_true", help="kernelforge engines only (no npm, no peers)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    runs = args.runs or (3 if args.quick else 10)
    warmup = args.warmup if args.warmup is not None else (1 if args.quick else 3)
    warmup_s = args.warmup_s if args.warmup_s is not None else (0.5 if args.quick else 2.0)
    budget = args.budget or (20.0 if args.quick else 60.0)
    limits = Limits(args.load_timeout, args.run_timeout, budget, warmup, warmup_s)
    default_models, default_micro = (FAMILY, ()) if args.family else (DEFAULT_MODELS, MICRO)
    models = [n for n in (args.models if args.models is not None else ",".join(default_models)).split(",") if n]
    micro = [n for n in (args.micro if args.micro is not None else ",".join(default_micro)).split(",") if n]
    engines = [e for e in args.engines.split(",") if e]
    bad = [n for n in models if n not in SPECS] + [n for n in micro if n not in MICRO]
    bad += [e for e in engines if e not in ENGINES]
    if bad:
        print(f"unknown model(s), micro case(s) or engine(s): {bad}", file=sys.stderr)
        return 2
    if args.skip_peers:
        engines = [e for e in engines if e in KF_ENGINES]
    reason = chromium.available()
    if reason:
        print(reason, file=sys.stderr)
        return 2
    peers = any(e not in KF_ENGINES for e in engines)
    versions: dict[str, str] = {}
    if peers:
        try:
            versions = ensure_installed()
        except PeerError as exc:
            print(f"{exc}\n(--skip-peers runs kernelforge alone)", file=sys.stderr)
            return 2

    cases, unavailable = model_cases(models)
    cases += [micro_case(n) for n in micro]
    rows: list[dict[str, Any]] = []
    fetched: dict[str, list[str]] = {}
    with tempfile.TemporaryDirectory(prefix="kf-browser-bench-") as tmp:
        served = Path(tmp)
        write_harness(served)
        if peers:
            link_peers(served)
        kf = any(e in KF_ENGINES for e in engines)
        for case in cases:
            case.reference = reference(case)
            write_case(case, served, kf)
            if case.export_error:
                print(f"{case.name}: {case.export_error}", flush=True)
        with chromium.serve(served) as base_url:
            for case in cases:
                for engine in engines:
                    if engine in TFJS_ENGINES and case.tfjs is None:
                        continue  # TF.js runs the micro cases only
                    row = bench(case, engine, base_url, runs, limits, fetched)
                    rows.append(row)
                    shown = {k: row.get(k) for k in ("load ms", "first ms", "median ms", "runs", "max rel err")}
                    text = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in shown.items())
                    print(f"{case.name:>18} {engine:<18} {row.get('error') or text}", flush=True)
        add_speedups(rows)
        sizes = runtime_sizes(served, fetched, peers)

    print()
    print(table([{**r, "error": first_line(r["error"], 70) if r.get("error") else None} for r in rows], COLUMNS))
    kf_rows = [r for r in rows if r["engine"] in KF_ENGINES and r.get("target")]
    if kf_rows:
        print("\nkernelforge's chosen target per case")
        print(table(kf_rows, ["case", "engine", "target", "match", "adapter"]))
    for message in unavailable.values():
        print(f"not run: {message}")
    print("\nruntime code size (what a page downloads before the model's own files)")
    print(size_table(sizes))
    payload = {
        "runs": runs,
        "warmup": limits.warmup,
        "warmup_s": limits.warmup_s,
        "limits_s": {"load": limits.load, "run": limits.run, "budget": limits.budget},
        "engines": engines,
        "peers": versions,
        "peers_lock": str((PEERS_DIR / "package-lock.json").relative_to(PEERS_DIR.parent.parent)),
        "ort_wasm_threads": 1,
        "cross_origin_isolated": False,
        "rows": rows,
        "unavailable": unavailable,
        "targets": {c.name: c.targets for c in cases},
        "sizes": sizes,
    }
    path = write_json("browser-quick" if args.quick else "browser", payload, args.out)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
