// @ts-check
// The tuning agent's WebGL2 device (`kernelforge tune --device browser:webgl2`): the same ops as agent.js's WebGPU
// ones, over GLSL fragment kernels, float textures and full-screen draws, set up as kernelforge.js's WebGL2
// backend sets up a plan (same context options, texture formats, draw state and description string), so a
// kernel tuned here is measured as a bundle runs it.
//
// Timing (op "time"): a batch of N draws of one step, then either the EXT_disjoint_timer_query_webgl2 query
// around them (where the browser exposes it; a disjoint result is not believed) or the wall clock to a one-texel
// readPixels, which returns only once the draws are done. N is calibrated as in agent.js.

/** @param {string} message @returns {never} */
const fail = (message) => {
  throw new Error(`kernelforge agent: ${message}`);
};

/**
 * @typedef {object} Tex
 * @property {WebGLTexture} texture
 * @property {number} width
 * @property {number} height
 * @property {number} pack floats (or integers) per texel: 4 (RGBA) or 1 (R)
 * @property {number} format
 * @property {number} type
 * @property {Float32ArrayConstructor | Uint16ArrayConstructor | Int8ArrayConstructor | Uint8ArrayConstructor} Staging
 * @property {WebGLFramebuffer | null} reader a framebuffer for readPixels, made on the first read
 * @property {number} refs steps that draw from or to it
 * @property {boolean} released
 */
/**
 * @typedef {object} Draw
 * @property {WebGLProgram} program
 * @property {WebGLFramebuffer} fb
 * @property {[WebGLTexture, WebGLUniformLocation | null][]} samplers texture unit k: samplers[k]
 * @property {[number, number]} size the viewport
 * @property {number[]} textures ids it uses (kept alive while it lives)
 * @property {Record<string, number>} batch calibrated draws per batch, per clock
 */

/**
 * Open a WebGL2 context as kernelforge.js does and return its description and the agent's ops on it.
 * @param {{ vertex: string }} args the full-screen vertex shader every kernel is linked with
 * @param {(bytes: Uint8Array) => string} toBase64
 * @param {typeof import("./agent.js").batches} batches agent.js's timing loop, shared
 */
export function openWebGL2({ vertex }, toBase64, batches) {
  /** @type {HTMLCanvasElement | OffscreenCanvas | undefined} */
  let canvas = globalThis.document?.createElement("canvas");
  if (!canvas && typeof OffscreenCanvas !== "undefined") canvas = new OffscreenCanvas(1, 1);
  if (!canvas) return fail("no canvas to make a WebGL2 context on");
  canvas.width = canvas.height = 1;
  const options = { antialias: false, depth: false, stencil: false, alpha: false, powerPreference: "high-performance" };
  const gl = /** @type {WebGL2RenderingContext | null} */ (canvas.getContext("webgl2", options));
  if (!gl) return fail('no WebGL2 (getContext("webgl2") returned null)');
  if (!gl.getExtension("EXT_color_buffer_float")) fail("this WebGL2 lacks EXT_color_buffer_float, so it cannot render to float textures");
  const dbg = gl.getExtension("WEBGL_debug_renderer_info");
  const [renderer, vendor] = (dbg ? [dbg.UNMASKED_RENDERER_WEBGL, dbg.UNMASKED_VENDOR_WEBGL] : [gl.RENDERER, gl.VENDOR]).map((p) => String(gl.getParameter(p)));
  const timer = gl.getExtension("EXT_disjoint_timer_query_webgl2");
  const parallel = gl.getExtension("KHR_parallel_shader_compile");
  const { TEXTURE_2D, FRAMEBUFFER, COLOR_ATTACHMENT0: ATTACH0, FLOAT } = gl;
  for (const cap of [gl.BLEND, gl.DEPTH_TEST, gl.SCISSOR_TEST, gl.CULL_FACE, gl.DITHER]) gl.disable(cap);
  gl.pixelStorei(gl.UNPACK_ALIGNMENT, 1);
  gl.pixelStorei(gl.PACK_ALIGNMENT, 1);
  gl.bindVertexArray(gl.createVertexArray());
  const vs = /** @type {WebGLShader} */ (gl.createShader(gl.VERTEX_SHADER));
  gl.shaderSource(vs, vertex);
  gl.compileShader(vs);
  if (!gl.getShaderParameter(vs, gl.COMPILE_STATUS)) fail(`the vertex shader failed to compile: ${gl.getShaderInfoLog(vs)?.trim()}`);

  let nextId = 1;
  /** @type {Map<number, WebGLProgram>} */
  const kernels = new Map();
  /** @type {Map<number, Tex>} */
  const textures = new Map();
  /** @type {Map<number, Draw>} */
  const steps = new Map();
  const pixel = new Float32Array(4);

  const check = (/** @type {string} */ what) => {
    if (gl.isContextLost()) fail("the WebGL2 context was lost"); // call() says "device lost" for it
    const error = gl.getError();
    if (error) fail(`${what}: WebGL error 0x${error.toString(16)}`);
  };
  /** @param {number} id */
  const tex = (id) => textures.get(id) ?? fail(`no texture ${id}`);
  /** @param {number} id */
  const collect = (id) => {
    const t = textures.get(id);
    if (t && t.released && t.refs === 0) {
      gl.deleteTexture(t.texture);
      if (t.reader) gl.deleteFramebuffer(t.reader);
      textures.delete(id);
    }
  };
  /** @param {number[]} ids handles Python no longer holds (textures and steps; kernels live as long as the page) */
  const release = (ids) => {
    for (const id of ids) {
      const s = steps.get(id);
      if (s) {
        steps.delete(id);
        gl.deleteFramebuffer(s.fb);
        for (const t of s.textures) {
          tex(t).refs--;
          collect(t);
        }
      }
      const t = textures.get(id);
      if (t) {
        t.released = true;
        collect(id);
      }
    }
  };
  /** @param {Draw} s */
  const draw = (s) => {
    gl.bindFramebuffer(FRAMEBUFFER, s.fb);
    gl.viewport(0, 0, ...s.size);
    gl.useProgram(s.program);
    s.samplers.forEach(([t, location], k) => {
      gl.activeTexture(gl.TEXTURE0 + k);
      gl.bindTexture(TEXTURE_2D, t);
      gl.uniform1i(location, k);
    });
    gl.drawArrays(gl.TRIANGLES, 0, 3);
  };
  // a one-texel readPixels of what the step drew returns once every draw before it is done
  const finish = (/** @type {Draw} */ s) => {
    gl.bindFramebuffer(FRAMEBUFFER, s.fb);
    gl.readPixels(0, 0, 1, 1, gl.RGBA, FLOAT, pixel);
  };
  const settled = (/** @type {WebGLQuery} */ q) =>
    new Promise((resolve) => {
      const poll = () => (gl.getQueryParameter(q, gl.QUERY_RESULT_AVAILABLE) ? resolve(null) : setTimeout(poll, 1));
      poll();
    });

  const ops = {
    /** @param {{ source: string, label: string }} args */
    async compile({ source, label }) {
      const started = performance.now();
      const fs = /** @type {WebGLShader} */ (gl.createShader(gl.FRAGMENT_SHADER));
      gl.shaderSource(fs, source);
      gl.compileShader(fs);
      const program = /** @type {WebGLProgram} */ (gl.createProgram());
      gl.attachShader(program, vs);
      gl.attachShader(program, fs);
      gl.linkProgram(program);
      // with KHR_parallel_shader_compile the page stays responsive while the driver compiles
      while (parallel && !gl.getProgramParameter(program, parallel.COMPLETION_STATUS_KHR)) await new Promise((r) => setTimeout(r, 2));
      if (!gl.getProgramParameter(program, gl.LINK_STATUS)) {
        const ok = gl.getShaderParameter(fs, gl.COMPILE_STATUS);
        const log = (ok ? gl.getProgramInfoLog(program) : gl.getShaderInfoLog(fs))?.trim();
        gl.deleteProgram(program);
        gl.deleteShader(fs);
        return { error: `${label}: failed to ${ok ? "link" : "compile"}: ${log || "no log"}` };
      }
      gl.deleteShader(fs); // the linked program keeps what it needs
      const id = nextId++;
      kernels.set(id, program);
      return { kernel: id, ms: performance.now() - started };
    },

    /** @param {{ width: number, height: number, pack: number, dtype: string, id?: number }} args */
    alloc({ width, height, pack, dtype, id = nextId++ }) {
      const texture = /** @type {WebGLTexture} */ (gl.createTexture());
      gl.bindTexture(TEXTURE_2D, texture);
      // float texels, halves (float16 weights, a half-float kernel's targets), or the int8/uint8 ones of weights a
      // kernel dequantizes, as kernelforge.js makes them
      const [rgba, red, type, Staging] =
        dtype === "float32"
          ? [gl.RGBA32F, gl.R32F, FLOAT, Float32Array]
          : dtype === "float16"
            ? [gl.RGBA16F, gl.R16F, gl.HALF_FLOAT, Uint16Array]
            : dtype === "int8"
              ? [gl.RGBA8I, gl.R8I, gl.BYTE, Int8Array]
              : dtype === "uint8"
                ? [gl.RGBA8UI, gl.R8UI, gl.UNSIGNED_BYTE, Uint8Array]
                : fail(`no texture of ${dtype}`);
      gl.texStorage2D(TEXTURE_2D, 1, pack === 4 ? rgba : red, width, height);
      for (const p of [gl.TEXTURE_MIN_FILTER, gl.TEXTURE_MAG_FILTER]) gl.texParameteri(TEXTURE_2D, p, gl.NEAREST);
      for (const p of [gl.TEXTURE_WRAP_S, gl.TEXTURE_WRAP_T]) gl.texParameteri(TEXTURE_2D, p, gl.CLAMP_TO_EDGE);
      const float = dtype === "float32" || dtype === "float16";
      const format = float ? (pack === 4 ? gl.RGBA : gl.RED) : pack === 4 ? gl.RGBA_INTEGER : gl.RED_INTEGER;
      check(`a ${width}x${height} texture of ${pack} ${dtype} per texel`);
      textures.set(id, { texture, width, height, pack, format, type, Staging, reader: null, refs: 0, released: false });
      return id;
    },

    /** @param {{ texture: number, bytes: Uint8Array<ArrayBuffer> }} args values (their bytes) for the texture's first texels */
    write({ texture, bytes }) {
      const t = tex(texture);
      const staging = new t.Staging(t.width * t.height * t.pack);
      staging.set(new t.Staging(bytes.buffer, 0, bytes.byteLength / t.Staging.BYTES_PER_ELEMENT));
      gl.bindTexture(TEXTURE_2D, t.texture);
      gl.texSubImage2D(TEXTURE_2D, 0, 0, 0, t.width, t.height, t.format, t.type, staging);
      check("write");
      return null;
    },

    /** @param {{ texture: number, count: number }} args @returns {string} the first `count` floats, base64 */
    read({ texture, count }) {
      const t = tex(texture);
      if (!t.reader) {
        t.reader = gl.createFramebuffer();
        gl.bindFramebuffer(FRAMEBUFFER, t.reader);
        gl.framebufferTexture2D(FRAMEBUFFER, ATTACH0, TEXTURE_2D, t.texture, 0);
      }
      gl.bindFramebuffer(FRAMEBUFFER, t.reader);
      // RGBA/FLOAT is the read format every float color buffer supports; an R32F texel reads as (r, 0, 0, 1)
      const pixels = new Float32Array(t.width * t.height * 4);
      gl.readPixels(0, 0, t.width, t.height, gl.RGBA, FLOAT, pixels);
      check("read");
      const out = new Float32Array(count);
      if (t.pack === 4) out.set(pixels.subarray(0, count));
      else for (let j = 0; j < count; j++) out[j] = pixels[4 * j];
      return toBase64(new Uint8Array(out.buffer));
    },

    /**
     * Tie a kernel to its input textures (unit k: inputs[k], bound to its sampler uniform) and render targets.
     * @param {{ kernel: number, label: string, inputs: [number, string][], outputs: number[], size: [number, number], id?: number }} args
     */
    bind({ kernel, label, inputs, outputs, size, id = nextId++ }) {
      const program = kernels.get(kernel) ?? fail(`no kernel ${kernel}`);
      const fb = /** @type {WebGLFramebuffer} */ (gl.createFramebuffer());
      gl.bindFramebuffer(FRAMEBUFFER, fb);
      outputs.forEach((id, k) => gl.framebufferTexture2D(FRAMEBUFFER, ATTACH0 + k, TEXTURE_2D, tex(id).texture, 0));
      gl.drawBuffers(outputs.map((_, k) => ATTACH0 + k));
      const status = gl.checkFramebufferStatus(FRAMEBUFFER);
      if (status !== gl.FRAMEBUFFER_COMPLETE) {
        gl.deleteFramebuffer(fb);
        fail(`${label}: ${outputs.length} render target(s) of ${size.join("x")}: framebuffer incomplete (status 0x${status.toString(16)})`);
      }
      /** @type {Draw["samplers"]} */
      const samplers = inputs.map(([id, sampler]) => [tex(id).texture, gl.getUniformLocation(program, sampler)]);
      const used = [...inputs.map(([id]) => id), ...outputs];
      for (const t of used) tex(t).refs++;
      steps.set(id, { program, fb, samplers, size, textures: used, batch: {} });
      return id;
    },

    /** @param {{ steps: number[] }} args steps to draw in order; returns once they are done */
    run({ steps: ids }) {
      const list = ids.map((id) => steps.get(id) ?? fail(`no step ${id}`));
      list.forEach(draw);
      if (list.length) finish(list[list.length - 1]);
      check("run");
      return null;
    },

    /**
     * Time `reps` batches of draws of one step (see the top of this file), as agent.js's time() does.
     * @param {{ step: number, clock: "gpu" | "wall", minMs: number, reps?: number, start?: number }} args
     */
    async time({ step, clock, minMs, reps = 1, start }) {
      const s = steps.get(step) ?? fail(`no step ${step}`);
      const timed = clock === "gpu" ? timer : null;
      /** @param {number} n @param {number} k */
      const once = async (n, k) => {
        const runs = [];
        for (let j = 0; j < k; j++) {
          const query = timed && gl.createQuery();
          const started = performance.now();
          if (timed && query) gl.beginQuery(timed.TIME_ELAPSED_EXT, query);
          for (let i = 0; i < n; i++) draw(s);
          if (timed && query) gl.endQuery(timed.TIME_ELAPSED_EXT);
          finish(s);
          const wall = performance.now() - started;
          /** @type {number | null} */
          let gpu = null;
          if (timed && query) {
            await settled(query);
            // a disjoint period (a clock change, another context's work) makes the elapsed time meaningless
            gpu = gl.getParameter(timed.GPU_DISJOINT_EXT) ? 0 : gl.getQueryParameter(query, gl.QUERY_RESULT) / 1e6;
            gl.deleteQuery(query);
          }
          check("time");
          runs.push({ wall, gpu });
        }
        return runs;
      };
      return batches(once, s.batch, clock, minMs, reps, start);
    },

    /** @param {{ ids: number[] }} args */
    release: ({ ids }) => release(ids),
  };

  const dispose = () => {
    release([...steps.keys(), ...textures.keys()]);
    for (const p of kernels.values()) gl.deleteProgram(p);
    gl.getExtension("WEBGL_lose_context")?.loseContext();
  };
  const info = {
    api: "webgl2",
    renderer,
    vendor,
    desc: `${renderer} ${vendor}`.toLowerCase(),
    timestamps: Boolean(timer),
    userAgent: navigator.userAgent,
    limits: {
      maxTextureSize: gl.getParameter(gl.MAX_TEXTURE_SIZE),
      maxDrawBuffers: gl.getParameter(gl.MAX_DRAW_BUFFERS),
      maxTextureImageUnits: gl.getParameter(gl.MAX_TEXTURE_IMAGE_UNITS),
    },
  };
  /** @returns {string | null} why the context is gone, if it is */
  const lost = () => (gl.isContextLost() ? "the WebGL2 context was lost" : null);
  return { info, ops, dispose, lost };
}
