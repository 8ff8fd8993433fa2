"""Headless Chromium through Playwright, with the flags this project's machines need.

Chromium is Debian's (``KF_CHROMIUM``), never one Playwright downloads. WebGPU runs on SwiftShader with
``--enable-unsafe-webgpu``; WebGL2 runs on ANGLE over SwiftShader. The flags and the local server are the ones
``--device browser`` uses (:mod:`kernelforge.runtime.agent`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from kernelforge import _config
from kernelforge.runtime.agent import FLAGS, serve, unavailable

__all__ = ["FLAGS", "available", "page", "serve"]


def available() -> str | None:
    """Return why a headless Chromium cannot be started here, or None when it can."""
    return unavailable(_config.chromium())


@contextlib.contextmanager
def page() -> Iterator[Any]:
    """Yield a fresh page of a headless Chromium; the browser is closed afterwards."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=_config.chromium(), headless=True, args=list(FLAGS))
        try:
            yield browser.new_page()
        finally:
            browser.close()
