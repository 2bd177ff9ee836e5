"""Emulator configuration (TOML), TLS material caching, and a session under uvloop (the CLI's loop)."""

from __future__ import annotations

import asyncio
import os
import ssl
from pathlib import Path

import pytest

from bastion_fast.emulator import Emulator, EmulatorConfig
from bastion_fast.emulator.certs import default_names, ensure_certificates, server_ssl_context
from bastion_fast.emulator.config import load_toml
from bastion_fast.emulator.targets import parse_target_spec
from bastion_fast.exceptions import ConfigurationError, UsageError
from tests import fixtures_emulator
from tests.emulator_client import delete_token, get_tokens, open_tunnel

emulator_state_dir = fixtures_emulator.emulator_state_dir

FULL = """
bind = "127.0.0.1"
port = 0
omit_false_booleans = true
default_target = "sink"

[bastion]
name = "main"
resource_group = "rg-a"
sku = "Premium"
enable_ip_connect = true
nodes = 3

[[bastions]]
name = "dev"
resource_group = "rg-b"
sku = "Developer"

[targets]
"/subscriptions/s/resourceGroups/r/providers/Microsoft.Compute/virtualMachines/vm" = "127.0.0.1:2222"
"10.1.0.4:22" = "echo"

[knobs]
max_client_frame = 4096
server_ping_interval = 30
ip_connect_ports = [22]

[faults]
token_delay = 0.5
close_code = 1012
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "emu.toml"
    path.write_text(text)
    return path


def test_full_toml_config(tmp_path: Path) -> None:
    cfg = load_toml(write(tmp_path, FULL))
    cfg.validate()
    assert [b.name for b in cfg.all_bastions()] == ["main", "dev"]
    assert cfg.bastion.sku == "Premium" and cfg.bastion.nodes == 3 and cfg.bastion.enable_ip_connect
    assert cfg.extra_bastions[0].sku == "Developer"
    assert cfg.default_target == "sink" and cfg.omit_false_booleans
    assert cfg.targets["10.1.0.4:22"] == "echo"
    assert cfg.knobs.max_client_frame == 4096 and cfg.knobs.server_ping_interval == 30.0
    assert cfg.knobs.ip_connect_ports == (22,)
    assert cfg.faults.token_delay == 0.5 and cfg.faults.close_code == 1012


@pytest.mark.parametrize(("text", "needle"), [
    ("colour = 1\n", "unknown key 'colour'"),
    ("[bastion]\nskus = 'Standard'\n", "unknown key 'skus'"),
    ("[bastion]\nsku = 'Gold'\n", "Gold"),
    ("[bastion]\nnodes = 'two'\n", "nodes"),
    ("[knobs]\nreject_continuation = 1\n", "true or false"),
    ("[faults]\nclose_code = 1005\n", "close_code"),
    ("[targets]\nvm = 'nowhere'\n", "nowhere"),
    ("port = 70000\n", "port"),
    ("this is = not toml\n", "not valid TOML"),
])
def test_config_errors_name_the_problem(tmp_path: Path, text: str, needle: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        load_toml(write(tmp_path, text)).validate()
    assert needle in str(info.value)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="Cannot read"):
        load_toml(tmp_path / "absent.toml")


def test_non_loopback_bind_refused() -> None:
    with pytest.raises(UsageError, match="not a loopback"):
        EmulatorConfig(bind="0.0.0.0").validate()
    EmulatorConfig(bind="0.0.0.0", allow_remote=True).validate()
    EmulatorConfig(bind="::1").validate()
    EmulatorConfig(bind="localhost").validate()


def test_duplicate_bastions_refused() -> None:
    from bastion_fast.emulator.config import BastionConfig

    cfg = EmulatorConfig(extra_bastions=[BastionConfig()])
    with pytest.raises(ConfigurationError, match="twice"):
        cfg.validate()


@pytest.mark.parametrize(("spec", "text"), [
    ("echo", "echo"), ("SINK", "sink"), ("source", "source:1048576"), ("source:0", "source:0"),
    ("127.0.0.1:22", "127.0.0.1:22"), ("[::1]:2222", "[::1]:2222"), ("localhost:80", "localhost:80"),
])
def test_target_specs(spec: str, text: str) -> None:
    assert str(parse_target_spec(spec)) == text


def test_certificates_are_cached_and_renewed_when_names_change(tmp_path: Path) -> None:
    names = default_names("127.0.0.1")
    assert names == ["localhost", "127.0.0.1", "::1"]
    files = ensure_certificates(tmp_path, names)
    ca = files.ca_file.read_bytes()
    stamp = files.cert_file.stat().st_mtime_ns
    assert oct(os.stat(tmp_path / "ca-key.pem").st_mode & 0o777) == "0o600"
    again = ensure_certificates(tmp_path, names)
    assert again == files and files.cert_file.stat().st_mtime_ns == stamp  # reused, not regenerated
    ensure_certificates(tmp_path, [*names, "192.0.2.7"])
    assert files.ca_file.read_bytes() == ca  # same CA: clients keep trusting it
    assert files.cert_file.stat().st_mtime_ns != stamp
    ctx = server_ssl_context(files)
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2


async def test_certificate_verifies_for_every_loopback_name(tmp_path: Path) -> None:
    files = ensure_certificates(tmp_path, default_names("127.0.0.1"))
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0, ssl=server_ssl_context(files))
    port = server.sockets[0].getsockname()[1]
    client = ssl.create_default_context(cafile=str(files.ca_file))
    try:
        for name in ("127.0.0.1", "localhost"):
            _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client, server_hostname=name)
            writer.close()
        with pytest.raises(ssl.SSLCertVerificationError):
            await asyncio.open_connection("127.0.0.1", port, ssl=client, server_hostname="example.com")
        with pytest.raises(ssl.SSLCertVerificationError):  # the system store alone does not trust it
            await asyncio.open_connection("127.0.0.1", port, ssl=ssl.create_default_context())
    finally:
        server.close()
        await server.wait_closed()


def test_session_under_uvloop(emulator_state_dir: Path) -> None:
    """The CLI runs on uvloop, whose transports differ from asyncio's: one full session there."""
    uvloop = pytest.importorskip("uvloop")

    async def scenario() -> None:
        async with Emulator(fixtures_emulator.make_config(emulator_state_dir, default_target="sink")) as emu:
            tokens = await get_tokens(emu)
            async with open_tunnel(emu, tokens) as ws:
                for _ in range(4):
                    await ws.send(b"u" * 25_000)
            assert await delete_token(emu, tokens) == 204
            await emu.wait_idle()
            session = emu.ledger.sessions()[0]
            assert session.sink is not None and session.sink["bytes"] == 100_000
            assert emu.ledger.leaked() == []

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(scenario())
