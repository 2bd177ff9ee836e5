"""The WebSocket endpoint driven by the ``websockets`` library (and a raw TLS client for what it refuses to send)."""

from __future__ import annotations

import asyncio
import hashlib
import os
from typing import Any

import pytest
import websockets
from websockets.frames import Opcode

from bastion_fast.emulator import Emulator
from bastion_fast.emulator.targets import source_bytes, source_sha256
from tests import fixtures_emulator
from tests.emulator_client import RawWebSocket, delete_token, get_tokens, http, open_tunnel, ws_url

emulator = fixtures_emulator.emulator
emulator_factory = fixtures_emulator.emulator_factory
emulator_state_dir = fixtures_emulator.emulator_state_dir


async def refused_status(emu: Emulator, url: str) -> int:
    with pytest.raises(websockets.InvalidStatus) as info:
        async with websockets.connect(url, ssl=emu.client_ssl_context(), compression=None):
            pass
    return int(info.value.response.status_code)


async def test_echo_both_directions_with_standard_101(emulator: Emulator) -> None:
    tokens = await get_tokens(emulator)
    payload = os.urandom(1 << 20)
    async with open_tunnel(emulator, tokens, compression="deflate", subprotocols=["x-bastion"]) as ws:
        assert ws.response.status_code == 101
        headers = ws.response.headers
        assert headers["Upgrade"].lower() == "websocket" and headers["Connection"].lower() == "upgrade"
        assert "Sec-WebSocket-Extensions" not in headers  # no permessage-deflate, even when offered
        assert "Sec-WebSocket-Protocol" not in headers
        assert ws.subprotocol is None

        async def sender() -> None:
            for i in range(0, len(payload), 4096):  # az CLI style: one 4 KiB frame per read
                await ws.send(payload[i:i + 4096])

        task = asyncio.ensure_future(sender())
        received = bytearray()
        while len(received) < len(payload):
            message = await ws.recv()
            assert isinstance(message, bytes)  # binary frames only
            received += message
        await task
    assert hashlib.sha256(received).digest() == hashlib.sha256(payload).digest()
    assert await delete_token(emulator, tokens) == 204
    await emulator.wait_idle()
    session = emulator.ledger.by_auth_token(tokens.auth) or emulator.ledger.sessions()[0]
    assert session.bytes_to_target == len(payload) == session.bytes_to_client
    assert session.close_code == 1000 and session.state == "deleted"


async def test_sink_counts_and_hashes_what_it_receives(emulator_factory: Any) -> None:
    async with emulator_factory(default_target="sink") as emu:
        tokens = await get_tokens(emu)
        data = os.urandom(300_000)
        async with open_tunnel(emu, tokens) as ws:
            for i in range(0, len(data), 65536):
                await ws.send(data[i:i + 65536])
        await emu.wait_idle()
        session = emu.ledger.sessions()[0]
        assert session.sink == {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        async with http(emu) as s, s.get(f"https://{emu.dns_name}/_emulator/sessions") as r:
            snapshot = await r.json()
        assert snapshot["sessions"][0]["sink"]["sha256"] == hashlib.sha256(data).hexdigest()
        assert snapshot["leaked"] == [session.id]  # not deleted yet
        assert await delete_token(emu, tokens) == 204


async def test_source_sends_n_deterministic_bytes_in_server_sized_frames(emulator_factory: Any) -> None:
    n = 200_003
    async with emulator_factory(default_target=f"source:{n}", knobs={"server_frame_size": 4096}) as emu:
        tokens = await get_tokens(emu)
        received = bytearray()
        largest = 0
        async with open_tunnel(emu, tokens) as ws:
            with pytest.raises(websockets.ConnectionClosedOK):
                while True:
                    message = await ws.recv()
                    largest = max(largest, len(message))
                    received += message
            assert ws.close_code == 1000  # the target closed: the server ends the session
        assert len(received) == n
        assert bytes(received) == source_bytes(n)
        assert hashlib.sha256(received).hexdigest() == source_sha256(n)
        assert largest == 4096  # each server frame is a complete message of at most server_frame_size


async def test_websocket_token_is_single_use(emulator: Emulator) -> None:
    tokens = await get_tokens(emulator)
    async with open_tunnel(emulator, tokens) as ws:
        await ws.send(b"a")
        await ws.recv()
        assert await refused_status(emulator, ws_url(emulator, tokens)) == 404  # while live
    assert await refused_status(emulator, ws_url(emulator, tokens)) == 404  # and after


async def test_websocket_token_expires(emulator_factory: Any) -> None:
    async with emulator_factory(knobs={"token_ttl": 0.05}) as emu:
        tokens = await get_tokens(emu)
        await asyncio.sleep(0.1)
        assert await refused_status(emu, ws_url(emu, tokens)) == 404
        assert emu.ledger.snapshot()["sessions"][0]["websocket_token_expired"] is True


async def test_wrong_or_missing_node_id_is_404(emulator: Emulator) -> None:
    tokens = await get_tokens(emulator)
    other = "10.0.0.5" if tokens.node == "10.0.0.4" else "10.0.0.4"
    assert await refused_status(emulator, ws_url(emulator, tokens, node=other)) == 404
    url = f"wss://{emulator.dns_name}/webtunnelv2/{tokens.ws}"
    assert await refused_status(emulator, url) == 404
    # neither attempt spent the token
    async with open_tunnel(emulator, tokens) as ws:
        await ws.send(b"ok")
        assert await ws.recv() == b"ok"


async def test_auth_token_in_path_is_404(emulator: Emulator) -> None:
    tokens = await get_tokens(emulator)
    url = f"wss://{emulator.dns_name}/webtunnelv2/{tokens.auth}?X-Node-Id={tokens.node}"
    assert await refused_status(emulator, url) == 404


async def test_deleted_session_cannot_connect(emulator: Emulator) -> None:
    tokens = await get_tokens(emulator)
    assert await delete_token(emulator, tokens) == 204
    assert await refused_status(emulator, ws_url(emulator, tokens)) == 404


async def test_omni_path_only_for_developer(emulator: Emulator) -> None:
    tokens = await get_tokens(emulator)
    assert await refused_status(emulator, ws_url(emulator, tokens, omni=True)) == 404


async def test_not_an_upgrade_is_refused_without_spending_the_token(emulator: Emulator) -> None:
    tokens = await get_tokens(emulator)
    async with http(emulator) as session, session.get(ws_url(emulator, tokens).replace("wss://", "https://")) as r:
        assert r.status in (400, 426)
    async with open_tunnel(emulator, tokens) as ws:
        await ws.send(b"still valid")
        assert await ws.recv() == b"still valid"


async def test_101_without_upgrade_headers_knob(emulator_factory: Any) -> None:
    async with emulator_factory(knobs={"omit_upgrade_headers": True}) as emu:
        tokens = await get_tokens(emu)
        with pytest.raises(websockets.InvalidHandshake):  # a strict client refuses it
            async with open_tunnel(emu, tokens):
                pass
        # the raw bytes: a 101 with Sec-WebSocket-Accept but no Upgrade/Connection
        tokens = await get_tokens(emu)
        reader, writer = await asyncio.open_connection("127.0.0.1", emu.bastion().port,
                                                       ssl=emu.client_ssl_context())
        writer.write((f"GET /webtunnelv2/{tokens.ws}?X-Node-Id={tokens.node} HTTP/1.1\r\nHost: {emu.dns_name}\r\n"
                      "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                      "Sec-WebSocket-Version: 13\r\n\r\n").encode())
        head = (await reader.readuntil(b"\r\n\r\n")).decode().lower()
        writer.close()
        assert head.startswith("http/1.1 101")
        assert "sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo=" in head
        assert "\nupgrade:" not in head and "\nconnection:" not in head


async def test_client_frame_above_limit_is_closed_1009(emulator_factory: Any) -> None:
    async with emulator_factory(knobs={"max_client_frame": 1000}) as emu:
        tokens = await get_tokens(emu)
        async with open_tunnel(emu, tokens) as ws:
            await ws.send(b"x" * 1000)
            assert await ws.recv() == b"x" * 1000
            await ws.send(b"y" * 1001)
            with pytest.raises(websockets.ConnectionClosedError):
                await ws.recv()
            assert ws.close_code == 1009


async def test_continuation_frames_rejected_when_asked(emulator_factory: Any) -> None:
    async with emulator_factory(knobs={"reject_continuation": True}) as emu:
        tokens = await get_tokens(emu)
        async with open_tunnel(emu, tokens) as ws:
            await ws.send([b"part1", b"part2"])  # a fragmented message
            with pytest.raises(websockets.ConnectionClosedError):
                await ws.recv()
            assert ws.close_code == 1002


async def test_continuation_frames_accepted_by_default(emulator: Emulator) -> None:
    tokens = await get_tokens(emulator)
    async with open_tunnel(emulator, tokens) as ws:
        await ws.send([b"part1", b"part2"])
        received = b""
        while len(received) < 10:
            received += await ws.recv()
        assert received == b"part1part2"


async def test_unmasked_client_frames(emulator_factory: Any) -> None:
    async with emulator_factory() as emu:  # default: rejected with 1002
        tokens = await get_tokens(emu)
        raw = await RawWebSocket.connect(emu, ws_url(emu, tokens))
        await raw.send_frame(Opcode.BINARY, b"unmasked", mask=False)
        frame = await raw.next_frame()
        assert frame is not None and frame.opcode is Opcode.CLOSE
        assert int.from_bytes(frame.data[:2], "big") == 1002
        raw.close()
    async with emulator_factory(knobs={"require_mask": False}) as emu:
        tokens = await get_tokens(emu)
        raw = await RawWebSocket.connect(emu, ws_url(emu, tokens))
        await raw.send_frame(Opcode.BINARY, b"unmasked", mask=False)
        frame = await raw.next_frame()
        assert frame is not None and (frame.opcode, frame.data) == (Opcode.BINARY, b"unmasked")
        raw.close()


async def test_server_pings_when_asked(emulator_factory: Any) -> None:
    async with emulator_factory(knobs={"server_ping_interval": 0.05}) as emu:
        tokens = await get_tokens(emu)
        raw = await RawWebSocket.connect(emu, ws_url(emu, tokens))
        frame = await raw.next_frame()
        assert frame is not None and frame.opcode is Opcode.PING
        raw.close()


async def test_no_pings_by_default(emulator: Emulator) -> None:
    tokens = await get_tokens(emulator)
    raw = await RawWebSocket.connect(emulator, ws_url(emulator, tokens))
    await raw.send_frame(Opcode.BINARY, b"echo me")
    frame = await raw.next_frame()
    assert frame is not None and frame.opcode is Opcode.BINARY  # data first, nothing unsolicited
    raw.close()


async def test_idle_timeout_closes_1001(emulator_factory: Any) -> None:
    async with emulator_factory(knobs={"idle_timeout": 0.2}) as emu:
        tokens = await get_tokens(emu)
        async with open_tunnel(emu, tokens) as ws:
            await ws.send(b"activity")
            assert await ws.recv() == b"activity"
            with pytest.raises(websockets.ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 10)
            assert ws.close_code == 1001
        await emu.wait_idle()
        assert emu.ledger.sessions()[0].ended_by == "idle_timeout"


async def test_many_concurrent_sessions(emulator: Emulator) -> None:
    async def one(i: int) -> bytes:
        tokens = await get_tokens(emulator)
        data = os.urandom(50_000 + i)
        async with open_tunnel(emulator, tokens) as ws:
            await ws.send(data)
            got = b""
            while len(got) < len(data):
                got += await ws.recv()
        assert await delete_token(emulator, tokens) == 204
        return got == data  # type: ignore[return-value]

    assert all(await asyncio.gather(*(one(i) for i in range(12))))
    await emulator.wait_idle()
    assert emulator.ledger.leaked() == [] and len(emulator.ledger.sessions()) == 12


async def test_target_unreachable_is_502_and_counts_as_refused(emulator_factory: Any) -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    async with emulator_factory(default_target=f"127.0.0.1:{port}") as emu:
        tokens = await get_tokens(emu)
        assert await refused_status(emu, ws_url(emu, tokens)) == 502
        session = emu.ledger.sessions()[0]
        assert session.handshake_refused == "target unreachable" and session.leaked
        assert await delete_token(emu, tokens) == 204
        assert emu.ledger.leaked() == []


async def test_stop_closes_live_sessions_with_1001(emulator_factory: Any) -> None:
    async with emulator_factory() as emu:
        tokens = await get_tokens(emu)
        ws = await open_tunnel(emu, tokens)
        await ws.send(b"hi")
        await ws.recv()
    with pytest.raises(websockets.ConnectionClosedOK):
        await asyncio.wait_for(ws.recv(), 5)
    assert ws.close_code == 1001
    assert emu.ledger.sessions()[0].ended_by == "shutdown"


async def test_frames_sent_with_the_upgrade_request_are_not_lost(emulator: Emulator) -> None:
    """Bytes that arrive in the same read as the handshake (pipelined) must reach the pump."""
    from websockets.frames import Frame

    tokens = await get_tokens(emulator)
    reader, writer = await asyncio.open_connection("127.0.0.1", emulator.bastion().port,
                                                   ssl=emulator.client_ssl_context())
    request = (f"GET /webtunnelv2/{tokens.ws}?X-Node-Id={tokens.node} HTTP/1.1\r\nHost: {emulator.dns_name}\r\n"
               "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
               "Sec-WebSocket-Version: 13\r\n\r\n").encode()
    frame = Frame(Opcode.BINARY, b"early bird").serialize(mask=True, extensions=[])
    writer.write(request + frame)
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101")
    echoed = await asyncio.wait_for(reader.readexactly(2 + len(b"early bird")), 5)
    assert echoed == b"\x82\x0aearly bird"  # unmasked binary frame, FIN set
    writer.close()


async def test_plain_http_mode_when_asked(emulator_factory: Any) -> None:
    async with emulator_factory(insecure_http=True) as emu:
        assert emu.info["ca_file"] is None and emu.info["arm_endpoint"].startswith("http://")
        import aiohttp

        async with aiohttp.ClientSession() as session:
            form = {"resourceId": "/subscriptions/s/resourceGroups/r/providers/Microsoft.Compute/virtualMachines/v",
                    "protocol": "tcptunnel", "workloadHostPort": "22", "aztoken": emu.token}
            async with session.post(f"http://{emu.dns_name}/api/tokens", data=form) as r:
                tokens = await r.json()
        url = f"ws://{emu.dns_name}/webtunnelv2/{tokens['websocketToken']}?X-Node-Id={tokens['nodeId']}"
        async with websockets.connect(url, compression=None) as ws:
            await ws.send(b"plain")
            assert await ws.recv() == b"plain"


async def test_bridge_on_both_pump_implementations(emulator_state_dir: Any, impl: Any) -> None:
    """The emulator's data path is the project's Splice in server role: run a session on each implementation."""
    config = fixtures_emulator.make_config(emulator_state_dir, default_target="sink",
                                           knobs={"max_client_frame": 4096})
    async with Emulator(config, pump=impl) as emu:
        assert emu.pump is impl
        tokens = await get_tokens(emu)
        data = os.urandom(200_000)
        async with open_tunnel(emu, tokens) as ws:
            for i in range(0, len(data), 4096):
                await ws.send(data[i:i + 4096])
        second = await get_tokens(emu)
        async with open_tunnel(emu, second) as ws:
            await ws.send(b"z" * 4097)
            with pytest.raises(websockets.ConnectionClosedError):
                await ws.recv()
            assert ws.close_code == 1009
        for t in (tokens, second):
            assert await delete_token(emu, t) == 204
        await emu.wait_idle()
        first = emu.ledger.sessions()[0]
        assert first.sink == {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        assert first.close_code == 1000 and emu.ledger.leaked() == []
