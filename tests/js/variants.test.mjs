// Unit tests of bundles with several variants (shape sets; FORMAT.md, "Variants") in the browser runtime
// (kernelforge/export/js/kernelforge.js): which variant a run's inputs pick (pickVariant), the version-4 checks of
// checkManifest and validatePlan's paths, and load()'s shapes option, all without a GPU.
// Run with `node --test tests/js/` (Node >= 20).

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { describe, it } from "node:test";

import { checkManifest, load, pickVariant, readManifest, validatePlan } from "../../kernelforge/export/js/kernelforge.js";

const isKf = (pattern) => (e) => e instanceof Error && e.name === "Error" && e.message.startsWith("kernelforge: ") && pattern.test(e.message);
const throwsKf = (fn, pattern) => assert.throws(fn, isKf(pattern));
const rejectsKf = (promise, pattern) => assert.rejects(promise, isKf(pattern));
const URL_ = "http://x/manifest.json";

// ---------------------------------------------------------------------------------------------------------------
// pickVariant

const tensors = (seq) => [
  { name: "ids", shape: [1, seq], dtype: "int64" },
  { name: "mask", shape: [1, seq], dtype: "float32" },
];
const seqs = [32, 64, 128].map((n) => ({ inputs: tensors(n), outputs: [{ name: "y", shape: [1, n, 16], dtype: "float32" }] }));

describe("pickVariant", () => {
  it("takes the variant whose element counts the inputs have, when exactly one has them", () => {
    assert.equal(pickVariant(seqs, { ids: { count: 32 }, mask: { count: 32 } }, "run()"), 0);
    assert.equal(pickVariant(seqs, { ids: { count: 128 }, mask: { count: 128 } }, "run()"), 2);
  });

  it("takes the variant whose dims the inputs have", () => {
    assert.equal(pickVariant(seqs, { ids: { count: 64, dims: [1, 64] }, mask: { count: 64 } }, "run()"), 1);
    assert.equal(pickVariant(seqs, { ids: { dims: [1, 128] } }, "load(): shapes"), 2, "inputs not given fit any variant");
  });

  it("fails naming every variant's shapes when none fits", () => {
    const want = /^kernelforge: run\(\): no variant takes "ids" of 48 values, "mask" of 48 values; the bundle has ids \[1, 32\], mask \[1, 32\] \| ids \[1, 64\], mask \[1, 64\] \| ids \[1, 128\], mask \[1, 128\]$/;
    throwsKf(() => pickVariant(seqs, { ids: { count: 48 }, mask: { count: 48 } }, "run()"), want);
    // the counts fit variant 1, the dims none: dims are the caller's word
    throwsKf(() => pickVariant(seqs, { ids: { count: 64, dims: [64, 1] }, mask: { count: 64 } }, "run()"), /no variant takes "ids" \[64, 1\], "mask" of 64 values; /);
    // inputs of two variants at once
    throwsKf(() => pickVariant(seqs, { ids: { count: 32 }, mask: { count: 64 } }, "run()"), /no variant takes "ids" of 32 values, "mask" of 64 values; the bundle has /);
    throwsKf(() => pickVariant(seqs, { ids: { dims: [1, 48] } }, "load(): shapes"), /^kernelforge: load\(\): shapes: no variant takes "ids" \[1, 48\]; /);
  });

  it("fails when counts alone fit several variants, asking for dims", () => {
    const two = [{ inputs: [{ name: "x", shape: [1, 64] }] }, { inputs: [{ name: "x", shape: [2, 32] }] }];
    throwsKf(
      () => pickVariant(two, { x: { count: 64 } }, "run()"),
      /^kernelforge: run\(\): "x" of 64 values fit 2 variants \(x \[1, 64\] \| x \[2, 32\]\); give the dims \(\{data, dims\} inputs, or the shapes option\)$/,
    );
    assert.equal(pickVariant(two, { x: { count: 64, dims: [2, 32] } }, "run()"), 1);
  });
});

// ---------------------------------------------------------------------------------------------------------------
// version 4: checkManifest and validatePlan

const ZEROS16 = createHash("sha256").update(new Uint8Array(16)).digest("hex");
// a plan per variant that passes validatePlan(): the output is the input, in place
const plan = (n) => ({ buffers: [4 * n], inputs: [{ name: "x", buffer: 0, bytes: 4 * n }], outputs: [{ name: "z", buffer: 0, bytes: 4 * n }], steps: [] });
const variant = (n) => ({
  inputs: [{ name: "x", shape: [1, n], dtype: "float32" }],
  outputs: [{ name: "z", shape: [1, n], dtype: "float32" }],
  targets: [{ id: "default/wgsl", language: "wgsl", device: null, plan: plan(n) }],
});
const v4 = (...ns) => ({
  format: "kernelforge-bundle",
  version: 4,
  model: { name: "m" },
  weights: { file: "weights.bin", bytes: 16, dtype: "fp32", sha256: ZEROS16 },
  constants: [],
  shaders: [],
  variants: ns.map(variant),
});
/** checkManifest() then validatePlan() on every target of `m` after `edit(m)`. */
const check = (edit = () => {}, m = v4(4, 8, 16)) => {
  edit(m);
  checkManifest(m, URL_);
  for (const v of m.variants) for (const t of v.targets) validatePlan(m, t);
  return m;
};

describe("checkManifest and validatePlan, version 4", () => {
  it("accepts variants, one or several", () => {
    assert.equal(check().variants.length, 3);
    assert.equal(check(() => {}, v4(4)).variants.length, 1);
  });

  it("reads a version-3 manifest as one variant of its model inputs, outputs and targets", () => {
    const m = { ...v4(), version: 3, model: { name: "m", ...variant(4) }, targets: variant(4).targets };
    delete m.model.targets;
    delete m.variants;
    checkManifest(m, URL_);
    assert.equal(m.variants.length, 1);
    assert.equal(m.variants[0].targets, m.targets);
    assert.equal(m.variants[0].inputs, m.model.inputs);
  });

  it("needs a non-empty variants array, and ignores a top-level targets array", () => {
    throwsKf(() => check((m) => delete m.variants), /^kernelforge: http:\/\/x\/manifest\.json has no "variants" array$/);
    throwsKf(() => check((m) => (m.variants = {})), /has no "variants" array$/);
    throwsKf(() => check((m) => (m.variants = [])), /^kernelforge: http:\/\/x\/manifest\.json has no variants$/);
    check((m) => (m.targets = "ignored"));
  });

  it("names the variant's field: tensors, names, dtypes, targets, duplicate shapes", () => {
    const cases = [
      [(m) => (m.variants[1] = 7), /^kernelforge: variants\[1\]\.inputs is undefined; expected an array$/],
      [(m) => (m.variants[2].outputs = "z"), /^kernelforge: variants\[2\]\.outputs is "z"; expected an array$/],
      [(m) => (m.variants[0].targets = null), /^kernelforge: variants\[0\]\.targets is null; expected an array$/],
      [(m) => (m.variants[1].inputs[0].shape[1] = 0), /^kernelforge: variants\[1\]\.inputs\[0\]\.shape\[1\] is 0; expected an integer in 1\.\./],
      [(m) => (m.variants[1].inputs[0].name = 3), /^kernelforge: variants\[1\]\.inputs\[0\]\.name is 3; expected a string$/],
      [(m) => (m.variants[2].outputs[0].dtype = "str"), /^kernelforge: variants\[2\]\.outputs\[0\]\.dtype is "str"; expected one of float32, /],
      [(m) => (m.variants[1].inputs[0].name = "y"), /^kernelforge: variants\[1\]\.inputs\[0\] is "y" \(float32\); variants\[0\]\.inputs\[0\] is "x" \(float32\)$/],
      [(m) => delete m.variants[2].outputs[0].dtype, null], // float32 when absent: the same dtype
      [(m) => (m.variants[2].outputs[0].dtype = "int64"), /^kernelforge: variants\[2\]\.outputs\[0\] is "z" \(int64\); variants\[0\]\.outputs\[0\] is "z" \(float32\)$/],
      [(m) => m.variants[1].outputs.push({ name: "w", shape: [1] }), /^kernelforge: variants\[1\]\.outputs has 2 entries; variants\[0\]\.outputs has 1$/],
      [(m) => m.variants[2].targets.pop(), /^kernelforge: variants\[2\]\.targets has 0 entries; variants\[0\]\.targets has 1$/],
      [(m) => (m.variants[1].targets[0].id = "other"), /^kernelforge: variants\[1\]\.targets\[0\] is "other" \("wgsl"\); variants\[0\]\.targets\[0\] is "default\/wgsl" \("wgsl"\)$/],
      [(m) => (m.variants[2].targets[0].language = "glsl"), /^kernelforge: variants\[2\]\.targets\[0\] is "default\/wgsl" \("glsl"\); /],
      [(m) => (m.variants[2] = variant(4)), /^kernelforge: variants\[2\]\.inputs have the shapes of variants\[0\]\.inputs: \[\[1,4\]\]$/],
      [(m) => (m.variants[1].targets[0].plan.inputs[0].bytes = 16), /^kernelforge: variants\[1\]\.targets\[0\]\.plan\.inputs\[0\]\.bytes is 16; "x" has 8 values \(32 bytes\)$/],
      [(m) => (m.variants[2].outputs[0].shape = [1, 8]), /^kernelforge: variants\[2\]\.targets\[0\]\.plan\.outputs\[0\]\.bytes is 64; "z" has 8 values \(32 bytes\)$/],
      [(m) => (m.variants[1].targets[0].plan = plan(4)), /^kernelforge: variants\[1\]\.targets\[0\]\.plan\.inputs\[0\]\.bytes is 16; "x" has 8 values/],
    ];
    for (const [edit, pattern] of cases) {
      if (pattern === null) check(edit);
      else assert.throws(() => check(edit), isKf(pattern), `${edit}`);
    }
  });

  it("keeps version-3 paths for a version-3 manifest", () => {
    const m = { ...v4(), version: 3, model: { name: "m", inputs: variant(4).inputs, outputs: variant(4).outputs }, targets: variant(4).targets };
    delete m.variants;
    m.targets[0].plan.inputs[0].bytes = 8;
    checkManifest(m, URL_);
    throwsKf(() => validatePlan(m, m.targets[0]), /^kernelforge: targets\[0\]\.plan\.inputs\[0\]\.bytes is 8; /);
    m.model.inputs[0].shape = [0];
    throwsKf(() => checkManifest(m, URL_), /^kernelforge: model\.inputs\[0\]\.shape\[0\] is 0; /);
  });
});

// ---------------------------------------------------------------------------------------------------------------
// load(): everything is checked before a backend is looked for, the shapes option included

const seal = (manifest) => {
  const body = JSON.stringify(manifest);
  return `${body.slice(0, -1)},"integrity":"sha256-${createHash("sha256").update(body).digest("hex")}"}`;
};
const bundleFetch = (manifest) => async (url) => new Response(url.endsWith("manifest.json") ? seal(manifest) : new Uint8Array(manifest.weights.bytes));

describe("load of a version-4 bundle without WebGPU or WebGL2", () => {
  it("reads and checks every variant's plans, then looks for a backend", async () => {
    const m = await readManifest(seal(v4(4, 8)), URL_);
    assert.deepEqual(
      m.variants.map((v) => v.inputs[0].shape),
      [
        [1, 4],
        [1, 8],
      ],
    );
    await rejectsKf(load("http://x/", { fetch: bundleFetch(v4(4, 8)) }), /cannot run here: no WebGPU/);
    const broken = v4(4, 8);
    broken.variants[1].targets[0].plan.buffers = [4];
    await rejectsKf(load("http://x/", { fetch: bundleFetch(broken) }), /^kernelforge: variants\[1\]\.targets\[0\]\.plan\.inputs\[0\]\.bytes is 32; expected an integer in 1\.\.4$/);
  });

  it("refuses shapes that name an unknown input or fit no variant, before looking for a backend", async () => {
    const fetch = bundleFetch(v4(4, 8));
    await rejectsKf(load("http://x/", { fetch, shapes: { y: [1, 4] } }), /^kernelforge: load\(\): shapes: unknown input "y"; the model's inputs are "x"$/);
    await rejectsKf(load("http://x/", { fetch, shapes: { x: [1, 5] } }), /^kernelforge: load\(\): shapes: no variant takes "x" \[1, 5\]; the bundle has x \[1, 4\] \| x \[1, 8\]$/);
    await rejectsKf(load("http://x/", { fetch, shapes: { x: [1, 8] } }), /cannot run here: /);
  });

  it("forces a target of every variant by its id", async () => {
    await rejectsKf(load("http://x/", { fetch: bundleFetch(v4(4, 8)), target: "nope" }), /unknown target "nope"; the bundle has: default\/wgsl$/);
    await rejectsKf(load("http://x/", { fetch: bundleFetch(v4(4, 8)), target: "default/wgsl", backend: "webgl2" }), /target "default\/wgsl" is wgsl, which the webgl2 backend does not run$/);
  });
});
