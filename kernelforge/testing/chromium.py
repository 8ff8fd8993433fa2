"""Headless Chromium through Playwright, with the flags this project's machines need.

Chromium is Debian's (``KF_CHROMIUM``), never one Playwright downloads. WebGPU runs on SwiftShader with
``--enable-unsafe-webgpu``; WebGL2 runs on ANGLE over SwiftShader. The background-networking flags keep a
closed network from stalling start-up.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from kernelforge import _config

FLAGS = (
    "--no-sandbox",
    "--enable-unsafe-webgpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
)


def available() -> str | None:
    """Return why a headless Chromium cannot be started here, or None when it can."""
    exe = _config.chromium()
    if not (Path(exe).is_file() or shutil.which(exe)):
        return f"no Chromium at {exe} (apt-get install chromium, or set KF_CHROMIUM)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (pip install playwright)"
    return None


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


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass

    def end_headers(self) -> None:
        # no caching: a test or benchmark that rewrites a bundle must see the new files
        self.send_header("Cache-Control", "no-store")
        super().end_headers()


@contextlib.contextmanager
def serve(directory: str | Path) -> Iterator[str]:
    """Serve a directory over HTTP on 127.0.0.1 (a secure context, so WebGPU is exposed); yield the base URL."""
    handler = functools.partial(_QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
