"""Tampered bundles in headless Chromium: the runtime refuses every case of ``tests/data/tampered_bundles.json``.

The corpus's mutations are applied to freshly exported bundles (``tests/web/_tampered.py``): class 1 edits leave
the integrity member as exported, class 2 edits are re-hashed as a buggy or hostile exporter would write them. One
page loads every case in turn with the bundle's own ``kernelforge.js``, forcing WebGPU, then WebGL2: each load
must reject with a plain ``Error`` (never a RangeError or TypeError, never a model that runs) whose message names
the integrity failure (class 1) or the field (class 2). The untouched bundles (one of a single variant, one of
three) load and run on both.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from kernelforge.testing import chromium

from ._tampered import Case, cases, export_original, mutations, write

pytestmark = pytest.mark.browser

BACKENDS = ("webgpu", "webgl2")

LOAD_ALL = """
async ([base, dirs, backends]) => {
  const kf = await import(base + "original/kernelforge.js");
  const out = [];
  for (const backend of backends) {
    for (const dir of dirs) {
      try {
        const m = await kf.load(`${base}${dir}/manifest.json`, {backend});
        const zeros = (shape) => new Float32Array(shape.reduce((a, b) => a * b, 1));
        const feeds = Object.fromEntries(m.inputs.map((i) => [i.name, zeros(i.shape)]));
        const outputs = Object.keys(await m.run(feeds));
        m.dispose();
        out.push({dir, backend, loaded: true, outputs});
      } catch (e) {
        out.push({dir, backend, loaded: false, name: e?.name, plain: e?.constructor === Error,
                  message: String(e?.message ?? e)});
      }
    }
  }
  return out;
}
"""


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, list[Case]]]:
    root = tmp_path_factory.mktemp("tampered")
    all_cases = cases(export_original(root / "original"))
    write(root / "cases", all_cases)
    (root / "blank.html").write_text("<!doctype html><title>kernelforge tampered bundles</title>")
    with chromium.serve(root) as base:
        yield base, all_cases


def test_the_corpus_covers_both_classes() -> None:
    found = mutations()
    assert len(found) >= 34
    assert sum(2 in m["classes"] for m in found) >= 34
    assert all(1 in m["classes"] for m in found)


def test_every_tampered_bundle_is_refused_naming_what_is_wrong(browser_page: Any, corpus: Any) -> None:
    base, all_cases = corpus
    browser_page.goto(base + "blank.html")
    by_dir = {f"cases/{c.dir}": c for c in all_cases}
    originals = ["original", "original-variants"]  # version 3, and version 4 (its first variant runs)
    results = browser_page.evaluate(LOAD_ALL, [base, [*originals, *by_dir], list(BACKENDS)])

    control = [r for r in results if r["dir"] in originals]
    want = [(b, d, True, ["y"]) for b in BACKENDS for d in originals]
    assert [(r["backend"], r["dir"], r["loaded"], r.get("outputs")) for r in control] == want, control
    caught: Counter[tuple[str, int]] = Counter()
    failures = []
    for r in results:
        case = by_dir.get(r["dir"])
        if case is None:
            continue
        why = (
            "it loaded and ran"
            if r["loaded"]
            else f"a {r['name']}, not a plain Error"
            if r["name"] != "Error" or not r["plain"]
            else "not the runtime's message"
            if not r["message"].startswith("kernelforge: ")
            else f"the message does not match /{case.expect}/"
            if not re.search(case.expect, r["message"])
            else ""
        )
        if why:
            failures.append(f"{r['backend']} {case.dir}: {why}: {r.get('message', '')}")
        else:
            caught[(r["backend"], case.cls)] += 1
    totals = Counter(c.cls for c in all_cases)
    print(
        f"\n{len(mutations())} mutations, {len(all_cases)} tampered bundles: class 1 {totals[1]}, class 2 {totals[2]}"
    )
    for backend in BACKENDS:
        print(
            f"  {backend}: caught {caught[(backend, 1)] + caught[(backend, 2)]}/{len(all_cases)}"
            f" (class 1 by the integrity checks: {caught[(backend, 1)]}/{totals[1]},"
            f" class 2 by the structural checks: {caught[(backend, 2)]}/{totals[2]})"
        )
    assert not failures, "\n".join(failures)


def test_the_runtime_refuses_them_before_creating_gpu_objects(browser_page: Any, corpus: Any) -> None:
    # a class-2 case is refused by validatePlan() before a backend is looked for: no device, no context
    base, all_cases = corpus
    browser_page.goto(base + "blank.html")
    dirs = [f"cases/{c.dir}" for c in all_cases if c.cls == 2 and not c.name.startswith("weights-")]
    got = browser_page.evaluate(
        """async ([base, dirs]) => {
          const kf = await import(base + "original/kernelforge.js");
          let made = 0;
          const adapter = navigator.gpu.requestAdapter, context = HTMLCanvasElement.prototype.getContext;
          navigator.gpu.requestAdapter = function (...a) { made++; return adapter.apply(this, a); };
          HTMLCanvasElement.prototype.getContext = function (...a) { made++; return context.apply(this, a); };
          try {
            for (const dir of dirs) for (const backend of ["webgpu", "webgl2"]) {
              await kf.load(`${base}${dir}/manifest.json`, {backend}).then((m) => m.dispose(), () => {});
            }
          } finally {
            navigator.gpu.requestAdapter = adapter;
            HTMLCanvasElement.prototype.getContext = context;
          }
          return made;
        }""",
        [base, dirs],
    )
    assert dirs and got == 0
