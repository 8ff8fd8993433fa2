// @ts-check
// kernelforge browser runtime: runs a kernelforge bundle (manifest.json + weights.bin, kernelforge/export/FORMAT.md)
// on WebGPU compute shaders, or on WebGL2 fragment shaders where WebGPU is missing.
//
// The runtime never generates shader code: it compiles the WGSL / GLSL text of the manifest and replays the
// target's plan. Everything that can be done once (pipelines, programs, buffers, textures, bind groups,
// framebuffers, readback buffers) is done in load(), so run() only uploads inputs, records the steps and reads
// the outputs back.
//
// Parts of this module, in order: types; downloads and constants; manifest validation; target choice; readback
// scheduling; the WebGPU backend; the WebGL2 backend; load(). Both backends are values of the Backend type below
// and load() drives them through it alone. `tsc -p tsconfig.json` type-checks the JSDoc types, and
// tools/check_dts.mjs checks that kernelforge.d.ts agrees with them.

// The WebGL2 backend is optional: `terser --define KF_WEBGL2=false` turns WEBGL2 below into `false` and drops
// the whole backend (the size benchmark reports "WebGPU only" and "WebGPU + WebGL2").
const KF_WEBGL2 = true;

const FORMAT = "kernelforge-bundle";
const VERSIONS = [1];

// WebGPU flag values, as numbers so the module also works where the GPUBufferUsage / GPUMapMode globals are
// not installed (Node with the webgpu package, before Object.assign(globalThis, globals)).
const MAP_READ = 0x1;
const COPY_SRC = 0x4;
const COPY_DST = 0x8;
const UNIFORM = 0x40;
const STORAGE = 0x80;

// ---------------------------------------------------------------------------------------------------------------
// Types. The public ones mirror kernelforge.d.ts (tools/check_dts.mjs fails when they disagree).

/** @typedef {{ name: string, shape: number[] }} TensorInfo A model input or output as the manifest declares it. */
/** @typedef {"manifest" | "weights" | "compile"} Stage */
/** @typedef {{ stage: Stage, loaded: number, total: number }} LoadProgress What load() reports while it works. */

/**
 * @typedef {object} LoadOptions
 * @property {"auto" | "webgpu" | "webgl2"} [backend] "auto" (default): WebGPU when an adapter is found, else WebGL2.
 * @property {(progress: LoadProgress) => void} [onProgress]
 * @property {AbortSignal} [signal] aborts the downloads; checked between stages.
 * @property {string} [target] force a target id (e.g. "default/wgsl") instead of matching the adapter.
 * @property {FetchFn} [fetch] fetch function to use (Node tests pass one that reads files).
 */
/** @typedef {(url: string, init?: { signal?: AbortSignal }) => Promise<Response>} FetchFn */

/**
 * @typedef {object} DeviceInfo The target the runtime chose for this device, and why.
 * @property {string} target
 * @property {Match} match
 * @property {string} adapter the lower-cased adapter description the targets were matched against.
 * @property {AdapterClass} class
 * @property {Record<string, number>} kernels
 */
/** @typedef {"exact" | "class" | "default" | "forced"} Match */
/** @typedef {"cpu" | "igpu" | "dgpu" | null} AdapterClass */
/** @typedef {Record<string, Float32Array>} Outputs */

/**
 * @typedef {object} Model
 * @property {"webgpu" | "webgl2"} backend
 * @property {DeviceInfo} device
 * @property {TensorInfo[]} inputs
 * @property {TensorInfo[]} outputs
 * @property {(inputs: Record<string, Float32Array | ArrayLike<number>>) => Promise<Outputs>} run
 * @property {() => void} dispose
 */

/**
 * manifest.json (FORMAT.md). checkManifest() vouches for the top level; the plans are trusted as written.
 * @typedef {object} Manifest
 * @property {string} format
 * @property {number} version
 * @property {{ name?: string, inputs: TensorInfo[], outputs: TensorInfo[] }} model
 * @property {{ file?: string, bytes: number, dtype: "fp32" | "fp16" }} weights
 * @property {{ offset: number, count: number }[]} constants
 * @property {string[]} shaders
 * @property {Target[]} targets
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
 * @property {number[]} buffers
 * @property {{ name: string, buffer: number, bytes: number }[]} inputs
 * @property {({ name: string, buffer: number, bytes: number, constant?: undefined } | ConstantOutput)[]} outputs
 * @property {{ node: string, shader: number, workgroups: number[], uniforms?: number[],
 *   bindings: { buffer?: number, bytes?: number, constant?: number }[] }[]} steps
 */
/** @typedef {{ rows: number, cols: number, pack: number, width: number, height: number }} Layout */
/**
 * @typedef {object} GlslPlan
 * @property {undefined} [subgroup_size]
 * @property {number} vertex
 * @property {{ width: number, height: number, pack: number }[]} textures
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
 * @property {(manifest: Manifest, plan: Plan, weights: Promise<ArrayBuffer>, progress: Progress,
 *   checkAbort: () => void) => Promise<Runner>} open builds everything for `plan`; awaits `weights` itself
 * @property {() => void} release gives the device up when open() is not called
 */
/**
 * A plan built on a device. run() gets validated inputs (name -> Float32Array) and is never re-entered.
 * @typedef {object} Runner
 * @property {(feeds: Record<string, Float32Array>) => Promise<Outputs>} run
 * @property {() => void} dispose
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
 * Download the weights, reporting progress as chunks arrive, and check the length the manifest promises.
 * @param {FetchFn} fetchFn
 * @param {string} url
 * @param {AbortSignal | undefined} signal
 * @param {string} file
 * @param {number} expected
 * @param {Progress} progress
 * @returns {Promise<ArrayBuffer>}
 */
async function fetchWeights(fetchFn, url, signal, file, expected, progress) {
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
  return out.buffer;
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
 * Return constant(i) -> Float32Array of constant i of the manifest, decoded on first use. fp32 constants are
 * views of the weights (offsets are 16-byte aligned); typed arrays use the platform's byte order, which is
 * little-endian on every browser platform, like weights.bin.
 * @param {Pick<Manifest, "weights" | "constants">} manifest
 * @param {ArrayBuffer} buf
 * @returns {(i: number) => Float32Array}
 */
function constantReader(manifest, buf) {
  const fp16 = manifest.weights.dtype === "fp16";
  const size = fp16 ? 2 : 4;
  /** @type {Map<number, Float32Array>} */
  const cache = new Map();
  return (i) => {
    if (cache.has(i)) return /** @type {Float32Array} */ (cache.get(i));
    const c = manifest.constants[i] ?? fail(`constant ${i} is not in the manifest's constants table`);
    const end = c.offset + c.count * size;
    if (end > buf.byteLength) fail(`constant ${i} (bytes ${c.offset}..${end}) lies outside weights (${buf.byteLength} bytes)`);
    const src = c.offset % size ? buf.slice(c.offset, end) : buf;
    const at = c.offset % size ? 0 : c.offset;
    let v;
    if (fp16) {
      const h = new Uint16Array(src, at, c.count);
      const t = halfTable();
      v = new Float32Array(c.count);
      for (let j = 0; j < c.count; j++) v[j] = t[h[j]];
    } else {
      v = new Float32Array(src, at, c.count);
    }
    cache.set(i, v);
    return v;
  };
}

// ---------------------------------------------------------------------------------------------------------------
// Manifest validation

/**
 * Reject a manifest this runtime cannot read, naming what is wrong.
 * @param {any} m parsed manifest.json
 * @param {string} url
 * @returns {asserts m is Manifest}
 */
function checkManifest(m, url) {
  if (!m || typeof m !== "object") fail(`${url} is not a kernelforge manifest (not a JSON object)`);
  if (m.format !== FORMAT) fail(`${url} is not a kernelforge manifest: format is ${JSON.stringify(m.format)}, expected "${FORMAT}"`);
  if (!VERSIONS.includes(m.version)) fail(`${url} has bundle version ${m.version}; this runtime reads version ${VERSIONS.join(", ")}`);
  for (const k of ["shaders", "targets", "constants"]) if (!Array.isArray(m[k])) fail(`${url} has no "${k}" array`);
  if (!Array.isArray(m.model?.inputs) || !Array.isArray(m.model?.outputs)) fail(`${url} has no model inputs/outputs`);
  if (!m.weights || !Number.isInteger(m.weights.bytes)) fail(`${url} has no weights.bytes`);
  if (!["fp32", "fp16"].includes(m.weights.dtype)) fail(`${url}: unsupported weights dtype ${JSON.stringify(m.weights.dtype)}`);
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
 * Pick the target of `language` for the adapter: exact device, else same class, else the default. Plans whose
 * kernels assume subgroups of `subgroup_size` lanes are skipped unless the adapter's size (`sg`) is that.
 * @param {Target[]} targets
 * @param {string} language
 * @param {string} desc the adapter's lower-cased description
 * @param {AdapterClass} cls
 * @param {number} sg the adapter's fixed subgroup size, or 0
 * @returns {[Target, "exact" | "class" | "default"]}
 */
function pickTarget(targets, language, desc, cls, sg) {
  const mine = targets.filter((t) => t.language === language && (!t.plan?.subgroup_size || t.plan.subgroup_size === sg));
  /** @param {unknown} word */
  const has = (word) => desc.includes(String(word).toLowerCase());
  const exact = mine.find((t) => t.device && has(t.device.vendor) && (t.device.keywords ?? []).every(has));
  if (exact) return [exact, "exact"];
  const byClass = cls && mine.find((t) => t.device?.class === cls);
  if (byClass) return [byClass, "class"];
  const fallback = mine.find((t) => !t.device);
  if (fallback) return [fallback, "default"];
  return fail(`the bundle has no default ${language} target (targets: ${targets.map((t) => t.id).join(", ")})`);
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
 * The description string FORMAT.md matches targets against: GPUAdapterInfo fields, lower-cased.
 * @param {GPUAdapter & { requestAdapterInfo?: () => Promise<GPUAdapterInfo> }} adapter
 */
async function gpuDescription(adapter) {
  // adapter.info is current; requestAdapterInfo() is what older Chromium (< 127) offers instead
  const info = adapter.info ?? (await adapter.requestAdapterInfo?.()) ?? {};
  return [info.vendor, info.architecture, info.device, info.description].filter(Boolean).join(" ").toLowerCase();
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
      open: (manifest, plan, ...rest) => openWebGPU(adapter, manifest, /** @type {WgslPlan} */ (plan), ...rest),
      release() {},
    };
  },
};

/**
 * Build everything for `plan` on a new device of `adapter`.
 * @param {GPUAdapter} adapter
 * @param {Manifest} manifest
 * @param {WgslPlan} plan
 * @param {Promise<ArrayBuffer>} weights
 * @param {Progress} progress
 * @param {() => void} checkAbort
 * @returns {Promise<Runner>}
 */
async function openWebGPU(adapter, manifest, plan, weights, progress, checkAbort) {
  const device = await adapter.requestDevice(plan.subgroup_size ? { requiredFeatures: ["subgroups"] } : undefined);
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
   * @param {Float32Array | Uint32Array} [data] initial contents, written through a view of data's own type
   */
  const buffer = (size, usage, data) => {
    const b = device.createBuffer({ size: align4(size), usage, mappedAtCreation: !!data });
    owned.push(b);
    if (data) {
      new (/** @type {new (b: ArrayBuffer) => Float32Array | Uint32Array} */ (data.constructor))(b.getMappedRange()).set(data);
      b.unmap();
    }
    return b;
  };
  try {
    // every pipeline compiles at once (and while weights still download); a shader used by several steps once
    const shaders = [...new Set(plan.steps.map((s) => s.shader))];
    /** @type {Map<number, GPUComputePipeline>} */
    const pipelines = new Map();
    let compiled = 0;
    progress("compile", 0, shaders.length);
    const compiling = Promise.all(
      shaders.map(async (index) => {
        const code = manifest.shaders[index];
        if (typeof code !== "string") fail(`node ${nodeOf(plan, index)} uses shader ${index}, which is not in shaders`);
        device.pushErrorScope("validation");
        const module = device.createShaderModule({ code, label: `shader ${index}` });
        const scope = device.popErrorScope();
        try {
          const pipeline = await device.createComputePipelineAsync({
            label: `shader ${index}`,
            layout: "auto",
            compute: { module, entryPoint: "main" },
          });
          pipelines.set(index, pipeline);
        } catch (e) {
          // the compilation messages carry line numbers; the pipeline error alone often does not
          const info = await module.getCompilationInfo?.();
          const log = (info?.messages ?? []).map((m) => `${m.type} at line ${m.lineNum}:${m.linePos}: ${m.message}`);
          fail(`WGSL shader ${index} (node ${nodeOf(plan, index)}) failed to compile: ${log.join("\n") || (await scope)?.message || /** @type {Error} */ (e).message}`);
        }
        progress("compile", ++compiled, shaders.length);
      }),
    );
    compiling.catch(() => {}); // awaited below; this only stops an early failure being reported as unhandled
    const constant = constantReader(manifest, await weights);
    checkAbort();

    const buffers = plan.buffers.map((size) => buffer(size, STORAGE | COPY_SRC | COPY_DST));
    /** @type {(i: number | undefined, what: string) => GPUBuffer} */
    const planned = (i, what) => buffers[/** @type {number} */ (i)] ?? fail(`${what} refers to buffer ${i}; the plan has ${buffers.length}`);
    /** @type {Map<number, GPUBuffer>} */
    const constantBuffers = new Map();
    /** @param {number} i */
    const constantBuffer = (i) => {
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

    await compiling;
    checkAbort();
    /** @type {Promise<unknown>[]} */
    const scopes = [];
    const steps = plan.steps.map((s) => {
      const pipeline = /** @type {GPUComputePipeline} */ (pipelines.get(s.shader));
      /** @type {GPUBindGroupEntry[]} */
      const entries = [{ binding: 0, resource: { buffer: uniformBuffer(s.uniforms) } }];
      s.bindings.forEach((b, k) => {
        const resource =
          b.constant !== undefined
            ? { buffer: constantBuffer(b.constant) }
            : { buffer: planned(b.buffer, `node ${s.node}`), offset: 0, size: b.bytes };
        entries.push({ binding: k + 1, resource });
      });
      device.pushErrorScope("validation");
      const group = device.createBindGroup({ label: s.node, layout: pipeline.getBindGroupLayout(0), entries });
      scopes.push(device.popErrorScope().then((e) => e && fail(`node ${s.node}: bind group rejected: ${e.message}`)));
      const [x, y = 1, z = 1] = s.workgroups;
      return /** @type {const} */ ([pipeline, group, x, y, z]);
    });
    await Promise.all(scopes);

    const inputs = plan.inputs.map((i) => /** @type {const} */ ([i.name, planned(i.buffer, `input ${i.name}`)]));
    // readback buffers are made once and reused by every run
    const outputs = plan.outputs.map((o) =>
      o.constant !== undefined
        ? { name: o.name, value: constant(o.constant).slice() }
        : { name: o.name, src: planned(o.buffer, `output ${o.name}`), bytes: o.bytes, staging: buffer(o.bytes, MAP_READ | COPY_DST) },
    );
    const read = /** @type {{ name: string, src: GPUBuffer, bytes: number, staging: GPUBuffer }[]} */ (outputs.filter((o) => o.staging));

    // Every run encodes the same commands, so validating the first one suffices; the error scope's round trip
    // to the GPU process cost ~0.5 ms of a ~3 ms run in Chromium.
    let validated = false;
    // readback: see readbackPacer()
    const pace = readbackPacer(device);
    /** @param {Record<string, Float32Array>} feeds */
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
      /** @type {Outputs} */
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
    return { run, dispose };
  } catch (e) {
    dispose();
    throw e;
  }
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
      open: (manifest, plan, ...rest) => openWebGL2(gl, manifest, /** @type {GlslPlan} */ (plan), ...rest),
      release: () => gl.getExtension("WEBGL_lose_context")?.loseContext(),
    };
  },
};

/**
 * Build everything for `plan` on `gl`.
 * @param {WebGL2RenderingContext} gl
 * @param {Manifest} manifest
 * @param {GlslPlan} plan
 * @param {Promise<ArrayBuffer>} weights
 * @param {Progress} progress
 * @param {() => void} checkAbort
 * @returns {Promise<Runner>}
 */
async function openWebGL2(gl, manifest, plan, weights, progress, checkAbort) {
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
  try {
    if (!gl.getExtension("EXT_color_buffer_float")) {
      fail("this WebGL2 lacks EXT_color_buffer_float, so it cannot render to float textures");
    }
    const { TEXTURE_2D, FRAMEBUFFER, COLOR_ATTACHMENT0: ATTACH0, FLOAT } = gl;
    for (const cap of [gl.BLEND, gl.DEPTH_TEST, gl.SCISSOR_TEST, gl.CULL_FACE, gl.DITHER]) gl.disable(cap);
    gl.pixelStorei(gl.UNPACK_ALIGNMENT, 1);
    gl.pixelStorei(gl.PACK_ALIGNMENT, 1);

    // compile everything before checking anything, so drivers with KHR_parallel_shader_compile overlap them
    /**
     * @param {number} type
     * @param {number} index
     */
    const compile = (type, index) => {
      const text = manifest.shaders[index];
      if (typeof text !== "string") fail(`shader ${index} is not in shaders`);
      const s = /** @type {WebGLShader} */ (gl.createShader(type)); // null only on a lost context
      owned.shaders.push(s);
      gl.shaderSource(s, text);
      gl.compileShader(s);
      return s;
    };
    const vertex = compile(gl.VERTEX_SHADER, plan.vertex);
    const indices = [...new Set(plan.steps.map((s) => s.shader))];
    const programs = new Map(
      indices.map((index) => {
        const fragment = compile(gl.FRAGMENT_SHADER, index);
        const p = gl.createProgram();
        owned.programs.push(p);
        gl.attachShader(p, vertex);
        gl.attachShader(p, fragment);
        gl.linkProgram(p);
        return [index, { p, fragment }];
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

    const textures = plan.textures.map(({ width, height, pack }) => {
      const t = gl.createTexture();
      owned.textures.push(t);
      gl.bindTexture(TEXTURE_2D, t);
      gl.texStorage2D(TEXTURE_2D, 1, pack === 4 ? gl.RGBA32F : gl.R32F, width, height);
      for (const p of [gl.TEXTURE_MIN_FILTER, gl.TEXTURE_MAG_FILTER]) gl.texParameteri(TEXTURE_2D, p, gl.NEAREST);
      for (const p of [gl.TEXTURE_WRAP_S, gl.TEXTURE_WRAP_T]) gl.texParameteri(TEXTURE_2D, p, gl.CLAMP_TO_EDGE);
      return { t, width, height, pack, format: pack === 4 ? gl.RGBA : gl.RED };
    });
    /** @param {number} i @param {string} what */
    const texture = (i, what) => textures[i] ?? fail(`${what} refers to texture ${i}; the plan has ${textures.length}`);

    // FORMAT.md's layout rule: row r of a [rows, cols] matrix starts at float r * ceil(cols / pack) * pack
    // of a zero-filled width * height * pack array; `staging` is that array, made once per texture
    /**
     * @param {(typeof textures)[number]} tex
     * @param {Layout} layout
     * @param {string} what
     */
    const uploader = (tex, layout, what) => {
      const { rows, cols, pack, width, height } = layout;
      const rowFloats = Math.ceil(cols / pack) * pack;
      const staging = new Float32Array(width * height * pack);
      if (pack !== tex.pack || width > tex.width || height > tex.height || rows * rowFloats > staging.length) {
        fail(`${what}: layout ${JSON.stringify(layout)} does not fit texture ${JSON.stringify({ width: tex.width, height: tex.height, pack: tex.pack })}`);
      }
      /** @param {Float32Array} values */
      return (values) => {
        if (rowFloats === cols) staging.set(values);
        else for (let r = 0; r < rows; r++) staging.set(values.subarray(r * cols, (r + 1) * cols), r * rowFloats);
        gl.bindTexture(TEXTURE_2D, tex.t);
        gl.texSubImage2D(TEXTURE_2D, 0, 0, 0, width, height, tex.format, FLOAT, staging);
      };
    };
    for (const c of plan.constants ?? []) {
      const values = constant(c.constant);
      const { rows, cols } = c.layout;
      if (values.length !== rows * cols) fail(`constant ${c.constant} has ${values.length} values, its layout ${rows}x${cols}`);
      uploader(texture(c.texture, `constant ${c.constant}`), c.layout, `constant ${c.constant}`)(values);
    }
    const inputs = plan.inputs.map((i) => /** @type {const} */ ([i.name, uploader(texture(i.texture, `input ${i.name}`), i.layout, `input ${i.name}`)]));

    /**
     * @param {number[]} targets
     * @param {string} what
     */
    const framebuffer = (targets, what) => {
      const fb = gl.createFramebuffer();
      owned.framebuffers.push(fb);
      gl.bindFramebuffer(FRAMEBUFFER, fb);
      targets.forEach((ti, k) => gl.framebufferTexture2D(FRAMEBUFFER, ATTACH0 + k, TEXTURE_2D, texture(ti, what).t, 0));
      gl.drawBuffers(targets.map((_, k) => ATTACH0 + k)); // draw-buffer state belongs to the framebuffer
      const status = gl.checkFramebufferStatus(FRAMEBUFFER);
      if (status !== gl.FRAMEBUFFER_COMPLETE) fail(`${what}: framebuffer incomplete (status 0x${status.toString(16)})`);
      return fb;
    };
    const steps = plan.steps.map((s) => {
      const { p } = /** @type {{ p: WebGLProgram }} */ (programs.get(s.shader));
      const samplers = s.inputs.map(({ texture: ti, sampler }) => /** @type {const} */ ([texture(ti, `node ${s.node}`).t, gl.getUniformLocation(p, sampler)]));
      return { fb: framebuffer(s.targets, `node ${s.node}`), p, samplers, width: s.width, height: s.height };
    });
    const outputs = plan.outputs.map((o) => {
      if (o.constant !== undefined) return { name: o.name, value: constant(o.constant).slice() };
      const tex = texture(o.texture, `output ${o.name}`);
      if (o.size > tex.width * tex.height * tex.pack) fail(`output ${o.name}: size ${o.size} exceeds its texture`);
      const pixels = new Float32Array(tex.width * tex.height * 4);
      return { name: o.name, fb: framebuffer([o.texture], `output ${o.name}`), tex, size: o.size, pixels };
    });
    gl.bindFramebuffer(FRAMEBUFFER, null);

    /** @param {Record<string, Float32Array>} feeds */
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
      /** @type {Outputs} */
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
    return { run, dispose };
  } catch (e) {
    dispose();
    throw e;
  }
}

// ---------------------------------------------------------------------------------------------------------------
// load(): the public API (kernelforge.d.ts)

/**
 * Load a kernelforge bundle and prepare it to run on WebGPU (or WebGL2 where WebGPU is missing).
 *
 * @param {string | URL} url URL of manifest.json, or of the bundle folder (ending in "/").
 * @param {LoadOptions} [opts]
 * @returns {Promise<Model>} {backend, device, inputs, outputs, run(feeds), dispose()}: run({name: Float32Array})
 *   resolves to {name: Float32Array} for every output; runs are serialized.
 */
export async function load(url, opts = {}) {
  const { backend = "auto", onProgress, signal, target: forced } = opts;
  const fetchFn = opts.fetch ?? globalThis.fetch?.bind(globalThis) ?? fail("no fetch() here; pass opts.fetch");
  if (!["auto", "webgpu", "webgl2"].includes(backend)) fail(`backend must be "auto", "webgpu" or "webgl2", not ${JSON.stringify(backend)}`);
  /** @type {Progress} */
  const progress = (stage, loaded, total) => onProgress?.({ stage, loaded, total });
  const checkAbort = () => signal?.throwIfAborted();
  checkAbort();

  let manifestUrl = String(url);
  if (manifestUrl.endsWith("/")) manifestUrl += "manifest.json";
  manifestUrl = resolve(manifestUrl, globalThis.location?.href);
  progress("manifest", 0, 1);
  const text = await (await get(fetchFn, manifestUrl, signal)).text();
  let manifest;
  try {
    manifest = JSON.parse(text);
  } catch (e) {
    fail(`${manifestUrl} is not JSON: ${/** @type {Error} */ (e).message}`);
  }
  checkManifest(manifest, manifestUrl);
  progress("manifest", 1, 1);
  checkAbort();

  const { targets } = manifest;
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

  const { desc } = adapter;
  const cls = adapterClass(desc);
  let target, match, plan;
  try {
    const sg = adapter.subgroupSize;
    [target, match] = forcedTarget ? [forcedTarget, /** @type {Match} */ ("forced")] : pickTarget(targets, chosen.language, desc, cls, sg);
    plan = target.plan ?? fail(`target ${target.id} has no plan`);
    if (plan.subgroup_size && plan.subgroup_size !== sg) {
      fail(`target ${target.id} needs subgroups of ${plan.subgroup_size} lanes; this adapter has ${sg ? `${sg}` : "no fixed-size subgroups"}`);
    }
    for (const { name } of plan.inputs) {
      if (!manifest.model.inputs.some((i) => i.name === name)) fail(`target ${target.id} feeds "${name}", which is not a model input`);
    }
  } catch (e) {
    adapter.release(); // nothing else was made yet
    throw e;
  }

  // the weights download overlaps shader compilation; the backend awaits it once its pipelines are on the way
  const file = manifest.weights.file ?? "weights.bin";
  const weights = fetchWeights(fetchFn, resolve(file, manifestUrl), signal, file, manifest.weights.bytes, progress);
  weights.catch(() => {}); // awaited inside the backend; this only stops an early failure being reported as unhandled
  const impl = await adapter.open(manifest, plan, weights, progress, checkAbort);

  const inputs = manifest.model.inputs.map(({ name, shape }) => ({ name, shape: [...shape] }));
  const names = inputs.map((i) => `"${i.name}" ${show(i.shape)}`).join(", ");
  /**
   * Validate run() inputs against the model's, naming the offender; return name -> Float32Array.
   * @param {Record<string, Float32Array | ArrayLike<number>>} feeds
   * @returns {Record<string, Float32Array>}
   */
  const check = (feeds) => {
    if (!feeds || typeof feeds !== "object") fail(`run() takes an object of inputs: ${names}`);
    for (const k of Object.keys(feeds)) {
      if (!inputs.some((i) => i.name === k)) fail(`run(): unknown input "${k}"; the model's inputs are ${names}`);
    }
    return Object.fromEntries(
      inputs.map(({ name, shape }) => {
        let v = feeds[name];
        if (v == null) fail(`run(): missing input "${name}" (shape ${show(shape)})`);
        if (!(v instanceof Float32Array)) {
          if (!Array.isArray(v) && !ArrayBuffer.isView(v)) fail(`run(): input "${name}" must be a Float32Array`);
          v = Float32Array.from(v);
        }
        if (v.length !== numel(shape)) fail(`run(): input "${name}" has ${v.length} values; its shape ${show(shape)} needs ${numel(shape)}`);
        return [name, /** @type {Float32Array} */ (v)];
      }),
    );
  };

  // runs are serialized: they share the activation buffers and the readback buffers
  /** @type {Promise<unknown>} */
  let queue = Promise.resolve();
  let disposed = false;
  return {
    backend: chosen.name,
    device: { target: target.id, match, adapter: desc, class: cls, kernels: { ...target.kernels } },
    inputs,
    outputs: manifest.model.outputs.map(({ name, shape }) => ({ name, shape: [...shape] })),
    async run(feeds) {
      if (disposed) fail("run() after dispose()");
      const checked = check(feeds);
      const result = queue.then(() => (disposed ? fail("run() after dispose()") : impl.run(checked)));
      queue = result.catch(() => {});
      return result;
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
export { adapterClass, checkManifest, constantReader, pickTarget, readbackPacer };
