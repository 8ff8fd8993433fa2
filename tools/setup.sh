#!/usr/bin/env bash
# Set up kernelforge on a fresh Debian/Ubuntu machine: the software GPUs when missing, then .venv with the package.
#   - Mesa lavapipe (Vulkan) + llvmpipe (OpenGL through EGL): real shaders on the CPU when there is no GPU
#   - Chromium: its SwiftShader Vulkan driver is the software GPU headless Chromium runs WebGPU on
set -euo pipefail
cd "$(dirname "$0")/.."

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
pkgs=()
compgen -G "/usr/share/vulkan/icd.d/lvp_icd*.json" >/dev/null || pkgs+=(mesa-vulkan-drivers)
dpkg-query -W -f='${Status}' libegl1 2>/dev/null | grep -q "ok installed" || pkgs+=(libegl1)
dpkg-query -W -f='${Status}' libgl1-mesa-dri 2>/dev/null | grep -q "ok installed" || pkgs+=(libgl1-mesa-dri)
[ -e /usr/lib/chromium/vk_swiftshader_icd.json ] || pkgs+=(chromium)
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
echo "setup: done ($(.venv/bin/kernelforge --version))"
