// Check that kernelforge/export/js/kernelforge.d.ts (hand-written, shipped in every bundle) agrees with the JSDoc
// types of kernelforge.js. Run from anywhere: `node tools/check_dts.mjs`; exits non-zero when they disagree.
//
// 1. tsc emits declarations from the files tsconfig.json lists (kernelforge.js, kernel selection kernelforge-tune.js, the tuning agent agent.js
//    and agent-webgl2.js, which import nothing else) into a temporary impl/ folder, and the hand-written
//    kernelforge.d.ts is copied into api/. Neither folder holds a .js file, so `import "./impl/kernelforge.js"` can only read what the JS
//    declares (next to the runtime it would read the hand-written .d.ts instead).
// 2. check.ts assigns the implementation's load() and default export to the declared types and back, and also
//    compares the key sets of the options, the model and its parts (mutual assignability lets an optional member
//    that one side lacks through) and rejects `any` there (it is assignable both ways).
// 3. Self-test: the same check must fail on four broken copies of the .d.ts, or the check proves nothing.

import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const tsc = join(root, "node_modules", "typescript", "bin", "tsc");
const dts = join(root, "kernelforge", "export", "js", "kernelforge.d.ts");
const webgpuTypes = join(root, "node_modules", "@webgpu", "types", "dist", "index.d.ts");
for (const f of [tsc, webgpuTypes]) if (!existsSync(f)) throw new Error(`${f} is missing: run \`npm ci\` at the repository root`);

const CHECK = `/// <reference path=${JSON.stringify(webgpuTypes)} />
import * as impl from "./impl/kernelforge.js";
import * as api from "./api/kernelforge.js";

type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
type IsAny<T> = 0 extends 1 & T ? true : false;
type Options<L> = L extends (url: any, options?: infer O) => any ? NonNullable<O> : never;
type ModelOf<L> = L extends (...args: any[]) => Promise<infer M> ? M : never;
/** Keys of T whose type is any (never when there are none). */
type AnyKeys<T> = { [K in keyof T]-?: IsAny<T[K]> extends true ? K : never }[keyof T];

type I = typeof impl.load;
type A = typeof api.load;

// the implementation's public exports are the declared ones, and back
export const loadToApi: A = impl.load;
export const loadToImpl: I = api.load;
export const defaultToApi: typeof api.default = impl.default;
export const defaultToImpl: typeof impl.default = api.default;

// every declared export exists (the implementation may export internals the .d.ts leaves out)
export const declared: Same<Extract<keyof typeof api, keyof typeof impl>, keyof typeof api> = true;

// the same members on both sides, where an optional one could be missing on one
export const keys: [
  Same<keyof Options<I>, keyof Options<A>>,
  Same<keyof ModelOf<I>, keyof ModelOf<A>>,
  Same<keyof ModelOf<I>["device"], keyof ModelOf<A>["device"]>,
  Same<keyof ModelOf<I>["inputs"][number], keyof ModelOf<A>["inputs"][number]>,
  Same<keyof Parameters<NonNullable<Options<I>["onProgress"]>>[0], keyof Parameters<NonNullable<Options<A>["onProgress"]>>[0]>,
  Same<keyof typeof impl.default, keyof typeof api.default>,
] = [true, true, true, true, true, true];

// no any, on either side
type MI = ModelOf<I>;
type OI = Options<I>;
type MA = ModelOf<A>;
type OA = Options<A>;
type Progress<O extends { onProgress?: (progress: any) => void }> = Parameters<NonNullable<O["onProgress"]>>[0];
type PartsI = [I, ReturnType<I>, MI, Parameters<I>[0], OI, Parameters<MI["run"]>[0], Awaited<ReturnType<MI["run"]>>, Progress<OI>, MI["inputs"][number]];
type PartsA = [A, ReturnType<A>, MA, Parameters<A>[0], OA, Parameters<MA["run"]>[0], Awaited<ReturnType<MA["run"]>>, Progress<OA>, MA["inputs"][number]];
type AnyParts<P extends unknown[]> = { [K in keyof P]: IsAny<P[K]> }[number];
export const noAny: [
  Same<AnyParts<PartsI>, false>,
  Same<AnyParts<PartsA>, false>,
  Same<AnyKeys<OI> | AnyKeys<MI> | AnyKeys<MI["device"]> | AnyKeys<Progress<OI>>, never>,
  Same<AnyKeys<OA> | AnyKeys<MA> | AnyKeys<MA["device"]> | AnyKeys<Progress<OA>>, never>,
] = [true, true, true, true];
`;

const TSCONFIG = {
  compilerOptions: {
    target: "es2022",
    module: "es2022",
    moduleResolution: "bundler",
    lib: ["es2022", "dom"],
    types: [],
    strict: true,
    noEmit: true,
  },
  files: ["check.ts"],
};

/** Run tsc with `args`; return [ok, output]. */
function runTsc(args) {
  const done = spawnSync(process.execPath, [tsc, ...args], { cwd: root, encoding: "utf8" });
  if (done.error) throw done.error;
  return [done.status === 0, `${done.stdout}${done.stderr}`.trim()];
}

/** Type-check check.ts against api/kernelforge.d.ts holding `declared`; return [ok, output]. */
function check(dir, declared) {
  writeFileSync(join(dir, "api", "kernelforge.d.ts"), declared);
  return runTsc(["-p", join(dir, "tsconfig.json")]);
}

/** Run the check and its self-test in `dir`; return the problems found (none: they agree). */
function run(dir) {
  const [emitted, emitLog] = runTsc(["-p", "tsconfig.json", "--noEmit", "false", "--declaration", "--emitDeclarationOnly", "--outDir", join(dir, "impl")]);
  const impl = existsSync(join(dir, "impl")) ? readdirSync(join(dir, "impl"), { recursive: true }).map(String) : [];
  if (!emitted || impl.sort().join() !== "agent-webgl2.d.ts,agent.d.ts,kernelforge-tune.d.ts,kernelforge.d.ts") {
    return [`emitting declarations from kernelforge.js failed (emitted: ${impl.join(", ") || "nothing"}):\n${emitLog}`];
  }
  mkdirSync(join(dir, "api"));
  writeFileSync(join(dir, "check.ts"), CHECK);
  writeFileSync(join(dir, "tsconfig.json"), JSON.stringify(TSCONFIG, null, 2));

  const declared = readFileSync(dts, "utf8");
  const [ok, log] = check(dir, declared);
  if (!ok) return [`kernelforge.d.ts disagrees with the JSDoc types of kernelforge.js:\n${log}`];
  // self-test: each broken copy must fail, or the check above is vacuous
  const broken = [
    ["a member's type differs", 'readonly backend: "webgpu" | "webgl2";', 'readonly backend: "webgpu";'],
    ["an optional option exists on one side only", "export interface LoadOptions {", "export interface LoadOptions {\n  cache?: boolean;"],
    ["a member is any", 'class: "cpu" | "igpu" | "dgpu" | null;', "class: any;"],
    ["a declared export does not exist", "export function load(", "export function unload(): void;\nexport function load("],
  ];
  const problems = [];
  for (const [what, from, to] of broken) {
    if (!declared.includes(from)) problems.push(`self-test: kernelforge.d.ts no longer contains ${JSON.stringify(from)}; update tools/check_dts.mjs`);
    else if (check(dir, declared.replace(from, to))[0]) problems.push(`self-test: the check passed a .d.ts where ${what}`);
  }
  return problems;
}

const dir = mkdtempSync(join(tmpdir(), "kf-dts-"));
try {
  const problems = run(dir);
  for (const p of problems) console.error(p);
  if (!problems.length) console.log(`kernelforge.d.ts agrees with kernelforge.js (and the check fails on 4 broken copies)`);
  process.exitCode = problems.length ? 1 : 0;
} finally {
  rmSync(dir, { recursive: true, force: true });
}
