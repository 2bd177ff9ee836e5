"""Interop with independent RFC 6455 implementations: ``websockets`` (frames layer) and ``wsproto``.

Frames we encode must decode with theirs, and frames they produce must decode with ours, in both roles (client
frames are masked, server frames are not). Payload sizes cross every length form (7-bit, 16-bit, 64-bit).
"""

from __future__ import annotations

import os
from types import ModuleType

import pytest
from websockets.frames import Close, Frame, Opcode
from websockets.streams import StreamReader
from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Event, Ping, Pong, TextMessage

SIZES = [1, 125, 126, 65535, 65536, 300_001]
ROLES = pytest.mark.parametrize("client", [True, False], ids=["client-role", "server-role"])


def websockets_parse(wire: bytes, *, mask: bool) -> list[Frame]:
    reader = StreamReader()
    reader.feed_data(wire)
    reader.feed_eof()
    frames = []
    while reader.buffer:
        parser = Frame.parse(reader.read_exact, mask=mask)
        with pytest.raises(StopIteration) as done:
            next(parser)
        frames.append(done.value.value)
    return frames


def feed_in_pieces(decoder: object, wire: bytes, piece: int = 4093) -> list[tuple[int, bytes, bool]]:
    events: list[tuple[int, bytes, bool]] = []
    for i in range(0, len(wire), piece):
        events += decoder.feed(wire[i : i + piece])  # type: ignore[attr-defined]
    return events


def wsproto_events(conn: Connection, wire: bytes) -> list[Event]:
    conn.receive_data(wire)
    return list(conn.events())


# --- ours → websockets ------------------------------------------------------------------------------------------


@ROLES
@pytest.mark.parametrize("size", SIZES)
def test_websockets_decodes_our_data_frames(impl: ModuleType, client: bool, size: int) -> None:
    data = os.urandom(size)
    enc = impl.FrameEncoder(client=client, frame_size=65536)
    frames = websockets_parse(enc.encode_data(data), mask=client)
    assert all(f.opcode is Opcode.BINARY and f.fin for f in frames)
    assert [len(f.data) for f in frames] == [min(65536, size - i) for i in range(0, size, 65536)]
    assert b"".join(f.data for f in frames) == data


@ROLES
def test_websockets_decodes_our_control_and_fragmented_frames(impl: ModuleType, client: bool) -> None:
    enc = impl.FrameEncoder(client=client)
    wire = (
        enc.encode(impl.OP_TEXT, "héllo".encode(), fin=False)
        + enc.ping(b"are you there")
        + enc.encode(impl.OP_CONT, b" world", fin=True)
        + enc.pong(b"")
        + enc.close(1001, "going away")
    )
    frames = websockets_parse(wire, mask=client)
    assert [(f.opcode, bytes(f.data), f.fin) for f in frames[:4]] == [
        (Opcode.TEXT, "héllo".encode(), False),
        (Opcode.PING, b"are you there", True),
        (Opcode.CONT, b" world", True),
        (Opcode.PONG, b"", True),
    ]
    close = Close.parse(frames[4].data)
    assert (close.code, close.reason) == (1001, "going away")


# --- websockets → ours ------------------------------------------------------------------------------------------


@ROLES
@pytest.mark.parametrize("size", [0, *SIZES])
def test_we_decode_websockets_frames(impl: ModuleType, client: bool, size: int) -> None:
    # ``client`` is our decoder's role; the peer (websockets) masks when it is the client, i.e. when we are not.
    data = os.urandom(size)
    half = size // 2
    wire = (
        Frame(Opcode.BINARY, data).serialize(mask=not client)
        + Frame(Opcode.TEXT, data[:half], fin=False).serialize(mask=not client)
        + Frame(Opcode.PING, b"ping").serialize(mask=not client)
        + Frame(Opcode.CONT, data[half:], fin=True).serialize(mask=not client)
        + Frame(Opcode.CLOSE, Close(4000, "done ✓").serialize()).serialize(mask=not client)
    )
    events = feed_in_pieces(impl.FrameDecoder(client=client), wire)
    binary = [p for op, p, _ in events if op == impl.OP_BINARY]
    text = [p for op, p, _ in events if op == impl.OP_TEXT]
    assert b"".join(binary) == data and b"".join(text) == data
    assert (impl.OP_PING, b"ping", True) in events
    assert events[-1][0] == impl.OP_CLOSE
    assert impl.parse_close(events[-1][1]) == (4000, "done ✓")
    assert [fin for op, _, fin in events if op < 8].count(True) == 2


# --- ours ⇄ wsproto ---------------------------------------------------------------------------------------------


@ROLES
@pytest.mark.parametrize("size", SIZES)
def test_wsproto_decodes_our_frames(impl: ModuleType, client: bool, size: int) -> None:
    data = os.urandom(size)
    enc = impl.FrameEncoder(client=client, frame_size=32768)
    # wsproto plays the other side: it receives what our client (or server) sends.
    peer = Connection(ConnectionType.SERVER if client else ConnectionType.CLIENT)
    events = wsproto_events(peer, enc.encode_data(data) + enc.ping(b"hi") + enc.close(1000, "bye"))
    messages = [e for e in events if isinstance(e, BytesMessage)]
    assert b"".join(bytes(m.data) for m in messages) == data
    assert sum(1 for m in messages if m.message_finished) == (size + 32767) // 32768
    assert any(isinstance(e, Ping) and e.payload == b"hi" for e in events)
    closes = [e for e in events if isinstance(e, CloseConnection)]
    assert len(closes) == 1 and (closes[0].code, closes[0].reason) == (1000, "bye")


@ROLES
@pytest.mark.parametrize("size", SIZES)
def test_we_decode_wsproto_frames(impl: ModuleType, client: bool, size: int) -> None:
    data = os.urandom(size)
    # Our decoder in client role reads what a wsproto server sends, and vice versa.
    peer = Connection(ConnectionType.SERVER if client else ConnectionType.CLIENT)
    wire = peer.send(BytesMessage(data=data, message_finished=False))
    wire += peer.send(Pong(payload=b"pong"))
    wire += peer.send(BytesMessage(data=b"tail", message_finished=True))
    wire += peer.send(TextMessage(data="τέλος"))
    wire += peer.send(CloseConnection(code=1012, reason="restart"))
    events = feed_in_pieces(impl.FrameDecoder(client=client), wire, piece=65537)
    assert b"".join(p for op, p, _ in events if op == impl.OP_BINARY) == data + b"tail"
    assert [fin for op, _, fin in events if op == impl.OP_BINARY][-1] is True
    assert (impl.OP_PONG, b"pong", True) in events
    assert (impl.OP_TEXT, "τέλος".encode(), True) in events
    assert impl.parse_close(events[-1][1]) == (1012, "restart")
