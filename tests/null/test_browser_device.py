"""Browser devices as data: identity from GPUAdapterInfo, selectors that launch nothing, bundle targets for them."""

from __future__ import annotations

from pathlib import Path

import pytest

from kernelforge.db import TuningDB, device_meta, new_record
from kernelforge.devices import DeviceInfo
from kernelforge.errors import DeviceNotFoundError, ExportError
from kernelforge.export.targets import device_keywords, select_targets
from kernelforge.ops import get_op
from kernelforge.ops.spec import Limits
from kernelforge.runtime import BrowserOptions
from kernelforge.runtime.backends import BACKENDS, requested_backend
from kernelforge.runtime.backends.browser import device_info, request_device
from kernelforge.templates import kernel_hash

HEADLESS_UA = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/131.0.0.0 Safari/537.36"
)
SWIFTSHADER = {
    "vendor": "google",
    "architecture": "swiftshader",
    "device": "",
    "description": "",
    "desc": "google swiftshader",
    "fallback": True,
    "subgroupSize": 4,
    "timestamps": True,
    "userAgent": HEADLESS_UA,
    "limits": {"maxComputeWorkgroupStorageSize": 32768, "maxStorageBufferBindingSize": 1 << 30},
}
NVIDIA = {
    "vendor": "nvidia",
    "architecture": "ampere",
    "device": "",
    "description": "",
    "desc": "nvidia ampere",
    "subgroupSize": 0,
    "userAgent": HEADLESS_UA.replace("HeadlessChrome", "Chrome") + " Edg/131.0.0.0",
    "limits": {"maxComputeInvocationsPerWorkgroup": 1024, "maxComputeWorkgroupStorageSize": 8192},
}


def test_the_identity_comes_from_the_adapter_info() -> None:
    ss = device_info(SWIFTSHADER, 0, "131.0.6778.85")
    assert (ss.slug, ss.api, ss.backend, ss.language) == ("google-swiftshader-webgpu", "webgpu", "browser", "wgsl")
    assert ss.device_class == "cpu" and ss.is_browser and ss.adapter == "google swiftshader"
    assert ss.driver == "Chrome 131.0.6778.85 headless"
    # WebGPU's defaults, lowered where the adapter offers less; its fixed subgroup size kept
    assert ss.limits.max_workgroup_storage == Limits().max_workgroup_storage
    assert ss.limits.max_storage_binding == Limits().max_storage_binding
    assert ss.limits.subgroup_size == 4 and not ss.limits.wide_tiles
    nv = device_info(NVIDIA, 1)
    assert (nv.slug, nv.device_class, nv.driver) == ("nvidia-ampere-webgpu", "dgpu", "Edge 131.0.0.0")
    assert nv.limits.max_workgroup_storage == 8192 and nv.limits.max_invocations == Limits().max_invocations
    assert "browser" in nv.search_text() and "browser" not in _native().search_text()


def test_only_the_browser_and_remote_words_request_a_page() -> None:
    assert [n for n, e in BACKENDS.items() if e.requested_as] == ["browser", "remote"]
    assert requested_backend("browser") == requested_backend(" Browser:webgl2 ") == "browser"
    assert requested_backend("remote:webgpu") == "remote"
    assert requested_backend("swiftshader") is None and requested_backend(0) is None


@pytest.mark.parametrize(
    ("selector", "language", "message"),
    [("browser:webgl2", None, "WebGL2 is not supported yet"), ("browser", "glsl", "--backend glsl")],
)
def test_what_a_browser_device_cannot_run_is_refused_before_any_launch(
    selector: str, language: str | None, message: str
) -> None:
    options = BrowserOptions(executable="/nonexistent/chrome")  # a launch would fail with another message
    with pytest.raises(DeviceNotFoundError, match=message):
        request_device(selector, language, options)


def _native() -> DeviceInfo:
    return DeviceInfo(0, "wgpu", "wgsl", "vulkan", "SwiftShader Device (Subzero)", "google", 0x1AE0, 0, "", "cpu",
                      "cpu", "google-swiftshader-vulkan", Limits(subgroup_size=4))  # fmt: skip


def test_browser_targets_come_first_and_carry_the_adapters_words(tmp_path: Path) -> None:
    spec = get_op("gemm")
    problem = spec.parse_problem("64x64x64")
    params = spec.default_params(problem, Limits(), "wgsl")
    record = new_record(spec, "wgsl", problem, kernel_hash(spec, "wgsl"), params, 1e-3, 2e-3, {}, "")
    db = TuningDB(tmp_path)
    browser = device_info(SWIFTSHADER, 0)
    for info in (_native(), browser):  # the native file sorts first by name
        db.update(device_meta(info, info.limits.subgroup_size), [record])
    targets = select_targets(db)
    assert [t.id for t in targets][:2] == ["google-swiftshader-webgpu/wgsl", "google-swiftshader-vulkan/wgsl"]
    first = targets[0].device
    assert first is not None and first["keywords"] == ["swiftshader"] and first["api"] == "webgpu"
    assert select_targets(db, ["browser"])[0].id == "google-swiftshader-webgpu/wgsl"


def test_browser_keywords_are_every_word_the_browser_said() -> None:
    meta = {"fingerprint": "nvidia-ampere-webgpu", "vendor": "nvidia", "api": "webgpu"}
    assert device_keywords({**meta, "adapter": "nvidia ampere nvidia geforce rtx 3080"}) == [
        "ampere",
        "geforce",
        "rtx",
        "3080",
    ]
    assert device_keywords({**meta, "fingerprint": "nvidia-rtx-3080-vulkan", "api": "vulkan"}) == ["rtx", "3080"]
    with pytest.raises(ExportError, match="'adapter' must be a string"):
        device_keywords({**meta, "adapter": ["ampere"]})
