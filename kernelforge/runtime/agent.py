"""A browser page running the tuning agent (``export/js/agent.js``), driven through its ``call(op, args)``.

The page is served from 127.0.0.1 (a secure context, so WebGPU is exposed) and opened in a browser Playwright
launches: Debian's Chromium by default, or any Chrome/Edge executable. Playwright's synchronous API may only be
used from the thread that started it, and only one instance per thread; the page therefore lives in a thread of
its own, so callers on any thread (and a test's own Playwright page) can use it. Everything goes through
:meth:`PageAgent.call`, the one entry point a remote page's WebSocket also carries (:mod:`kernelforge.runtime.remote`).
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import http.server
import queue
import shutil
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from kernelforge import _config
from kernelforge.errors import DeviceDisconnectedError, DeviceNotFoundError, KernelforgeError

# The agent and its page are static files beside the bundle runtime, linted and type-checked with it.
AGENT_DIR = Path(__file__).resolve().parent.parent / "export" / "js"
AGENT_PAGE = "agent.html"

FLAGS = (
    "--no-sandbox",
    "--enable-unsafe-webgpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
)
"""Chromium flags: WebGPU where Linux Chromium keeps it behind a flag (SwiftShader on GPU-less machines); the
background-networking ones keep a closed network from stalling start-up."""


@dataclass(frozen=True)
class BrowserOptions:
    """How ``--device browser`` starts its browser."""

    executable: str = ""
    """The Chrome/Chromium/Edge executable; empty: ``KF_CHROMIUM`` (Debian's Chromium by default)."""
    args: tuple[str, ...] = ()
    """Extra command-line flags, after :data:`FLAGS` (e.g. ``--use-angle=vulkan``, ``--enable-features=...``)."""
    headed: bool = False
    """Show the window (headless by default)."""

    @property
    def path(self) -> str:
        """The executable to launch."""
        return self.executable or _config.chromium()


def unavailable(executable: str) -> str | None:
    """Return why a browser cannot be launched from ``executable`` here, or None when it can."""
    if not (Path(executable).is_file() or shutil.which(executable)):
        return f"no browser at {executable} (apt-get install chromium, set KF_CHROMIUM or pass --browser-executable)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (pip install playwright)"
    return None


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


class Agent(Protocol):
    """A page running the tuning agent, driven through its ``call(op, args)``: a local one or a remote one.

    A remote device's page may go away and come back; each page that connects gets the next number, and a call
    names the page its handles live in, so nothing is ever sent to a page that did not make it.
    """

    version: str
    """The browser's version where the driver of the page knows it (else "": the page's user agent says)."""

    def wait_page(self) -> int:
        """Return the number of the connected page, waiting for one to connect."""

    def call(self, op: str, args: dict[str, Any], page: int) -> Any:
        """Run ``op`` of page ``page``'s agent and return its JSON result.

        Raises:
            DeviceDisconnectedError: When that page is gone (or goes away before it answers).
            KernelforgeError: When the page throws (its message names the op).
        """


_Job = tuple[Callable[[Any], Any], "Future[Any]"]
LOST = "kernelforge agent: device lost: "
"""How the agent's message starts when its device was lost (a GPU reset, a crashed GPU process): the page is
then opened again, and the op fails as a page that went away does, not as the kernel's fault."""


class PageAgent:
    """One launched browser with the agent page open; :meth:`call` runs an agent op and returns its JSON result.

    Calls are serialised (one op at a time, in order). :meth:`close` (also run at exit) closes the browser.

    Raises:
        DeviceNotFoundError: When the browser cannot be launched or the page has no WebGPU agent.
    """

    def __init__(self, options: BrowserOptions) -> None:
        reason = unavailable(options.path)
        if reason:
            raise DeviceNotFoundError(f"--device browser: {reason}")
        self.options = options
        self.version = ""
        """The browser's version, as Playwright reports it."""
        self._page = 0
        """The number of the page's current device: one more each time a lost device is opened again."""
        self._opened: tuple[dict[str, Any], Any] | None = None
        """The first ``open`` call's arguments and answer: what a reopened device must be again."""
        self._jobs: queue.Queue[_Job | None] = queue.Queue()
        self._closed = False
        started: Future[None] = Future()
        # a daemon thread: at exit, atexit's close() still finds it running and shuts the browser down
        self._thread = threading.Thread(target=self._main, args=(started,), name="kernelforge-browser", daemon=True)
        self._thread.start()
        try:
            started.result()
        except Exception as exc:  # Playwright's message ends with its call log: the first line says what failed
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise DeviceNotFoundError(f"--device browser: {options.path} did not open the page: {first}") from None
        atexit.register(self.close)

    def _main(self, started: Future[None]) -> None:
        from playwright.sync_api import sync_playwright

        try:
            with serve(AGENT_DIR) as base, sync_playwright() as pw:
                browser = pw.chromium.launch(
                    executable_path=self.options.path,
                    headless=not self.options.headed,
                    args=[*FLAGS, *self.options.args],
                )
                try:
                    page = browser.new_page()
                    page.goto(base + AGENT_PAGE)
                    page.wait_for_function("() => window.kernelforgeAgent", timeout=30_000)
                    self.version = browser.version
                    started.set_result(None)
                    self._loop(page)
                finally:
                    browser.close()
        except BaseException as exc:  # launch failures go to the caller; later ones end the loop
            if not started.done():
                started.set_exception(exc)
            self._fail_pending(exc)

    def _loop(self, page: Any) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            fn, done = job
            try:
                done.set_result(fn(page))
            except BaseException as exc:
                done.set_exception(exc)

    def _fail_pending(self, exc: BaseException) -> None:
        self._closed = True
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                return
            if job is not None:
                job[1].set_exception(KernelforgeError(f"the browser page is gone: {exc}"))

    def wait_page(self) -> int:
        """Return the number of the page's current device (0, then one more per lost device opened again)."""
        return self._page

    def _run(self, fn: Callable[[Any], Any]) -> Any:
        """Run ``fn(page)`` on the page's thread and return its result."""
        if self._closed or not self._thread.is_alive():
            raise KernelforgeError("browser agent: the browser was closed")
        done: Future[Any] = Future()
        self._jobs.put((fn, done))
        return done.result()

    def call(self, op: str, args: dict[str, Any], page: int = 0) -> Any:
        """Run ``op`` of the page's agent with ``args`` (JSON values) and return its result.

        Raises:
            DeviceDisconnectedError: When the handles of ``page`` died with a lost device, or the device is lost
                under this op (the page is reloaded and its device opened again for the next one).
            DeviceNotFoundError: When the device cannot be opened again as it was.
            KernelforgeError: When the page throws (its message names the op) or the browser is gone.
        """
        if page != self._page:
            raise DeviceDisconnectedError(f"browser agent: {op}: the device of these handles was lost")
        try:
            result = self._run(lambda p: p.evaluate(_CALL, [op, args]))
        except KernelforgeError:
            raise
        except Exception as exc:
            message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            if LOST in message and self._opened is not None:
                self._reopen(message[message.index(LOST) + len(LOST) :])
                raise DeviceDisconnectedError(f"browser agent: {op}: {message[message.index(LOST) :]}") from None
            raise KernelforgeError(f"browser agent: {op}: {message}") from None
        if op == "open" and self._opened is None:
            self._opened = (args, result)
        return result

    def _reopen(self, why: str) -> None:
        """Reload the page and open its device again (the same one, or stop: the study is that device's)."""
        assert self._opened is not None
        args, first = self._opened

        def reload(p: Any) -> Any:
            p.reload()
            p.wait_for_function("() => window.kernelforgeAgent", timeout=30_000)
            return p.evaluate(_CALL, ["open", args])

        try:
            again = self._run(reload)
        except Exception as exc:
            first_line = (str(exc).splitlines() or [type(exc).__name__])[0]
            raise DeviceNotFoundError(
                f"--device browser: the device was lost ({why}) and did not open again: {first_line}"
            ) from None
        if again.get("desc") != first.get("desc") or bool(again.get("fallback")) != bool(first.get("fallback")):
            raise DeviceNotFoundError(
                f"--device browser: the device was lost ({why}) and the browser now offers another adapter "
                f"({again.get('desc')!r}, not {first.get('desc')!r}): finished trials are kept; tune again"
            )
        self._page += 1

    def close(self) -> None:
        """Close the page and the browser (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._jobs.put(None)
        self._thread.join(timeout=30)


_CALL = "([op, args]) => window.kernelforgeAgent.call(op, args)"
