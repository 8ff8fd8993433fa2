#!/usr/bin/env bash
# Set up, then lint, type-check and run the whole test suite on the software GPUs. Extra args go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
.venv/bin/ruff check kernelforge tests benchmarks tools
.venv/bin/ruff format --check kernelforge tests benchmarks tools
.venv/bin/mypy
node_modules/.bin/eslint kernelforge/export/js
.venv/bin/python -m pytest "$@"
