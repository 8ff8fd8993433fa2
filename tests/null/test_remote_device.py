"""``--device remote`` without a browser: the page-numbered handles, the adapter check, the flags' syntax."""

from __future__ import annotations

import base64
from typing import Any

import numpy as np
import pytest

from kernelforge.errors import DeviceDisconnectedError, DeviceNotFoundError
from kernelforge.graph.program import Buffer
from kernelforge.runtime.backends.browser import BrowserBackend, device_info, register_page
from kernelforge.runtime.backends.remote import refusal, request_device
from kernelforge.runtime.remote import RemoteOptions, parse_listen

from .test_browser_device import NVIDIA, SWIFTSHADER


class FakePages:
    """An :class:`~kernelforge.runtime.agent.Agent` whose page can be replaced, as a remote one is on a reload."""

    version = ""

    def __init__(self) -> None:
        self.page = 1
        self.sent: list[tuple[int, str, dict[str, Any]]] = []
        self.last_id = 0

    def wait_page(self) -> int:
        return self.page

    def call(self, op: str, args: dict[str, Any], page: int) -> Any:
        if page != self.page:
            raise DeviceDisconnectedError(f"{op}: page {page} went away")
        self.sent.append((page, op, args))
        self.last_id += 1
        if op == "compile":
            return {"kernel": self.last_id}
        if op == "read":
            return base64.b64encode(np.zeros(args["bytes"] // 4, np.float32).tobytes()).decode()
        return None if op == "write" else self.last_id


def _backend() -> tuple[BrowserBackend, FakePages]:
    pages = FakePages()
    info = device_info(SWIFTSHADER, register_page(pages, SWIFTSHADER), backend="remote")
    return BrowserBackend(info), pages


def test_handles_of_a_page_that_went_away_are_never_sent_to_the_next_one() -> None:
    backend, pages = _backend()
    buffer = backend.alloc(Buffer(64))
    kernel = backend.compile("@compute @workgroup_size(1) fn main() {}", "k")
    assert backend.compile("@compute @workgroup_size(1) fn main() {}", "k") is kernel  # cached on its page
    backend.write(buffer, np.ones(16, np.float32))
    pages.page = 2  # a reload: the new page holds nothing of the old one
    sent = len(pages.sent)
    with pytest.raises(DeviceDisconnectedError):
        backend.write(buffer, np.ones(16, np.float32))
    with pytest.raises(DeviceDisconnectedError):
        backend.read(buffer, 16)
    assert len(pages.sent) == sent  # refused before anything went out
    again = backend.compile("@compute @workgroup_size(1) fn main() {}", "k")
    assert again is not kernel and again.page == 2 and pages.sent[-1][:2] == (2, "compile")  # compiled anew
    fresh = backend.alloc(Buffer(64))
    assert fresh.page == 2 and backend.read(fresh, 16).shape == (16,)


def test_dropped_handles_are_freed_in_their_own_page_only() -> None:
    backend, pages = _backend()
    old = backend.alloc(Buffer(16))
    del old  # freed by the next call in page 1...
    pages.page = 2
    kept = backend.alloc(Buffer(16))  # ...but page 1 is gone: nothing to free in page 2
    assert all("release" not in args for _, _, args in pages.sent)
    dropped_id = kept.id
    del kept
    backend.alloc(Buffer(16))
    assert pages.sent[-1][2]["release"] == [dropped_id]


def test_a_page_with_another_adapter_or_other_limits_is_refused() -> None:
    assert refusal(SWIFTSHADER, dict(SWIFTSHADER)) is None
    other = refusal(SWIFTSHADER, NVIDIA)
    assert (
        other is not None and "this study tunes google-swiftshader-webgpu" in other and "nvidia-ampere-webgpu" in other
    )
    smaller = {**SWIFTSHADER, "limits": {**SWIFTSHADER["limits"], "maxComputeWorkgroupStorageSize": 8192}}
    assert "other limits or timestamp queries" in (refusal(SWIFTSHADER, smaller) or "")
    assert refusal(SWIFTSHADER, {**SWIFTSHADER, "timestamps": False}) is not None


def test_a_remote_device_is_a_browser_device_of_its_own_backend() -> None:
    info = device_info(SWIFTSHADER, 0, backend="remote")
    assert (info.backend, info.slug, info.is_browser) == ("remote", "google-swiftshader-webgpu", True)
    firefox = {**NVIDIA, "userAgent": "Mozilla/5.0 (X11; Linux x86_64; rv:141.0) Gecko/20100101 Firefox/141.0"}
    assert device_info(firefox, 0).driver == "Firefox 141.0"
    safari = "Mozilla/5.0 (iPhone; CPU iPhone OS 26_0 like Mac OS X) AppleWebKit/605.1.15 Version/26.0 Safari/604.1"
    assert device_info({**NVIDIA, "userAgent": safari}, 0).driver == "Safari 26.0"


@pytest.mark.parametrize(
    ("text", "parsed"),
    [("127.0.0.1:0", ("127.0.0.1", 0)), ("0.0.0.0:8765", ("0.0.0.0", 8765)), ("[::1]:9000", ("::1", 9000))],
)
def test_listen_addresses(text: str, parsed: tuple[str, int]) -> None:
    assert parse_listen(text) == parsed


@pytest.mark.parametrize("text", ["8765", "host", ":8765", "host:port", "host:70000"])
def test_bad_listen_addresses_are_refused_before_anything_listens(text: str) -> None:
    with pytest.raises(ValueError, match="expected HOST:PORT"):
        parse_listen(text)
    with pytest.raises(DeviceNotFoundError, match="expected HOST:PORT"):
        request_device("remote", None, RemoteOptions(listen=text))


def test_what_a_remote_device_cannot_run_is_refused_before_serving() -> None:
    with pytest.raises(DeviceNotFoundError, match="not 'webgl1'"):
        request_device("remote:webgl1", None, RemoteOptions(listen="nonsense"))
    with pytest.raises(DeviceNotFoundError, match="--backend wgsl"):
        request_device("remote:webgl2", "wgsl", RemoteOptions(listen="nonsense"))
    with pytest.raises(DeviceNotFoundError, match="--backend glsl"):
        request_device("remote", "glsl", RemoteOptions(listen="nonsense"))
