"""The listener and the per-connection lifecycle against a stand-in Bastion (the ``websockets`` library) and a
fake control plane: one token per connection, always deleted with its own node id; failures, limits, shutdown.

The full stack against the emulator is in ``test_tunnel_e2e.py``; these tests isolate the tunnel's own logic and
run on both data-path implementations.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import socket
from types import ModuleType

import pytest

from bastion_fast import open_tunnel
from bastion_fast.exceptions import ConfigurationError, TunnelError
from bastion_fast.tunnel.config import BUFFER_BUDGET, TunnelConfig, buffer_limits, is_loopback
from bastion_fast.tunnel.events import JsonEvents
from bastion_fast.tunnel.session import AcceptedProtocol
from tests._tunnel_helpers import PKI, WAIT, FakeBastion, FakeControl, on_each_loop
from tests.splice_harness import run


async def _echo_once(port: int, payload: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(payload)
        await writer.drain()
        got = await reader.readexactly(len(payload))
    finally:
        writer.close()
    return got


async def _wait_for(predicate, what: str) -> None:  # type: ignore[no-untyped-def]
    async with asyncio.timeout(WAIT):
        while not predicate():
            await asyncio.sleep(0.01)


# ------------------------------------------------------------------------------------------------ the lifecycle


@on_each_loop
async def test_one_connection_one_token_deleted(impl: ModuleType) -> None:
    async with FakeBastion(tls=PKI.server).running() as bastion:
        control = FakeControl(bastion)
        async with open_tunnel(control=control, ssl_context=PKI.client(), implementation=impl.IMPLEMENTATION,
                               proxy=False) as t:
            assert t.implementation == impl.IMPLEMENTATION
            assert await _echo_once(t.port, b"hello bastion") == b"hello bastion"
            await _wait_for(lambda: t.results, "the connection to finish")
            result = t.results[0]
            assert result.ok and result.phase == "pump"
            assert (result.bytes_up, result.bytes_down) == (13, 13)
            assert result.close_code == 1000
        assert control.issued == 1 and not control.live
        assert [g.auth_token for g in control.deleted] == [f"{1:064x}"]
        assert not control.closed  # a control plane passed in stays the caller's


@on_each_loop
async def test_two_hundred_concurrent_connections(impl: ModuleType) -> None:
    async with FakeBastion(tls=PKI.server).running() as bastion:
        control = FakeControl(bastion)
        async with open_tunnel(control=control, ssl_context=PKI.client(), implementation=impl.IMPLEMENTATION,
                               proxy=False) as t:
            payloads = [f"connection {i} ".encode() * (1 + i % 50) for i in range(200)]
            got = await asyncio.gather(*(_echo_once(t.port, p) for p in payloads))
            assert got == payloads
            await _wait_for(lambda: len(t.results) == 200, "all connections to finish")
            assert all(r.ok for r in t.results)
            assert t.listener is not None and t.listener.active == 0
        assert control.issued == 200 and len(control.deleted) == 200 and not control.live
        # Every delete carried its own grant (FakeControl asserts the node id matches).
        assert len({g.auth_token for g in control.deleted}) == 200


@on_each_loop
async def test_buffers_shrink_as_connections_multiply(impl: ModuleType) -> None:
    """The first connections get the fastest buffers; on a busy tunnel later ones get smaller reads and write
    limits, so resident memory stays near BUFFER_BUDGET instead of growing 256 KiB × connections."""
    async with FakeBastion(tls=PKI.server).running() as bastion:
        control = FakeControl(bastion)
        async with open_tunnel(control=control, ssl_context=PKI.client(), implementation=impl.IMPLEMENTATION,
                               proxy=False) as t:
            assert t.listener is not None
            held = [await asyncio.open_connection("127.0.0.1", t.port) for _ in range(40)]
            try:
                await _wait_for(lambda: len(t.listener.sessions) == 40  # type: ignore[union-attr]
                                and all(s.splice is not None for s in t.listener.sessions.values()),
                                "40 sessions with a pump")
                sessions = sorted(t.listener.sessions.values(), key=lambda s: s.id)
                sizes = [(s.splice.read_size, s.splice.high_water, s.splice.low_water) for s in sessions]
            finally:
                for _, writer in held:
                    writer.close()
        assert sizes[0] == buffer_limits(1) == (256 * 1024, 1024 * 1024, 256 * 1024)
        assert sizes[-1] == buffer_limits(40) == (64 * 1024, 256 * 1024, 64 * 1024)
        assert [size[0] for size in sizes] == sorted((size[0] for size in sizes), reverse=True)
        assert sum(size[0] for size in sizes) <= 2 * BUFFER_BUDGET


@pytest.mark.parametrize("loop_name", ["asyncio", "uvloop"])
def test_a_waiting_connection_holds_at_most_one_small_read(loop_name: str) -> None:
    """Before its session attaches the pump, an accepted connection keeps at most EARLY_LIMIT bytes: the rest of
    what a busy application sends waits in the kernel (asyncio reads nothing; uvloop one bounded read), and all of
    it reaches the pump in order afterwards."""
    async def body() -> None:
        accepted: list[AcceptedProtocol] = []

        def factory() -> AcceptedProtocol:
            accepted.append(AcceptedProtocol())
            return accepted[-1]

        server = await asyncio.get_running_loop().create_server(factory, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        blob = bytes(range(256)) * (4 * 4096)  # 4 MiB
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(blob)
        await _wait_for(lambda: bool(accepted), "the connection to be accepted")
        proto = accepted[0]
        for _ in range(50):  # give a read every chance to happen (uvloop starts one after connection_made)
            await asyncio.sleep(0.005)
        assert len(proto.early) <= AcceptedProtocol.EARLY_LIMIT
        if loop_name == "uvloop":
            assert proto.early == blob[:len(proto.early)] and proto.early
        else:
            assert not proto.early  # asyncio honours the pause in connection_made

        # The pump takes over: everything arrives, in order.
        got = bytearray()
        done = asyncio.get_running_loop().create_future()

        class Sink(asyncio.Protocol):
            def data_received(self, data: bytes) -> None:
                got.extend(data)
                if len(got) == len(blob) and not done.done():
                    done.set_result(None)

        sink = Sink()
        assert proto.transport is not None
        proto.transport.set_protocol(sink)
        proto.replay_into(sink)
        proto.transport.resume_reading()
        await asyncio.wait_for(done, WAIT)
        assert bytes(got) == blob
        writer.close()
        proto.transport.close()
        server.close()
        await server.wait_closed()

    run(loop_name, body())


def test_buffer_limits_stay_within_the_budget() -> None:
    for concurrent in (1, 2, 16, 17, 64, 65, 256, 1000, 100_000):
        read, high, low = buffer_limits(concurrent)
        assert 32 * 1024 <= read <= 256 * 1024 and (high, low) == (4 * read, read)
        assert read * concurrent <= BUFFER_BUDGET or read == 32 * 1024
    assert buffer_limits(0) == buffer_limits(1)


@on_each_loop
async def test_failed_websocket_still_deletes_the_token(impl: ModuleType) -> None:
    async with FakeBastion(tls=PKI.server).running() as bastion:
        control = FakeControl(bastion)
        original = control.open_grant

        async def broken_grant():  # type: ignore[no-untyped-def]
            grant = await original()
            bastion.valid.clear()  # the service forgets the websocket token: the upgrade gets a 404
            return grant

        control.open_grant = broken_grant  # type: ignore[method-assign]
        async with open_tunnel(control=control, ssl_context=PKI.client(), implementation=impl.IMPLEMENTATION,
                               proxy=False) as t:
            reader, writer = await asyncio.open_connection("127.0.0.1", t.port)
            writer.write(b"ping")
            assert await asyncio.wait_for(reader.read(), WAIT) == b""  # closed, not hanging
            writer.close()
            await _wait_for(lambda: t.results, "the failure to be recorded")
            result = t.results[0]
            assert not result.ok and result.phase == "connect"
            assert "HTTP 404" in (result.error or "") and "Invalid websocket token" in (result.error or "")
        assert control.issued == 1 and len(control.deleted) == 1 and not control.live


@on_each_loop
async def test_listener_survives_a_failing_connection(impl: ModuleType) -> None:
    async with FakeBastion(tls=PKI.server).running() as bastion:
        control = FakeControl(bastion, fail_grants=2)
        async with open_tunnel(control=control, ssl_context=PKI.client(), implementation=impl.IMPLEMENTATION,
                               proxy=False, max_failures=3) as t:
            for _ in range(2):
                reader, writer = await asyncio.open_connection("127.0.0.1", t.port)
                assert await asyncio.wait_for(reader.read(), WAIT) == b""
                writer.close()
            await _wait_for(lambda: len(t.results) == 2, "two failures")
            assert [r.phase for r in t.results] == ["grant", "grant"]
            assert "HTTP 500" in (t.results[0].error or "")
            assert await _echo_once(t.port, b"third time lucky") == b"third time lucky"
            await _wait_for(lambda: len(t.results) == 3, "the good connection")
            assert t.listener is not None and t.listener.consecutive_failures == 0
            assert t.listener.stop_reason is None


@on_each_loop
async def test_max_failures_stops_with_the_last_error(impl: ModuleType) -> None:
    async with FakeBastion(tls=PKI.server).running() as bastion:
        control = FakeControl(bastion, fail_grants=100)
        async with open_tunnel(control=control, ssl_context=PKI.client(), implementation=impl.IMPLEMENTATION,
                               proxy=False, max_failures=3) as t:
            waiter = asyncio.create_task(t.wait())
            for _ in range(3):
                reader, writer = await asyncio.open_connection("127.0.0.1", t.port)
                await asyncio.wait_for(reader.read(), WAIT)
                writer.close()
            with pytest.raises(TunnelError) as info:
                await asyncio.wait_for(waiter, WAIT)
            assert "3 connections in a row failed" in str(info.value)
            assert "HTTP 500 Unexpected internal error" in str(info.value)


# ------------------------------------------------------------------------------------------------ stopping


@on_each_loop
async def test_lifetime_timeout_ends_cleanly_and_deletes_tokens(impl: ModuleType) -> None:
    async with FakeBastion(tls=PKI.server).running() as bastion:
        control = FakeControl(bastion)
        async with open_tunnel(control=control, ssl_context=PKI.client(), implementation=impl.IMPLEMENTATION,
                               proxy=False, timeout=0.5) as t:
            reader, writer = await asyncio.open_connection("127.0.0.1", t.port)
            writer.write(b"x")
            assert await reader.readexactly(1) == b"x"
            assert await asyncio.wait_for(t.wait(), WAIT) == "timeout"
            assert control.live  # the connection is still up until the tunnel closes
        # Leaving the block closed the live connection (the app sees EOF) and deleted its token.
        assert await asyncio.wait_for(reader.read(), WAIT) == b""
        writer.close()
        assert not control.live and len(control.deleted) == 1
        assert t.results[0].ok


@on_each_loop
async def test_idle_timeout_waits_for_connections_to_end(impl: ModuleType) -> None:
    async with FakeBastion(tls=PKI.server).running() as bastion:
        control = FakeControl(bastion)
        async with open_tunnel(control=control, ssl_context=PKI.client(), implementation=impl.IMPLEMENTATION,
                               proxy=False, idle_timeout=0.3) as t:
            waiter = asyncio.create_task(t.wait())
            reader, writer = await asyncio.open_connection("127.0.0.1", t.port)
            writer.write(b"x")
            await reader.readexactly(1)
            await asyncio.sleep(0.9)  # three idle periods with a connection open: no exit
            assert not waiter.done()
            writer.close()
            assert await asyncio.wait_for(waiter, WAIT) == "idle-timeout"
        assert not control.live


@on_each_loop
async def test_stop_during_token_request_still_deletes_it(impl: ModuleType) -> None:
    async with FakeBastion(tls=PKI.server).running() as bastion:
        control = FakeControl(bastion, grant_delay=0.3)
        async with open_tunnel(control=control, ssl_context=PKI.client(), implementation=impl.IMPLEMENTATION,
                               proxy=False) as t:
            reader, writer = await asyncio.open_connection("127.0.0.1", t.port)
            await _wait_for(lambda: t.active == 1, "the connection to be accepted")
        # The tunnel closed while the POST was in flight: it waited for the grant and deleted it.
        assert control.issued == 1 and len(control.deleted) == 1 and not control.live
        assert bastion.connections == 0  # and never opened the WebSocket
        assert await asyncio.wait_for(reader.read(), WAIT) == b""
        writer.close()


# ------------------------------------------------------------------------------------------------ listening


@on_each_loop
async def test_port_zero_and_fixed_port(impl: ModuleType) -> None:
    async with FakeBastion(tls=PKI.server).running() as bastion:
        control = FakeControl(bastion)
        async with open_tunnel(control=control, ssl_context=PKI.client(), proxy=False) as first:
            assert first.port > 0 and first.address == "127.0.0.1"
            with pytest.raises(ConfigurationError, match="already in use"):
                async with open_tunnel(control=control, ssl_context=PKI.client(), port=first.port):
                    pass
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            free = s.getsockname()[1]
        async with open_tunnel(control=control, ssl_context=PKI.client(), port=free, proxy=False,
                               implementation=impl.IMPLEMENTATION) as t:
            assert t.port == free
            assert await _echo_once(free, b"fixed") == b"fixed"


@on_each_loop
async def test_bind_address(caplog: pytest.LogCaptureFixture) -> None:
    async with FakeBastion(tls=PKI.server).running() as bastion:
        control = FakeControl(bastion)
        async with open_tunnel(control=control, ssl_context=PKI.client(), bind_address="127.0.0.2",
                               proxy=False) as t:
            assert t.address == "127.0.0.2"
            reader, writer = await asyncio.open_connection("127.0.0.2", t.port)
            writer.write(b"on .2")
            assert await reader.readexactly(5) == b"on .2"
            writer.close()
            with pytest.raises(OSError):
                await asyncio.open_connection("127.0.0.1", t.port)  # nothing listens on the other address
        caplog.set_level(logging.WARNING, "bastion_fast")
        with pytest.raises(ConfigurationError, match="no such local address"):
            async with open_tunnel(control=control, ssl_context=PKI.client(), bind_address="192.0.2.1"):
                pass
        assert any("any host that can reach this address" in r.getMessage() for r in caplog.records)


def test_loopback_detection() -> None:
    assert all(map(is_loopback, ["127.0.0.1", "127.9.9.9", "::1", "localhost", "LOCALHOST"]))
    assert not any(map(is_loopback, ["0.0.0.0", "::", "10.0.0.1", "192.168.1.2", "example.com"]))


@pytest.mark.parametrize(("kw", "needle"), [
    ({"frame_size": 1000}, "--frame-size"), ({"frame_size": 2 * 1024 * 1024}, "--frame-size"),
    ({"port": 70000}, "--port"), ({"timeout": 0}, "--timeout"), ({"idle_timeout": -1}, "--idle-timeout"),
    ({"max_failures": -1}, "--max-failures"), ({"keepalive": 0}, "--keepalive"),
])
def test_config_validation(kw: dict[str, object], needle: str) -> None:
    from bastion_fast.exceptions import UsageError

    with pytest.raises(UsageError, match=needle):
        TunnelConfig(**kw)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------ events


@on_each_loop
async def test_json_events(impl: ModuleType) -> None:
    out = io.StringIO()
    async with FakeBastion(tls=PKI.server).running() as bastion:
        control = FakeControl(bastion, fail_grants=1)
        async with open_tunnel(control=control, ssl_context=PKI.client(), implementation=impl.IMPLEMENTATION,
                               proxy=False, events=JsonEvents(out)) as t:
            first = out.getvalue().splitlines()
            assert first == [json.dumps({"event": "ready", "address": "127.0.0.1", "port": t.port},
                                        separators=(",", ":"))]
            reader, writer = await asyncio.open_connection("127.0.0.1", t.port)
            await reader.read()
            writer.close()
            assert await _echo_once(t.port, b"0123456789") == b"0123456789"
            await _wait_for(lambda: len(t.results) == 2, "both connections")
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    kinds = [e["event"] for e in events]
    assert kinds[0] == "ready" and kinds[-1] == "stopped" and kinds.count("ready") == 1
    opened = [e for e in events if e["event"] == "opened"]
    closed = {e["id"]: e for e in events if e["event"] == "closed"}
    assert [e["id"] for e in opened] == [1, 2] and set(closed) == {1, 2}
    assert all(e["peer"].startswith("127.0.0.1:") for e in opened)
    assert closed[1]["ok"] is False and closed[1]["phase"] == "grant" and "HTTP 500" in closed[1]["error"]
    assert closed[2]["ok"] is True and closed[2]["bytes_up"] == 10 and closed[2]["bytes_down"] == 10
    assert closed[2]["close_code"] == 1000 and closed[2]["duration"] >= 0 and closed[2]["error"] is None
    for e in events:
        if e["event"] in ("opened", "closed"):
            assert kinds.index("ready") < events.index(e)
