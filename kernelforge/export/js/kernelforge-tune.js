// @ts-check
// kernelforge kernel selection: on a GPU that no target of the bundle was tuned on, time each kernel's candidate
// configs (FORMAT.md, "Candidates") on the plan's own buffers, and switch its steps to the fastest that computes
// what the plan's own config computes. kernelforge.js imports this module only when selection runs, so a device
// with an exact target (or a stored choice) never downloads it.
//
// The idea is cuDNN's benchmark mode, with the search cut down to configs that won somewhere. Measuring follows
// the browser tuning agent: verified outputs first, then batches of dispatches between timestamp queries where
// the device has them (Chrome quantises timestamps to 100 µs, so a batch lasts 2 ms or more), else the wall clock
// to onSubmittedWorkDone() over batches of 10 ms or more, configs alternated so drift hits them alike.

// The types of what kernelforge.js hands over are declared here (kernelforge.js's are internal, and an import of
// it resolves to the public kernelforge.d.ts): tsc checks kernelforge.js's call of select() against them.
/** @typedef {{ shader: number, workgroups: number[], uniforms?: number[], params?: object, subgroup_size?: number }} Dispatch */
/** @typedef {Dispatch & { node: string, kernel?: number, source?: string, bindings: { buffer?: number, bytes?: number, constant?: number }[] }} Step */
/** @typedef {{ op: string, shape: string, template: string, candidates: (Dispatch & { from: string })[] }} Kernel */
/** @typedef {{ kernels: number, ms: number, speedup: number }} Tuning the fields select() updates */
/**
 * @typedef {object} GpuRun
 * @property {GPUDevice} device
 * @property {{ steps: Step[], subgroup_size?: number }} plan
 * @property {GPUBuffer[]} buffers
 * @property {Made[]} steps
 * @property {string[]} shaders the manifest's shader texts
 * @property {(pipeline: GPUComputePipeline, s: Step, uniforms?: number[]) => GPUBindGroup} group
 * @property {boolean} timestamps
 */
/** @typedef {[GPUComputePipeline, GPUBindGroup, number, number, number]} Made a config ready to dispatch */

const MAP_READ = 0x1;
const COPY_SRC = 0x4;
const COPY_DST = 0x8;
const QUERY_RESOLVE = 0x200;
const ROUNDS = 5;
// A winner's shader is compiled by every later load (where the browser keeps no compiled pipelines): one that
// compiles slower than the plan's must win that time back within PAYBACK runs of its kernel, and one that takes
// over COMPILE_MS is not waited for (GPUs compile in ~10-300 ms; SwiftShader took ~30 s for the most unrolled
// configs, and a compile holds up every later one of the page).
const PAYBACK = 100;
const COMPILE_MS = 2000;
// and the stored choice as a whole may add at most LOAD_SHARE of this load's time in compiles (winners that compile
// faster than the plan's give time back), so that every later load stays near a plain one
const LOAD_SHARE = 0.1;
const LIMITS = ["maxComputeInvocationsPerWorkgroup", "maxComputeWorkgroupSizeX", "maxComputeWorkgroupSizeY", "maxComputeWorkgroupSizeZ", "maxComputeWorkgroupStorageSize", "maxComputeWorkgroupsPerDimension", "maxStorageBufferBindingSize"];

/** @type {(e: unknown) => string} */
const message = (e) => String(/** @type {Error} */ (e)?.message ?? e);

/**
 * Whether `b` is `a` up to rounding: within 1e-3 of a's largest magnitude (a NaN or infinity in `a` fails all).
 * @param {Float32Array} a the plan's own output
 * @param {Float32Array} b
 */
function agrees(a, b) {
  let scale = 0;
  for (const x of a) scale = Math.max(scale, Math.abs(x));
  const tol = 1e-3 * scale + 1e-6;
  return b.every((y, i) => Math.abs(y - a[i]) <= tol);
}

/**
 * Time every kernel's configs, most expensive kernels first, within `budget` ms, switching each kernel's steps to
 * its fastest verified config as soon as it is known. Returns the choice per kernel (0: the plan's own, c: its
 * candidates[c - 1]) and the report (FORMAT.md, "Tuning reports"). `tuning` is updated as kernels are done.
 * @param {object} c
 * @param {GpuRun} c.run the built plan
 * @param {Kernel[]} c.kernels the plan's kernels table
 * @param {GPUAdapter} c.adapter
 * @param {string} c.desc the adapter's description, as targets are matched against it
 * @param {number} c.sg the adapter's fixed subgroup size, or 0: candidates of another size are left out
 * @param {object} c.about what the report says of the bundle: generator, manifest, model, target, match
 * @param {number} c.budget
 * @param {number} c.loadMs how long load() took: LOAD_SHARE of it may go to compiling slower winners
 * @param {Tuning} c.tuning
 * @param {<T>(fn: () => Promise<T>) => Promise<T>} c.exclusive runs GPU work between model runs
 * @param {(done: number) => void} c.progress
 * @returns {Promise<{ choices: number[], report: object }>}
 */
export async function select({ run, kernels, adapter, desc, sg, about, budget, loadMs, tuning, exclusive, progress }) {
  const { device, plan, shaders, buffers, steps, group, timestamps } = run;
  const started = performance.now();
  const query = timestamps ? device.createQuerySet({ type: "timestamp", count: 2 }) : null;
  const resolved = device.createBuffer({ size: 16, usage: QUERY_RESOLVE | COPY_SRC });
  const stamps = device.createBuffer({ size: 16, usage: MAP_READ | COPY_DST });
  /** @type {(d: Made, reps: number, enc?: GPUCommandEncoder) => GPUCommandEncoder} */
  const encode = (d, reps, enc = device.createCommandEncoder()) => {
    const pass = enc.beginComputePass(query && reps > 1 ? { timestampWrites: { querySet: query, beginningOfPassWriteIndex: 0, endOfPassWriteIndex: 1 } } : {});
    pass.setPipeline(d[0]);
    pass.setBindGroup(0, d[1]);
    for (let i = 0; i < reps; i++) pass.dispatchWorkgroups(d[2], d[3], d[4]);
    pass.end();
    return enc;
  };
  /** Milliseconds per dispatch of `d` over a batch of `reps`. @type {(d: Made, reps: number) => Promise<number>} */
  const time = async (d, reps) => {
    const enc = encode(d, reps);
    if (query && reps > 1) {
      enc.resolveQuerySet(query, 0, 2, resolved, 0);
      enc.copyBufferToBuffer(resolved, 0, stamps, 0, 16);
    }
    const t0 = performance.now();
    device.queue.submit([enc.finish()]);
    await device.queue.onSubmittedWorkDone();
    const wall = (performance.now() - t0) / reps;
    if (!query || reps < 2) return wall;
    await stamps.mapAsync(MAP_READ);
    const [a, b] = new BigUint64Array(stamps.getMappedRange());
    stamps.unmap();
    const ns = Number(b - a);
    return ns > 0 ? ns / 1e6 / reps : wall; // a quantised zero says nothing
  };
  /**
   * Run each config once on the step's inputs filled with fixed values; return each one's output.
   * @param {Step} s
   * @param {(Made | null)[]} made
   */
  const outputs = async (s, made) => {
    const out = s.bindings[s.bindings.length - 1];
    const [buffer, bytes] = [buffers[/** @type {number} */ (out.buffer)], /** @type {number} */ (out.bytes)];
    for (const b of s.bindings.slice(0, -1)) {
      if (b.buffer === undefined) continue;
      const data = new Float32Array(/** @type {number} */ (b.bytes) / 4);
      for (let i = 0; i < data.length; i++) data[i] = ((i * 7919) % 13) / 13; // indices read as 0: in bounds
      device.queue.writeBuffer(buffers[b.buffer], 0, data);
    }
    return Promise.all(
      made.map(async (d) => {
        if (!d) return null;
        const read = device.createBuffer({ size: bytes, usage: MAP_READ | COPY_DST });
        const enc = device.createCommandEncoder();
        enc.clearBuffer(buffer, 0, bytes); // a config that writes nothing must not pass with another's output
        encode(d, 1, enc).copyBufferToBuffer(buffer, 0, read, 0, bytes);
        device.queue.submit([enc.finish()]);
        try {
          await read.mapAsync(MAP_READ);
          return new Float32Array(read.getMappedRange().slice(0));
        } finally {
          read.destroy();
        }
      }),
    );
  };

  // each kernel's steps and configs, the plan's own first
  const rows = kernels.map((k, i) => {
    const at = plan.steps.flatMap((/** @type {Step} */ s, /** @type {number} */ j) => (s.kernel === i ? [j] : []));
    const own = plan.steps[at[0]];
    const from = /** @type {{ source?: string }} */ (own ?? {}).source ?? "plan";
    const fits = (/** @type {Dispatch} */ c) => !c.subgroup_size || (c.subgroup_size === sg && device.features.has("subgroups"));
    // each config with its choice number: 0 the plan's own, c its candidates[c - 1]
    /** @type {(Dispatch & { from: string, choice: number })[]} */
    const configs = [{ ...own, from, choice: 0 }, ...k.candidates.map((c, j) => ({ ...c, choice: j + 1 })).filter(fits)];
    return { k, i, at, configs, ms: /** @type {(number | null)[]} */ (configs.map(() => null)), errors: /** @type {string[]} */ ([]), winner: /** @type {number | null} */ (null), one: 0, cost: 0, compile: /** @type {number[]} */ ([]), made: /** @type {(Made | null)[]} */ ([]), orig: /** @type {Made[]} */ ([]) };
  }).filter((r) => r.at.length);
  // the cost of each kernel: its own config (after a warm-up dispatch) times the steps that run it
  await exclusive(async () => {
    for (const r of rows) {
      await time(steps[r.at[0]], 1);
      r.one = await time(steps[r.at[0]], 4);
      r.cost = r.one * r.at.length;
    }
  });
  rows.sort((a, b) => b.cost - a.cost);
  /** @type {(c: Dispatch, p: GPUComputePipeline, s: Step) => Made} */
  const made1 = (c, p, s) => {
    device.pushErrorScope("validation");
    const g = group(p, s, c.uniforms);
    device.popErrorScope().then((/** @type {GPUError | null} */ e) => e && console.warn(`kernelforge: ${e.message}`));
    const [x, y = 1, z = 1] = c.workgroups;
    return [p, g, x, y, z];
  };
  /** @type {(r: typeof rows[number], w: number) => Promise<void>} runs a kernel's steps with its config w */
  const use = (r, w) =>
    exclusive(async () => {
      for (const [n, j] of r.at.entries()) steps[j] = w ? made1(r.configs[w], /** @type {Made} */ (r.made[w])[0], plan.steps[j]) : r.orig[n];
    });
  /** @type {(r: typeof rows[number], j: number) => number} extra compile ms of a kernel's config j */
  const extra = (r, j) => r.compile[j] - r.compile[0];
  // the measured kernels' time with the plan's configs over their time with the winners, weighed by step counts
  const gain = () => {
    const done = rows.filter((r) => r.winner !== null);
    const sum = (/** @type {(r: typeof rows[number]) => number} */ j) => done.reduce((n, r) => n + /** @type {number} */ (r.ms[j(r)]) * r.at.length, 0);
    return done.length ? sum(() => 0) / sum((r) => /** @type {number} */ (r.winner)) : tuning.speedup;
  };
  for (const r of rows) {
    if (performance.now() - started > budget) break;
    const s = plan.steps[r.at[0]];
    // Compiled one at a time (while the model may run), so that each time is its own: the plan's shader again (a
    // copy the device has not seen: pipelines are cached by their text), then the candidates; the times are
    // weighed against the run times below (PAYBACK).
    /** @type {(Made | null)[]} */
    const made = [steps[r.at[0]]];
    /** @type {Promise<unknown>[]} */
    const compiling = [];
    for (const [j, c] of r.configs.entries()) {
      const t0 = performance.now();
      const module = device.createShaderModule({ code: `${shaders[c.shader]}\n` });
      const pipeline = device.createComputePipelineAsync({ layout: "auto", compute: { module, entryPoint: "main" } });
      compiling.push(pipeline.catch(() => {}));
      /** @type {Promise<never>} */
      const late = new Promise((_, no) => setTimeout(() => no(new Error(`its shader took over ${COMPILE_MS} ms to compile`)), Math.min(COMPILE_MS, budget - (t0 - started))));
      try {
        const p = await Promise.race([pipeline, late]);
        r.compile[j] = performance.now() - t0;
        if (j) made[j] = made1(c, p, s);
      } catch (e) {
        if (!j) r.compile[0] = COMPILE_MS; // the plan's own shader runs whatever its copy did
        r.errors[j] = message(e);
        made[j] = j ? null : made[0];
      }
    }
    const outs = await exclusive(() => outputs(s, made));
    outs.forEach((o, j) => {
      if (j && o && !agrees(/** @type {Float32Array} */ (outs[0]), o)) [r.errors[j], made[j]] = ["its output differs from the plan's", null];
    });
    const reps = Math.max(2, Math.min(256, Math.ceil((query ? 2 : 10) / Math.max(r.one, 1e-3))));
    /** @type {number[][]} */
    const samples = made.map(() => []);
    for (let n = 0; n < ROUNDS && (!n || performance.now() - started < budget); n++) {
      await exclusive(async () => {
        for (const [j, d] of made.entries()) if (d) samples[j].push(await time(d, reps));
      });
    }
    samples.forEach((t, j) => (r.ms[j] = t.length ? t.sort((a, b) => a - b)[t.length >> 1] : null));
    // the fastest, if what its shader costs to compile more than the plan's is won back within PAYBACK runs
    const own = /** @type {number} */ (r.ms[0]);
    const pays = (/** @type {number} */ j) => extra(r, j) <= PAYBACK * (own - /** @type {number} */ (r.ms[j]));
    /** @type {number} */
    const w = r.ms.reduce((/** @type {number} */ best, t, j) => (t !== null && t < /** @type {number} */ (r.ms[best]) && pays(j) ? j : best), 0);
    [r.winner, r.made, r.orig] = [w, made, r.at.map((j) => steps[j])];
    if (w) await use(r, w);
    // a compile that outlived COMPILE_MS holds up the next ones (browsers compile on few threads): let it end
    await Promise.race([Promise.all(compiling), new Promise((done) => setTimeout(done, budget - (performance.now() - started)))]);
    Object.assign(tuning, { kernels: tuning.kernels + 1, ms: performance.now() - started, speedup: gain() });
    progress(tuning.kernels);
  }
  // LOAD_SHARE: past it, the winners that save the least run time per ms of extra compile go back to their fastest
  // config that compiles no slower than the plan's own
  const won = rows.filter((r) => r.winner);
  let over = won.reduce((n, r) => n + extra(r, /** @type {number} */ (r.winner)), 0) - LOAD_SHARE * loadMs;
  /** @type {(r: typeof rows[number]) => number} */
  const worth = (r) => (r.at.length * (/** @type {number} */ (r.ms[0]) - /** @type {number} */ (r.ms[/** @type {number} */ (r.winner)]))) / extra(r, /** @type {number} */ (r.winner));
  for (const r of won.filter((r) => extra(r, /** @type {number} */ (r.winner)) > 0).sort((a, b) => worth(a) - worth(b))) {
    if (over <= 0) break;
    const cheap = r.ms.reduce((/** @type {number} */ best, t, j) => (t !== null && extra(r, j) <= 0 && t < /** @type {number} */ (r.ms[best]) ? j : best), 0);
    over -= extra(r, /** @type {number} */ (r.winner)) - extra(r, cheap);
    r.winner = cheap;
    await use(r, cheap);
  }
  tuning.speedup = gain();
  tuning.ms = performance.now() - started;
  query?.destroy();
  resolved.destroy();
  stamps.destroy();

  const info = adapter.info ?? {};
  const l = /** @type {Record<string, number>} */ (/** @type {unknown} */ (adapter.limits));
  const byKernel = [...rows].sort((a, b) => a.i - b.i);
  const report = {
    format: "kernelforge-tuning-report",
    version: 1,
    ...about,
    backend: "webgpu",
    adapter: {
      vendor: info.vendor,
      architecture: info.architecture,
      device: info.device,
      description: info.description,
      desc,
      fallback: Boolean(/** @type {{ isFallbackAdapter?: boolean }} */ (info).isFallbackAdapter),
      subgroupSize: sg,
      f16: adapter.features.has("shader-f16"),
      userAgent: globalThis.navigator?.userAgent ?? "",
      limits: Object.fromEntries(LIMITS.map((n) => [n, l[n]])),
    },
    clock: query ? "timestamp" : "wall",
    spent_ms: tuning.ms,
    load_ms: loadMs,
    kernels: byKernel.map((r) => ({
      op: r.k.op,
      language: "wgsl",
      shape: r.k.shape,
      template: r.k.template,
      steps: r.at.length,
      candidates: r.configs.map((c, j) => ({ params: c.params ?? {}, from: c.from, ms: r.ms[j], compile_ms: r.compile[j] ?? null, ...(r.errors[j] && { error: r.errors[j] }) })),
      winner: r.winner,
    })),
  };
  const choices = kernels.map((_, i) => {
    const r = rows.find((r) => r.i === i);
    return r && r.winner !== null ? r.configs[r.winner].choice : 0;
  });
  return { choices, report };
}
