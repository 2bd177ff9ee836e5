"""One accepted local connection, from token to token deletion.

Theory of operation — phases, and what ``stop()`` does in each::

    grant ──► connect ──► pump ──► (done)          every path ends in DELETE of *this* connection's token
      │          │          │
      │          │          └ stop(): Close 1000 on the WebSocket; the pump flushes and gives the app EOF;
      │          │                    whatever is not closed ``stop_linger`` seconds later is dropped
      │          └ stop(): cancel the connect; the socket is aborted
      └ stop(): let the token POST finish (cancelling it could orphan a session we cannot name), then skip connect

The grant is opened first, before the local socket is read: the local application's first bytes (an SSH banner,
an RDP negotiation) wait in the kernel while the token exchange runs — the accept protocol paused the socket.
Then the socket is handed to the pump's stream leg (which keeps it paused until the WebSocket is attached), and
the WebSocket is connected straight into the pump's WebSocket leg.

The token is deleted in ``finally`` — on success, failure, cancellation, and when the WebSocket connect fails
(PROTOCOL.md §4, ext#10137) — through ``control.close_grant(grant)`` with this session's own grant object, so a
token never travels with another connection's node id. The delete runs as its own task, shielded, and registered
with the listener, so even a second cancellation cannot lose it: the listener waits for every delete at exit.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, cast

from bastion_fast.control.models import ControlPlane, TunnelGrant
from bastion_fast.exceptions import BastionFastError
from bastion_fast.tunnel.config import TunnelConfig, buffer_limits
from bastion_fast.tunnel.events import ConnectionResult

__all__ = ["NORMAL_CLOSE_CODES", "AcceptedProtocol", "Session"]

log = logging.getLogger("bastion_fast.tunnel.session")

#: Close codes that end a connection normally (1005 = Close without a code; 1006 without an error = our own close
#: that the peer did not echo before we dropped it).
NORMAL_CLOSE_CODES = frozenset({1000, 1005, 1006})


class AcceptedProtocol(asyncio.BufferedProtocol):
    """The protocol of a just-accepted local socket, until its session hands it to the pump.

    It pauses reading at once. asyncio honours a pause in ``connection_made``; uvloop starts reading right after
    ``connection_made`` returns, so one read can still arrive: it is kept (with an EOF, if the application already
    hung up) and replayed into the pump's stream leg when the session attaches it. That read goes into a buffer of
    :attr:`EARLY_LIMIT` bytes, not the loop's 256 KiB: a burst of connections waits for token exchanges and TLS
    handshakes, and 256 uploads each holding a full first read kept tens of MB resident for nothing — the rest
    waits in the kernel's socket buffer.
    """

    EARLY_LIMIT = 16 * 1024

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.early = bytearray()
        self.early_eof = False
        self._landing: bytearray | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's
        self.transport.pause_reading()

    def get_buffer(self, sizehint: int) -> bytearray:
        self._landing = bytearray(max(1, self.EARLY_LIMIT - len(self.early)))
        return self._landing

    def buffer_updated(self, nbytes: int) -> None:
        assert self._landing is not None
        self.early += memoryview(self._landing)[:nbytes]
        self._landing = None
        assert self.transport is not None
        self.transport.pause_reading()

    def eof_received(self) -> bool:
        self.early_eof = True
        return True  # keep our sending side open: the pump may still have data for the application

    def replay_into(self, protocol: asyncio.BaseProtocol) -> None:
        """Give what was read early to ``protocol`` (the pump's stream leg), as the transport would have."""
        if self.early:
            data, self.early = bytes(self.early), bytearray()
            protocol.data_received(data)  # type: ignore[attr-defined]
        if self.early_eof:
            protocol.eof_received()  # type: ignore[attr-defined]


class _Stopped(Exception):
    """The tunnel is stopping: the grant was obtained but the connection will not be made."""


class Session:
    """Carry one local connection through Bastion.

    Args:
        conn_id: number of this connection within the tunnel (1, 2, …).
        transport: the accepted local socket, with reading paused.
        peer: ``host:port`` of the local client (for events and logs).
        control: the control plane (one grant per session).
        config: the tunnel's configuration.
        track_cleanup: called with the DELETE task so the listener can wait for it at exit.
        write_transport: for a pipe pair (``bastion-fast proxy``: stdin/stdout), the write pipe; ``transport``
            is then the read pipe (DESIGN.md §2 ``attach_stream(read_transport, write_transport)``).
    """

    def __init__(
        self,
        conn_id: int,
        transport: asyncio.Transport,
        peer: str,
        control: ControlPlane,
        config: TunnelConfig,
        *,
        track_cleanup: Callable[[asyncio.Task[None]], None] | None = None,
        write_transport: asyncio.BaseTransport | None = None,
        concurrent: int = 1,
    ) -> None:
        self.id = conn_id
        self.concurrent = concurrent
        self.transport = transport
        self.write_transport = write_transport
        self.peer = peer
        self.control = control
        self.config = config
        self.phase = "grant"
        self.grant: TunnelGrant | None = None
        self.splice: Any = None
        self.task: asyncio.Task[ConnectionResult] | None = None
        self._track_cleanup = track_cleanup
        self._stopping = False
        self._started = time.monotonic()

    def __repr__(self) -> str:
        return f"<Session {self.id} {self.peer} phase={self.phase}>"

    def start(self) -> asyncio.Task[ConnectionResult]:
        """Run the session as a task (the listener keeps it)."""
        self.task = asyncio.get_running_loop().create_task(self.run(), name=f"bastion-fast connection {self.id}")
        return self.task

    def stop(self) -> None:
        """Close this connection gracefully (tunnel shutdown); the token is still deleted."""
        self._stopping = True
        if self.phase == "connect" and self.task is not None:
            self.task.cancel()
        elif self.phase == "pump" and self.splice is not None:
            self._close_pump()

    def _close_pump(self) -> None:
        """Close 1000 now; if the closing handshake and the local app's EOF are not done within
        ``stop_linger`` seconds, drop both legs (shutdown must not wait for a local app to hang up)."""
        splice = self.splice
        splice.close(1000)
        if not splice.done.done():
            timer = asyncio.get_running_loop().call_later(self.config.stop_linger, splice.abort)
            splice.done.add_done_callback(lambda _: timer.cancel())

    async def run(self) -> ConnectionResult:
        """grant → connect → pump → delete; returns how it went (never raises except on cancellation)."""
        config = self.config
        error: BaseException | None = None
        try:
            self.grant = await self.control.open_grant()
            if self._stopping:
                raise _Stopped
            assert config.pump is not None
            read_size, high_water, low_water = buffer_limits(self.concurrent)
            self.splice = config.pump.Splice(
                client=True,
                frame_size=config.frame_size,
                keepalive=config.keepalive,
                half_close=config.half_close,
                read_size=read_size,
                high_water=high_water,
                low_water=low_water,
            )
            accepted = self.transport.get_protocol()
            self.splice.attach_stream(self.transport, self.write_transport)
            if isinstance(accepted, AcceptedProtocol):
                accepted.replay_into(self.splice.stream_protocol)
            self.phase = "connect"
            from bastion_fast.tunnel.connect import open_websocket  # imported after "ready": see listener.start

            await open_websocket(
                self.grant.websocket_url,
                self.splice,
                ssl_context=config.ssl_context,
                proxy=config.proxy,
                connect_timeout=config.connect_timeout,
                handshake_timeout=config.handshake_timeout,
            )
            self.phase = "pump"
            if self._stopping:
                self._close_pump()
            await asyncio.shield(self.splice.done)
        except _Stopped:
            pass
        except asyncio.CancelledError:
            if not self._stopping:
                raise
        except Exception as exc:
            error = exc
        finally:
            await self._finish()
        return self._result(error)

    async def _finish(self) -> None:
        """Close what is left of the local connection, then delete the token (shielded, tracked)."""
        splice = self.splice
        if self.phase != "pump":
            # No WebSocket: take the socket back from the pump (if it had it) and close it with a FIN.
            if self.write_transport is not None:  # a pipe pair: closing the write end is the EOF
                self.transport.close()
                self.write_transport.close()
            else:
                _linger_close(self.transport)
        elif not splice.done.done():
            splice.abort()
        grant, self.grant = self.grant, None
        if grant is None:
            return
        delete = asyncio.get_running_loop().create_task(
            self.control.close_grant(grant), name=f"bastion-fast delete token {self.id}")
        if self._track_cleanup is not None:
            self._track_cleanup(delete)
        try:
            await asyncio.shield(delete)
        except asyncio.CancelledError:
            # Cancelled again while deleting: the delete task goes on and the listener waits for it at exit.
            raise
        except Exception:  # close_grant never raises by contract; a bug there must not hide the session result
            log.warning("connection %d: deleting its Bastion session failed", self.id, exc_info=True)

    def _result(self, error: BaseException | None) -> ConnectionResult:
        splice = self.splice
        duration = time.monotonic() - self._started
        if error is not None:
            return ConnectionResult(
                id=self.id, peer=self.peer, ok=False, phase=self.phase, duration=duration,
                error=str(error) or type(error).__name__,
                hint=error.hint if isinstance(error, BastionFastError) else None,
                bytes_up=splice.bytes_stream_to_ws if splice is not None else 0,
                bytes_down=splice.bytes_ws_to_stream if splice is not None else 0,
            )
        if splice is None or self.phase != "pump":
            return ConnectionResult(id=self.id, peer=self.peer, ok=True, phase=self.phase, duration=duration,
                                    error=None)
        failure: str | None = None
        hint: str | None = None
        if isinstance(splice.error, BastionFastError):
            failure, hint = str(splice.error), splice.error.hint
        elif splice.close_code not in NORMAL_CLOSE_CODES and not self._stopping:
            reason = f" ({splice.close_reason})" if splice.close_reason else ""
            failure = f"Bastion closed the connection with code {splice.close_code}{reason}"
            hint = _CLOSE_HINTS.get(splice.close_code)
        return ConnectionResult(
            id=self.id, peer=self.peer, ok=failure is None, phase=self.phase,
            bytes_up=splice.bytes_stream_to_ws, bytes_down=splice.bytes_ws_to_stream,
            duration=(splice.ended - splice.started) if splice.started and splice.ended else duration,
            close_code=splice.close_code, error=failure, hint=hint,
        )


class _Linger(asyncio.Protocol):
    """Discard what the application still sends until it closes (or the timer fires), then close."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        pass

    def eof_received(self) -> bool:
        self.transport.close()
        return False


def _linger_close(transport: asyncio.Transport, timeout: float = 2.0) -> None:
    """Close a local socket that never got a WebSocket so that the application reads EOF, not a reset.

    Closing a socket with unread bytes in its receive buffer makes the kernel send RST (and the application may
    lose our FIN); so: shut down our side, read and discard until the application closes, bounded by ``timeout``.
    """
    if transport.is_closing():
        return
    transport.set_protocol(_Linger(transport))
    try:
        if transport.can_write_eof():
            transport.write_eof()
        transport.resume_reading()
    except (OSError, RuntimeError):
        transport.abort()
        return
    asyncio.get_running_loop().call_later(timeout, transport.close)


_CLOSE_HINTS = {
    1001: "The Bastion instance is going away (maintenance or scale-in); connect again.",
    1008: "Bastion refused the session by policy; check the target and your permissions.",
    1011: "Bastion could not reach the target: check that the VM runs and listens on --resource-port, "
          "and that its NSG allows the Bastion subnet.",
    1012: "Bastion is restarting; connect again in a moment.",
}
