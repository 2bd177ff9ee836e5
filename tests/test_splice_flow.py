"""Flow control of the Splice: a slow reader on either side keeps the pump's memory bounded.

The bound (module docstring of ``bastion_fast._splice_py``): a transport's write buffer stops growing one read after
it passes ``high_water``, so after any write it holds at most ``high_water`` + one read's worth (plus frame headers
on the WebSocket leg). The tests record the buffer size after *every* write (``RecordingTransport``) while a peer
refuses to read, check that the pump really stopped reading the other leg (the data is held back, not buffered),
then let the reader go and verify every byte by sha256. Nothing here looks at the clock.
"""

from __future__ import annotations

import asyncio
from types import ModuleType

import pytest
from websockets.frames import Opcode

from tests.splice_harness import random_blob, read_exactly, run, sha, wait_until
from tests.test_splice import finished, splice_vs_peer

MiB = 1024 * 1024
HIGH, LOW, READ, FRAME = 256 * 1024, 64 * 1024, 64 * 1024, 16 * 1024
BOUND_STREAM = HIGH + READ
BOUND_WS = HIGH + READ + 14 * (READ // FRAME + 1) + 3 * 131  # + headers and a few control frames
DATA = 24 * MiB  # well beyond what the loopback kernel buffers can hide


@pytest.fixture(params=["asyncio", "uvloop"])
def loop_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


OPTS = {"high_water": HIGH, "low_water": LOW, "read_size": READ, "frame_size": FRAME}


@pytest.mark.parametrize("tls", [True, False], ids=["tls", "plain"])
def test_slow_application_pauses_websocket_reading(impl: ModuleType, loop_name: str, tls: bool) -> None:
    async def body() -> None:
        c = await splice_vs_peer(impl, tls=tls, record=True, **OPTS)
        assert c.ws_rec is not None and c.stream_rec is not None
        c.stream_rec.keep_writes = False
        data = random_blob(DATA, 21)
        for i in range(0, DATA, MiB):
            c.peer.send(data[i:i + MiB])
        # The application reads nothing: the splice must stop reading the WebSocket.
        await asyncio.wait_for(c.ws_rec.paused.wait(), 30)
        await asyncio.sleep(0.2)  # let anything that would still leak through arrive (not asserted on)
        assert c.splice.stream_write_buffered <= BOUND_STREAM
        assert c.splice.bytes_ws_to_stream < DATA // 2  # held back by the peer's socket, not buffered by us
        got = await read_exactly(c.reader, DATA)
        assert sha(got) == sha(data)
        assert c.stream_rec.max_buffered <= BOUND_STREAM
        assert c.stream_rec.max_buffered > HIGH  # the limit was actually reached: the test measured something
        assert c.ws_rec.resume_calls >= 1
        c.splice.close()
        await finished(c.splice)

    run(loop_name, body())


@pytest.mark.parametrize("tls", [True, False], ids=["tls", "plain"])
@pytest.mark.parametrize("client", [True, False], ids=["client-role", "server-role"])
def test_slow_websocket_peer_pauses_stream_reading(impl: ModuleType, loop_name: str, tls: bool,
                                                   client: bool) -> None:
    async def body() -> None:
        c = await splice_vs_peer(impl, client=client, tls=tls, record=True, **OPTS)
        assert c.ws_rec is not None and c.stream_rec is not None and c.peer.transport is not None
        c.peer.transport.pause_reading()
        data = random_blob(DATA, 22)
        c.writer.write(data)  # the application's own buffer holds what we refuse to read
        await asyncio.wait_for(c.stream_rec.paused.wait(), 30)
        await asyncio.sleep(0.2)
        assert c.splice.ws_write_buffered <= BOUND_WS
        assert c.splice.bytes_stream_to_ws < DATA // 2

        # Control frames still go out while data is paused: a ping gets its pong queued behind the data.
        writes_before = len(c.ws_rec.writes)
        c.peer.ws.send_ping(b"still there?")
        c.peer.flush()
        pong_first_byte = 0x8A
        await wait_until(lambda: any(w[1][0] == pong_first_byte for w in c.ws_rec.writes[writes_before:]))
        assert c.splice.bytes_stream_to_ws < DATA // 2  # still paused

        c.peer.transport.resume_reading()
        await c.peer.wait_for(lambda: len(c.peer.data()) >= DATA)
        assert sha(c.peer.data()) == sha(data)
        assert c.ws_rec.max_buffered <= BOUND_WS
        assert c.ws_rec.max_buffered > HIGH
        assert c.stream_rec.resume_calls >= 1
        kinds = [f.opcode for f in c.peer.frames]
        assert kinds.index(Opcode.PONG) < len(kinds) - 1  # the pong did not wait for the data to drain
        assert c.ws_rec.reused_buffers() == []
        c.writer.write_eof()
        await finished(c.splice)

    run(loop_name, body())
