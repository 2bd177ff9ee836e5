"""Test harness for the Splice (pump): loopback legs, an independent WebSocket peer, recording transports.

Nothing here needs the emulator. The pieces:

* :func:`tcp_pair` — two connected loopback TCP sockets (the kernel is real: Nagle, windows, FIN, RST).
* :class:`Tls` — a throw-away CA (trustme) with server and client contexts for ``localhost``.
* :class:`WsPeer` — the *other* end of a WebSocket leg written on the ``websockets`` library's sans-I/O
  ``Protocol``, so the pump is never checked only against itself: it validates masking, framing and close codes
  with an independent implementation.
* :class:`RecordingTransport` — wraps a real transport, keeps every object handed to ``write`` together with a
  snapshot of its bytes (to prove no buffer is reused after the transport took it) and the largest write-buffer
  size seen after any write (to prove memory stays bounded, without looking at the clock).
* :func:`attach_ws` / :func:`stream_leg` — connect a splice's legs the way the tunnel does: the WebSocket leg
  through a separate "handshake" protocol first (bytes that arrive early become ``leftover``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import random
import socket
import ssl
from collections.abc import Awaitable, Callable, Coroutine
from functools import cached_property
from typing import Any, TypeVar

from websockets.frames import Frame, Opcode
from websockets.protocol import Protocol, Side

from tests.conftest import TIMEOUT_FACTOR

T = TypeVar("T")

# One unit for the rare waits that need a bound (never asserted on): scaled by the CI factor.
WAIT = 20.0 * TIMEOUT_FACTOR


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop]:
    if name == "uvloop":
        import uvloop

        return uvloop.new_event_loop  # type: ignore[no-any-return]
    return asyncio.new_event_loop


def run(loop_name: str, coro: Coroutine[Any, Any, T]) -> T:
    """Run a test coroutine on a fresh loop of the given kind, bounded by WAIT seconds overall."""
    async def bounded() -> T:
        return await asyncio.wait_for(coro, 6 * WAIT)

    with asyncio.Runner(loop_factory=loop_factory(loop_name)) as runner:
        return runner.run(bounded())


def tcp_pair() -> tuple[socket.socket, socket.socket]:
    """Two connected, non-blocking loopback TCP sockets."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        a = socket.create_connection(listener.getsockname())
        b, _ = listener.accept()
    for s in (a, b):
        s.setblocking(False)
    return a, b


class Tls:
    """A private CA and matching server/client contexts for ``localhost``."""

    @cached_property
    def _ca(self) -> Any:
        import trustme

        return trustme.CA()

    @cached_property
    def server(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._ca.issue_cert("localhost", "127.0.0.1").configure_cert(ctx)
        return ctx

    @cached_property
    def client(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        self._ca.configure_trust(ctx)
        return ctx


TLS = Tls()


def random_blob(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def random_chunks(data: bytes, seed: int, max_size: int = 200_000) -> list[bytes]:
    """Split ``data`` at random points: small and large writes mixed (1 byte … max_size)."""
    rng = random.Random(seed)
    out, pos = [], 0
    while pos < len(data):
        n = rng.choice((1, 7, 100, 1500, 4096, rng.randint(1, max_size)))
        out.append(data[pos:pos + n])
        pos += n
    return out


class Handshake(asyncio.Protocol):
    """Stands in for the HTTP-upgrade protocol: whatever arrives before the splice takes over is leftover."""

    def __init__(self) -> None:
        self.early = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.early += data


async def open_leg(sock: socket.socket, protocol_factory: Callable[[], asyncio.BaseProtocol],
                   *, tls: bool, server_side: bool) -> tuple[asyncio.Transport, asyncio.BaseProtocol]:
    loop = asyncio.get_running_loop()
    if server_side:
        transport, _ = await loop.connect_accepted_socket(protocol_factory, sock=sock, ssl=TLS.server if tls else None)
    else:
        transport, _ = await loop.create_connection(protocol_factory, sock=sock, ssl=TLS.client if tls else None,
                                                    server_hostname="localhost" if tls else None)
    # uvloop returns its SSLProtocol from connect_accepted_socket(ssl=...); the transport knows the real one.
    return transport, transport.get_protocol()  # type: ignore[return-value]


class RecordingTransport:
    """A transport wrapper that remembers what was written and how full the buffer got."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.writes: list[tuple[Any, bytes]] = []
        self.keep_writes = True
        self.max_buffered = 0
        self.pause_calls = 0
        self.resume_calls = 0
        self.paused = asyncio.Event()

    def write(self, data: Any) -> None:
        if self.keep_writes:
            self.writes.append((data, bytes(data)))
        self._inner.write(data)
        size = self._inner.get_write_buffer_size()
        if size > self.max_buffered:
            self.max_buffered = size

    def pause_reading(self) -> None:
        self.pause_calls += 1
        self.paused.set()
        self._inner.pause_reading()

    def resume_reading(self) -> None:
        self.resume_calls += 1
        self._inner.resume_reading()

    def reused_buffers(self) -> list[int]:
        """Indexes of written objects that are not immutable bytes or whose content changed since the write."""
        return [i for i, (obj, snap) in enumerate(self.writes) if type(obj) is not bytes or bytes(obj) != snap]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class WsPeer(asyncio.Protocol):
    """An independent WebSocket endpoint (the ``websockets`` sans-I/O Protocol) on a raw transport.

    ``side`` is the peer's own role: Side.SERVER talks to a client-role splice and vice versa. It answers pings and
    closes the way the library does; ``frames`` collects every frame it received.
    """

    def __init__(self, side: Side, *, auto_close: bool = True) -> None:
        self.ws = Protocol(side, max_size=None)
        self.frames: list[Frame] = []
        self.raw_received = 0
        self.transport: asyncio.Transport | None = None
        self._changed = asyncio.Event()
        self.eof = False
        self.lost: asyncio.Future[Exception | None] = asyncio.get_running_loop().create_future()

    # asyncio side
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.raw_received += len(data)
        self.ws.receive_data(data)
        self.flush()

    def eof_received(self) -> bool:
        self.eof = True
        self.ws.receive_eof()
        self.flush()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(exc)
        self._changed.set()

    def flush(self) -> None:
        self.frames.extend(self.ws.events_received())
        assert self.transport is not None
        for chunk in self.ws.data_to_send():
            if chunk:
                if not self.transport.is_closing():
                    self.transport.write(chunk)
            elif self.transport.can_write_eof():
                self.transport.write_eof()
            else:
                self.transport.close()
        self._changed.set()

    # test API
    def send(self, data: bytes, *, text: bool = False) -> None:
        if text:
            self.ws.send_text(data)
        else:
            self.ws.send_binary(data)
        self.flush()

    def send_raw(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    def data(self) -> bytes:
        return b"".join(f.data for f in self.frames if f.opcode in (Opcode.BINARY, Opcode.TEXT, Opcode.CONT))

    def data_frames(self) -> list[Frame]:
        return [f for f in self.frames if f.opcode in (Opcode.BINARY, Opcode.TEXT, Opcode.CONT)]

    def control(self, opcode: Opcode) -> list[Frame]:
        return [f for f in self.frames if f.opcode == opcode]

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        async def loop() -> None:
            while not predicate():
                self._changed.clear()
                if self.lost.done() and not predicate():
                    await asyncio.sleep(0)
                    if not predicate():
                        raise AssertionError("the connection ended before the expected condition")
                await self._changed.wait()

        await asyncio.wait_for(loop(), WAIT)


async def wait_until(predicate: Callable[[], bool], step: float = 0.005) -> None:
    """Poll a condition (for state only observable by polling); bounded by WAIT, never asserted on time."""
    async def loop() -> None:
        while not predicate():
            await asyncio.sleep(step)

    await asyncio.wait_for(loop(), WAIT)


async def read_exactly(reader: asyncio.StreamReader, n: int) -> bytes:
    return await asyncio.wait_for(reader.readexactly(n), WAIT)


async def read_to_eof(reader: asyncio.StreamReader) -> bytes:
    return await asyncio.wait_for(reader.read(), WAIT)


async def write_chunks(writer: asyncio.StreamWriter, chunks: list[bytes]) -> None:
    for chunk in chunks:
        writer.write(chunk)
        await writer.drain()


async def gather(*aws: Awaitable[Any]) -> list[Any]:
    return list(await asyncio.gather(*aws))


async def stream_leg(splice: Any, *, record: bool = False, paused: bool = False) -> tuple[
        asyncio.StreamReader, asyncio.StreamWriter, RecordingTransport | None]:
    """A loopback TCP connection: the splice's stream leg on one end, an application (asyncio streams) on the other.

    ``paused``: hand the transport over with reading paused, as the tunnel's accepting protocol does.
    """
    loop = asyncio.get_running_loop()
    a, b = tcp_pair()
    transport, _ = await loop.connect_accepted_socket(Handshake, sock=a)
    if paused:
        transport.pause_reading()
    recorder = RecordingTransport(transport) if record else None
    splice.attach_stream(recorder or transport)
    reader, writer = await asyncio.open_connection(sock=b)
    return reader, writer, recorder


async def close_app(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(Exception):
        await writer.wait_closed()
