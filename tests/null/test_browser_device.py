"""Browser devices as data: identity from GPUAdapterInfo, selectors that launch nothing, bundle targets for them."""

from __future__ import annotations

import os
import subprocess
import sys
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


def _webgl2(renderer: str, vendor: str) -> dict[str, object]:
    """A WebGL2 page's ``open`` answer (agent-webgl2.js): its unmasked renderer and vendor, and its limits."""
    return {
        "api": "webgl2",
        "renderer": renderer,
        "vendor": vendor,
        "desc": f"{renderer} {vendor}".lower(),
        "timestamps": False,
        "userAgent": HEADLESS_UA,
        "limits": {"maxTextureSize": 16384, "maxDrawBuffers": 8, "maxTextureImageUnits": 16},
    }


@pytest.mark.parametrize(
    ("renderer", "vendor", "slug", "name", "cls"),
    [
        ("ANGLE (Google, Vulkan 1.3.0 (SwiftShader Device (Subzero) (0x0000C0DE)), SwiftShader driver)",
         "Google Inc. (Google)", "google-swiftshader-webgl2", "Vulkan 1.3.0 (SwiftShader Device (Subzero))", "cpu"),
        ("ANGLE (NVIDIA, NVIDIA GeForce RTX 3060 (0x00002504) Direct3D11 vs_5_0 ps_5_0, D3D11)",
         "Google Inc. (NVIDIA)", "nvidia-geforce-rtx-3060-webgl2", "NVIDIA GeForce RTX 3060", "dgpu"),
        ("ANGLE (Apple, ANGLE Metal Renderer: Apple M2, Unspecified Version)",
         "Google Inc. (Apple)", "apple-m2-webgl2", "Apple M2", "igpu"),
        ("Mali-G78", "ARM", "arm-mali-g78-webgl2", "Mali-G78", "igpu"),
    ],
)  # fmt: skip
def test_a_webgl2_identity_comes_from_the_unmasked_renderer(
    renderer: str, vendor: str, slug: str, name: str, cls: str
) -> None:
    info = device_info(_webgl2(renderer, vendor), 0, "131.0.6778.85")
    assert (info.slug, info.name, info.device_class) == (slug, name, cls)
    assert (info.api, info.language, info.backend) == ("webgl2", "glsl", "browser-webgl2")
    assert info.adapter == f"{renderer} {vendor}".lower() and info.is_browser
    assert device_info(_webgl2(renderer, vendor), 0, backend="remote").backend == "remote-webgl2"
    # capped at what every WebGL2 device offers, as native GL tuning is: a tuned config then runs anywhere
    assert (info.limits.max_texture_size, info.limits.max_draw_buffers) == (4096, 4)
    small = {**_webgl2(renderer, vendor), "limits": {"maxTextureSize": 2048, "maxDrawBuffers": 1}}
    assert (device_info(small, 0).limits.max_texture_size, device_info(small, 0).limits.max_draw_buffers) == (2048, 1)


def test_only_the_browser_and_remote_words_request_a_page() -> None:
    requested = [n for n, e in BACKENDS.items() if e.requested_as]
    assert requested == ["browser", "browser-webgl2", "remote", "remote-webgl2"]
    assert requested_backend("browser") == requested_backend(" Browser:webgpu ") == "browser"
    assert requested_backend(" Browser:webgl2 ") == "browser-webgl2"
    assert requested_backend("browser:webgl1") == "browser"  # whose request_device says why not
    assert requested_backend("remote:webgpu") == "remote" and requested_backend("remote:webgl2") == "remote-webgl2"
    assert requested_backend("swiftshader") is None and requested_backend(0) is None


@pytest.mark.parametrize(
    ("selector", "language", "message"),
    [
        ("browser:webgl1", None, "GLSL on WebGL2 \\(--device browser:webgl2\\), not 'webgl1'"),
        ("browser", "glsl", "--backend glsl"),
        ("browser:webgl2", "wgsl", "runs GLSL kernels on webgl2; --backend wgsl"),
    ],
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


def test_a_vendor_token_does_not_depend_on_the_process_hash_seed() -> None:
    # "Google Inc. (NVIDIA)" and "Mesa Intel(R) UHD" name two vendors each: the token must not follow set order
    code = "from kernelforge.devices import vendor_token as v; print(v(0, 'Google Inc. (NVIDIA)', 'Mesa Intel(R) UHD'))"
    seen = {
        subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONHASHSEED": str(seed)},
                       capture_output=True, text=True, check=True).stdout.strip()
        for seed in range(6)
    }  # fmt: skip
    assert seen == {"google"}
