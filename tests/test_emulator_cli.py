"""``bastion-fast emulator`` as a subprocess: one JSON readiness line, a working data plane, clean SIGTERM."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path

import pytest
import websockets

from bastion_fast.cli import build_parser
from bastion_fast.cli.emulator import build_config
from bastion_fast.exceptions import ConfigurationError
from tests import fixtures_emulator
from tests.emulator_client import RemoteEmulator, get_tokens, http, open_tunnel

emulator_state_dir = fixtures_emulator.emulator_state_dir

READY_KEYS = {"arm_endpoint", "dns_name", "ca_file", "subscription", "resource_group", "bastion", "token", "pid"}


async def start(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bastion_fast", "emulator", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )


async def test_readiness_line_session_and_sigterm(emulator_state_dir: Path) -> None:
    proc = await start("--state-dir", str(emulator_state_dir), "--port", "0", "--arm-port", "0")
    try:
        assert proc.stdout is not None and proc.stderr is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        info = json.loads(line)
        assert set(info) == READY_KEYS
        assert info["pid"] == proc.pid
        assert info["arm_endpoint"].startswith("https://127.0.0.1:")
        assert Path(info["ca_file"]).read_text().startswith("-----BEGIN CERTIFICATE-----")
        emu = RemoteEmulator(info)
        # ARM with the ready-made token, then a full session with an independent client
        url = (f"{info['arm_endpoint']}/subscriptions/{info['subscription']}/resourceGroups/{info['resource_group']}"
               f"/providers/Microsoft.Network/bastionHosts/{info['bastion']}?api-version=2024-01-01")
        async with http(emu) as session, session.get(url, headers={"Authorization": f"Bearer {info['token']}"}) as r:
            assert r.status == 200 and (await r.json())["properties"]["dnsName"] == info["dns_name"]
        tokens = await get_tokens(emu)
        async with open_tunnel(emu, tokens) as ws:
            await ws.send(b"through the subprocess")
            assert await ws.recv() == b"through the subprocess"
            proc.send_signal(signal.SIGTERM)
            with pytest.raises(websockets.ConnectionClosedOK):
                await asyncio.wait_for(ws.recv(), 30)
            assert ws.close_code == 1001  # closed cleanly, "going away"
        assert await asyncio.wait_for(proc.wait(), 30) == 0
        rest = await proc.stdout.read()
        assert rest == b""  # exactly one line on stdout
        stderr = (await proc.stderr.read()).decode()
        assert tokens.auth not in stderr and tokens.ws not in stderr and info["token"] not in stderr
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_sigint_exits_zero(emulator_state_dir: Path) -> None:
    proc = await start("--state-dir", str(emulator_state_dir))
    try:
        assert proc.stdout is not None
        json.loads(await asyncio.wait_for(proc.stdout.readline(), 30))
        proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


@pytest.mark.parametrize("bind", ["0.0.0.0", "192.0.2.10"])
async def test_non_loopback_bind_needs_allow_remote(emulator_state_dir: Path, bind: str) -> None:
    proc = await start("--state-dir", str(emulator_state_dir), "--bind", bind)
    stdout, stderr = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2
    assert stdout == b""
    assert b"not a loopback address" in stderr and b"--allow-remote" in stderr
    assert b"Traceback" not in stderr


async def test_bad_config_file_is_a_clear_error(tmp_path: Path) -> None:
    config = tmp_path / "emu.toml"
    config.write_text('[bastion]\nsku = "Gold"\n')
    proc = await start("--config", str(config), "--state-dir", str(tmp_path))
    stdout, stderr = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 1 and stdout == b""
    assert b"Gold" in stderr and b"Traceback" not in stderr


def parse(*argv: str) -> object:
    return build_config(build_parser().parse_args(["emulator", *argv]))


def test_flags_build_the_config(tmp_path: Path) -> None:
    config = tmp_path / "emu.toml"
    config.write_text('default_target = "sink"\n[bastion]\nname = "from-file"\nnodes = 4\n[knobs]\ntoken_ttl = 5\n')
    cfg = parse("--config", str(config), "--sku", "Developer", "--no-tunneling", "--ip-connect",
                "--omit-false-booleans", "--default-target", "source:99", "--target", "10.0.0.9:22=echo",
                "--max-client-frame", "4096", "--reject-continuation", "--allow-unmasked", "--server-frame-size",
                "8192", "--drop-after-bytes", "7", "--close-code", "1012", "--token-status", "502", "-g", "rg-x")
    assert cfg.bastion.name == "from-file" and cfg.bastion.nodes == 4 and cfg.bastion.resource_group == "rg-x"
    assert cfg.bastion.sku == "Developer" and cfg.bastion.enable_tunneling is False
    assert cfg.bastion.enable_ip_connect is True and cfg.omit_false_booleans is True
    assert cfg.default_target == "source:99" and cfg.targets == {"10.0.0.9:22": "echo"}
    assert cfg.knobs.token_ttl == 5 and cfg.knobs.max_client_frame == 4096
    assert cfg.knobs.reject_continuation and not cfg.knobs.require_mask and cfg.knobs.server_frame_size == 8192
    assert (cfg.faults.drop_after_bytes, cfg.faults.close_code, cfg.faults.token_status) == (7, 1012, 502)
    assert parse("--default-target", "none").default_target is None
    with pytest.raises(ConfigurationError):
        parse("--default-target", "nowhere").validate()
