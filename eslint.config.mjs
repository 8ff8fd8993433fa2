// ESLint flat config for the hand-written browser runtime (kernelforge/export/js): `npm run lint`.
import js from "@eslint/js";
import globals from "globals";

export default [
  // only the runtime is ours to lint: generated bundles (out/, build/) and tooling stay out
  { ignores: ["**/*.{js,mjs,cjs}", "!kernelforge/export/js/**/*.js"] },
  { files: ["kernelforge/export/js/**/*.js"], ...js.configs.recommended },
  {
    files: ["kernelforge/export/js/**/*.js"],
    languageOptions: {
      ecmaVersion: 2022,
      sourceType: "module",
      globals: {
        ...globals.browser,
        ...globals.node,
        GPUBufferUsage: "readonly",
        GPUMapMode: "readonly",
        GPUShaderStage: "readonly",
      },
    },
  },
];
