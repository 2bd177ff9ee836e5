"""Pure-Python RFC 6455 frame codec: the definition of the behaviour, and the fallback data path.

``src/_codec.pxi`` (compiled into ``bastion_fast._pump``) implements the same names with the same events and
exceptions; every codec test runs on both (DESIGN.md §1 is the contract). What a tunnel needs and nothing more:
binary data out as unfragmented FIN frames, any frame in (fragmented, large, text treated as bytes), pings and
closes, and every RFC check that decides a close code. No extensions, no UTF-8 validation of text payloads.

Masking is done on whole buffers with big integers (``int.from_bytes`` XOR a repeated key): linear time in C inside
CPython, roughly a hundred times faster than a Python loop over bytes.
"""

from __future__ import annotations

import os
import struct

from bastion_fast.exceptions import FrameTooLarge, InvalidClosePayload, ProtocolError

__all__ = [
    "OP_BINARY",
    "OP_CLOSE",
    "OP_CONT",
    "OP_PING",
    "OP_PONG",
    "OP_TEXT",
    "FrameDecoder",
    "FrameEncoder",
    "MaskKeySource",
    "apply_mask",
    "parse_close",
]

BytesLike = bytes | bytearray | memoryview
Event = tuple[int, bytes, bool]

OP_CONT = 0
OP_TEXT = 1
OP_BINARY = 2
OP_CLOSE = 8
OP_PING = 9
OP_PONG = 10

_DATA_OPCODES = frozenset((OP_CONT, OP_TEXT, OP_BINARY))
_CONTROL_OPCODES = frozenset((OP_CLOSE, OP_PING, OP_PONG))
_MAX_CONTROL = 125
_KEY_BATCH = 1024
_PACK_LEN16 = struct.Struct("!BBH").pack
_PACK_LEN64 = struct.Struct("!BBQ").pack
_UNPACK_LEN16 = struct.Struct("!H").unpack_from
_UNPACK_LEN64 = struct.Struct("!Q").unpack_from


def _byte_view(data: BytesLike) -> memoryview:
    """A flat, contiguous memoryview of bytes over any bytes-like object (copies only non-contiguous views)."""
    view = memoryview(data)
    if not view.c_contiguous:
        return memoryview(view.tobytes())
    if view.format != "B" or view.ndim != 1:
        return view.cast("B")
    return view


def _xor(view: memoryview | bytes, key: bytes, phase: int = 0) -> bytes:
    """``view`` XOR ``key`` repeated, starting at key byte ``phase``."""
    n = len(view)
    if not n:
        return b""
    if phase:
        key = key[phase:] + key[:phase]
    whole, rest = divmod(n, 4)
    mask = int.from_bytes(key * whole + key[:rest], "big")
    return (int.from_bytes(view, "big") ^ mask).to_bytes(n, "big")


def apply_mask(data: BytesLike, key: BytesLike) -> bytes:
    """XOR ``data`` with the 4-byte ``key`` (RFC 6455 §5.3); returns new bytes."""
    key_bytes = _byte_view(key).tobytes()
    if len(key_bytes) != 4:
        raise ValueError(f"a mask key is 4 bytes, got {len(key_bytes)}")
    return _xor(_byte_view(data), key_bytes)


class MaskKeySource:
    """Masking keys cut from one ``os.urandom`` draw per ``batch_keys`` keys (CSPRNG, drawn in bulk)."""

    def __init__(self, batch_keys: int = _KEY_BATCH) -> None:
        if batch_keys < 1:
            raise ValueError(f"batch_keys must be at least 1, got {batch_keys}")
        self._batch_bytes = 4 * batch_keys
        self._pool = b""
        self._pos = 0

    def next_key(self) -> bytes:
        """Return the next 4-byte masking key."""
        if self._pos + 4 > len(self._pool):
            pool = os.urandom(self._batch_bytes)
            if type(pool) is not bytes or len(pool) < 4:
                raise RuntimeError("os.urandom returned no usable key material")
            self._pool = pool
            self._pos = 0
        key = self._pool[self._pos : self._pos + 4]
        self._pos += 4
        return key


def _header(b0: int, n: int, masked: bool) -> bytes:
    mbit = 0x80 if masked else 0
    if n < 126:
        return bytes((b0, mbit | n))
    if n < 65536:
        return _PACK_LEN16(b0, mbit | 126, n)
    return _PACK_LEN64(b0, mbit | 127, n)


def _check_opcode(opcode: int, fin: bool, n: int) -> None:
    if opcode in _CONTROL_OPCODES:
        if n > _MAX_CONTROL:
            raise ValueError(f"a control frame payload is at most 125 bytes, got {n}")
        if not fin:
            raise ValueError("control frames cannot be fragmented (fin must be True)")
    elif opcode not in _DATA_OPCODES:
        raise ValueError(f"unknown WebSocket opcode {opcode}")


def _close_code_ok(code: int) -> bool:
    return 1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999


def _close_payload_error(payload: bytes) -> InvalidClosePayload | None:
    """None when ``payload`` is a valid close payload, else the exception to raise."""
    n = len(payload)
    if n == 0:
        return None
    if n == 1:
        return InvalidClosePayload("close frame with a 1-byte payload (a close code takes 2 bytes)", 1002)
    code = (payload[0] << 8) | payload[1]
    if not _close_code_ok(code):
        return InvalidClosePayload(f"close code {code} is not allowed in a close frame", 1002)
    try:
        payload[2:].decode("utf-8")
    except UnicodeDecodeError:
        return InvalidClosePayload("close reason is not valid UTF-8", 1007)
    return None


def parse_close(payload: BytesLike) -> tuple[int, str]:
    """Return ``(code, reason)`` of a close payload; ``b""`` gives ``(1005, "")``.

    Raises:
        InvalidClosePayload: 1002 for a bad code or a 1-byte payload, 1007 for a reason that is not UTF-8.
    """
    data = _byte_view(payload).tobytes()
    err = _close_payload_error(data)
    if err is not None:
        raise err
    if not data:
        return (1005, "")
    return ((data[0] << 8) | data[1], data[2:].decode("utf-8"))


class FrameEncoder:
    """Builds frames: masked with fresh keys in client role, plain in server role; data is never fragmented."""

    def __init__(self, *, client: bool, frame_size: int = 32768) -> None:
        if frame_size < 1:
            raise ValueError(f"frame_size must be at least 1, got {frame_size}")
        self.client = bool(client)
        self.frame_size = frame_size
        self._keys = MaskKeySource()

    def _frame_parts(self, b0: int, payload: memoryview) -> tuple[bytes, ...]:
        header = _header(b0, len(payload), self.client)
        if self.client:
            key = self._keys.next_key()
            return (header, key, _xor(payload, key))
        return (header, payload.tobytes())

    def encode(self, opcode: int, payload: BytesLike = b"", fin: bool = True) -> bytes:
        """Return exactly one frame."""
        view = _byte_view(payload)
        _check_opcode(opcode, fin, len(view))
        return b"".join(self._frame_parts((0x80 if fin else 0) | opcode, view))

    def encode_data(self, data: BytesLike) -> bytes:
        """Return ``data`` as binary frames of <= frame_size bytes, each a complete message, in one bytes object."""
        view = _byte_view(data)
        size = self.frame_size
        parts: list[bytes | memoryview] = []
        for start in range(0, len(view), size):
            chunk = view[start : start + size]
            header = _header(0x80 | OP_BINARY, len(chunk), self.client)
            if self.client:
                key = self._keys.next_key()
                parts += (header, key, _xor(chunk, key))
            else:
                parts += (header, chunk)
        return b"".join(parts)

    def ping(self, payload: BytesLike = b"") -> bytes:
        """Return a ping frame (payload <= 125 bytes)."""
        return self.encode(OP_PING, payload)

    def pong(self, payload: BytesLike = b"") -> bytes:
        """Return a pong frame (payload <= 125 bytes)."""
        return self.encode(OP_PONG, payload)

    def close(self, code: int | None = 1000, reason: str = "") -> bytes:
        """Return a close frame; ``code=None`` sends an empty payload (then ``reason`` must be empty)."""
        if code is None:
            if reason:
                raise ValueError("a close reason needs a close code")
            return self.encode(OP_CLOSE, b"")
        if not isinstance(code, int) or not (0 <= code <= 0xFFFF and _close_code_ok(code)):
            raise ValueError(f"close code {code!r} cannot be sent (valid: 1000-1003, 1007-1014, 3000-4999)")
        payload = bytes(((code >> 8) & 0xFF, code & 0xFF)) + reason.encode("utf-8")
        if len(payload) > _MAX_CONTROL:
            raise ValueError(f"close reason too long: the payload is {len(payload)} bytes, at most 125")
        return self.encode(OP_CLOSE, payload)


# Decoder states (see FrameDecoder).
_HEADER = 0
_DATA = 1
_CONTROL = 2
_CLOSED = 3
_ERROR = 4


def _header_length(b1: int) -> int:
    len7 = b1 & 0x7F
    size = 4 if len7 == 126 else 10 if len7 == 127 else 2
    return size + 4 if b1 & 0x80 else size


class FrameDecoder:
    """Incremental RFC 6455 frame parser.

    Theory of operation: a four-state machine (header → data | control → header; close → closed; any violation →
    error). Headers and control payloads are the only bytes ever buffered (at most 13 + 125); data payload is never
    buffered — each ``feed`` hands out the part of a frame that is present as its own event. In server role the
    mask phase (payload bytes seen mod 4) is carried across calls, so any split of the input unmasks the same.
    A ``feed`` that raises delivers no events; the decoder is then dead and raises the same exception again.
    """

    def __init__(
        self,
        *,
        client: bool,
        max_frame_size: int = 64 * 1024 * 1024,
        require_mask: bool = True,
        reject_continuation: bool = False,
    ) -> None:
        if max_frame_size < 0:
            raise ValueError(f"max_frame_size must be >= 0, got {max_frame_size}")
        self.client = bool(client)
        self.max_frame_size = max_frame_size
        self.require_mask = bool(require_mask)
        self.reject_continuation = bool(reject_continuation)
        self._state = _HEADER
        self._error: ProtocolError | None = None
        self._hdr = bytearray()
        self._ctrl = bytearray()
        self._f_opcode = 0  # opcode of the frame being read
        self._f_msg_opcode = 0  # opcode its events report (the message's for data frames)
        self._f_fin = False
        self._f_key: bytes | None = None  # mask key, None for an unmasked frame
        self._f_remaining = 0
        self._f_phase = 0
        self._msg_opcode = 0  # opcode of the open fragmented message, 0 when none

    @property
    def buffered(self) -> int:
        """Bytes held inside the decoder: part of a header or of a control payload."""
        if self._state == _HEADER:
            return len(self._hdr)
        if self._state == _CONTROL:
            return len(self._ctrl)
        return 0

    def _fail(self, exc: ProtocolError) -> ProtocolError:
        self._state = _ERROR
        self._error = exc
        self._hdr.clear()
        self._ctrl.clear()
        return exc

    def _start_frame(self, h: bytes) -> None:
        """Validate a complete header ``h`` and enter the data or control state."""
        b0, b1 = h[0], h[1]
        fin = bool(b0 & 0x80)
        op = b0 & 0x0F
        masked = bool(b1 & 0x80)
        len7 = b1 & 0x7F
        if b0 & 0x70:
            raise self._fail(ProtocolError("frame with reserved bits (RSV1-3) set: no extension was negotiated"))
        if op not in _DATA_OPCODES and op not in _CONTROL_OPCODES:
            raise self._fail(ProtocolError(f"frame with unknown opcode {op}"))
        if op >= OP_CLOSE:
            if not fin:
                raise self._fail(ProtocolError("fragmented control frame"))
            if len7 > _MAX_CONTROL:
                raise self._fail(ProtocolError("control frame payload longer than 125 bytes"))
        if self.client:
            if masked:
                raise self._fail(ProtocolError("masked frame from the server"))
        elif not masked and self.require_mask:
            raise self._fail(ProtocolError("unmasked frame from the client"))
        if op == OP_CONT:
            if self.reject_continuation:
                raise self._fail(ProtocolError("continuation frame (fragmented messages are not accepted)"))
            if self._msg_opcode == 0:
                raise self._fail(ProtocolError("continuation frame without a fragmented message in progress"))
        elif op < OP_CLOSE and self._msg_opcode != 0:
            raise self._fail(ProtocolError("new data frame while a fragmented message is in progress"))
        if len7 == 126:
            length = _UNPACK_LEN16(h, 2)[0]
            p = 4
        elif len7 == 127:
            if h[2] & 0x80:
                raise self._fail(ProtocolError("64-bit frame length with the most significant bit set"))
            length = _UNPACK_LEN64(h, 2)[0]
            p = 10
        else:
            length = len7
            p = 2
        if length > self.max_frame_size:
            raise self._fail(
                FrameTooLarge(f"frame of {length} bytes is larger than the limit of {self.max_frame_size} bytes")
            )
        self._f_key = bytes(h[p : p + 4]) if masked else None
        self._f_opcode = op
        self._f_fin = fin
        self._f_remaining = length
        self._f_phase = 0
        if op >= OP_CLOSE:
            self._f_msg_opcode = op
            self._ctrl.clear()
            self._state = _CONTROL
        else:
            self._f_msg_opcode = self._msg_opcode if op == OP_CONT else op
            self._msg_opcode = 0 if fin else self._f_msg_opcode
            self._state = _DATA

    def _finish_control(self) -> Event:
        payload = bytes(self._ctrl)
        if self._f_opcode == OP_CLOSE:
            err = _close_payload_error(payload)
            if err is not None:
                raise self._fail(err)
            self._state = _CLOSED
        else:
            self._state = _HEADER
        return (self._f_opcode, payload, True)

    def _unmask(self, chunk: memoryview) -> bytes:
        key = self._f_key
        if key is None:
            return chunk.tobytes()
        out = _xor(chunk, key, self._f_phase)
        self._f_phase = (self._f_phase + len(chunk)) & 3
        return out

    def feed(self, data: BytesLike) -> list[Event]:
        """Parse ``data``; return the events ``(opcode, payload, fin)`` it completes (DESIGN.md §1)."""
        if self._error is not None:
            raise self._error
        view = _byte_view(data)
        if self._state == _CLOSED:
            return []
        n = len(view)
        pos = 0
        events: list[Event] = []
        while pos < n:
            state = self._state
            if state == _HEADER:
                hdr = self._hdr
                if not hdr and n - pos >= 2 and n - pos >= _header_length(view[pos + 1]):
                    hl = _header_length(view[pos + 1])
                    self._start_frame(view[pos : pos + hl].tobytes())
                    pos += hl
                else:
                    need = 2 if len(hdr) < 2 else _header_length(hdr[1])
                    take = min(need - len(hdr), n - pos)
                    hdr += view[pos : pos + take]
                    pos += take
                    if len(hdr) < need:
                        continue
                    if need == 2:
                        need = _header_length(hdr[1])
                        if len(hdr) < need:
                            continue
                    header = bytes(hdr)
                    hdr.clear()
                    self._start_frame(header)
                if self._f_remaining == 0:
                    if self._state == _DATA:
                        events.append((self._f_msg_opcode, b"", self._f_fin))
                        self._state = _HEADER
                    else:
                        events.append(self._finish_control())
                        if self._state == _CLOSED:
                            return events
            elif state == _DATA:
                take = min(self._f_remaining, n - pos)
                payload = self._unmask(view[pos : pos + take])
                pos += take
                self._f_remaining -= take
                done = self._f_remaining == 0
                events.append((self._f_msg_opcode, payload, self._f_fin and done))
                if done:
                    self._state = _HEADER
            else:  # _CONTROL
                take = min(self._f_remaining, n - pos)
                self._ctrl += self._unmask(view[pos : pos + take])
                pos += take
                self._f_remaining -= take
                if self._f_remaining == 0:
                    events.append(self._finish_control())
                    if self._state == _CLOSED:
                        return events
        return events
