// @ts-check
// kernelforge browser runtime: runs a kernelforge bundle (manifest.json + weights.bin, kernelforge/export/FORMAT.md)
// on WebGPU compute shaders, or on WebGL2 fragment shaders where WebGPU is missing.
//
// The runtime never generates shader code: it compiles the WGSL / GLSL text of the manifest and replays the
// target's plan. Everything that can be done once (pipelines, programs, buffers, textures, bind groups,
// framebuffers, readback buffers) is done before the first run, so run() only uploads inputs, records the steps
// and reads the outputs back. A bundle of several variants (shape sets) has a plan per variant: load() builds
// the one opts.shapes names (or the only one), run() builds any other when it first runs it.
//
// Nothing from the bundle is trusted before it is checked: load() verifies the manifest's integrity hash, then
// every field every plan uses (validatePlan), all before a GPU object exists, and the weights' SHA-256 before any
// of their values reaches the GPU (FORMAT.md, "Integrity" and "What a runtime checks").
//
// Parts of this module, in order: types; downloads, hashing and constants; manifest validation; target choice;
// readback scheduling; the WebGPU backend; the WebGL2 backend; load(). Both backends are values of the Backend type below
// and load() drives them through it alone. `tsc -p tsconfig.json` type-checks the JSDoc types, and
// tools/check_dts.mjs checks that kernelforge.d.ts agrees with them.

// The WebGL2 backend is optional: `terser --define KF_WEBGL2=false` turns WEBGL2 below into `false` and drops
// the whole backend (the size benchmark reports "WebGPU only" and "WebGPU + WebGL2").
const KF_WEBGL2 = true;

const FORMAT = "kernelforge-bundle";
// Version 3 added quantized (int8/uint8) constants; a version-2 bundle is a version-3 bundle without them.
// Version 4 added variants (FORMAT.md, "Variants"); a single-variant bundle is still written as version 3.
const VERSION = 4;
const OLDEST = 2;

// WebGPU flag values, as numbers so the module also works where the GPUBufferUsage / GPUMapMode globals are
// not installed (Node with the webgpu package, before Object.assign(globalThis, globals)).
const MAP_READ = 0x1;
const COPY_SRC = 0x4;
const COPY_DST = 0x8;
const UNIFORM = 0x40;
const STORAGE = 0x80;
/** @type {Record<string, [number, number]>} quantized constants' integer types and their ranges */
const QUANT = { int8: [-128, 127], uint8: [0, 255] };
// Model inputs and outputs of these dtypes are converted at the edges (kernels compute in float32): the array type
// an output of each is returned as. Integer inputs must be integers within 2**24, which float32 holds exactly.
/** @type {Record<DType, { from(a: ArrayLike<number>, f: (x: number) => any): Tensor }>} */
const EDGE = {
  float32: Float32Array, float16: Float32Array, float64: Float32Array, int64: BigInt64Array, int32: Int32Array,
  int16: Int16Array, int8: Int8Array, uint8: Uint8Array, uint16: Uint16Array, uint32: Uint32Array, uint64: BigUint64Array,
  bool: Uint8Array,
};

// ---------------------------------------------------------------------------------------------------------------
// Types. The public ones mirror kernelforge.d.ts (tools/check_dts.mjs fails when they disagree).

/** @typedef {{ name: string, shape: number[], dtype: DType }} TensorInfo A model input or output as the manifest declares it. */
/** @typedef {"float32" | "float16" | "float64" | "int64" | "int32" | "int16" | "int8" | "uint8" | "uint16" | "uint32" | "uint64" | "bool"} DType */
/** @typedef {Float32Array | BigInt64Array | BigUint64Array | Int32Array | Int16Array | Int8Array | Uint8Array | Uint16Array | Uint32Array} Tensor */
/** @typedef {"manifest" | "weights" | "compile" | "tune"} Stage */
/** @typedef {{ stage: Stage, loaded: number, total: number }} LoadProgress What load() reports while it works. */

/**
 * @typedef {object} LoadOptions
 * @property {"auto" | "webgpu" | "webgl2"} [backend] "auto" (default): WebGPU when an adapter is found, else WebGL2.
 * @property {(progress: LoadProgress) => void} [onProgress]
 * @property {AbortSignal} [signal] aborts the downloads; checked between stages.
 * @property {string} [target] force a target id (e.g. "default/wgsl") instead of matching the adapter.
 * @property {FetchFn} [fetch] fetch function to use (Node tests pass one that reads files).
 * @property {Shapes} [shapes] input shapes of the variant to build at load (and describe in inputs/outputs).
 * @property {"auto" | "off" | { budgetMs?: number }} [tune] on a WebGPU adapter without an exact target, time the
 *   bundle's candidate kernels and keep the fastest (FORMAT.md, "Candidates"); "auto" (default) within 20 s.
 * @property {"auto" | "f32" | "f16"} [precision] which WebGPU plans may run: "auto" (default) an f16 plan where the
 *   adapter has shader-f16, else f32; "f32" never an f16 plan; "f16" only an f16 plan (rejects when none can run).
 *   (A WebGL2 plan's half-float textures need no feature: the export chose them, `--precision f32` ships none.)
 */
/**
 * What kernel selection did (Model.tuning): "measuring" while it runs, "done" once it ended, "cached" when a
 * choice stored by an earlier load was used, "off" when nothing is selected (`reason` says why).
 * @typedef {object} Tuning
 * @property {"measuring" | "done" | "cached" | "off"} state
 * @property {string} [reason]
 * @property {number} kernels kernels measured
 * @property {number} total kernels that have candidates
 * @property {number} ms time spent selecting
 * @property {number} speedup the measured kernels' plan time over their winners' (1: no gain), step counts weighed
 */
/** @typedef {Record<string, readonly number[]>} Shapes input name -> dims */
/** @typedef {{ inputs: TensorInfo[], outputs: TensorInfo[] }} VariantInfo One shape set of a bundle. */
/** @typedef {{ data: Tensor | ArrayLike<number | bigint>, dims?: readonly number[] }} Feed An input with its dims. */
/** @typedef {{ shapes?: Shapes }} RunOptions */
/** @typedef {(url: string, init?: { signal?: AbortSignal }) => Promise<Response>} FetchFn */

/**
 * @typedef {object} DeviceInfo The target the runtime chose for this device, and why.
 * @property {string} target
 * @property {Match} match
 * @property {string} adapter the lower-cased adapter description the targets were matched against.
 * @property {AdapterClass} class
 * @property {boolean} software a software or fallback adapter (a CPU engine may well be faster there)
 * @property {Record<string, number>} kernels
 * @property {"f32" | "f16"} precision f16 when the target's plan computes in f16 (its adapter has shader-f16), or
 *   (WebGL2) some kernel of it draws half-float textures
 */
/** @typedef {"exact" | "class" | "default" | "forced"} Match */
/** @typedef {{ weights: number, activations: number }} Memory GPU bytes: constants as uploaded, activations */
/** @typedef {"cpu" | "igpu" | "dgpu" | null} AdapterClass */
/** @typedef {Record<string, Tensor>} Outputs */

/**
 * @typedef {object} Model
 * @property {"webgpu" | "webgl2"} backend
 * @property {DeviceInfo} device
 * @property {TensorInfo[]} inputs
 * @property {TensorInfo[]} outputs
 * @property {VariantInfo[]} variants
 * @property {Tuning} tuning
 * @property {Promise<Tuning>} tuned settles when selection ends (at once when none runs)
 * @property {() => object | null} tuningReport the candidates' times per kernel and the winners, as JSON for
 *   `kernelforge db import` (FORMAT.md, "Tuning reports"); null when nothing was measured
 * @property {Memory} memory GPU bytes of the variant built at load
 * @property {(inputs: Record<string, Tensor | ArrayLike<number | bigint> | Feed>, options?: RunOptions) => Promise<Outputs>} run
 * @property {() => void} dispose
 */

/**
 * manifest.json (FORMAT.md). checkManifest() vouches for the top level and sets `variants` (a version-3 bundle's
 * model inputs, outputs and targets as its one variant), validatePlan() for each target.
 * @typedef {object} Manifest
 * @property {string} format
 * @property {number} version
 * @property {string} [generator]
 * @property {string} integrity "sha256-<hex>", checked against the text by checkIntegrity()
 * @property {{ name?: string, inputs?: TensorInfo[], outputs?: TensorInfo[] }} model
 * @property {Weights} weights
 * @property {Constant[]} constants
 * @property {string[]} shaders
 * @property {Target[]} [targets]
 * @property {Variant[]} variants
 */
/** @typedef {{ inputs: TensorInfo[], outputs: TensorInfo[], targets: Target[] }} Variant */
/** @typedef {{ file?: string, bytes: number, dtype: "fp32" | "fp16", sha256: string }} Weights */
/**
 * A constant of weights.bin: `count` values of weights.dtype, or of its own `dtype` (int8/uint8 integers that
 * widen to `(q - zero_point[c]) * scale[c]`, c the index along `axis` of `shape`; one scale: per tensor; without
 * `scale`, integers a kernel reads and dequantizes itself, uploaded as they are; `int4`: such integers packed two
 * a byte, low nibble first, uploaded as they are to a WebGPU buffer and widened to int8 texels for WebGL2;
 * `float16`: halves a kernel reads itself, uploaded as they are to a WebGPU buffer or a half-float texture).
 * @typedef {{ offset: number, count: number, dtype?: "int8" | "uint8" | "int4" | "float16", scale?: number[] | { constant: number }, zero_point?: number[],
 *   axis?: number, shape?: number[] }} Constant
 */
/**
 * @typedef {object} Target
 * @property {string} id
 * @property {string} language "wgsl" or "glsl"
 * @property {{ vendor: string, class?: string, keywords?: string[] } | null} [device] null for the defaults.
 * @property {Record<string, number>} [kernels]
 * @property {Plan} [plan]
 */
/** @typedef {WgslPlan | GlslPlan} Plan */
/** @typedef {{ name: string, constant: number }} ConstantOutput An output that folded to a constant. */
/**
 * @typedef {object} WgslPlan
 * @property {number} [subgroup_size]
 * @property {true} [f16] its kernels compute in f16: it runs only where the adapter has shader-f16
 * @property {number[]} buffers
 * @property {{ name: string, buffer: number, bytes: number }[]} inputs
 * @property {({ name: string, buffer: number, bytes: number, constant?: undefined } | ConstantOutput)[]} outputs
 * @property {WgslStep[]} steps
 * @property {Kernel[]} [kernels] steps' candidate configs (FORMAT.md, "Candidates")
 */
/**
 * @typedef {{ node: string, shader: number, workgroups: number[], uniforms?: number[], kernel?: number,
 *   params?: object, bindings: { buffer?: number, bytes?: number, constant?: number }[] }} WgslStep
 */
/** @typedef {{ shader: number, workgroups: number[], uniforms?: number[], params?: object, subgroup_size?: number }} Dispatch */
/** @typedef {{ op: string, shape: string, template: string, candidates: (Dispatch & { from: string })[] }} Kernel */
/** @typedef {{ rows: number, cols: number, pack: number, width: number, height: number }} Layout */
/**
 * @typedef {object} GlslPlan
 * @property {undefined} [subgroup_size]
 * @property {undefined} [f16]
 * @property {number} vertex
 * @property {{ width: number, height: number, pack: number, dtype?: "int8" | "uint8" | "float16" }[]} textures
 * @property {{ texture: number, constant: number, layout: Layout }[]} [constants]
 * @property {{ name: string, texture: number, layout: Layout }[]} inputs
 * @property {({ name: string, texture: number, size: number, constant?: undefined } | ConstantOutput)[]} outputs
 * @property {{ node: string, shader: number, inputs: { texture: number, sampler: string }[], targets: number[],
 *   width: number, height: number }[]} steps
 */

/** @typedef {(stage: Stage, loaded: number, total: number) => void} Progress */

/**
 * A backend: the runtime of one shader language on one browser API. find() looks for its device on this machine
 * and says why when there is none; everything after that goes through the Adapter it returns.
 * @typedef {object} Backend
 * @property {"webgpu" | "webgl2"} name
 * @property {"wgsl" | "glsl"} language the language of the targets it runs
 * @property {() => Promise<Adapter | string>} find
 */
/**
 * A backend's device on this machine, before anything is built on it.
 * @typedef {object} Adapter
 * @property {string} desc lower-cased description that targets are matched against (FORMAT.md)
 * @property {number} subgroupSize fixed subgroup size, else 0 (see subgroupSize())
 * @property {boolean} f16 the adapter has shader-f16 (WebGPU)
 * @property {boolean} [fallback] the browser says it is a fallback adapter (WebGPU's isFallbackAdapter)
 * @property {(manifest: Manifest, subgroups: boolean, timing?: boolean, f16?: boolean) => Promise<Device>} open
 *   makes the device (with "subgroups" or "shader-f16" when a plan to run needs it, "timestamp-query" for
 *   kernel selection)
 * @property {GPUAdapter} [gpu] the WebGPU adapter (kernel selection reports its identity)
 * @property {() => void} release gives the device up when open() is not called
 */
/**
 * A device and what the bundle's plans share on it (compiled shaders, WebGPU's constant and uniform buffers).
 * build() makes one plan's own objects and returns its runner (it awaits `weights` once its shaders are on the
 * way, and keeps no reference to them); dispose() frees every plan's objects, and the device.
 * @typedef {object} Device
 * @property {(plan: Plan, weights: Promise<ArrayBuffer>, progress: Progress, checkAbort: () => void) => Promise<Runner>} build
 * @property {() => void} dispose
 */
/**
 * A plan built on a device: gets validated inputs (name -> Float32Array) and is never re-entered. A WebGPU
 * runner's `gpu` is what kernel selection (kernelforge-tune.js) times candidates with.
 * @typedef {((feeds: Record<string, Float32Array>) => Promise<Record<string, Float32Array>>) & { gpu?: GpuRun }} Runner
 */
/**
 * A WebGPU plan's objects, for kernel selection: `steps` are what each run dispatches (replacing an entry switches
 * a step's pipeline from the next run on); group() makes step `s`'s bind group for another pipeline.
 * @typedef {object} GpuRun
 * @property {GPUDevice} device
 * @property {WgslPlan} plan
 * @property {GPUBuffer[]} buffers
 * @property {[GPUComputePipeline, GPUBindGroup, number, number, number][]} steps
 * @property {string[]} shaders the manifest's shader texts
 * @property {(pipeline: GPUComputePipeline, s: WgslStep, uniforms?: number[]) => GPUBindGroup} group
 * @property {boolean} timestamps whether the device has "timestamp-query"
 */

// ---------------------------------------------------------------------------------------------------------------
// Helpers, downloads and constants

/** Throw an Error whose message says it came from here. @type {(message: string) => never} */
const fail = (message) => {
  throw new Error(`kernelforge: ${message}`);
};

/** @param {number[]} shape */
const numel = (shape) => shape.reduce((a, b) => a * b, 1);
/** @param {number} n */
const align4 = (n) => Math.max(4, Math.ceil(n / 4) * 4);
/** @param {number[]} shape */
const show = (shape) => `[${shape.join(", ")}]`;
/** The message of a thrown value. @param {any} e */
const message = (e) => e?.message ?? e;

/**
 * Resolve `path` against `base`; falls back to string joining for bare file paths (Node with opts.fetch).
 * @param {string} path
 * @param {string} [base]
 */
function resolve(path, base) {
  try {
    return new URL(path, base).href;
  } catch {
    return base ? base.slice(0, base.lastIndexOf("/") + 1) + path : path;
  }
}

/**
 * fetch() that names the URL in every failure and lets an abort through as the signal's reason.
 * @param {FetchFn} fetchFn
 * @param {string} url
 * @param {AbortSignal} [signal]
 */
async function get(fetchFn, url, signal) {
  let res;
  try {
    res = await fetchFn(url, { signal });
  } catch (e) {
    if (signal?.aborted) throw signal.reason;
    fail(`cannot fetch ${url}: ${message(e)}`);
  }
  if (!res.ok) fail(`cannot fetch ${url}: HTTP ${res.status}${res.statusText ? " " + res.statusText : ""}`);
  return res;
}

/**
 * Download the weights, reporting progress as chunks arrive, and check the length and SHA-256 the manifest
 * promises (the hash before anything is made of them: a flipped bit loads as a wrong weight, not as an error).
 * @param {FetchFn} fetchFn
 * @param {string} url
 * @param {AbortSignal | undefined} signal
 * @param {Weights} weights the manifest's weights entry, checked by checkManifest()
 * @param {Progress} progress
 * @returns {Promise<ArrayBuffer>}
 */
async function fetchWeights(fetchFn, url, signal, { file = "weights.bin", bytes: expected, sha256: want }, progress) {
  const res = await get(fetchFn, url, signal);
  progress("weights", 0, expected);
  let got = 0;
  /** @type {Uint8Array<ArrayBuffer>} */
  let out;
  try {
    const reader = res.body?.getReader?.();
    if (reader) {
      // fill a buffer of the promised size in place: no second copy of a large model
      out = new Uint8Array(expected);
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        if (got + value.length <= expected) out.set(value, got);
        got += value.length;
        progress("weights", Math.min(got, expected), expected);
      }
    } else {
      out = new Uint8Array(await res.arrayBuffer());
      got = out.length;
      progress("weights", got, expected);
    }
  } catch (e) {
    if (signal?.aborted) throw signal.reason;
    fail(`reading ${url} failed: ${message(e)}`);
  }
  if (got < expected) fail(`${file} is truncated: got ${got} bytes, manifest says ${expected}`);
  if (got > expected) fail(`${file} is too long: got ${got} bytes, manifest says ${expected}`);
  const hash = await sha256(out);
  if (hash !== want) fail(`${file} fails its integrity check: its SHA-256 is ${hash}, weights.sha256 says ${want}`);
  return out.buffer;
}

/** @type {Uint32Array | undefined} */
let SHA;
/**
 * SHA-256 (FIPS 180-4) in plain JS, for where crypto.subtle is missing: browsers expose it only in secure contexts,
 * so a bundle served over plain http from a LAN address has none. Written for this file, small rather than fast
 * (~100 MB/s); its tests compare it with crypto.subtle and the standard's vectors.
 * @param {Uint8Array} data
 * @returns {Uint8Array} the 32-byte digest
 */
function sha256js(data) {
  if (!SHA) {
    // the 64 round constants (cube roots of the first 64 primes), then the initial hash value (square roots of the
    // first 8 primes): the first 32 bits of their fractional parts, which doubles carry (the test vectors check)
    SHA = new Uint32Array(72);
    for (let n = 2, i = 0; i < 64; n++) {
      let d = 2;
      while (n % d) d++;
      if (d < n) continue;
      SHA[i] = (Math.cbrt(n) % 1) * 2 ** 32;
      if (i < 8) SHA[64 + i] = (Math.sqrt(n) % 1) * 2 ** 32;
      i++;
    }
  }
  const h = SHA.slice(64);
  const w = new Uint32Array(64);
  const n = data.length;
  const full = n - (n % 64);
  // the last one or two blocks: the data's rest, a 1 bit, zeros, then its length in bits as a big-endian u64
  const tail = new Uint8Array(n % 64 < 56 ? 64 : 128);
  tail.set(data.subarray(full));
  tail[n % 64] = 0x80;
  const tv = new DataView(tail.buffer);
  tv.setUint32(tail.length - 8, n / 2 ** 29);
  tv.setUint32(tail.length - 4, n << 3);
  const dv = new DataView(data.buffer, data.byteOffset, n);
  /** @type {(x: number, r: number) => number} */
  const rot = (x, r) => (x >>> r) | (x << (32 - r));
  for (let at = 0; at < full + tail.length; at += 64) {
    const [v, o] = at < full ? [dv, at] : [tv, at - full];
    for (let i = 0; i < 16; i++) w[i] = v.getUint32(o + 4 * i);
    for (let i = 16; i < 64; i++) {
      const x = w[i - 15];
      const y = w[i - 2];
      w[i] = w[i - 16] + w[i - 7] + (rot(x, 7) ^ rot(x, 18) ^ (x >>> 3)) + (rot(y, 17) ^ rot(y, 19) ^ (y >>> 10));
    }
    // plain variables: destructuring here halves the speed
    let a = h[0];
    let b = h[1];
    let c = h[2];
    let d = h[3];
    let e = h[4];
    let f = h[5];
    let g = h[6];
    let hh = h[7];
    for (let i = 0; i < 64; i++) {
      const t = (hh + (rot(e, 6) ^ rot(e, 11) ^ rot(e, 25)) + ((e & f) ^ (~e & g)) + SHA[i] + w[i]) | 0;
      hh = g;
      g = f;
      f = e;
      e = (d + t) | 0;
      d = c;
      c = b;
      b = a;
      a = (t + (rot(b, 2) ^ rot(b, 13) ^ rot(b, 22)) + ((b & c) ^ (b & d) ^ (c & d))) | 0;
    }
    h[0] += a;
    h[1] += b;
    h[2] += c;
    h[3] += d;
    h[4] += e;
    h[5] += f;
    h[6] += g;
    h[7] += hh;
  }
  const out = new DataView(new ArrayBuffer(32));
  h.forEach((x, i) => out.setUint32(4 * i, x));
  return new Uint8Array(out.buffer);
}

/**
 * The SHA-256 of `data` as 64 lower-case hex digits: crypto.subtle where there is one, else sha256js().
 * @param {Uint8Array<ArrayBuffer>} data
 */
async function sha256(data) {
  const subtle = globalThis.crypto?.subtle;
  const digest = subtle ? new Uint8Array(await subtle.digest("SHA-256", data)) : sha256js(data);
  return Array.from(digest, (x) => x.toString(16).padStart(2, "0")).join("");
}

/** @type {Float32Array | undefined} */
let HALF;
/** IEEE half -> float32 for all 65536 bit patterns (subnormals, ±inf and NaN included), built on first use. */
function halfTable() {
  if (!HALF) {
    HALF = new Float32Array(65536);
    for (let h = 0; h < 65536; h++) {
      const e = (h >> 10) & 31;
      const m = h & 1023;
      const v = e === 0 ? m * 2 ** -24 : e === 31 ? (m ? NaN : Infinity) : (1024 + m) * 2 ** (e - 25);
      HALF[h] = h & 0x8000 ? -v : v;
    }
  }
  return HALF;
}

/**
 * Return IEEE halves as float32 values (exact).
 * @param {Uint16Array} bits
 * @returns {Float32Array}
 */
function fromHalves(bits) {
  const t = halfTable();
  return Float32Array.from(bits, (h) => t[h]);
}

/**
 * Return constant(i) -> Float32Array of constant i of the manifest, decoded on first use (the Int8Array or
 * Uint8Array of integers a kernel dequantizes itself; int4: their packed bytes, see int4Values(); float16: the
 * Uint16Array of halves a kernel reads itself). validatePlan() has
 * checked that every constant a plan uses lies inside the weights at a 16-byte aligned offset, so fp32 constants
 * are views of the weights; typed arrays use the platform's byte order, which is little-endian on every browser
 * platform, like weights.bin. Quantized constants widen to exactly the float32 values a native run binds: the
 * product of an 8-bit difference and a float32 scale is exact in a double, and storing it rounds it once.
 * @param {Pick<Manifest, "weights" | "constants">} manifest
 * @param {ArrayBuffer} buf
 * @returns {(i: number) => Float32Array | Int8Array | Uint8Array | Uint16Array}
 */
function constantReader(manifest, buf) {
  /** @type {Map<number, Float32Array | Int8Array | Uint8Array | Uint16Array>} */
  const cache = new Map();
  /** @type {(i: number) => Float32Array | Int8Array | Uint8Array | Uint16Array} */
  const read = (i) => {
    const c = manifest.constants[i];
    const { offset, count, zero_point: zp = [], shape = [], axis = 0 } = c;
    let v = cache.get(i);
    if (!v && c.dtype === "int4") v = new Uint8Array(buf, offset, Math.ceil(count / 2));
    else if (!v && c.dtype === "float16" && !c.scale) v = new Uint16Array(buf, offset, count);
    else if (!v && c.dtype && !c.scale) v = new (c.dtype === "int8" ? Int8Array : Uint8Array)(buf, offset, count);
    else if (!v && c.dtype) {
      const inner = numel(shape.slice(axis + 1));
      // scales listed, or in a float constant (zero points 0)
      const scale = isScaleRef(c.scale) ? /** @type {Float32Array} */ (read(c.scale.constant)) : c.scale ?? [];
      const n = scale.length;
      // float16 with scales: halves widened (an int4 bundle's kernel scales); a half times a float32 scale is
      // exact in a double too
      const raw = c.dtype === "float16" ? fromHalves(new Uint16Array(buf, offset, count)) : new (c.dtype === "int8" ? Int8Array : Uint8Array)(buf, offset, count);
      v = Float32Array.from(raw, (x, j) => {
        const k = n > 1 ? Math.floor(j / inner) % n : 0;
        return (x - (zp[k] ?? 0)) * scale[k];
      });
    } else if (!v && manifest.weights.dtype === "fp16") v = fromHalves(new Uint16Array(buf, offset, count));
    v ??= new Float32Array(buf, offset, count);
    cache.set(i, v);
    return v;
  };
  return read;
}

/**
 * Return `count` int4 values packed two a byte (value 2i in byte i's low nibble, two's complement) as int8s.
 * @param {Uint8Array} packed
 * @param {number} count
 * @returns {Int8Array}
 */
function int4Values(packed, count) {
  return Int8Array.from({ length: count }, (_, j) => (((packed[j >> 1] >> ((j & 1) * 4)) & 15) << 28) >> 28);
}

/**
 * The GPU memory a plan takes: its constants as uploaded (floats 4 bytes, fp16 weights widened; integers a kernel
 * reads, 1; halves a kernel reads, 2) and its activation buffers or textures.
 * @param {Manifest} manifest
 * @param {Plan} plan
 * @returns {Memory}
 */
function memoryOf(manifest, plan) {
  const bytes = (/** @type {number} */ i) => {
    const c = manifest.constants[i];
    return c.dtype === "int4" ? Math.ceil(c.count / 2) : (c.scale || !c.dtype ? 4 : c.dtype === "float16" ? 2 : 1) * c.count;
  };
  const sum = (/** @type {number[]} */ a) => a.reduce((n, x) => n + x, 0);
  if (!("vertex" in plan)) {
    const bound = new Set(plan.steps.flatMap((s) => s.bindings.flatMap((b) => (b.constant === undefined ? [] : [b.constant]))));
    return { weights: sum([...bound].map((i) => align4(bytes(i)))), activations: sum(plan.buffers.map(align4)) };
  }
  const uploaded = new Set((plan.constants ?? []).map((c) => c.texture));
  const size = plan.textures.map((t) => t.width * t.height * t.pack * (t.dtype === "float16" ? 2 : t.dtype ? 1 : 4));
  return { weights: sum(size.filter((_, i) => uploaded.has(i))), activations: sum(size.filter((_, i) => !uploaded.has(i))) };
}

// ---------------------------------------------------------------------------------------------------------------
// Manifest validation

// Every check below fails with the path of the offending field (`targets[1].plan.steps[3].bindings[1].bytes`),
// so that a broken or altered bundle is refused before a GPU object exists, and no field can reach a typed-array
// constructor or a GPU call as a RangeError, a wrong size or an out-of-range index.

/** A manifest value for messages: its JSON, cut short. @param {unknown} v */
const str = (v) => String(JSON.stringify(v)).slice(0, 80);
/** `v` when it is an integer in lo..hi, else fail naming `path`. @type {(v: any, path: string, lo?: number, hi?: number) => number} */
const int = (v, path, lo = 0, hi = 2 ** 32 - 1) => (Number.isInteger(v) && v >= lo && v <= hi ? v : fail(`${path} is ${str(v)}; expected an integer in ${lo}..${hi}`));
/** `v` when it is an array, else fail naming `path`. @type {(v: unknown, path: string) => any[]} */
const list = (v, path) => (Array.isArray(v) ? v : fail(`${path} is ${str(v)}; expected an array`));

/**
 * Reject a manifest whose format or version this runtime does not read (before its integrity is checked: how
 * the rest is read depends on them).
 * @param {any} m parsed manifest.json
 * @param {string} url
 */
function checkFormat(m, url) {
  if (!m || typeof m !== "object") fail(`${url} is not a kernelforge manifest (not a JSON object)`);
  if (m.format !== FORMAT) fail(`${url} is not a kernelforge manifest: format is ${str(m.format)}, expected "${FORMAT}"`);
  if (!Number.isInteger(m.version) || m.version < OLDEST || m.version > VERSION) {
    fail(`${url} has bundle version ${str(m.version)}; this runtime reads versions ${OLDEST} to ${VERSION}${m.version < OLDEST ? ": re-export the model with a current kernelforge" : ""}`);
  }
}

/**
 * Check manifest.json's integrity member (FORMAT.md, "Integrity"): it is the text's last member, and the SHA-256
 * of the text before it, closed by "}", is its value. Exact bytes are hashed, not re-serialized JSON.
 * @param {string} text manifest.json as downloaded
 * @param {string} url
 */
async function checkIntegrity(text, url) {
  const at = text.lastIndexOf(',"integrity":"');
  const want = at > 0 && /^,"integrity":"sha256-([0-9a-f]{64})"\}\s*$/.exec(text.slice(at))?.[1];
  if (!want) fail(`${url} has no integrity hash (a last member "integrity":"sha256-<hex>"); re-export the model`);
  const got = await sha256(new TextEncoder().encode(text.slice(0, at) + "}"));
  if (got !== want) fail(`${url} fails its integrity check: the SHA-256 of its text is ${got}, its integrity member says ${want}`);
}

/**
 * Reject a manifest whose top level this runtime cannot read, naming what is wrong. The plans are validatePlan()'s.
 * @param {any} m parsed manifest.json
 * @param {string} url
 * @returns {asserts m is Manifest}
 */
function checkManifest(m, url) {
  checkFormat(m, url);
  const v4 = m.version > 3;
  for (const k of ["shaders", v4 ? "variants" : "targets", "constants"]) if (!Array.isArray(m[k])) fail(`${url} has no "${k}" array`);
  if (v4 && !m.variants.length) fail(`${url} has no variants`);
  if (!v4) {
    if (!Array.isArray(m.model?.inputs) || !Array.isArray(m.model?.outputs)) fail(`${url} has no model inputs/outputs`);
    m.variants = [{ inputs: m.model.inputs, outputs: m.model.outputs, targets: m.targets }];
  }
  // every variant has the first one's tensors (names, dtypes) and targets (ids, languages), in its order
  const [first] = m.variants;
  /** @type {(t: any) => string} */
  const dtype = (t) => t?.dtype ?? "float32";
  /** @type {(v: Variant) => string} */
  const shapes = (v) => JSON.stringify(v.inputs.map((t) => t.shape));
  m.variants.forEach((/** @type {any} */ v, /** @type {number} */ i) => {
    const at = v4 ? `variants[${i}]` : "model";
    for (const k of ["inputs", "outputs", "targets"]) {
      const n = list(v?.[k], `${at}.${k}`).length;
      if (n !== first[k].length) fail(`${at}.${k} has ${n} entries; variants[0].${k} has ${first[k].length}`);
    }
    for (const k of ["inputs", "outputs"]) {
      v[k].forEach((/** @type {any} */ t, /** @type {number} */ j) => {
        const p = `${at}.${k}[${j}]`;
        const f = first[k][j];
        if (typeof t?.name !== "string") fail(`${p}.name is ${str(t?.name)}; expected a string`);
        // an output may be empty (a dim of 0): a constant of no values; an input never is
        list(t.shape, `${p}.shape`).forEach((d, j) => int(d, `${p}.shape[${j}]`, k === "outputs" ? 0 : 1));
        if (!Object.hasOwn(EDGE, dtype(t))) fail(`${p}.dtype is ${str(t.dtype)}; expected one of ${Object.keys(EDGE).join(", ")}`);
        if (t.name !== f.name || dtype(t) !== dtype(f)) fail(`${p} is "${t.name}" (${dtype(t)}); variants[0].${k}[${j}] is "${f.name}" (${dtype(f)})`);
      });
    }
    v.targets.forEach((/** @type {any} */ t, /** @type {number} */ j) => {
      const f = first.targets[j];
      if (t?.id !== f?.id || t?.language !== f?.language) fail(`${at}.targets[${j}] is ${str(t?.id)} (${str(t?.language)}); variants[0].targets[${j}] is ${str(f?.id)} (${str(f?.language)})`);
    });
    const same = m.variants.findIndex((/** @type {Variant} */ w) => shapes(w) === shapes(v));
    if (same < i) fail(`${at}.inputs have the shapes of variants[${same}].inputs: ${shapes(v)}`);
  });
  if (!m.weights || !Number.isInteger(m.weights.bytes) || m.weights.bytes < 0) fail(`${url} has no weights.bytes`);
  if (!["fp32", "fp16"].includes(m.weights.dtype)) fail(`${url}: unsupported weights dtype ${str(m.weights.dtype)}`);
  if (!["string", "undefined"].includes(typeof m.weights.file)) fail(`weights.file is ${str(m.weights.file)}; expected a string`);
  if (!/^[0-9a-f]{64}$/.test(m.weights.sha256)) fail(`weights.sha256 is ${str(m.weights.sha256)}; expected 64 lower-case hex digits`);
}

/**
 * Check every field of `target` and of the manifest's tables that its plan uses (FORMAT.md, "What a runtime
 * checks"), failing with the field's path. Pure: nothing is created, so load() runs it on every target of every
 * variant before anything else. `manifest` must have passed checkManifest().
 * @param {Manifest} manifest
 * @param {Target} target one of the targets of manifest.variants
 */
function validatePlan(manifest, target) {
  const vi = manifest.variants.findIndex((v) => v.targets.includes(target));
  const { inputs, outputs: outputTensors, targets } = manifest.variants[vi];
  const at = `${manifest.version > 3 ? `variants[${vi}].` : ""}targets[${targets.indexOf(target)}]`;
  const { constants, shaders, weights } = manifest;
  if (!target || typeof target.id !== "string") fail(`${at}.id is ${str(target?.id)}; expected a string`);
  if (target.device != null) list(target.device.keywords ?? [], `${at}.device.keywords`);
  const p = `${at}.plan`;
  /** @type {any} */
  const plan = target.plan;
  if (!plan || typeof plan !== "object") fail(`${p} is ${str(plan)}; expected an object`);

  const ins = new Map(inputs.map((t) => [t.name, numel(t.shape)]));
  const outs = new Map(outputTensors.map((t) => [t.name, numel(t.shape)]));
  /**
   * The element count of the model tensor `o.name` names.
   * @param {Map<string, number>} tensors
   * @param {any} o
   * @param {string} path
   */
  const tensor = (tensors, o, path) => tensors.get(o?.name) ?? fail(`${path}.name is ${str(o?.name)}, which is not a model ${tensors === ins ? "input" : "output"}`);
  /**
   * Constant `i`'s value count, once its entry is known to lie inside the weights at an aligned offset.
   * @param {unknown} i
   * @param {string} path
   */
  const constant = (i, path) => {
    const c = constants[int(i, path, 0, constants.length - 1)];
    const cp = `constants[${i}]`;
    if (int(c?.offset, `${cp}.offset`, 0, 2 ** 53) % 16) fail(`${cp}.offset is ${c.offset}; constants start at multiples of 16 bytes`);
    const end = c.offset + Math.ceil(int(c.count, `${cp}.count`, 0, 2 ** 53) * (c.dtype !== undefined ? checkQuantized(c, cp, scales) : weights.dtype === "fp16" ? 2 : 4));
    if (end > weights.bytes) fail(`${cp} lies outside weights.bin: bytes ${c.offset}..${end} of ${weights.bytes}`);
    return c.count;
  };
  /**
   * The count of constant `j`, checked to be float values (no dtype of its own) that may scale another.
   * @param {unknown} j
   * @param {string} path
   * @returns {number}
   */
  const scales = (j, path) => {
    // its dtype first: a quantized constant naming itself would recurse
    const d = constants[int(j, path, 0, constants.length - 1)]?.dtype;
    if (d !== undefined) fail(`${path} is ${j}, a constant of dtype ${str(d)}; scales are float values`);
    return constant(j, path);
  };
  /** @type {(i: unknown, path: string) => void} */
  const shader = (i, path) => {
    if (typeof shaders[int(i, path, 0, shaders.length - 1)] !== "string") fail(`shaders[${i}] is not a string`);
  };
  /** Each output: a model output, with a constant of its size or `check` of its resource. */
  const outputs = (/** @type {(o: any, path: string, n: number) => void} */ check) => {
    list(plan.outputs, `${p}.outputs`).forEach((o, k) => {
      const op = `${p}.outputs[${k}]`;
      const n = tensor(outs, o, op);
      if (o.constant === undefined) check(o, op, n);
      else if (constant(o.constant, `${op}.constant`) && constants[o.constant].dtype && !constants[o.constant].scale) fail(`${op}.constant is ${o.constant}, a kernel's integers, not an output's values`);
      else if (constants[o.constant].count !== n) fail(`${op}.constant is ${o.constant}, of ${constants[o.constant].count} values; output "${o.name}" has ${n}`);
    });
    for (const name of outs.keys()) if (!plan.outputs.some((/** @type {any} */ o) => o.name === name)) fail(`${p}.outputs has no "${name}"`);
  };
  const steps = list(plan.steps, `${p}.steps`);

  if (target.language === "wgsl") {
    if (plan.subgroup_size !== undefined) int(plan.subgroup_size, `${p}.subgroup_size`, 1, 128);
    if (plan.f16 !== undefined && plan.f16 !== true) fail(`${p}.f16 is ${str(plan.f16)}; expected true or absent`);
    const buffers = list(plan.buffers, `${p}.buffers`).map((b, k) => int(b, `${p}.buffers[${k}]`, 1));
    /** @type {Map<number, number>} buffer -> bytes of the tensor last written to it: each read must bind those */
    const written = new Map();
    /** `o.bytes` of planned buffer `o.buffer`, within it. @type {(o: any, path: string) => number} */
    const span = (o, path) => int(o?.bytes, `${path}.bytes`, 1, buffers[int(o?.buffer, `${path}.buffer`, 0, buffers.length - 1)]);
    /** @type {(o: any, path: string, n: number) => void} */
    const tensorBytes = (o, path, n) => {
      if (span(o, path) !== 4 * n) fail(`${path}.bytes is ${o.bytes}; "${o.name}" has ${n} values (${4 * n} bytes)`);
    };
    list(plan.inputs, `${p}.inputs`).forEach((i, k) => {
      tensorBytes(i, `${p}.inputs[${k}]`, tensor(ins, i, `${p}.inputs[${k}]`));
      written.set(i.buffer, i.bytes);
    });
    /** A dispatch's shader, workgroup counts and uniforms; returns how many bindings after 0 its shader declares. @type {(s: any, sp: string) => number} */
    const dispatch = (s, sp) => {
      shader(s?.shader, `${sp}.shader`);
      // an f16 shader only in a plan that says so: it runs only where the adapter has shader-f16
      if (!plan.f16 && /^enable f16;/m.test(shaders[s.shader])) fail(`${sp}.shader ${s.shader} computes in f16; ${p} has no "f16": true`);
      const groups = list(s.workgroups, `${sp}.workgroups`);
      if (groups.length !== 3) fail(`${sp}.workgroups is ${str(groups)}; expected 3 counts`);
      groups.forEach((n, j) => int(n, `${sp}.workgroups[${j}]`, 1, 65535));
      list(s.uniforms ?? [], `${sp}.uniforms`).forEach((u, j) => int(u, `${sp}.uniforms[${j}]`));
      // binding 0 is the uniforms: the shader declares bindings 0..bindings.length
      return Math.max(0, ...[...shaders[s.shader].matchAll(/@binding\s*\(\s*(\d+)/g)].map((m) => +m[1]));
    };
    const kernels = list(plan.kernels ?? [], `${p}.kernels`).map((k, i) => {
      const kp = `${p}.kernels[${i}]`;
      for (const f of ["op", "shape", "template"]) if (typeof k?.[f] !== "string") fail(`${kp}.${f} is ${str(k?.[f])}; expected a string`);
      return list(k.candidates, `${kp}.candidates`).map((c, j) => {
        const cp = `${kp}.candidates[${j}]`;
        if (typeof c?.params !== "object" || typeof c.from !== "string") fail(`${cp} needs "params" (an object) and "from" (a string)`);
        if (c.subgroup_size !== undefined) int(c.subgroup_size, `${cp}.subgroup_size`, 1, 128);
        return dispatch(c, cp);
      });
    });
    steps.forEach((s, k) => {
      const sp = `${p}.steps[${k}]`;
      const declared = dispatch(s, sp);
      const bindings = list(s.bindings, `${sp}.bindings`);
      if (bindings.length !== declared) fail(`${sp}.bindings has ${bindings.length} entries; shader ${s.shader} declares ${declared}`);
      if (s.kernel !== undefined) {
        kernels[int(s.kernel, `${sp}.kernel`, 0, kernels.length - 1)].forEach((n, j) => {
          if (n !== declared) fail(`${p}.kernels[${s.kernel}].candidates[${j}] declares ${n} bindings; ${sp} has ${declared}`);
        });
      }
      bindings.forEach((b, j) => {
        const bp = `${sp}.bindings[${j}]`;
        const out = j === bindings.length - 1;
        if (b?.constant !== undefined) {
          if (out) fail(`${bp} is the step's output, not a constant`);
          return constant(b.constant, `${bp}.constant`);
        }
        const bytes = span(b, bp);
        const has = written.get(b.buffer);
        if (out) written.set(b.buffer, bytes);
        else if (has === undefined) fail(`${bp} reads buffer ${b.buffer} before anything is written to it`);
        else if (has !== bytes) fail(`${bp}.bytes is ${bytes}; buffer ${b.buffer} holds a tensor of ${has} bytes`);
      });
    });
    outputs((o, op, n) => {
      tensorBytes(o, op, n);
      if (written.get(o.buffer) !== o.bytes) fail(`${op}.buffer is ${o.buffer}, which does not hold a tensor of ${o.bytes} bytes`);
    });
  } else if (target.language === "glsl") {
    shader(plan.vertex, `${p}.vertex`);
    const textures = list(plan.textures, `${p}.textures`).map((t, k) => {
      const tp = `${p}.textures[${k}]`;
      int(t?.width, `${tp}.width`, 1, 16384);
      int(t.height, `${tp}.height`, 1, 16384);
      if (t.pack !== 1 && t.pack !== 4) fail(`${tp}.pack is ${str(t.pack)}; expected 1 or 4`);
      if (t.dtype !== undefined && !QUANT[t.dtype] && t.dtype !== "float16") fail(`${tp}.dtype is ${str(t.dtype)}; expected "int8", "uint8", "float16" or none (float)`);
      return t;
    });
    /** @type {(i: unknown, path: string) => any} */
    const texture = (i, path) => textures[int(i, path, 0, textures.length - 1)];
    /** @type {Set<number>} textures holding data: uploads, then what the steps draw */
    const ready = new Set();
    /** Upload `o` of `n` values (of `dtype`) to `o.texture` by `o.layout`. @type {(o: any, path: string, n: number, dtype?: string) => void} */
    const upload = (o, path, n, dtype) => {
      const t = texture(o?.texture, `${path}.texture`);
      if (t.dtype !== dtype) fail(`${path} uploads ${dtype ?? "float"} values to texture ${o.texture} of ${t.dtype ?? "float"} texels`);
      const lp = `${path}.layout`;
      const l = o.layout;
      const rows = int(l?.rows, `${lp}.rows`, 1);
      const cols = int(l.cols, `${lp}.cols`, 1);
      if (l.pack !== t.pack) fail(`${lp}.pack is ${str(l.pack)}; texture ${o.texture} has pack ${t.pack}`);
      const texels = int(l.width, `${lp}.width`, 1, t.width) * int(l.height, `${lp}.height`, 1, t.height);
      if (rows * Math.ceil(cols / l.pack) > texels) fail(`${lp}: ${rows} rows of ${cols} values do not fit ${l.width}x${l.height} texels`);
      if (rows * cols !== n) fail(`${lp} holds ${rows}x${cols} values; the tensor has ${n}`);
      ready.add(o.texture);
    };
    list(plan.constants ?? [], `${p}.constants`).forEach((c, k) => {
      const n = constant(c?.constant, `${p}.constants[${k}].constant`);
      const e = constants[c.constant];
      // int4 weights widen to int8 texels (one value a channel)
      upload(c, `${p}.constants[${k}]`, n, e.scale === undefined ? (e.dtype === "int4" ? "int8" : e.dtype) : undefined);
    });
    list(plan.inputs, `${p}.inputs`).forEach((i, k) => upload(i, `${p}.inputs[${k}]`, tensor(ins, i, `${p}.inputs[${k}]`)));
    steps.forEach((s, k) => {
      const sp = `${p}.steps[${k}]`;
      shader(s?.shader, `${sp}.shader`);
      const [width, height] = ["width", "height"].map((d) => int(s[d], `${sp}.${d}`, 1, 16384));
      const inputs = list(s.inputs, `${sp}.inputs`);
      if (inputs.length > 16) fail(`${sp}.inputs has ${inputs.length} entries; WebGL2 promises 16 texture units`);
      inputs.forEach((i, j) => {
        const ip = `${sp}.inputs[${j}]`;
        texture(i?.texture, `${ip}.texture`);
        if (!ready.has(i.texture)) fail(`${ip}.texture is ${i.texture}, which holds nothing yet`);
        if (typeof i.sampler !== "string" || !/^[A-Za-z_]\w*$/.test(i.sampler)) fail(`${ip}.sampler is ${str(i.sampler)}; expected a GLSL identifier`);
      });
      const targets = list(s.targets, `${sp}.targets`);
      if (!targets.length || targets.length > 4) fail(`${sp}.targets has ${targets.length} entries; expected 1 to 4`);
      targets.forEach((ti, j) => {
        const t = texture(ti, `${sp}.targets[${j}]`);
        if (t.width !== width || t.height !== height) fail(`${sp}.targets[${j}] is texture ${ti}, of ${t.width}x${t.height} texels; the step draws ${width}x${height}`);
        // float16 targets: a half-float kernel's output (EXT_color_buffer_float makes RGBA16F/R16F renderable)
        if (t.dtype && t.dtype !== "float16") fail(`${sp}.targets[${j}] is texture ${ti}, of ${t.dtype} texels; steps draw floats`);
        if (inputs.some((i) => i.texture === ti)) fail(`${sp}.targets[${j}] is texture ${ti}, which the step also reads`);
      });
      targets.forEach((ti) => ready.add(ti));
    });
    outputs((o, op, n) => {
      const t = texture(o.texture, `${op}.texture`);
      if (!ready.has(o.texture)) fail(`${op}.texture is ${o.texture}, which holds nothing`);
      if (o.size !== n) fail(`${op}.size is ${str(o.size)}; "${o.name}" has ${n} values`);
      if (n > t.width * t.height * t.pack) fail(`${op}.texture is ${o.texture}, of ${t.width * t.height * t.pack} values; "${o.name}" has ${n}`);
    });
  } else {
    fail(`${at}.language is ${str(target.language)}; expected "wgsl" or "glsl"`);
  }
}

/**
 * Check a quantized constant's fields (FORMAT.md, "Quantized constants"), naming the field; return its bytes per
 * value (1; int4: 1/2; float16: 2).
 * @param {any} c
 * @param {string} cp its path
 * @param {(j: unknown, path: string) => number} scales checks that constant `j` may hold scales; its count
 */
function checkQuantized(c, cp, scales) {
  if (c.dtype === "int4") {
    // int4 values are always a kernel's own (scales per group ride in a float constant): packed bytes only
    for (const k of ["scale", "zero_point", "axis", "shape"]) if (c[k] !== undefined) fail(`${cp} is int4 (a kernel's integers), which has no ${k}`);
    return 0.5;
  }
  if (c.dtype === "float16" && c.scale === undefined) {
    // halves a kernel reads itself (weights.dtype does not apply); with a scale, halves widened at load
    for (const k of ["zero_point", "axis", "shape"]) if (c[k] !== undefined) fail(`${cp} is float16 (a kernel's halves), which has no ${k}`);
    return 2;
  }
  const range = c.dtype === "float16" ? [0, 0] : QUANT[c.dtype] ?? fail(`${cp}.dtype is ${str(c.dtype)}; expected "int8", "uint8", "int4" or "float16"`);
  if (c.scale === undefined) {
    // integers a kernel dequantizes itself: bytes only
    for (const k of ["zero_point", "axis", "shape"]) if (c[k] !== undefined) fail(`${cp} has no scale (a kernel's integers) and a ${k}`);
    return 1;
  }
  let n;
  if (isScaleRef(c.scale)) {
    // scales in weights.bin (an embedding table's, one a row): a float constant, zero points 0
    if (c.zero_point !== undefined) fail(`${cp} has its scales in a constant and a zero_point; its zero points are 0`);
    n = scales(c.scale.constant, `${cp}.scale.constant`);
  } else {
    const scale = list(c.scale, `${cp}.scale`);
    if (!scale.length) fail(`${cp}.scale is empty`);
    scale.forEach((s, k) => Number.isFinite(s) || fail(`${cp}.scale[${k}] is ${str(s)}; expected a finite number`));
    const zp = list(c.zero_point, `${cp}.zero_point`);
    if (zp.length !== scale.length) fail(`${cp}.zero_point has ${zp.length} entries; scale has ${scale.length}`);
    zp.forEach((z, k) => int(z, `${cp}.zero_point[${k}]`, range[0], range[1]));
    n = scale.length;
  }
  const bytes = c.dtype === "float16" ? 2 : 1;
  if (n === 1) {
    if (c.axis !== undefined || c.shape !== undefined) fail(`${cp} has one scale (per tensor) and an axis or shape`);
    return bytes;
  }
  const shape = list(c.shape, `${cp}.shape`).map((d, k) => int(d, `${cp}.shape[${k}]`, 1, 2 ** 53));
  if (numel(shape) !== c.count) fail(`${cp}.shape is ${show(shape)}, of ${numel(shape)} values; count is ${c.count}`);
  const axis = int(c.axis, `${cp}.axis`, 0, shape.length - 1);
  if (shape[axis] !== n) fail(`${cp}.shape[${axis}] is ${shape[axis]}; scale has ${n} entries`);
  return bytes;
}

/**
 * Whether a quantized constant's `scale` names a constant (`{constant: j}`) rather than listing its scales.
 * @param {unknown} scale
 * @returns {scale is { constant: number }}
 */
const isScaleRef = (scale) => typeof scale === "object" && scale !== null && !Array.isArray(scale);

/**
 * Parse and check manifest.json: format and version, integrity, top level, then every target's plan.
 * @param {string} text
 * @param {string} url
 * @returns {Promise<Manifest>}
 */
async function readManifest(text, url) {
  let m;
  try {
    m = JSON.parse(text);
  } catch (e) {
    fail(`${url} is not JSON: ${/** @type {Error} */ (e).message}`);
  }
  checkFormat(m, url);
  await checkIntegrity(text, url);
  checkManifest(m, url);
  for (const v of m.variants) for (const t of v.targets) validatePlan(m, t);
  return m;
}

// ---------------------------------------------------------------------------------------------------------------
// Target choice (FORMAT.md, "Targets")

/**
 * The adapter's class from its lower-cased description (FORMAT.md): software renderers first, then discrete
 * vendors before integrated ones, since a Mac's ANGLE string names both "apple" and its "amd radeon" GPU.
 * @param {string} desc
 * @returns {AdapterClass}
 */
function adapterClass(desc) {
  if (/swiftshader|llvmpipe|lavapipe|warp|basic render/.test(desc)) return "cpu";
  if (/nvidia|amd/.test(desc)) return "dgpu";
  if (/intel|apple|arm|qualcomm|imgtec|broadcom/.test(desc)) return "igpu";
  return null;
}

/**
 * Whether a plan computes in f16 (WebGPU) or draws half-float textures (WebGL2).
 * @param {any} plan
 * @returns {boolean}
 */
function halves(plan) {
  return !!plan?.f16 || (plan?.steps ?? []).some((/** @type {any} */ s) => (s.targets ?? []).some((/** @type {number} */ t) => plan.textures[t]?.dtype === "float16"));
}

/**
 * Pick the target of `language` for the adapter: exact device, else same class, else the default. Plans whose
 * kernels assume subgroups of `subgroup_size` lanes are skipped unless the adapter's size (`sg`) is that; f16
 * plans unless `f16` allows them ("only": nothing else is taken).
 * @param {Target[]} targets
 * @param {string} language
 * @param {string} desc the adapter's lower-cased description
 * @param {AdapterClass} cls
 * @param {number} sg the adapter's fixed subgroup size, or 0
 * @param {boolean | "only"} f16 whether f16 plans may run here
 * @returns {[Target, "exact" | "class" | "default"]}
 */
function pickTarget(targets, language, desc, cls, sg, f16) {
  const mine = targets.filter((t) => t.language === language && (!t.plan?.subgroup_size || t.plan.subgroup_size === sg) && (t.plan?.f16 ? f16 : f16 !== "only"));
  /** @param {unknown} word */
  const has = (word) => desc.includes(String(word).toLowerCase());
  const exact = mine.find((t) => t.device && has(t.device.vendor) && (t.device.keywords ?? []).every(has));
  if (exact) return [exact, "exact"];
  const byClass = cls && mine.find((t) => t.device?.class === cls);
  if (byClass) return [byClass, "class"];
  const fallback = mine.find((t) => !t.device);
  if (fallback) return [fallback, "default"];
  return fail(`the bundle has no ${f16 === "only" ? "f16 plan for this adapter among its" : "default"} ${language} target${f16 === "only" ? "s" : ""} (targets: ${targets.map((t) => t.id).join(", ")})`);
}

/**
 * The index of the variant whose inputs `given` describes (FORMAT.md, "Variants"): an input's dims where given,
 * else its element count, must be the variant's; an input not given fits any. Fails, naming every variant's
 * input shapes, when none fits, or when several do (counts alone cannot tell [1, 64] from [2, 32]).
 * @param {VariantInfo[]} variants
 * @param {Record<string, { count?: number, dims?: readonly number[] }>} given
 * @param {string} what the caller, for messages
 */
function pickVariant(variants, given, what) {
  /** @type {(t: TensorInfo) => boolean} */
  const fits = ({ name, shape }) => {
    const g = given[name];
    return !g || (g.dims ? show([...g.dims]) === show(shape) : g.count === numel(shape));
  };
  const found = variants.flatMap((v, k) => (v.inputs.every(fits) ? [k] : []));
  if (found.length === 1) return found[0];
  /** @type {(ks: number[]) => string} */
  const sizes = (ks) => ks.map((k) => variants[k].inputs.map((t) => `${t.name} ${show(t.shape)}`).join(", ")).join(" | ");
  const got = Object.entries(given).map(([n, g]) => `"${n}" ${g.dims ? show([...g.dims]) : `of ${g.count} values`}`).join(", ");
  return fail(found.length
    ? `${what}: ${got} fit ${found.length} variants (${sizes(found)}); give the dims ({data, dims} inputs, or the shapes option)`
    : `${what}: no variant takes ${got}; the bundle has ${sizes(variants.map((_, k) => k))}`);
}

/**
 * First step that uses shader `index`, to name it in compile errors.
 * @param {{ steps: { shader: number, node: string }[] }} plan
 * @param {number} index
 */
const nodeOf = (plan, index) => plan.steps.find((s) => s.shader === index)?.node ?? "?";

// ---------------------------------------------------------------------------------------------------------------
// Readback scheduling (WebGPU)
//
// Chromium's GPU process completes a mapAsync when it next checks for finished work: at once if the request
// arrives after the GPU is done, otherwise on a poll timer about 2 ms later (a 0.3 ms MLP on SwiftShader took
// 2.9 ms a run). Any later call that reaches the GPU process makes it check, so after a run under 4 ms the next
// one sends onSubmittedWorkDone() "nudges" after its map, 1, 2, 3 and 4 ms later by timers (MLP 1.5 ms a run;
// longer runs gain nothing, and nudges cost MobileNetV2-style 0.4-0.8 ms). Timers wait 1 ms at least, and a tiny
// model's GPU work is done in ~0.3 ms, so once some run took under 1.5 ms, message-channel hops (a busy wait)
// nudge at 0.4, 0.7, 1.0 and 1.3 ms first (MLP 0.7-1.4 ms). The hops take CPU from a software GPU: with one
// core busy elsewhere the MLP took 3.0 ms a run with them, 1.5 ms without, so 8 hop runs in a row over 2 ms turn
// them off for the next 256 runs.

/**
 * The readback pacer of one device: wait(pending, started) resolves to what `pending` (the run's mapAsync calls)
 * resolves to, nudging the GPU process meanwhile as described above, and times the run from `started` (its
 * performance.now() when it began) to decide how the next run is nudged.
 * @param {GPUDevice} device
 */
function readbackPacer(device) {
  let last = Infinity;
  let best = Infinity;
  let slow = 0;
  let pause = 0;
  const ping = () => device.queue.onSubmittedWorkDone().catch(() => {});
  /**
   * @param {Promise<unknown>} pending
   * @param {number} started
   * @param {boolean} hop
   */
  const nudge = async (pending, started, hop) => {
    let done = false;
    pending.then(() => (done = true));
    if (hop) {
      const { port1, port2 } = new MessageChannel();
      /** @type {(value?: unknown) => void} */
      let wake;
      port1.onmessage = () => wake();
      for (const at of [0.4, 0.7, 1.0, 1.3]) {
        while (!done && performance.now() - started < at) {
          await new Promise((r) => {
            wake = r;
            port2.postMessage(0);
          });
        }
        if (done) break;
        ping();
      }
      port1.close();
    }
    for (let i = 0; i < 4 && !done; i++) {
      await new Promise((r) => setTimeout(r, 1));
      if (!done) ping();
    }
  };
  /**
   * @template T
   * @param {Promise<T>} pending
   * @param {number} started
   * @returns {Promise<T>}
   */
  const wait = async (pending, started) => {
    const hop = last < 4 && best < 1.5 && !pause;
    if (pause) pause--;
    if (last < 4) nudge(pending, started, hop);
    const value = await pending;
    last = performance.now() - started;
    best = Math.min(best, last);
    if (hop) slow = last > 2 ? slow + 1 : 0;
    if (slow === 8) [slow, pause] = [0, 256];
    return value;
  };
  return wait;
}

// ---------------------------------------------------------------------------------------------------------------
// WebGPU backend

/**
 * Vendor names of PCI vendor ids: wgpu-based WebGPU (Deno) gives `vendor` as the id, Chromium as the name.
 * @type {Record<string, string>}
 */
const PCI_VENDORS = { 4318: "nvidia", 4098: "amd", 4130: "amd", 32902: "intel", 4203: "apple", 20803: "qualcomm", 5045: "arm", 4112: "imgtec", 6880: "google", 65541: "mesa" };

/**
 * The description string FORMAT.md matches targets against: GPUAdapterInfo fields, lower-cased.
 * @param {GPUAdapter & { requestAdapterInfo?: () => Promise<GPUAdapterInfo> }} adapter
 */
async function gpuDescription(adapter) {
  // adapter.info is current; requestAdapterInfo() is what older Chromium (< 127) offers instead
  const info = adapter.info ?? (await adapter.requestAdapterInfo?.()) ?? {};
  const named = PCI_VENDORS[String(info.vendor)];
  return [info.vendor, named, info.architecture, info.device, info.description].filter(Boolean).join(" ").toLowerCase();
}

/**
 * The adapter's fixed subgroup size: the "subgroups" feature with subgroupMinSize == subgroupMaxSize, else 0.
 * @param {GPUAdapter} adapter
 */
function subgroupSize(adapter) {
  const { subgroupMinSize: min, subgroupMaxSize: max } = adapter.info ?? {};
  return adapter.features.has("subgroups") && min === max ? (min ?? 0) : 0;
}

/** @type {Backend} */
const WEBGPU = {
  name: "webgpu",
  language: "wgsl",
  async find() {
    if (!globalThis.navigator?.gpu) return "no WebGPU (navigator.gpu is missing)";
    const adapter = await navigator.gpu.requestAdapter({ powerPreference: "high-performance" }).catch(() => null);
    if (!adapter) return "no WebGPU adapter (navigator.gpu.requestAdapter() returned null)";
    return {
      desc: await gpuDescription(adapter),
      subgroupSize: subgroupSize(adapter),
      f16: adapter.features.has("shader-f16"),
      fallback: Boolean(/** @type {{ isFallbackAdapter?: boolean }} */ (adapter.info ?? {}).isFallbackAdapter),
      gpu: adapter,
      open: (manifest, subgroups, timing, f16) => openWebGPU(adapter, manifest, subgroups, timing, f16),
      release() {},
    };
  },
};

/**
 * Make a device of `adapter`; build() then makes a plan's objects on it. Pipelines, constant buffers and uniform
 * blocks are shared by the plans built on the device (variants bind the same weights).
 * @param {GPUAdapter} adapter
 * @param {Manifest} manifest
 * @param {boolean} subgroups whether a plan to run uses subgroup operations
 * @param {boolean} [timing] whether kernel selection may run: then "timestamp-query" where the adapter has it
 * @param {boolean} [f16] whether a plan to run computes in f16
 * @returns {Promise<Device>}
 */
async function openWebGPU(adapter, manifest, subgroups, timing, f16) {
  /** @type {GPUFeatureName[]} */
  const features = [];
  // selection may time candidates that use subgroups (of the adapter's fixed size) and reads timestamps
  if (subgroups || (timing && subgroupSize(adapter))) features.push("subgroups");
  if (timing && adapter.features.has("timestamp-query")) features.push("timestamp-query");
  if (f16) features.push("shader-f16");
  const device = await adapter.requestDevice({ requiredFeatures: features });
  /** @type {GPUDeviceLostInfo | null} */
  let lost = null;
  device.lost.then((info) => (lost = info));
  /** @type {GPUBuffer[]} */
  const owned = [];
  const dispose = () => {
    for (const b of owned) b.destroy();
    owned.length = 0;
    device.destroy();
  };
  /**
   * @param {number} size
   * @param {number} usage
   * @param {Float32Array | Uint32Array | Int8Array | Uint8Array | Uint16Array} [data] initial contents, written through a view of data's own type
   */
  const buffer = (size, usage, data) => {
    const b = device.createBuffer({ size: align4(size), usage, mappedAtCreation: !!data });
    owned.push(b);
    if (data) {
      new (/** @type {new (b: ArrayBuffer) => Float32Array | Uint32Array | Int8Array | Uint8Array | Uint16Array} */ (data.constructor))(b.getMappedRange()).set(data);
      b.unmap();
    }
    return b;
  };
  /** @type {Map<number, Promise<GPUComputePipeline>>} shader index -> its pipeline, compiled once */
  const pipelines = new Map();
  /**
   * @param {number} index
   * @param {WgslPlan} plan the first plan that uses it, to name its node in errors
   */
  const pipeline = (index, plan) => {
    if (!pipelines.has(index)) {
      device.pushErrorScope("validation");
      const module = device.createShaderModule({ code: manifest.shaders[index], label: `shader ${index}` });
      const scope = device.popErrorScope();
      const compiled = device.createComputePipelineAsync({ label: `shader ${index}`, layout: "auto", compute: { module, entryPoint: "main" } }).catch(async (e) => {
        // the compilation messages carry line numbers; the pipeline error alone often does not
        const info = await module.getCompilationInfo?.();
        const log = (info?.messages ?? []).map((m) => `${m.type} at line ${m.lineNum}:${m.linePos}: ${m.message}`);
        return fail(`WGSL shader ${index} (node ${nodeOf(plan, index)}) failed to compile: ${log.join("\n") || (await scope)?.message || /** @type {Error} */ (e).message}`);
      });
      pipelines.set(index, compiled);
    }
    return /** @type {Promise<GPUComputePipeline>} */ (pipelines.get(index));
  };
  /** @type {Map<number, GPUBuffer>} */
  const constantBuffers = new Map();
  /**
   * @param {number} i
   * @param {(i: number) => Float32Array | Int8Array | Uint8Array | Uint16Array} constant
   */
  const constantBuffer = (i, constant) => {
    if (!constantBuffers.has(i)) constantBuffers.set(i, buffer(constant(i).byteLength, STORAGE, constant(i)));
    return /** @type {GPUBuffer} */ (constantBuffers.get(i));
  };
  // uniform blocks: u32 words padded to a multiple of 4 (16 bytes at least); identical blocks share a buffer
  /** @type {Map<string, GPUBuffer>} */
  const uniforms = new Map();
  /** @param {number[]} words */
  const uniformBuffer = (words = []) => {
    const key = words.join();
    if (!uniforms.has(key)) {
      const data = new Uint32Array(Math.max(4, Math.ceil(words.length / 4) * 4));
      data.set(words);
      uniforms.set(key, buffer(data.byteLength, UNIFORM, data));
    }
    return /** @type {GPUBuffer} */ (uniforms.get(key));
  };

  /** @type {Device["build"]} */
  const build = async (p, weights, progress, checkAbort) => {
    const plan = /** @type {WgslPlan} */ (p);
    // every pipeline compiles at once (and while weights still download); a shader used by several steps once
    const shaders = [...new Set(plan.steps.map((s) => s.shader))];
    let compiled = 0;
    progress("compile", 0, shaders.length);
    const compiling = Promise.all(
      shaders.map(async (index) => {
        const made = await pipeline(index, plan);
        progress("compile", ++compiled, shaders.length);
        return /** @type {const} */ ([index, made]);
      }),
    );
    compiling.catch(() => {}); // awaited below; this only stops an early failure being reported as unhandled
    const constant = constantReader(manifest, await weights);
    checkAbort();

    const buffers = plan.buffers.map((size) => buffer(size, STORAGE | COPY_SRC | COPY_DST));
    const ready = new Map(await compiling);
    checkAbort();
    /** @type {Promise<unknown>[] | null} bind group checks while building (selection checks its own) */
    let scopes = [];
    /** @type {GpuRun["group"]} */
    const group = (pipeline, s, uniforms = s.uniforms) => {
      /** @type {GPUBindGroupEntry[]} */
      const entries = [{ binding: 0, resource: { buffer: uniformBuffer(uniforms) } }];
      s.bindings.forEach((b, k) => {
        const resource =
          b.constant !== undefined
            ? { buffer: constantBuffer(b.constant, constant) }
            : { buffer: buffers[/** @type {number} */ (b.buffer)], offset: 0, size: b.bytes };
        entries.push({ binding: k + 1, resource });
      });
      if (scopes) device.pushErrorScope("validation");
      const made = device.createBindGroup({ label: s.node, layout: pipeline.getBindGroupLayout(0), entries });
      scopes?.push(device.popErrorScope().then((e) => e && fail(`node ${s.node}: bind group rejected: ${e.message}`)));
      return made;
    };
    /** @type {GpuRun["steps"]} */
    const steps = plan.steps.map((s) => {
      const pipeline = /** @type {GPUComputePipeline} */ (ready.get(s.shader));
      const [x, y = 1, z = 1] = s.workgroups;
      return [pipeline, group(pipeline, s), x, y, z];
    });
    await Promise.all(scopes);
    scopes = null;

    const inputs = plan.inputs.map((i) => /** @type {const} */ ([i.name, buffers[i.buffer]]));
    // readback buffers are made once and reused by every run
    const outputs = plan.outputs.map((o) =>
      o.constant !== undefined
        ? { name: o.name, value: /** @type {Float32Array} */ (constant(o.constant)).slice() }
        : { name: o.name, src: buffers[o.buffer], bytes: o.bytes, staging: buffer(o.bytes, MAP_READ | COPY_DST) },
    );
    const read = /** @type {{ name: string, src: GPUBuffer, bytes: number, staging: GPUBuffer }[]} */ (outputs.filter((o) => o.staging));

    // Every run encodes the same commands, so validating the first one suffices; the error scope's round trip
    // to the GPU process cost ~0.5 ms of a ~3 ms run in Chromium.
    let validated = false;
    // readback: see readbackPacer()
    const pace = readbackPacer(device);
    /** @type {Runner} */
    const run = async (feeds) => {
      if (lost) fail(`the WebGPU device was lost: ${lost.message || lost.reason}`);
      const started = performance.now();
      for (const [name, buf] of inputs) device.queue.writeBuffer(buf, 0, /** @type {Float32Array<ArrayBuffer>} */ (feeds[name]));
      if (!validated) device.pushErrorScope("validation");
      const encoder = device.createCommandEncoder();
      const pass = encoder.beginComputePass();
      for (const [pipeline, group, x, y, z] of steps) {
        pass.setPipeline(pipeline);
        pass.setBindGroup(0, group);
        pass.dispatchWorkgroups(x, y, z);
      }
      pass.end();
      for (const o of read) encoder.copyBufferToBuffer(o.src, 0, o.staging, 0, o.bytes);
      device.queue.submit([encoder.finish()]);
      const scoped = validated ? Promise.resolve(null) : device.popErrorScope();
      const mapped = Promise.allSettled([scoped, ...read.map((o) => o.staging.mapAsync(1))]);
      const [scope, ...maps] = await pace(mapped, started);
      /** @type {Record<string, Float32Array>} */
      const result = {};
      read.forEach((o, k) => {
        if (maps[k].status === "fulfilled") {
          result[o.name] = new Float32Array(o.staging.getMappedRange(0, o.bytes).slice(0));
          o.staging.unmap();
        }
      });
      // a rejected scope has no value: only a GPUError fails the run here
      const error = /** @type {PromiseFulfilledResult<GPUError | null>} */ (scope).value;
      if (error) fail(`run failed: ${error.message}`);
      validated = true;
      const bad = maps.find((m) => m.status === "rejected");
      if (bad) fail(`reading outputs failed: ${message(bad.reason)}`);
      for (const o of outputs) if (o.value) result[o.name] = o.value.slice();
      return result;
    };
    const timestamps = device.features.has("timestamp-query");
    run.gpu = { device, plan, shaders: manifest.shaders, buffers, steps, group, timestamps };
    return run;
  };
  return { build, dispose };
}

// ---------------------------------------------------------------------------------------------------------------
// WebGL2 backend (optional, see KF_WEBGL2)

/** @type {Backend | false} */
const WEBGL2 = KF_WEBGL2 && {
  name: "webgl2",
  language: "glsl",
  /** A WebGL2 context on a 1x1 canvas and its description string, or why there is none. */
  async find() {
    /** @type {HTMLCanvasElement | OffscreenCanvas | undefined} */
    let canvas = globalThis.document?.createElement("canvas");
    if (!canvas && typeof OffscreenCanvas !== "undefined") canvas = new OffscreenCanvas(1, 1);
    const none = 'no WebGL2 (getContext("webgl2") returned null)';
    if (!canvas) return none;
    canvas.width = canvas.height = 1; // the default framebuffer is never drawn to
    const options = { antialias: false, depth: false, stencil: false, alpha: false, powerPreference: "high-performance" };
    const gl = /** @type {WebGL2RenderingContext | null} */ (canvas.getContext("webgl2", options));
    if (!gl) return none;
    const dbg = gl.getExtension("WEBGL_debug_renderer_info");
    const strings = dbg ? [dbg.UNMASKED_RENDERER_WEBGL, dbg.UNMASKED_VENDOR_WEBGL] : [gl.RENDERER, gl.VENDOR];
    return {
      desc: strings.map((p) => gl.getParameter(p)).join(" ").toLowerCase(),
      subgroupSize: 0,
      f16: false,
      open: (manifest) => openWebGL2(gl, manifest),
      release: () => gl.getExtension("WEBGL_lose_context")?.loseContext(),
    };
  },
};

/**
 * Set `gl` up to run plans; build() then makes a plan's objects on it. Compiled shaders and linked programs are
 * shared by the plans built on it; each plan has its own textures (its constants' layouts are its own).
 * @param {WebGL2RenderingContext} gl
 * @param {Manifest} manifest
 * @returns {Promise<Device>}
 */
async function openWebGL2(gl, manifest) {
  /** @type {{ textures: WebGLTexture[], framebuffers: WebGLFramebuffer[], programs: WebGLProgram[], shaders: WebGLShader[] }} */
  const owned = { textures: [], framebuffers: [], programs: [], shaders: [] };
  const vao = gl.createVertexArray();
  const dispose = () => {
    owned.textures.forEach((t) => gl.deleteTexture(t));
    owned.framebuffers.forEach((f) => gl.deleteFramebuffer(f));
    owned.programs.forEach((p) => gl.deleteProgram(p));
    owned.shaders.forEach((s) => gl.deleteShader(s));
    gl.deleteVertexArray(vao);
    for (const k in owned) owned[/** @type {keyof typeof owned} */ (k)].length = 0;
    gl.getExtension("WEBGL_lose_context")?.loseContext();
  };
  if (!gl.getExtension("EXT_color_buffer_float")) {
    dispose();
    fail("this WebGL2 lacks EXT_color_buffer_float, so it cannot render to float textures");
  }
  const { TEXTURE_2D, FRAMEBUFFER, COLOR_ATTACHMENT0: ATTACH0, FLOAT } = gl;
  for (const cap of [gl.BLEND, gl.DEPTH_TEST, gl.SCISSOR_TEST, gl.CULL_FACE, gl.DITHER]) gl.disable(cap);
  gl.pixelStorei(gl.UNPACK_ALIGNMENT, 1);
  gl.pixelStorei(gl.PACK_ALIGNMENT, 1);
  /** @type {Map<string, any>} compiled shaders ("v3", "f7") and linked programs ("3,7"), made once */
  const made = new Map();
  /**
   * @param {number} type
   * @param {number} index
   * @returns {WebGLShader}
   */
  const compile = (type, index) => {
    const key = `${type === gl.VERTEX_SHADER ? "v" : "f"}${index}`;
    if (!made.has(key)) {
      const s = /** @type {WebGLShader} */ (gl.createShader(type)); // null only on a lost context
      owned.shaders.push(s);
      gl.shaderSource(s, manifest.shaders[index]);
      gl.compileShader(s);
      made.set(key, s);
    }
    return made.get(key);
  };

  /** @type {Device["build"]} */
  const build = async (pl, weights, progress, checkAbort) => {
    const plan = /** @type {GlslPlan} */ (pl);
    // compile everything before checking anything, so drivers with KHR_parallel_shader_compile overlap them
    const vertex = compile(gl.VERTEX_SHADER, plan.vertex);
    const indices = [...new Set(plan.steps.map((s) => s.shader))];
    /** @type {Map<number, { p: WebGLProgram, fragment: WebGLShader }>} */
    const programs = new Map(
      indices.map((index) => {
        const key = `${plan.vertex},${index}`;
        if (!made.has(key)) {
          const fragment = compile(gl.FRAGMENT_SHADER, index);
          const p = gl.createProgram();
          owned.programs.push(p);
          gl.attachShader(p, vertex);
          gl.attachShader(p, fragment);
          gl.linkProgram(p);
          made.set(key, { p, fragment });
        }
        return [index, made.get(key)];
      }),
    );
    const parallel = gl.getExtension("KHR_parallel_shader_compile");
    const pending = () => [...programs.values()].filter(({ p }) => !gl.getProgramParameter(p, /** @type {KHR_parallel_shader_compile} */ (parallel).COMPLETION_STATUS_KHR));
    progress("compile", 0, indices.length);
    // without the extension the first status query below simply blocks until the driver is done
    while (parallel && pending().length) {
      progress("compile", indices.length - pending().length, indices.length);
      await new Promise((r) => setTimeout(r, 5));
    }
    if (!gl.getShaderParameter(vertex, gl.COMPILE_STATUS)) {
      fail(`GLSL vertex shader ${plan.vertex} failed to compile: ${gl.getShaderInfoLog(vertex)?.trim()}`);
    }
    for (const [index, { p, fragment }] of programs) {
      if (gl.getProgramParameter(p, gl.LINK_STATUS)) continue;
      const ok = gl.getShaderParameter(fragment, gl.COMPILE_STATUS);
      const log = (ok ? gl.getProgramInfoLog(p) : gl.getShaderInfoLog(fragment))?.trim();
      fail(`GLSL shader ${index} (node ${nodeOf(plan, index)}) failed to ${ok ? "link" : "compile"}: ${log}`);
    }
    progress("compile", indices.length, indices.length);
    const constant = constantReader(manifest, await weights);
    checkAbort();

    const textures = plan.textures.map(({ width, height, pack, dtype }) => {
      const t = gl.createTexture();
      owned.textures.push(t);
      gl.bindTexture(TEXTURE_2D, t);
      // float texels, the int8/uint8 ones of weights a kernel dequantizes (RGBA8I/R8I, RGBA8UI/R8UI), or halves
      // (RGBA16F/R16F, sampled as floats): float16 weights, or what a half-float kernel draws
      const [rgba, red, type, Staging] = !dtype
        ? [gl.RGBA32F, gl.R32F, FLOAT, Float32Array]
        : dtype === "float16"
          ? [gl.RGBA16F, gl.R16F, gl.HALF_FLOAT, Uint16Array]
          : dtype === "int8"
            ? [gl.RGBA8I, gl.R8I, gl.BYTE, Int8Array]
            : [gl.RGBA8UI, gl.R8UI, gl.UNSIGNED_BYTE, Uint8Array];
      gl.texStorage2D(TEXTURE_2D, 1, pack === 4 ? rgba : red, width, height);
      for (const p of [gl.TEXTURE_MIN_FILTER, gl.TEXTURE_MAG_FILTER]) gl.texParameteri(TEXTURE_2D, p, gl.NEAREST);
      for (const p of [gl.TEXTURE_WRAP_S, gl.TEXTURE_WRAP_T]) gl.texParameteri(TEXTURE_2D, p, gl.CLAMP_TO_EDGE);
      const format = dtype && dtype !== "float16" ? (pack === 4 ? gl.RGBA_INTEGER : gl.RED_INTEGER) : pack === 4 ? gl.RGBA : gl.RED;
      return { t, width, height, pack, format, type, Staging };
    });

    // FORMAT.md's layout rule: row r of a [rows, cols] matrix starts at float r * ceil(cols / pack) * pack
    // of a zero-filled width * height * pack array; `staging` is that array, made once per texture
    // (validatePlan() has checked that each layout fits its texture and holds the tensor's values)
    /**
     * @param {(typeof textures)[number]} tex
     * @param {Layout} layout
     */
    const uploader = (tex, { rows, cols, pack, width, height }) => {
      const rowFloats = Math.ceil(cols / pack) * pack;
      const staging = new tex.Staging(width * height * pack);
      /** @param {Float32Array | Int8Array | Uint8Array | Uint16Array} values */
      return (values) => {
        if (rowFloats === cols) staging.set(values);
        else for (let r = 0; r < rows; r++) staging.set(values.subarray(r * cols, (r + 1) * cols), r * rowFloats);
        gl.bindTexture(TEXTURE_2D, tex.t);
        gl.texSubImage2D(TEXTURE_2D, 0, 0, 0, width, height, tex.format, tex.type, staging);
      };
    };
    for (const c of plan.constants ?? []) {
      const values = constant(c.constant);
      const { dtype, count } = manifest.constants[c.constant];
      uploader(textures[c.texture], c.layout)(dtype === "int4" ? int4Values(/** @type {Uint8Array} */ (values), count) : values);
    }
    const inputs = plan.inputs.map((i) => /** @type {const} */ ([i.name, uploader(textures[i.texture], i.layout)]));

    /**
     * @param {number[]} targets
     * @param {string} what
     */
    const framebuffer = (targets, what) => {
      const fb = gl.createFramebuffer();
      owned.framebuffers.push(fb);
      gl.bindFramebuffer(FRAMEBUFFER, fb);
      targets.forEach((ti, k) => gl.framebufferTexture2D(FRAMEBUFFER, ATTACH0 + k, TEXTURE_2D, textures[ti].t, 0));
      gl.drawBuffers(targets.map((_, k) => ATTACH0 + k)); // draw-buffer state belongs to the framebuffer
      const status = gl.checkFramebufferStatus(FRAMEBUFFER);
      if (status !== gl.FRAMEBUFFER_COMPLETE) fail(`${what}: framebuffer incomplete (status 0x${status.toString(16)})`);
      return fb;
    };
    const steps = plan.steps.map((s) => {
      const { p } = /** @type {{ p: WebGLProgram }} */ (programs.get(s.shader));
      const samplers = s.inputs.map(({ texture: ti, sampler }) => /** @type {const} */ ([textures[ti].t, gl.getUniformLocation(p, sampler)]));
      return { fb: framebuffer(s.targets, `node ${s.node}`), p, samplers, width: s.width, height: s.height };
    });
    const outputs = plan.outputs.map((o) => {
      if (o.constant !== undefined) return { name: o.name, value: /** @type {Float32Array} */ (constant(o.constant)).slice() };
      const tex = textures[o.texture];
      const pixels = new Float32Array(tex.width * tex.height * 4);
      return { name: o.name, fb: framebuffer([o.texture], `output ${o.name}`), tex, size: o.size, pixels };
    });
    gl.bindFramebuffer(FRAMEBUFFER, null);

    /** @type {Runner} */
    const run = async (feeds) => {
      if (gl.isContextLost()) fail("the WebGL2 context was lost");
      for (const [name, upload] of inputs) upload(feeds[name]);
      gl.bindVertexArray(vao);
      for (const s of steps) {
        gl.bindFramebuffer(FRAMEBUFFER, s.fb);
        gl.viewport(0, 0, s.width, s.height);
        gl.useProgram(s.p);
        s.samplers.forEach(([t, location], k) => {
          gl.activeTexture(gl.TEXTURE0 + k);
          gl.bindTexture(TEXTURE_2D, t);
          gl.uniform1i(location, k);
        });
        gl.drawArrays(gl.TRIANGLES, 0, 3);
      }
      /** @type {Record<string, Float32Array>} */
      const result = {};
      for (const o of outputs) {
        if (o.value) {
          result[o.name] = o.value.slice();
          continue;
        }
        gl.bindFramebuffer(FRAMEBUFFER, o.fb);
        // RGBA/FLOAT is the read format every float color buffer supports; an R32F texture reads back as
        // (r, 0, 0, 1) texels, of which only r is the tensor
        gl.readPixels(0, 0, o.tex.width, o.tex.height, gl.RGBA, FLOAT, o.pixels);
        const v = new Float32Array(o.size);
        if (o.tex.pack === 4) v.set(o.pixels.subarray(0, o.size));
        else for (let j = 0; j < o.size; j++) v[j] = o.pixels[4 * j];
        result[o.name] = v;
      }
      const error = gl.getError();
      if (error) fail(`run failed: WebGL error 0x${error.toString(16)}`);
      return result;
    };
    const error = gl.getError();
    if (error) fail(`setting up the WebGL2 plan failed: WebGL error 0x${error.toString(16)}`);
    return run;
  };
  return { build, dispose };
}

// ---------------------------------------------------------------------------------------------------------------
// Kernel selection's memory (the measuring is kernelforge-tune.js, loaded only when it runs)

/**
 * A WGSL plan whose kernels run the configs `choices` names (0: the plan's own; c: candidates[c - 1]). Only the
 * steps' dispatches change: a candidate binds what its step binds (FORMAT.md, "Candidates").
 * @param {WgslPlan} plan
 * @param {number[]} choices
 * @returns {WgslPlan}
 */
function chosenPlan(plan, choices) {
  const kernels = plan.kernels ?? [];
  let sg = plan.subgroup_size;
  const steps = plan.steps.map((s) => {
    const c = s.kernel === undefined ? 0 : choices[s.kernel];
    /** @type {Dispatch} */
    const { shader, workgroups, uniforms, params, subgroup_size } = c ? kernels[/** @type {number} */ (s.kernel)].candidates[c - 1] : s;
    sg ||= subgroup_size; // a candidate of subgroups was only chosen on an adapter of its size
    return { ...s, shader, workgroups, uniforms, params };
  });
  return { ...plan, steps, ...(sg && { subgroup_size: sg }) };
}

/**
 * Read (without `value`) or write the selection stored under `key` in IndexedDB. Resolves to undefined on any
 * failure (no IndexedDB, private browsing, quota, an open that is blocked or hangs): the store only saves
 * measuring, it never fails a load.
 * @param {string} key
 * @param {object} [value]
 * @returns {Promise<any>}
 */
function idb(key, value) {
  /** @type {Promise<any>} */
  const stored = new Promise((done, no) => {
    const open = indexedDB.open("kernelforge", 1);
    open.onupgradeneeded = () => open.result.createObjectStore("choices");
    open.onerror = open.onblocked = no;
    open.onsuccess = () => {
      const db = open.result;
      try {
        const tx = db.transaction("choices", value ? "readwrite" : "readonly");
        const table = tx.objectStore("choices");
        const req = value ? table.put(value, key) : table.get(key);
        tx.oncomplete = () => done(req.result);
        tx.onerror = tx.onabort = no;
      } catch (e) {
        no(e);
      }
      stored.finally(() => db.close()).catch(() => {});
    };
  });
  return Promise.race([stored, new Promise((done) => setTimeout(done, 2000))]).catch(() => undefined);
}

// ---------------------------------------------------------------------------------------------------------------
// load(): the public API (kernelforge.d.ts)

/**
 * Load a kernelforge bundle and prepare it to run on WebGPU (or WebGL2 where WebGPU is missing).
 *
 * @param {string | URL} url URL of manifest.json, or of the bundle folder (ending in "/").
 * @param {LoadOptions} [opts]
 * @returns {Promise<Model>} {backend, device, inputs, outputs, variants, run(feeds), dispose()}:
 *   run({name: Float32Array}) resolves to {name: typed array} for every output (Float32Array for float outputs,
 *   BigInt64Array for int64, Int32Array for int32, Uint8Array for bool, ...); runs are serialized. With several
 *   variants, run() takes the one whose input shapes the inputs have ({data, dims} inputs or options.shapes give
 *   dims; else element counts) and builds its plan on first use; load() builds the one opts.shapes names.
 */
export async function load(url, opts = {}) {
  const loadStart = performance.now();
  const { backend = "auto", onProgress, signal, target: forced, shapes, tune = "auto", precision = "auto" } = opts;
  if (!["auto", "f32", "f16"].includes(precision)) fail(`precision must be "auto", "f32" or "f16", not ${str(precision)}`);
  const fetchFn = opts.fetch ?? globalThis.fetch?.bind(globalThis) ?? fail("no fetch() here; pass opts.fetch");
  if (!["auto", "webgpu", "webgl2"].includes(backend)) fail(`backend must be "auto", "webgpu" or "webgl2", not ${JSON.stringify(backend)}`);
  const budget = tune === "auto" ? 20000 : tune === "off" ? 0 : tune?.budgetMs ?? 20000;
  if (!(budget >= 0)) fail(`tune must be "auto", "off" or { budgetMs: a number >= 0 }, not ${str(tune)}`);
  /** @type {Progress} */
  const progress = (stage, loaded, total) => onProgress?.({ stage, loaded, total });
  const checkAbort = () => signal?.throwIfAborted();
  checkAbort();

  let manifestUrl = String(url);
  if (manifestUrl.endsWith("/")) manifestUrl += "manifest.json";
  manifestUrl = resolve(manifestUrl, globalThis.location?.href);
  progress("manifest", 0, 1);
  const text = await (await get(fetchFn, manifestUrl, signal)).text();
  // everything load() and the backends use below has been checked once this returns
  const manifest = await readManifest(text, manifestUrl);
  progress("manifest", 1, 1);
  checkAbort();

  // every variant has the first one's targets, in its order (checkManifest): the backend is chosen on those
  const { variants } = manifest;
  const { targets } = variants[0];
  /** @type {Target | undefined} */
  let forcedTarget;
  if (forced !== undefined) {
    forcedTarget = targets.find((t) => t.id === forced);
    if (!forcedTarget) fail(`unknown target "${forced}"; the bundle has: ${targets.map((t) => t.id).join(", ")}`);
  }
  /** @param {string} language */
  const wants = (language) => (forcedTarget ? forcedTarget.language === language : targets.some((t) => t.language === language));
  if (forcedTarget && backend !== "auto" && !wants(backend === "webgpu" ? "wgsl" : "glsl")) {
    fail(`target "${forced}" is ${forcedTarget.language}, which the ${backend} backend does not run`);
  }
  /** @param {TensorInfo} t */
  const info = ({ name, shape, dtype }) => ({ name, shape: [...shape], dtype: dtype ?? "float32" });
  /** @type {VariantInfo[]} */
  const infos = variants.map((v) => ({ inputs: v.inputs.map(info), outputs: v.outputs.map(info) }));
  const names = infos[0].inputs.map((i) => i.name);
  const known = (/** @type {object} */ given, /** @type {string} */ what) => {
    for (const k of Object.keys(given)) if (!names.includes(k)) fail(`${what}: unknown input "${k}"; the model's inputs are ${names.map((n) => `"${n}"`).join(", ")}`);
  };
  // the variant built now: the one opts.shapes names, or the only one (others are built when first run)
  let first = 0;
  if (shapes) {
    known(shapes, "load(): shapes");
    first = pickVariant(infos, Object.fromEntries(Object.entries(shapes).map(([n, dims]) => [n, { dims }])), "load(): shapes");
  }

  // backend: WebGPU when asked for (or auto) and an adapter exists, else WebGL2; say why each one is out
  /** @type {Backend | undefined} */
  let chosen;
  /** @type {Adapter | undefined} */
  let adapter;
  const why = [];
  for (const [name, b] of /** @type {const} */ ([["webgpu", WEBGPU], ["webgl2", WEBGL2]])) {
    if (adapter || (backend !== "auto" && backend !== name)) continue;
    if (!b) why.push("this build of kernelforge.js has no WebGL2 backend");
    else if (!wants(b.language)) why.push(forcedTarget && b === WEBGPU ? `target "${forced}" is glsl` : `the bundle has no ${b.language} target`);
    else {
      const found = await b.find();
      if (typeof found === "string") why.push(found);
      else [chosen, adapter] = [b, found];
    }
  }
  if (!chosen || !adapter) return fail(`cannot run here: ${why.join("; ")}`);
  checkAbort();

  // each variant's target (they may differ where a tuned plan of one variant needs other subgroups)
  const { desc } = adapter;
  const cls = adapterClass(desc);
  const sg = adapter.subgroupSize;
  /** @type {[Target, Match][]} */
  let picks;
  try {
    /** @type {boolean | "only"} */
    const f16 = precision === "f16" ? (adapter.f16 ? "only" : fail('precision "f16": this adapter has no shader-f16')) : precision === "auto" && adapter.f16;
    picks = variants.map((v) => {
      /** @type {[Target, Match]} */
      const pick = forcedTarget ? [v.targets[targets.indexOf(forcedTarget)], "forced"] : pickTarget(v.targets, /** @type {Backend} */ (chosen).language, desc, cls, sg, f16);
      const need = pick[0].plan?.subgroup_size;
      if (need && need !== sg) fail(`target ${pick[0].id} needs subgroups of ${need} lanes; this adapter has ${sg ? `${sg}` : "no fixed-size subgroups"}`);
      if (pick[0].plan?.f16 && !adapter.f16) fail(`target ${pick[0].id} computes in f16; this adapter has no shader-f16`);
      return pick;
    });
  } catch (e) {
    adapter.release(); // nothing else was made yet
    throw e;
  }

  // kernel selection (FORMAT.md, "Candidates"): on a WebGPU adapter without an exact target, once per bundle and
  // adapter; a choice stored in IndexedDB by an earlier load is built straight away, so nothing is measured again
  const [target, match] = picks[first];
  const kernels = /** @type {WgslPlan} */ (target.plan).kernels ?? [];
  const off = !budget ? "tune is off" : match === "exact" || match === "forced" ? `the target is ${match}` : kernels.length ? "" : "the plan has no candidates";
  const key = [manifest.integrity, desc, target.id, first].join("|");
  const cached = off ? null : await idb(key);
  /** @type {number[] | null} per kernel, the config chosen: 0 the plan's own, c its candidates[c - 1] */
  const choices = cached?.choices?.length === kernels.length && cached.choices.every((/** @type {number} */ c, /** @type {number} */ i) => Number.isInteger(c) && c >= 0 && c <= kernels[i].candidates.length) ? cached.choices : null;
  if (choices) picks[first] = [{ ...target, plan: chosenPlan(/** @type {WgslPlan} */ (target.plan), choices) }, match];

  // the weights download overlaps shader compilation; a build awaits it once its pipelines are on the way
  const weights = fetchWeights(fetchFn, resolve(manifest.weights.file ?? "weights.bin", manifestUrl), signal, manifest.weights, progress);
  weights.catch(() => {}); // awaited below and in builds; this only stops an early failure being reported as unhandled
  const impl = await adapter.open(manifest, picks.some(([t]) => t.plan?.subgroup_size), !off && !choices, picks.some(([t]) => t.plan?.f16));
  /** @type {Promise<Runner>[]} each variant's runner, built once (its plan was checked by readManifest) */
  const runners = [];
  // load() holds weights.bin only while a variant may still be built
  /** @type {Promise<ArrayBuffer> | null} */
  let held = weights;
  /** @type {(k: number, abort?: () => void) => Promise<Runner>} */
  const runner = (k, abort = () => {}) => {
    runners[k] ??= impl.build(/** @type {Plan} */ (picks[k][0].plan), /** @type {Promise<ArrayBuffer>} */ (held), progress, abort);
    if (Object.keys(runners).length === variants.length) held = null;
    return runners[k];
  };
  try {
    await Promise.all([weights, (shapes || variants.length === 1) && runner(first, checkAbort)]);
  } catch (e) {
    impl.dispose();
    throw e;
  }

  // an input's shapes across the variants (inputs are in the same order in each), for messages
  const shapesOf = names.map((_, j) => [...new Set(infos.map((v) => show(v.inputs[j].shape)))].join(" or "));
  const list = names.map((n, j) => `"${n}" ${shapesOf[j]}`).join(", ");
  /**
   * Validate run() inputs against the model's, naming the offender; return the variant they fit and name ->
   * Float32Array.
   * @param {Record<string, Tensor | ArrayLike<number | bigint> | Feed>} feeds
   * @param {Shapes} shapes
   * @returns {[number, Record<string, Float32Array>]}
   */
  const check = (feeds, shapes = {}) => {
    if (!feeds || typeof feeds !== "object") fail(`run() takes an object of inputs: ${list}`);
    known({ ...feeds, ...shapes }, "run()");
    /** @type {Record<string, ArrayLike<number | bigint>>} */
    const values = {};
    /** @type {Record<string, { count: number, dims?: readonly number[] }>} */
    const given = {};
    for (const [j, name] of names.entries()) {
      /** @type {any} */
      let v = feeds[name];
      let dims = shapes[name];
      if (v == null) fail(`run(): missing input "${name}" (shape ${shapesOf[j]})`);
      if (!Array.isArray(v) && !ArrayBuffer.isView(v)) [v, dims] = [v.data, dims ?? v.dims]; // {data, dims}, like onnxruntime-web's Tensor
      if (!Array.isArray(v) && !ArrayBuffer.isView(v)) fail(`run(): input "${name}" must be a typed array or {data, dims}`);
      const src = (values[name] = /** @type {ArrayLike<number | bigint>} */ (v));
      given[name] = { count: src.length, dims: dims && Array.from(dims) };
    }
    const k = infos.length > 1 ? pickVariant(infos, given, "run()") : 0;
    const checked = infos[k].inputs.map(({ name, shape, dtype }) => {
      const src = values[name];
      const { dims } = given[name];
      if (dims && show([...dims]) !== show(shape)) fail(`run(): input "${name}" has dims ${show([...dims])}; its shape is ${show(shape)}`);
      if (src.length !== numel(shape)) fail(`run(): input "${name}" has ${src.length} values; its shape ${show(shape)} needs ${numel(shape)}`);
      if (EDGE[dtype] !== Float32Array) {
        for (let i = 0; i < src.length; i++) {
          const x = Number(src[i]);
          if (!Number.isInteger(x) || Math.abs(x) > 2 ** 24) fail(`run(): input "${name}" (${dtype}) has ${src[i]} at ${i}; expected an integer within 2**24`);
        }
      }
      return [name, src instanceof Float32Array ? src : Float32Array.from(src, Number)];
    });
    return [k, Object.fromEntries(checked)];
  };

  // runs are serialized: they share the activation buffers and the readback buffers
  /** @type {Promise<unknown>} */
  let queue = Promise.resolve();
  /** @type {<T>(fn: () => Promise<T>) => Promise<T>} runs `fn` after every run or selection step queued before */
  const serial = (fn) => {
    const r = queue.then(fn);
    queue = r.catch(() => {});
    return r;
  };
  let disposed = false;
  /** @type {Tuning} */
  const tuning = { state: off ? "off" : choices ? "cached" : "measuring", ...(off && { reason: off }), kernels: 0, total: kernels.length, ms: 0, speedup: cached?.speedup ?? 1 };
  /** @type {object | null} */
  let report = choices && cached.report;
  /** @type {Promise<Tuning>} */
  const tuned = tuning.state !== "measuring" ? Promise.resolve(tuning) : (async () => {
    try {
      const { select } = await import("./kernelforge-tune.js");
      const made = await select({
        run: /** @type {GpuRun} */ ((await runner(first)).gpu),
        kernels,
        adapter: /** @type {GPUAdapter} */ (adapter.gpu),
        desc,
        sg,
        about: { generator: manifest.generator, manifest: manifest.integrity, model: manifest.model.name, target: target.id, match },
        budget,
        loadMs: performance.now() - loadStart,
        tuning,
        exclusive: (fn) => serial(() => (disposed || signal?.aborted ? fail("selection stopped") : fn())),
        progress: (/** @type {number} */ done) => progress("tune", done, kernels.length),
      });
      report = made.report;
      if (!signal?.aborted) await idb(key, { choices: made.choices, report, speedup: tuning.speedup });
    } catch (e) {
      tuning.reason = message(e);
    }
    tuning.state = "done";
    return tuning;
  })();
  return {
    backend: chosen.name,
    device: { target: target.id, match, adapter: desc, class: cls, software: cls === "cpu" || !!adapter.fallback, kernels: { ...target.kernels }, precision: halves(target.plan) ? "f16" : "f32" },
    inputs: infos[first].inputs,
    outputs: infos[first].outputs,
    variants: infos,
    tuning,
    tuned,
    tuningReport: () => report,
    memory: memoryOf(manifest, /** @type {Plan} */ (picks[first][0].plan)),
    async run(feeds, options = {}) {
      if (disposed) fail("run() after dispose()");
      const [k, checked] = check(feeds, options.shapes);
      return serial(async () => {
        const out = await (disposed ? fail("run() after dispose()") : (await runner(k))(checked));
        /** @type {Outputs} */
        const typed = {};
        for (const { name, dtype } of infos[k].outputs) {
          const T = EDGE[dtype];
          const v = out[name];
          // integers rounded to the nearest (NaN and infinities: 0), bools 1 where not 0
          const n = (/** @type {number} */ x) => (Number.isFinite(x) ? Math.round(x) : 0);
          typed[name] = T === Float32Array ? v : T.from(v, dtype === "bool" ? (x) => +(x !== 0) : T === BigInt64Array || T === BigUint64Array ? (x) => BigInt(n(x)) : n);
        }
        return typed;
      });
    },
    dispose() {
      if (!disposed) impl.dispose();
      disposed = true;
    },
  };
}

export default { load };

// Internal: exported for the Node unit tests (tests/js) only. Not part of the API (kernelforge.d.ts does not
// declare them) and free to change.
export { adapterClass, checkIntegrity, checkManifest, constantReader, fetchWeights, int4Values, pickTarget, pickVariant, readbackPacer, readManifest, sha256, sha256js, validatePlan };
