"""Kernel selection at load on a GPU the bundle has no records for, against the exact plan tuned for it.

    python benchmarks/browser_select.py [--model mobilenet_v2_style] [--size 224] [--candidates 2,3,4]
                                        [--budget-ms 20000] [--runs 15] [--out FILE]

Chromium's WebGPU runs on SwiftShader here, which the repository's ``tuning_db/`` has records for (tuned natively
through wgpu-py, ``google-swiftshader-vulkan``). Two kinds of bundle are exported:

- **with** those records: its ``google-swiftshader-vulkan/wgsl`` target is what an exact match runs ("exact"), and
  its ``default/wgsl`` the built-in defaults ("defaults");
- **without** them, once per ``--candidates K``: SwiftShader is then a GPU nobody tuned, and the bundle picks by
  class or falls back to the defaults, then selects among its candidates within ``--budget-ms``.

With ``--foreign``, one more bundle (the first K) is exported from a database where SwiftShader's records are
filed under a made-up discrete GPU: they become candidates of an untuned GPU without matching it, which measures
what selection makes of the right configs when the pool has them.

In one fresh Chromium page: each K bundle is loaded with ``tune: "off"`` ("plain load") and with selection (its
time, kernels measured, the estimated gain); after selection, the same bundle is loaded again (the choice comes
from IndexedDB: "cached load"), plain and cached loads alternated 3 times. Then every plan is run in alternation
after warm-up runs: exact, defaults, the unselected plan and each K's selected plan. Outputs are checked against
ONNX Runtime CPU. Recovery = (defaults - selected) / (defaults - exact).

Prints a table and writes ``benchmarks/results/browser_select[-MODEL].json``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import table, write_json
from _image_models import max_rel_err, reference, save_model

from kernelforge.export import export
from kernelforge.testing import chromium

REPO_DB = Path(__file__).resolve().parent.parent / "tuning_db"
EXACT = "google-swiftshader-vulkan/wgsl"

PAGE = """async ([ks, x, dims, runs, warmup, budgetMs, exact]) => {
  const kf = await import("./with/kernelforge.js");
  const feeds = { x: { data: Float32Array.from(x), dims } };
  const timeLoad = async (url, opts) => {
    const start = performance.now();
    const m = await kf.load(url, opts);
    const ms = performance.now() - start;
    await m.run(feeds);  // the first run: pipelines are in use
    return [m, ms, performance.now() - start];
  };
  const models = {};
  const out = { selection: {}, loads: {}, reports: {} };
  models.exact = (await timeLoad("./with/", { target: exact }))[0];
  models.defaults = (await timeLoad("./with/", { target: "default/wgsl" }))[0];
  for (const k of ks) {
    const url = `./k${k}/`;
    const [plain] = await timeLoad(url, { tune: "off" });
    const { target, match } = plain.device;
    if (k === ks[0]) [models.unselected, out.unselectedTarget] = [plain, `${target} (${match})`];
    else plain.dispose();
    const [m] = await timeLoad(url, { tune: { budgetMs } });
    const tuning = await m.tuned;
    const report = m.tuningReport();
    const winners = report.kernels.filter((r) => r.winner).length;
    out.selection[k] = { ...tuning, target: m.device.target, match: m.device.match, winners };
    out.reports[k] = report;
    models[`K=${k}`] = m;
    const loads = { plain: [], cached: [], plainFirstRun: [], cachedFirstRun: [], states: [] };
    for (let i = 0; i < 3; i++) {
      const [a, ta, fa] = await timeLoad(url, { tune: "off" });
      a.dispose();
      const [b, tb, fb] = await timeLoad(url, { tune: { budgetMs } });
      loads.states.push(b.tuning.state);
      b.dispose();
      loads.plain.push(ta); loads.cached.push(tb); loads.plainFirstRun.push(fa); loads.cachedFirstRun.push(fb);
    }
    out.loads[k] = loads;
  }
  const names = Object.keys(models);
  const outputs = {};
  for (const n of names) {
    outputs[n] = Array.from(Object.values(await models[n].run(feeds))[0]);
    for (let i = 0; i < warmup; i++) await models[n].run(feeds);
  }
  const times = Object.fromEntries(names.map((n) => [n, []]));
  for (let r = 0; r < runs; r++) {
    for (const n of names) {
      const start = performance.now();
      await models[n].run(feeds);
      times[n].push(performance.now() - start);
    }
  }
  return { ...out, names, times, outputs };
}"""


def _manifest_bytes(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    return len(data), len(gzip.compress(data, 9))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="mobilenet_v2_style", choices=["mobilenet_v2_style", "resnet18_style"])
    parser.add_argument("--size", type=int, default=224, help="input height and width")
    parser.add_argument("--candidates", default="3", help="comma-separated K values to compare (configs per kernel)")
    parser.add_argument("--budget-ms", type=float, default=20000.0, help="selection budget of each load")
    parser.add_argument("--runs", type=int, default=15, help="timed runs per plan, alternated")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--foreign", action="store_true", help="also a bundle whose pool has SwiftShader's records")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    ks: list[int | str] = [int(k) for k in args.candidates.split(",")]
    reason = chromium.available()
    if reason:
        print(f"cannot run: {reason}")
        return 1

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model, path = save_model(args.model, args.size, root)
        without = root / "db-without"
        shutil.copytree(REPO_DB, without, ignore=shutil.ignore_patterns("*.lock", "google-swiftshader-*"))
        served = root / "served"
        export(path, served / "with", db=REPO_DB, candidates=1)
        sizes: dict[str, Any] = {"no candidates": _manifest_bytes(served / "with" / "manifest.json")}
        export(path, served / "k1", db=without, candidates=1)
        sizes["K=1"] = _manifest_bytes(served / "k1" / "manifest.json")
        for k in list(ks):
            export(path, served / f"k{k}", db=without, candidates=int(k))
            sizes[f"K={k}"] = _manifest_bytes(served / f"k{k}" / "manifest.json")
        if args.foreign:
            foreign = root / "db-foreign"
            shutil.copytree(without, foreign)
            data = json.loads((REPO_DB / "google-swiftshader-vulkan.json").read_text())
            acme = {"fingerprint": "acme-gpu-vulkan", "vendor": "acme", "name": "ACME GPU", "class": "dgpu"}
            data["device"].update(acme)
            (foreign / "acme-gpu-vulkan.json").write_text(json.dumps(data))
            ks.append(f"{ks[0]}f")
            export(path, served / f"k{ks[-1]}", db=foreign, candidates=int(ks[0]))
            sizes[f"K={ks[-1]}"] = _manifest_bytes(served / f"k{ks[-1]}" / "manifest.json")
        x, expected = reference(model, args.size)
        (served / "index.html").write_text("<!doctype html><title>select</title>")
        with chromium.serve(served) as url, chromium.page() as page:
            page.goto(url + "index.html")
            got = page.evaluate(
                PAGE, [ks, x.ravel().tolist(), list(x.shape), args.runs, args.warmup, args.budget_ms, EXACT]
            )
    med = {n: statistics.median(got["times"][n]) for n in got["names"]}
    exact, defaults = med["exact"], med["defaults"]
    rows = []
    for n in got["names"]:
        row: dict[str, Any] = {"plan": n, "median ms": med[n], "vs defaults": defaults / med[n]}
        row["recovery"] = (defaults - med[n]) / (defaults - exact) if defaults != exact else float("nan")
        row["max rel err"] = max_rel_err(got["outputs"][n], expected)
        rows.append(row)
    base_raw, base_gz = sizes["K=1"]
    size_rows = [
        {
            "bundle": name,
            "manifest KiB": raw / 1024,
            "gzip KiB": gz / 1024,
            "growth": raw / base_raw - 1,
            "gzip growth": gz / base_gz - 1,
        }
        for name, (raw, gz) in sizes.items()
    ]
    select_rows = []
    for k in ks:
        s, loads = got["selection"][str(k)], got["loads"][str(k)]
        plain, cached = statistics.median(loads["plain"]), statistics.median(loads["cached"])
        select_rows.append(
            {
                "K": k,
                "picked": f"{s['target']} ({s['match']})",
                "kernels measured": f"{s['kernels']}/{s['total']}",
                "winners not the plan's": s["winners"],
                "selection s": s["ms"] / 1e3,
                "est. speedup": s["speedup"],
                "plain load ms": plain,
                "cached load ms": cached,
                "cached/plain": cached / plain,
                "cached states": ",".join(sorted(set(loads["states"]))),
            }
        )
    print(f"{args.model} at {args.size}², headless Chromium (SwiftShader), budget {args.budget_ms / 1e3:.0f} s; "
          f"unselected plan: {got['unselectedTarget']}")  # fmt: skip
    print(table(rows, ["plan", "median ms", "vs defaults", "recovery", "max rel err"]))
    print(table(select_rows, list(select_rows[0])))
    print(table(size_rows, ["bundle", "manifest KiB", "gzip KiB", "growth", "gzip growth"]))
    name = "browser_select" + ("" if args.model == "mobilenet_v2_style" else f"-{args.model.removesuffix('_style')}")
    written = write_json(
        name,
        {
            "model": args.model,
            "size": args.size,
            "budget_ms": args.budget_ms,
            "runs": args.runs,
            "rows": rows,
            "selection": select_rows,
            "sizes": size_rows,
            "loads": got["loads"],
            "times": got["times"],
            "reports": got["reports"],
        },
        args.out,
    )
    print(f"wrote {written}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
