"""Test-side RFC 6455 helpers, written independently of the codec under test (a second, naive implementation).

``build_frame`` writes any header the wire format allows, including illegal ones (RSV bits, bad opcodes, MSB set,
non-minimal lengths), so tests can feed violations the encoder would never produce.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence

__all__ = ["MAX_BUFFERED", "build_frame", "chunked", "naive_mask"]

# A decoder holds at most one incomplete header (< 14 bytes) or one incomplete control payload (< 125 bytes).
MAX_BUFFERED = 14 + 125


def naive_mask(data: bytes, key: bytes, phase: int = 0) -> bytes:
    """Byte-by-byte XOR, the obviously-correct reference."""
    return bytes(b ^ key[(phase + i) % 4] for i, b in enumerate(data))


def build_frame(
    opcode: int,
    payload: bytes = b"",
    *,
    fin: bool = True,
    key: bytes | None = None,
    rsv: int = 0,
    length: int | None = None,
    length_form: str | None = None,
) -> bytes:
    """One frame; ``key`` masks it; ``length``/``length_form`` ("7", "16", "64") override the length field.

    An explicit ``length_form`` wraps the length into its field (mod 126, 2**16 or 2**64).
    """
    n = len(payload) if length is None else length
    form = length_form or ("7" if n < 126 else "16" if n < 65536 else "64")
    b0 = (0x80 if fin else 0) | (rsv & 0x7) << 4 | (opcode & 0xF)
    mbit = 0x80 if key is not None else 0
    if form == "7":
        head = bytes((b0, mbit | n % 126))
    elif form == "16":
        head = struct.pack("!BBH", b0, mbit | 126, n & 0xFFFF)
    else:
        head = struct.pack("!BBQ", b0, mbit | 127, n & 0xFFFF_FFFF_FFFF_FFFF)
    if key is None:
        return head + payload
    return head + key + naive_mask(payload, key)


def chunked(data: bytes, cuts: Sequence[int]) -> Iterator[bytes]:
    """Split ``data`` at the sorted, de-duplicated positions ``cuts`` (positions outside are ignored)."""
    start = 0
    for cut in sorted(set(cuts)):
        if 0 < cut < len(data) and cut > start:
            yield data[start:cut]
            start = cut
    yield data[start:]
