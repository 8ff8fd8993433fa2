// TypeScript declarations of kernelforge.js, the browser runtime of a kernelforge bundle (see FORMAT.md).

/** The dtype of a model input or output; kernels compute in float32 and convert at the edges. */
export type DType = "float32" | "float16" | "float64" | "int64" | "int32" | "int16" | "int8" | "uint8" | "uint16" | "uint32" | "uint64" | "bool";

/** An input or output: float inputs/outputs are Float32Array; int64 is BigInt64Array, int32 Int32Array, bool Uint8Array... */
export type Tensor = Float32Array | BigInt64Array | BigUint64Array | Int32Array | Int16Array | Int8Array | Uint8Array | Uint16Array | Uint32Array;

/** A model input or output as the manifest declares it. */
export interface TensorInfo {
  name: string;
  shape: number[];
  dtype: DType;
}

/** Input name -> dims, e.g. {input_ids: [1, 128]}. */
export type Shapes = Record<string, readonly number[]>;

/**
 * One shape set of a bundle (`kernelforge export --variant`): its inputs and outputs. Every variant has the same
 * names and dtypes; a bundle exported without variants has one.
 */
export interface VariantInfo {
  inputs: TensorInfo[];
  outputs: TensorInfo[];
}

/** An input with its dims, like onnxruntime-web's Tensor (whose `data` and `dims` these are): the dims pick the variant. */
export interface Feed {
  data: Tensor | ArrayLike<number | bigint>;
  dims?: readonly number[];
}

export interface RunOptions {
  /** Dims of inputs given as flat arrays (else element counts pick the variant, where exactly one has them). */
  shapes?: Shapes;
}

/**
 * What load() reports while it works; `loaded` / `total`: 0 then 1 for manifest, bytes for weights, shaders for compile
 * (reported again when run() builds a variant on its first run), kernels for tune (kernel selection, after load()).
 */
export interface LoadProgress {
  stage: "manifest" | "weights" | "compile" | "tune";
  loaded: number;
  total: number;
}

export interface LoadOptions {
  /** "auto" (default): WebGPU when an adapter is found, else WebGL2. */
  backend?: "auto" | "webgpu" | "webgl2";
  onProgress?: (progress: LoadProgress) => void;
  /** Aborts the downloads and is checked between stages; load() then rejects with the signal's reason. */
  signal?: AbortSignal;
  /** Force a target id such as "default/wgsl" (benchmarks); an unknown id rejects naming the ids available. */
  target?: string;
  /** fetch() to use instead of the global one (Node tests pass one that reads files). */
  fetch?: (url: string, init?: { signal?: AbortSignal }) => Promise<Response>;
  /**
   * Input shapes of the variant to build at load, and to describe in `inputs`/`outputs`; a bundle of several
   * variants otherwise builds each (compiles its shaders, allocates its buffers or textures) on its first run.
   * Shapes that fit no variant reject, naming the variants' shapes.
   */
  shapes?: Shapes;
  /**
   * Kernel selection, on a WebGPU adapter that no target was tuned on exactly (match "class" or "default"): the
   * bundle's candidate configs of each kernel are timed on this GPU, most expensive kernels first, and the fastest
   * that computes what the plan computes replaces the plan's own between runs (so it is never slower than the plan
   * or the default config, as measured). It runs after load() resolves; run() works meanwhile. The choice is stored
   * in IndexedDB for this bundle and adapter, so a later load measures nothing. "auto" (default): within 20 s;
   * "off": never; {budgetMs}: within that time. `signal` stops it too.
   */
  tune?: "auto" | "off" | { budgetMs?: number };
  /**
   * Which WebGPU plans may run (FORMAT.md, "Targets"): "auto" (default) a target's f16 plan where the adapter has
   * shader-f16, else its f32 plan; "f32" never an f16 plan; "f16" only f16 plans (rejects when the adapter lacks
   * shader-f16 or the bundle has no f16 plan for it). A WebGL2 plan's half-float textures need no feature: the
   * export chose them (`--precision f32` ships none).
   */
  precision?: "auto" | "f32" | "f16";
}

/** What kernel selection did (Model.tuning, updated as it goes). */
export interface Tuning {
  /** measuring: selection runs; done: it ended; cached: an earlier load's choice is in use; off: none runs (see reason). */
  state: "measuring" | "done" | "cached" | "off";
  /** Why selection is off, or why it stopped early. */
  reason?: string;
  /** Kernels measured so far. */
  kernels: number;
  /** Kernels that have candidates. */
  total: number;
  /** Milliseconds spent selecting. */
  ms: number;
  /** The measured kernels' time with the plan's configs over their time with the winners (weighed by step counts). */
  speedup: number;
}

/** GPU memory in bytes (Model.memory). */
export interface Memory {
  /** Constants as uploaded: weights, biases and tables. */
  weights: number;
  /** Activation buffers (WebGPU) or textures (WebGL2), as planned. */
  activations: number;
}

/** The target the runtime chose for this device, and why. */
export interface DeviceInfo {
  /** Target id, e.g. "google-swiftshader-vulkan/wgsl". */
  target: string;
  /** exact: device vendor + keywords matched; class: same device class; default: built-in params; forced: opts.target. */
  match: "exact" | "class" | "default" | "forced";
  /** Lower-cased adapter description the targets were matched against. */
  adapter: string;
  /** The adapter's class, or null when its description names no known vendor. */
  class: "cpu" | "igpu" | "dgpu" | null;
  /**
   * A software rasterizer (SwiftShader, llvmpipe, WARP) or a browser's fallback adapter: a CPU engine (e.g. a wasm
   * backend) may well run the model faster there.
   */
  software: boolean;
  /** Where each kernel's params came from (copied from the target), e.g. {tuned: 9, default: 3}. */
  kernels: Record<string, number>;
  /**
   * f16 when the target's plan computes in f16 (run only where the adapter has shader-f16) or, on WebGL2, draws
   * half-float textures; else f32.
   */
  precision: "f32" | "f16";
}

export interface Model {
  readonly backend: "webgpu" | "webgl2";
  /** The target of the variant `inputs` describes (each variant picks its own target alike). */
  readonly device: DeviceInfo;
  /** The inputs and outputs of the variant opts.shapes named, else of the first (the only one, without variants). */
  readonly inputs: TensorInfo[];
  readonly outputs: TensorInfo[];
  /** Every variant of the bundle, in its order. */
  readonly variants: VariantInfo[];
  /** Kernel selection's state (see LoadOptions.tune). */
  readonly tuning: Tuning;
  /** Settles when kernel selection ends (at once when none runs, or a stored choice was used). */
  readonly tuned: Promise<Tuning>;
  /**
   * Every measured kernel's candidates with their times and the winner, the adapter's identity and limits, the
   * bundle's manifest hash (FORMAT.md, "Tuning reports"): JSON for `kernelforge db import`, so that the next export
   * ships this GPU as an exact target. null until selection has run (or when it is off).
   */
  tuningReport(): object | null;
  /**
   * GPU memory of the variant built at load, in bytes: its constants as uploaded (weights: float32, fp16 ones widened;
   * int8 ones a kernel dequantizes, one byte each; int4 ones two values a byte in WebGPU, one in WebGL2; float16
   * ones a kernel reads, two bytes each) and its
   * activation buffers (WebGPU) or textures (WebGL2).
   */
  readonly memory: Memory;
  /**
   * Run once; every input by name, each with exactly the element count of its shape (integer inputs: integers within
   * 2**24). Outputs come back as the array type of their dtype (Tensor). Runs are serialized. With several variants,
   * the one whose input shapes the inputs have runs: dims from {data, dims} inputs or options.shapes, else element
   * counts (which must fit exactly one); none fitting rejects naming every variant's shapes. A variant not built yet
   * is built first (its shaders compile: the first run of each variant is slower).
   */
  run(inputs: Record<string, Tensor | ArrayLike<number | bigint> | Feed>, options?: RunOptions): Promise<Record<string, Tensor>>;
  /** Free every GPU buffer / texture / framebuffer / program, and the device (WebGPU) or context (WebGL2). */
  dispose(): void;
}

/**
 * Load a bundle from the URL of its manifest.json (or of its folder, ending in "/"). Rejects, naming the field or
 * the failed check, a bundle whose integrity hashes do not match or whose plans are malformed (FORMAT.md).
 */
export function load(url: string | URL, options?: LoadOptions): Promise<Model>;

declare const kernelforge: { load: typeof load };
export default kernelforge;
