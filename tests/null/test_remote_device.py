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
        """Every op run, a batch's one by one."""
        self.trips = 0
        self.last_id = 0

    def wait_page(self) -> int:
        return self.page

    def call(self, op: str, args: dict[str, Any], page: int) -> Any:
        if page != self.page:
            raise DeviceDisconnectedError(f"{op}: page {page} went away")
        self.trips += 1
        calls = args["calls"] if op == "batch" else [[op, args]]
        return [self._one(page, o, a) for o, a in calls][-1]

    def _one(self, page: int, op: str, args: dict[str, Any]) -> Any:
        self.sent.append((page, op, args))
        self.last_id += 1
        if op == "compile":
            return {"kernel": self.last_id}
        if op == "read":
            return base64.b64encode(np.zeros(args["bytes"] // 4, np.float32).tobytes()).decode()
        return None


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
    backend.read(buffer, 16)
    pages.page = 2  # a reload: the new page holds nothing of the old one
    sent = len(pages.sent)
    backend.write(buffer, np.ones(16, np.float32))  # sent with the next call that needs an answer: this read
    with pytest.raises(DeviceDisconnectedError):
        backend.read(buffer, 16)
    assert len(pages.sent) == sent  # refused before anything went out
    again = backend.compile("@compute @workgroup_size(1) fn main() {}", "k")
    assert again is not kernel and again.page == 2 and pages.sent[-1][:2] == (2, "compile")  # compiled anew
    fresh = backend.alloc(Buffer(64))
    assert fresh.page == 2 and backend.read(fresh, 16).shape == (16,)
    assert [op for p, op, _ in pages.sent[-2:]] == ["alloc", "read"]  # the write to the old page was dropped


def test_dropped_handles_are_freed_in_their_own_page_only() -> None:
    backend, pages = _backend()
    old = backend.alloc(Buffer(16))
    del old  # freed by the next call in page 1...
    pages.page = 2
    kept = backend.alloc(Buffer(16))  # ...but page 1 is gone: nothing to free in page 2
    backend.read(kept, 4)
    assert all(op != "release" for _, op, _ in pages.sent)
    dropped_id = kept.id
    del kept
    backend.read(backend.alloc(Buffer(16)), 4)
    assert [op for _, op, _ in pages.sent[-3:]] == ["alloc", "release", "read"]  # after the allocs, in one trip
    assert pages.sent[-2][2] == {"ids": [dropped_id]}


def test_calls_that_need_no_answer_go_with_the_next_that_does_and_inputs_cross_once() -> None:
    backend, pages = _backend()
    data = np.arange(4096, dtype=np.float32)  # 16 KiB: kept by the page
    for trial in range(3):  # as a study's trials do: the same input, fresh buffers
        trips = pages.trips
        buffer = backend.alloc(Buffer(data.nbytes))
        backend.write(buffer, data)
        backend.write(backend.alloc(Buffer(64)), np.ones(16, np.float32))  # small: sent each time
        assert pages.trips == trips  # nothing sent yet
        assert backend.read(buffer, 4).shape == (4,)
        assert pages.trips == trips + 1  # alloc, write, alloc, write, read: one round trip
        big, small = [args for _, op, args in pages.sent[-5:] if op == "write"]
        assert ("data" in big) == (trial == 0) and big["blob"]  # the same bytes cross once, then by their key
        assert "data" in small and "blob" not in small
    assert big["forget"] == []
    pages.page = 2  # a new page keeps nothing: the data crosses again, and the page forgets all it had
    backend.write(again := backend.alloc(Buffer(data.nbytes)), data)
    backend.read(again, 4)
    (write,) = [args for _, op, args in pages.sent[-3:] if op == "write"]
    assert "data" in write and write["forget"] == ["*"]


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


def test_the_page_keeps_at_most_the_budget_and_forgets_the_least_recent_first(monkeypatch: pytest.MonkeyPatch) -> None:
    from kernelforge.runtime.backends import browser

    monkeypatch.setattr(browser, "BLOB_BUDGET", 3 * 16384)
    backend, pages = _backend()
    blocks = [np.full(4096, k, np.float32) for k in range(4)]  # 16 KiB each: three fit

    def write(data: np.ndarray) -> dict[str, Any]:
        buffer = backend.alloc(Buffer(data.nbytes))
        backend.write(buffer, data)
        backend.read(buffer, 1)
        return next(args for _, op, args in reversed(pages.sent) if op == "write")

    keys = [write(b)["blob"] for b in blocks[:3]]
    assert "data" not in write(blocks[0])  # used again: now the most recent
    fourth = write(blocks[3])
    assert "data" in fourth and fourth["forget"] == [keys[1]]  # the least recently used made room
    assert "data" in write(blocks[1]) and "data" not in write(blocks[0])
