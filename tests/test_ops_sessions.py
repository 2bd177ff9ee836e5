"""``sessions list | disconnect`` against live tunnel connections: the disconnected connection drops (its local
socket sees EOF), the other connection and the tunnel's listener carry on."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from bastion_fast import open_tunnel
from tests import fixtures_emulator
from tests._control_scripted import clean_env  # noqa: F401 - fixture
from tests._ops_helpers import NAME, RG, SUB, ops_env, vm_id
from tests._tunnel_helpers import WAIT

pytestmark = pytest.mark.usefixtures("clean_env")
emulator_state_dir = fixtures_emulator.emulator_state_dir

VM1 = vm_id("vm1")


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, payload: bytes) -> bytes:
    writer.write(payload)
    await writer.drain()
    async with asyncio.timeout(WAIT):
        return await reader.readexactly(len(payload))


async def test_disconnect_drops_one_connection_and_the_listener_survives(emulator_state_dir: Path, capsys,
                                                                         monkeypatch) -> None:
    async with ops_env(emulator_state_dir, capsys, monkeypatch, targets={VM1: "echo"}) as env:
        info = env.emu.info
        async with open_tunnel(name=NAME, resource_group=RG, target_resource_id=VM1, resource_port=22,
                               subscription=SUB, auth="static", arm_endpoint=info["arm_endpoint"],
                               ca_bundle=info["ca_file"], proxy=False, implementation="python") as tunnel:
            first = await asyncio.open_connection("127.0.0.1", tunnel.port)
            assert await _echo(*first, b"first") == b"first"
            listed = await env.cli("sessions", "list", *env.args("--output", "json"))
            assert listed.code == 0, listed.err
            sessions = listed.json()["sessions"]
            assert len(sessions) == 1
            victim = sessions[0]
            assert victim["targetResourceId"].lower() == VM1.lower()
            assert victim["protocol"] == "SSH"
            assert victim["userName"]

            second = await asyncio.open_connection("127.0.0.1", tunnel.port)
            assert await _echo(*second, b"second") == b"second"
            listed = await env.cli("sessions", "list", *env.args("--output", "json"))
            assert {s["sessionId"] for s in listed.json()["sessions"]} >= {victim["sessionId"]}
            assert len(listed.json()["sessions"]) == 2

            done = await env.cli("sessions", "disconnect",
                                 *env.args("--session-id", victim["sessionId"], "--output", "json"))
            assert done.code == 0, done.err
            assert done.json()["results"] == [{"sessionId": victim["sessionId"], "message": "Session disconnected",
                                               "state": "Disconnected"}]

            # The first connection is the one that was disconnected: its local socket ends.
            reader, writer = first
            async with asyncio.timeout(WAIT):
                assert await reader.read() == b""
            writer.close()
            # The second connection still works, and so does the listener.
            assert await _echo(*second, b"still here") == b"still here"
            third = await asyncio.open_connection("127.0.0.1", tunnel.port)
            assert await _echo(*third, b"third") == b"third"

            listed = await env.cli("sessions", "list", *env.args("--output", "json"))
            ids = {s["sessionId"] for s in listed.json()["sessions"]}
            assert victim["sessionId"] not in ids and len(ids) == 2
            for _, w in (second, third):
                w.close()


async def test_disconnect_unknown_id_exits_1(emulator_state_dir: Path, capsys, monkeypatch) -> None:
    async with ops_env(emulator_state_dir, capsys, monkeypatch) as env:
        result = await env.cli("sessions", "disconnect", *env.args("--session-id", "no-such-session",
                                                                   "--output", "table"))
    assert result.code == 1
    assert "no-such-session" in result.out and "NotFound" in result.out


async def test_list_empty_table_and_watch_json(emulator_state_dir: Path, capsys, monkeypatch) -> None:
    async with ops_env(emulator_state_dir, capsys, monkeypatch) as env:
        table = await env.cli("sessions", "list", *env.args("--output", "table"))
        assert table.code == 0, table.err
        assert "No active sessions." in table.out
        watched = await env.cli("sessions", "list", *env.args("--watch", "--count", "3", "--interval", "0.01",
                                                              "--output", "json"))
    assert watched.code == 0, watched.err
    docs = [json.loads(line) for line in watched.out.splitlines()]
    assert len(docs) == 3
    assert all(d["sessions"] == [] and d["bastion"].endswith(f"/bastionHosts/{NAME}") for d in docs)
