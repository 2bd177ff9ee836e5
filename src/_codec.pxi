# _codec.pxi — RFC 6455 frame codec for bastion_fast._pump (included by _pump.pyx, before _splice.pxi).
#
# The pure-Python twin ``bastion_fast._codec_py`` defines the behaviour (DESIGN.md §1); this file must match it
# event for event and exception for exception (tests/test_codec*.py run every case on both).
#
# ---------------------------------------------------------------------------------------------------------------
# C-level API for _splice.pxi (same compilation unit: every call below is a direct C call, no Python objects per
# slice). Names starting with WS_ / bf_ / FrameSlice are C-only and never visible from Python.
#
#   Opcodes:  WS_CONT, WS_TEXT, WS_BINARY, WS_CLOSE, WS_PING, WS_PONG        (cdef enum)
#   Masking:  bf_mask_copy(dst, src, n, key4, phase)   dst[i] = src[i] ^ key4[(phase+i) % 4]; dst == src allowed
#
#   FrameEncoder (typed attribute, e.g. ``cdef FrameEncoder enc``):
#     enc.client, enc.frame_size                      readonly
#     Py_ssize_t enc.encoded_size(n)                  bytes needed to encode n payload bytes as data frames
#                                                     (ceil(n / frame_size) binary FIN frames; 0 for n <= 0)
#     Py_ssize_t enc.encode_data_into(out, data, n) except -1
#                                                     writes exactly encoded_size(n) bytes into ``out``: headers
#                                                     plus the payload, masked while copying in client role; returns
#                                                     bytes written. ``out`` must not overlap ``data``.
#     enc.encode_data(data) / enc.encode(...) / ping / pong / close   Python API (bytes), rare paths.
#
#   FrameDecoder (``cdef FrameDecoder dec``):
#     Py_ssize_t dec.parse(data, n, out, max_out, &consumed) except -1
#         Parses ``data[0:n]`` (a *writable* buffer: in server role masked payload is unmasked in place) and fills
#         at most ``max_out`` (>= 1) FrameSlice entries; returns how many, and stores in ``consumed`` how many input
#         bytes it used. It stops early when ``out`` is full or right after a control frame, so loop:
#
#             pos = 0
#             while pos < n:
#                 count = dec.parse(buf + pos, n - pos, slices, MAX, &consumed)
#                 ... use slices[0:count] (offsets are relative to buf + pos) ...
#                 pos += consumed
#
#         A FrameSlice is one event of DESIGN.md §1:
#           data slice:    offset >= 0, payload is data[offset : offset + length] (already unmasked); opcode is the
#                          message's opcode (1 or 2); fin is True only on the slice that ends a FIN frame; length 0
#                          only for a zero-length frame.
#           control frame: offset == -1, opcode 8/9/10, fin True, length = payload size; the payload is in the
#                          decoder: read dec.control_data() (const unsigned char*, ``length`` bytes) or
#                          dec.control_payload() (bytes) BEFORE the next parse() call. A control frame is always the
#                          last slice of its parse() call. Close payloads are already validated (parse_close() gives
#                          code and reason). After a close frame parse() consumes and ignores all further input.
#         Errors: parse raises ProtocolError / FrameTooLarge / InvalidClosePayload (``.close_code``); slices filled
#         by that call are not reported (same as feed(): a raising call delivers no events). The decoder is then
#         dead: every later parse()/feed() raises the same exception object again.
#     dec.buffered                                    bytes held inside (< 14 header bytes or < 125 control bytes)
#     dec.feed(data)                                  Python wrapper over parse() (copies input in server role so
#                                                     the caller's buffer is never modified).
# ---------------------------------------------------------------------------------------------------------------

from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from libc.stdint cimport uint32_t
from libc.string cimport memcpy

import os as _os

from bastion_fast.exceptions import FrameTooLarge as _FrameTooLarge
from bastion_fast.exceptions import InvalidClosePayload as _InvalidClosePayload
from bastion_fast.exceptions import ProtocolError as _ProtocolError


cdef extern from "_mask.h":
    void bf_mask_init() noexcept nogil
    const char* bf_mask_impl() noexcept nogil
    int bf_mask_select(const char* name) noexcept nogil
    void bf_mask_copy(unsigned char* dst, const unsigned char* src, size_t n,
                      const unsigned char* key, size_t phase) noexcept nogil

bf_mask_init()


cdef enum:
    WS_CONT = 0
    WS_TEXT = 1
    WS_BINARY = 2
    WS_CLOSE = 8
    WS_PING = 9
    WS_PONG = 10

OP_CONT = WS_CONT
OP_TEXT = WS_TEXT
OP_BINARY = WS_BINARY
OP_CLOSE = WS_CLOSE
OP_PING = WS_PING
OP_PONG = WS_PONG

cdef enum:
    _MAX_CONTROL = 125
    _FEED_SLICES = 64
    _KEY_BATCH = 1024


cdef struct FrameSlice:
    Py_ssize_t offset   # into the parsed buffer; -1: control payload, read it from the decoder
    Py_ssize_t length
    int opcode
    bint fin


def _mask_impl():
    """Name of the masking code path this CPU uses: ``"avx2"``, ``"sse2"`` or ``"uint64"`` (logs, benches)."""
    return bf_mask_impl().decode("ascii")


def _set_mask_impl(name):
    """Force a masking path by name (tests run every path this CPU has); ValueError if unavailable."""
    cdef bytes raw = name.encode("ascii")
    if bf_mask_select(raw) != 0:
        raise ValueError(f"masking path {name!r} is not available in this build or on this CPU")


cdef object _get_buffer(object data, Py_buffer* view):
    """Fill ``view`` with a contiguous byte buffer of ``data``; returns the object that owns it.

    Non-contiguous memoryviews are copied once (rare; everything on the data path is contiguous).
    """
    if type(data) is memoryview and not (<memoryview>data).c_contiguous:
        data = (<memoryview>data).tobytes()
    PyObject_GetBuffer(data, view, PyBUF_SIMPLE)
    return data


def apply_mask(data, key):
    """XOR ``data`` with the 4-byte ``key`` (RFC 6455 §5.3); returns new bytes."""
    cdef Py_buffer dview
    cdef Py_buffer kview
    cdef bytes out
    _get_buffer(key, &kview)
    try:
        if kview.len != 4:
            raise ValueError(f"a mask key is 4 bytes, got {kview.len}")
        _get_buffer(data, &dview)
        try:
            out = PyBytes_FromStringAndSize(NULL, dview.len)
            bf_mask_copy(<unsigned char*>PyBytes_AS_STRING(out), <const unsigned char*>dview.buf, dview.len,
                         <const unsigned char*>kview.buf, 0)
            return out
        finally:
            PyBuffer_Release(&dview)
    finally:
        PyBuffer_Release(&kview)


cdef class MaskKeySource:
    """Masking keys cut from one ``os.urandom`` draw per ``batch_keys`` keys (CSPRNG, drawn in bulk)."""

    cdef bytes _pool
    cdef Py_ssize_t _pool_len
    cdef Py_ssize_t _pos
    cdef Py_ssize_t _batch_bytes

    def __init__(self, Py_ssize_t batch_keys=_KEY_BATCH):
        if batch_keys < 1:
            raise ValueError(f"batch_keys must be at least 1, got {batch_keys}")
        self._batch_bytes = 4 * batch_keys
        self._pool = b""
        self._pool_len = 0
        self._pos = 0

    cdef int take_key(self, unsigned char* out) except -1:
        """Copy the next 4-byte key into ``out``."""
        if self._pos + 4 > self._pool_len:
            pool = _os.urandom(self._batch_bytes)
            if type(pool) is not bytes or len(pool) < 4:
                raise RuntimeError("os.urandom returned no usable key material")
            self._pool = <bytes>pool
            self._pool_len = len(self._pool)
            self._pos = 0
        memcpy(out, PyBytes_AS_STRING(self._pool) + self._pos, 4)
        self._pos += 4
        return 0

    def next_key(self):
        """Return the next 4-byte masking key."""
        cdef unsigned char key[4]
        self.take_key(key)
        return PyBytes_FromStringAndSize(<char*>key, 4)


cdef inline Py_ssize_t _header_size(Py_ssize_t n, bint masked) noexcept:
    cdef Py_ssize_t size = 2
    if n >= 65536:
        size = 10
    elif n >= 126:
        size = 4
    if masked:
        size += 4
    return size


cdef inline Py_ssize_t _write_header(unsigned char* out, unsigned char b0, Py_ssize_t n, bint masked) noexcept:
    cdef unsigned char mbit = 0x80 if masked else 0
    cdef unsigned long long length = <unsigned long long>n
    cdef int i
    out[0] = b0
    if n < 126:
        out[1] = mbit | <unsigned char>n
        return 2
    if n < 65536:
        out[1] = mbit | 126
        out[2] = <unsigned char>(n >> 8)
        out[3] = <unsigned char>(n & 0xFF)
        return 4
    out[1] = mbit | 127
    for i in range(8):
        out[2 + i] = <unsigned char>((length >> (56 - 8 * i)) & 0xFF)
    return 10


cdef int _check_opcode(int opcode, bint fin, Py_ssize_t n) except -1:
    if opcode in (WS_CLOSE, WS_PING, WS_PONG):
        if n > _MAX_CONTROL:
            raise ValueError(f"a control frame payload is at most 125 bytes, got {n}")
        if not fin:
            raise ValueError("control frames cannot be fragmented (fin must be True)")
    elif opcode not in (WS_CONT, WS_TEXT, WS_BINARY):
        raise ValueError(f"unknown WebSocket opcode {opcode}")
    return 0


cdef inline bint _close_code_ok(unsigned int code) noexcept:
    return 1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999


cdef object _close_payload_error(const unsigned char* p, Py_ssize_t n):
    """None when ``p[0:n]`` is a valid close payload, else the InvalidClosePayload to raise."""
    cdef unsigned int code
    if n == 0:
        return None
    if n == 1:
        return _InvalidClosePayload("close frame with a 1-byte payload (a close code takes 2 bytes)", 1002)
    code = (<unsigned int>p[0] << 8) | p[1]
    if not _close_code_ok(code):
        return _InvalidClosePayload(f"close code {code} is not allowed in a close frame", 1002)
    try:
        (<const char*>p)[2:n].decode("utf-8")
    except UnicodeDecodeError:
        return _InvalidClosePayload("close reason is not valid UTF-8", 1007)
    return None


def parse_close(payload):
    """Return ``(code, reason)`` of a close payload; ``b""`` gives ``(1005, "")``.

    Raises InvalidClosePayload (1002 for a bad code or a 1-byte payload, 1007 for a reason that is not UTF-8).
    """
    cdef Py_buffer view
    cdef const unsigned char* p
    _get_buffer(payload, &view)
    try:
        p = <const unsigned char*>view.buf
        err = _close_payload_error(p, view.len)
        if err is not None:
            raise err
        if view.len == 0:
            return (1005, "")
        return ((<unsigned int>p[0] << 8) | p[1], (<const char*>p)[2:view.len].decode("utf-8"))
    finally:
        PyBuffer_Release(&view)


cdef class FrameEncoder:
    """Builds frames: masked with fresh keys in client role, plain in server role; data is never fragmented."""

    cdef readonly bint client
    cdef readonly Py_ssize_t frame_size
    cdef MaskKeySource _keys

    def __init__(self, *, bint client, Py_ssize_t frame_size=32768):
        if frame_size < 1:
            raise ValueError(f"frame_size must be at least 1, got {frame_size}")
        self.client = client
        self.frame_size = frame_size
        self._keys = MaskKeySource()

    cdef Py_ssize_t encoded_size(self, Py_ssize_t n) noexcept:
        """Bytes needed to encode ``n`` payload bytes with encode_data_into()."""
        cdef Py_ssize_t full, rest, size
        if n <= 0:
            return 0
        full = n // self.frame_size
        rest = n - full * self.frame_size
        size = n + full * _header_size(self.frame_size, self.client)
        if rest:
            size += _header_size(rest, self.client)
        return size

    cdef Py_ssize_t _write_frame(self, unsigned char* out, unsigned char b0, const unsigned char* payload,
                                 Py_ssize_t n) except -1:
        cdef Py_ssize_t h = _write_header(out, b0, n, self.client)
        if self.client:
            self._keys.take_key(out + h)
            bf_mask_copy(out + h + 4, payload, n, out + h, 0)
            return h + 4 + n
        if n:
            memcpy(out + h, payload, n)
        return h + n

    cdef Py_ssize_t encode_data_into(self, unsigned char* out, const unsigned char* data, Py_ssize_t n) except -1:
        """Write ``data[0:n]`` as binary FIN frames of <= frame_size bytes into ``out``; returns bytes written."""
        cdef Py_ssize_t pos = 0
        cdef Py_ssize_t written = 0
        cdef Py_ssize_t chunk
        while pos < n:
            chunk = n - pos
            if chunk > self.frame_size:
                chunk = self.frame_size
            written += self._write_frame(out + written, 0x80 | WS_BINARY, data + pos, chunk)
            pos += chunk
        return written

    def encode(self, int opcode, payload=b"", bint fin=True):
        """Return exactly one frame."""
        cdef Py_buffer view
        cdef bytes out
        _get_buffer(payload, &view)
        try:
            _check_opcode(opcode, fin, view.len)
            out = PyBytes_FromStringAndSize(NULL, _header_size(view.len, self.client) + view.len)
            self._write_frame(<unsigned char*>PyBytes_AS_STRING(out), (0x80 if fin else 0) | opcode,
                              <const unsigned char*>view.buf, view.len)
            return out
        finally:
            PyBuffer_Release(&view)

    def encode_data(self, data):
        """Return ``data`` as binary frames of <= frame_size bytes, each a complete message, in one bytes object."""
        cdef Py_buffer view
        cdef bytes out
        _get_buffer(data, &view)
        try:
            if view.len == 0:
                return b""
            out = PyBytes_FromStringAndSize(NULL, self.encoded_size(view.len))
            self.encode_data_into(<unsigned char*>PyBytes_AS_STRING(out), <const unsigned char*>view.buf, view.len)
            return out
        finally:
            PyBuffer_Release(&view)

    def ping(self, payload=b""):
        """Return a ping frame (payload <= 125 bytes)."""
        return self.encode(WS_PING, payload)

    def pong(self, payload=b""):
        """Return a pong frame (payload <= 125 bytes)."""
        return self.encode(WS_PONG, payload)

    def close(self, code=1000, reason=""):
        """Return a close frame; ``code=None`` sends an empty payload (then ``reason`` must be empty)."""
        if code is None:
            if reason:
                raise ValueError("a close reason needs a close code")
            return self.encode(WS_CLOSE, b"")
        if not isinstance(code, int) or not (0 <= code <= 0xFFFF and _close_code_ok(code)):
            raise ValueError(f"close code {code!r} cannot be sent (valid: 1000-1003, 1007-1014, 3000-4999)")
        payload = bytes(((code >> 8) & 0xFF, code & 0xFF)) + reason.encode("utf-8")
        if len(payload) > _MAX_CONTROL:
            raise ValueError(f"close reason too long: the payload is {len(payload)} bytes, at most 125")
        return self.encode(WS_CLOSE, payload)


cdef enum:
    _DS_HEADER = 0     # collecting a frame header (2..14 bytes)
    _DS_DATA = 1       # streaming a data frame's payload out as slices
    _DS_CONTROL = 2    # collecting a control frame's payload (<= 125 bytes)
    _DS_CLOSED = 3     # a close frame was received: input is ignored
    _DS_ERROR = 4      # a violation was found: every call raises it again


cdef inline Py_ssize_t _frame_header_length(unsigned char b1) noexcept:
    cdef Py_ssize_t size = 2
    cdef unsigned char len7 = b1 & 0x7F
    if len7 == 126:
        size = 4
    elif len7 == 127:
        size = 10
    if b1 & 0x80:
        size += 4
    return size


cdef class FrameDecoder:
    """Incremental RFC 6455 frame parser.

    Theory of operation: a four-state machine (header → data | control → header; close → closed; any violation →
    error). Headers and control payloads are the only bytes ever buffered (at most 13 + 125); data payload is never
    buffered — each parse() hands out the part of a frame that is present as a slice of the input. In server role
    the mask phase (payload bytes seen mod 4) is carried across calls, so any split of the input unmasks the same.
    """

    cdef readonly bint client
    cdef readonly Py_ssize_t max_frame_size
    cdef readonly bint require_mask
    cdef readonly bint reject_continuation
    cdef int _state
    cdef object _error
    cdef unsigned char _hdr[14]
    cdef Py_ssize_t _hdr_len
    cdef unsigned char _ctrl[128]
    cdef Py_ssize_t _ctrl_len
    cdef int _f_opcode        # opcode of the frame being read
    cdef int _f_msg_opcode    # opcode its slices report (the message's for data frames)
    cdef bint _f_fin
    cdef bint _f_masked
    cdef unsigned char _f_key[4]
    cdef Py_ssize_t _f_remaining
    cdef Py_ssize_t _f_phase
    cdef int _msg_opcode      # opcode of the open fragmented message, 0 when none

    def __init__(self, *, bint client, Py_ssize_t max_frame_size=64 * 1024 * 1024, bint require_mask=True,
                 bint reject_continuation=False):
        if max_frame_size < 0:
            raise ValueError(f"max_frame_size must be >= 0, got {max_frame_size}")
        self.client = client
        self.max_frame_size = max_frame_size
        self.require_mask = require_mask
        self.reject_continuation = reject_continuation
        self._state = _DS_HEADER
        self._error = None
        self._hdr_len = 0
        self._ctrl_len = 0
        self._msg_opcode = 0
        self._f_remaining = 0

    @property
    def buffered(self):
        """Bytes held inside the decoder: part of a header or of a control payload."""
        if self._state == _DS_HEADER:
            return self._hdr_len
        if self._state == _DS_CONTROL:
            return self._ctrl_len
        return 0

    cdef int _fail(self, exc) except -1:
        self._state = _DS_ERROR
        self._error = exc
        self._hdr_len = 0
        self._ctrl_len = 0
        raise exc

    cdef const unsigned char* control_data(self) noexcept:
        """Payload of the control frame the last parse() call ended with (``length`` bytes of its slice)."""
        return self._ctrl

    cdef bytes control_payload(self):
        """Same as control_data(), as bytes."""
        return PyBytes_FromStringAndSize(<char*>self._ctrl, self._ctrl_len)

    cdef int _start_frame(self, const unsigned char* h) except -1:
        """Validate a complete header ``h`` and enter the data or control state."""
        cdef unsigned char b0 = h[0]
        cdef unsigned char b1 = h[1]
        cdef bint fin = (b0 & 0x80) != 0
        cdef int op = b0 & 0x0F
        cdef bint masked = (b1 & 0x80) != 0
        cdef unsigned char len7 = b1 & 0x7F
        cdef unsigned long long length
        cdef Py_ssize_t p = 2
        cdef int i
        if b0 & 0x70:
            return self._fail(_ProtocolError("frame with reserved bits (RSV1-3) set: no extension was negotiated"))
        if not (op <= WS_BINARY or WS_CLOSE <= op <= WS_PONG):
            return self._fail(_ProtocolError(f"frame with unknown opcode {op}"))
        if op >= WS_CLOSE:
            if not fin:
                return self._fail(_ProtocolError("fragmented control frame"))
            if len7 > _MAX_CONTROL:
                return self._fail(_ProtocolError("control frame payload longer than 125 bytes"))
        if self.client:
            if masked:
                return self._fail(_ProtocolError("masked frame from the server"))
        elif not masked and self.require_mask:
            return self._fail(_ProtocolError("unmasked frame from the client"))
        if op == WS_CONT:
            if self.reject_continuation:
                return self._fail(_ProtocolError("continuation frame (fragmented messages are not accepted)"))
            if self._msg_opcode == 0:
                return self._fail(_ProtocolError("continuation frame without a fragmented message in progress"))
        elif op < WS_CLOSE and self._msg_opcode != 0:
            return self._fail(_ProtocolError("new data frame while a fragmented message is in progress"))
        if len7 == 126:
            length = (<unsigned long long>h[2] << 8) | h[3]
            p = 4
        elif len7 == 127:
            if h[2] & 0x80:
                return self._fail(_ProtocolError("64-bit frame length with the most significant bit set"))
            length = 0
            for i in range(8):
                length = (length << 8) | h[2 + i]
            p = 10
        else:
            length = len7
        if length > <unsigned long long>self.max_frame_size:
            return self._fail(_FrameTooLarge(
                f"frame of {length} bytes is larger than the limit of {self.max_frame_size} bytes"))
        if masked:
            memcpy(self._f_key, h + p, 4)
        self._f_opcode = op
        self._f_fin = fin
        self._f_masked = masked
        self._f_remaining = <Py_ssize_t>length
        self._f_phase = 0
        if op >= WS_CLOSE:
            self._f_msg_opcode = op
            self._ctrl_len = 0
            self._state = _DS_CONTROL
        else:
            if op == WS_CONT:
                self._f_msg_opcode = self._msg_opcode
            else:
                self._f_msg_opcode = op
            self._msg_opcode = 0 if fin else self._f_msg_opcode
            self._state = _DS_DATA
        return 0

    cdef int _finish_control(self, FrameSlice* s) except -1:
        if self._f_opcode == WS_CLOSE:
            err = _close_payload_error(self._ctrl, self._ctrl_len)
            if err is not None:
                return self._fail(err)
            self._state = _DS_CLOSED
        else:
            self._state = _DS_HEADER
        s.offset = -1
        s.length = self._ctrl_len
        s.opcode = self._f_opcode
        s.fin = True
        return 0

    cdef Py_ssize_t parse(self, unsigned char* data, Py_ssize_t n, FrameSlice* out, Py_ssize_t max_out,
                          Py_ssize_t* consumed) except -1:
        """See the C-level API at the top of this file."""
        cdef Py_ssize_t pos = 0
        cdef Py_ssize_t count = 0
        cdef Py_ssize_t hl
        cdef Py_ssize_t take
        consumed[0] = 0
        if self._state == _DS_ERROR:
            raise self._error
        if self._state == _DS_CLOSED:
            consumed[0] = n
            return 0
        if max_out < 1:
            raise ValueError("parse() needs room for at least one slice")
        while True:
            if self._state == _DS_HEADER:
                if self._hdr_len == 0 and n - pos >= 2 and n - pos >= _frame_header_length(data[pos + 1]):
                    # Fast path: the whole header is in the input, parse it where it is.
                    hl = _frame_header_length(data[pos + 1])
                    self._start_frame(data + pos)
                    pos += hl
                else:
                    if pos == n:
                        break
                    if self._hdr_len < 2:
                        take = min(2 - self._hdr_len, n - pos)
                        memcpy(self._hdr + self._hdr_len, data + pos, take)
                        self._hdr_len += take
                        pos += take
                        if self._hdr_len < 2:
                            break
                    hl = _frame_header_length(self._hdr[1])
                    take = min(hl - self._hdr_len, n - pos)
                    memcpy(self._hdr + self._hdr_len, data + pos, take)
                    self._hdr_len += take
                    pos += take
                    if self._hdr_len < hl:
                        break
                    self._hdr_len = 0
                    self._start_frame(self._hdr)
                if self._f_remaining == 0:
                    if self._state == _DS_DATA:
                        out[count].offset = pos
                        out[count].length = 0
                        out[count].opcode = self._f_msg_opcode
                        out[count].fin = self._f_fin
                        count += 1
                        self._state = _DS_HEADER
                        if count == max_out:
                            break
                    else:
                        self._finish_control(&out[count])
                        count += 1
                        break
            elif self._state == _DS_DATA:
                if pos == n:
                    break
                take = min(self._f_remaining, n - pos)
                if self._f_masked:
                    bf_mask_copy(data + pos, data + pos, take, self._f_key, self._f_phase)
                    self._f_phase = (self._f_phase + take) & 3
                self._f_remaining -= take
                out[count].offset = pos
                out[count].length = take
                out[count].opcode = self._f_msg_opcode
                out[count].fin = self._f_fin and self._f_remaining == 0
                count += 1
                pos += take
                if self._f_remaining == 0:
                    self._state = _DS_HEADER
                if count == max_out:
                    break
            elif self._state == _DS_CONTROL:
                if pos == n:
                    break
                take = min(self._f_remaining, n - pos)
                if self._f_masked:
                    bf_mask_copy(self._ctrl + self._ctrl_len, data + pos, take, self._f_key, self._f_phase)
                    self._f_phase = (self._f_phase + take) & 3
                else:
                    memcpy(self._ctrl + self._ctrl_len, data + pos, take)
                self._ctrl_len += take
                self._f_remaining -= take
                pos += take
                if self._f_remaining == 0:
                    self._finish_control(&out[count])
                    count += 1
                    break
            else:
                break
        consumed[0] = pos
        return count

    def feed(self, data):
        """Parse ``data``; return the events ``(opcode, payload, fin)`` it completes (DESIGN.md §1)."""
        cdef Py_buffer view
        cdef FrameSlice slices[_FEED_SLICES]
        cdef unsigned char* buf
        cdef unsigned char* copy = NULL
        cdef Py_ssize_t pos = 0
        cdef Py_ssize_t consumed = 0
        cdef Py_ssize_t count
        cdef Py_ssize_t i
        cdef list events
        if self._state == _DS_ERROR:
            raise self._error
        _get_buffer(data, &view)
        try:
            if self._state == _DS_CLOSED or view.len == 0:
                return []
            buf = <unsigned char*>view.buf
            if not self.client:
                # Server role unmasks in place: work on a private copy, never on the caller's buffer.
                copy = <unsigned char*>PyMem_Malloc(view.len)
                if copy == NULL:
                    raise MemoryError()
                memcpy(copy, buf, view.len)
                buf = copy
            events = []
            while pos < view.len:
                count = self.parse(buf + pos, view.len - pos, slices, _FEED_SLICES, &consumed)
                for i in range(count):
                    if slices[i].offset < 0:
                        payload = PyBytes_FromStringAndSize(<char*>self._ctrl, slices[i].length)
                    else:
                        payload = PyBytes_FromStringAndSize(<char*>buf + pos + slices[i].offset, slices[i].length)
                    events.append((slices[i].opcode, payload, slices[i].fin))
                if consumed == 0:
                    break
                pos += consumed
            return events
        finally:
            PyMem_Free(copy)
            PyBuffer_Release(&view)
