"""Shared fixtures: the adapter probe (once per session) and per-device backends."""

from __future__ import annotations

import functools

import pytest

from kernelforge import _config


@functools.cache
def _devices() -> tuple:
    try:
        from kernelforge.runtime import list_devices

        return list_devices()
    except Exception as exc:  # no wgpu-native library, no Vulkan loader, ...
        if _config.require_device():
            raise
        pytest.skip(f"no GPU adapter could be enumerated: {exc}")
        raise


def _need(selector: str, language: str | None = None):
    from kernelforge.errors import DeviceNotFoundError
    from kernelforge.runtime import open_device

    devices = _devices()
    if not devices:
        if _config.require_device():
            pytest.fail("KF_REQUIRE_DEVICE=1 but no GPU adapter exists (install mesa-vulkan-drivers)")
        pytest.skip("no GPU adapter on this machine")
    try:
        return open_device(selector, language)
    except DeviceNotFoundError as exc:
        if _config.require_device():
            pytest.fail(f"KF_REQUIRE_DEVICE=1 but {exc}")
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def lavapipe():
    """The primary device for device tests: Mesa's lavapipe (the software Vulkan GPU CI installs)."""
    return _need("lavapipe")


WGSL_DEVICES = ["lavapipe", "swiftshader", "mesa-llvmpipe-gl"]


@pytest.fixture(scope="session", params=WGSL_DEVICES)
def wgsl_device(request):
    """Every software adapter WGSL runs on here: lavapipe, Chromium's SwiftShader, llvmpipe via wgpu's GL."""
    return _need(request.param)


@pytest.fixture(scope="session")
def gl():
    """The GLSL device: llvmpipe through moderngl's headless EGL context."""
    return _need("auto", "glsl")


@pytest.fixture
def fresh_device():
    """Open a new device per call (state no earlier test touched), skipping or failing like the fixtures above."""
    return _need
