"""The tuning page served to any browser (``kernelforge tune --device remote``), driven over a WebSocket.

One server on one port (the ``websockets`` package's asyncio server, in a thread of its own, as
:mod:`kernelforge.runtime.agent` runs Playwright in one) serves the agent page and the WebSocket that drives it.
Every path starts with a random token, on loopback too (other users of the machine, and any web page open in
the user's own browser, can reach a loopback port): a request without it is refused with 403, the page and the
WebSocket alike, so nobody else can drive the study or feed it results. The page connects back and answers each
message ``{id, op, args}`` with ``{id, result}`` or ``{id, error}``: the agent's ``call(op, args)``, which
Playwright's evaluate bridge carries for ``--device browser``.

Pages come and go (a reload, a sleeping tab, a dropped connection). Each page that connects is asked for its
adapter (``open``, which also empties a page that reconnects) and numbered; the first one decides the device,
a later one whose adapter the ``refuse`` callback rejects is turned away with its reason, and one it accepts
replaces the page before it. Calls name the page they are for (:class:`~kernelforge.runtime.agent.Agent`), so
a call for a page that has gone raises :class:`~kernelforge.errors.DeviceDisconnectedError`.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import hmac
import json
import logging
import secrets
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from kernelforge.errors import DeviceDisconnectedError, DeviceNotFoundError, KernelforgeError
from kernelforge.runtime.agent import AGENT_DIR, AGENT_PAGE, LOST

SOCKET = "socket"
"""The WebSocket's path, after the token."""
_JS = "text/javascript; charset=utf-8"
FILES = {AGENT_PAGE: "text/html; charset=utf-8", "agent.js": _JS, "agent-webgl2.js": _JS}
"""What is served after the token: the agent page and its script (static files, linted with the runtime)."""
CALL_TIMEOUT_S = 120.0
"""A call unanswered this long counts as a lost page (a hung GPU, a frozen tab): its connection is closed."""
FINISHED, REPLACED, REFUSED = 1000, 4001, 4003
"""Close codes after which the page does not reconnect (any other close, it does)."""
RESTART = 1012
"""The close code that asks the page to reconnect at once (its device was lost: it opens a new one)."""

# a port open to a network gets scanners' requests, which websockets would log with tracebacks
_LOG = logging.getLogger("kernelforge.remote")
_LOG.addHandler(logging.NullHandler())
_LOG.propagate = False


def _print(line: str) -> None:
    # one write: a line said from the server's thread must not land inside one the tuner is printing
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


@dataclass(frozen=True)
class RemoteOptions:
    """How ``--device remote`` serves its tuning page."""

    listen: str = "127.0.0.1:0"
    """``HOST:PORT`` to listen on (port 0: a free one, printed in the URL); ``0.0.0.0:PORT`` for other devices."""
    connect_timeout: float = 600.0
    """Seconds to wait for the first page, and for a page to come back after one went away."""
    tls_cert: str = ""
    """A PEM certificate (chain) to serve HTTPS with: browsers expose WebGPU only to secure contexts, which a
    plain ``http://`` page is on loopback only."""
    tls_key: str = ""
    """Its private key (empty: the key is in ``tls_cert``)."""
    announce: Callable[[str], None] = _print
    """Where the URL and the pages' comings and goings are said (default: printed)."""


def parse_listen(text: str) -> tuple[str, int]:
    """Return ``(host, port)`` of ``HOST:PORT`` (``[::1]:8765`` for IPv6).

    Raises:
        ValueError: When ``text`` is not one.
    """
    host, sep, port = text.strip().rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"--listen {text!r}: expected HOST:PORT, e.g. 127.0.0.1:0 (a free port) or 0.0.0.0:8765")
    return host, int(port)


def _lan_address() -> str:
    """This machine's address on its default route (what other devices on the network reach it by)."""
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(("192.0.2.1", 9))  # a documentation address: no packet is sent, the OS only picks a route
        return str(probe.getsockname()[0])
    return socket.gethostname()


def _url_host(host: str) -> str:
    if host in ("", "0.0.0.0", "::"):  # every interface: name the one other devices most likely reach
        host = _lan_address()
    return f"[{host}]" if ":" in host else host


def _tls(options: RemoteOptions) -> ssl.SSLContext | None:
    if not options.tls_cert:
        if options.tls_key:
            raise DeviceNotFoundError("--tls-key: only with --tls-cert")
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(options.tls_cert, options.tls_key or None)
    except (OSError, ssl.SSLError) as exc:
        raise DeviceNotFoundError(f"--tls-cert {options.tls_cert}: cannot load it ({exc})") from None
    return context


class _PageError(KernelforgeError):
    """The page's agent threw (its message)."""


@dataclass(eq=False)
class _Page:
    """One connected page: its WebSocket and the calls waiting for its answers."""

    ws: Any
    number: int = 0
    """0 until accepted; then the page's number (1, 2, ...: one per connection accepted)."""
    pending: dict[int, asyncio.Future[Any]] = field(default_factory=dict)
    last_id: int = 0
    gone: str = ""
    """Why it went away, once it has."""

    @property
    def address(self) -> str:
        """The page's network address."""
        remote = self.ws.remote_address
        return str(remote[0]) if remote else "?"

    async def request(self, op: str, args: Mapping[str, Any]) -> Any:
        """Send one call and wait for its answer."""
        from websockets.exceptions import ConnectionClosed

        if self.gone:
            raise DeviceDisconnectedError(self.gone)
        self.last_id += 1
        answer: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.pending[self.last_id] = answer
        with contextlib.suppress(ConnectionClosed):  # read() then fails every pending call with the reason
            await self.ws.send(json.dumps({"id": self.last_id, "op": op, "args": args}))
        return await answer

    async def read(self) -> None:
        """Hand each answer to its call until the connection ends; then fail the calls still waiting."""
        from websockets.exceptions import ConnectionClosed

        try:
            async for text in self.ws:
                message = json.loads(text)
                answer = self.pending.pop(message["id"], None)
                if answer is None or answer.done():
                    continue
                if "error" in message:
                    answer.set_exception(_PageError(str(message["error"])))
                else:
                    answer.set_result(message.get("result"))
        except ConnectionClosed:
            pass
        except (ValueError, KeyError, TypeError):  # not the agent's protocol
            await self.ws.close(REFUSED, "not a kernelforge agent message")
        finally:
            code, reason = self.ws.close_code, self.ws.close_reason
            self.gone = f"the page went away (close code {code}{': ' + reason if reason else ''})"
            for answer in self.pending.values():
                if not answer.done():
                    answer.set_exception(DeviceDisconnectedError(self.gone))
            self.pending.clear()


class RemoteAgent:
    """The server of ``--device remote``: :attr:`url` serves the agent page, whose WebSocket :meth:`call` drives.

    Args:
        options: Where to listen, for how long to wait, TLS.
        refuse: ``refuse(first, page)`` of two pages' ``open`` answers: why ``page`` may not continue the study
            of ``first``, or None when it may.
        open_args: What each page's agent is opened with (the API: WebGPU by default).

    Raises:
        DeviceNotFoundError: When the ``websockets`` package is missing or the server cannot listen.
    """

    def __init__(
        self,
        options: RemoteOptions,
        refuse: Callable[[Mapping[str, Any], Mapping[str, Any]], str | None],
        open_args: Mapping[str, Any] | None = None,
    ) -> None:
        try:
            import websockets.asyncio.server  # noqa: F401
        except ImportError:
            raise DeviceNotFoundError(
                "--device remote: the websockets package is not installed (pip install 'kernelforge[remote]')"
            ) from None
        try:
            host, port = parse_listen(options.listen)
        except ValueError as exc:
            raise DeviceNotFoundError(str(exc)) from None
        # "localhost" would bind ::1 and 127.0.0.1, each on a port of its own when the port is 0
        host = "127.0.0.1" if host == "localhost" else host
        self.options = options
        self.version = ""
        """Unknown here: the page's user agent says."""
        self.token = secrets.token_urlsafe(12)
        self.first: Mapping[str, Any] | None = None
        """The ``open`` answer of the first page accepted: the device of the study."""
        self.closed = False
        self._refuse = refuse
        self._open_args = dict(open_args or {})
        self._tls = _tls(options)
        self._files = {name: (AGENT_DIR / name).read_bytes() for name in FILES}
        self._cond = threading.Condition()
        self._page: _Page | None = None
        self._accepted = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        started: Future[int] = Future()
        self._thread = threading.Thread(
            target=lambda: asyncio.run(self._serve(host, port, started)), name="kernelforge-remote", daemon=True
        )
        self._thread.start()
        try:
            bound = started.result(timeout=30)
        except OSError as exc:
            raise DeviceNotFoundError(
                f"--listen {options.listen}: cannot listen there ({exc.strerror or exc})"
            ) from None
        self.url = f"{'https' if self._tls else 'http'}://{_url_host(host)}:{bound}/{self.token}/"
        """The address to open (printed): it redirects to the agent page, told to connect back."""
        atexit.register(self.close)

    async def _serve(self, host: str, port: int, started: Future[int]) -> None:
        from websockets.asyncio.server import serve

        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        try:
            server = await serve(
                self._connected,
                host,
                port,
                process_request=self._http,
                ssl=self._tls,
                compression=None,  # base64 of floats compresses little, at a cost on a phone's CPU
                max_size=None,  # a read-back is as large as the kernel's output
                close_timeout=2,  # at the end, a client that never closes its side does not hold the run up
                logger=_LOG,
            )
        except BaseException as exc:
            started.set_exception(exc)
            return
        started.set_result(int(server.sockets[0].getsockname()[1]))
        try:
            await self._stop.wait()
        finally:
            page = self._page
            if page is not None:
                with contextlib.suppress(Exception):
                    await page.ws.close(FINISHED, "tuning finished")
            server.close()
            await server.wait_closed()

    def _http(self, connection: Any, request: Any) -> Any:
        """Answer a plain request (the page, its script), or let the WebSocket's handshake go on (None)."""
        from websockets.datastructures import Headers
        from websockets.http11 import Response

        parts = request.path.partition("?")[0].split("/", 2)
        token = parts[1] if len(parts) > 1 else ""
        if not hmac.compare_digest(token.encode(), self.token.encode()):
            return connection.respond(
                HTTPStatus.FORBIDDEN, "a wrong or missing token: open the URL kernelforge printed\n"
            )
        rest = parts[2] if len(parts) > 2 else ""
        if rest == SOCKET:
            return None
        if rest == "":  # the printed URL: the agent page, told to connect back
            found = connection.respond(HTTPStatus.FOUND, "")
            found.headers["Location"] = f"/{self.token}/{AGENT_PAGE}?ws={SOCKET}"
            return found
        if rest not in FILES:
            return connection.respond(HTTPStatus.NOT_FOUND, f"no {rest} here\n")
        body = self._files[rest]
        headers = [("Content-Type", FILES[rest]), ("Content-Length", str(len(body))), ("Cache-Control", "no-store")]
        return Response(HTTPStatus.OK, "OK", Headers([*headers, ("Connection", "close")]), body)

    async def _connected(self, ws: Any) -> None:
        """Serve one page: ask its adapter, accept or refuse it, then answer its calls until it goes."""
        page = _Page(ws)
        reader = asyncio.create_task(page.read())
        try:
            try:
                raw = await asyncio.wait_for(page.request("open", self._open_args), CALL_TIMEOUT_S)
            except _PageError as exc:  # no WebGPU here (not a secure context, no adapter)
                await self._turn_away(page, f"this page cannot tune: {exc}")
                return
            except (DeviceDisconnectedError, asyncio.TimeoutError):
                return
            # no await between this check and taking the page: two first pages are checked one after the other
            reason = None if self.first is None else self._refuse(self.first, raw)
            if reason is not None:
                await self._turn_away(page, reason)
                return
            with self._cond:
                if self.closed:
                    return
                before, self._page = self._page, page
                self._accepted += 1
                page.number = self._accepted
                self.first = self.first or raw
                self._cond.notify_all()
            if before is not None:
                await before.ws.close(REPLACED, "another page took over")
            self.options.announce(f"page {page.number} connected from {page.address}: {raw.get('desc') or '?'}")
            await reader
        finally:
            with contextlib.suppress(Exception):
                if not page.number:  # never accepted: a refused page is closed already, a silent one now
                    await ws.close(1011, "no answer to open")
                await reader
            with self._cond:
                lost = self._page is page
                if lost:
                    self._page = None
            if lost and not self.closed:
                timeout = self.options.connect_timeout
                self.options.announce(
                    f"page {page.number}: {page.gone}; waiting up to {timeout:g} s for a page to open {self.url}"
                )

    async def _turn_away(self, page: _Page, reason: str) -> None:
        self.options.announce(f"refused a page from {page.address}: {reason}")
        with contextlib.suppress(Exception):
            await page.ws.send(json.dumps({"refused": reason}))
            await page.ws.close(REFUSED, "refused")

    def wait_page(self) -> int:
        """Return the number of the connected page, waiting up to ``connect_timeout`` seconds for one.

        Raises:
            DeviceNotFoundError: When no page (came back and) connected in time.
        """
        timeout = self.options.connect_timeout
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._page is None:
                left = deadline - time.monotonic()
                if self.closed or left <= 0:
                    if self.first is None:
                        raise DeviceNotFoundError(
                            f"--device remote: no page opened {self.url} within {timeout:g} s (--connect-timeout)"
                        )
                    raise DeviceNotFoundError(
                        f"--device remote: no page came back to {self.url} within {timeout:g} s (--connect-timeout); "
                        "finished trials are kept in the study: run the same command again to resume"
                    )
                self._cond.wait(left)
            return self._page.number

    def call(self, op: str, args: dict[str, Any], page: int) -> Any:
        """Run ``op`` of page ``page``'s agent and return its JSON result (see :class:`Agent`).

        Raises:
            DeviceDisconnectedError: When that page has gone, goes before it answers, or does not answer in
                :data:`CALL_TIMEOUT_S` (its connection is then closed, and the page reconnects).
            KernelforgeError: When the page throws (its message names the op).
        """
        with self._cond:
            current = self._page
        if current is None or current.number != page or self._loop is None:
            raise DeviceDisconnectedError(f"remote agent: {op}: page {page} went away")
        answer = asyncio.run_coroutine_threadsafe(current.request(op, args), self._loop)
        try:
            return answer.result(CALL_TIMEOUT_S)
        except FutureTimeout:
            answer.cancel()
            asyncio.run_coroutine_threadsafe(current.ws.close(1011, "no answer"), self._loop)
            raise DeviceDisconnectedError(f"remote agent: {op}: no answer within {CALL_TIMEOUT_S:g} s") from None
        except _PageError as exc:
            if LOST in str(exc):
                # the page reconnects, opening its device anew (or is refused if the browser now offers another)
                asyncio.run_coroutine_threadsafe(current.ws.close(RESTART, "device lost"), self._loop)
                raise DeviceDisconnectedError(f"remote agent: {op}: {exc}") from None
            raise KernelforgeError(f"remote agent: {op}: {exc}") from None

    def close(self) -> None:
        """Tell the page tuning has finished and stop serving (idempotent)."""
        with self._cond:
            if self.closed:
                return
            self.closed = True
            self._cond.notify_all()
        if self._loop is not None and self._stop is not None:
            with contextlib.suppress(RuntimeError):  # the loop already ended
                self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=15)
