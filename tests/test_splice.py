"""Splice (the pump) behaviour on both implementations and both event loops.

Each test drives real loopback sockets: the stream leg is a TCP connection to an "application" (asyncio streams),
the WebSocket leg goes either to an independent peer built on the ``websockets`` sans-I/O protocol (so framing,
masking and close codes are judged by another implementation) or to a second Splice in the opposite role.
Flow control and memory bounds live in ``test_splice_flow.py``.
"""

from __future__ import annotations

import asyncio
import gc
import os
import socket
import struct
import subprocess
import sys
import weakref
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import pytest
from websockets.frames import Close, Opcode
from websockets.protocol import Side

from bastion_fast.exceptions import ConnectionClosed, FrameTooLarge, ProtocolError
from tests.conftest import PURE_ONLY
from tests.splice_harness import (
    WAIT,
    Handshake,
    RecordingTransport,
    WsPeer,
    close_app,
    gather,
    open_leg,
    random_blob,
    random_chunks,
    read_exactly,
    read_to_eof,
    run,
    sha,
    stream_leg,
    tcp_pair,
    wait_until,
    write_chunks,
)

MiB = 1024 * 1024


@pytest.fixture(params=["asyncio", "uvloop"])
def loop_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@dataclass
class PeerCase:
    splice: Any
    peer: WsPeer
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    ws_rec: RecordingTransport | None
    stream_rec: RecordingTransport | None

    def close_frames(self) -> list[Close]:
        return [Close.parse(f.data) for f in self.peer.control(Opcode.CLOSE)]


async def splice_vs_peer(impl: ModuleType, *, client: bool = True, tls: bool = False, record: bool = False,
                         before_attach: Any = None, **opts: Any) -> PeerCase:
    """A splice whose WebSocket leg ends at a websockets-library peer and whose stream leg ends at an app."""
    splice = impl.Splice(client=client, **opts)
    a, b = tcp_pair()
    (ws_transport, hs), (_, peer) = await gather(
        open_leg(a, Handshake, tls=tls, server_side=not client),
        open_leg(b, lambda: WsPeer(Side.SERVER if client else Side.CLIENT), tls=tls, server_side=client),
    )
    reader, writer, stream_rec = await stream_leg(splice, record=record)
    if before_attach is not None:
        await before_attach(peer, hs)
    ws_rec = RecordingTransport(ws_transport) if record else None
    splice.attach_ws(ws_rec or ws_transport, bytes(hs.early))
    return PeerCase(splice, peer, reader, writer, ws_rec, stream_rec)


async def splice_pair(impl: ModuleType, *, tls: bool, watch: list[Any] | None = None,
                      **opts: Any) -> tuple[Any, Any, Any, Any]:
    """Client-role splice ⇄ server-role splice; returns (client splice, server splice, client app, server app).
    ``watch``: gets a weak reference to each leg's TLS object (to see when the connection is freed)."""
    cs = impl.Splice(client=True, **opts)
    ss = impl.Splice(client=False, **opts)
    a, b = tcp_pair()
    (ct, chs), (st, shs) = await gather(
        open_leg(a, Handshake, tls=tls, server_side=False),
        open_leg(b, Handshake, tls=tls, server_side=True),
    )
    if watch is not None:
        watch += [weakref.ref(t.get_extra_info("ssl_object")) for t in (ct, st)]
    capp = await stream_leg(cs)
    sapp = await stream_leg(ss)
    ss.attach_ws(st, bytes(shs.early))
    cs.attach_ws(ct, bytes(chs.early))
    return cs, ss, capp, sapp


async def finished(*splices: Any) -> None:
    await asyncio.wait_for(asyncio.gather(*(s.done for s in splices)), WAIT)


async def client_app_ends_first(cs: Any, ss: Any, cr: Any, cw: Any, sr: Any, sw: Any) -> None:
    """The client's application shuts down writing: Close 1000 travels, both applications see EOF, both end."""
    cw.write_eof()
    assert await read_to_eof(sr) == b""
    await close_app(sw)
    assert await read_to_eof(cr) == b""
    await finished(cs, ss)
    await close_app(cw)


# ---------------------------------------------------------------------------------------------- transfers


@pytest.mark.parametrize("tls", [True, False], ids=["tls", "plain"])
def test_two_splices_carry_both_directions_sha256(impl: ModuleType, loop_name: str, tls: bool) -> None:
    async def body() -> None:
        up, down = random_blob(3 * MiB + 5, 1), random_blob(2 * MiB + 77, 2)
        cs, ss, (cr, cw, _), (sr, sw, _) = await splice_pair(impl, tls=tls)
        got_up, got_down, *_ = await gather(
            read_exactly(sr, len(up)), read_exactly(cr, len(down)),
            write_chunks(cw, random_chunks(up, 3)), write_chunks(sw, random_chunks(down, 4)))
        assert sha(got_up) == sha(up)
        assert sha(got_down) == sha(down)
        await client_app_ends_first(cs, ss, cr, cw, sr, sw)
        assert (cs.bytes_stream_to_ws, ss.bytes_ws_to_stream) == (len(up), len(up))
        assert (ss.bytes_stream_to_ws, cs.bytes_ws_to_stream) == (len(down), len(down))
        assert (cs.close_code_sent, ss.close_code, ss.close_code_sent, cs.close_code) == (1000, 1000, 1000, 1000)
        assert cs.error is None and ss.error is None
        assert 0 < cs.started <= cs.ended

    run(loop_name, body())


def test_finished_splice_lets_go_of_its_tls_connection(impl: ModuleType, loop_name: str) -> None:
    """Once both legs are gone, the TLS connection (OpenSSL state and, on uvloop, a 256 KiB read buffer) is freed
    at once by reference counting, not whenever the cyclic GC next runs: a burst of 256 tunnel connections left
    tens of MB resident that way (bench/README.md). The GC is off here, so only reference counting can free it."""
    async def body() -> None:
        tls_objects: list[weakref.ref[Any]] = []
        cs, ss, (cr, cw, _), (sr, sw, _) = await splice_pair(impl, tls=True, watch=tls_objects)
        assert len(tls_objects) == 2 and all(ref() is not None for ref in tls_objects)
        cw.write(b"ping")
        assert await read_exactly(sr, 4) == b"ping"
        await client_app_ends_first(cs, ss, cr, cw, sr, sw)
        for _ in range(5):  # the loops hand connection_lost over through call_soon
            await asyncio.sleep(0)
        assert [ref() for ref in tls_objects] == [None, None]

    gc.disable()
    try:
        run(loop_name, body())
    finally:
        gc.enable()


@pytest.mark.parametrize("client", [True, False], ids=["client-role", "server-role"])
def test_frames_checked_by_independent_peer(impl: ModuleType, loop_name: str, client: bool) -> None:
    """Outgoing frames are complete binary messages ≤ frame_size, masked only in client role (the websockets
    library rejects a frame masked the wrong way); incoming binary and text messages of any size arrive as bytes."""
    async def body() -> None:
        c = await splice_vs_peer(impl, client=client, frame_size=4096)
        up = random_blob(1 * MiB + 3, 5)
        await write_chunks(c.writer, random_chunks(up, 6))
        await c.peer.wait_for(lambda: len(c.peer.data()) >= len(up))
        assert sha(c.peer.data()) == sha(up)
        frames = c.peer.data_frames()
        assert all(f.opcode == Opcode.BINARY and f.fin for f in frames)
        assert max(len(f.data) for f in frames) == 4096
        assert len(frames) >= len(up) // 4096
        assert c.close_frames() == []  # the peer found nothing to object to

        messages = [random_blob(n, n) for n in (1, 125, 126, 65535, 65536, 3 * MiB, 10)]
        for message in messages:
            c.peer.send(message)
        c.peer.send("héllo ✓".encode(), text=True)
        expected = b"".join(messages) + "héllo ✓".encode()
        got = await read_exactly(c.reader, len(expected))
        assert sha(got) == sha(expected)
        assert c.splice.bytes_ws_to_stream == len(expected)
        assert c.splice.bytes_stream_to_ws == len(up)
        c.splice.abort()
        await finished(c.splice)
        await close_app(c.writer)

    run(loop_name, body())


def test_fragmented_message_is_forwarded_unless_rejected(impl: ModuleType, loop_name: str) -> None:
    async def body() -> None:
        c = await splice_vs_peer(impl)
        c.peer.ws.send_binary(b"ab", fin=False)
        c.peer.ws.send_continuation(b"cd", fin=False)
        c.peer.ws.send_continuation(b"ef", fin=True)
        c.peer.flush()
        assert await read_exactly(c.reader, 6) == b"abcdef"
        c.splice.abort()
        await finished(c.splice)
        await close_app(c.writer)

        c = await splice_vs_peer(impl, reject_continuation=True)
        c.peer.ws.send_binary(b"ab", fin=False)
        c.peer.flush()
        assert await read_exactly(c.reader, 2) == b"ab"  # a first fragment is a normal frame...
        c.peer.ws.send_continuation(b"cd", fin=True)
        c.peer.flush()
        assert await read_to_eof(c.reader) == b""  # ...its continuation is refused
        await finished(c.splice)
        assert [f.code for f in c.close_frames()] == [1002]
        assert isinstance(c.splice.error, ProtocolError)
        await close_app(c.writer)

    run(loop_name, body())


@pytest.mark.parametrize("end", ["stdin-eof", "abort"])
def test_pipes_as_stream_leg(impl: ModuleType, loop_name: str, end: str) -> None:
    """stdin/stdout style: a read pipe and a write pipe; stdin EOF ⇒ Close 1000 ⇒ stdout EOF after the echo."""
    async def body() -> None:
        loop = asyncio.get_running_loop()
        splice = impl.Splice(client=True)
        in_r, in_w = os.pipe()
        out_r, out_w = os.pipe()
        read_t, _ = await loop.connect_read_pipe(Handshake, os.fdopen(in_r, "rb", 0))
        write_t, _ = await loop.connect_write_pipe(asyncio.Protocol, os.fdopen(out_w, "wb", 0))
        splice.attach_stream(read_t, write_t)
        app_reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(app_reader), os.fdopen(out_r, "rb", 0))
        app_w_t, _ = await loop.connect_write_pipe(asyncio.Protocol, os.fdopen(in_w, "wb", 0))

        a, b = tcp_pair()
        (ws_t, hs), (_, peer) = await gather(open_leg(a, Handshake, tls=False, server_side=False),
                                             open_leg(b, lambda: WsPeer(Side.SERVER), tls=False, server_side=True))
        splice.attach_ws(ws_t, bytes(hs.early))
        up, down = random_blob(300_000, 8), random_blob(500_000, 9)
        for chunk in random_chunks(up, 10, 70_000):
            app_w_t.write(chunk)
        peer.send(down)
        assert sha(await read_exactly(app_reader, len(down))) == sha(down)
        await peer.wait_for(lambda: len(peer.data()) >= len(up))
        assert sha(peer.data()) == sha(up)
        if end == "abort":
            splice.abort()
            assert await read_to_eof(app_reader) == b""
            await finished(splice)
            app_w_t.close()
            assert peer.control(Opcode.CLOSE) == []
            return
        app_w_t.close()  # stdin EOF
        assert await read_to_eof(app_reader) == b""  # stdout EOF once the close handshake is done
        await finished(splice)
        assert [Close.parse(f.data).code for f in peer.control(Opcode.CLOSE)] == [1000]
        assert splice.close_code == 1000 and splice.error is None

    run(loop_name, body())


def test_leftover_and_late_stream_leg(impl: ModuleType, loop_name: str) -> None:
    """Bytes read past the upgrade are passed as leftover; a WebSocket attached before the stream waits for it."""
    async def body() -> None:
        loop = asyncio.get_running_loop()
        splice = impl.Splice(client=True)
        a, b = tcp_pair()
        (ws_t, hs), (_, peer) = await gather(open_leg(a, Handshake, tls=True, server_side=False),
                                             open_leg(b, lambda: WsPeer(Side.SERVER), tls=True, server_side=True))
        peer.send(b"early bytes ")
        await wait_until(lambda: len(hs.early) >= 14)
        ws_t.pause_reading()  # as a handshake protocol may leave it: the splice must resume it
        splice.attach_ws(ws_t, bytes(hs.early))
        peer.send(b"then more")
        await asyncio.sleep(0.05)  # give the splice a chance to (wrongly) lose data with no stream attached
        reader, writer, _ = await stream_leg(splice, paused=True)
        assert await read_exactly(reader, 21) == b"early bytes then more"
        writer.write(b"up")
        await peer.wait_for(lambda: peer.data() == b"up")
        writer.write_eof()
        assert await read_to_eof(reader) == b""
        await finished(splice)
        await close_app(writer)
        assert loop.is_running()

    run(loop_name, body())


def test_stream_leg_first_is_not_read_before_websocket(impl: ModuleType, loop_name: str) -> None:
    async def body() -> None:
        splice = impl.Splice(client=True)
        reader, writer, _ = await stream_leg(splice, paused=True)
        writer.write(b"typed before the tunnel is up")
        writer.write_eof()
        await asyncio.sleep(0.05)
        a, b = tcp_pair()
        (ws_t, hs), (_, peer) = await gather(open_leg(a, Handshake, tls=False, server_side=False),
                                             open_leg(b, lambda: WsPeer(Side.SERVER), tls=False, server_side=True))
        splice.attach_ws(ws_t, bytes(hs.early))
        await peer.wait_for(lambda: bool(peer.control(Opcode.CLOSE)))
        assert peer.data() == b"typed before the tunnel is up"
        assert [Close.parse(f.data).code for f in peer.control(Opcode.CLOSE)] == [1000]
        assert await read_to_eof(reader) == b""
        await finished(splice)
        await close_app(writer)

    run(loop_name, body())


def test_protocols_used_as_factories_hold_back_early_data(impl: ModuleType, loop_name: str) -> None:
    """``stream_protocol``/``ws_protocol`` given straight to the loop attach themselves in connection_made, where
    uvloop ignores pause_reading: the splice must still stop reading a leg whose partner is missing (bounded memory)
    and lose nothing."""
    async def body() -> None:
        loop = asyncio.get_running_loop()
        splice = impl.Splice(client=True)
        s1, s2 = tcp_pair()
        await loop.connect_accepted_socket(lambda: splice.stream_protocol, sock=s1)
        reader, writer = await asyncio.open_connection(sock=s2)
        up = random_blob(16 * MiB, 31)
        writer.write(up)
        await asyncio.sleep(0.2)
        assert writer.transport.get_write_buffer_size() > 0  # the splice did not swallow the 16 MiB
        a, b = tcp_pair()
        peer_t, peer = await open_leg(b, lambda: WsPeer(Side.SERVER), tls=False, server_side=True)
        await loop.create_connection(lambda: splice.ws_protocol, sock=a)
        await peer.wait_for(lambda: len(peer.data()) >= len(up))
        assert sha(peer.data()) == sha(up)
        splice.close()
        assert await read_to_eof(reader) == b""
        await finished(splice)
        await close_app(writer)
        assert peer_t is not None

    run(loop_name, body())


# ---------------------------------------------------------------------------------------------- control frames


def test_ping_answered_with_pong_and_keepalive_pings(impl: ModuleType, loop_name: str) -> None:
    async def body() -> None:
        c = await splice_vs_peer(impl, keepalive=0.02)
        c.peer.ws.send_ping(b"are you there")
        c.peer.flush()
        await c.peer.wait_for(lambda: bool(c.peer.control(Opcode.PONG)))
        assert [f.data for f in c.peer.control(Opcode.PONG)] == [b"are you there"]
        # keepalive: the splice pings on its own, repeatedly (the peer answers; nothing breaks)
        await c.peer.wait_for(lambda: len(c.peer.control(Opcode.PING)) >= 2)
        c.writer.write(b"x")
        await c.peer.wait_for(lambda: c.peer.data() == b"x")
        c.splice.close()
        assert await read_to_eof(c.reader) == b""
        await finished(c.splice)
        assert c.splice.error is None
        await close_app(c.writer)

    run(loop_name, body())


@pytest.mark.parametrize(("code", "reason"), [(1001, "going away"), (1000, ""), (4321, "app ✓"), (None, "")])
def test_peer_close_echoed_and_app_sees_eof(impl: ModuleType, loop_name: str, code: int | None,
                                             reason: str) -> None:
    async def body() -> None:
        c = await splice_vs_peer(impl, tls=True)
        c.peer.send(b"last words")
        if code is None:
            c.peer.ws.send_close()
        else:
            c.peer.ws.send_close(code, reason)
        c.peer.flush()
        assert await read_exactly(c.reader, 10) == b"last words"
        assert await read_to_eof(c.reader) == b""
        await finished(c.splice)
        expected = 1005 if code is None else code
        assert (c.splice.close_code, c.splice.close_reason) == (expected, reason)
        assert c.splice.close_code_sent == expected
        echoed = c.close_frames()
        assert [f.code for f in echoed] == [expected]
        assert c.splice.error is None
        await close_app(c.writer)

    run(loop_name, body())


def test_local_close_with_code(impl: ModuleType, loop_name: str) -> None:
    async def body() -> None:
        c = await splice_vs_peer(impl, client=False)
        c.splice.close(4000, "maintenance")
        await c.peer.wait_for(lambda: bool(c.close_frames()))
        assert [(f.code, f.reason) for f in c.close_frames()] == [(4000, "maintenance")]
        assert await read_to_eof(c.reader) == b""
        await finished(c.splice)
        assert (c.splice.close_code_sent, c.splice.close_code) == (4000, 4000)
        assert c.splice.error is None
        await close_app(c.writer)

    run(loop_name, body())


def test_close_timeout_when_peer_never_answers(impl: ModuleType, loop_name: str) -> None:
    async def body() -> None:
        splice = impl.Splice(client=True, close_timeout=0.1)
        a, b = tcp_pair()
        (ws_t, _), (_, mute) = await gather(open_leg(a, Handshake, tls=False, server_side=False),
                                             open_leg(b, Handshake, tls=False, server_side=True))
        reader, writer, _ = await stream_leg(splice)
        splice.attach_ws(ws_t, b"")
        writer.write_eof()
        assert await read_to_eof(reader) == b""
        await finished(splice)
        assert isinstance(splice.error, ConnectionClosed)
        assert splice.close_code == 1006 and splice.close_code_sent == 1000
        assert bytes(mute.early)[:2] == b"\x88\x82"  # a masked Close with a 2-byte code did go out
        await close_app(writer)

    run(loop_name, body())


def test_done_is_bounded_when_tls_peer_never_finishes_closing(impl: ModuleType, loop_name: str) -> None:
    """After the Close exchange the TLS shutdown waits for the peer's close_notify; a peer that stops reading must
    not hold ``done`` (and the token DELETE behind it) for the TLS layer's 30 s: close_timeout bounds it."""
    async def body() -> None:
        c = await splice_vs_peer(impl, tls=True, close_timeout=0.2)
        assert c.peer.transport is not None
        c.peer.ws.send_close(1001)
        c.peer.flush()
        c.peer.transport.pause_reading()  # never reads our echo nor our close_notify
        assert await read_to_eof(c.reader) == b""
        await finished(c.splice)
        assert (c.splice.close_code, c.splice.close_code_sent, c.splice.error) == (1001, 1001, None)
        c.peer.transport.abort()
        await close_app(c.writer)

    run(loop_name, body())


# ---------------------------------------------------------------------------------------------- endings


@pytest.mark.parametrize("how", ["fin", "rst"])
def test_peer_drop_gives_app_eof_at_once(impl: ModuleType, loop_name: str, how: str) -> None:
    async def body() -> None:
        c = await splice_vs_peer(impl)
        c.peer.send(b"partial")
        assert await read_exactly(c.reader, 7) == b"partial"
        assert c.peer.transport is not None
        if how == "rst":
            sock = c.peer.transport.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        c.peer.transport.abort()
        assert await read_to_eof(c.reader) == b""  # EOF, not a hang (az leaves the app hanging here)
        await finished(c.splice)
        assert c.splice.close_code == 1006
        assert c.splice.close_code_sent is None
        assert isinstance(c.splice.error, ConnectionClosed)
        await close_app(c.writer)

    run(loop_name, body())


def test_stream_eof_sends_close_1000_after_data(impl: ModuleType, loop_name: str) -> None:
    async def body() -> None:
        c = await splice_vs_peer(impl, tls=True)
        data = random_blob(700_000, 11)
        await write_chunks(c.writer, random_chunks(data, 12))
        c.writer.write_eof()
        await c.peer.wait_for(lambda: bool(c.close_frames()))
        assert sha(c.peer.data()) == sha(data)  # the Close came after every data frame
        assert c.peer.frames[-1].opcode == Opcode.CLOSE
        assert [f.code for f in c.close_frames()] == [1000]
        assert await read_to_eof(c.reader) == b""  # the peer's echo ended it
        await finished(c.splice)
        assert (c.splice.close_code_sent, c.splice.close_code, c.splice.error) == (1000, 1000, None)
        await close_app(c.writer)

    run(loop_name, body())


def test_half_close_keeps_forwarding_until_peer_closes(impl: ModuleType, loop_name: str) -> None:
    async def body() -> None:
        c = await splice_vs_peer(impl, half_close=True)
        c.writer.write(b"request")
        c.writer.write_eof()
        await c.peer.wait_for(lambda: c.peer.data() == b"request")
        for part in (b"response 1;", b"response 2;"):
            c.peer.send(part)
            assert await read_exactly(c.reader, len(part)) == part
        assert c.close_frames() == []  # our EOF did not close the WebSocket
        c.peer.ws.send_close(1000)
        c.peer.flush()
        assert await read_to_eof(c.reader) == b""
        await finished(c.splice)
        assert [f.code for f in c.close_frames()] == [1000]  # the echo
        assert (c.splice.close_code, c.splice.error) == (1000, None)
        await close_app(c.writer)

    run(loop_name, body())


def test_app_reset_closes_websocket(impl: ModuleType, loop_name: str) -> None:
    async def body() -> None:
        c = await splice_vs_peer(impl, half_close=True)
        c.writer.write(b"bye")
        await c.peer.wait_for(lambda: c.peer.data() == b"bye")
        sock = c.writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        c.writer.transport.abort()
        await c.peer.wait_for(lambda: bool(c.close_frames()))
        assert [f.code for f in c.close_frames()] == [1000]
        await finished(c.splice)

    run(loop_name, body())


def _raw_frame(opcode_byte: int, payload: bytes, *, masked: bool) -> bytes:
    assert len(payload) < 126
    if not masked:
        return bytes([opcode_byte, len(payload)]) + payload
    key = b"\x01\x02\x03\x04"
    return bytes([opcode_byte, 0x80 | len(payload)]) + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


@pytest.mark.parametrize(("case", "code", "exc"), [
    ("rsv1", 1002, ProtocolError),
    ("bad-opcode", 1002, ProtocolError),
    ("too-large", 1009, FrameTooLarge),
    ("bad-close-code", 1002, ProtocolError),
    ("wrong-mask", 1002, ProtocolError),
])
@pytest.mark.parametrize("client", [True, False], ids=["client-role", "server-role"])
def test_protocol_error_closes_with_code_and_drops(impl: ModuleType, loop_name: str, client: bool, case: str,
                                                  code: int, exc: type[Exception]) -> None:
    async def body() -> None:
        c = await splice_vs_peer(impl, client=client, max_frame_size=1000)
        masked = not client  # what the splice expects from its peer
        bad = {
            "rsv1": _raw_frame(0xC2, b"abc", masked=masked),
            "bad-opcode": _raw_frame(0x83, b"abc", masked=masked),
            "bad-close-code": _raw_frame(0x88, b"\x03\xe7", masked=masked),  # 999
            "wrong-mask": _raw_frame(0x82, b"abc", masked=not masked),
        }.get(case)
        c.peer.send(b"good")
        assert await read_exactly(c.reader, 4) == b"good"
        if bad is None:
            c.peer.send(b"z" * 2000)
        else:
            c.peer.send_raw(bad)
        assert await read_to_eof(c.reader) == b""
        await finished(c.splice)
        await asyncio.wait_for(c.peer.lost, WAIT)  # dropped without waiting for an answer
        assert [f.code for f in c.close_frames()] == [code]
        assert c.splice.close_code_sent == code
        assert isinstance(c.splice.error, exc)
        assert c.splice.error.close_code == code
        assert c.splice.close_code == 1006
        await close_app(c.writer)

    run(loop_name, body())


# ---------------------------------------------------------------------------------------------- fault injection


@pytest.mark.parametrize("direction", ["ws-to-stream", "stream-to-ws"])
def test_drop_after_bytes(impl: ModuleType, loop_name: str, direction: str) -> None:
    async def body() -> None:
        c = await splice_vs_peer(impl, client=False, drop_after_bytes=100_000)
        data = random_blob(300_000, 13)
        if direction == "ws-to-stream":
            c.peer.send(data)
            got = await read_to_eof(c.reader)
            assert got == data[:100_000]  # exactly the limit, then EOF
        else:
            await write_chunks(c.writer, random_chunks(data, 14, 30_000))
            await asyncio.wait_for(c.peer.lost, WAIT)
            assert len(c.peer.data()) <= 100_000
            assert c.peer.data() == data[:len(c.peer.data())]
            assert await read_to_eof(c.reader) == b""
        await asyncio.wait_for(c.peer.lost, WAIT)
        await finished(c.splice)
        assert c.close_frames() == []  # dropped, no Close frame
        assert c.splice.bytes_ws_to_stream + c.splice.bytes_stream_to_ws == 100_000
        assert isinstance(c.splice.error, ConnectionClosed)
        assert c.splice.close_code == 1006
        await close_app(c.writer)

    run(loop_name, body())


# ---------------------------------------------------------------------------------------------- buffers, sockets


def test_transports_never_get_reused_buffers(impl: ModuleType, loop_name: str) -> None:
    """Every object handed to write() is immutable bytes whose content never changes afterwards (uvloop keeps a
    view of unsent data: writing a reused buffer corrupts the stream)."""
    async def body() -> None:
        c = await splice_vs_peer(impl, record=True, read_size=8192, frame_size=3000)
        up, down = random_blob(600_000, 15), random_blob(600_000, 16)
        for i in range(0, len(down), 50_000):
            c.peer.send(down[i:i + 50_000])
        c.peer.ws.send_ping(b"p")
        c.peer.flush()
        _, got, _ = await gather(write_chunks(c.writer, random_chunks(up, 17, 20_000)),
                                 read_exactly(c.reader, len(down)),
                                 c.peer.wait_for(lambda: len(c.peer.data()) >= len(up)))
        assert sha(got) == sha(down) and sha(c.peer.data()) == sha(up)
        assert c.ws_rec is not None and c.stream_rec is not None
        assert len(c.ws_rec.writes) >= len(up) // 8192 and len(c.stream_rec.writes) > 10
        assert c.ws_rec.reused_buffers() == []
        assert c.stream_rec.reused_buffers() == []
        c.splice.abort()
        await finished(c.splice)
        await close_app(c.writer)

    run(loop_name, body())


def test_socket_options(impl: ModuleType, loop_name: str) -> None:
    async def body() -> None:
        loop = asyncio.get_running_loop()
        splice = impl.Splice(client=True)
        s1, s2 = tcp_pair()
        s1.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 0)
        stream_t, _ = await loop.connect_accepted_socket(Handshake, sock=s1)
        stream_t.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 0)
        splice.attach_stream(stream_t)
        a, b = tcp_pair()
        (ws_t, _), (peer_t, _) = await gather(open_leg(a, Handshake, tls=True, server_side=False),
                                              open_leg(b, Handshake, tls=True, server_side=True))
        ws_sock = ws_t.get_extra_info("socket")
        ws_sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 0)
        assert ws_sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 0
        splice.attach_ws(ws_t, b"")
        assert stream_t.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
        assert ws_sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
        assert ws_sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        if hasattr(socket, "TCP_KEEPIDLE"):
            assert ws_sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 30
        splice.abort()
        peer_t.abort()
        s2.close()
        await finished(splice)

    run(loop_name, body())


def test_options_are_validated(impl: ModuleType) -> None:
    async def body() -> None:
        for bad in ({"low_water": 10, "high_water": 5}, {"frame_size": 0}, {"read_size": 0},
                    {"keepalive": 0}, {"drop_after_bytes": -1}, {"close_timeout": 0}, {"read_budget": -1}):
            with pytest.raises(ValueError):
                impl.Splice(client=True, **bad)
        splice = impl.Splice(client=True)
        assert (splice.bytes_stream_to_ws, splice.bytes_ws_to_stream, splice.close_code) == (0, 0, 1006)
        assert splice.close_code_sent is None and splice.error is None and not splice.done.done()
        assert isinstance(splice.ws_protocol, asyncio.BufferedProtocol)
        assert isinstance(splice.stream_protocol, asyncio.BufferedProtocol)
        splice.abort()
        assert splice.done.done()

    run("asyncio", body())


def test_abort_before_attach_then_late_legs_are_dropped(impl: ModuleType, loop_name: str) -> None:
    async def body() -> None:
        splice = impl.Splice(client=True)
        splice.abort()
        await finished(splice)
        reader, writer, _ = await stream_leg(splice)
        assert await read_to_eof(reader) == b""  # the late leg is not left hanging
        await close_app(writer)

    run(loop_name, body())


@pytest.mark.parametrize(("env", "expected"), [({"BASTION_FAST_NO_EXTENSIONS": "1"}, "python"),
                                               ({"BASTION_FAST_NO_EXTENSIONS": ""}, "cython")])
def test_selector_honours_no_extensions(env: dict[str, str], expected: str) -> None:
    if expected == "cython" and PURE_ONLY:
        pytest.skip("pure-only run")
    code = ("import bastion_fast.pump as p; import bastion_fast; "
            "print(p.IMPLEMENTATION, bastion_fast.IMPLEMENTATION, p.impl.Splice.__module__)")
    proc = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=60,
                          env={**os.environ, **env})
    assert proc.returncode == 0, proc.stderr
    name, top, module = proc.stdout.split()
    assert name == top == expected
    assert module == ("bastion_fast._splice_py" if expected == "python" else "bastion_fast._pump")


@pytest.mark.parametrize("client", [True, False], ids=["client-role", "server-role"])
def test_flood_of_tiny_frames_in_one_read(impl: ModuleType, loop_name: str, client: bool) -> None:
    """Thousands of 1-byte frames (and a ping, and empty frames) arriving in one read are forwarded in order."""
    async def body() -> None:
        c = await splice_vs_peer(impl, client=client)
        masked = not client
        payload = random_blob(5000, 23)
        raw = bytearray()
        for i, byte in enumerate(payload):
            raw += _raw_frame(0x82, bytes([byte]), masked=masked)
            if i == 2500:
                raw += _raw_frame(0x89, b"hi", masked=masked) + _raw_frame(0x82, b"", masked=masked)
        c.peer.send_raw(bytes(raw))
        assert sha(await read_exactly(c.reader, len(payload))) == sha(payload)
        await c.peer.wait_for(lambda: bool(c.peer.control(Opcode.PONG)))
        assert [f.data for f in c.peer.control(Opcode.PONG)] == [b"hi"]
        assert c.splice.bytes_ws_to_stream == len(payload)
        c.splice.abort()
        await finished(c.splice)
        await close_app(c.writer)

    run(loop_name, body())
