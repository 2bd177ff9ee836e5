"""Traffic endpoints for the tunnel benchmarks: the TCP target behind the emulator, and a bulk-load generator.

``python bench/targets.py serve`` listens on 127.0.0.1 and prints ``{"event": "ready", "port": N}``. The emulator
bridges every session to it (``--default-target 127.0.0.1:N``), and so does the direct relay. The first 17 bytes a
connection sends (see ``pattern.HEADER``) choose its job, so one tunnel process serves every scenario:

* ``E`` — echo every later byte until EOF (ping-pong, connection setup);
* ``S length seed`` — sink: read ``length`` bytes, answer with their sha256 (32 bytes), then discard until EOF.
  The answer travels back through the tunnel while the connection is still open, so the upload is timed until the
  last byte has really arrived, and no client needs half-close (az has none);
* ``R length seed`` — source: send the stream ``(length, seed)``, then wait for EOF.

It runs in its own process so its CPU is never charged to the client under test, on uvloop when present, with
``BufferedProtocol`` reads into one reused buffer and writer-side flow control (a slow tunnel pauses the source).

``python bench/targets.py blast --port P`` pushes an endless sink stream into port P until SIGTERM: the "bulk
upload on another connection" of the loaded ping-pong scenario, kept out of the driver process so it does not
compete with the latency probe for a GIL.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import signal
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import pattern

__all__ = ["TargetProtocol", "blast", "serve"]

READ_SIZE = 256 * 1024


class TargetProtocol(asyncio.BufferedProtocol):
    """One target connection: header, then echo / sink / source."""

    def __init__(self) -> None:
        self._buf = bytearray(READ_SIZE)
        self._view = memoryview(self._buf)
        self._header = bytearray()
        self._mode: bytes | None = None
        self._left = 0
        self._hash = hashlib.sha256()
        self._source: Iterator[memoryview] | None = None
        self._paused = False
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  (uvloop's transports are not asyncio subclasses)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._view

    def buffer_updated(self, nbytes: int) -> None:
        data = self._view[:nbytes]
        if self._mode is None:
            need = pattern.HEADER.size - len(self._header)
            self._header += data[:need]
            data = data[need:]
            if len(self._header) < pattern.HEADER.size:
                return
            self._start()
        if data:
            self._consume(data)

    def _start(self) -> None:
        mode, length, seed = pattern.parse_header(bytes(self._header))
        if mode not in (pattern.MODE_ECHO, pattern.MODE_SINK, pattern.MODE_SOURCE):
            assert self._transport is not None
            self._transport.abort()
            return
        self._mode, self._left = mode, length
        if mode == pattern.MODE_SOURCE:
            self._source = pattern.chunks(length, seed)
            self._pump_source()

    def _consume(self, data: memoryview) -> None:
        transport = self._transport
        assert transport is not None
        if self._mode == pattern.MODE_ECHO:
            transport.write(bytes(data))  # the read buffer is reused: hand the transport a copy
        elif self._mode == pattern.MODE_SINK and self._left:
            if self._left == pattern.UNBOUNDED:
                return
            take = min(len(data), self._left)
            self._hash.update(data[:take])
            self._left -= take
            if self._left == 0:
                transport.write(self._hash.digest())
        # source mode and a finished sink: input after the header is ignored until EOF

    def _pump_source(self) -> None:
        transport = self._transport
        assert transport is not None and self._source is not None
        while not self._paused:
            piece = next(self._source, None)
            if piece is None:
                self._source = iter(())
                return
            transport.write(piece)  # slices of an immutable bytes object: safe to hand over without copying

    def pause_writing(self) -> None:
        self._paused = True
        if self._mode == pattern.MODE_ECHO and self._transport is not None:
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        self._paused = False
        if self._mode == pattern.MODE_ECHO and self._transport is not None:
            self._transport.resume_reading()
        elif self._mode == pattern.MODE_SOURCE and self._source is not None:
            self._pump_source()

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._source = None


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()  # type: ignore[no-any-return]


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(TargetProtocol, host, port, backlog=1024)
    bound = server.sockets[0].getsockname()[1]
    print(json.dumps({"event": "ready", "address": host, "port": bound}), flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def blast(host: str, port: int, seed: int) -> int:
    """Upload an endless sink stream until SIGTERM/SIGINT; print the bytes sent."""
    sent = 0
    started = time.perf_counter()
    stopping = False

    def _stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    with socket.create_connection((host, port)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(pattern.header(pattern.MODE_SINK, pattern.UNBOUNDED, seed))
        print(json.dumps({"event": "ready"}), flush=True)
        started = time.perf_counter()
        try:
            while not stopping:
                for piece in pattern.chunks(pattern.PERIOD, seed):
                    sock.sendall(piece)
                    sent += len(piece)
                    if stopping:
                        break
        except OSError:
            pass
    print(json.dumps({"event": "done", "bytes": sent, "seconds": time.perf_counter() - started}), flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_serve = sub.add_parser("serve", help="run the multiplexed echo/sink/source target")
    p_serve.add_argument("--host", default="127.0.0.1")
    p_serve.add_argument("--port", type=int, default=0)
    p_blast = sub.add_parser("blast", help="push an endless upload into a tunnel port")
    p_blast.add_argument("--host", default="127.0.0.1")
    p_blast.add_argument("--port", type=int, required=True)
    p_blast.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    if args.cmd == "serve":
        with asyncio.Runner(loop_factory=_new_loop) as runner:
            runner.run(serve(args.host, args.port))
        return 0
    return blast(args.host, args.port, args.seed)


if __name__ == "__main__":
    sys.exit(main())
