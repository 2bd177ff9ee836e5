"""Deterministic, non-periodic-looking test data and its expected sha256, shared by drivers and targets.

Why not ``os.urandom`` per run: the sender and the verifier must agree on every byte without shipping the data
twice, and the expected digest must be computable once, outside the measured interval. Every stream reads one
random block of a prime-ish length, repeated; the seed only picks where in the block the stream starts, so 256
concurrent streams share one 1 MiB block (generating a block per stream would cost the driver and the target more
than the transfer) yet no two streams carry the same bytes at the same position. Because the period is not a power
of two, no read or frame size lines up with it: lost, duplicated, reordered or cross-stream chunks change the
digest.
"""

from __future__ import annotations

import functools
import hashlib
import random
import struct
from collections.abc import Iterator

__all__ = ["CHUNK", "HEADER", "MODE_ECHO", "MODE_SINK", "MODE_SOURCE", "PERIOD", "UNBOUNDED", "chunks",
           "expected_digest", "header", "parse_header", "pattern", "start_offset"]

PERIOD = (1 << 20) + 13
"""Length of the repeated random block (1 MiB + 13)."""
CHUNK = 256 * 1024
"""Largest slice :func:`chunks` yields; the pattern buffer carries this much wrap-around."""

HEADER = struct.Struct("!cQQ")
"""What a driver sends first to the target: mode byte, length, seed (17 bytes)."""
MODE_ECHO, MODE_SINK, MODE_SOURCE = b"E", b"S", b"R"
UNBOUNDED = (1 << 64) - 1
"""Sink length meaning "discard until EOF, never reply" (the background load generator)."""


def header(mode: bytes, length: int = 0, seed: int = 0) -> bytes:
    return HEADER.pack(mode, length, seed)


def parse_header(data: bytes) -> tuple[bytes, int, int]:
    mode, length, seed = HEADER.unpack(data)
    return mode, length, seed


BLOCK_SEED = 20240229


@functools.cache
def pattern() -> bytes:
    """The random block followed by its first :data:`CHUNK` bytes (so slices never wrap)."""
    block = random.Random(BLOCK_SEED).randbytes(PERIOD)
    return block + block[:CHUNK]


def start_offset(seed: int) -> int:
    """Where stream ``seed`` starts in the block (a multiplicative hash spreads neighbouring seeds apart)."""
    return (seed * 2654435761) % PERIOD


def chunks(length: int, seed: int, size: int = CHUNK) -> Iterator[memoryview]:
    """The stream ``(length, seed)`` as read-only slices of at most ``size`` (≤ CHUNK) bytes, no copies."""
    if not 0 < size <= CHUNK:
        raise ValueError(f"chunk size must be in 1..{CHUNK}")
    view = memoryview(pattern())
    offset, left = start_offset(seed), length
    while left > 0:
        n = min(size, left)
        yield view[offset:offset + n]
        offset = (offset + n) % PERIOD
        left -= n


@functools.lru_cache(maxsize=4096)
def expected_digest(length: int, seed: int) -> bytes:
    """sha256 of the stream ``(length, seed)``; cached, so verification costs nothing inside a measurement."""
    h = hashlib.sha256()
    for piece in chunks(length, seed):
        h.update(piece)
    return h.digest()
