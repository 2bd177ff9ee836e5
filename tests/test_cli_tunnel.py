"""``bastion-fast tunnel`` as a user runs it: a separate process against the in-process emulator.

Covers az's flags and readiness lines, ``--output json`` events, exit codes, signals (SIGINT, SIGTERM, SIGHUP) with
every Bastion session deleted, ``--timeout``, ``--idle-timeout``, ``--max-failures``, ``--bind-address``, and usage
errors.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from bastion_fast.cli import build_parser
from bastion_fast.emulator import Emulator
from tests import fixtures_emulator
from tests._tunnel_helpers import WAIT
from tests.fixtures_emulator import make_config

emulator_state_dir = fixtures_emulator.emulator_state_dir

SUB = "00000000-0000-0000-0000-000000000000"
VM = f"/subscriptions/{SUB}/resourceGroups/rg-vm/providers/Microsoft.Compute/virtualMachines/vm1"


@pytest.fixture
def emulator(emulator_state_dir: Path) -> Callable[..., Any]:
    """``async with emulator(**config) as emu`` (tests/fixtures_emulator.make_config)."""

    @contextlib.asynccontextmanager
    async def start(**kw: Any) -> AsyncIterator[Emulator]:
        async with Emulator(make_config(emulator_state_dir, **kw)) as emu:
            yield emu

    return start


def tunnel_args(emu: Emulator, *extra: str, port: str = "0") -> list[str]:
    info = emu.info
    return ["tunnel", "-n", info["bastion"], "-g", info["resource_group"], "--target-resource-id", VM,
            "--resource-port", "22", "--port", port, "--subscription", info["subscription"], "--auth", "static",
            "--arm-endpoint", info["arm_endpoint"], "--ca-bundle", info["ca_file"], *extra]


class Cli:
    """A running ``python -m bastion_fast …`` with line-wise stdout and a captured stderr."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.stderr = b""
        self.stderr_lines: asyncio.Queue[str] = asyncio.Queue()
        self._stderr_task = asyncio.create_task(self._drain_stderr())

    async def _drain_stderr(self) -> None:
        assert self.proc.stderr is not None
        while line := await self.proc.stderr.readline():
            self.stderr += line
            self.stderr_lines.put_nowait(line.decode(errors="replace").rstrip("\n"))

    async def stderr_line(self) -> str:
        return await asyncio.wait_for(self.stderr_lines.get(), WAIT)

    async def line(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        raw = await asyncio.wait_for(self.proc.stdout.readline(), WAIT)
        assert raw, f"stdout closed; stderr: {self.stderr.decode(errors='replace')}"
        return json.loads(raw)

    async def wait(self) -> int:
        code = await asyncio.wait_for(self.proc.wait(), WAIT)
        await self._stderr_task
        return code

    async def rest(self) -> list[dict[str, Any]]:
        assert self.proc.stdout is not None
        return [json.loads(line) for line in (await self.proc.stdout.read()).splitlines()]


@contextlib.asynccontextmanager
async def cli(emu: Emulator | None, args: list[str]) -> AsyncIterator[Cli]:
    env = dict(os.environ)
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        env.pop(name, None)
    if emu is not None:
        env["BASTION_FAST_TOKEN"] = emu.token
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bastion_fast", *args, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env)
    runner = Cli(proc)
    try:
        yield runner
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await runner._stderr_task


async def echo(port: int, payload: bytes, host: str = "127.0.0.1") -> tuple[asyncio.StreamReader,
                                                                          asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(payload)
    assert await asyncio.wait_for(reader.readexactly(len(payload)), WAIT) == payload
    return reader, writer


async def no_leaks(emu: Emulator, sessions: int) -> None:
    ledger = emu.ledger
    await ledger.wait_for(lambda: all(s.state == "deleted" for s in ledger.sessions()), WAIT)
    assert ledger.leaked() == [] and ledger.unused() == []
    assert len(ledger.sessions()) == sessions


# ------------------------------------------------------------------------------------------------ signals


@pytest.mark.parametrize(("sig", "extra", "expected"), [
    (signal.SIGINT, (), 130),
    (signal.SIGINT, ("--az-exit-codes",), 0),
    (signal.SIGTERM, (), 0),
    (signal.SIGHUP, (), 0),
], ids=["sigint", "sigint-az", "sigterm", "sighup"])
async def test_signal_closes_connections_and_deletes_tokens(emulator: Callable[..., Any], sig: signal.Signals,
                                                            extra: tuple[str, ...], expected: int) -> None:
    async with emulator() as emu, cli(emu, tunnel_args(emu, "--output", "json", *extra)) as proc:
        ready = await proc.line()
        assert ready == {"event": "ready", "address": "127.0.0.1", "port": ready["port"]}
        conns = [await echo(ready["port"], b"live %d" % i) for i in range(3)]
        await emu.ledger.wait_for(lambda: len(emu.ledger.live()) == 3, WAIT)
        proc.proc.send_signal(sig)
        for reader, writer in conns:
            assert await asyncio.wait_for(reader.read(), WAIT) == b""  # each app sees EOF
            writer.close()
        assert await proc.wait() == expected
        events = await proc.rest()
        await no_leaks(emu, 3)
    assert [e["event"] for e in events].count("closed") == 3
    assert events[-1]["event"] == "stopped" and events[-1]["reason"] == f"signal {sig.name}"
    assert f"{sig.name} received" in proc.stderr.decode()


async def test_sigint_while_idle_text_mode(emulator: Callable[..., Any]) -> None:
    async with emulator() as emu, cli(emu, tunnel_args(emu)) as proc:
        # Text mode: az's three readiness lines on stderr, nothing on stdout.
        lines = [await proc.stderr_line() for _ in range(3)]
        assert lines[0].startswith("Opening tunnel on port: ")
        port = int(lines[0].rsplit(" ", 1)[1])
        assert lines[1:] == [f"Tunnel is ready, connect on port {port}", "Ctrl + C to close"]
        _, writer = await echo(port, b"works")
        writer.close()
        await no_leaks(emu, 1)
        proc.proc.send_signal(signal.SIGINT)
        assert await proc.wait() == 130
        assert proc.proc.stdout is not None and await proc.proc.stdout.read() == b""


# ------------------------------------------------------------------------------------------------ limits


async def test_timeout_is_a_lifetime_with_cleanup(emulator: Callable[..., Any]) -> None:
    async with emulator() as emu, cli(emu, tunnel_args(emu, "--output", "json", "--timeout", "1")) as proc:
        ready = await proc.line()
        reader, writer = await echo(ready["port"], b"before the deadline")
        assert await proc.wait() == 0
        assert await asyncio.wait_for(reader.read(), WAIT) == b""
        writer.close()
        events = await proc.rest()
        await no_leaks(emu, 1)
    assert events[-1] == {"event": "stopped", "reason": "timeout", "error": None}
    assert "--timeout 1 s" in proc.stderr.decode()


async def test_idle_timeout(emulator: Callable[..., Any]) -> None:
    async with emulator() as emu, cli(emu, tunnel_args(emu, "--output", "json", "--idle-timeout", "0.5")) as proc:
        await proc.line()
        assert await proc.wait() == 0
        assert (await proc.rest())[-1]["reason"] == "idle-timeout"


async def test_max_failures_exits_1_with_the_last_error(emulator: Callable[..., Any]) -> None:
    async with emulator() as emu, \
            cli(emu, tunnel_args(emu, "--output", "json", "--max-failures", "2")) as proc:
        emu.faults.update({"token_status": 500})
        ready = await proc.line()
        for _ in range(2):
            reader, writer = await asyncio.open_connection("127.0.0.1", ready["port"])
            assert await asyncio.wait_for(reader.read(), WAIT) == b""
            writer.close()
        assert await proc.wait() == 1
        events = await proc.rest()
    stderr = proc.stderr.decode()
    assert "error: 2 connections in a row failed; the last one:" in stderr
    assert "Traceback" not in stderr
    closed = [e for e in events if e["event"] == "closed"]
    assert len(closed) == 2 and all(not e["ok"] and e["phase"] == "grant" for e in closed)
    assert events[-1]["event"] == "stopped" and events[-1]["reason"] == "max-failures"


async def test_bind_address_and_fixed_port(emulator: Callable[..., Any]) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.2", 0))
        port = s.getsockname()[1]
    async with emulator() as emu, \
            cli(emu, tunnel_args(emu, "--output", "json", "--bind-address", "127.0.0.2", port=str(port))) as proc:
        ready = await proc.line()
        assert ready == {"event": "ready", "address": "127.0.0.2", "port": port}
        _, writer = await echo(port, b"bound", host="127.0.0.2")
        writer.close()
        await no_leaks(emu, 1)
        proc.proc.send_signal(signal.SIGTERM)
        assert await proc.wait() == 0


async def test_port_in_use_is_a_clear_error(emulator: Callable[..., Any]) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        async with emulator() as emu, cli(emu, tunnel_args(emu, "--output", "json", port=str(port))) as proc:
            assert await proc.wait() == 1
            events = await proc.rest()
    assert f"error: Local port 127.0.0.1:{port} is already in use." in proc.stderr.decode()
    assert "hint: Choose another --port" in proc.stderr.decode()
    assert events == [{"event": "stopped", "reason": "error",
                       "error": f"Local port 127.0.0.1:{port} is already in use."}]


async def test_discovery_failure_is_reported_before_listening(emulator: Callable[..., Any]) -> None:
    async with emulator(bastion={"name": "bastion-emulator", "enable_tunneling": False}) as emu, \
            cli(emu, tunnel_args(emu, "--output", "json")) as proc:
        assert await proc.wait() == 1
        events = await proc.rest()
    assert [e["event"] for e in events] == ["stopped"]  # never "ready"
    assert "error:" in proc.stderr.decode() and "Traceback" not in proc.stderr.decode()


# ------------------------------------------------------------------------------------------------ flags


def test_az_flags_are_accepted_byte_for_byte() -> None:
    args = build_parser().parse_args([
        "network", "bastion", "tunnel", "--name", "b", "--resource-group", "rg", "--target-resource-id", VM,
        "--resource-port", "3389", "--port", "50022", "--timeout", "30"][2:])
    assert (args.name, args.resource_group, args.target_resource_id) == ("b", "rg", VM)
    assert (args.resource_port, args.port, args.timeout) == (3389, 50022, 30.0)
    short = build_parser().parse_args(["tunnel", "-n", "b", "-g", "rg", "--target-ip-address", "10.0.0.4",
                                       "--resource-port", "22", "--port", "0"])
    assert (short.name, short.resource_group, short.target_ip_address) == ("b", "rg", "10.0.0.4")
    # Our additions and their defaults.
    assert (short.bind_address, short.max_failures, short.output, short.frame_size) == ("127.0.0.1", 5, "text",
                                                                                        32768)
    assert (short.idle_timeout, short.keepalive, short.half_close, short.az_exit_codes) == (None, None, False,
                                                                                           False)
    sized = build_parser().parse_args(["tunnel", "-n", "b", "-g", "rg", "--port", "0", "--frame-size", "64k"])
    assert sized.frame_size == 65536


@pytest.mark.parametrize(("args", "needle"), [
    (["--resource-port", "22"], "--port"),
    (["--resource-port", "22", "--port", "0.0.0.0:5000"], "use --bind-address"),
    (["--resource-port", "22", "--port", "0", "--frame-size", "100"], "--frame-size must be between"),
    (["--resource-port", "22", "--port", "0", "--timeout", "-3"], "positive number of seconds"),
    (["--port", "0"], "--resource-port"),
])
async def test_usage_errors_exit_2(args: list[str], needle: str) -> None:
    base = ["tunnel", "-n", "b", "-g", "rg", "--target-resource-id", VM, "--subscription", SUB, "--auth", "static"]
    async with cli(None, base + args) as proc:
        code = await proc.wait()
    assert code == 2, proc.stderr.decode()
    assert needle in proc.stderr.decode() and "Traceback" not in proc.stderr.decode()


# ------------------------------------------------------------------------------------------------ demo


async def test_demo_pushes_and_verifies(emulator_state_dir: Path) -> None:
    async with cli(None, ["demo", "--size", "8M", "--pure-size", "4M", "--output", "json",
                          "--state-dir", str(emulator_state_dir)]) as proc:
        assert proc.proc.stdout is not None
        out = await asyncio.wait_for(proc.proc.stdout.read(), 6 * WAIT)
        code = await proc.wait()
    report = json.loads(out)
    assert code == 0, proc.stderr.decode()
    assert report["ok"] is True and report["sessions_leaked"] == 0
    assert report["sessions"] == report["sessions_deleted"] == 2 * len(report["runs"])
    labels = [r["label"].split("/")[0] for r in report["runs"]]
    assert labels[-1] == "python"  # the pure-Python comparison always runs
    for run in report["runs"]:
        assert run["upload_ok"] and run["download_ok"] and run["exit_code"] == 0
        assert run["size"] == (4 if run["label"].startswith("python") and len(labels) == 2 else 8) * 1024 * 1024


# ------------------------------------------------------------------------------------------------ profiles


async def test_profile_instead_of_flags(emulator: Callable[..., Any], tmp_path: Path) -> None:
    """`bastion-fast tunnel web1` takes bastion, group, target, ports from the profiles file."""
    async with emulator() as emu:
        info = emu.info
        config = tmp_path / "config.toml"
        config.write_text(
            "[targets.web1]\n"
            f'bastion = "{info["bastion"]}"\n'
            f'resource_group = "{info["resource_group"]}"\n'
            f'subscription = "{info["subscription"]}"\n'
            f'target_resource_id = "{VM}"\n'
            "resource_port = 22\n"
            "port = 0\n"
        )
        args = ["tunnel", "web1", "--config", str(config), "--auth", "static", "--arm-endpoint",
                info["arm_endpoint"], "--ca-bundle", info["ca_file"], "--output", "json"]
        async with cli(emu, args) as proc:
            ready = await proc.line()
            assert ready["event"] == "ready" and ready["port"] > 0
            reader, writer = await asyncio.open_connection("127.0.0.1", ready["port"])
            writer.write(b"through the profile")
            assert await reader.readexactly(19) == b"through the profile"  # the emulator's echo target
            writer.close()
            proc.proc.send_signal(signal.SIGTERM)
            assert await proc.wait() == 0
        await emu.wait_idle()
        assert emu.ledger.leaked() == []


async def test_missing_port_without_profile_is_usage_error() -> None:
    base = ["tunnel", "-n", "b", "-g", "rg", "--target-resource-id", VM, "--resource-port", "22",
            "--subscription", SUB, "--auth", "static"]
    async with cli(None, base) as proc:
        assert await proc.wait() == 2
    assert "the following arguments are required: --port" in proc.stderr.decode()
