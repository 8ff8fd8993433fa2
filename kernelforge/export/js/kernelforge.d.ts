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

/** What load() reports while it works; `loaded` / `total`: 0 then 1 for manifest, bytes for weights, shaders for compile. */
export interface LoadProgress {
  stage: "manifest" | "weights" | "compile";
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
  /** Where each kernel's params came from (copied from the target), e.g. {tuned: 9, default: 3}. */
  kernels: Record<string, number>;
}

export interface Model {
  readonly backend: "webgpu" | "webgl2";
  readonly device: DeviceInfo;
  readonly inputs: TensorInfo[];
  readonly outputs: TensorInfo[];
  /**
   * Run once; every input by name, each with exactly the element count of its shape (integer inputs: integers within
   * 2**24). Outputs come back as the array type of their dtype (Tensor). Runs are serialized.
   */
  run(inputs: Record<string, Tensor | ArrayLike<number | bigint>>): Promise<Record<string, Tensor>>;
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
