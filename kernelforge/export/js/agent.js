// @ts-check
// kernelforge tuning agent: the page side of `kernelforge tune --device browser` and `--device remote`. Python
// (Optuna, the numpy reference, the tuning database) drives it through one entry point, call(op, args), whose
// arguments and results are plain JSON; buffer, kernel and step handles are integer ids that live in this page.
// Bytes travel as base64. Playwright calls it through page.evaluate; a remote page, through connect()'s WebSocket.
//
// It compiles, runs and times the same WGSL text a bundle ships, on the device kernelforge.js would open
// (the same requestAdapter options, the same description string and subgroup size: description() and
// subgroupSize() below are kernelforge.js's gpuDescription() and subgroupSize(), which a bundle's target is
// matched with), so a plan tuned here is measured on the very stack that runs it.
//
// `open({ api: "webgl2", vertex })` opens a WebGL2 context instead (agent-webgl2.js): the same ops then run GLSL
// fragment kernels on textures.
//
// Timing (op "time"): a batch of N dispatches of one step in one compute pass, between the pass's two timestamps
// where the adapter has "timestamp-query", else the wall clock from submit() to onSubmittedWorkDone(). N is
// calibrated per step until the batch spans `minMs`: Chrome quantises timestamps (~100 us) and its wall clock
// waits for a poll of the GPU process (~2 ms), both of which a single small dispatch would be lost in.

import { openWebGL2 } from "./agent-webgl2.js";

// WebGPU flag values, as numbers (as kernelforge.js does)
const MAP_READ = 0x1;
const COPY_SRC = 0x4;
const COPY_DST = 0x8;
const UNIFORM = 0x40;
const STORAGE = 0x80;
const QUERY_RESOLVE = 0x200;
const MAX_BATCH = 4096;
const MAX_REPS = 32; // batches timed in one submission: two timestamps each
// how an error that comes from a lost device starts (after "kernelforge agent: "): Python then opens the device
// again rather than blaming the kernel (a GPU reset, a crashed GPU process, a driver's watchdog)
const LOST = "device lost: ";

/** @typedef {{ buffer: GPUBuffer, size: number, refs: number, released: boolean }} Held */
/**
 * @typedef {object} Step
 * @property {GPUComputePipeline} pipeline
 * @property {GPUBindGroup} group
 * @property {GPUBuffer} uniform
 * @property {[number, number, number]} workgroups
 * @property {number[]} buffers ids of the buffers it binds (kept alive while it lives)
 * @property {Record<string, number>} batch calibrated dispatches per batch, per clock
 */
/**
 * @typedef {object} Agent
 * @property {GPUDevice} device
 * @property {{ set: GPUQuerySet, resolve: GPUBuffer, read: GPUBuffer } | null} query timestamp queries, if any
 * @property {string | null} lost why the device was lost
 */

/** @type {Agent | null} */
let agent = null;
/** @type {ReturnType<typeof openWebGL2> | null} the WebGL2 device, when open() was asked for one */
let webgl2 = null;
let nextId = 1;
/** @type {Map<number, GPUComputePipeline>} */
const kernels = new Map();
/** @type {Map<number, Held>} */
const buffers = new Map();
/** @type {Map<number, Step>} */
const steps = new Map();
/** @type {Map<string, Uint8Array<ArrayBuffer>>} data Python has sent once, by its key: inputs every trial reuses */
const blobs = new Map();

/** @param {string} message @returns {never} */
const fail = (message) => {
  throw new Error(`kernelforge agent: ${message}`);
};

/** The opened device (fails when open() was not called or the device was lost). */
function opened() {
  if (!agent) return fail("no device: call open first");
  if (agent.lost) return fail(`${LOST}the WebGPU device was lost: ${agent.lost}`);
  return agent;
}

/** @param {number} id */
function held(id) {
  return buffers.get(id) ?? fail(`no buffer ${id}`);
}

/** @param {string} text base64 @returns {Uint8Array<ArrayBuffer>} */
function fromBase64(text) {
  const raw = atob(text);
  const bytes = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
  return bytes;
}

/** @param {Uint8Array} bytes @returns {string} base64 */
function toBase64(bytes) {
  let raw = "";
  for (let i = 0; i < bytes.length; i += 0x8000) raw += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(raw);
}

/**
 * Run `make` inside a validation error scope; fail with `what` and the error's message when it raised one.
 * @template T
 * @param {GPUDevice} device
 * @param {string} what
 * @param {() => T} make
 * @returns {Promise<T>}
 */
async function validated(device, what, make) {
  device.pushErrorScope("validation");
  const made = make();
  const error = await device.popErrorScope();
  if (error) fail(`${what}: ${error.message}`);
  return made;
}

/** Free a buffer once it is released and no step binds it. @param {number} id */
function collect(id) {
  const b = buffers.get(id);
  if (b && b.released && b.refs === 0) {
    b.buffer.destroy();
    buffers.delete(id);
  }
}

/** @param {number[]} ids handles Python no longer holds (buffers and steps; kernels live as long as the page) */
function release(ids) {
  for (const id of ids) {
    const step = steps.get(id);
    if (step) {
      steps.delete(id);
      step.uniform.destroy();
      for (const b of step.buffers) {
        held(b).refs--;
        collect(b);
      }
    }
    const b = buffers.get(id);
    if (b) {
      b.released = true;
      collect(id);
    }
  }
}

/**
 * The lower-cased "vendor architecture device description" string FORMAT.md matches targets against.
 * @param {GPUAdapter} adapter
 */
const description = ({ info }) => [info.vendor, info.architecture, info.device, info.description].filter(Boolean).join(" ").toLowerCase();

/**
 * The adapter's fixed subgroup size: the "subgroups" feature with subgroupMinSize == subgroupMaxSize, else 0.
 * @param {GPUAdapter} adapter
 */
function subgroupSize(adapter) {
  const { subgroupMinSize: min, subgroupMaxSize: max } = adapter.info;
  return adapter.features.has("subgroups") && min === max ? (min ?? 0) : 0;
}

/** Destroy everything an earlier open() made: a page that reconnects starts empty, as a reloaded one does. */
function reset() {
  for (const b of buffers.values()) b.buffer.destroy();
  for (const s of steps.values()) s.uniform.destroy();
  buffers.clear();
  steps.clear();
  kernels.clear();
  blobs.clear();
  agent?.device.destroy();
  agent = null;
  webgl2?.dispose();
  webgl2 = null;
}

/**
 * The adapter kernelforge.js would pick, a device with timestamps and subgroups where it has them; or, with
 * `api: "webgl2"`, the WebGL2 context it would make (`vertex`: the full-screen vertex shader of its kernels).
 * @param {{ api?: string, vertex?: string }} args
 */
async function open({ api = "webgpu", vertex = "" }) {
  reset();
  if (api === "webgl2") {
    webgl2 = openWebGL2({ vertex }, toBase64, batches);
    return webgl2.info;
  }
  if (api !== "webgpu") return fail(`open: no api ${JSON.stringify(api)} (webgpu, webgl2)`);
  if (!globalThis.navigator?.gpu) return fail("no WebGPU (navigator.gpu is missing: a secure context and, on Linux, --enable-unsafe-webgpu)");
  const adapter = await navigator.gpu.requestAdapter({ powerPreference: "high-performance" }).catch(() => null);
  if (!adapter) return fail("no WebGPU adapter (navigator.gpu.requestAdapter() returned null)");
  /** @type {GPUFeatureName[]} */
  const features = ["timestamp-query", "subgroups", "shader-f16"];
  const wanted = features.filter((f) => adapter.features.has(f));
  // default limits, as kernelforge.js's device has: a tuned config must run on a bundle's requestDevice()
  const device = await adapter.requestDevice({ requiredFeatures: wanted });
  const timestamps = wanted.includes("timestamp-query");
  agent = {
    device,
    lost: null,
    query: timestamps
      ? {
          set: device.createQuerySet({ type: "timestamp", count: 2 * MAX_REPS }),
          resolve: device.createBuffer({ size: 16 * MAX_REPS, usage: QUERY_RESOLVE | COPY_SRC }),
          read: device.createBuffer({ size: 16 * MAX_REPS, usage: MAP_READ | COPY_DST }),
        }
      : null,
  };
  const opening = agent;
  device.lost.then((info) => (opening.lost = info.message || info.reason));
  const info = adapter.info;
  const l = adapter.limits;
  return {
    vendor: info.vendor,
    architecture: info.architecture,
    device: info.device,
    description: info.description,
    desc: description(adapter),
    fallback: Boolean(/** @type {{ isFallbackAdapter?: boolean }} */ (info).isFallbackAdapter),
    subgroupSize: subgroupSize(adapter),
    f16: wanted.includes("shader-f16"),
    timestamps,
    userAgent: navigator.userAgent,
    limits: {
      maxComputeInvocationsPerWorkgroup: l.maxComputeInvocationsPerWorkgroup,
      maxComputeWorkgroupSizeX: l.maxComputeWorkgroupSizeX,
      maxComputeWorkgroupSizeY: l.maxComputeWorkgroupSizeY,
      maxComputeWorkgroupSizeZ: l.maxComputeWorkgroupSizeZ,
      maxComputeWorkgroupStorageSize: l.maxComputeWorkgroupStorageSize,
      maxComputeWorkgroupsPerDimension: l.maxComputeWorkgroupsPerDimension,
      maxStorageBufferBindingSize: l.maxStorageBufferBindingSize,
    },
  };
}

/**
 * Compile a kernel: its module's error messages, or the pipeline's, come back as `error` (nothing is kept).
 * @param {{ source: string, label: string }} args
 */
async function compile({ source, label }) {
  const { device } = opened();
  const started = performance.now();
  device.pushErrorScope("validation");
  const module = device.createShaderModule({ code: source, label });
  // not awaited before the pipeline: when the text is valid, compiling costs one wait for the GPU process, and
  // the module's messages are asked for only on failure
  const scoped = device.popErrorScope();
  try {
    const pipeline = await device.createComputePipelineAsync({ layout: "auto", compute: { module, entryPoint: "main" }, label });
    await scoped;
    const id = nextId++;
    kernels.set(id, pipeline);
    return { kernel: id, ms: performance.now() - started };
  } catch (e) {
    const messages = (await module.getCompilationInfo()).messages.filter((m) => m.type === "error");
    const lines = messages.map((m) => `${label}:${m.lineNum}:${m.linePos}: ${m.message}`);
    const scope = await scoped;
    return { error: lines.join("\n") || scope?.message || `${label}: ${e instanceof Error ? e.message : String(e)}` };
  }
}

/** @param {{ bytes: number, id?: number }} args `id`: the handle Python chose (so the call needs no answer) */
async function alloc({ bytes, id = nextId++ }) {
  const { device } = opened();
  const size = Math.max(4, Math.ceil(bytes / 4) * 4);
  const buffer = await validated(device, `a buffer of ${size} bytes`, () => device.createBuffer({ size, usage: STORAGE | COPY_SRC | COPY_DST }));
  buffers.set(id, { buffer, size, refs: 0, released: false });
  return id;
}

/** @param {{ buffer: number, bytes: Uint8Array<ArrayBuffer> }} args bytes to write at the buffer's start (see payload()) */
function write({ buffer, bytes }) {
  opened().device.queue.writeBuffer(held(buffer).buffer, 0, bytes);
  return null;
}

/** @param {{ buffer: number, bytes: number }} args @returns {Promise<string>} the buffer's first bytes */
async function read({ buffer, bytes }) {
  const { device } = opened();
  const size = Math.ceil(bytes / 4) * 4;
  const staging = device.createBuffer({ size, usage: MAP_READ | COPY_DST });
  const encoder = device.createCommandEncoder();
  encoder.copyBufferToBuffer(held(buffer).buffer, 0, staging, 0, size);
  device.queue.submit([encoder.finish()]);
  await staging.mapAsync(MAP_READ);
  const out = toBase64(new Uint8Array(staging.getMappedRange(), 0, bytes));
  staging.destroy();
  return out;
}

/**
 * Bind a kernel to a step's uniforms (binding 0, u32, padded to whole 16-byte rows) and buffers (binding i + 1:
 * the first `bytes` of buffer `id`), as kernelforge.js binds a plan's step (FORMAT.md).
 * @param {{ kernel: number, label: string, uniforms: number[], bindings: [number, number][], workgroups: [number, number, number], id?: number }} args
 */
async function bind({ kernel, label, uniforms, bindings, workgroups, id = nextId++ }) {
  const { device } = opened();
  const pipeline = kernels.get(kernel) ?? fail(`no kernel ${kernel}`);
  const words = new Uint32Array(Math.max(4, Math.ceil(uniforms.length / 4) * 4));
  words.set(uniforms);
  const uniform = device.createBuffer({ size: words.byteLength, usage: UNIFORM | COPY_DST });
  device.queue.writeBuffer(uniform, 0, words);
  const entries = [
    { binding: 0, resource: { buffer: uniform } },
    ...bindings.map(([id, bytes], i) => ({ binding: i + 1, resource: { buffer: held(id).buffer, size: bytes } })),
  ];
  const group = await validated(device, label, () => device.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries }));
  for (const [b] of bindings) held(b).refs++;
  steps.set(id, { pipeline, group, uniform, workgroups, buffers: bindings.map(([b]) => b), batch: {} });
  return id;
}

/**
 * Encode `count` dispatches of each step in one compute pass (between timestamps when `stamp`).
 * @param {GPUCommandEncoder} encoder
 * @param {Step[]} list
 * @param {number} count
 * @param {GPUComputePassTimestampWrites} [stamp]
 */
function encode(encoder, list, count, stamp) {
  const pass = encoder.beginComputePass(stamp ? { timestampWrites: stamp } : {});
  for (const s of list) {
    pass.setPipeline(s.pipeline);
    pass.setBindGroup(0, s.group);
    for (let i = 0; i < count; i++) pass.dispatchWorkgroups(...s.workgroups);
  }
  pass.end();
}

/** @param {{ steps: number[] }} args steps to run in order, in one pass; resolves when the GPU is done */
async function run({ steps: ids }) {
  const { device } = opened();
  const list = ids.map((id) => steps.get(id) ?? fail(`no step ${id}`));
  const encoder = device.createCommandEncoder();
  encode(encoder, list, 1);
  device.queue.submit([encoder.finish()]);
  await device.queue.onSubmittedWorkDone();
  return null;
}

/**
 * Time a batch of dispatches of one step (see the top of this file): grows the batch until it spans `minMs` on
 * the clock asked for, then returns its size and the batch's milliseconds on both clocks (gpu: null without
 * timestamps).
 * @param {{ step: number, clock: "gpu" | "wall", minMs: number, reps?: number, start?: number }} args `start`: the
 *   batch size to start calibrating from (a previous config's of the same problem)
 */
async function time({ step, clock, minMs, reps = 1, start }) {
  const { device, query } = opened();
  const s = steps.get(step) ?? fail(`no step ${step}`);
  const stamped = clock === "gpu" && query ? query : null;
  /**
   * Run k batches of n dispatches: with timestamps, in one submission (a pass and two timestamps each) and one
   * wait for the GPU process, so repetitions cost GPU time only; on the wall clock, one submission and wait each.
   * @param {number} n
   * @param {number} k
   */
  const once = async (n, k) => {
    const runs = [];
    for (let done = 0; done < k; ) {
      const m = stamped ? Math.min(k - done, MAX_REPS) : 1;
      const encoder = device.createCommandEncoder();
      for (let i = 0; i < m; i++) {
        encode(encoder, [s], n, stamped ? { querySet: stamped.set, beginningOfPassWriteIndex: 2 * i, endOfPassWriteIndex: 2 * i + 1 } : undefined);
      }
      if (stamped) {
        encoder.resolveQuerySet(stamped.set, 0, 2 * m, stamped.resolve, 0);
        encoder.copyBufferToBuffer(stamped.resolve, 0, stamped.read, 0, 16 * m);
      }
      const started = performance.now();
      device.queue.submit([encoder.finish()]);
      // the timestamps' read-back completes once the batches have run: one wait for the GPU process, not two
      await (stamped ? stamped.read.mapAsync(MAP_READ, 0, 16 * m) : device.queue.onSubmittedWorkDone());
      const wall = (performance.now() - started) / m;
      if (!stamped) runs.push({ wall, gpu: null });
      else {
        const stamps = new BigUint64Array(stamped.read.getMappedRange(0, 16 * m));
        for (let i = 0; i < m; i++) {
          const [begin, end] = [stamps[2 * i], stamps[2 * i + 1]];
          runs.push({ wall, gpu: end > begin ? Number(end - begin) / 1e6 : 0 }); // nanoseconds
        }
        stamped.read.unmap();
      }
      done += m;
    }
    return runs;
  };
  return batches(once, s.batch, clock, minMs, reps, start);
}

/**
 * Time `reps` batches of one step (see the top of this file): the first grows the batch until it spans `minMs`
 * on the clock asked for (the size is kept per step and clock in `sizes`), the others repeat it. Returns the batch
 * size and each batch's milliseconds on both clocks (gpu: null without a GPU timer). All reps in one call: a
 * round trip to Python per rep would cost more than a small kernel's batch.
 * @param {(n: number, k: number) => Promise<{ wall: number, gpu: number | null }[]>} once runs and times k batches of n
 * @param {Record<string, number>} sizes
 * @param {string} clock
 * @param {number} minMs
 * @param {number} reps
 * @param {number} [start] the size to start calibrating from where `sizes` has none yet (a previous config's)
 */
export async function batches(once, sizes, clock, minMs, reps, start) {
  if (start && !sizes[clock]) sizes[clock] = Math.min(MAX_BATCH, Math.max(1, Math.floor(start)));
  for (;;) {
    const n = sizes[clock] ?? 1;
    const [first] = await once(n, 1);
    const span = first.gpu ?? first.wall;
    if (span >= minMs || n >= MAX_BATCH) {
      const runs = [first, ...(reps > 1 ? await once(n, reps - 1) : [])];
      return { n, wall: runs.map((r) => r.wall), gpu: runs.map((r) => r.gpu) };
    }
    // at least double; aim a fifth past minMs so noise does not make the next batch recalibrate
    sizes[clock] = Math.min(MAX_BATCH, Math.max(2 * n, Math.ceil((n * 1.2 * minMs) / Math.max(span, 1e-3))));
  }
}

/** @type {Record<string, (args: any) => unknown>} */
const OPS = { open, compile, alloc, write, read, bind, run, time, release: ({ ids }) => release(ids) };

/**
 * The bytes a write op carries: `data` (base64), kept as `blob` when it has that key, or the blob sent before
 * under `blob`. Python decides what is kept: `forget` lists the keys to drop first ("*": all of them).
 * @param {{ data?: string, blob?: string, forget?: string[] }} args
 */
function payload({ data, blob, forget = [] }) {
  for (const key of forget) key === "*" ? blobs.clear() : blobs.delete(key);
  if (data === undefined) return blob === undefined ? fail("write: no data") : (blobs.get(blob) ?? fail(`write: no blob ${blob}`));
  const bytes = fromBase64(data);
  if (blob !== undefined) blobs.set(blob, bytes);
  return bytes;
}

/**
 * Time steps side by side, in rounds (a, b, c, a, b, c, ...), as the tuner re-measures its finalists: each round
 * one calibrated batch of each step (see time()), every round in this one call.
 * @param {(op: string, args: any) => unknown} one runs an op of the open device
 * @param {{ steps?: number[], starts?: number[], reps?: number, [key: string]: unknown }} args time()'s, per step
 */
async function alternate(one, { steps: ids = [], starts = [], reps = 1, ...rest }) {
  /** @type {{ n: number, wall: number[], gpu: (number | null)[] }[][]} */
  const rounds = [];
  for (let r = 0; r < reps; r++) {
    const round = [];
    for (const [k, step] of ids.entries()) round.push(/** @type {any} */ (await one("time", { ...rest, step, reps: 1, start: starts[k] })));
    rounds.push(round);
  }
  const last = rounds[rounds.length - 1] ?? [];
  return { n: last.map((t) => t.n), wall: rounds.map((round) => round.map((t) => t.wall[0])), gpu: rounds.map((round) => round.map((t) => t.gpu[0])) };
}

/**
 * The agent's one entry point: run `op` with `args` (JSON in, JSON out). `args.release` lists handles to free
 * first, so freeing costs no round trip of its own. Op "batch" runs `args.calls` ([op, args] pairs) in order and
 * answers the last one's result: Python sends the calls that need no answer (alloc and bind with ids it chose,
 * writes) with the next one that does, one round trip in all. Op "alternate" is alternate()'s.
 * @param {string} op
 * @param {{ release?: number[], calls?: [string, any][], [key: string]: unknown }} [args]
 */
async function call(op, args = {}) {
  /** @type {Record<string, (args: any) => unknown>} */
  const ops = webgl2 && op !== "open" ? webgl2.ops : OPS;
  if (args.release?.length) ops.release({ ids: args.release });
  /** @param {string} o @param {any} a */
  const one = (o, a) => {
    const fn = ops[o] ?? fail(`unknown op ${JSON.stringify(o)} (ops: ${Object.keys(OPS).join(", ")})`);
    return fn(o === "write" ? { ...a, bytes: payload(a) } : a);
  };
  if (op === "open") return one(op, args);
  /** @type {unknown} */
  let result;
  let threw = false;
  try {
    if (op === "alternate") result = await alternate(one, args);
    else if (op !== "batch") result = await one(op, args);
    else {
      for (const [o, a] of args.calls ?? []) {
        try {
          result = await one(o, a);
        } catch (e) {
          throw new Error(`${o}: ${e instanceof Error ? e.message : String(e)}`, { cause: e });
        }
      }
    }
  } catch (e) {
    [result, threw] = [e, true];
  }
  // a device lost under an op makes it fail, or return a compile error, before device.lost has resolved: a
  // failed op waits one task for it, so the kernel is not blamed for what the device did
  if (threw || (result instanceof Object && "error" in result)) await new Promise((r) => setTimeout(r, 0));
  const lost = webgl2 ? webgl2.lost() : agent?.lost;
  if (lost) fail(`${LOST}${webgl2 ? "" : "the WebGPU device was lost: "}${lost}`);
  if (threw) throw result;
  return result;
}

/**
 * Answer call()s sent over a WebSocket (`kernelforge tune --device remote`): each message {id, op, args} gets
 * {id, result} or {id, error}, in order; {refused} says why the server turned this page away. A connection that
 * drops is opened again (a sleeping tab, a network change), unless the server ended it on purpose (code 1000:
 * tuning finished; 4000 and up: refused, or another page took over).
 * @param {string | URL} url the ws:// or wss:// address
 * @param {(status: string) => void} show where to say what is happening
 */
function connect(url, show) {
  let wait = 500;
  let answered = 0;
  const dial = () => {
    const socket = new WebSocket(url);
    let ended = "";
    let queue = Promise.resolve();
    socket.onopen = () => {
      wait = 500;
      show("connected: kernelforge is tuning on this device");
    };
    socket.onmessage = (event) => {
      const message = JSON.parse(String(event.data));
      if (message.refused) {
        ended = `refused: ${message.refused}`;
        return show(ended);
      }
      queue = queue.then(async () => {
        let reply;
        try {
          reply = { id: message.id, result: (await call(message.op, message.args)) ?? null };
        } catch (e) {
          reply = { id: message.id, error: e instanceof Error ? e.message : String(e) };
        }
        if (socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify(reply));
        if (!ended) show(`connected: ${++answered} calls answered`);
      });
    };
    socket.onclose = (event) => {
      if (ended || event.code === 1000 || event.code >= 4000) return show(ended || event.reason || `closed (${event.code})`);
      show(`connection lost (${event.code}): trying again`);
      setTimeout(dial, wait);
      wait = Math.min(2 * wait, 10000);
    };
  };
  dial();
}

export { call, connect };
