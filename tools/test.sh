#!/usr/bin/env bash
# Set up, then lint, type-check, check the import layers and run the whole test suite (Node's unit tests of the
# JS runtime, then pytest on the software GPUs). Extra args go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
.venv/bin/ruff check kernelforge tests benchmarks tools
.venv/bin/ruff format --check kernelforge tests benchmarks tools
.venv/bin/mypy
.venv/bin/python tools/check_imports.py
node_modules/.bin/eslint kernelforge/export/js
node_modules/.bin/tsc -p tsconfig.json
node tools/check_dts.mjs
node --test tests/js/*.test.mjs
.venv/bin/python -m pytest "$@"
