"""A direct TCP relay: local port → target, no token, no WebSocket, no TLS — the ceiling of the benchmarks.

Whatever a Bastion client adds (framing, masking, TLS, the extra hop through Bastion) is measured against this.
uvloop when present; plain ``asyncio.Protocol`` pairs with flow control both ways (a leg whose write buffer is full
pauses reading on the other) and half-close passed on, so it is as fast as a Python relay gets without splice(2).

Usage: ``python bench/clients/direct.py --target 127.0.0.1:PORT --port 0``; prints ``{"event":"ready",…}``.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import socket
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common


class Leg(asyncio.Protocol):
    """One side of a relayed pair; writes what it reads into ``peer``."""

    def __init__(self, wait_for_peer: bool = False) -> None:
        self.wait_for_peer = wait_for_peer  # the accepted leg reads nothing until the target is connected
        self.transport: asyncio.Transport | None = None
        self.peer: Leg | None = None
        self.pending: list[bytes] = []
        self.eof = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  (uvloop's transports are not asyncio subclasses)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.wait_for_peer:
            transport.pause_reading()

    def _peer_open(self) -> asyncio.Transport | None:
        """The peer's transport if it can still be used (never touch a closing uvloop transport)."""
        peer = self.peer.transport if self.peer is not None else None
        return None if peer is None or peer.is_closing() else peer

    def pair(self, peer: Leg) -> None:
        self.peer = peer
        out = self._peer_open()
        if out is None:
            return
        for data in self.pending:
            out.write(data)
        self.pending.clear()
        if self.eof and out.can_write_eof():
            out.write_eof()
        if self.wait_for_peer and self.transport is not None and not self.transport.is_closing():
            self.wait_for_peer = False
            self.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        if self.peer is None:
            self.pending.append(data)  # only before pairing, and the accepted leg is paused until then
            return
        out = self._peer_open()
        if out is not None:
            out.write(data)

    def eof_received(self) -> bool:
        self.eof = True
        out = self._peer_open()
        if out is not None and out.can_write_eof():
            out.write_eof()
        return True  # keep our write side open until the peer is done too

    def pause_writing(self) -> None:
        out = self._peer_open()
        if out is not None:
            out.pause_reading()

    def resume_writing(self) -> None:
        out = self._peer_open()
        if out is not None:
            out.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        out = self._peer_open()
        if out is not None:
            out.close()


class Relay:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)

    def accept(self) -> Leg:
        local = Leg(wait_for_peer=True)
        asyncio.get_running_loop().create_task(self._connect(local))
        return local

    async def _connect(self, local: Leg) -> None:
        loop = asyncio.get_running_loop()
        try:
            _transport, remote = await loop.create_connection(Leg, *self.target)
        except OSError as exc:
            print(f"direct: target connect failed: {exc}", file=sys.stderr)
            if local.transport is not None:
                local.transport.close()
            return
        if local.transport is None or local.transport.is_closing():
            _transport.close()
            return
        remote.pair(local)  # remote → local
        local.pair(remote)  # flush what the local side sent meanwhile


async def serve(args: argparse.Namespace) -> None:
    host, _, port = args.target.rpartition(":")
    relay = Relay(host, int(port))
    loop = asyncio.get_running_loop()
    server = await loop.create_server(relay.accept, args.bind_address, args.port, backlog=1024)
    address, bound = server.sockets[0].getsockname()[:2]
    _common.print_ready(address, bound)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="direct TCP relay (benchmark ceiling)")
    parser.add_argument("--target", required=True, help="HOST:PORT to relay to")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--bind-address", default="127.0.0.1")
    args = parser.parse_args(argv)
    try:
        import uvloop

        factory = uvloop.new_event_loop
    except ImportError:
        factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
