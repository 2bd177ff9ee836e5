# _splice.pxi — the Splice (pump) of bastion_fast._pump (included by _pump.pyx after _codec.pxi).
#
# Same state machine as the pure-Python reference ``bastion_fast._splice_py`` (read its module docstring for the
# theory of operation: closing rules, flow control, memory bound); the method names match one for one. Only the two
# data paths differ, and only in how bytes move:
#
#   Both legs of every splice of a thread read into one shared buffer (_ReadBuffer, read_size bytes): it is only
#   touched between get_buffer() and the buffer_updated() that follows (back to back in asyncio and uvloop, plain
#   and TLS; see the reference's docstring), and `owner` catches a loop that would ever defer buffer_updated.
#
#   stream → WebSocket   transport --get_buffer()--> shared buffer
#                        buffer_updated(n): one PyBytes of encoded_size(n) is allocated, encode_data_into() writes
#                        headers + payload (masked while copying in client role) straight into it, one write().
#                        The read buffer is never handed to a transport; the bytes object is never touched again.
#
#   WebSocket → stream   transport --get_buffer()--> shared buffer
#                        buffer_updated(n): FrameDecoder.parse() walks the buffer in place (server role unmasks in
#                        place) and reports FrameSlice structs; data slices are collected as (pointer, length) in a
#                        C array, and at the end of the read one PyBytes is built from them (a single slice — the
#                        common case — is one memcpy), one write(). More than _MAX_PENDING slices in one read
#                        (a flood of tiny frames) are compacted to the front of the buffer as they come, so memory
#                        stays fixed. Control frames: a ping is answered at once, a close flushes the slices first.
#
# Fairness (read_budget): each leg counts its reads; past the budget it pauses until a call_soon tick refills it
# (same logic as the reference, kept apart from flow control by the _sr_yield/_ws_yield flags).
#
# Per read there is one Python object created (the bytes handed to write; plus, on the first read of a loop
# iteration, the fairness tick's handle) and no logging; debug logging is behind the cached ``_debug`` flag. TLS is never bypassed: writes go through transport.write().
#
# Read path choice (measured, see bench/test_bench_splice.py and the report of the pump work): BufferedProtocol
# (get_buffer/buffer_updated) on both legs. data_received() is still implemented, because asyncio's read pipes only
# call that.

from cpython.bytearray cimport PyByteArray_AS_STRING
from libc.string cimport memmove

import asyncio as _asyncio
import logging as _logging
import threading as _threading
import time as _time

from bastion_fast._splice_py import STREAM_LINGER as _STREAM_LINGER
from bastion_fast._splice_py import _tune_socket
from bastion_fast._splice_py import abort_transport as _abort_transport
from bastion_fast._splice_py import check_options as _check_options
from bastion_fast.exceptions import ConnectionClosed as _ConnectionClosed

_splice_log = _logging.getLogger("bastion_fast.pump")

cdef enum:
    _MAX_PENDING = 64   # data slices collected per read before compaction


cdef class Splice  # forward declaration: the protocol objects below hold a typed reference to it


cdef struct _Piece:
    const unsigned char* ptr
    Py_ssize_t length


cdef class _ReadBuffer:
    """A read buffer shared by the splices of one thread, and the leg it was last handed to by get_buffer()."""
    cdef bytearray buf
    cdef object view
    cdef unsigned char* ptr
    cdef object owner

    def __cinit__(self, Py_ssize_t size):
        self.buf = bytearray(size)
        self.ptr = <unsigned char*>PyByteArray_AS_STRING(self.buf)
        self.view = memoryview(self.buf)   # pins the bytearray (no resize), so ptr stays valid
        self.owner = None


_read_buffers = _threading.local()


cdef _ReadBuffer _shared_read_buffer(Py_ssize_t size):
    """This thread's read buffer of ``size`` bytes (see _splice_py.shared_read_buffer)."""
    pool = getattr(_read_buffers, "pool", None)
    if pool is None:
        pool = _read_buffers.pool = {}
    buf = pool.get(size)
    if buf is None:
        buf = pool[size] = _ReadBuffer(size)
    return <_ReadBuffer>buf


cdef class _LegBase:
    """Common part of the three protocol objects: a typed reference back to the splice."""
    cdef Splice _s


cdef class _WsLegBase(_LegBase):
    def connection_made(self, transport):
        if self._s._ws is None:
            self._s.attach_ws(transport)

    def get_buffer(self, Py_ssize_t sizehint):
        cdef _ReadBuffer buf = self._s._rbuf
        buf.owner = self
        return buf.view

    def buffer_updated(self, Py_ssize_t nbytes):
        cdef Splice s = self._s
        cdef _ReadBuffer buf = s._rbuf
        if buf.owner is not self:
            s._buffer_lost()
            return
        buf.owner = None
        s._on_ws_data(buf.ptr, nbytes)
        s._count_ws_read(nbytes)

    def data_received(self, data):
        self._s._on_ws_data_obj(data)
        self._s._count_ws_read(len(data))

    def eof_received(self):
        return False

    def connection_lost(self, exc):
        self._s._on_ws_lost(exc)

    def pause_writing(self):
        self._s._ws_write_paused = True
        self._s._update_stream_reading(False)

    def resume_writing(self):
        self._s._ws_write_paused = False
        self._s._update_stream_reading(False)


cdef class _StreamLegBase(_LegBase):
    def connection_made(self, transport):
        if self._s._sr is None:
            self._s.attach_stream(transport)

    def get_buffer(self, Py_ssize_t sizehint):
        cdef _ReadBuffer buf = self._s._rbuf
        buf.owner = self
        return buf.view

    def buffer_updated(self, Py_ssize_t nbytes):
        cdef Splice s = self._s
        cdef _ReadBuffer buf = s._rbuf
        if buf.owner is not self:
            s._buffer_lost()
            return
        buf.owner = None
        s._on_stream_data(buf.ptr, nbytes)
        s._count_stream_read(nbytes)

    def data_received(self, data):
        cdef const unsigned char[::1] view = data
        if view.shape[0]:
            self._s._on_stream_data(&view[0], view.shape[0])
            self._s._count_stream_read(view.shape[0])

    def eof_received(self):
        return self._s._on_stream_eof()

    def connection_lost(self, exc):
        self._s._on_stream_read_lost(exc)

    def pause_writing(self):
        self._s._on_stream_write_paused(True)

    def resume_writing(self):
        self._s._on_stream_write_paused(False)


cdef class _StreamWriteLegBase(_LegBase):
    def connection_made(self, transport):
        pass

    def connection_lost(self, exc):
        self._s._on_stream_write_lost(exc)

    def pause_writing(self):
        self._s._on_stream_write_paused(True)

    def resume_writing(self):
        self._s._on_stream_write_paused(False)


# asyncio detects buffered protocols with isinstance(BufferedProtocol) and uvloop by looking for get_buffer on
# something that is not an asyncio.Protocol; a cdef class cannot inherit from those Python classes, so each leg is a
# Python subclass mixing the cdef base (all the behaviour) with the asyncio ABC (the type test).
class _WsLeg(_WsLegBase, _asyncio.BufferedProtocol):
    """The WebSocket leg's protocol."""
    __slots__ = ()


class _StreamLeg(_StreamLegBase, _asyncio.BufferedProtocol):
    """The stream leg's protocol (a TCP socket, or the read pipe)."""
    __slots__ = ()


class _StreamWriteLeg(_StreamWriteLegBase, _asyncio.Protocol):
    """Protocol of a separate write pipe (stdout)."""
    __slots__ = ()


cdef class Splice:
    """Join a WebSocket leg and a byte-stream leg (DESIGN.md §2); the state machine of ``_splice_py.Splice``."""

    # options
    cdef readonly bint client
    cdef readonly Py_ssize_t frame_size
    cdef readonly Py_ssize_t read_size
    cdef readonly Py_ssize_t high_water
    cdef readonly Py_ssize_t low_water
    cdef readonly object keepalive
    cdef readonly bint half_close
    cdef readonly double close_timeout
    cdef readonly long long drop_after_bytes
    cdef readonly Py_ssize_t read_budget
    # codec and buffers
    cdef FrameEncoder _encoder
    cdef FrameDecoder _decoder
    cdef bint _debug
    cdef _ReadBuffer _rbuf         # the thread's shared read buffer
    cdef _Piece _pieces[_MAX_PENDING]
    # fairness (see the reference's docstring): budget left in this loop iteration, yielding, tick queued
    cdef Py_ssize_t _sr_quota
    cdef Py_ssize_t _ws_quota
    cdef bint _sr_yield
    cdef bint _ws_yield
    cdef bint _tick_pending
    cdef object _tick_cb           # bound _on_tick, cached
    # legs
    cdef readonly object ws_protocol
    cdef readonly object stream_protocol
    cdef object _stream_write_protocol
    cdef object _loop
    cdef object _ws
    cdef object _sr
    cdef object _sw
    cdef object _ws_write          # bound transport.write, cached at attach time
    cdef object _sw_write
    # state (names as in _splice_py)
    cdef bint _ws_lost
    cdef bint _sr_lost
    cdef bint _sw_lost
    cdef bint _ws_write_paused
    cdef bint _sw_write_paused
    cdef bint _sr_reading
    cdef bint _ws_reading
    cdef bint _stream_eof
    cdef bint _sw_eof_sent
    cdef bint _close_sent
    cdef bint _close_received
    cdef object _close_pending
    cdef bint _ws_over
    cdef bint _aborted
    cdef bytearray _pending
    cdef bytes _ws_leftover
    cdef object _close_timer
    cdef object _stream_timer
    cdef object _ping_timer
    # results
    cdef readonly object done
    cdef readonly long long bytes_stream_to_ws
    cdef readonly long long bytes_ws_to_stream
    cdef readonly int close_code
    cdef readonly str close_reason
    cdef readonly object close_code_sent
    cdef readonly object error
    cdef readonly double started
    cdef readonly double ended

    def __init__(self, *, bint client, Py_ssize_t frame_size=32768, Py_ssize_t max_frame_size=64 * 1024 * 1024,
                 Py_ssize_t read_size=256 * 1024, Py_ssize_t high_water=1024 * 1024,
                 Py_ssize_t low_water=256 * 1024, keepalive=None, bint require_mask=True,
                 bint reject_continuation=False, long long drop_after_bytes=0, bint half_close=False,
                 double close_timeout=10.0, Py_ssize_t read_budget=256 * 1024):
        _check_options(frame_size=frame_size, max_frame_size=max_frame_size, read_size=read_size,
                       high_water=high_water, low_water=low_water, keepalive=keepalive,
                       drop_after_bytes=drop_after_bytes, close_timeout=close_timeout, read_budget=read_budget)
        self._loop = _asyncio.get_running_loop()
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
        self._debug = _splice_log.isEnabledFor(_logging.DEBUG)

        self._rbuf = _shared_read_buffer(read_size)
        self._sr_quota = read_budget
        self._ws_quota = read_budget
        self._tick_cb = self._on_tick

        self.ws_protocol = _WsLeg()
        (<_LegBase>self.ws_protocol)._s = self
        self.stream_protocol = _StreamLeg()
        (<_LegBase>self.stream_protocol)._s = self
        self._stream_write_protocol = _StreamWriteLeg()
        (<_LegBase>self._stream_write_protocol)._s = self

        self._ws = None
        self._sr = None
        self._sw = None
        self._sr_reading = True
        self._ws_reading = True
        self._close_pending = None
        self._pending = bytearray()
        self._ws_leftover = b""
        self.done = self._loop.create_future()
        self.close_code = 1006
        self.close_reason = ""
        self.close_code_sent = None
        self.error = None

    def __repr__(self):
        role = "client" if self.client else "server"
        return (f"<Splice {role} s→ws={self.bytes_stream_to_ws} ws→s={self.bytes_ws_to_stream} "
                f"close={self.close_code} sent={self.close_code_sent} done={self.done.done()}>")

    # ------------------------------------------------------------------ public API

    def attach_ws(self, transport, leftover=b""):
        """Take over an upgraded WebSocket transport; ``leftover`` = bytes already read past the handshake."""
        if self._ws is not None:
            raise RuntimeError("the WebSocket leg is already attached")
        self._ws = transport
        if self._ws_over or transport.is_closing():
            self._ws_over = True
            if self._aborted or transport.is_closing():
                transport.abort()
            else:
                code, reason = self._close_pending or (1000, "")
                self._ws_write = transport.write
                self._send_close(code, reason)
                transport.close()
            self._ws_lost = True
            self._check_done()
            return
        if transport.get_protocol() is not self.ws_protocol:
            transport.set_protocol(self.ws_protocol)
        self._ws_write = transport.write
        transport.set_write_buffer_limits(high=self.high_water, low=self.low_water)
        _tune_socket(transport, keepalive=True)
        if self._sr is not None:
            self.started = _time.monotonic()
        if self.keepalive:
            self._ping_timer = self._loop.call_later(self.keepalive, self._on_ping_timer)
        if self._debug:
            _splice_log.debug("splice: WebSocket leg attached (%s role)", "client" if self.client else "server")
        if self._close_pending is not None:
            code, reason = self._close_pending
            self._send_close(code, reason)
        elif self._pending:
            pending = bytes(self._pending)
            self._pending = bytearray()
            self._on_stream_data_obj(pending)
        if self._stream_eof and not self.half_close:
            self._send_close(1000, "")
        if leftover:
            self._on_ws_data_obj(leftover)   # held until the stream leg is attached if it is not yet
        self._update_ws_reading(True)
        self._update_stream_reading(False)

    def attach_stream(self, transport, write_transport=None):
        """Take over the byte-stream leg: a TCP transport, or a read pipe plus a write pipe."""
        if self._sr is not None:
            raise RuntimeError("the stream leg is already attached")
        self._sr = transport
        self._sw = write_transport if write_transport is not None else transport
        if self._ws_over:
            if self._aborted:
                _abort_transport(self._sr)
            else:
                self._sr.close()
            if self._sw is not self._sr:
                if self._aborted:
                    _abort_transport(self._sw)
                else:
                    self._sw.close()
            self._sr_lost = True
            self._sw_lost = True
            self._check_done()
            return
        if transport.get_protocol() is not self.stream_protocol:
            transport.set_protocol(self.stream_protocol)
        if self._sw is not self._sr:
            self._sw.set_protocol(self._stream_write_protocol)
        self._sw_write = self._sw.write
        self._update_stream_reading(True)
        self._sw.set_write_buffer_limits(high=self.high_water, low=self.low_water)
        _tune_socket(transport, keepalive=False)
        if self._ws is not None:
            self.started = _time.monotonic()
        if self._ws_leftover:
            leftover = self._ws_leftover
            self._ws_leftover = b""
            self._on_ws_data_obj(leftover)
        self._update_ws_reading(False)

    def close(self, int code=1000, str reason=""):
        """Start the closing handshake: stop reading the stream, send Close, wait for the peer's Close."""
        if self._ws_over or self._close_sent:
            return
        if self._ws is None:
            self._close_pending = (code, reason)
            return
        self._send_close(code, reason)

    def abort(self):
        """Drop both legs now, without a Close frame and without flushing."""
        if self._aborted:
            return
        self._aborted = True
        self._ws_over = True
        self._cancel_timers()
        for transport in (self._ws, self._sr, self._sw):
            if transport is not None:
                _abort_transport(transport)
        if self._ws is None:
            self._ws_lost = True
        if self._sr is None:
            self._sr_lost = True
            self._sw_lost = True
        self._check_done()

    @property
    def ws_write_buffered(self):
        """Bytes queued in the WebSocket transport (diagnostics and tests)."""
        if self._ws is None or self._ws_lost:
            return 0
        return self._ws.get_write_buffer_size()

    @property
    def stream_write_buffered(self):
        """Bytes queued in the stream's write transport (diagnostics and tests)."""
        if self._sw is None or self._sw_lost:
            return 0
        return self._sw.get_write_buffer_size()

    # ------------------------------------------------------------------ stream → WebSocket (hot path)

    cdef int _on_stream_data(self, const unsigned char* data, Py_ssize_t n) except -1:
        cdef bint cut = False
        cdef long long left
        cdef bytes out
        if self._close_sent or self._ws_over:
            return 0
        if self._ws is None:
            # uvloop ignores a pause made inside connection_made: keep this read and pause again (honoured now).
            self._pending += (<const char*>data)[:n]
            self._update_stream_reading(True)
            return 0
        if self.drop_after_bytes:
            left = self.drop_after_bytes - self.bytes_stream_to_ws - self.bytes_ws_to_stream
            if n >= left:
                n = <Py_ssize_t>left
                cut = True
        if n > 0:
            out = PyBytes_FromStringAndSize(NULL, self._encoder.encoded_size(n))
            self._encoder.encode_data_into(<unsigned char*>PyBytes_AS_STRING(out), data, n)
            self._ws_write(out)
            self.bytes_stream_to_ws += n
        if cut:
            self._fault_drop()
        return 0

    cdef int _on_stream_data_obj(self, data) except -1:
        cdef const unsigned char[::1] view = data
        if view.shape[0]:
            self._on_stream_data(&view[0], view.shape[0])
        return 0

    def _on_stream_eof(self):
        self._stream_eof = True
        self._sr_reading = False
        if self._debug:
            _splice_log.debug("splice: stream EOF (half_close=%s)", self.half_close)
        if self._ws_over:
            self._close_stream()
            return True
        if not self.half_close and self._ws is not None:
            self._send_close(1000, "")
        return True

    def _on_stream_read_lost(self, exc):
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
        self._update_ws_reading(False)
        self._check_done()

    def _on_stream_write_lost(self, exc):
        self._sw_lost = True
        if not self._ws_over:
            self.close(1000)
        else:
            self._close_stream()
        self._update_ws_reading(False)
        self._check_done()

    def _on_stream_write_paused(self, bint paused):
        self._sw_write_paused = paused
        self._update_ws_reading(False)

    # ------------------------------------------------------------------ WebSocket → stream (hot path)

    cdef int _on_ws_data(self, unsigned char* buf, Py_ssize_t n) except -1:
        """Parse one read in place; forward its data slices in one write; answer pings; handle a close."""
        cdef FrameSlice slices[_MAX_PENDING]
        cdef Py_ssize_t pos = 0
        cdef Py_ssize_t consumed = 0
        cdef Py_ssize_t count, i
        cdef Py_ssize_t npieces = 0
        cdef Py_ssize_t compacted = 0    # bytes of payload already moved to buf[0:compacted]
        cdef FrameSlice* s
        if self._ws_over:
            return 0
        if self._sw is None:  # no stream leg yet: hold this read and pause again (see _on_stream_data)
            self._ws_leftover += (<const char*>buf)[:n]
            self._update_ws_reading(True)
            return 0
        while pos < n:
            try:
                count = self._decoder.parse(buf + pos, n - pos, slices, _MAX_PENDING - npieces, &consumed)
            except _ProtocolError as exc:
                self._fail(exc)   # like feed(): nothing from a read that raised is delivered
                return 0
            for i in range(count):
                s = &slices[i]
                if s.offset >= 0:
                    if s.length:
                        self._pieces[npieces].ptr = buf + pos + s.offset
                        self._pieces[npieces].length = s.length
                        npieces += 1
                elif s.opcode == WS_PING:
                    if not self._close_sent:
                        self._ws_write(self._encoder.pong(self._decoder.control_payload()))
                elif s.opcode == WS_CLOSE:
                    if npieces or compacted:
                        self._forward(buf, compacted, npieces)
                    if not self._ws_over:
                        self._on_close_frame(self._decoder.control_payload())
                    return 0
                # WS_PONG: nothing to do
            pos += consumed
            if npieces == _MAX_PENDING:
                # A flood of small frames: move the collected payload to the front of the buffer (always behind
                # the parse position, so nothing unparsed is overwritten) and collect again.
                for i in range(npieces):
                    memmove(buf + compacted, self._pieces[i].ptr, self._pieces[i].length)
                    compacted += self._pieces[i].length
                npieces = 0
            elif consumed == 0 and count == 0:
                break
        if npieces or compacted:
            self._forward(buf, compacted, npieces)
        return 0

    cdef int _on_ws_data_obj(self, data) except -1:
        """data_received()/leftover path: parse works in place, so on a private copy (never the shared buffer,
        which may be in use by the read this call is nested in)."""
        cdef bytearray copy = bytearray(data)
        if len(copy):
            self._on_ws_data(<unsigned char*>PyByteArray_AS_STRING(copy), len(copy))
        return 0

    cdef int _forward(self, unsigned char* buf, Py_ssize_t compacted, Py_ssize_t npieces) except -1:
        """One bytes object from buf[0:compacted] + the collected pieces; one write to the stream."""
        cdef Py_ssize_t total = compacted
        cdef Py_ssize_t i, at
        cdef long long left
        cdef bint cut = False
        cdef bytes data
        cdef unsigned char* out
        for i in range(npieces):
            total += self._pieces[i].length
        if self.drop_after_bytes:
            left = self.drop_after_bytes - self.bytes_stream_to_ws - self.bytes_ws_to_stream
            if total >= left:
                total = <Py_ssize_t>left
                cut = True
        if total > 0 and not self._sw_lost and not self._sw_eof_sent:
            if compacted == 0 and npieces == 1:
                data = PyBytes_FromStringAndSize(<const char*>self._pieces[0].ptr, total)
            else:
                data = PyBytes_FromStringAndSize(NULL, total)
                out = <unsigned char*>PyBytes_AS_STRING(data)
                at = min(compacted, total)
                memcpy(out, buf, at)
                for i in range(npieces):
                    if at >= total:
                        break
                    memcpy(out + at, self._pieces[i].ptr, min(self._pieces[i].length, total - at))
                    at += self._pieces[i].length
            self._sw_write(data)
            self.bytes_ws_to_stream += total
        if cut:
            self._fault_drop()
        return 0

    cdef int _on_close_frame(self, bytes payload) except -1:
        self.close_code, self.close_reason = parse_close(payload)
        self._close_received = True
        if self._debug:
            _splice_log.debug("splice: Close %d received", self.close_code)
        if not self._close_sent:
            self._send_close(self.close_code, "")
        self._end_ws()
        return 0

    def _on_ws_lost(self, exc):
        self._ws_lost = True
        if not self._ws_over:
            if self.error is None:
                self.error = _ConnectionClosed(
                    "The WebSocket connection was dropped without a close frame"
                    + (f" ({exc})" if exc is not None else ""),
                    code=1006,
                    hint="The remote end or the network closed the connection; reconnect to continue.",
                )
            if self._debug:
                _splice_log.debug("splice: WebSocket lost without a close handshake: %r", exc)
            self._end_ws()
        self._check_done()

    # ------------------------------------------------------------------ closing

    cdef int _send_close(self, int code, str reason) except -1:
        if self._close_sent or self._ws is None or self._ws_lost:
            return 0
        self._close_sent = True
        self.close_code_sent = code
        self._ws_write(self._encoder.close(None if code == 1005 else code, reason))
        self._update_stream_reading(False)
        if not self._ws_over and self._close_timer is None:
            self._close_timer = self._loop.call_later(self.close_timeout, self._on_close_timeout)
        return 0

    def _on_close_timeout(self):
        self._close_timer = None
        if self._ws_over:
            return
        if self.error is None:
            self.error = _ConnectionClosed(
                f"The peer did not answer the close frame within {self.close_timeout:g} s",
                code=1006,
                hint="The remote end is unresponsive; the connection was dropped.",
            )
        self._ws.abort()
        self._end_ws()

    cdef int _fail(self, exc) except -1:
        if self.error is None:
            self.error = exc
        if self._debug:
            _splice_log.debug("splice: protocol error, close %d: %s", exc.close_code, exc)
        self._send_close(exc.close_code, "")
        self._end_ws()
        return 0

    cdef int _fault_drop(self) except -1:
        if self.error is None:
            self.error = _ConnectionClosed(
                f"Dropped by fault injection after {self.drop_after_bytes} bytes", code=1006)
        self._ws.abort()
        self._end_ws()
        return 0

    cdef int _end_ws(self) except -1:
        if self._ws_over:
            return 0
        self._ws_over = True
        self._cancel_timers()
        if self._ws is not None and not self._ws_lost:
            if not self._ws.is_closing():
                self._ws.close()
            # A TLS close waits for the peer's close_notify (30 s by default): bound it, so `done` cannot hang.
            self._close_timer = self._loop.call_later(self.close_timeout, self._on_ws_close_stuck)
        self._shutdown_stream()
        self._check_done()
        return 0

    def _on_ws_close_stuck(self):
        self._close_timer = None
        if self._ws is not None and not self._ws_lost:
            _abort_transport(self._ws)

    cdef int _shutdown_stream(self) except -1:
        sr, sw = self._sr, self._sw
        if sr is None or sw is None:
            return 0
        if sw is sr and not self._sw_lost and not self._stream_eof and sw.can_write_eof():
            sw.write_eof()
            self._sw_eof_sent = True
            self._update_stream_reading(False)
            self._stream_timer = self._loop.call_later(min(_STREAM_LINGER, self.close_timeout), self._close_stream)
        else:
            self._close_stream()
        return 0

    def _close_stream(self):
        self._stream_timer = None
        self._sw_eof_sent = True
        if self._sw is not None and not self._sw_lost and not self._sw.is_closing():
            self._sw.close()
        if self._sr is not None and not self._sr_lost and not self._sr.is_closing():
            self._sr.close()

    cdef int _cancel_timers(self) except -1:
        if self._close_timer is not None:
            self._close_timer.cancel()
            self._close_timer = None
        if self._ping_timer is not None:
            self._ping_timer.cancel()
            self._ping_timer = None
        return 0

    cdef int _check_done(self) except -1:
        cdef bint ws_closed, stream_closed
        if self.done.done():
            return 0
        ws_closed = self._ws_lost or (self._ws is None and self._ws_over)
        stream_closed = (self._sr_lost and self._sw_lost) or (self._sr is None and self._ws_over)
        if ws_closed and stream_closed:
            self.ended = _time.monotonic()
            if self._stream_timer is not None:
                self._stream_timer.cancel()
                self._stream_timer = None
            self._cancel_timers()
            if self._debug:
                _splice_log.debug("splice: done %r", self)
            self._release_transports()
            self.done.set_result(None)
        return 0

    cdef int _release_transports(self) except -1:
        # Both legs are gone: let go of the transports now. uvloop's TLS transport keeps its protocol (with a
        # 256 KiB read buffer and the OpenSSL connection) alive while we hold it, and this object is in a reference
        # cycle with its leg protocols, so holding on would leave every finished connection's buffers to the
        # cyclic GC (measured: tens of MB after a burst of 256 connections).
        self._ws = None
        self._ws_write = None
        self._sr = None
        self._sw = None
        self._sw_write = None
        return 0

    # ------------------------------------------------------------------ flow control and keepalive

    cdef int _update_stream_reading(self, bint force) except -1:
        cdef bint want
        sr = self._sr
        if sr is None or self._sr_lost or self._stream_eof:
            return 0
        if self._ws_over:
            want = True
        else:
            want = self._ws is not None and not self._ws_write_paused and not self._close_sent
        want = want and not self._sr_yield
        if (force or want != self._sr_reading) and not sr.is_closing():
            self._sr_reading = want
            if want:
                sr.resume_reading()
            else:
                sr.pause_reading()
        return 0

    cdef int _update_ws_reading(self, bint force) except -1:
        cdef bint want, stream_gone
        ws = self._ws
        if ws is None or self._ws_lost or self._ws_over:
            return 0
        stream_gone = self._sw_lost or self._sw_eof_sent
        want = self._sw is not None and (stream_gone or not self._sw_write_paused) and not self._ws_yield
        if (force or want != self._ws_reading) and not ws.is_closing():
            self._ws_reading = want
            if want:
                ws.resume_reading()
            else:
                ws.pause_reading()
        return 0

    cdef int _count_stream_read(self, Py_ssize_t n) except -1:
        """Fairness: charge a stream read to this iteration's budget; past it, yield until the tick."""
        if not self.read_budget:
            return 0
        self._sr_quota -= n
        if self._over_budget(self._sr_quota) and not self._sr_yield:
            self._sr_yield = True
            self._update_stream_reading(False)
        return 0

    cdef int _count_ws_read(self, Py_ssize_t n) except -1:
        """Fairness: the same for the WebSocket leg."""
        if not self.read_budget:
            return 0
        self._ws_quota -= n
        if self._over_budget(self._ws_quota) and not self._ws_yield:
            self._ws_yield = True
            self._update_ws_reading(False)
        return 0

    cdef bint _over_budget(self, Py_ssize_t quota) except -1:
        """Schedule the refill tick once half the budget is spent; true when a leg's quota is exhausted."""
        if quota < (self.read_budget >> 1) and not self._tick_pending:
            self._tick_pending = True  # lazily: small reads (interactive traffic) never schedule anything
            self._loop.call_soon(self._tick_cb)
        return quota < 0

    def _on_tick(self):
        """A new loop iteration: refill both budgets and let a leg that yielded read again."""
        self._tick_pending = False
        self._sr_quota = self.read_budget
        self._ws_quota = self.read_budget
        if self._sr_yield:
            self._sr_yield = False
            self._update_stream_reading(False)
        if self._ws_yield:
            self._ws_yield = False
            self._update_ws_reading(False)

    cdef int _buffer_lost(self) except -1:
        """buffer_updated() did not follow this leg's get_buffer(): the bytes may be another connection's."""
        if self.error is None:
            self.error = RuntimeError(
                "internal error: the event loop delivered a read after the shared read buffer was handed to "
                "another connection; the connection was dropped rather than forward corrupted data")
        _splice_log.error("splice: %s", self.error)
        self.abort()
        return 0

    @property
    def read_buffer(self):
        """The (thread-shared) read buffer, read-only: for tests and diagnostics."""
        return self._rbuf.view.toreadonly()

    def _on_ping_timer(self):
        self._ping_timer = None
        if self._ws_over or self._close_sent or self._ws is None:
            return
        self._ws_write(self._encoder.ping(b""))
        self._ping_timer = self._loop.call_later(self.keepalive, self._on_ping_timer)
