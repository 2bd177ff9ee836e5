"""A small HTTP/1.1 server connection on h11, able to hand its transport over after a WebSocket upgrade.

Why not aiohttp here: the data plane must give the raw (TLS) transport to the project's pump after the 101, with
the bytes read past the request, and aiohttp does not expose that. h11 does the parsing; this module does the I/O.

Theory of operation — one :class:`HttpServerProtocol` per TCP connection, one task (:meth:`_serve`) per protocol::

    read request head + body (bounded) ─▶ app.handle(request, conn) ─▶ response written ─▶ next cycle (keep-alive)
                                              │
                                              └─ returns None after calling conn.take_over(): the app now owns the
                                                 transport (WebSocket); this protocol is finished.

Reading is paused whenever the task is busy with a request, so a client cannot make the server buffer more than one
read beyond the request being served. Idle keep-alive connections are closed after ``idle_timeout`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import parse_qsl, unquote, urlsplit

import h11

__all__ = ["HttpRequest", "HttpResponse", "HttpServerProtocol"]

log = logging.getLogger("bastion_fast.emulator.http")

MAX_HEAD = 16 * 1024
MAX_BODY = 1 << 20
SERVER_NAME = "bastion-fast-emulator"


@dataclass
class HttpRequest:
    """A complete request: ``path`` is percent-decoded, ``headers`` have lower-case names (joined with ``, ``)."""

    method: str
    target: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    raw_headers: list[tuple[str, str]]
    body: bytes = b""

    def header(self, name: str, default: str = "") -> str:
        return self.headers.get(name.lower(), default)

    def query_ci(self, name: str) -> str | None:
        """A query parameter looked up case-insensitively (``X-Node-Id`` / ``x-node-id``)."""
        lowered = name.lower()
        for key, value in self.query.items():
            if key.lower() == lowered:
                return value
        return None


@dataclass
class HttpResponse:
    """A response to write; ``close`` asks for ``Connection: close``."""

    status: int
    body: bytes = b""
    content_type: str | None = None
    headers: list[tuple[str, str]] = field(default_factory=list)
    close: bool = False

    @classmethod
    def json(cls, status: int, obj: Any, **kw: Any) -> HttpResponse:
        return cls(status, json.dumps(obj).encode(), "application/json; charset=utf-8", **kw)

    @classmethod
    def text(cls, status: int, text: str, content_type: str = "text/plain; charset=utf-8", **kw: Any) -> HttpResponse:
        return cls(status, text.encode(), content_type, **kw)


Handler = Callable[[HttpRequest, "HttpServerProtocol"], Awaitable["HttpResponse | None"]]


class HttpServerProtocol(asyncio.Protocol):
    """Serve HTTP/1.1 requests to ``handler`` until close or :meth:`take_over`."""

    def __init__(self, handler: Handler, *, idle_timeout: float = 120.0,
                 registry: set[HttpServerProtocol] | None = None) -> None:
        self._handler = handler
        self._idle_timeout = idle_timeout
        self._registry = registry
        self._conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
        self.transport: asyncio.Transport | None = None
        self._wakeup: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._lost = False
        self._waiting = False
        self._paused = False
        self._taken = False

    # -- asyncio callbacks ---------------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not subclasses
        if self._registry is not None:
            self._registry.add(self)
        self._task = asyncio.get_running_loop().create_task(self._serve())

    def data_received(self, data: bytes) -> None:
        try:
            self._conn.receive_data(data)
        except RuntimeError:  # data after EOF: ignore, the connection is going away
            return
        if not self._waiting and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        with contextlib.suppress(RuntimeError):
            self._conn.receive_data(b"")
        self._wake()
        # Keep a half-closed plain-TCP connection open to answer; TLS transports cannot (and warn if asked).
        return self.transport is not None and self.transport.get_extra_info("sslcontext") is None

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        if self._registry is not None:
            self._registry.discard(self)
        self._wake()

    def _wake(self) -> None:
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)

    # -- API for handlers ----------------------------------------------------------------------------------------

    def take_over(self) -> tuple[asyncio.Transport, bytes]:
        """Stop serving HTTP; return the transport (reading paused) and the bytes received past the request."""
        assert self.transport is not None
        self._taken = True
        if self._registry is not None:
            self._registry.discard(self)
        if not self._paused:
            self._paused = True
            self.transport.pause_reading()
        leftover, _closed = self._conn.trailing_data
        return self.transport, bytes(leftover)

    def close(self) -> None:
        """Close the connection now (shutdown)."""
        if self.transport is not None and not self._taken:
            self.transport.close()
        if self._task is not None:
            self._task.cancel()

    # -- the request loop ----------------------------------------------------------------------------------------

    async def _next_event(self, seconds: float) -> Any:
        """The next h11 event, waiting at most ``seconds`` for data (TimeoutError after)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while True:
            event = self._conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            if self._lost:
                return h11.ConnectionClosed()
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError
            self._wakeup = loop.create_future()
            self._waiting = True
            if self._paused and self.transport is not None:
                self._paused = False
                self.transport.resume_reading()
            try:
                await asyncio.wait_for(self._wakeup, remaining)
            finally:
                self._waiting = False
                self._wakeup = None

    async def _serve(self) -> None:
        try:
            while not self._lost:
                request = await self._read_request()
                if request is None:
                    break
                if isinstance(request, HttpResponse):  # an error found while reading
                    self._send(request)
                    break
                response = await self._handler(request, self)
                if response is None:  # the handler took the transport (WebSocket)
                    return
                self._send(response, head=request.method == "HEAD")
                if self._conn.our_state is h11.MUST_CLOSE or self._conn.their_state is not h11.DONE:
                    break
                self._conn.start_next_cycle()
        except TimeoutError:
            pass
        except (h11.LocalProtocolError, h11.RemoteProtocolError) as exc:
            log.debug("HTTP protocol error: %s", exc)
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("data-plane request failed")
            if self._conn.our_state is h11.SEND_RESPONSE:
                with contextlib.suppress(Exception):
                    self._send(HttpResponse.json(500, {"message": "Unexpected internal error"}, close=True))
        if not self._taken and self.transport is not None:
            self.transport.close()

    async def _read_request(self) -> HttpRequest | HttpResponse | None:
        try:
            event = await self._next_event(self._idle_timeout)
        except h11.RemoteProtocolError as exc:
            return HttpResponse.text(exc.error_status_hint, f"Bad request: {exc}\n", close=True)
        if not isinstance(event, h11.Request):
            return None
        body = bytearray()
        while True:
            try:
                part = await self._next_event(30.0)
            except h11.RemoteProtocolError as exc:
                return HttpResponse.text(exc.error_status_hint, f"Bad request: {exc}\n", close=True)
            if isinstance(part, h11.Data):
                body += part.data
                if len(body) > MAX_BODY:
                    return HttpResponse.json(413, {"message": "Request body too large"}, close=True)
            elif isinstance(part, h11.EndOfMessage):
                break
            else:
                return None
        target = event.target.decode("ascii", "replace")
        split = urlsplit(target)
        raw_headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in event.headers]
        headers: dict[str, str] = {}
        for name, value in raw_headers:
            key = name.lower()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        return HttpRequest(
            method=event.method.decode("ascii", "replace"),
            target=target,
            path=unquote(split.path),
            query=dict(parse_qsl(split.query, keep_blank_values=True)),
            headers=headers,
            raw_headers=raw_headers,
            body=bytes(body),
        )

    def _send(self, response: HttpResponse, *, head: bool = False) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        headers = [("Date", email.utils.formatdate(usegmt=True)), ("Server", SERVER_NAME)]
        if response.content_type:
            headers.append(("Content-Type", response.content_type))
        headers.extend(response.headers)
        no_body = response.status in (204, 304) or response.status < 200
        if not no_body:
            headers.append(("Content-Length", str(len(response.body))))
        if response.close:
            headers.append(("Connection", "close"))
        out = self._conn.send(h11.Response(status_code=response.status, headers=headers))
        if response.body and not no_body and not head:
            out = (out or b"") + (self._conn.send(h11.Data(data=response.body)) or b"")
        out = (out or b"") + (self._conn.send(h11.EndOfMessage()) or b"")
        transport.write(out)
