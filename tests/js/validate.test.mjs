// Unit tests of what the browser runtime (kernelforge/export/js/kernelforge.js) checks before it creates anything:
// SHA-256 (crypto.subtle and the runtime's own fallback), the manifest's integrity member, validatePlan() on hand-made
// plans, and the tampered-bundle corpus (tests/data/tampered_bundles.json) applied to a bundle exported for the
// test (tests/web/_tampered.py, with the repository's Python: $KF_PYTHON, else .venv/bin/python, else python3).
// No GPU: every case must be refused by checks that run before a backend is looked for (the weights' length and
// hash as the download is read). Run with `node --test tests/js/` (Node >= 20).

import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";

import {
  checkIntegrity,
  checkManifest,
  fetchWeights,
  load,
  readManifest,
  sha256,
  sha256js,
  validatePlan,
} from "../../kernelforge/export/js/kernelforge.js";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..");
const hex = (bytes) => Buffer.from(bytes).toString("hex");
const nodeSha = (bytes) => createHash("sha256").update(bytes).digest("hex");
/** assert.throws / rejects with the runtime's "kernelforge: " prefix and a message matching `pattern`. */
const isKf = (pattern) => (e) => e instanceof Error && e.name === "Error" && e.message.startsWith("kernelforge: ") && pattern.test(e.message);
const throwsKf = (fn, pattern) => assert.throws(fn, isKf(pattern));
const rejectsKf = (promise, pattern) => assert.rejects(promise, isKf(pattern));
const escape = (s) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");

// ---------------------------------------------------------------------------------------------------------------
// SHA-256

describe("sha256js (the fallback where crypto.subtle is missing)", () => {
  const ascii = (s) => new TextEncoder().encode(s);

  it("gives FIPS 180-4's example digests", () => {
    const vectors = [
      ["", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"],
      ["abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"],
      ["abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq", "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"],
      [
        "abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu",
        "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1",
      ],
    ];
    for (const [text, want] of vectors) assert.equal(hex(sha256js(ascii(text))), want, JSON.stringify(text));
    assert.equal(hex(sha256js(new Uint8Array(1e6).fill(0x61))), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
  });

  it("agrees with crypto.subtle at every length around the block and padding boundaries", async () => {
    for (let n = 0; n <= 300; n++) {
      const data = new Uint8Array(n).map((_, i) => (i * 151 + n) & 255);
      const want = hex(new Uint8Array(await crypto.subtle.digest("SHA-256", data)));
      assert.equal(hex(sha256js(data)), want, `${n} bytes`);
    }
  });

  it("hashes a view at an offset of a larger buffer as just its bytes", () => {
    const whole = new Uint8Array(1000).map((_, i) => i & 255);
    const view = whole.subarray(13, 13 + 517);
    assert.equal(hex(sha256js(view)), nodeSha(view));
  });

  it("is what sha256() uses when crypto.subtle is missing (plain http on a LAN address)", async () => {
    const data = new Uint8Array(777).map((_, i) => (i * 7) & 255);
    const saved = Object.getOwnPropertyDescriptor(globalThis, "crypto");
    Object.defineProperty(globalThis, "crypto", { value: {}, configurable: true });
    try {
      assert.equal(await sha256(data), nodeSha(data));
    } finally {
      Object.defineProperty(globalThis, "crypto", saved);
    }
    assert.equal(await sha256(data), nodeSha(data), "crypto.subtle");
  });
});

// ---------------------------------------------------------------------------------------------------------------
// the manifest's integrity member (FORMAT.md, "Integrity")

describe("checkIntegrity", () => {
  const URL_ = "http://x/manifest.json";
  const seal = (body) => `${body.slice(0, -1)},"integrity":"sha256-${nodeSha(body)}"}`;
  const body = '{"format":"kernelforge-bundle","version":2,"shaders":["a,\\"integrity\\":\\"x"]}';

  it("accepts the exporter's text, also indented or followed by a newline", async () => {
    await checkIntegrity(seal(body), URL_);
    await checkIntegrity(seal(body) + "\n", URL_);
    await checkIntegrity(seal(JSON.stringify(JSON.parse(body), null, 1)), URL_);
  });

  it("rejects a text without the member last, or with another algorithm", async () => {
    await rejectsKf(checkIntegrity(body, URL_), /http:\/\/x\/manifest.json has no integrity hash/);
    const moved = `{"integrity":"sha256-${nodeSha(body)}",${body.slice(1)}`;
    await rejectsKf(checkIntegrity(moved, URL_), /has no integrity hash/);
    await rejectsKf(checkIntegrity(seal(body).replace("sha256-", "sha512-"), URL_), /has no integrity hash/);
    await rejectsKf(checkIntegrity(seal(body).replace(/"\}$/, ' "}'), URL_), /has no integrity hash/);
    await rejectsKf(checkIntegrity(seal(body) + "x", URL_), /has no integrity hash/);
  });

  it("rejects any changed byte, whitespace included", async () => {
    const text = seal(body);
    for (const edited of [text.replace("version\":2", "version\":3"), text.replace('"a,', '"b,'), " " + text, text.replace(",", ", ")]) {
      await rejectsKf(checkIntegrity(edited, URL_), /manifest.json fails its integrity check: the SHA-256 of its text is [0-9a-f]{64}, its integrity member says /);
    }
  });
});

// ---------------------------------------------------------------------------------------------------------------
// validatePlan on hand-made plans (FORMAT.md, "What a runtime checks")

const manifest = (plan, language, constants = [{ offset: 0, count: 4 }]) => ({
  format: "kernelforge-bundle",
  version: 3,
  model: { name: "m", inputs: [{ name: "x", shape: [4] }], outputs: [{ name: "z", shape: [4] }] },
  weights: { file: "weights.bin", bytes: 32, dtype: "fp32", sha256: "0".repeat(64) },
  constants,
  shaders: ["@binding(0) @binding(1) @binding(2) @binding(3)", "#version 300 es vertex", "#version 300 es fragment"],
  targets: [{ id: `default/${language}`, language, device: null, plan }],
});
const wgsl = () => ({
  buffers: [16, 16],
  inputs: [{ name: "x", buffer: 0, bytes: 16 }],
  outputs: [{ name: "z", buffer: 1, bytes: 16 }],
  steps: [{ node: "n", shader: 0, workgroups: [1, 1, 1], uniforms: [4], bindings: [{ buffer: 0, bytes: 16 }, { constant: 0 }, { buffer: 1, bytes: 16 }] }],
});
const layout = { rows: 1, cols: 4, pack: 4, width: 1, height: 1 };
const glsl = () => ({
  vertex: 1,
  textures: [
    { width: 1, height: 1, pack: 4 },
    { width: 1, height: 1, pack: 4 },
    { width: 1, height: 1, pack: 4 },
  ],
  constants: [{ texture: 1, constant: 0, layout }],
  inputs: [{ name: "x", texture: 0, layout }],
  outputs: [{ name: "z", texture: 2, size: 4 }],
  steps: [{ node: "n", shader: 2, inputs: [{ texture: 0, sampler: "u_x" }, { texture: 1, sampler: "u_w" }], targets: [2], width: 1, height: 1 }],
});
/** validatePlan() on the plan `make()` returns after `edit(plan, manifest)`. */
const check = (make, language, edit = () => {}) => {
  const plan = make();
  const m = manifest(plan, language);
  edit(plan, m);
  checkManifest(m, "m");
  validatePlan(m, m.targets[0]);
};

describe("validatePlan", () => {
  it("accepts the hand-made plans", () => {
    check(wgsl, "wgsl");
    check(glsl, "glsl");
  });

  it("rejects a constant outside the weights, at a negative, huge or misaligned offset: named, never a RangeError", () => {
    const cases = [
      [{ offset: -16, count: 4 }, /^kernelforge: constants\[0\]\.offset is -16; expected an integer in 0\.\./],
      [{ offset: 2 ** 60, count: 4 }, /^kernelforge: constants\[0\]\.offset is 1152921504606847000; /],
      [{ offset: 4, count: 4 }, /^kernelforge: constants\[0\]\.offset is 4; constants start at multiples of 16 bytes$/],
      [{ count: 4 }, /^kernelforge: constants\[0\]\.offset is undefined; /],
      [{ offset: 16, count: 5 }, /^kernelforge: constants\[0\] lies outside weights\.bin: bytes 16\.\.36 of 32$/],
      [{ offset: 0, count: -1 }, /^kernelforge: constants\[0\]\.count is -1; /],
    ];
    for (const language of ["wgsl", "glsl"]) {
      for (const [entry, pattern] of cases) throwsKf(() => check(language === "wgsl" ? wgsl : glsl, language, (_, m) => (m.constants[0] = entry)), pattern);
    }
  });

  it("checks quantized constants: dtype, scales, zero points, axis and shape, one byte per value", () => {
    const q = { offset: 0, count: 4, dtype: "int8", scale: [0.5], zero_point: [0] };
    const channels = { ...q, scale: [1, 2], zero_point: [0, -3], axis: 1, shape: [2, 2] };
    for (const language of ["wgsl", "glsl"]) {
      const make = language === "wgsl" ? wgsl : glsl;
      check(make, language, (_, m) => (m.constants[0] = q));
      check(make, language, (_, m) => (m.constants[0] = channels));
      check(make, language, (_, m) => (m.constants[0] = { ...q, offset: 16, dtype: "uint8", zero_point: [255] }));
      check(make, language, (_, m) => ((m.version = 2), (m.constants[0] = q)));
      // float16 with a scale: halves widened at load (an int4 bundle's kernel scales), two bytes a value
      check(make, language, (_, m) => (m.constants[0] = { ...q, offset: 16, dtype: "float16", scale: [1] }));
    }
    const cases = [
      [{ ...q, offset: 32 }, /^kernelforge: constants\[0\] lies outside weights\.bin: bytes 32\.\.36 of 32$/],
      [{ ...q, dtype: "int4" }, /^kernelforge: constants\[0\] is int4 \(a kernel's integers\), which has no scale$/],
      [{ ...q, dtype: "int2" }, /^kernelforge: constants\[0\]\.dtype is "int2"; expected "int8", "uint8", "int4" or "float16"$/],
      [{ ...q, offset: 16, count: 9, dtype: "float16", scale: [1] }, /^kernelforge: constants\[0\] lies outside weights\.bin: bytes 16\.\.34 of 32$/],
      [{ ...q, dtype: "float16", zero_point: [1] }, /^kernelforge: constants\[0\]\.zero_point\[0\] is 1; expected an integer in 0\.\.0$/],
      [{ ...q, dtype: "float16", scale: undefined }, /^kernelforge: constants\[0\] is float16 \(a kernel's halves\), which has no zero_point$/],
      [{ ...q, dtype: null }, /^kernelforge: constants\[0\]\.dtype is null; /],
      [{ ...q, scale: 0.5 }, /^kernelforge: constants\[0\]\.scale is 0\.5; expected an array$/],
      [{ ...q, scale: [] }, /^kernelforge: constants\[0\]\.scale is empty$/],
      [{ ...q, scale: [null] }, /^kernelforge: constants\[0\]\.scale\[0\] is null; expected a finite number$/],
      [{ ...q, scale: ["1"] }, /^kernelforge: constants\[0\]\.scale\[0\] is "1"; expected a finite number$/],
      [{ ...q, zero_point: undefined }, /^kernelforge: constants\[0\]\.zero_point is undefined; expected an array$/],
      [{ ...q, zero_point: [0, 0] }, /^kernelforge: constants\[0\]\.zero_point has 2 entries; scale has 1$/],
      [{ ...q, zero_point: [128] }, /^kernelforge: constants\[0\]\.zero_point\[0\] is 128; expected an integer in -128\.\.127$/],
      [{ ...q, dtype: "uint8", zero_point: [-1] }, /^kernelforge: constants\[0\]\.zero_point\[0\] is -1; expected an integer in 0\.\.255$/],
      [{ ...q, zero_point: [0.5] }, /^kernelforge: constants\[0\]\.zero_point\[0\] is 0\.5; /],
      [{ ...q, axis: 0 }, /^kernelforge: constants\[0\] has one scale \(per tensor\) and an axis or shape$/],
      [{ ...channels, shape: undefined }, /^kernelforge: constants\[0\]\.shape is undefined; expected an array$/],
      [{ ...channels, shape: [2, 3] }, /^kernelforge: constants\[0\]\.shape is \[2, 3\], of 6 values; count is 4$/],
      [{ ...channels, shape: [4, 0] }, /^kernelforge: constants\[0\]\.shape\[1\] is 0; /],
      [{ ...channels, axis: 2 }, /^kernelforge: constants\[0\]\.axis is 2; expected an integer in 0\.\.1$/],
      [{ ...channels, axis: undefined }, /^kernelforge: constants\[0\]\.axis is undefined; /],
      [{ ...channels, shape: [1, 4] }, /^kernelforge: constants\[0\]\.shape\[1\] is 4; scale has 2 entries$/],
    ];
    for (const language of ["wgsl", "glsl"]) {
      for (const [entry, pattern] of cases) throwsKf(() => check(language === "wgsl" ? wgsl : glsl, language, (_, m) => (m.constants[0] = entry)), pattern);
    }
  });

  it("takes a quantized constant's scales from a float constant it names, zero points 0", () => {
    const table = { offset: 0, count: 4, dtype: "int8", scale: { constant: 1 }, axis: 0, shape: [2, 2] };
    const scales = { offset: 16, count: 2 };
    const set = (t, s = scales) => (_, m) => (m.constants = [t, s]);
    for (const language of ["wgsl", "glsl"]) check(language === "wgsl" ? wgsl : glsl, language, set(table));
    const cases = [
      [set({ ...table, zero_point: [0, 0] }), /^kernelforge: constants\[0\] has its scales in a constant and a zero_point; its zero points are 0$/],
      [set({ ...table, scale: { constant: 0 } }), /^kernelforge: constants\[0\]\.scale\.constant is 0, a constant of dtype "int8"; scales are float values$/],
      [set({ ...table, scale: { constant: 2 } }), /^kernelforge: constants\[0\]\.scale\.constant is 2; expected an integer in 0\.\.1$/],
      [set({ ...table, scale: {} }), /^kernelforge: constants\[0\]\.scale\.constant is undefined; /],
      [set({ ...table, shape: [4, 1] }), /^kernelforge: constants\[0\]\.shape\[0\] is 4; scale has 2 entries$/],
      [set(table, { offset: 16, count: 5 }), /^kernelforge: constants\[1\] lies outside weights\.bin: bytes 16\.\.36 of 32$/],
      [set(table, { offset: 16, count: 2, dtype: "float16" }), /^kernelforge: constants\[0\]\.scale\.constant is 1, a constant of dtype "float16"; /],
    ];
    for (const [edit, pattern] of cases) throwsKf(() => check(wgsl, "wgsl", edit), pattern);
  });

  it("takes int8/uint8 constants without scales as a kernel's own integers, in integer textures only; float16 targets", () => {
    const raw = { offset: 0, count: 4, dtype: "int8" };
    check(wgsl, "wgsl", (_, m) => (m.constants[0] = raw));
    check(wgsl, "wgsl", (_, m) => (m.constants[0] = { ...raw, dtype: "uint8" }));
    check(glsl, "glsl", (p, m) => ((m.constants[0] = raw), (p.textures[1].dtype = "int8")));
    // int4: packed two a byte, into a WGSL buffer as they are or widened into an int8 texture
    check(wgsl, "wgsl", (_, m) => (m.constants[0] = { ...raw, dtype: "int4" }));
    check(glsl, "glsl", (p, m) => ((m.constants[0] = { ...raw, dtype: "int4" }), (p.textures[1].dtype = "int8")));
    // float16: two bytes a value, into a WGSL buffer as they are or a half-float texture
    check(wgsl, "wgsl", (_, m) => (m.constants[0] = { ...raw, dtype: "float16" }));
    check(glsl, "glsl", (p, m) => ((m.constants[0] = { ...raw, dtype: "float16" }), (p.textures[1].dtype = "float16")));
    const at = "targets\\[0\\]\\.plan";
    const cases = [
      ["wgsl", (p, m) => (m.constants[0] = { ...raw, zero_point: [0] }), /^kernelforge: constants\[0\] has no scale \(a kernel's integers\) and a zero_point$/],
      ["wgsl", (p, m) => (m.constants[0] = { ...raw, dtype: "int4", shape: [4] }), /^kernelforge: constants\[0\] is int4 \(a kernel's integers\), which has no shape$/],
      ["glsl", (p, m) => (m.constants[0] = { ...raw, dtype: "int4" }), new RegExp(`^kernelforge: ${at}\\.constants\\[0\\] uploads int8 values to texture 1 of float texels$`)],
      ["glsl", (p, m) => ((m.constants[0] = { ...raw, dtype: "int4" }), (p.textures[1].dtype = "uint8")), /uploads int8 values to texture 1 of uint8 texels$/],
      ["glsl", (p, m) => (m.constants[0] = raw), new RegExp(`^kernelforge: ${at}\\.constants\\[0\\] uploads int8 values to texture 1 of float texels$`)],
      ["glsl", (p) => (p.textures[1].dtype = "uint8"), new RegExp(`^kernelforge: ${at}\\.constants\\[0\\] uploads float values to texture 1 of uint8 texels$`)],
      ["glsl", (p, m) => ((m.constants[0] = raw), (p.textures[1].dtype = "uint8")), /uploads int8 values to texture 1 of uint8 texels$/],
      ["glsl", (p) => (p.textures[0].dtype = "int8"), /inputs\[0\] uploads float values to texture 0 of int8 texels$/],
      ["glsl", (p) => (p.textures[2].dtype = "int8"), /steps\[0\]\.targets\[0\] is texture 2, of int8 texels; steps draw floats$/],
      ["glsl", (p) => (p.textures[1].dtype = "float16"), new RegExp(`^kernelforge: ${at}\\.constants\\[0\\] uploads float values to texture 1 of float16 texels$`)],
      ["glsl", (p, m) => (m.constants[0] = { ...raw, dtype: "float16" }), /constants\[0\] uploads float16 values to texture 1 of float texels$/],
      ["glsl", (p) => (p.textures[1].dtype = "float32"), /textures\[1\]\.dtype is "float32"; expected "int8", "uint8", "float16" or none \(float\)$/],
      ["wgsl", (p, m) => (m.constants[0] = { ...raw, dtype: "float16", offset: 16, count: 9 }), /^kernelforge: constants\[0\] lies outside weights\.bin: bytes 16\.\.34 of 32$/],
    ];
    for (const [language, edit, pattern] of cases) throwsKf(() => check(language === "wgsl" ? wgsl : glsl, language, edit), pattern);
    // a half-float kernel draws a float16 texture (RGBA16F/R16F are renderable wherever the runtime runs)
    check(glsl, "glsl", (p) => (p.textures[2].dtype = "float16"));
  });

  it("takes an empty output (a dim of 0) as a constant of no values, never an empty input", () => {
    const empty = (p, m) => {
      m.model.outputs.push({ name: "e", shape: [2, 0] });
      m.constants.push({ offset: 16, count: 0 });
      p.outputs.push({ name: "e", constant: 1 });
    };
    check(wgsl, "wgsl", empty);
    check(glsl, "glsl", empty);
    const at = "targets\\[0\\]\\.plan\\.outputs\\[1\\]";
    const cases = [
      [(p, m) => (m.model.inputs[0].shape = [4, 0]), "model\\.inputs\\[0\\]\\.shape\\[1\\] is 0; expected an integer in 1\\.\\."],
      [(p) => (p.outputs[1] = { name: "e", buffer: 1, bytes: 0 }), `${at}\\.bytes is 0; expected an integer in 1\\.\\.16$`],
      [(p, m) => (m.constants[1].count = 1), `${at}\\.constant is 1, of 1 values; output "e" has 0$`],
    ];
    for (const [edit, pattern] of cases) {
      assert.throws(() => check(wgsl, "wgsl", (p, m) => (empty(p, m), edit(p, m))), isKf(new RegExp(pattern)), `${edit}`);
    }
  });

  it("names the WGSL field: buffers, bytes, workgroups, uniforms, bindings, names", () => {
    const at = "targets\\[0\\]\\.plan";
    const cases = [
      [(p) => (p.steps[0].bindings[0].bytes = 12), `${at}\\.steps\\[0\\]\\.bindings\\[0\\]\\.bytes is 12; buffer 0 holds a tensor of 16 bytes$`],
      [(p) => (p.steps[0].bindings[0].bytes = 20), `${at}\\.steps\\[0\\]\\.bindings\\[0\\]\\.bytes is 20; expected an integer in 1\\.\\.16$`],
      [(p) => (p.steps[0].bindings[0].buffer = 2), `${at}\\.steps\\[0\\]\\.bindings\\[0\\]\\.buffer is 2; expected an integer in 0\\.\\.1$`],
      [(p) => (p.steps[0].bindings[0].buffer = 1), `${at}\\.steps\\[0\\]\\.bindings\\[0\\] reads buffer 1 before anything is written to it$`],
      [(p) => (p.steps[0].bindings[1].constant = 1), `${at}\\.steps\\[0\\]\\.bindings\\[1\\]\\.constant is 1; expected an integer in 0\\.\\.0$`],
      [(p) => p.steps[0].bindings.pop(), `${at}\\.steps\\[0\\]\\.bindings has 2 entries; shader 0 declares 3$`],
      [(p) => (p.steps[0].bindings[2] = { constant: 0 }), `${at}\\.steps\\[0\\]\\.bindings\\[2\\] is the step's output, not a constant$`],
      [(p) => (p.steps[0].workgroups = [1, 1]), `${at}\\.steps\\[0\\]\\.workgroups is \\[1,1\\]; expected 3 counts$`],
      [(p) => (p.steps[0].workgroups[2] = 0), `${at}\\.steps\\[0\\]\\.workgroups\\[2\\] is 0; expected an integer in 1\\.\\.65535$`],
      [(p) => (p.steps[0].workgroups[0] = 65536), `${at}\\.steps\\[0\\]\\.workgroups\\[0\\] is 65536; `],
      [(p) => (p.steps[0].uniforms[0] = -1), `${at}\\.steps\\[0\\]\\.uniforms\\[0\\] is -1; expected an integer in 0\\.\\.4294967295$`],
      [(p) => (p.steps[0].uniforms[0] = 2 ** 32), `${at}\\.steps\\[0\\]\\.uniforms\\[0\\] is 4294967296; `],
      [(p) => (p.steps[0].shader = 3), `${at}\\.steps\\[0\\]\\.shader is 3; expected an integer in 0\\.\\.2$`],
      [(p, m) => (m.shaders[0] = null), `^kernelforge: shaders\\[0\\] is not a string$`],
      [(p) => (p.inputs[0].name = "y"), `${at}\\.inputs\\[0\\]\\.name is "y", which is not a model input$`],
      [(p) => (p.inputs[0].bytes = 8), `${at}\\.inputs\\[0\\]\\.bytes is 8; "x" has 4 values \\(16 bytes\\)$`],
      [(p) => (p.outputs[0].bytes = 12), `${at}\\.outputs\\[0\\]\\.bytes is 12; "z" has 4 values \\(16 bytes\\)$`],
      [(p) => (p.steps = []), `^kernelforge: ${at}\\.outputs\\[0\\]\\.buffer is 1, which does not hold a tensor of 16 bytes$`],
      [(p) => (p.outputs[0].buffer = 0), null], // buffer 0 holds x, of the same size: only the integrity hash catches this
      [(p) => (p.outputs[0] = { name: "z", constant: 0 }), null], // a folded output of the right size
      [(p, m) => ((p.outputs[0] = { name: "z", constant: 0 }), (m.constants[0].count = 3)), `${at}\\.steps\\[0\\]|${at}\\.outputs\\[0\\]\\.constant is 0, of 3 values; output "z" has 4$`],
      [(p) => p.outputs.pop(), `${at}\\.outputs has no "z"$`],
      [(p) => (p.buffers[1] = 0), `${at}\\.buffers\\[1\\] is 0; `],
      [(p) => (p.subgroup_size = 0), `${at}\\.subgroup_size is 0; `],
      [(p) => (p.steps = {}), `${at}\\.steps is \\{\\}; expected an array$`],
      [(p, m) => (m.targets[0].language = "hlsl"), `targets\\[0\\]\\.language is "hlsl"; expected "wgsl" or "glsl"$`],
      [(p, m) => (m.targets[0].plan = null), `targets\\[0\\]\\.plan is null; expected an object$`],
    ];
    for (const [edit, pattern] of cases) {
      if (pattern === null) check(wgsl, "wgsl", edit);
      else assert.throws(() => check(wgsl, "wgsl", edit), isKf(new RegExp(pattern)), `${edit}`);
    }
  });

  it("names the GLSL field: textures, layouts, samplers, targets, sizes", () => {
    const at = "targets\\[0\\]\\.plan";
    const cases = [
      [(p) => (p.textures[1].width = 0), `${at}\\.textures\\[1\\]\\.width is 0; expected an integer in 1\\.\\.16384$`],
      [(p) => (p.textures[1].height = 16385), `${at}\\.textures\\[1\\]\\.height is 16385; `],
      [(p) => (p.textures[1].pack = 3), `${at}\\.textures\\[1\\]\\.pack is 3; expected 1 or 4$`],
      [(p) => (p.constants[0].layout = { ...layout, cols: 3 }), `${at}\\.constants\\[0\\]\\.layout holds 1x3 values; the tensor has 4$`],
      [(p) => (p.constants[0].layout = { ...layout, pack: 1 }), `${at}\\.constants\\[0\\]\\.layout\\.pack is 1; texture 1 has pack 4$`],
      [(p) => (p.constants[0].layout = { ...layout, width: 2 }), `${at}\\.constants\\[0\\]\\.layout\\.width is 2; expected an integer in 1\\.\\.1$`],
      [(p) => (p.constants[0].layout = { ...layout, rows: 2, cols: 2 }), `${at}\\.constants\\[0\\]\\.layout: 2 rows of 2 values do not fit 1x1 texels$`],
      [(p) => (p.constants[0].texture = 3), `${at}\\.constants\\[0\\]\\.texture is 3; expected an integer in 0\\.\\.2$`],
      [(p) => (p.inputs[0].layout = { ...layout, cols: 3 }), `${at}\\.inputs\\[0\\]\\.layout holds 1x3 values; the tensor has 4$`],
      [(p) => (p.steps[0].inputs[0].sampler = "u_x;discard"), `${at}\\.steps\\[0\\]\\.inputs\\[0\\]\\.sampler is "u_x;discard"; expected a GLSL identifier$`],
      [(p) => (p.steps[0].inputs[0].sampler = "1x"), `${at}\\.steps\\[0\\]\\.inputs\\[0\\]\\.sampler is "1x"; `],
      [(p) => delete p.steps[0].inputs[0].sampler, `${at}\\.steps\\[0\\]\\.inputs\\[0\\]\\.sampler is undefined; `],
      [(p) => (p.steps[0].inputs[0].texture = 2), `${at}\\.steps\\[0\\]\\.inputs\\[0\\]\\.texture is 2, which holds nothing yet$`],
      [(p) => (p.steps[0].targets = [1]), `${at}\\.steps\\[0\\]\\.targets\\[0\\] is texture 1, which the step also reads$`],
      [(p) => (p.steps[0].targets = []), `${at}\\.steps\\[0\\]\\.targets has 0 entries; expected 1 to 4$`],
      [(p) => (p.steps[0].targets = [2, 2, 2, 2, 2]), `${at}\\.steps\\[0\\]\\.targets has 5 entries; `],
      [(p) => (p.steps[0].targets = [7]), `${at}\\.steps\\[0\\]\\.targets\\[0\\] is 7; expected an integer in 0\\.\\.2$`],
      [(p) => (p.steps[0].width = 2), `${at}\\.steps\\[0\\]\\.targets\\[0\\] is texture 2, of 1x1 texels; the step draws 2x1$`],
      [(p) => (p.steps[0].height = 0), `${at}\\.steps\\[0\\]\\.height is 0; `],
      [(p) => (p.vertex = 5), `${at}\\.vertex is 5; expected an integer in 0\\.\\.2$`],
      [(p) => (p.outputs[0].size = 3), `${at}\\.outputs\\[0\\]\\.size is 3; "z" has 4 values$`],
      [(p) => (p.outputs[0].texture = 1), null], // the constant's texture holds data: structurally fine
      [(p) => p.steps.pop(), `${at}\\.outputs\\[0\\]\\.texture is 2, which holds nothing$`],
      [(p) => (p.textures[2] = { width: 1, height: 1, pack: 1 }), `${at}\\.outputs\\[0\\]\\.texture is 2, of 1 values; "z" has 4$`],
      [(p) => (p.textures[2] = { width: 4, height: 1, pack: 1 }), `${at}\\.steps\\[0\\]\\.targets\\[0\\] is texture 2, of 4x1 texels; the step draws 1x1$`],
    ];
    for (const [edit, pattern] of cases) {
      if (pattern === null) check(glsl, "glsl", edit);
      else assert.throws(() => check(glsl, "glsl", edit), isKf(new RegExp(pattern)), `${edit}`);
    }
  });
});

// ---------------------------------------------------------------------------------------------------------------
// a real exported bundle, and the tampered-bundle corpus applied to it

const python = () => {
  const venv = join(ROOT, ".venv", "bin", "python");
  return process.env.KF_PYTHON || (existsSync(venv) ? venv : "python3");
};

describe("an exported bundle and its tampered copies", () => {
  let out;
  let cases;
  before(() => {
    out = mkdtempSync(join(tmpdir(), "kf-tampered-"));
    execFileSync(python(), ["-m", "tests.web._tampered", out], { cwd: ROOT, stdio: ["ignore", "ignore", "inherit"] });
    cases = JSON.parse(readFileSync(join(out, "cases", "cases.json"), "utf8"));
  });
  after(() => rmSync(out, { recursive: true, force: true }));

  const files = (dir) => ({ text: readFileSync(join(dir, "manifest.json"), "utf8"), weights: readFileSync(join(dir, "weights.bin")) });
  const fileFetch = async (path) => new Response(readFileSync(path));
  /** What load() checks before and while the weights arrive: manifest, every plan, then the weights' length and hash. */
  const verify = async (dir) => {
    const m = await readManifest(files(dir).text, join(dir, "manifest.json"));
    await fetchWeights(fileFetch, join(dir, "weights.bin"), undefined, m.weights, () => {});
    return m;
  };

  it("passes: integrity, weights hash, and validatePlan on every target", async () => {
    const dir = join(out, "original");
    const m = await verify(dir);
    assert.ok(m.targets.length >= 2 && m.targets.some((t) => t.language === "wgsl") && m.targets.some((t) => t.language === "glsl"));
    for (const t of m.targets) validatePlan(m, t);
    assert.equal(m.weights.sha256, nodeSha(files(dir).weights));
  });

  it("refuses every tampered copy, naming the field or the failed integrity check", async () => {
    const caught = { 1: 0, 2: 0 };
    for (const c of cases) {
      const dir = join(out, "cases", c.dir);
      await assert.rejects(verify(dir), isKf(new RegExp(c.expect)), `${c.dir}: want /${c.expect}/`);
      caught[c.class]++;
    }
    assert.ok(cases.length >= 2 * 34, `${cases.length} cases`);
    assert.ok(caught[1] >= 34 && caught[2] >= 34, JSON.stringify(caught));
  });

  it("refuses them in load() before looking for a backend, except the weights' (checked as they download)", async () => {
    for (const c of cases.filter((c) => !c.name.startsWith("weights-"))) {
      const dir = join(out, "cases", c.dir);
      // Node has neither WebGPU nor WebGL2: "cannot run here" would mean the checks came too late
      await rejectsKf(load(join(dir, "manifest.json"), { fetch: fileFetch }), new RegExp(c.expect));
    }
    await rejectsKf(load(join(out, "original", "manifest.json"), { fetch: fileFetch }), new RegExp(escape("cannot run here: no WebGPU")));
  });
});
