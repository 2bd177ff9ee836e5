"""End to end through the built-in emulator: sign-in (static), ARM discovery, ``/api/tokens``, WebSocket over TLS,
the pump, the emulator's built-in targets — on both data-path implementations.

Every test ends by checking the emulator's ledger: every Bastion session the tunnel created was deleted, none
leaked, whatever happened to the connection (normal close, drop mid-stream, refused handshake, unreachable target,
abnormal close code, maintenance).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import random
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from bastion_fast import open_tunnel
from bastion_fast.emulator import Emulator
from bastion_fast.emulator.targets import source_sha256
from bastion_fast.tunnel.api import Tunnel
from tests import fixtures_emulator
from tests._tunnel_helpers import WAIT, on_each_loop
from tests.fixtures_emulator import make_config

emulator_state_dir = fixtures_emulator.emulator_state_dir

SUB = "00000000-0000-0000-0000-000000000000"
VM = f"/subscriptions/{SUB}/resourceGroups/rg-vm/providers/Microsoft.Compute/virtualMachines/"


@pytest.fixture
def emulator(emulator_state_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Any]:
    """``async with emulator(**config) as emu`` (tests/fixtures_emulator.make_config); sets BASTION_FAST_TOKEN."""

    @contextlib.asynccontextmanager
    async def start(**kw: Any) -> AsyncIterator[Emulator]:
        async with Emulator(make_config(emulator_state_dir, **kw)) as emu:
            monkeypatch.setenv("BASTION_FAST_TOKEN", emu.token)
            yield emu

    return start


def tunnel(emu: Emulator, impl: ModuleType, vm: str = "echo-vm", **kw: Any) -> Tunnel:
    info = emu.info
    return open_tunnel(name=info["bastion"], resource_group=info["resource_group"], target_resource_id=VM + vm,
                       resource_port=22, subscription=info["subscription"], auth="static",
                       arm_endpoint=info["arm_endpoint"], ca_bundle=info["ca_file"], proxy=False,
                       implementation=impl.IMPLEMENTATION, **kw)


async def assert_no_leaks(emu: Emulator, sessions: int | None = None) -> None:
    """Every session the emulator issued ends deleted; none leaked, none left unused."""
    ledger = emu.ledger
    await ledger.wait_for(lambda: all(s.state == "deleted" for s in ledger.sessions()), WAIT)
    assert ledger.leaked() == [] and ledger.unused() == [] and ledger.live() == []
    if sessions is not None:
        assert len(ledger.sessions()) == sessions


async def wait_results(t: Tunnel, n: int) -> None:
    async with asyncio.timeout(WAIT):
        while len(t.results) < n:
            await asyncio.sleep(0.01)


def blob(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


def random_chunks(data: bytes, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    out, pos = [], 0
    while pos < len(data):
        n = rng.choice((1, 13, 1500, 4096, 65536, rng.randint(1, 300_000)))
        out.append(data[pos:pos + n])
        pos += n
    return out


# ------------------------------------------------------------------------------------------------ data integrity


@on_each_loop
async def test_upload_to_sink_sha256(impl: ModuleType, emulator: Callable[..., Any]) -> None:
    data = blob(24 * 1024 * 1024 + 17, seed=1)
    async with emulator(targets={VM + "sink-vm": "sink"}) as emu, tunnel(emu, impl, "sink-vm") as t:
        reader, writer = await asyncio.open_connection("127.0.0.1", t.port)
        for chunk in random_chunks(data, seed=2):
            writer.write(chunk)
            if writer.transport.get_write_buffer_size() > 1 << 20:
                await writer.drain()
        await writer.drain()
        writer.write_eof()
        assert await asyncio.wait_for(reader.read(), WAIT) == b""  # Close 1000 → the app sees EOF
        writer.close()
        await wait_results(t, 1)
        await emu.ledger.wait_for(lambda: emu.ledger.sessions()[0].sink is not None, WAIT)
        sink = emu.ledger.sessions()[0].sink
        assert sink == {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        assert t.results[0].ok and t.results[0].bytes_up == len(data)
    await assert_no_leaks(emu, 1)


@on_each_loop
async def test_download_with_slow_reader_stays_bounded(impl: ModuleType, emulator: Callable[..., Any]) -> None:
    size = 48 * 1024 * 1024
    async with emulator(targets={VM + "src-vm": f"source:{size}"}) as emu, \
            tunnel(emu, impl, "src-vm") as t:
        reader, writer = await asyncio.open_connection("127.0.0.1", t.port, limit=64 * 1024)
        assert t.listener is not None
        await asyncio.wait_for(_until(lambda: any(s.splice for s in t.listener.sessions.values())), WAIT)
        session = next(iter(t.listener.sessions.values()))
        splice = session.splice
        peak = 0
        stop = asyncio.Event()

        async def sample() -> None:
            nonlocal peak
            while not stop.is_set():
                peak = max(peak, splice.stream_write_buffered)
                await asyncio.sleep(0.002)

        sampler = asyncio.create_task(sample())
        # A reader that stalls, then trickles, then drains: the source is far faster than the reader.
        await asyncio.sleep(0.5)
        stalled_at = splice.bytes_ws_to_stream
        digest = hashlib.sha256()
        got = 0
        rng = random.Random(3)
        while True:
            chunk = await reader.read(rng.choice((1, 100, 4096, 65536)))
            if not chunk:
                break
            digest.update(chunk)
            got += len(chunk)
            if got < 4 * 1024 * 1024:
                await asyncio.sleep(0)  # slow phase: one small read per loop turn
        stop.set()
        await sampler
        writer.close()
        assert got == size and digest.hexdigest() == source_sha256(size)
        # While the reader stalled, the tunnel stopped reading from Bastion instead of buffering 48 MiB ...
        assert stalled_at < size / 2
        # ... and its buffer for the local app never exceeded high water + one read (+ a frame of slack).
        assert peak <= splice.high_water + splice.read_size + 64 * 1024
        await wait_results(t, 1)
        assert t.results[0].ok and t.results[0].bytes_down == size
    await assert_no_leaks(emu, 1)


async def _until(predicate: Any) -> None:
    while not predicate():
        await asyncio.sleep(0.005)


@on_each_loop
async def test_echo_both_directions_at_once(impl: ModuleType, emulator: Callable[..., Any]) -> None:
    data = blob(12 * 1024 * 1024, seed=4)
    async with emulator() as emu, tunnel(emu, impl, frame_size=4096) as t:
        reader, writer = await asyncio.open_connection("127.0.0.1", t.port)

        async def send() -> None:
            for chunk in random_chunks(data, seed=5):
                writer.write(chunk)
                await writer.drain()

        async def receive() -> bytes:
            digest = hashlib.sha256()
            got = 0
            while got < len(data):
                chunk = await reader.read(random.choice((7, 4096, 1 << 20)))
                assert chunk, "EOF before all echoed bytes arrived"
                digest.update(chunk)
                got += len(chunk)
            return digest.digest()

        _, echoed = await asyncio.wait_for(asyncio.gather(send(), receive()), 6 * WAIT)
        assert echoed == hashlib.sha256(data).digest()
        writer.close()
        await wait_results(t, 1)
        assert t.results[0].ok and t.results[0].bytes_up == t.results[0].bytes_down == len(data)
    await assert_no_leaks(emu, 1)


@on_each_loop
async def test_two_hundred_concurrent_connections(impl: ModuleType, emulator: Callable[..., Any]) -> None:
    async def one(port: int, i: int) -> bool:
        payload = hashlib.sha256(b"%d" % i).digest() * (1 + i % 40)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(payload)
        echoed = await reader.readexactly(len(payload))
        writer.close()
        return echoed == payload

    async with emulator() as emu, tunnel(emu, impl) as t:
        assert all(await asyncio.wait_for(asyncio.gather(*(one(t.port, i) for i in range(200))), 6 * WAIT))
        await wait_results(t, 200)
        assert all(r.ok for r in t.results)
        # Bastion saw 200 sessions spread over its nodes, each deleted with its own node id.
        assert len({s.node_id for s in emu.ledger.sessions()}) > 1
    await assert_no_leaks(emu, 200)


# ------------------------------------------------------------------------------------------------ failures


@on_each_loop
async def test_websocket_drop_mid_stream(impl: ModuleType, emulator: Callable[..., Any]) -> None:
    size = 8 * 1024 * 1024
    async with emulator(targets={VM + "src-vm": f"source:{size}"}) as emu, \
            tunnel(emu, impl, "src-vm") as t:
        emu.faults.update({"drop_after_bytes": 1024 * 1024})
        reader, writer = await asyncio.open_connection("127.0.0.1", t.port)
        got = len(await asyncio.wait_for(reader.read(), WAIT))  # EOF, not a hang (az hangs: cli#28367)
        writer.close()
        assert got < size
        await wait_results(t, 1)
        result = t.results[0]
        assert not result.ok and result.close_code == 1006 and "dropped" in (result.error or "")
        # The listener carries on.
        emu.faults.reset()
        reader, writer = await asyncio.open_connection("127.0.0.1", t.port)
        assert len(await asyncio.wait_for(reader.read(), WAIT)) == size
        writer.close()
        await wait_results(t, 2)
    await assert_no_leaks(emu, 2)


@pytest.mark.parametrize("status", [404, 503])
@on_each_loop
async def test_refused_handshake_deletes_the_token(impl: ModuleType, emulator: Callable[..., Any],
                                                   status: int) -> None:
    async with emulator() as emu, tunnel(emu, impl) as t:
        emu.faults.update({"handshake_status": status, "handshake_fault_count": 1})
        reader, writer = await asyncio.open_connection("127.0.0.1", t.port)
        writer.write(b"lost")
        assert await asyncio.wait_for(reader.read(), WAIT) == b""
        writer.close()
        await wait_results(t, 1)
        assert not t.results[0].ok and t.results[0].phase == "connect"
        assert f"HTTP {status}" in (t.results[0].error or "")
        reader, writer = await asyncio.open_connection("127.0.0.1", t.port)
        writer.write(b"next one works")
        assert await reader.readexactly(14) == b"next one works"
        writer.close()
        await wait_results(t, 2)
    await assert_no_leaks(emu, 2)


@on_each_loop
async def test_unreachable_target(impl: ModuleType, emulator: Callable[..., Any]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    async with emulator(targets={VM + "down-vm": f"127.0.0.1:{closed_port}"}) as emu, \
            tunnel(emu, impl, "down-vm") as t:
        reader, writer = await asyncio.open_connection("127.0.0.1", t.port)
        assert await asyncio.wait_for(reader.read(), WAIT) == b""
        writer.close()
        await wait_results(t, 1)
        assert not t.results[0].ok and "HTTP 502" in (t.results[0].error or "")
    await assert_no_leaks(emu, 1)


@pytest.mark.parametrize("code", [1001, 1011])
@on_each_loop
async def test_abnormal_close_code_is_a_failure(impl: ModuleType, emulator: Callable[..., Any],
                                                code: int) -> None:
    async with emulator() as emu, tunnel(emu, impl) as t:
        emu.faults.update({"close_code": code, "close_after_seconds": 0.05, "close_reason": "test"})
        reader, writer = await asyncio.open_connection("127.0.0.1", t.port)
        assert await asyncio.wait_for(reader.read(), WAIT) == b""
        writer.close()
        await wait_results(t, 1)
        result = t.results[0]
        assert not result.ok and result.close_code == code
        assert f"code {code} (test)" in (result.error or "") and result.hint
    await assert_no_leaks(emu, 1)


@on_each_loop
async def test_token_endpoint_failure_creates_no_session(impl: ModuleType, emulator: Callable[..., Any]) -> None:
    async with emulator() as emu, tunnel(emu, impl, max_failures=2) as t:
        emu.faults.update({"token_status": 403})
        waiter = asyncio.create_task(t.wait())
        for _ in range(2):
            reader, writer = await asyncio.open_connection("127.0.0.1", t.port)
            assert await asyncio.wait_for(reader.read(), WAIT) == b""
            writer.close()
        from bastion_fast.exceptions import TunnelError

        with pytest.raises(TunnelError, match="2 connections in a row failed"):
            await asyncio.wait_for(waiter, WAIT)
        assert all(r.phase == "grant" for r in t.results)
    await assert_no_leaks(emu, 0)


@on_each_loop
async def test_maintenance_closes_live_connections_cleanly(impl: ModuleType,
                                                           emulator: Callable[..., Any]) -> None:
    async with emulator() as emu, tunnel(emu, impl) as t:
        conns = [await asyncio.open_connection("127.0.0.1", t.port) for _ in range(5)]
        for reader, writer in conns:
            writer.write(b"x")
            assert await reader.readexactly(1) == b"x"
        assert emu.maintenance(1012) == 5
        for reader, writer in conns:
            assert await asyncio.wait_for(reader.read(), WAIT) == b""
            writer.close()
        await wait_results(t, 5)
        assert {r.close_code for r in t.results} == {1012}
    await assert_no_leaks(emu, 5)


@on_each_loop
async def test_frame_size_limits_of_the_service(impl: ModuleType, emulator: Callable[..., Any]) -> None:
    # A service that accepts at most 16 KiB frames: 32 KiB frames get 1009, az's 4 KiB frames pass.
    async with emulator(knobs={"max_client_frame": 16384}) as emu:
        async with tunnel(emu, impl, frame_size=32768) as t:
            reader, writer = await asyncio.open_connection("127.0.0.1", t.port)
            writer.write(b"z" * 100_000)
            await asyncio.wait_for(reader.read(), WAIT)
            writer.close()
            await wait_results(t, 1)
            assert not t.results[0].ok and t.results[0].close_code == 1009
        async with tunnel(emu, impl, frame_size=4096) as t:
            reader, writer = await asyncio.open_connection("127.0.0.1", t.port)
            writer.write(b"z" * 100_000)
            assert await reader.readexactly(100_000) == b"z" * 100_000
            writer.close()
            await wait_results(t, 1)
            assert t.results[0].ok
    await assert_no_leaks(emu, 2)


@on_each_loop
async def test_closing_the_tunnel_with_live_connections(impl: ModuleType, emulator: Callable[..., Any]) -> None:
    async with emulator() as emu:
        async with tunnel(emu, impl) as t:
            conns = [await asyncio.open_connection("127.0.0.1", t.port) for _ in range(20)]
            for reader, writer in conns:
                writer.write(b"y")
                assert await reader.readexactly(1) == b"y"
            assert len(emu.ledger.live()) == 20
        for reader, writer in conns:
            assert await asyncio.wait_for(reader.read(), WAIT) == b""
            writer.close()
        assert len(t.results) == 20 and all(r.ok for r in t.results)
        await assert_no_leaks(emu, 20)


@on_each_loop
async def test_half_close_keeps_receiving_after_local_eof(impl: ModuleType, emulator: Callable[..., Any]) -> None:
    data = blob(3 * 1024 * 1024, seed=6)
    async with emulator() as emu, tunnel(emu, impl, half_close=True, keepalive=5.0) as t:
        reader, writer = await asyncio.open_connection("127.0.0.1", t.port)
        writer.write(data)
        await writer.drain()
        writer.write_eof()  # `nc -N` style: done sending, still waiting for the answer
        echoed = await asyncio.wait_for(reader.readexactly(len(data)), WAIT)
        assert echoed == data
        assert t.listener is not None
        splice = next(iter(t.listener.sessions.values())).splice
        assert (splice.half_close, splice.keepalive) == (True, 5.0)  # the CLI flags reach the pump
        writer.close()
        # TCP cannot tell "closed" from "half-closed" until we write, and the echo target never closes (it never
        # learns of the EOF: WebSocket has no half-close), so this connection lives until the tunnel closes it.
        assert not t.results
    assert t.results[0].ok and t.results[0].bytes_down == len(data)
    await assert_no_leaks(emu, 1)
