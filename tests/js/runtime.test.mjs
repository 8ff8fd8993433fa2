// Unit tests of the GPU-free parts of the browser runtime (kernelforge/export/js/kernelforge.js): target choice,
// adapter classes, the constant reader, manifest validation, the readback pacer on a fake device, and load()'s
// backend choice where neither WebGPU nor WebGL2 exists. Hashing, integrity and plan validation: validate.test.mjs.
// Run with `node --test tests/js/` (Node >= 20).

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { describe, it } from "node:test";

import kf, {
  adapterClass,
  checkManifest,
  constantReader,
  int4Values,
  load,
  pickTarget,
  readbackPacer,
} from "../../kernelforge/export/js/kernelforge.js";

/** assert.throws with the runtime's "kernelforge: " prefix and a message matching `pattern`. */
const throwsKf = (fn, pattern) =>
  assert.throws(fn, (e) => e instanceof Error && e.message.startsWith("kernelforge: ") && pattern.test(e.message));

// ---------------------------------------------------------------------------------------------------------------
// target choice

const plan = (subgroup_size) => (subgroup_size ? { subgroup_size, steps: [] } : { steps: [] });
const t = (id, language, device, sg) => ({ id, language, device, plan: plan(sg) });
const swiftshader = { vendor: "google", class: "cpu", keywords: ["swiftshader"] };
const nvidia = { vendor: "nvidia", class: "dgpu", keywords: ["rtx", "4090"] };
const apple = { vendor: "apple", class: "igpu" };

describe("pickTarget", () => {
  const targets = [
    t("nvidia-4090/wgsl", "wgsl", nvidia),
    t("google-swiftshader-sg4/wgsl", "wgsl", swiftshader, 4),
    t("google-swiftshader/wgsl", "wgsl", swiftshader),
    t("apple/wgsl", "wgsl", apple),
    t("google-swiftshader/glsl", "glsl", swiftshader),
    t("default/wgsl", "wgsl", null),
    t("default/glsl", "glsl", null),
  ];
  const pick = (language, desc, sg = 0) => {
    const [target, match] = pickTarget(targets, language, desc, adapterClass(desc), sg);
    return [target.id, match];
  };

  it("matches the exact device: vendor and every keyword in the description", () => {
    assert.deepEqual(pick("wgsl", "nvidia ada lovelace geforce rtx 4090"), ["nvidia-4090/wgsl", "exact"]);
    assert.deepEqual(pick("glsl", "google swiftshader device (subzero)"), ["google-swiftshader/glsl", "exact"]);
  });

  it("compares vendor and keywords case-insensitively, against the lower-cased description", () => {
    const upper = [t("x/wgsl", "wgsl", { vendor: "NVIDIA", keywords: ["RTX"] }), t("default/wgsl", "wgsl", null)];
    assert.deepEqual(pickTarget(upper, "wgsl", "nvidia rtx 3060", "dgpu", 0).map((v) => v.id ?? v), ["x/wgsl", "exact"]);
  });

  it("needs every keyword for an exact match, else falls back to the class", () => {
    assert.deepEqual(pick("wgsl", "nvidia geforce rtx 3060"), ["nvidia-4090/wgsl", "class"]);
  });

  it("treats a device without keywords as matched by its vendor alone", () => {
    assert.deepEqual(pick("wgsl", "apple m2"), ["apple/wgsl", "exact"]);
  });

  it("takes a target of the adapter's class when no device matches", () => {
    assert.deepEqual(pick("wgsl", "mesa llvmpipe"), ["google-swiftshader/wgsl", "class"]);
    assert.deepEqual(pick("wgsl", "intel arc a770"), ["apple/wgsl", "class"]);
  });

  it("falls back to the default target without a match or a known class", () => {
    assert.deepEqual(pick("wgsl", "some unknown gpu"), ["default/wgsl", "default"]);
    assert.deepEqual(pick("glsl", "intel iris xe"), ["default/glsl", "default"]);
  });

  it("keeps to the targets of its language", () => {
    assert.deepEqual(pick("glsl", "nvidia geforce rtx 4090"), ["default/glsl", "default"]);
  });

  it("skips subgroup plans unless the adapter's fixed subgroup size is theirs", () => {
    assert.deepEqual(pick("wgsl", "google swiftshader", 4), ["google-swiftshader-sg4/wgsl", "exact"]);
    assert.deepEqual(pick("wgsl", "google swiftshader", 0), ["google-swiftshader/wgsl", "exact"]);
    assert.deepEqual(pick("wgsl", "google swiftshader", 8), ["google-swiftshader/wgsl", "exact"]);
    // the class step skips them too
    assert.deepEqual(pick("wgsl", "mesa lavapipe", 0), ["google-swiftshader/wgsl", "class"]);
    const onlySg = [t("sg4/wgsl", "wgsl", swiftshader, 4), t("default/wgsl", "wgsl", null)];
    assert.equal(pickTarget(onlySg, "wgsl", "mesa lavapipe", "cpu", 0)[0].id, "default/wgsl");
    assert.equal(pickTarget(onlySg, "wgsl", "mesa lavapipe", "cpu", 4)[0].id, "sg4/wgsl");
  });

  it("takes an f16 plan only where f16 is allowed, and nothing else where it is required", () => {
    const f16 = (id, device) => ({ id, language: "wgsl", device, plan: { f16: true, steps: [] } });
    const both = [f16("swiftshader-f16/wgsl", swiftshader), t("swiftshader/wgsl", "wgsl", swiftshader), t("default/wgsl", "wgsl", null)];
    const id = (allowed) => pickTarget(both, "wgsl", "google swiftshader", "cpu", 0, allowed)[0].id;
    assert.equal(id(true), "swiftshader-f16/wgsl");
    assert.equal(id(false), "swiftshader/wgsl"); // an adapter without shader-f16, or precision "f32"
    assert.equal(id(undefined), "swiftshader/wgsl");
    assert.equal(id("only"), "swiftshader-f16/wgsl");
    // an f16 plan of the defaults serves an unknown adapter with shader-f16; required, nothing else will do
    const defaults = [f16("default/wgsl-f16", null), t("default/wgsl", "wgsl", null)];
    assert.equal(pickTarget(defaults, "wgsl", "some gpu", null, 0, true)[0].id, "default/wgsl-f16");
    assert.equal(pickTarget(defaults, "wgsl", "some gpu", null, 0, false)[0].id, "default/wgsl");
    throwsKf(() => pickTarget([t("default/wgsl", "wgsl", null)], "wgsl", "some gpu", null, 0, "only"), /no f16 plan for this adapter/);
  });

  it("takes the first target that matches, in the bundle's order", () => {
    const two = [t("first/wgsl", "wgsl", swiftshader), t("second/wgsl", "wgsl", swiftshader), t("default/wgsl", "wgsl", null)];
    assert.equal(pickTarget(two, "wgsl", "google swiftshader", "cpu", 0)[0].id, "first/wgsl");
  });

  it("fails naming the targets when there is no default of the language", () => {
    const noDefault = [t("nvidia-4090/wgsl", "wgsl", nvidia), t("default/glsl", "glsl", null)];
    throwsKf(
      () => pickTarget(noDefault, "wgsl", "intel arc", "igpu", 0),
      /the bundle has no default wgsl target \(targets: nvidia-4090\/wgsl, default\/glsl\)$/,
    );
  });
});

// ---------------------------------------------------------------------------------------------------------------
// adapter class

describe("adapterClass", () => {
  it("classes software renderers as cpu, before any vendor they name", () => {
    for (const desc of [
      "google swiftshader device (subzero)",
      "mesa llvmpipe (llvm 15.0.7, 256 bits)",
      "mesa lavapipe",
      "microsoft basic render driver",
      "microsoft warp",
      "angle (google, vulkan 1.3.0 (swiftshader device (subzero)), swiftshader driver) google inc. (google)",
      "llvmpipe amd",
    ]) {
      assert.equal(adapterClass(desc), "cpu", desc);
    }
  });

  it("classes nvidia and amd as discrete, before integrated vendors (a Mac names apple and its radeon)", () => {
    assert.equal(adapterClass("nvidia ada lovelace"), "dgpu");
    assert.equal(adapterClass("amd rdna-3"), "dgpu");
    assert.equal(adapterClass("angle (apple, angle metal renderer: amd radeon pro 5500m, unspecified version)"), "dgpu");
  });

  it("classes intel, apple, arm, qualcomm, imgtec and broadcom as integrated", () => {
    for (const desc of ["intel gen-12lp", "apple metal-3", "arm valhall", "qualcomm adreno", "imgtec powervr", "broadcom v3d"]) {
      assert.equal(adapterClass(desc), "igpu", desc);
    }
  });

  it("returns null for a description naming no known vendor (or none at all)", () => {
    assert.equal(adapterClass("some unknown gpu"), null);
    assert.equal(adapterClass(""), null);
  });
});

// ---------------------------------------------------------------------------------------------------------------
// constant reader

/** An ArrayBuffer of `bytes` bytes with `fill(dataView)` applied. */
const weights = (bytes, fill) => {
  const buf = new ArrayBuffer(bytes);
  fill(new DataView(buf));
  return buf;
};
const manifestOf = (dtype, constants) => ({ weights: { dtype, bytes: 0 }, constants });

describe("constantReader", () => {
  it("returns int4 constants as their packed bytes, which int4Values widens low nibble first", () => {
    const buf = weights(16, (d) => [0x71, 0x9f, 0x08].forEach((v, k) => d.setUint8(k, v)));
    const packed = constantReader(manifestOf("fp32", [{ offset: 0, count: 5, dtype: "int4" }]), buf)(0);
    assert.ok(packed instanceof Uint8Array);
    assert.equal(packed.length, 3);
    assert.deepEqual(Array.from(int4Values(/** @type {Uint8Array} */ (packed), 5)), [1, 7, -1, -7, -8]);
  });

  it("returns float16 constants as their raw halves, in an fp32 bundle as in an fp16 one", () => {
    const buf = weights(16, (d) => [0x3c00, 0xc000, 0x7bff].forEach((v, k) => d.setUint16(2 * k, v, true)));
    for (const dtype of ["fp32", "fp16"]) {
      const halves = constantReader(manifestOf(dtype, [{ offset: 0, count: 3, dtype: "float16" }]), buf)(0);
      assert.ok(halves instanceof Uint16Array);
      assert.deepEqual(Array.from(halves), [0x3c00, 0xc000, 0x7bff]);
    }
  });

  it("widens a quantized constant whose scales are a float constant, zero points 0", () => {
    const buf = weights(32, (d) => {
      [3, -2, 127, -127].forEach((v, k) => d.setInt8(k, v));
      [0.5, 0.1].forEach((v, k) => d.setFloat32(16 + 4 * k, v, true));
    });
    const table = { offset: 0, count: 4, dtype: "int8", scale: { constant: 1 }, axis: 0, shape: [2, 2] };
    const wide = constantReader(manifestOf("fp32", [table, { offset: 16, count: 2 }]), buf)(0);
    const tenth = Math.fround(0.1);
    assert.deepEqual(Array.from(wide), [1.5, -1, Math.fround(127 * tenth), Math.fround(-127 * tenth)]);
  });

  it("widens float16 constants with a scale at load, exactly: halves times the float32 scale, rounded once", () => {
    // 1, -2, 65504 and the smallest subnormal half (2^-24)
    const buf = weights(16, (d) => [0x3c00, 0xc000, 0x7bff, 0x0001].forEach((v, k) => d.setUint16(2 * k, v, true)));
    const scale = Math.fround(0.1);
    const entry = { offset: 0, count: 4, dtype: "float16", scale: [scale], zero_point: [0] };
    const wide = constantReader(manifestOf("fp32", [entry]), buf)(0);
    assert.ok(wide instanceof Float32Array);
    assert.deepEqual(Array.from(wide), [1, -2, 65504, 2 ** -24].map((h) => Math.fround(h * scale)));
    const one = constantReader(manifestOf("fp32", [{ ...entry, scale: [1] }]), buf)(0);
    assert.deepEqual(Array.from(one), [1, -2, 65504, 2 ** -24]);
  });

  it("returns fp32 constants as views of the weights at their offsets", () => {
    const buf = weights(48, (d) => [1.5, -2, 3.25].forEach((v, k) => d.setFloat32(32 + 4 * k, v, true)));
    const constant = constantReader(manifestOf("fp32", [{ offset: 0, count: 4 }, { offset: 32, count: 3 }]), buf);
    const c = constant(1);
    assert.ok(c instanceof Float32Array);
    assert.deepEqual(Array.from(c), [1.5, -2, 3.25]);
    assert.equal(c.buffer, buf, "a view, not a copy");
    assert.equal(c.byteOffset, 32);
    assert.deepEqual(Array.from(constant(0)), [0, 0, 0, 0]);
  });

  it("decodes each constant once and caches it", () => {
    const buf = weights(16, (d) => d.setUint16(0, 0x3c00, true));
    const constant = constantReader(manifestOf("fp16", [{ offset: 0, count: 1 }]), buf);
    assert.equal(constant(0), constant(0));
  });

  it("widens fp16 to fp32: normals, subnormals, zeros, infinities and NaN", () => {
    const cases = [
      [0x3c00, 1],
      [0xc000, -2],
      [0x3555, 0.333251953125],
      [0x7bff, 65504], // largest normal
      [0x0400, 2 ** -14], // smallest normal
      [0x0001, 2 ** -24], // smallest subnormal
      [0x03ff, 1023 * 2 ** -24], // largest subnormal
      [0x8001, -(2 ** -24)],
      [0x0000, 0],
      [0x8000, -0],
      [0x7c00, Infinity],
      [0xfc00, -Infinity],
      [0x7e00, NaN],
      [0xfe01, NaN],
    ];
    const buf = weights(2 * cases.length, (d) => cases.forEach(([h], k) => d.setUint16(2 * k, h, true)));
    const c = constantReader(manifestOf("fp16", [{ offset: 0, count: cases.length }]), buf)(0);
    assert.ok(c instanceof Float32Array);
    cases.forEach(([h, want], k) => assert.ok(Object.is(c[k], want), `0x${h.toString(16)} -> ${c[k]}, want ${want}`));
  });

  it("reads fp16 constants at their offsets", () => {
    const buf = weights(24, (d) => [0x3c00, 0xc400].forEach((h, k) => d.setUint16(16 + 2 * k, h, true)));
    const constant = constantReader(manifestOf("fp16", [{ offset: 0, count: 3 }, { offset: 16, count: 2 }]), buf);
    assert.deepEqual(Array.from(constant(1)), [1, -4]);
    assert.deepEqual(Array.from(constant(0)), [0, 0, 0]);
  });

  it("widens per-tensor int8 and uint8 constants to (q - zero_point) * scale, beside fp16 ones", () => {
    const buf = weights(48, (d) => {
      [-128, -1, 0, 127].forEach((q, k) => d.setInt8(k, q));
      [0, 128, 255].forEach((q, k) => d.setUint8(16 + k, q));
      d.setUint16(32, 0x3c00, true);
    });
    const constants = [
      { offset: 0, count: 4, dtype: "int8", scale: [0.5], zero_point: [-1] },
      { offset: 16, count: 3, dtype: "uint8", scale: [0.25], zero_point: [128] },
      { offset: 32, count: 1 },
    ];
    const constant = constantReader(manifestOf("fp16", constants), buf);
    assert.deepEqual(Array.from(constant(0)), [-63.5, 0, 0.5, 64]);
    assert.deepEqual(Array.from(constant(1)), [-32, 0, 31.75]);
    assert.ok(constant(0) instanceof Float32Array);
    assert.equal(constant(0), constant(0));
    assert.deepEqual(Array.from(constant(2)), [1], "the others stay fp16");
  });

  it("hands a kernel's own int8/uint8 integers (no scale) over as they are", () => {
    const buf = weights(32, (d) => {
      [-128, -1, 0, 127].forEach((q, k) => d.setInt8(k, q));
      [0, 128, 255].forEach((q, k) => d.setUint8(16 + k, q));
    });
    const constant = constantReader(manifestOf("fp32", [{ offset: 0, count: 4, dtype: "int8" }, { offset: 16, count: 3, dtype: "uint8" }]), buf);
    assert.ok(constant(0) instanceof Int8Array && constant(1) instanceof Uint8Array);
    assert.deepEqual(Array.from(constant(0)), [-128, -1, 0, 127]);
    assert.deepEqual(Array.from(constant(1)), [0, 128, 255]);
  });

  it("takes each value's scale and zero point from its index along the axis of the shape", () => {
    // shape [2, 3, 2], axis 1: value j is in channel floor(j / 2) % 3
    const q = [1, 2, 3, 4, 5, 6, -1, -2, -3, -4, -5, -6];
    const buf = weights(16, (d) => q.forEach((v, k) => d.setInt8(k, v)));
    const entry = { offset: 0, count: 12, dtype: "int8", scale: [1, 10, 100], zero_point: [0, 1, 2], axis: 1, shape: [2, 3, 2] };
    const got = constantReader(manifestOf("fp32", [entry]), buf)(0);
    assert.deepEqual(Array.from(got), [1, 2, 20, 30, 300, 400, -1, -2, -40, -50, -700, -800]);
    // the last axis, and the first
    const last = constantReader(manifestOf("fp32", [{ ...entry, scale: [1, 2], zero_point: [0, 0], axis: 2 }]), buf)(0);
    assert.deepEqual(Array.from(last).slice(0, 4), [1, 4, 3, 8]);
    const first = constantReader(manifestOf("fp32", [{ ...entry, scale: [1, -1], zero_point: [0, 0], axis: 0 }]), buf)(0);
    assert.deepEqual(Array.from(first), [1, 2, 3, 4, 5, 6, 1, 2, 3, 4, 5, 6]);
  });

  it("rounds once to float32, as a native run dequantizes", () => {
    const scale = Math.fround(0.1); // a float32 scale, written to JSON as the exact double it is
    const buf = weights(16, (d) => d.setInt8(0, 127));
    const got = constantReader(manifestOf("fp32", [{ offset: 0, count: 1, dtype: "int8", scale: [scale], zero_point: [0] }]), buf)(0);
    assert.equal(got[0], Math.fround(127 * scale));
  });
});

// ---------------------------------------------------------------------------------------------------------------
// manifest validation

const ZEROS16 = createHash("sha256").update(new Uint8Array(16)).digest("hex");
const validManifest = () => ({
  format: "kernelforge-bundle",
  version: 3,
  model: { name: "m", inputs: [{ name: "x", shape: [4] }], outputs: [{ name: "z", shape: [4] }] },
  weights: { file: "weights.bin", bytes: 16, dtype: "fp32", sha256: ZEROS16 },
  constants: [{ offset: 0, count: 4 }],
  shaders: ["..."],
  targets: [],
});
const URL_ = "http://x/manifest.json";

describe("checkManifest", () => {
  it("accepts a valid manifest, fp32 or fp16", () => {
    checkManifest(validManifest(), URL_);
    checkManifest({ ...validManifest(), weights: { bytes: 0, dtype: "fp16", sha256: ZEROS16 } }, URL_);
  });

  it("rejects what is not a JSON object", () => {
    for (const m of [null, 3, "manifest", undefined]) {
      throwsKf(() => checkManifest(m, URL_), /^kernelforge: http:\/\/x\/manifest.json is not a kernelforge manifest \(not a JSON object\)$/);
    }
  });

  it("rejects another format, naming it", () => {
    throwsKf(() => checkManifest({ ...validManifest(), format: "onnx" }, URL_), /format is "onnx", expected "kernelforge-bundle"$/);
  });

  it("rejects a version it does not read, telling to re-export an older one", () => {
    throwsKf(() => checkManifest({ ...validManifest(), version: 1 }, URL_), /has bundle version 1; this runtime reads versions 2 to 4: re-export the model/);
    throwsKf(() => checkManifest({ ...validManifest(), version: 5 }, URL_), /has bundle version 5; this runtime reads versions 2 to 4$/);
    throwsKf(() => checkManifest({ ...validManifest(), version: "3" }, URL_), /has bundle version "3"; this runtime reads versions 2 to 4$/);
    throwsKf(() => checkManifest({ ...validManifest(), version: 2.5 }, URL_), /has bundle version 2.5; this runtime reads versions 2 to 4$/);
  });

  it("reads version 2 (a version-3 bundle without quantized constants)", () => {
    checkManifest({ ...validManifest(), version: 2 }, URL_);
  });

  it("rejects missing tables", () => {
    for (const k of ["shaders", "targets", "constants"]) {
      throwsKf(() => checkManifest({ ...validManifest(), [k]: {} }, URL_), new RegExp(`has no "${k}" array$`));
    }
    throwsKf(() => checkManifest({ ...validManifest(), model: { inputs: [] } }, URL_), /has no model inputs\/outputs$/);
    throwsKf(() => checkManifest({ ...validManifest(), model: undefined }, URL_), /has no model inputs\/outputs$/);
  });

  it("rejects weights without an integer byte count, with an unknown dtype or without a SHA-256", () => {
    throwsKf(() => checkManifest({ ...validManifest(), weights: undefined }, URL_), /has no weights\.bytes$/);
    throwsKf(() => checkManifest({ ...validManifest(), weights: { bytes: 1.5, dtype: "fp32" } }, URL_), /has no weights\.bytes$/);
    throwsKf(() => checkManifest({ ...validManifest(), weights: { bytes: -16, dtype: "fp32" } }, URL_), /has no weights\.bytes$/);
    throwsKf(() => checkManifest({ ...validManifest(), weights: { bytes: 4, dtype: "bf16" } }, URL_), /unsupported weights dtype "bf16"$/);
    throwsKf(() => checkManifest({ ...validManifest(), weights: { bytes: 4, dtype: "fp32" } }, URL_), /^kernelforge: weights\.sha256 is undefined; /);
    const upper = ZEROS16.toUpperCase();
    throwsKf(() => checkManifest({ ...validManifest(), weights: { bytes: 16, dtype: "fp32", sha256: upper } }, URL_), /weights\.sha256 is "/);
  });

  it("rejects model inputs and outputs without a name or with a shape of non-positive integers", () => {
    const model = (inputs) => ({ ...validManifest(), model: { inputs, outputs: [] } });
    throwsKf(() => checkManifest(model([{ shape: [4] }]), URL_), /^kernelforge: model\.inputs\[0\]\.name is undefined; expected a string$/);
    throwsKf(() => checkManifest(model([{ name: "x", shape: [4, 0] }]), URL_), /^kernelforge: model\.inputs\[0\]\.shape\[1\] is 0; /);
    throwsKf(() => checkManifest(model([{ name: "x", shape: [2.5] }]), URL_), /^kernelforge: model\.inputs\[0\]\.shape\[0\] is 2\.5; /);
    throwsKf(() => checkManifest(model([{ name: "x", shape: 4 }]), URL_), /^kernelforge: model\.inputs\[0\]\.shape is 4; expected an array$/);
  });

  it("accepts the edge dtypes (float32 when absent) and rejects any other, naming the field", () => {
    const model = (dtype) => ({ ...validManifest(), model: { inputs: [{ name: "ids", shape: [4], dtype }], outputs: [] } });
    for (const dtype of [undefined, "float32", "float16", "int64", "int32", "bool", "uint8"]) checkManifest(model(dtype), URL_);
    for (const dtype of ["string", "complex64", "toString", 7]) {
      throwsKf(() => checkManifest(model(dtype), URL_), /^kernelforge: model\.inputs\[0\]\.dtype is .*; expected one of float32, float16, /);
    }
  });
});

// ---------------------------------------------------------------------------------------------------------------
// readback pacer, on a fake device whose onSubmittedWorkDone() counts the nudges

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * A pacer on a fake device and a fake performance.now(), counting nudges (pings) and hop loops (MessageChannels,
 * as the browser test does). run(ms, real) is one run whose readback takes `ms` on the fake clock; it settles
 * after `real` ms of real time (timer nudges need some), else at once: the nudges that do not wait (hops past
 * their threshold on the fake clock) still happen, the ones that do find the readback done.
 */
async function withPacer(body) {
  const rig = { pings: 0, hops: 0, clock: 1024 }; // run lengths below are exact in binary where it matters
  const wait = readbackPacer({ queue: { onSubmittedWorkDone: async () => void rig.pings++ } });
  rig.run = async (ms, real = 0) => {
    const [pings, hops] = [rig.pings, rig.hops];
    const started = rig.clock;
    rig.clock += ms; // past every hop threshold the run has: the hop loop nudges without waiting
    await wait(real ? sleep(real) : Promise.resolve(), started);
    return { pings: rig.pings - pings, hops: rig.hops - hops };
  };
  const [now, Channel] = [performance.now, globalThis.MessageChannel];
  performance.now = () => rig.clock;
  globalThis.MessageChannel = class extends Channel {
    constructor() {
      super();
      rig.hops++;
    }
  };
  try {
    await body(rig);
  } finally {
    performance.now = now;
    globalThis.MessageChannel = Channel;
  }
}

describe("readbackPacer", () => {
  it("resolves to what the readback resolves to", async () => {
    const wait = readbackPacer({ queue: { onSubmittedWorkDone: async () => {} } });
    assert.equal(await wait(Promise.resolve(42), performance.now()), 42);
  });

  it("nudges by timers after a run under 4 ms, not after the first run or one of 4 ms or more", () =>
    withPacer(async (rig) => {
      assert.deepEqual(await rig.run(5, 20), { pings: 0, hops: 0 }, "the first run has no previous one to go by");
      assert.deepEqual(await rig.run(4, 20), { pings: 0, hops: 0 }, "after a 5 ms run");
      assert.deepEqual(await rig.run(3.9, 20), { pings: 0, hops: 0 }, "after a 4 ms run");
      const after = await rig.run(3, 20);
      assert.ok(after.pings > 0 && after.pings <= 4, `after a 3.9 ms run: ${after.pings} nudges`);
      assert.equal(after.hops, 0, "no run took under 1.5 ms yet");
    }));

  it("nudges by message-channel hops at 0.4, 0.7, 1.0 and 1.3 ms once a run took under 1.5 ms", () =>
    withPacer(async (rig) => {
      await rig.run(1.5);
      assert.deepEqual(await rig.run(1), { pings: 0, hops: 0 }, "1.5 ms is not under 1.5 ms");
      assert.deepEqual(await rig.run(1.4), { pings: 4, hops: 1 }, "each of the 4 hop thresholds passed: 4 nudges");
      assert.deepEqual(await rig.run(0.8), { pings: 2, hops: 1 }, "0.4 and 0.7 ms passed, then the readback was done");
    }));

  it("turns the hops off for 256 runs after 8 hop runs in a row over 2 ms", () =>
    withPacer(async (rig) => {
      await rig.run(1); // best 1 ms: the next runs hop
      const hops = async (n, ms) => {
        let total = 0;
        for (let i = 0; i < n; i++) total += (await rig.run(ms)).hops;
        return total;
      };
      assert.equal(await hops(7, 2.5), 7);
      assert.equal(await hops(1, 2), 1, "a hop run of 2 ms is not over 2 ms: the count starts again");
      assert.equal(await hops(7, 2.5), 7);
      assert.equal(await hops(1, 2.5), 1, "the 8th in a row");
      assert.equal(await hops(256, 2.5), 0, "paused for 256 runs");
      assert.equal(await hops(1, 2.5), 1, "then hopping again");
      assert.equal(await hops(7, 2.5), 7, "and counting from 0 again");
    }));
});

// ---------------------------------------------------------------------------------------------------------------
// load() without a GPU: choosing the backend, and saying why none runs

/** manifest.json's text as FORMAT.md's "Integrity" says: the JSON, its last member the SHA-256 of what precedes it. */
const seal = (manifest) => {
  const body = JSON.stringify(manifest);
  return `${body.slice(0, -1)},"integrity":"sha256-${createHash("sha256").update(body).digest("hex")}"}`;
};
const bundleFetch = (manifest) => async (url) => {
  if (url.endsWith("manifest.json")) return new Response(seal(manifest));
  return new Response(new Uint8Array(manifest.weights.bytes));
};
// plans that pass validatePlan(): the output is the input, in place
const plans = {
  wgsl: { buffers: [16], inputs: [{ name: "x", buffer: 0, bytes: 16 }], outputs: [{ name: "z", buffer: 0, bytes: 16 }], steps: [] },
  glsl: {
    vertex: 0,
    textures: [{ width: 1, height: 1, pack: 4 }],
    inputs: [{ name: "x", texture: 0, layout: { rows: 1, cols: 4, pack: 4, width: 1, height: 1 } }],
    outputs: [{ name: "z", texture: 0, size: 4 }],
    steps: [],
  },
};
const withTargets = (...targets) => ({ ...validManifest(), targets: targets.map((t) => ({ ...t, plan: plans[t.language] })) });
const rejectsKf = (promise, pattern) =>
  assert.rejects(promise, (e) => e instanceof Error && e.message.startsWith("kernelforge: ") && pattern.test(e.message));

describe("load without WebGPU or WebGL2", () => {
  // Node has no navigator.gpu (Node >= 21 has a navigator without gpu), no document and no OffscreenCanvas
  const both = withTargets(t("default/wgsl", "wgsl", null), t("default/glsl", "glsl", null));

  it("is the default export's load", () => {
    assert.equal(kf.load, load);
  });

  it("says why each backend is out", async () => {
    await rejectsKf(
      load("http://x/", { fetch: bundleFetch(both) }),
      /cannot run here: no WebGPU \(navigator.gpu is missing\); no WebGL2 \(getContext\("webgl2"\) returned null\)$/,
    );
    await rejectsKf(load("http://x/", { fetch: bundleFetch(both), backend: "webgpu" }), /cannot run here: no WebGPU \(navigator.gpu is missing\)$/);
    await rejectsKf(
      load("http://x/", { fetch: bundleFetch(both), backend: "webgl2" }),
      /cannot run here: no WebGL2 \(getContext\("webgl2"\) returned null\)$/,
    );
  });

  it("names the languages the bundle lacks", async () => {
    const wgsl = withTargets(t("default/wgsl", "wgsl", null));
    const glsl = withTargets(t("default/glsl", "glsl", null));
    await rejectsKf(load("http://x/", { fetch: bundleFetch(wgsl), backend: "webgl2" }), /cannot run here: the bundle has no glsl target$/);
    await rejectsKf(
      load("http://x/", { fetch: bundleFetch(glsl) }),
      /cannot run here: the bundle has no wgsl target; no WebGL2 \(getContext\("webgl2"\) returned null\)$/,
    );
    await rejectsKf(
      load("http://x/", { fetch: bundleFetch(wgsl) }),
      /cannot run here: no WebGPU \(navigator.gpu is missing\); the bundle has no glsl target$/,
    );
  });

  it("checks a forced target against the backend", async () => {
    await rejectsKf(
      load("http://x/", { fetch: bundleFetch(both), target: "default/glsl" }),
      /cannot run here: target "default\/glsl" is glsl; no WebGL2 \(getContext\("webgl2"\) returned null\)$/,
    );
    await rejectsKf(
      load("http://x/", { fetch: bundleFetch(both), target: "default/glsl", backend: "webgpu" }),
      /target "default\/glsl" is glsl, which the webgpu backend does not run$/,
    );
    await rejectsKf(load("http://x/", { fetch: bundleFetch(both), target: "nope" }), /unknown target "nope"; the bundle has: default\/wgsl, default\/glsl$/);
  });

  it("rejects a bad backend option, a bad manifest, and an aborted signal", async () => {
    await rejectsKf(load("http://x/", { fetch: bundleFetch(both), backend: "cpu" }), /backend must be "auto", "webgpu" or "webgl2", not "cpu"$/);
    await rejectsKf(load("http://x/", { fetch: bundleFetch({ ...both, version: 9 }) }), /http:\/\/x\/manifest.json has bundle version 9/);
    const unsealed = async (url) => (url.endsWith("manifest.json") ? new Response(JSON.stringify(both)) : new Response(new Uint8Array(16)));
    await rejectsKf(load("http://x/", { fetch: unsealed }), /http:\/\/x\/manifest.json has no integrity hash/);
    const edited = async (url) => new Response(url.endsWith("manifest.json") ? seal(both).replace('"m"', '"n"') : new Uint8Array(16));
    await rejectsKf(load("http://x/", { fetch: edited }), /http:\/\/x\/manifest.json fails its integrity check: /);
    const broken = withTargets(t("default/wgsl", "wgsl", null));
    broken.targets[0].plan = { ...plans.wgsl, inputs: [{ name: "x", buffer: 0, bytes: 12 }] };
    // validated before any backend is looked for
    await rejectsKf(load("http://x/", { fetch: bundleFetch(broken) }), /^kernelforge: targets\[0\]\.plan\.inputs\[0\]\.bytes is 12; "x" has 4 values \(16 bytes\)$/);
    const fetch = async () => new Response("{nope");
    await rejectsKf(load("http://x/m.json", { fetch }), /^kernelforge: http:\/\/x\/m.json is not JSON: /);
    const missing = async () => new Response("", { status: 404, statusText: "Not Found" });
    await rejectsKf(load("http://x/", { fetch: missing }), /cannot fetch http:\/\/x\/manifest.json: HTTP 404 Not Found$/);
    const reason = new Error("stop");
    await assert.rejects(load("http://x/", { fetch: bundleFetch(both), signal: AbortSignal.abort(reason) }), (e) => e === reason);
  });

  it("reports manifest progress before failing on the backend", async () => {
    const seen = [];
    await assert.rejects(load("http://x/", { fetch: bundleFetch(both), onProgress: (p) => seen.push(p) }));
    assert.deepEqual(seen, [
      { stage: "manifest", loaded: 0, total: 1 },
      { stage: "manifest", loaded: 1, total: 1 },
    ]);
  });
});
