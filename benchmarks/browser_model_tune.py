"""A whole model tuned in the browser, against the same model's natively tuned records, both run in the browser.

    python benchmarks/browser_model_tune.py [--model mobilenet_v2_style] [--size 224] [--budget 900]
                                            [--api webgpu|webgl2] [--runs 15] [--out FILE]

1. ``kernelforge tune --device browser --model M --time-budget BUDGET``: every distinct
   kernel of the model tuned in a page of headless Chromium (WebGPU on SwiftShader); the wall time of the whole
   command is the model's tuning time.
   The database is a copy of the repository's ``tuning_db/``, whose records (SwiftShader's, tuned natively
   through wgpu-py, among them) seed the browser's studies as they do for a user tuning with the default one.
2. One bundle is exported from that database, so it carries three WebGPU plans: the browser device's, native
   SwiftShader's and the defaults.
3. In one fresh Chromium page the bundle is loaded three times, each forced to one target, and the three are
   run in alternation (a, b, c, a, b, c, ...) after warm-up runs; the medians are compared, and each output
   against ONNX Runtime CPU.

``--api webgl2`` does the same for the GLSL kernels (``--device browser:webgl2``, Chromium's WebGL2 on ANGLE and
SwiftShader); the native GLSL records to compare with are llvmpipe's (OpenGL), the only native GLSL device here.

Prints a table and writes ``benchmarks/results/browser_model_tune.json``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import table, write_json
from _image_models import max_rel_err, reference, save_model

from kernelforge.export import export
from kernelforge.testing import chromium

REPO_DB = Path(__file__).resolve().parent.parent / "tuning_db"

PAGE = """async ([targets, x, dims, runs, warmup, backend]) => {
  const kf = await import("./bundle/kernelforge.js");
  const picked = await kf.load("./bundle/", { backend });
  const auto = { target: picked.device.target, match: picked.device.match };
  picked.dispose();
  const models = {};
  const loads = {};
  for (const t of targets) {
    const start = performance.now();
    models[t] = await kf.load("./bundle/", { target: t, backend });
    loads[t] = performance.now() - start;
  }
  const feeds = { x: { data: Float32Array.from(x), dims } };
  const outputs = {};
  for (const t of targets) {
    const out = await models[t].run(feeds);
    outputs[t] = Array.from(Object.values(out)[0]);
    for (let i = 0; i < warmup; i++) await models[t].run(feeds);
  }
  const times = Object.fromEntries(targets.map((t) => [t, []]));
  for (let r = 0; r < runs; r++) {
    for (const t of targets) {
      const start = performance.now();
      await models[t].run(feeds);
      times[t].push(performance.now() - start);
    }
  }
  const matches = Object.fromEntries(targets.map((t) => [t, models[t].device.match]));
  return { auto, loads, times, outputs, matches };
}"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="mobilenet_v2_style", choices=["mobilenet_v2_style", "resnet18_style"])
    parser.add_argument("--size", type=int, default=224, help="input height and width")
    parser.add_argument("--budget", type=float, default=900.0, help="seconds for the whole model's tune")
    parser.add_argument("--api", default="webgpu", choices=["webgpu", "webgl2"], help="the browser API to tune for")
    parser.add_argument("--runs", type=int, default=15, help="timed runs per target, alternated")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    reason = chromium.available()
    if reason:
        print(f"cannot run: {reason}")
        return 1

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model, path = save_model(args.model, args.size, root)
        # the repository's records (native SwiftShader among them) seed the browser's studies, as they do for a
        # user who tunes with the default database
        combined = root / "db"
        shutil.copytree(REPO_DB, combined, ignore=shutil.ignore_patterns("*.lock"))
        before = {f.name for f in combined.glob("*.json")}
        started = time.perf_counter()
        cli = str(Path(sys.executable).parent / "kernelforge")
        device, language = ("browser", "wgsl") if args.api == "webgpu" else ("browser:webgl2", "glsl")
        command = [cli, "tune", "--device", device, "--model", str(path), "--time-budget", str(args.budget),
                   "--db", str(combined)]  # fmt: skip
        tuned = subprocess.run(command, capture_output=True, text=True, check=False)
        tune_s = time.perf_counter() - started
        print(tuned.stdout[-3000:])
        if tuned.returncode != 0:
            print(tuned.stderr[-3000:])
            return 1
        (browser_file,) = [f for f in combined.glob("*.json") if f.name not in before]
        kernels_tuned = len(json.loads(browser_file.read_text()).get("records", {}))
        served = root / "served"
        report = export(path, served / "bundle", targets=("all",), db=combined)
        targets = [t.id for t in report.targets if t.id.endswith(f"/{language}")]
        browser_target = f"{browser_file.stem}/{language}"
        native = "swiftshader-vulkan" if args.api == "webgpu" else "llvmpipe-gl"
        native_target = next(t for t in targets if native in t)
        order = [browser_target, native_target, f"default/{language}"]
        x, expected = reference(model, args.size)
        (served / "index.html").write_text("<!doctype html><title>tune</title>")
        with chromium.serve(served) as url, chromium.page() as page:
            page.goto(url + "index.html")
            got = page.evaluate(PAGE, [order, x.ravel().tolist(), list(x.shape), args.runs, args.warmup, args.api])
    rows = []
    for target in order:
        rows.append(
            {
                "target": target,
                "match": got["matches"][target],
                "load ms": got["loads"][target],
                "median ms": statistics.median(got["times"][target]),
                "max rel err": max_rel_err(got["outputs"][target], expected),
            }
        )
    base = rows[1]["median ms"]
    for row in rows:
        row["vs native-tuned"] = base / row["median ms"]
    auto = f"{got['auto']['target']} ({got['auto']['match']})"
    print(f"{args.model} at {args.size}²: {kernels_tuned} kernels tuned in the browser in {tune_s:.0f} s "
          f"(budget {args.budget:.0f} s); an unforced load picks {auto}")  # fmt: skip
    print(table(rows, ["target", "match", "load ms", "median ms", "vs native-tuned", "max rel err"]))
    written = write_json(
        "browser_model_tune",
        {
            "model": args.model,
            "api": args.api,
            "size": args.size,
            "budget_s": args.budget,
            "tune_s": tune_s,
            "kernels_tuned": kernels_tuned,
            "auto": got["auto"],
            "runs": args.runs,
            "rows": rows,
            "times": got["times"],
        },
        args.out,
    )
    print(f"wrote {written}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
