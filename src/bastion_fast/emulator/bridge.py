"""The WebSocket endpoints: handshake checks, the 101, and the bridge to the target through the project's pump.

Theory of operation for ``GET /webtunnelv2/{websocketToken}?X-Node-Id=…`` (and ``/omni/webtunnel/{token}``)::

    injected handshake fault?          ─yes─▶ 404/503 (fault)
    token known on this node / host?   ─no──▶ 404   (wrong X-Node-Id, authToken instead of websocketToken,
                                                    deleted session, other Bastion, v2 path for Developer …)
    token unused and not expired?      ─no──▶ 404   (single use; TTL = knobs.token_ttl)
    a valid RFC 6455 upgrade?          ─no──▶ 400/426 from websockets' sans-I/O ServerProtocol (token not spent)
    spend the token; connect the target ─fail▶ 502 and the session is marked "refused" (the client must DELETE)
    101 (no subprotocol, no extension; knob: without Upgrade/Connection), then hand the transport to
    ``Splice(client=False, …)`` — the same pump the client uses, in server role.

The :class:`Bridge` watches one live session: timers for the fault injections (drop or close after N seconds),
the idle timeout, and the ledger update when the pump is done.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from websockets.datastructures import Headers
from websockets.http11 import Request
from websockets.server import ServerProtocol

from bastion_fast.emulator.api import GATEWAY_502_HTML
from bastion_fast.emulator.http11 import HttpRequest, HttpResponse
from bastion_fast.emulator.ledger import Session

if TYPE_CHECKING:
    from bastion_fast.emulator.http11 import HttpServerProtocol
    from bastion_fast.emulator.runtime import BastionRuntime, Runtime

__all__ = ["Bridge", "handle_websocket"]

log = logging.getLogger("bastion_fast.emulator.websocket")

_CONNECT_TIMEOUT = 10.0


def _not_found(text: str = "Not Found") -> HttpResponse:
    return HttpResponse.text(404, text + "\n", close=True)


def _fault(status: int) -> HttpResponse:
    if status in (502, 503):
        title = {502: "502 Bad Gateway", 503: "503 Service Temporarily Unavailable"}[status]
        page = GATEWAY_502_HTML.replace("502 Bad Gateway", title)
        return HttpResponse.text(status, page, "text/html", close=True)
    return HttpResponse.text(status, {403: "Forbidden", 404: "Not Found", 500: "Internal Server Error"}
                             .get(status, "Error") + "\n", close=True)


def _find_session(rt: Runtime, bastion: BastionRuntime, req: HttpRequest, kind: str, token: str) -> Session | str:
    """The session this handshake may open, or the reason (kept out of the response) why not."""
    import time

    session = rt.ledger.by_websocket_token(token)
    if session is None or session.bastion_id != bastion.id:
        return "unknown websocketToken"
    if kind == "omni":
        if not session.developer:
            return "omni path for a non-Developer session"
    else:
        if session.developer:
            return "webtunnelv2 path for a Developer session"
        if req.query_ci("X-Node-Id") != session.node_id:
            return "wrong or missing X-Node-Id"
    if session.ws_token_spent:
        return "websocketToken already used"
    if time.monotonic() > session.expires_at:
        return "websocketToken expired"
    return session


async def handle_websocket(rt: Runtime, bastion: BastionRuntime, req: HttpRequest, conn: HttpServerProtocol, *,
                           kind: str, token: str) -> HttpResponse | None:
    """Serve one upgrade request; None when the connection became a WebSocket (the bridge owns it)."""
    rt.ledger.begin()
    try:
        return await _handle(rt, bastion, req, conn, kind=kind, token=token)
    finally:
        rt.ledger.end()


async def _handle(rt: Runtime, bastion: BastionRuntime, req: HttpRequest, conn: HttpServerProtocol, *,
                  kind: str, token: str) -> HttpResponse | None:
    fault = rt.faults.take_handshake_fault()
    found = _find_session(rt, bastion, req, kind, token)
    if fault is not None:
        if not isinstance(found, str):  # recorded so a client that never DELETEs shows up as a leak
            rt.ledger.mark_refused(found, f"fault: handshake {fault}")
        return _fault(fault)
    if isinstance(found, str):
        log.info("WebSocket refused (404): %s", found)
        return _not_found()
    session = found

    protocol = ServerProtocol()  # no extensions, no subprotocols: what Bastion negotiates
    ws_response = protocol.accept(Request(req.target, Headers(req.raw_headers)))
    if ws_response.status_code != 101:
        headers = [(k, v) for k, v in ws_response.headers.raw_items() if k.lower() not in ("date", "content-length")]
        return HttpResponse(ws_response.status_code, bytes(ws_response.body), headers=headers, close=True)

    session.ws_token_spent = True
    rt.ledger.changed()
    if rt.closing:
        rt.ledger.mark_refused(session, "emulator shutting down")
        return _fault(503)
    knobs = rt.knobs
    faults = rt.faults.config
    splice = rt.pump.Splice(
        client=False,
        frame_size=knobs.server_frame_size,
        max_frame_size=knobs.max_client_frame,
        require_mask=knobs.require_mask,
        reject_continuation=knobs.reject_continuation,
        keepalive=knobs.server_ping_interval,
        drop_after_bytes=faults.drop_after_bytes,
    )
    loop = asyncio.get_running_loop()
    try:
        host, port = await rt.targets.address(session.spec)
        stream, _ = await asyncio.wait_for(
            loop.create_connection(lambda: splice.stream_protocol, host, port), _CONNECT_TIMEOUT
        )
    except (OSError, TimeoutError) as exc:
        splice.abort()
        log.info("WebSocket refused (502): target %s unreachable: %s", session.target, exc)
        rt.ledger.mark_refused(session, "target unreachable")
        return HttpResponse.json(502, {"message": "Target unreachable"}, close=True)
    if conn.transport is None or conn.transport.is_closing():
        splice.abort()
        rt.ledger.mark_refused(session, "client went away during the handshake")
        return None

    if session.spec.kind == "sink":
        local = stream.get_extra_info("sockname")

        def on_sink(result: dict[str, Any], s: Session = session) -> None:
            s.sink = result
            rt.ledger.changed()

        if local:
            rt.targets.watch_sink(int(local[1]), on_sink)

    if knobs.omit_upgrade_headers:
        del ws_response.headers["Upgrade"]
        del ws_response.headers["Connection"]
    transport, leftover = conn.take_over()
    transport.write(ws_response.serialize())
    transport.set_protocol(splice.ws_protocol)
    splice.attach_ws(transport, leftover)
    # take_over() paused reading for the handshake; the pump assumes a transport that reads, so resume it here.
    transport.resume_reading()
    bridge = Bridge(rt, session, splice)
    bridge.start()
    return None


class Bridge:
    """One live WebSocket session: fault/idle timers and the ledger record when the pump is done."""

    def __init__(self, rt: Runtime, session: Session, splice: Any) -> None:
        self.rt = rt
        self.session = session
        self.splice = splice
        self.ended_by: str | None = None
        self._timers: list[asyncio.TimerHandle] = []
        self._idle: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        faults = self.rt.faults.config
        if faults.drop_after_seconds > 0:
            self._timers.append(loop.call_later(faults.drop_after_seconds, self.abort, "fault:drop_after_seconds"))
        if faults.close_code is not None:
            self._timers.append(loop.call_later(
                faults.close_after_seconds, self.close, faults.close_code,
                faults.close_reason, "fault:close_code",
            ))
        if self.rt.knobs.idle_timeout:
            self._idle_tick(self.rt.knobs.idle_timeout, -1, loop.time())
        self.rt.bridges.add(self)
        self.rt.ledger.mark_live(self.session, self)
        self._task = loop.create_task(self._wait())

    @property
    def done(self) -> asyncio.Future[None]:
        fut: asyncio.Future[None] = self.splice.done
        return fut

    def close(self, code: int = 1000, reason: str = "", by: str = "server") -> None:
        """Start a closing handshake with ``code``."""
        if self.ended_by is None:
            self.ended_by = by
        self.splice.close(code, reason)

    def abort(self, by: str = "server") -> None:
        """Drop the WebSocket (and the target connection) without a close frame."""
        if self.ended_by is None:
            self.ended_by = by
        self.splice.abort()

    def _idle_tick(self, timeout: float, last_total: int, last_change: float) -> None:
        """Close with 1001 once no payload moved for ``timeout`` seconds (checked every quarter timeout)."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        total = self.splice.bytes_stream_to_ws + self.splice.bytes_ws_to_stream
        if total != last_total:
            last_total, last_change = total, now
        elif now - last_change >= timeout:
            self.close(1001, "Idle timeout", "idle_timeout")
            return
        self._idle = loop.call_later(timeout / 4, self._idle_tick, timeout, last_total, last_change)

    async def _wait(self) -> None:
        try:
            await self.splice.done
        finally:
            for timer in self._timers:
                timer.cancel()
            if self._idle is not None:
                self._idle.cancel()
            self.rt.bridges.discard(self)
            s = self.splice
            error = s.error
            self.rt.ledger.mark_ended(
                self.session,
                bytes_to_target=s.bytes_ws_to_stream,
                bytes_to_client=s.bytes_stream_to_ws,
                close_code=s.close_code,
                close_reason=s.close_reason,
                close_code_sent=s.close_code_sent,
                error=None if error is None else f"{type(error).__name__}: {error}",
                ended_by=self.ended_by,
            )
