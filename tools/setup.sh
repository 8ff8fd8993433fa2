#!/usr/bin/env bash
# Set up kernelforge on a fresh Debian/Ubuntu machine: the software GPUs when missing, then .venv with the package.
#   - Mesa lavapipe (Vulkan) + llvmpipe (OpenGL through EGL): real shaders on the CPU when there is no GPU
#   - Chromium: its SwiftShader Vulkan driver is the software GPU headless Chromium runs WebGPU on
#   - Node.js + npm: the JS runtime's lint, minifier (size benchmark) and Node test tools, into node_modules/
#   - PostgreSQL: the tests of workers sharing one study (tune --storage postgresql://...)
set -euo pipefail
cd "$(dirname "$0")/.."

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
pkgs=()
compgen -G "/usr/share/vulkan/icd.d/lvp_icd*.json" >/dev/null || pkgs+=(mesa-vulkan-drivers)
dpkg-query -W -f='${Status}' libegl1 2>/dev/null | grep -q "ok installed" || pkgs+=(libegl1)
dpkg-query -W -f='${Status}' libgl1-mesa-dri 2>/dev/null | grep -q "ok installed" || pkgs+=(libgl1-mesa-dri)
[ -e /usr/lib/chromium/vk_swiftshader_icd.json ] || pkgs+=(chromium)
command -v npm >/dev/null || pkgs+=(nodejs npm)
# PostgreSQL's server binaries: the shared-storage tests start a private server of their own (no system cluster)
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || command -v initdb >/dev/null || pkgs+=(postgresql)
if [ ${#pkgs[@]} -gt 0 ]; then
  if command -v apt-get >/dev/null; then
    echo "setup: installing ${pkgs[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
  else
    echo "setup: please install ${pkgs[*]} (no apt-get here)" >&2
  fi
fi

python=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e '.[dev]'
# the browser runtime's dev tools (eslint, TypeScript, terser, Dawn for Node), pinned by package-lock.json
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund --loglevel=error >/dev/null
fi
echo "setup: done ($(.venv/bin/kernelforge --version))"
