"""Device classification, fingerprints and the --device selector (fake adapters, no GPU)."""

from __future__ import annotations

import pytest

from kernelforge.devices import (
    DeviceInfo,
    classify,
    driver_version,
    fingerprint,
    select,
    vendor_token,
)
from kernelforge.errors import DeviceNotFoundError
from kernelforge.ops import Limits


def dev(index, name, api, cls, slug) -> DeviceInfo:
    return DeviceInfo(index, "wgpu", "wgsl", api, name, "x", 0, 0, "", "", cls, slug, Limits())


DEVICES = [
    dev(0, "SwiftShader Device (Subzero)", "vulkan", "cpu", "google-swiftshader-vulkan"),
    dev(1, "llvmpipe (LLVM 15.0.6, 256 bits)", "vulkan", "cpu", "mesa-llvmpipe-vulkan-22.3"),
    dev(2, "llvmpipe (LLVM 15.0.6, 256 bits)", "gl", "cpu", "mesa-llvmpipe-gl-22.3"),
]


def test_fingerprints():
    assert fingerprint("mesa", "llvmpipe (LLVM 15.0.6, 256 bits)", "vulkan", "22.3") == "mesa-llvmpipe-vulkan-22.3"
    assert fingerprint("google", "SwiftShader Device (Subzero)", "vulkan", "") == "google-swiftshader-vulkan"
    assert (
        fingerprint("nvidia", "NVIDIA GeForce RTX 3090", "vulkan", "550.54") == "nvidia-geforce-rtx-3090-vulkan-550.54"
    )
    assert driver_version("Mesa 22.3.6 (LLVM 15.0.6)") == "22.3"
    assert driver_version("4.5 (Core Profile) Mesa 22.3.6") == "22.3"
    assert driver_version("") == ""
    assert vendor_token(0x10005, "llvmpipe", "llvmpipe") == "mesa"
    assert vendor_token(0, "Intel Corporation", "Intel(R) UHD Graphics 620") == "intel"


@pytest.mark.parametrize(
    "adapter_type,vendor,name,expected",
    [
        ("CPU", "mesa", "llvmpipe", "cpu"),
        ("Unknown", "google", "SwiftShader Device", "cpu"),
        ("Unknown", "microsoft", "Microsoft Basic Render Driver", "cpu"),
        ("IntegratedGPU", "intel", "Intel UHD 620", "igpu"),
        ("DiscreteGPU", "nvidia", "RTX 3090", "dgpu"),
        ("Unknown", "apple", "Apple M2", "igpu"),
        ("Unknown", "weird", "Some GPU", "other"),
    ],
)
def test_classify(adapter_type, vendor, name, expected):
    assert classify(adapter_type, vendor, name) == expected


def test_select():
    assert select("auto", DEVICES).index == 0  # native API before GL, then enumeration order
    assert select("cpu", DEVICES).index == 0
    assert select("2", DEVICES).index == 2
    assert select(1, DEVICES).index == 1
    assert select("lavapipe", DEVICES).index == 1
    assert select("llvmpipe", DEVICES).index == 1  # the Vulkan one before the GL one
    assert select("mesa-llvmpipe-gl", DEVICES).index == 2
    assert select("SWIFTSHADER", DEVICES).index == 0


@pytest.mark.parametrize(
    "selector,phrase",
    [("igpu", "no integrated GPU"), ("dgpu", "no discrete GPU"), ("7", "index 7"), ("radeon", "radeon")],
)
def test_select_no_match_lists_devices(selector, phrase):
    with pytest.raises(DeviceNotFoundError) as err:
        select(selector, DEVICES)
    text = str(err.value)
    assert phrase in text
    for d in DEVICES:
        assert d.slug in text
