"""``--device remote[:webgl2]``: kernels tuned in whichever browser opens the tuning page (a phone, a laptop).

The backend is :class:`~kernelforge.runtime.backends.browser.BrowserBackend` over a page that
:mod:`kernelforge.runtime.remote` serves, rather than one Playwright opened. The first page that connects
decides the device (from its ``GPUAdapterInfo``, as for ``--device browser``); a page whose adapter has another
fingerprint, limits or timer is refused for the rest of the run, since the study and its records are the first
device's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kernelforge.devices import DeviceInfo
from kernelforge.errors import KernelforgeError
from kernelforge.runtime.backends.browser import (
    BrowserBackend,
    BrowserGlBackend,
    check_selector,
    device_info,
    open_args,
    page_agent,
    register_page,
)
from kernelforge.runtime.remote import RemoteAgent, RemoteOptions

_devices: dict[tuple[str, RemoteOptions], DeviceInfo] = {}


def refusal(first: Mapping[str, Any], page: Mapping[str, Any]) -> str | None:
    """Return why a page may not continue the study of the first page's device (None: it may)."""
    study, other = device_info(first, 0), device_info(page, 0)
    if study.slug != other.slug:
        return (
            f"this study tunes {study.slug} ({study.adapter or study.name}), but this page's adapter is {other.slug} "
            f"({other.adapter or other.name}): open the URL on the first device, or run another "
            "`kernelforge tune --device remote` for this one"
        )
    if study.limits != other.limits or bool(first.get("timestamps")) != bool(page.get("timestamps")):
        return (
            f"this page's {other.slug} ({other.driver}) has other limits or timestamp queries than the one this "
            f"study started on ({study.driver}): open the URL in that browser"
        )
    return None


def request_device(selector: str, language: str | None, options: RemoteOptions | None) -> DeviceInfo:
    """Serve the tuning page, print its URL and return the device of the first page that opens it.

    Raises:
        DeviceNotFoundError: When the selector asks for what this backend does not run, the server cannot
            listen, or no page connects within ``options.connect_timeout`` seconds.
    """
    options = options or RemoteOptions()
    word, api = check_selector(selector, language)
    key = (f"{word}:{api}", options)
    if key not in _devices or agent_of(_devices[key]).closed:
        agent = RemoteAgent(options, refusal, open_args(api))
        options.announce(f"tuning page: {agent.url}")
        options.announce(
            f"waiting up to {options.connect_timeout:g} s (--connect-timeout) for a browser with "
            f"{'WebGL2' if api == 'webgl2' else 'WebGPU'} to open it"
        )
        try:
            agent.wait_page()
        except KernelforgeError:
            agent.close()
            raise
        assert agent.first is not None
        _devices[key] = device_info(agent.first, register_page(agent, agent.first), backend="remote")
    return _devices[key]


def agent_of(info: DeviceInfo) -> RemoteAgent:
    """Return the server of a remote device (its ``url``; ``close()`` tells the page tuning has finished)."""
    agent = page_agent(info)
    assert isinstance(agent, RemoteAgent), f"{info.slug} is not a remote device"
    return agent


class RemoteBackend(BrowserBackend):
    """A remote page's WebGPU device: :class:`BrowserBackend`'s calls, carried by a WebSocket."""


class RemoteGlBackend(BrowserGlBackend):
    """A remote page's WebGL2 context: :class:`BrowserGlBackend`'s calls, carried by a WebSocket."""
