"""Every WebSocket fault flag, observed from an independent client; leak detection in the ledger."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import pytest
import websockets

from bastion_fast.emulator import Emulator
from tests import fixtures_emulator
from tests.emulator_client import delete_token, get_tokens, http, open_tunnel

emulator = fixtures_emulator.emulator
emulator_factory = fixtures_emulator.emulator_factory
emulator_state_dir = fixtures_emulator.emulator_state_dir


async def test_drop_after_bytes_cuts_without_close_frame(emulator_factory: Any) -> None:
    async with emulator_factory(faults={"drop_after_bytes": 10_000}) as emu:
        tokens = await get_tokens(emu)
        received = 0
        async with open_tunnel(emu, tokens) as ws:
            with pytest.raises(websockets.ConnectionClosedError):
                for _ in range(10):
                    await ws.send(os.urandom(4096))
                while True:
                    received += len(await ws.recv())
            assert ws.close_code == 1006 and ws.protocol.close_rcvd is None  # dropped, no close frame
        await emu.wait_idle()
        session = emu.ledger.sessions()[0]
        assert session.bytes_to_target + session.bytes_to_client == 10_000
        assert received == session.bytes_to_client
        assert session.close_code_sent is None


async def test_drop_after_seconds(emulator_factory: Any) -> None:
    async with emulator_factory(faults={"drop_after_seconds": 0.1}) as emu:
        tokens = await get_tokens(emu)
        async with open_tunnel(emu, tokens) as ws:
            await ws.send(b"before")
            assert await ws.recv() == b"before"
            with pytest.raises(websockets.ConnectionClosedError):
                await asyncio.wait_for(ws.recv(), 10)
            assert ws.protocol.close_rcvd is None
        await emu.wait_idle()
        assert emu.ledger.sessions()[0].ended_by == "fault:drop_after_seconds"


@pytest.mark.parametrize("code", [1000, 1001, 1008, 1011, 1012])
async def test_close_with_code(emulator_factory: Any, code: int) -> None:
    async with emulator_factory(faults={"close_code": code, "close_after_seconds": 0.05,
                                        "close_reason": "injected"}) as emu:
        tokens = await get_tokens(emu)
        async with open_tunnel(emu, tokens) as ws:
            with pytest.raises(websockets.ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 10)
            assert ws.protocol.close_rcvd is not None
            assert (ws.protocol.close_rcvd.code, ws.protocol.close_rcvd.reason) == (code, "injected")
        await emu.wait_idle()
        session = emu.ledger.sessions()[0]
        assert session.close_code_sent == code and session.ended_by == "fault:close_code"


@pytest.mark.parametrize("status", [404, 503])
async def test_handshake_fault(emulator: Emulator, status: int) -> None:
    emulator.faults.update({"handshake_status": status, "handshake_fault_count": 1})
    tokens = await get_tokens(emulator)
    with pytest.raises(websockets.InvalidStatus) as info:
        async with open_tunnel(emulator, tokens):
            pass
    assert info.value.response.status_code == status
    async with open_tunnel(emulator, tokens) as ws:  # count was 1: the token still works
        await ws.send(b"ok")
        assert await ws.recv() == b"ok"


async def test_faults_apply_to_websockets_opened_after_the_change(emulator: Emulator) -> None:
    first = await get_tokens(emulator)
    async with open_tunnel(emulator, first) as ws_before:
        emulator.faults.update({"drop_after_bytes": 3})
        second = await get_tokens(emulator)
        async with open_tunnel(emulator, second) as ws_after:
            await ws_after.send(b"12345")
            with pytest.raises(websockets.ConnectionClosedError):
                while True:
                    await ws_after.recv()
        await ws_before.send(b"12345")
        assert await ws_before.recv() == b"12345"


async def test_maintenance_closes_everything_with_1012(emulator: Emulator) -> None:
    sockets = []
    for _ in range(3):
        tokens = await get_tokens(emulator)
        ws = await open_tunnel(emulator, tokens)
        await ws.send(b"x")
        await ws.recv()
        sockets.append(ws)
    async with http(emulator) as session, session.post(f"https://{emulator.dns_name}/_emulator/maintenance") as r:
        assert r.status == 200 and (await r.json())["closed"] == 3
    for ws in sockets:
        with pytest.raises(websockets.ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 10)
        assert ws.close_code == 1012
    await emulator.wait_idle()
    assert {s.ended_by for s in emulator.ledger.sessions()} == {"maintenance"}


async def test_maintenance_drop_mode(emulator: Emulator) -> None:
    tokens = await get_tokens(emulator)
    async with open_tunnel(emulator, tokens) as ws:
        await ws.send(b"x")
        await ws.recv()
        assert emulator.maintenance(code=None) == 1
        with pytest.raises(websockets.ConnectionClosedError):
            await asyncio.wait_for(ws.recv(), 10)
        assert ws.protocol.close_rcvd is None


# -- the ledger's leak detection -------------------------------------------------------------------------------------


async def test_ledger_tells_leaked_from_clean_and_unused(emulator: Emulator) -> None:
    clean = await get_tokens(emulator)
    leaky = await get_tokens(emulator)
    unused = await get_tokens(emulator)
    for tokens in (clean, leaky):
        async with open_tunnel(emulator, tokens) as ws:
            await ws.send(b"data")
            assert await ws.recv() == b"data"
    assert await delete_token(emulator, clean) == 204
    await emulator.wait_idle()
    ledger = emulator.ledger
    assert [s.id for s in ledger.leaked()] == [ledger.by_auth_token(leaky.auth).id]  # type: ignore[union-attr]
    assert [s.id for s in ledger.unused()] == [ledger.by_auth_token(unused.auth).id]  # type: ignore[union-attr]
    snapshot = ledger.snapshot()
    assert snapshot["counts"] == {"issued": 1, "live": 0, "ended": 1, "deleted": 1}
    by_state = {s["state"]: s for s in snapshot["sessions"]}
    assert by_state["ended"]["leaked"] is True and by_state["ended"]["bytes_to_target"] == 4
    assert by_state["deleted"]["deleted_by"] == "client"
    for session in snapshot["sessions"]:  # tokens never appear, only a digest
        assert clean.auth not in str(session) and leaky.ws not in str(session)
    assert await delete_token(emulator, leaky) == 204
    assert await delete_token(emulator, unused) == 204
    assert ledger.leaked() == [] and ledger.unused() == []


async def test_live_session_is_not_a_leak_and_wait_idle_waits_for_it(emulator: Emulator) -> None:
    tokens = await get_tokens(emulator)
    ws = await open_tunnel(emulator, tokens)
    await ws.send(b"x")
    await ws.recv()
    assert [s.state for s in emulator.ledger.sessions()] == ["live"]
    assert emulator.ledger.leaked() == []
    with pytest.raises(TimeoutError):
        await emulator.wait_idle(timeout=0.2)
    await ws.close()
    await emulator.wait_idle()
    assert [s.state for s in emulator.ledger.sessions()] == ["ended"]
    assert emulator.ledger.sessions()[0].close_code == 1000


async def test_refused_handshake_without_delete_is_a_leak(emulator: Emulator) -> None:
    emulator.faults.update({"handshake_status": 503})
    tokens = await get_tokens(emulator)
    with pytest.raises(websockets.InvalidStatus):
        async with open_tunnel(emulator, tokens):
            pass
    # The client must DELETE after a failed connect (PROTOCOL §10.2); until it does, the session is a leak.
    assert [s.handshake_refused for s in emulator.ledger.leaked()] == ["fault: handshake 503"]
    assert await delete_token(emulator, tokens) == 204
    assert emulator.ledger.leaked() == []


async def test_retry_after_handshake_fault_is_live_not_leaked(emulator: Emulator) -> None:
    emulator.faults.update({"handshake_status": 503, "handshake_fault_count": 1})
    tokens = await get_tokens(emulator)
    with pytest.raises(websockets.InvalidStatus):
        async with open_tunnel(emulator, tokens):
            pass
    async with open_tunnel(emulator, tokens) as ws:
        await ws.send(b"x")
        await ws.recv()
        assert emulator.ledger.leaked() == []
        assert [s.state for s in emulator.ledger.sessions()] == ["live"]
    assert await delete_token(emulator, tokens) == 204
