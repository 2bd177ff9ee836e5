"""Pure-Python Splice: joins one WebSocket leg and one byte-stream leg (the reference pump).

This module is the *definition* of the pump's behaviour; ``src/_splice.pxi`` is the same state machine in Cython
and every test in ``tests/test_splice*.py`` runs on both (the ``impl`` fixture).

Theory of operation
-------------------

A :class:`Splice` owns two asyncio protocol objects and the transports they are attached to:

* the **WebSocket leg** (``ws_protocol``): an already upgraded connection, usually TLS. In client role we send
  masked frames and expect unmasked ones; in server role (the emulator) the reverse.
* the **stream leg** (``stream_protocol``): a TCP socket, or a read pipe plus a write pipe (stdin/stdout).

Read buffer: one per thread (per ``read_size``), shared by every splice and both legs. It is only touched between a
transport's ``get_buffer()`` and the ``buffer_updated()`` that follows, and those run back to back in one call in
both loops (asyncio's selector and SSL paths, uvloop's stream and SSL paths: ``sslobj.read`` into the buffer, then
``buffer_updated``); each read is consumed (copied into a new object) inside ``buffer_updated``. Bytes that must
outlive the callback (a read before the other leg is attached) are copied out. The buffer records which leg it was
handed to; a ``buffer_updated`` that does not follow its own ``get_buffer`` (a loop that deferred it) drops the
connection with a ``RuntimeError`` in ``error`` instead of forwarding bytes another connection may have overwritten.

Fairness: uvloop (libuv) reads a ready socket up to 32 times per loop iteration, so one bulk connection could feed
32 × ``read_size`` bytes through encode and TLS before any other connection is served (tens of ms). Each leg
therefore counts the bytes it reads; once it has read more than ``read_budget`` since the last "tick" it pauses its
transport (which ends libuv's read loop) until the tick, a ``call_soon`` callback that refills the budget and
resumes the leg — so other connections are served in between. The tick is scheduled once half the budget is used,
i.e. it runs at the start of the next loop iteration after a large read and never for interactive traffic; a burst
within one iteration is thus bounded by ``read_budget`` + one read. asyncio reads once per readiness event, so with
``read_size`` ≤ ``read_budget`` it never has to yield. The yield is kept apart from flow control's pause: a leg
reads only when neither wants it paused.

Data path, stream → WebSocket: every read (up to ``read_size`` bytes, into the shared buffer) becomes binary
frames of at most ``frame_size`` payload bytes, each a complete message (FIN=1; Bastion may reject continuation
frames), all of them in one freshly allocated ``bytes`` handed to one ``transport.write`` — a transport may keep a
view of unsent data, so nothing handed to it is ever reused, and TLS never sees a lone header.

Data path, WebSocket → stream: each read is fed to the frame decoder, which yields payload slices as they arrive
(a 1 MiB frame is forwarded piece by piece, never reassembled). All slices from one read leave in one write. Text
frames are carried as bytes. Pings are answered with pongs; pongs are ignored.

Closing (``_ws_over`` marks the end of the WebSocket session; after it only the stream leg is wound down):

* Peer's Close frame: record ``close_code``/``close_reason``; echo the code unless we already sent a Close; the
  handshake is then complete: close the WebSocket transport (after flushing) and give the stream leg EOF at once.
* WebSocket dropped (TCP EOF / reset without a Close): ``close_code`` stays 1006, ``error`` is
  :class:`~bastion_fast.exceptions.ConnectionClosed`; the stream leg gets EOF at once. (az leaves the local
  application hanging here, a likely cause of azure-cli#28367.)
* Stream EOF (the local application shut down writing): default — stop reading it, send Close 1000 after the data
  already queued, keep forwarding WebSocket → stream until the peer's Close arrives (bounded by ``close_timeout``,
  then the WebSocket is aborted). With ``half_close=True`` nothing is sent: WebSocket → stream forwarding goes on
  until the peer closes (RFC 6455 has no half-close, so the remote target never learns of the local EOF; use it for
  request/response protocols whose server knows when to answer and then closes).
* Stream leg lost entirely (reset, or the write pipe's reader went away): nothing more can be delivered, so Close
  1000 is sent even with ``half_close``.
* Decoder error (:class:`~bastion_fast.exceptions.ProtocolError`): ``error`` = the exception; send Close with its
  ``close_code`` (1002/1007/1009), then close the WebSocket transport without waiting for an answer.
* ``close(code, reason)``: start the closing handshake from our side; ``abort()``: drop both legs now.
* "Give the stream leg EOF" means: flush what is queued, then ``write_eof()`` on a socket (the application reads
  EOF) and keep reading — discarding — until the application closes too (at most ``STREAM_LINGER`` = 0.5 s, as
  socat does), so that closing does not turn into a TCP reset that could destroy data the application has not read
  yet; then close (a close always flushes what is queued first). On pipes the write pipe is closed after flushing
  and the read pipe closed.

``done`` resolves (never raises) when every attached transport has reported ``connection_lost``. Closing the
WebSocket transport (a TLS close waits for the peer's close_notify) is bounded by ``close_timeout``, then aborted.

Flow control: each leg's transport gets ``set_write_buffer_limits(high_water, low_water)``. When the WebSocket
transport calls ``pause_writing`` the stream leg stops reading; when the stream's write transport does, the
WebSocket leg stops reading; both resume at low water. Control frames (pong, close) are written regardless.
A leg is also not read until the other is attached (the stream leg may be accepted long before the upgrade).

Memory bound per connection, whatever the peers do: each transport's write buffer, which stops growing one read
after it passes ``high_water`` (the read that crossed it is still written in full), i.e. about
``2 × (read_size + high_water)`` plus frame headers (14 bytes per ``frame_size``) and the decoder's ≤ 139 bytes of
partial header/control frame; the read buffer is per thread, not per connection (``read_size`` once per thread), and
held early data is at most one read per leg. An idle or flowing connection (write buffers drained) costs only the
splice object and the codec state. Defaults: at most 2 × (256 KiB + 1 MiB) ≈ 2.5 MiB while a peer is slow. Behind
TLS, the TLS layer's own buffers add to this (see DESIGN.md §2).

Sockets: ``TCP_NODELAY`` on TCP legs; ``SO_KEEPALIVE`` (idle 30 s, interval 10 s, 3 probes, where the platform
has them — websocket-client's values) on the WebSocket leg's socket; optional WebSocket pings every
``keepalive`` seconds. There is no pong timeout: OS keepalive detects a dead peer.

Fault injection (emulator): ``drop_after_bytes`` > 0 aborts the WebSocket transport, without a Close frame, once
that many payload bytes (both directions together) have been forwarded; the read that crosses the limit is cut
exactly at it.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time

from bastion_fast._codec_py import OP_CLOSE, OP_PING, FrameDecoder, FrameEncoder, parse_close
from bastion_fast.exceptions import ConnectionClosed, ProtocolError

__all__ = ["Splice"]

log = logging.getLogger("bastion_fast.pump")

KiB = 1024
MiB = 1024 * KiB

# After giving a socket EOF, how long to keep reading (and discarding) until the application closes too, before
# closing it ourselves. socat's default for the same situation (-t 0.5): long enough for an application that
# reacts to EOF, short enough that ``done`` (and the token DELETE behind it) is not held up by one that does not.
STREAM_LINGER = 0.5

# websocket-client's keepalive values (PROTOCOL.md §3.1), applied where the platform has the options.
_KEEPALIVE_OPTS = (("TCP_KEEPIDLE", 30), ("TCP_KEEPINTVL", 10), ("TCP_KEEPCNT", 3))


class _ReadBuffer:
    """A read buffer shared by the splices of one thread, and the leg it was last handed to by ``get_buffer``."""

    __slots__ = ("owner", "view")

    def __init__(self, size: int) -> None:
        self.view = memoryview(bytearray(size))
        self.owner: object = None


_THREAD = threading.local()


def shared_read_buffer(size: int) -> _ReadBuffer:
    """This thread's read buffer of ``size`` bytes (created on first use, kept for the thread's life).

    Per thread rather than per loop: a thread runs one loop at a time and its callbacks never interleave between a
    ``get_buffer`` and its ``buffer_updated``, so loops that take turns on a thread can share it too.
    """
    pool: dict[int, _ReadBuffer] | None = getattr(_THREAD, "pool", None)
    if pool is None:
        pool = _THREAD.pool = {}
    buf = pool.get(size)
    if buf is None:
        buf = pool[size] = _ReadBuffer(size)
    return buf


def _tune_socket(transport: asyncio.BaseTransport, keepalive: bool) -> None:
    """TCP_NODELAY on TCP sockets, plus OS keepalive when asked; silently skip what does not apply."""
    sock = transport.get_extra_info("socket")
    if sock is None:
        return
    try:
        if sock.family not in (socket.AF_INET, socket.AF_INET6) or sock.type != socket.SOCK_STREAM:
            return
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if keepalive:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            for name, value in _KEEPALIVE_OPTS:
                opt = getattr(socket, name, None)
                if opt is not None:
                    sock.setsockopt(socket.IPPROTO_TCP, opt, value)
    except (OSError, AttributeError, ValueError):  # closed socket, exotic transport: tuning is best effort
        pass


def abort_transport(transport: asyncio.BaseTransport) -> None:
    """Drop a transport now. Read pipes cannot be aborted (asyncio's has no ``abort()``, uvloop's raises
    NotImplementedError): those are closed, which for a read pipe loses nothing."""
    try:
        transport.abort()  # type: ignore[attr-defined]
    except (AttributeError, NotImplementedError):
        transport.close()


def check_options(
    *, frame_size: int, max_frame_size: int, read_size: int, high_water: int, low_water: int,
    keepalive: float | None, drop_after_bytes: int, close_timeout: float, read_budget: int = 0,
) -> None:
    """Raise ValueError for option values the pump cannot work with (shared by both implementations)."""
    if not 1 <= frame_size <= 2**31:
        raise ValueError(f"frame_size must be between 1 and 2**31 bytes, got {frame_size}")
    if max_frame_size < 1:
        raise ValueError(f"max_frame_size must be positive, got {max_frame_size}")
    if read_size < 1:
        raise ValueError(f"read_size must be positive, got {read_size}")
    if not 0 <= low_water <= high_water:
        raise ValueError(f"need 0 <= low_water <= high_water, got low={low_water} high={high_water}")
    if keepalive is not None and keepalive <= 0:
        raise ValueError(f"keepalive must be positive seconds or None, got {keepalive}")
    if read_budget < 0:
        raise ValueError(f"read_budget must be >= 0 (0 = never yield), got {read_budget}")
    if drop_after_bytes < 0:
        raise ValueError(f"drop_after_bytes must be >= 0, got {drop_after_bytes}")
    if close_timeout <= 0:
        raise ValueError(f"close_timeout must be positive seconds, got {close_timeout}")


class _ReadLeg(asyncio.BufferedProtocol):
    """What both reading legs share: reads land in the splice's shared buffer and go to ``_deliver`` at once.

    The buffer is shared by every splice on this thread, so ``buffer_updated`` must follow this leg's own
    ``get_buffer`` (asyncio and uvloop always do); anything else means another connection may have overwritten it.
    """

    __slots__ = ("_s",)

    def __init__(self, splice: Splice) -> None:
        self._s = splice

    def _deliver(self, data: bytes | memoryview) -> None:
        raise NotImplementedError

    def get_buffer(self, sizehint: int) -> memoryview:
        buf = self._s._rbuf
        buf.owner = self
        return buf.view

    def buffer_updated(self, nbytes: int) -> None:
        buf = self._s._rbuf
        if buf.owner is not self:
            self._s._buffer_lost()
            return
        buf.owner = None
        self._deliver(buf.view[:nbytes])

    def data_received(self, data: bytes) -> None:  # transports without buffered reads (asyncio's read pipes)
        self._deliver(data)


class _WsLeg(_ReadLeg):
    """The WebSocket leg's protocol: forwards every transport event to the splice."""

    __slots__ = ()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Only when the protocol is used directly (no separate handshake protocol): attach it.
        if self._s._ws is None:
            self._s.attach_ws(transport)  # type: ignore[arg-type]

    def _deliver(self, data: bytes | memoryview) -> None:
        self._s._on_ws_data(data)
        self._s._count_ws_read(len(data))

    def eof_received(self) -> bool:
        return False  # a WebSocket has no half-close: let the transport close; connection_lost decides

    def connection_lost(self, exc: Exception | None) -> None:
        self._s._on_ws_lost(exc)

    def pause_writing(self) -> None:
        self._s._ws_write_paused = True
        self._s._update_stream_reading()

    def resume_writing(self) -> None:
        self._s._ws_write_paused = False
        self._s._update_stream_reading()


class _StreamLeg(_ReadLeg):
    """The stream leg's protocol (a TCP socket, or the read pipe)."""

    __slots__ = ()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self._s._sr is None:
            self._s.attach_stream(transport)

    def _deliver(self, data: bytes | memoryview) -> None:
        self._s._on_stream_data(data)
        self._s._count_stream_read(len(data))

    def eof_received(self) -> bool:
        return self._s._on_stream_eof()

    def connection_lost(self, exc: Exception | None) -> None:
        self._s._on_stream_read_lost(exc)

    def pause_writing(self) -> None:
        self._s._on_stream_write_paused(True)

    def resume_writing(self) -> None:
        self._s._on_stream_write_paused(False)


class _StreamWriteLeg(asyncio.Protocol):
    """Protocol of a separate write pipe (stdout): only flow control and loss matter."""

    __slots__ = ("_s",)

    def __init__(self, splice: Splice) -> None:
        self._s = splice

    def connection_lost(self, exc: Exception | None) -> None:
        self._s._on_stream_write_lost(exc)

    def pause_writing(self) -> None:
        self._s._on_stream_write_paused(True)

    def resume_writing(self) -> None:
        self._s._on_stream_write_paused(False)


class Splice:
    """Join a WebSocket leg and a byte-stream leg; see the module docstring for the state machine.

    Args:
        client: True for the client role (masked frames out, unmasked in), False for the server role.
        frame_size: largest payload per outgoing frame; every frame is a complete binary message.
        max_frame_size: largest incoming frame accepted (larger ⇒ Close 1009).
        read_size: largest read; the read buffer (this size) is shared by all splices of the thread.
        read_budget: bytes a leg may read in one loop iteration before it yields to other connections (0 = never).
        high_water, low_water: write-buffer limits on both legs (flow control).
        keepalive: send a WebSocket ping every this many seconds (None = never).
        require_mask: server role only — reject unmasked client frames (RFC 6455 requires the mask).
        reject_continuation: treat continuation frames as a protocol error (what Bastion reportedly does).
        drop_after_bytes: fault injection — abort the WebSocket without a Close after this many payload bytes.
        half_close: keep forwarding WebSocket → stream after the stream's EOF instead of closing.
        close_timeout: how long to wait for the peer's Close (and for a local application to close after EOF).

    Must be created inside a running event loop (``done`` is a future of that loop).
    """

    def __init__(
        self,
        *,
        client: bool,
        frame_size: int = 32768,
        max_frame_size: int = 64 * MiB,
        read_size: int = 256 * KiB,
        high_water: int = 1 * MiB,
        low_water: int = 256 * KiB,
        keepalive: float | None = None,
        require_mask: bool = True,
        reject_continuation: bool = False,
        drop_after_bytes: int = 0,
        half_close: bool = False,
        close_timeout: float = 10.0,
        read_budget: int = 256 * KiB,
    ) -> None:
        check_options(frame_size=frame_size, max_frame_size=max_frame_size, read_size=read_size,
                      high_water=high_water, low_water=low_water, keepalive=keepalive,
                      drop_after_bytes=drop_after_bytes, close_timeout=close_timeout, read_budget=read_budget)
        self._loop = asyncio.get_running_loop()
        self.client = client
        self.frame_size = frame_size
        self.read_size = read_size
        self.high_water = high_water
        self.low_water = low_water
        self.keepalive = keepalive
        self.half_close = half_close
        self.close_timeout = close_timeout
        self.drop_after_bytes = drop_after_bytes
        self.read_budget = read_budget
        self._encoder = FrameEncoder(client=client, frame_size=frame_size)
        self._decoder = FrameDecoder(client=client, max_frame_size=max_frame_size, require_mask=require_mask,
                                     reject_continuation=reject_continuation)
        self._debug = log.isEnabledFor(logging.DEBUG)

        # The thread's shared read buffer: handed to the transports by get_buffer(), never to write().
        self._rbuf = shared_read_buffer(read_size)
        # Fairness (see the module docstring): bytes each leg may still read in this loop iteration, whether it is
        # paused for that reason (kept apart from flow control's pause), and whether the resetting tick is queued.
        self._sr_quota = read_budget
        self._ws_quota = read_budget
        self._sr_yield = False
        self._ws_yield = False
        self._tick_pending = False

        self.ws_protocol: asyncio.BufferedProtocol = _WsLeg(self)
        self.stream_protocol: asyncio.BufferedProtocol = _StreamLeg(self)
        self._stream_write_protocol = _StreamWriteLeg(self)

        self._ws: asyncio.Transport | None = None
        self._sr: asyncio.BaseTransport | None = None  # stream read transport
        self._sw: asyncio.BaseTransport | None = None  # stream write transport (the same object for TCP)
        self._ws_lost = False
        self._sr_lost = False
        self._sw_lost = False
        self._ws_write_paused = False   # the WebSocket transport is over high water
        self._sw_write_paused = False   # the stream's write transport is over high water
        self._sr_reading = True         # what we last told the stream read transport
        self._ws_reading = True         # what we last told the WebSocket transport
        self._stream_eof = False        # the stream's read side reached EOF
        self._sw_eof_sent = False       # we shut down (or closed) the stream's write side
        self._close_sent = False
        self._close_received = False
        self._close_pending: tuple[int, str] | None = None  # close() before the WebSocket was attached
        self._ws_over = False           # the WebSocket session has ended; only the stream is wound down
        self._aborted = False
        self._pending = bytearray()     # stream bytes read before the WebSocket leg was attached
        self._ws_leftover = b""         # handshake leftover held until the stream leg is attached
        self._close_timer: asyncio.TimerHandle | None = None
        self._stream_timer: asyncio.TimerHandle | None = None
        self._ping_timer: asyncio.TimerHandle | None = None

        self.done: asyncio.Future[None] = self._loop.create_future()
        self.bytes_stream_to_ws = 0
        self.bytes_ws_to_stream = 0
        self.close_code = 1006
        self.close_reason = ""
        self.close_code_sent: int | None = None
        self.error: BaseException | None = None
        self.started = 0.0
        self.ended = 0.0

    def __repr__(self) -> str:
        role = "client" if self.client else "server"
        return (f"<Splice {role} s→ws={self.bytes_stream_to_ws} ws→s={self.bytes_ws_to_stream} "
                f"close={self.close_code} sent={self.close_code_sent} done={self.done.done()}>")

    # ------------------------------------------------------------------ public API

    def attach_ws(self, transport: asyncio.Transport, leftover: bytes = b"") -> None:
        """Take over an upgraded WebSocket transport; ``leftover`` = bytes already read past the handshake."""
        if self._ws is not None:
            raise RuntimeError("the WebSocket leg is already attached")
        self._ws = transport
        if self._ws_over or transport.is_closing():
            self._ws_over = True
            if self._aborted or transport.is_closing():
                transport.abort()
            else:  # close() was called and already completed on the stream side: just close politely
                self._send_close(*(self._close_pending or (1000, "")))
                transport.close()
            self._ws_lost = True
            self._check_done()
            return
        if transport.get_protocol() is not self.ws_protocol:
            transport.set_protocol(self.ws_protocol)
        transport.set_write_buffer_limits(high=self.high_water, low=self.low_water)
        _tune_socket(transport, keepalive=True)
        if self._sr is not None:
            self.started = time.monotonic()
        if self.keepalive:
            self._ping_timer = self._loop.call_later(self.keepalive, self._on_ping_timer)
        if self._debug:
            log.debug("splice: WebSocket leg attached (%s role)", "client" if self.client else "server")
        if self._close_pending is not None:
            self._send_close(*self._close_pending)
        elif self._pending:
            pending = bytes(self._pending)
            self._pending = bytearray()
            self._on_stream_data(pending)
        if self._stream_eof and not self.half_close:
            self._send_close(1000)
        if leftover:
            self._on_ws_data(leftover)  # held until the stream leg is attached if it is not yet
        self._update_ws_reading(force=True)  # a handshake protocol may have left it paused
        self._update_stream_reading()

    def attach_stream(self, transport: asyncio.BaseTransport,
                      write_transport: asyncio.BaseTransport | None = None) -> None:
        """Take over the byte-stream leg: a TCP transport, or a read pipe plus a write pipe."""
        if self._sr is not None:
            raise RuntimeError("the stream leg is already attached")
        self._sr = transport
        self._sw = write_transport if write_transport is not None else transport
        if self._ws_over:  # the WebSocket session already ended: nothing to carry
            for leg in {id(self._sr): self._sr, id(self._sw): self._sw}.values():
                abort_transport(leg) if self._aborted else leg.close()
            self._sr_lost = self._sw_lost = True
            self._check_done()
            return
        if transport.get_protocol() is not self.stream_protocol:
            transport.set_protocol(self.stream_protocol)
        if self._sw is not self._sr:
            self._sw.set_protocol(self._stream_write_protocol)
        self._update_stream_reading(force=True)  # an accepting protocol may have paused it
        self._sw.set_write_buffer_limits(high=self.high_water, low=self.low_water)  # type: ignore[attr-defined]
        _tune_socket(transport, keepalive=False)
        if self._ws is not None:
            self.started = time.monotonic()
        if self._ws_leftover:
            leftover, self._ws_leftover = self._ws_leftover, b""
            self._on_ws_data(leftover)
        self._update_ws_reading()

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Start the closing handshake: stop reading the stream, send Close, wait for the peer's Close."""
        if self._ws_over or self._close_sent:
            return
        if self._ws is None:
            self._close_pending = (code, reason)
            return
        self._send_close(code, reason)

    def abort(self) -> None:
        """Drop both legs now, without a Close frame and without flushing."""
        if self._aborted:
            return
        self._aborted = True
        self._ws_over = True
        self._cancel_timers()
        for transport in (self._ws, self._sr, self._sw):
            if transport is not None:
                abort_transport(transport)
        if self._ws is None:
            self._ws_lost = True
        if self._sr is None:
            self._sr_lost = self._sw_lost = True
        self._check_done()

    # ------------------------------------------------------------------ stream → WebSocket

    def _on_stream_data(self, data: bytes | memoryview) -> None:
        if self._close_sent or self._ws_over:
            return  # closing or draining after the end: the data has nowhere to go
        if self._ws is None:
            # Normally paused until then, but uvloop ignores a pause made inside connection_made: keep this read
            # and pause again (from here it is honoured), so at most one read is held.
            self._pending += data
            self._update_stream_reading(force=True)
            return
        n = len(data)
        cut = False
        if self.drop_after_bytes:
            left = self.drop_after_bytes - self.bytes_stream_to_ws - self.bytes_ws_to_stream
            if n >= left:
                data, n, cut = data[:left], left, True
        if n:
            self._ws.write(self._encoder.encode_data(data))
            self.bytes_stream_to_ws += n
        if cut:
            self._fault_drop()

    def _on_stream_eof(self) -> bool:
        """The stream's read side ended. Returns True to keep a TCP transport open for writing."""
        self._stream_eof = True
        self._sr_reading = False  # the transport stops reading by itself at EOF
        if self._debug:
            log.debug("splice: stream EOF (half_close=%s)", self.half_close)
        if self._ws_over:  # we were only draining it
            self._close_stream()
            return True
        if not self.half_close and self._ws is not None:
            self._send_close(1000)
        return True

    def _on_stream_read_lost(self, exc: BaseException | None) -> None:
        self._sr_lost = True
        self._stream_eof = True
        if self._sw is self._sr:
            self._sw_lost = True
        if exc is not None and self.error is None and not self._ws_over:
            self.error = exc
        if not self._ws_over:
            if self._sw_lost or not self.half_close:
                self.close(1000)
        else:
            self._close_stream()
        self._update_ws_reading()
        self._check_done()

    def _on_stream_write_lost(self, exc: BaseException | None) -> None:
        self._sw_lost = True
        if not self._ws_over:
            self.close(1000)  # nobody can receive WebSocket → stream data any more
        else:
            self._close_stream()
        self._update_ws_reading()
        self._check_done()

    def _on_stream_write_paused(self, paused: bool) -> None:
        self._sw_write_paused = paused
        self._update_ws_reading()

    # ------------------------------------------------------------------ WebSocket → stream

    def _on_ws_data(self, data: bytes | memoryview) -> None:
        if self._ws_over:
            return
        if self._sw is None:  # no stream leg yet (see _on_stream_data): hold this read, pause again
            self._ws_leftover += data
            self._update_ws_reading(force=True)
            return
        try:
            events = self._decoder.feed(data)
        except ProtocolError as exc:
            self._fail(exc)
            return
        chunks: list[bytes] = []
        for opcode, payload, _fin in events:
            if opcode < OP_CLOSE:  # text or binary: carried as bytes
                if payload:
                    chunks.append(payload)
            elif opcode == OP_PING:
                if not self._close_sent:
                    self._ws.write(self._encoder.pong(payload))  # type: ignore[union-attr]
            elif opcode == OP_CLOSE:
                if chunks:
                    self._forward(chunks)
                    chunks = []
                if not self._ws_over:  # _forward may have dropped the connection (fault injection)
                    self._on_close_frame(payload)
                return
            # OP_PONG: nothing to do
        if chunks:
            self._forward(chunks)

    def _forward(self, chunks: list[bytes]) -> None:
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        n = len(data)
        cut = False
        if self.drop_after_bytes:
            left = self.drop_after_bytes - self.bytes_stream_to_ws - self.bytes_ws_to_stream
            if n >= left:
                data, n, cut = data[:left], left, True
        if n and not self._sw_lost and not self._sw_eof_sent:
            self._sw.write(data)  # type: ignore[union-attr]
            self.bytes_ws_to_stream += n
        if cut:
            self._fault_drop()

    def _on_close_frame(self, payload: bytes) -> None:
        self.close_code, self.close_reason = parse_close(payload)
        self._close_received = True
        if self._debug:
            log.debug("splice: Close %d received", self.close_code)
        if not self._close_sent:
            self._send_close(self.close_code)  # echo the code (1005 ⇒ an empty Close)
        self._end_ws()

    def _on_ws_lost(self, exc: BaseException | None) -> None:
        self._ws_lost = True
        if not self._ws_over:
            if self.error is None:
                self.error = ConnectionClosed(
                    "The WebSocket connection was dropped without a close frame"
                    + (f" ({exc})" if exc is not None else ""),
                    code=1006,
                    hint="The remote end or the network closed the connection; reconnect to continue.",
                )
            if self._debug:
                log.debug("splice: WebSocket lost without a close handshake: %r", exc)
            self._end_ws()
        self._check_done()

    # ------------------------------------------------------------------ closing

    def _send_close(self, code: int, reason: str = "") -> None:
        if self._close_sent or self._ws is None or self._ws_lost:
            return
        self._close_sent = True
        self.close_code_sent = code
        self._ws.write(self._encoder.close(None if code == 1005 else code, reason))
        self._update_stream_reading()
        if not self._ws_over and self._close_timer is None:
            self._close_timer = self._loop.call_later(self.close_timeout, self._on_close_timeout)

    def _on_close_timeout(self) -> None:
        self._close_timer = None
        if self._ws_over:
            return
        if self.error is None:
            self.error = ConnectionClosed(
                f"The peer did not answer the close frame within {self.close_timeout:g} s",
                code=1006,
                hint="The remote end is unresponsive; the connection was dropped.",
            )
        self._ws.abort()  # type: ignore[union-attr]
        self._end_ws()

    def _fail(self, exc: ProtocolError) -> None:
        """The peer broke the protocol: Close with the error's code, then drop without waiting."""
        if self.error is None:
            self.error = exc
        if self._debug:
            log.debug("splice: protocol error, close %d: %s", exc.close_code, exc)
        self._send_close(exc.close_code)
        self._end_ws()

    def _fault_drop(self) -> None:
        if self.error is None:
            self.error = ConnectionClosed(
                f"Dropped by fault injection after {self.drop_after_bytes} bytes", code=1006)
        self._ws.abort()  # type: ignore[union-attr]
        self._end_ws()

    def _end_ws(self) -> None:
        """The WebSocket session is over: close its transport (flushing) and give the stream leg EOF."""
        if self._ws_over:
            return
        self._ws_over = True
        self._cancel_timers()
        if self._ws is not None and not self._ws_lost:
            if not self._ws.is_closing():
                self._ws.close()
            # A TLS close waits for the peer's close_notify (30 s by default): bound it, so `done` cannot hang.
            self._close_timer = self._loop.call_later(self.close_timeout, self._on_ws_close_stuck)
        self._shutdown_stream()
        self._check_done()

    def _on_ws_close_stuck(self) -> None:
        self._close_timer = None
        if self._ws is not None and not self._ws_lost:
            abort_transport(self._ws)

    def _shutdown_stream(self) -> None:
        sr, sw = self._sr, self._sw
        if sr is None or sw is None:
            return
        if sw is sr and not self._sw_lost and not self._stream_eof and sw.can_write_eof():  # type: ignore[attr-defined]
            # A socket whose application is still writing: EOF it, then drain what it still sends.
            sw.write_eof()  # type: ignore[attr-defined]
            self._sw_eof_sent = True
            self._update_stream_reading()
            self._stream_timer = self._loop.call_later(min(STREAM_LINGER, self.close_timeout), self._close_stream)
        else:
            self._close_stream()

    def _close_stream(self) -> None:
        """Close the stream transports (each flushes what is queued before closing)."""
        self._stream_timer = None
        self._sw_eof_sent = True
        for transport, lost in ((self._sw, self._sw_lost), (self._sr, self._sr_lost)):
            if transport is not None and not lost and not transport.is_closing():
                transport.close()

    def _cancel_timers(self) -> None:
        for name in ("_close_timer", "_ping_timer"):
            timer = getattr(self, name)
            if timer is not None:
                timer.cancel()
                setattr(self, name, None)

    def _check_done(self) -> None:
        if self.done.done():
            return
        ws_closed = self._ws_lost or (self._ws is None and self._ws_over)
        stream_closed = (self._sr_lost and self._sw_lost) or (self._sr is None and self._ws_over)
        if ws_closed and stream_closed:
            self.ended = time.monotonic()
            if self._stream_timer is not None:
                self._stream_timer.cancel()
                self._stream_timer = None
            self._cancel_timers()
            if self._debug:
                log.debug("splice: done %r", self)
            # Both legs are gone: let go of the transports (see the Cython twin: uvloop's TLS transport keeps its
            # protocol and buffers alive while referenced, and this object sits in a cycle with its leg protocols).
            self._ws = self._sr = self._sw = None
            self.done.set_result(None)

    # ------------------------------------------------------------------ flow control and keepalive

    def _update_stream_reading(self, force: bool = False) -> None:
        """Read the stream only when its bytes can go somewhere (or when draining it after the end).

        ``force``: tell the transport even if we believe it is already in that state (at attach time).
        """
        sr = self._sr
        if sr is None or self._sr_lost or self._stream_eof:
            return
        # While draining after the end, read (and discard) whatever the application still sends.
        want = (self._ws_over or (self._ws is not None and not self._ws_write_paused and not self._close_sent)) \
            and not self._sr_yield
        if (force or want != self._sr_reading) and not sr.is_closing():
            self._sr_reading = want
            if want:
                sr.resume_reading()  # type: ignore[attr-defined]
            else:
                sr.pause_reading()  # type: ignore[attr-defined]

    def _update_ws_reading(self, force: bool = False) -> None:
        """Read the WebSocket unless the stream cannot take more (control frames must still get through)."""
        ws = self._ws
        if ws is None or self._ws_lost or self._ws_over:
            return
        stream_gone = self._sw_lost or self._sw_eof_sent
        want = self._sw is not None and (stream_gone or not self._sw_write_paused) and not self._ws_yield
        if (force or want != self._ws_reading) and not ws.is_closing():
            self._ws_reading = want
            if want:
                ws.resume_reading()
            else:
                ws.pause_reading()

    def _count_stream_read(self, n: int) -> None:
        """Fairness: charge a stream read to this iteration's budget; past it, yield until the tick."""
        if not self.read_budget:
            return
        self._sr_quota -= n
        if self._over_budget(self._sr_quota) and not self._sr_yield:
            self._sr_yield = True
            self._update_stream_reading()

    def _count_ws_read(self, n: int) -> None:
        """Fairness: the same for the WebSocket leg."""
        if not self.read_budget:
            return
        self._ws_quota -= n
        if self._over_budget(self._ws_quota) and not self._ws_yield:
            self._ws_yield = True
            self._update_ws_reading()

    def _over_budget(self, quota: int) -> bool:
        """Schedule the refill tick once half the budget is spent; true when a leg's quota is exhausted."""
        if quota < (self.read_budget >> 1) and not self._tick_pending:
            self._tick_pending = True  # lazily: small reads (interactive traffic) never schedule anything
            self._loop.call_soon(self._on_tick)
        return quota < 0

    def _on_tick(self) -> None:
        """A new loop iteration: refill both budgets and let a leg that yielded read again."""
        self._tick_pending = False
        self._sr_quota = self._ws_quota = self.read_budget
        if self._sr_yield:
            self._sr_yield = False
            self._update_stream_reading()
        if self._ws_yield:
            self._ws_yield = False
            self._update_ws_reading()

    def _buffer_lost(self) -> None:
        """buffer_updated() did not follow this leg's get_buffer(): the bytes may be another connection's."""
        if self.error is None:
            self.error = RuntimeError(
                "internal error: the event loop delivered a read after the shared read buffer was handed to "
                "another connection; the connection was dropped rather than forward corrupted data")
        log.error("splice: %s", self.error)
        self.abort()

    @property
    def read_buffer(self) -> memoryview:
        """The (thread-shared) read buffer, read-only: for tests and diagnostics."""
        return self._rbuf.view.toreadonly()

    def _on_ping_timer(self) -> None:
        self._ping_timer = None
        if self._ws_over or self._close_sent or self._ws is None:
            return
        self._ws.write(self._encoder.ping(b""))
        self._ping_timer = self._loop.call_later(self.keepalive, self._on_ping_timer)  # type: ignore[arg-type]

    # For tests and diagnostics: bytes currently queued in each leg's write transport.
    @property
    def ws_write_buffered(self) -> int:
        ws = self._ws
        return 0 if ws is None or self._ws_lost else ws.get_write_buffer_size()

    @property
    def stream_write_buffered(self) -> int:
        sw = self._sw
        return 0 if sw is None or self._sw_lost else sw.get_write_buffer_size()  # type: ignore[attr-defined]
