"""The local listener: accept connections, run one session each, stop cleanly for every reason.

Theory of operation::

    start() ── bind + listen ── ready event ──► SERVING ──► stop(reason) ──► aclose()
                                                  │  ▲
                       accept → paused socket → Session task (grant → connect → pump → delete)
                                                  │
            stop reasons: lifetime (--timeout), idle (--idle-timeout with no connection), N consecutive failed
            connections (--max-failures), a signal (the CLI calls stop), or the library caller leaving its block

``wait()`` returns the reason (or raises :class:`TunnelError` for too many failures). ``aclose()`` stops
accepting, asks every session to stop (Close 1000 on live WebSockets, in-flight token requests allowed to finish),
waits up to ``shutdown_grace`` seconds, cancels what is left, and then waits for every token DELETE — a tunnel
never exits leaving a Bastion session behind that it knows about (the az tunnel deletes only the latest token,
ext#10137, and none on SIGTERM or ``--timeout``).

A failing connection never takes the listener down: its session logs the reason and closes that socket; the next
connection starts afresh. Connections are accepted with reading paused, so nothing the local application sends is
read before its WebSocket exists.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import importlib
import itertools
import logging
import socket
from typing import Any

from bastion_fast.control.models import ControlPlane
from bastion_fast.exceptions import ConfigurationError, TunnelError
from bastion_fast.tunnel.config import TunnelConfig, is_loopback
from bastion_fast.tunnel.events import ConnectionResult, TunnelEvents
from bastion_fast.tunnel.session import AcceptedProtocol, Session

__all__ = ["Listener"]

log = logging.getLogger("bastion_fast.tunnel.listener")


class _Accepted(AcceptedProtocol):
    """An accepted socket's first protocol: hands the transport to the listener, which starts a session."""

    def __init__(self, listener: Listener) -> None:
        super().__init__()
        self.listener = listener

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        assert self.transport is not None
        self.listener._on_accept(self.transport)


def _peer_name(transport: asyncio.BaseTransport) -> str:
    peer = transport.get_extra_info("peername")
    if isinstance(peer, tuple) and len(peer) >= 2:
        host = str(peer[0])
        return f"[{host}]:{peer[1]}" if ":" in host else f"{host}:{peer[1]}"
    return str(peer)


class Listener:
    """A local TCP listener whose every connection becomes one Bastion session.

    Args:
        control: the control plane (shared by all sessions; one grant per connection).
        config: the tunnel's configuration.
        events: where readiness and connection events go (silent by default).
    """

    def __init__(self, control: ControlPlane, config: TunnelConfig, events: TunnelEvents | None = None) -> None:
        self.control = control
        self.config = config
        self.events = events or TunnelEvents()
        self.address = config.bind_address
        self.port = 0
        self.sessions: dict[int, Session] = {}
        self.results: list[ConnectionResult] = []
        self.consecutive_failures = 0
        self.last_error: str | None = None
        self.stop_reason: str | None = None
        self._stop_error: TunnelError | None = None
        self._ids = itertools.count(1)
        self._server: asyncio.AbstractServer | None = None
        self._ready = False
        self._early: list[asyncio.Transport] = []
        self._stopped = asyncio.Event()
        self._cleanups: set[asyncio.Task[None]] = set()
        self._timers: list[asyncio.TimerHandle] = []
        self._idle_timer: asyncio.TimerHandle | None = None
        self._closed = False
        self._session_tasks: set[asyncio.Task[ConnectionResult]] = set()

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Bind and listen; emit the ready event before the first connection is handed to a session."""
        config = self.config
        if not is_loopback(config.bind_address):
            log.warning("Listening on %s: any host that can reach this address can use your Bastion session. "
                        "Use the default --bind-address 127.0.0.1 unless you mean it.", config.bind_address)
        loop = asyncio.get_running_loop()
        try:
            self._server = await loop.create_server(
                lambda: _Accepted(self), host=config.bind_address, port=config.port, backlog=config.backlog,
                reuse_address=True, start_serving=False)
        except OSError as exc:
            raise self._bind_error(exc) from exc
        try:
            sockets = list(self._server.sockets)
            family_first = sorted(sockets, key=lambda s: 0 if s.family == socket.AF_INET else 1)
            self.port = int(family_first[0].getsockname()[1])
            self.address = config.bind_address
            await self._server.start_serving()
            self._mark_ready()
        except BaseException:
            self._server.close()
            raise
        # What only the first connection needs is loaded right after the ready event rather than before it (cold
        # start): the control plane's HTTP client (aiohttp, when discovery came from its cache), then, one loop
        # turn later so an early connection's token request can go out in between, the WebSocket stack
        # (websockets' HTTP parser, proxy helpers).
        loop.call_soon(self._warm_up)
        if config.timeout is not None:
            self._timers.append(loop.call_later(config.timeout, self.stop, "timeout"))
        self._arm_idle_timer()

    def _warm_up(self) -> None:
        warm_up = getattr(self.control, "warm_up", None)  # optional: not part of the ControlPlane protocol
        if callable(warm_up) and not self._closed:
            try:
                warm_up()
            except Exception as exc:  # the first connection will meet (and report) the same problem
                log.debug("control plane warm-up failed: %s", exc)
        asyncio.get_running_loop().call_soon(importlib.import_module, "bastion_fast.tunnel.connect")

    def _bind_error(self, exc: OSError) -> ConfigurationError:
        where = f"{self.config.bind_address}:{self.config.port}"
        if exc.errno == errno.EADDRINUSE:
            return ConfigurationError(f"Local port {where} is already in use.",
                                      hint="Choose another --port, or --port 0 to pick a free one.")
        if exc.errno == errno.EACCES:
            return ConfigurationError(f"Not allowed to listen on {where}.",
                                      hint="Ports below 1024 need root on Linux and macOS; use a higher --port.")
        if exc.errno == errno.EADDRNOTAVAIL or isinstance(exc, socket.gaierror):
            return ConfigurationError(f"Cannot listen on {where}: no such local address.",
                                      hint="Pass an address of this machine to --bind-address (default 127.0.0.1).")
        return ConfigurationError(f"Cannot listen on {where}: {exc.strerror or exc}.",
                                  hint="Check --bind-address and --port.")

    def _mark_ready(self) -> None:
        if self._ready:
            return
        self._ready = True
        self.events.ready(self.address, self.port)
        early, self._early = self._early, []
        for transport in early:
            self._start_session(transport)

    def stop(self, reason: str = "closed", error: TunnelError | None = None) -> None:
        """Ask the tunnel to stop (idempotent); ``wait()`` then returns ``reason``."""
        if self.stop_reason is None:
            self.stop_reason = reason
            self._stop_error = error
            log.debug("tunnel stopping: %s", reason)
        self._stopped.set()

    async def wait(self) -> str:
        """Serve until a stop reason arrives; return it, or raise :class:`TunnelError` after too many failures."""
        await self._stopped.wait()
        if self._stop_error is not None:
            raise self._stop_error
        return self.stop_reason or "closed"

    async def aclose(self) -> None:
        """Stop accepting, close every connection, delete every token; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self.stop(self.stop_reason or "closed")
        for timer in self._timers:
            timer.cancel()
        if self._idle_timer is not None:
            self._idle_timer.cancel()
        if self._server is not None:
            self._server.close()
        for transport in self._early:
            transport.close()
        self._early.clear()
        for session in list(self.sessions.values()):
            session.stop()
        grace = self.config.shutdown_grace
        pending = {t for t in self._session_tasks if not t.done()}
        if pending:
            _, pending = await asyncio.wait(pending, timeout=grace)
        if pending:
            log.warning("%d connection(s) did not close within %.0f s; dropping them", len(pending), grace)
            for task in pending:
                task.cancel()
            await asyncio.wait(pending, timeout=grace)
        cleanups = {t for t in self._cleanups if not t.done()}
        if cleanups:
            _, cleanups = await asyncio.wait(cleanups, timeout=max(grace, 10.0))
            if cleanups:
                log.warning("%d Bastion session(s) could not be deleted before exit; they end at the service's "
                            "idle timeout", len(cleanups))
                for delete in cleanups:
                    delete.cancel()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), timeout=1.0)
        self.events.stopped(self.stop_reason or "closed",
                            str(self._stop_error) if self._stop_error is not None else None)

    # ------------------------------------------------------------------ connections

    @property
    def active(self) -> int:
        """Connections currently being served."""
        return len(self.sessions)

    def _on_accept(self, transport: asyncio.Transport) -> None:
        if self._closed or self.stop_reason is not None:
            transport.close()
            return
        if not self._ready:  # accepted between listen() and the ready event: start after it
            self._early.append(transport)
            return
        self._start_session(transport)

    def _start_session(self, transport: asyncio.Transport) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        session = Session(next(self._ids), transport, _peer_name(transport), self.control, self.config,
                          track_cleanup=self._track_cleanup, concurrent=len(self.sessions) + 1)
        self.sessions[session.id] = session
        self.events.opened(session.id, session.peer)
        task = session.start()
        self._session_tasks.add(task)
        task.add_done_callback(lambda t, s=session: self._on_session_done(s, t))  # type: ignore[misc]

    def _track_cleanup(self, task: asyncio.Task[None]) -> None:
        self._cleanups.add(task)
        task.add_done_callback(self._cleanups.discard)

    def _on_session_done(self, session: Session, task: asyncio.Task[ConnectionResult]) -> None:
        self._session_tasks.discard(task)
        self.sessions.pop(session.id, None)
        if task.cancelled():
            result = ConnectionResult(id=session.id, peer=session.peer, ok=True, phase=session.phase,
                                      error=None)
        else:
            exc = task.exception()
            if exc is not None:  # a bug: the session catches everything it expects
                log.error("connection %d crashed: %r", session.id, exc, exc_info=exc)
                result = ConnectionResult(id=session.id, peer=session.peer, ok=False, phase=session.phase,
                                          error=f"internal error: {exc!r}")
            else:
                result = task.result()
        self.results.append(result)
        self.events.closed(result)
        self._count(result)
        self._arm_idle_timer()

    def _count(self, result: ConnectionResult) -> None:
        if result.ok:
            self.consecutive_failures = 0
            return
        self.consecutive_failures += 1
        self.last_error = result.error
        limit = self.config.max_failures
        if limit and self.consecutive_failures >= limit and self.stop_reason is None:
            self.stop("max-failures", TunnelError(
                f"{self.consecutive_failures} connections in a row failed; the last one: {result.error}",
                hint=result.hint or "Check the errors above; run with -v or --debug for details.",
            ))

    def _arm_idle_timer(self) -> None:
        idle = self.config.idle_timeout
        if idle is None or self.sessions or self._closed or self._idle_timer is not None:
            return
        self._idle_timer = asyncio.get_running_loop().call_later(idle, self._on_idle)

    def _on_idle(self) -> None:
        self._idle_timer = None
        if not self.sessions:
            log.warning("No connection for %g s: closing the tunnel (--idle-timeout)", self.config.idle_timeout)
            self.stop("idle-timeout")

    # ------------------------------------------------------------------ context manager

    async def __aenter__(self) -> Listener:
        await self.start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()
