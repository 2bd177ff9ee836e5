"""Fairness between connections and the shared read buffer of the Splice (both implementations, both loops).

* Fairness: uvloop reads a ready socket up to 32 times per loop iteration; without a budget one bulk connection
  monopolises the loop for tens of ms. A probe protocol between the transport and the splice's leg records, for
  every read, the number of the loop iteration it happened in (a ``call_soon`` ticker counts iterations), so the
  tests check bytes read per iteration and how a second connection's round trips interleave with the bulk reads —
  counts and ordering, never the clock.
* Shared buffer: all splices of a thread read into one buffer; bytes a splice must hold (a read before its other
  leg is attached, handshake leftover) are copied out, so reads of many other connections cannot corrupt them.
"""

from __future__ import annotations

import asyncio
import random
import socket
from collections import defaultdict
from types import ModuleType
from typing import Any

import pytest
from websockets.protocol import Side

from tests.splice_harness import (
    Handshake,
    WsPeer,
    close_app,
    gather,
    open_leg,
    random_blob,
    random_chunks,
    read_exactly,
    run,
    sha,
    stream_leg,
    tcp_pair,
    wait_until,
    write_chunks,
)
from tests.test_splice import finished, splice_pair, splice_vs_peer

KiB, MiB = 1024, 1024 * 1024
READ = BUDGET = 64 * KiB
# Between two of the splice's ticks a leg reads at most BUDGET + one read. A loop iteration as the test's ticker
# sees it can straddle two such windows (uvloop's TLS layer delivers reads from call_soon handles queued around
# the tick), hence twice that; without the budget uvloop reads up to 32 × READ = 2 MiB in one iteration.
BOUND = 2 * (BUDGET + READ)


@pytest.fixture(params=["asyncio", "uvloop"])
def loop_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


class Ticker:
    """Counts loop iterations: a callback that re-schedules itself runs exactly once per iteration."""

    def __init__(self) -> None:
        self.n = 0
        self._on = True
        self._loop = asyncio.get_running_loop()
        self._loop.call_soon(self._tick)

    def _tick(self) -> None:
        self.n += 1
        if self._on:
            self._loop.call_soon(self._tick)

    def stop(self) -> None:
        self._on = False


class Probe(asyncio.BufferedProtocol):
    """Sits between a transport and a splice leg's protocol; logs (name, iteration, bytes) for every read."""

    def __init__(self, inner: Any, name: str, ticker: Ticker, log: list[tuple[str, int, int]]) -> None:
        self.inner, self.name, self.ticker, self.log = inner, name, ticker, log

    def get_buffer(self, sizehint: int) -> Any:
        return self.inner.get_buffer(sizehint)

    def buffer_updated(self, nbytes: int) -> None:
        self.log.append((self.name, self.ticker.n, nbytes))
        self.inner.buffer_updated(nbytes)

    def data_received(self, data: bytes) -> None:
        self.log.append((self.name, self.ticker.n, len(data)))
        self.inner.data_received(data)

    def eof_received(self) -> Any:
        return self.inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()


class ProbedTransport:
    """Hands the splice a transport whose ``set_protocol`` installs a :class:`Probe` in front of its protocol."""

    def __init__(self, inner: Any, name: str, ticker: Ticker, log: list[tuple[str, int, int]]) -> None:
        self._inner, self._name, self._ticker, self._log = inner, name, ticker, log
        self._protocol: Any = None

    def set_protocol(self, protocol: Any) -> None:
        self._protocol = protocol
        self._inner.set_protocol(Probe(protocol, self._name, self._ticker, self._log))

    def get_protocol(self) -> Any:
        return self._protocol

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def per_iteration(log: list[tuple[str, int, int]], name: str) -> dict[int, int]:
    out: dict[int, int] = defaultdict(int)
    for who, it, n in log:
        if who == name:
            out[it] += n
    return out


async def probed_splice(impl: ModuleType, ticker: Ticker, log: list[tuple[str, int, int]], name: str, *,
                        tls: bool, **opts: Any) -> tuple[Any, WsPeer, asyncio.StreamReader, asyncio.StreamWriter]:
    """A client splice vs a websockets-library peer; both legs' reads are logged as ``name + ".s"/".ws"``."""
    splice = impl.Splice(client=True, **opts)
    a, b = tcp_pair()
    (ws_t, hs), (_, peer) = await gather(
        open_leg(a, Handshake, tls=tls, server_side=False),
        open_leg(b, lambda: WsPeer(Side.SERVER), tls=tls, server_side=True),
    )
    loop = asyncio.get_running_loop()
    s1, s2 = tcp_pair()
    # Fixed, large kernel buffers: the application (in this loop) can queue megabytes per iteration, so a reader
    # without a budget really has many reads' worth waiting (autotuned buffers sometimes start at ~100 KB).
    s1.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * MiB)
    s2.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * MiB)
    st, _ = await loop.connect_accepted_socket(Handshake, sock=s1)
    splice.attach_stream(ProbedTransport(st, name + ".s", ticker, log))
    reader, writer = await asyncio.open_connection(sock=s2)
    splice.attach_ws(ProbedTransport(ws_t, name + ".ws", ticker, log), bytes(hs.early))
    assert isinstance(peer, WsPeer)
    return splice, peer, reader, writer


async def bulk_with_round_trips(impl: ModuleType, direction: str, tls: bool, budget: int) -> tuple[
        dict[int, int], int, int]:
    """Connection A carries 24 MiB one way while connection B does 64-byte round trips. Returns A's bytes per loop
    iteration on the bulk leg, B's round trips completed while A was still transferring, and how many of B's reads
    fell between A's first and last bulk read."""
    ticker = Ticker()
    log: list[tuple[str, int, int]] = []
    opts = {"read_size": READ, "read_budget": budget, "frame_size": 16 * KiB}
    a, a_peer, a_reader, a_writer = await probed_splice(impl, ticker, log, "A", tls=tls, **opts)
    b, b_peer, b_reader, b_writer = await probed_splice(impl, ticker, log, "B", tls=tls, **opts)
    data = random_blob(24 * MiB, 77)
    bulk_done = asyncio.Event()

    async def bulk() -> None:
        if direction == "stream":
            a_writer.write(data)
            await a_peer.wait_for(lambda: len(a_peer.data()) >= len(data))
            assert sha(a_peer.data()) == sha(data)
        else:
            for i in range(0, len(data), MiB):
                a_peer.send(data[i:i + MiB])
            assert sha(await read_exactly(a_reader, len(data))) == sha(data)
        bulk_done.set()

    async def round_trips() -> int:
        done_during_bulk = 0
        for i in range(10_000):
            if bulk_done.is_set():
                break
            msg = i.to_bytes(4, "big") * 16
            b_writer.write(msg)
            want = 64 * (i + 1)
            await b_peer.wait_for(lambda: len(b_peer.data()) >= want)  # noqa: B023 (awaited right here)
            b_peer.send(msg)
            assert await read_exactly(b_reader, 64) == msg
            if not bulk_done.is_set():
                done_during_bulk += 1
        return done_during_bulk

    trips, _ = await gather(round_trips(), bulk())
    ticker.stop()
    leg = "A.s" if direction == "stream" else "A.ws"
    a_reads = [k for k, (who, _, _) in enumerate(log) if who == leg]
    b_between = sum(1 for k, (who, _, _) in enumerate(log)
                    if who.startswith("B.") and a_reads[0] < k < a_reads[-1])
    for w in (a_writer, b_writer):
        w.write_eof()
    await finished(a, b)
    for w in (a_writer, b_writer):
        await close_app(w)
    return per_iteration(log, leg), trips, b_between


@pytest.mark.parametrize("direction", ["stream", "ws"], ids=["stream-to-ws", "ws-to-stream"])
@pytest.mark.parametrize("tls", [True, False], ids=["tls", "plain"])
def test_bulk_connection_yields_to_others(impl: ModuleType, loop_name: str, direction: str, tls: bool) -> None:
    """A bulk leg reads at most about read_budget + one read per loop iteration (BOUND), and another connection's
    round trips run between its reads (uvloop would otherwise read up to 32 × read_size per iteration)."""
    async def body() -> None:
        per_it, trips, b_between = await bulk_with_round_trips(impl, direction, tls, BUDGET)
        assert sum(per_it.values()) >= 24 * MiB
        assert max(per_it.values()) <= BOUND, sorted(per_it.values())[-5:]
        assert trips >= 5  # B was served while A's 24 MiB were moving
        assert b_between >= trips  # each round trip reads on both of B's legs, amid A's reads

    run(loop_name, body())


def test_without_budget_uvloop_bursts(impl: ModuleType) -> None:
    """The control for the test above: with the budget off, uvloop does read far more than BOUND in one
    iteration — so the bound above is the budget's doing, not the kernel's."""
    async def body() -> None:
        per_it, _, _ = await bulk_with_round_trips(impl, "stream", False, 0)
        assert max(per_it.values()) > BOUND, sorted(per_it.values())[-5:]

    run("uvloop", body())


# ---------------------------------------------------------------------------------------------- shared buffer


def test_splices_share_one_read_buffer(impl: ModuleType, loop_name: str) -> None:
    async def body() -> None:
        splices = [impl.Splice(client=bool(i % 2)) for i in range(50)]
        bufs = {id(s.read_buffer.obj) for s in splices}
        assert len(bufs) == 1
        assert len(splices[0].read_buffer) == 256 * KiB
        other = impl.Splice(client=True, read_size=64 * KiB)
        assert len(other.read_buffer) == 64 * KiB and id(other.read_buffer.obj) not in bufs
        with pytest.raises(TypeError):
            splices[0].read_buffer[0] = 1  # read-only view: diagnostics cannot scribble on live reads
        for s in [*splices, other]:
            s.abort()

    run(loop_name, body())


@pytest.mark.parametrize("tls", [True, False], ids=["tls", "plain"])
def test_held_early_data_survives_other_connections_reads(impl: ModuleType, loop_name: str, tls: bool) -> None:
    """Many splices hold bytes that arrived before their other leg (stream reads before the WebSocket, WebSocket
    leftover before the stream) while busy connections push random writes through the same shared buffer; every
    held byte must still arrive intact (sha256) once the missing legs are attached."""
    async def body() -> None:
        loop = asyncio.get_running_loop()
        rng = random.Random(5)
        n_early, n_busy = 16, 6

        # Stream-first splices: the application writes before the WebSocket exists. Used as the protocol factory,
        # uvloop delivers one read before the splice can pause (held in the splice); asyncio holds it in the kernel.
        stream_first = []
        for i in range(n_early):
            s = impl.Splice(client=True)
            s1, s2 = tcp_pair()
            await loop.connect_accepted_socket(lambda: s.stream_protocol, sock=s1)  # noqa: B023 (called at once)
            reader, writer = await asyncio.open_connection(sock=s2)
            up = random_blob(rng.randint(1, 300 * KiB), 100 + i)
            for chunk in random_chunks(up, 200 + i, 50 * KiB):
                writer.write(chunk)
            stream_first.append((s, reader, writer, up))

        # WebSocket-first splices: the peer's data arrives with the handshake and is held as leftover.
        ws_first = []
        for i in range(n_early):
            s = impl.Splice(client=True)
            a, b = tcp_pair()
            (ws_t, hs), (_, peer) = await gather(open_leg(a, Handshake, tls=tls, server_side=False),
                                                 open_leg(b, lambda: WsPeer(Side.SERVER), tls=tls, server_side=True))
            down = random_blob(rng.randint(1, 200 * KiB), 300 + i)
            for chunk in random_chunks(down, 400 + i, 30 * KiB):
                peer.send(chunk)
            # all of it is handshake leftover:
            await wait_until(lambda: len(hs.early) >= len(down))  # noqa: B023 (awaited right here)
            s.attach_ws(ws_t, bytes(hs.early))
            ws_first.append((s, peer, down))
        await asyncio.sleep(0.05)  # let uvloop deliver its one early read on the stream-first legs

        # Busy pairs churn the shared buffer with random writes both ways.
        async def churn(k: int) -> None:
            cs, ss, (cr, cw, _), (sr, sw, _) = await splice_pair(impl, tls=tls)
            up, down = random_blob(2 * MiB + k, 500 + k), random_blob(MiB + 3 * k, 600 + k)
            got_up, got_down, *_ = await gather(
                read_exactly(sr, len(up)), read_exactly(cr, len(down)),
                write_chunks(cw, random_chunks(up, 700 + k)), write_chunks(sw, random_chunks(down, 800 + k)))
            assert sha(got_up) == sha(up) and sha(got_down) == sha(down)
            cw.write_eof()
            await close_app(sw)
            await finished(cs, ss)
            await close_app(cw)

        await gather(*(churn(k) for k in range(n_busy)))

        # Now attach the missing legs and check every held byte.
        async def finish_stream_first(s: Any, reader: Any, writer: Any, up: bytes) -> None:
            a, b = tcp_pair()
            (ws_t, hs), (_, peer) = await gather(open_leg(a, Handshake, tls=tls, server_side=False),
                                                 open_leg(b, lambda: WsPeer(Side.SERVER), tls=tls, server_side=True))
            s.attach_ws(ws_t, bytes(hs.early))
            await peer.wait_for(lambda: len(peer.data()) >= len(up))
            assert sha(peer.data()) == sha(up)
            writer.write_eof()
            await finished(s)
            await close_app(writer)

        async def finish_ws_first(s: Any, peer: WsPeer, down: bytes) -> None:
            reader, writer, _ = await stream_leg(s, paused=True)
            assert sha(await read_exactly(reader, len(down))) == sha(down)
            writer.write_eof()
            await finished(s)
            await close_app(writer)

        await gather(*(finish_stream_first(*c) for c in stream_first), *(finish_ws_first(*c) for c in ws_first))
        for splice in [c[0] for c in stream_first] + [c[0] for c in ws_first]:
            assert splice.error is None, splice.error

    run(loop_name, body())


def test_read_buffer_handed_to_another_leg_drops_the_connection(impl: ModuleType, loop_name: str) -> None:
    """If a loop ever deferred buffer_updated() past another connection's get_buffer(), the bytes could be the
    other connection's: the splice drops the connection (error set) instead of forwarding them."""
    async def body() -> None:
        c = await splice_vs_peer(impl)
        other = impl.Splice(client=True)
        buf = c.splice.stream_protocol.get_buffer(-1)
        other.stream_protocol.get_buffer(-1)  # another connection took the buffer in between
        buf[:5] = b"wrong"
        c.splice.stream_protocol.buffer_updated(5)
        await finished(c.splice)
        assert isinstance(c.splice.error, RuntimeError)
        assert c.peer.data() == b""
        other.abort()
        await close_app(c.writer)

    run(loop_name, body())
