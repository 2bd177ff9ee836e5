"""The discovery cache (USERS.md §8 item 13) and the cold-start contract it serves.

A cache hit must skip the ARM SDK and ARM itself, but nothing else: the same checks apply to cached details, an
entry is private to the user and holds no secret, and details that went stale (the Bastion moved, tunneling was
turned off) are noticed at the first failing token exchange and rediscovered through azure-mgmt-network once.
The emulator is the witness: its ledger shows every Bastion session deleted, none leaked.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import signal
import socket
import ssl
import stat
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from bastion_fast.cli import build_parser
from bastion_fast.cli._options import options_from_args
from bastion_fast.control import ConnectionOptions, TunnelTarget, connect
from bastion_fast.control.discovery_cache import CACHE_TTL_ENV, DEFAULT_TTL, CacheKey, DiscoveryCache, parse_ttl
from bastion_fast.control.models import BastionInfo
from bastion_fast.emulator import Emulator
from bastion_fast.exceptions import ConfigurationError, NativeClientDisabled, TokenExchangeError, UsageError
from bastion_fast.tls import client_ssl_context
from tests import fixtures_emulator
from tests._control_scripted import clean_env  # noqa: F401 - fixture
from tests._tunnel_helpers import WAIT
from tests.fixtures_emulator import make_config

emulator_state_dir = fixtures_emulator.emulator_state_dir

pytestmark = pytest.mark.usefixtures("clean_env")

SUB = "00000000-0000-0000-0000-000000000000"
VM = f"/subscriptions/{SUB}/resourceGroups/rg-vms/providers/Microsoft.Compute/virtualMachines/vm1"
POSIX = sys.platform != "win32"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.asynccontextmanager
async def running(state_dir: Path, monkeypatch: pytest.MonkeyPatch, **overrides: Any) -> AsyncIterator[Emulator]:
    async with Emulator(make_config(state_dir, **overrides)) as emu:
        monkeypatch.setenv("BASTION_FAST_TOKEN", emu.token)
        yield emu


def options_for(emu: Emulator, **kw: Any) -> ConnectionOptions:
    info = emu.info
    base = ConnectionOptions(name=info["bastion"], resource_group=info["resource_group"],
                             target=TunnelTarget(VM, None, 22), subscription=info["subscription"], auth="static",
                             arm_endpoint=info["arm_endpoint"], ca_bundle=info["ca_file"], retries=0,
                             discovery_cache_ttl=600)
    return dataclasses.replace(base, **kw)


def key_for(options: ConnectionOptions) -> CacheKey:
    assert options.arm_endpoint and options.subscription
    return CacheKey.of(cloud="AzureCloud", arm_endpoint=options.arm_endpoint, subscription=options.subscription,
                       resource_group=options.resource_group, name=options.name)


async def one_grant(plane: Any) -> Any:
    grant = await plane.open_grant()
    await plane.close_grant(grant)
    return grant


async def no_leaks(emu: Emulator) -> None:
    ledger = emu.ledger
    await ledger.wait_for(lambda: all(s.state == "deleted" for s in ledger.sessions()), WAIT)
    assert ledger.leaked() == []


def info(**kw: Any) -> BastionInfo:
    base = BastionInfo(id=f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.Network/bastionHosts/b",
                       name="b", resource_group="rg", subscription=SUB, sku="Standard", dns_name="127.0.0.1:1",
                       enable_tunneling=True, enable_ip_connect=False, provisioning_state="Succeeded")
    return dataclasses.replace(base, **kw)


KEY = CacheKey.of(cloud="AzureCloud", arm_endpoint="https://management.azure.com/", subscription=SUB,
                  resource_group="rg", name="b")


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# -- the cache itself ------------------------------------------------------------------------------------------------


def test_entry_is_used_until_the_ttl_then_ignored(tmp_path: Path) -> None:
    clock = Clock()
    cache = DiscoveryCache(600, directory=tmp_path, clock=clock)
    assert cache.load(KEY) is None
    assert cache.store(KEY, info())
    clock.now += 599
    assert cache.load(KEY) == info()
    clock.now += 1
    assert cache.load(KEY) is None
    clock.now -= 3600  # an entry "from the future" (clock turned back an hour): not trusted either
    assert cache.load(KEY) is None


def test_key_covers_cloud_endpoint_subscription_group_and_name(tmp_path: Path) -> None:
    cache = DiscoveryCache(600, directory=tmp_path)
    cache.store(KEY, info())
    same = CacheKey.of(cloud="AzureCloud", arm_endpoint="https://MANAGEMENT.azure.com", subscription=SUB.upper(),
                       resource_group="RG", name="B")  # ARM names are case-insensitive
    assert cache.load(same) == info()
    for change in ({"cloud": "AzureUSGovernment"}, {"arm_endpoint": "https://127.0.0.1:8443"},
                   {"subscription": "11111111-0000-0000-0000-000000000000"}, {"resource_group": "rg2"},
                   {"name": "b2"}):
        other = CacheKey.of(**{**KEY.as_dict(), **change})
        assert cache.load(other) is None, change


def test_files_are_private_atomic_and_dropped_on_request(tmp_path: Path) -> None:
    directory = tmp_path / "cache" / "discovery"
    cache = DiscoveryCache(600, directory=directory)
    assert cache.store(KEY, info())
    path = cache.path(KEY)
    assert [p.name for p in directory.iterdir()] == [path.name]  # no temporary file left behind
    if POSIX:
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    doc = json.loads(path.read_text())
    assert doc["bastion"]["dns_name"] == "127.0.0.1:1" and doc["key"] == KEY.as_dict()
    cache.drop(KEY)
    assert not path.exists()
    cache.drop(KEY)  # already gone: fine


def _world_writable(path: Path) -> None:
    path.chmod(0o666)


def _symlink(path: Path) -> None:
    real = path.with_name("elsewhere.json")
    path.rename(real)
    path.symlink_to(real)


def _rewrite(change: dict[str, Any]) -> Any:
    def apply(path: Path) -> None:
        doc = json.loads(path.read_text())
        for dotted, value in change.items():
            target = doc
            *parents, last = dotted.split(".")
            for name in parents:
                target = target[name]
            target[last] = value
        path.write_text(json.dumps(doc))
    return apply


@pytest.mark.parametrize("spoil", [
    pytest.param(_world_writable, id="world-writable", marks=pytest.mark.skipif(not POSIX, reason="POSIX modes")),
    pytest.param(_symlink, id="symlink", marks=pytest.mark.skipif(not POSIX, reason="POSIX symlinks")),
    pytest.param(lambda p: p.write_text("{not json"), id="not-json"),
    pytest.param(_rewrite({"format": 99}), id="other-format"),
    pytest.param(_rewrite({"key.name": "someone-else"}), id="other-key"),
    pytest.param(_rewrite({"bastion.dns_name": "evil.example.com/path?x="}), id="dns-not-a-host"),
    pytest.param(_rewrite({"bastion.enable_tunneling": "yes"}), id="not-a-boolean"),
    pytest.param(_rewrite({"stored_at": "yesterday"}), id="no-timestamp"),
])
def test_foreign_or_broken_entries_are_ignored(tmp_path: Path, spoil: Any) -> None:
    cache = DiscoveryCache(600, directory=tmp_path)
    cache.store(KEY, info())
    if POSIX:
        os.chmod(cache.path(KEY), 0o600)
    spoil(cache.path(KEY))
    assert cache.load(KEY) is None


def test_unwritable_cache_directory_only_costs_the_cache(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    cache = DiscoveryCache(600, directory=blocker / "discovery")
    assert cache.store(KEY, info()) is False
    assert cache.load(KEY) is None


# -- flags -------------------------------------------------------------------------------------------------------------


def _ttl(argv: list[str], env: dict[str, str] | None = None, profile: dict[str, Any] | None = None) -> float:
    args = build_parser().parse_args(["tunnel", "-n", "b", "-g", "rg", "--target-resource-id", VM,
                                      "--resource-port", "22", "--port", "0", *argv])
    if profile is not None:
        args.profile = profile
    return options_from_args(args, env=env or {}).discovery_cache_ttl


def test_flags_environment_and_profile_set_the_ttl() -> None:
    assert _ttl([]) == DEFAULT_TTL == 12 * 3600
    assert _ttl(["--discovery-cache-ttl", "30"]) == 30
    assert _ttl(["--discovery-cache-ttl", "0"]) == 0
    assert _ttl(["--no-discovery-cache"]) == 0
    assert _ttl(["--no-discovery-cache", "--discovery-cache-ttl", "30"]) == 0  # "no" wins
    assert _ttl([], env={CACHE_TTL_ENV: "45"}) == 45
    assert _ttl([], env={CACHE_TTL_ENV: "0"}) == 0
    assert _ttl(["--discovery-cache-ttl", "30"], env={CACHE_TTL_ENV: "45"}) == 30  # flag > environment
    assert _ttl([], env={CACHE_TTL_ENV: "45"}, profile={"discovery_cache_ttl": 20}) == 20  # profile > environment


@pytest.mark.parametrize("value", ["soon", "-1", "nan", "inf"])
def test_bad_ttl_is_a_usage_error(value: str) -> None:
    with pytest.raises(UsageError) as flag:
        _ttl(["--discovery-cache-ttl", value])
    assert "--discovery-cache-ttl" in str(flag.value) and flag.value.hint and "0" in flag.value.hint
    with pytest.raises(UsageError) as env:
        _ttl([], env={CACHE_TTL_ENV: value})
    assert CACHE_TTL_ENV in str(env.value)
    assert parse_ttl("12.5", source="x") == 12.5


# -- the control plane with the cache ----------------------------------------------------------------------------------


async def test_miss_then_hit_and_the_entry_holds_no_secret(emulator_state_dir: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    cache = DiscoveryCache(600, directory=tmp_path)
    async with running(emulator_state_dir, monkeypatch) as emu:
        options = options_for(emu)
        async with await connect(options, discovery_cache=cache) as cold:
            assert not cold.from_cache
            first = await one_grant(cold)
        entry = cache.path(key_for(options))
        assert entry.exists()
        async with await connect(options, discovery_cache=cache) as warm:
            assert warm.from_cache
            assert warm.bastion == cold.bastion
            second = await one_grant(warm)
        await no_leaks(emu)
        assert len(emu.ledger.sessions()) == 2
    text = entry.read_text()
    assert emu.dns_name in text
    for secret in (emu.token, first.auth_token, first.websocket_token, second.auth_token, second.websocket_token):
        assert secret not in text


async def test_hit_does_not_ask_arm_at_all(emulator_state_dir: Path, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """The entry names an ARM endpoint where nothing listens: only a real cache hit can get a grant."""
    cache = DiscoveryCache(600, directory=tmp_path)
    async with running(emulator_state_dir, monkeypatch) as emu:
        options = options_for(emu, arm_endpoint=f"https://127.0.0.1:{free_port()}")
        discovered = BastionInfo(id=f"/subscriptions/{SUB}/resourceGroups/rg-emulator/providers/Microsoft.Network/"
                                 "bastionHosts/bastion-emulator", name="bastion-emulator",
                                 resource_group="rg-emulator", subscription=SUB, sku="Standard",
                                 dns_name=emu.dns_name, enable_tunneling=True, enable_ip_connect=False,
                                 provisioning_state="Succeeded")
        cache.store(key_for(options), discovered)
        async with await connect(options, discovery_cache=cache) as plane:
            assert plane.from_cache
            plane.warm_up()
            grant = await one_grant(plane)
        assert grant.endpoint == emu.dns_name
        await no_leaks(emu)


@pytest.mark.parametrize(("cached", "target"), [
    (dict(enable_ip_connect=False), TunnelTarget(None, "10.0.0.4", 22)),
    (dict(enable_tunneling=False), TunnelTarget(VM, None, 22)),
    (dict(provisioning_state="Updating"), TunnelTarget(VM, None, 22)),
    (dict(sku="Developer"), TunnelTarget(VM, None, 22)),
], ids=["ip-connect-off", "tunneling-off", "updating", "developer-for-tunnel"])
async def test_cached_details_meet_the_same_checks_and_a_refusal_asks_arm(
        emulator_state_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cached: dict[str, Any],
        target: TunnelTarget) -> None:
    """A refusal must come from fresh data: the user may have just fixed the Bastion."""
    cache = DiscoveryCache(600, directory=tmp_path)
    async with running(emulator_state_dir, monkeypatch, bastion=dict(enable_ip_connect=True)) as emu:
        options = options_for(emu, target=target)
        async with await connect(options, discovery_cache=cache) as plane:
            fresh = plane.bastion
        cache.store(key_for(options), dataclasses.replace(fresh, **cached))
        async with await connect(options, discovery_cache=cache) as plane:
            assert not plane.from_cache  # refused from the cache, then confirmed by ARM
            assert plane.bastion == fresh
            await one_grant(plane)
        assert cache.load(key_for(options)) == fresh
        await no_leaks(emu)


async def test_bastion_moved_since_cached_is_rediscovered(emulator_state_dir: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Same ARM endpoint, new data-plane port (the dnsName changed between two runs)."""
    cache = DiscoveryCache(600, directory=tmp_path)
    arm_port = free_port()
    async with running(emulator_state_dir, monkeypatch, arm_port=arm_port) as first:
        options = options_for(first)
        async with await connect(options, discovery_cache=cache) as plane:
            await one_grant(plane)
        old_dns = first.dns_name
    new_port = free_port()
    while f"127.0.0.1:{new_port}" == old_dns:
        new_port = free_port()
    async with running(emulator_state_dir, monkeypatch, arm_port=arm_port, port=new_port) as second:
        assert second.info["arm_endpoint"] == options.arm_endpoint and second.dns_name != old_dns
        async with await connect(options, discovery_cache=cache) as plane:
            assert plane.from_cache and plane.bastion.dns_name == old_dns
            grant = await one_grant(plane)  # refused at the old address → ARM again → the new one
            assert grant.endpoint == second.dns_name
            assert not plane.from_cache and plane.bastion.dns_name == second.dns_name
            await one_grant(plane)
        cached = cache.load(key_for(options))
        assert cached is not None and cached.dns_name == second.dns_name
        await no_leaks(second)
        assert len(second.ledger.sessions()) == 2


async def test_tunneling_disabled_since_cached_is_reported_as_such(emulator_state_dir: Path, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Same endpoints; between two runs someone turned native client support off."""
    cache = DiscoveryCache(600, directory=tmp_path)
    ports = dict(arm_port=free_port(), port=free_port())
    async with running(emulator_state_dir, monkeypatch, **ports) as first:
        options = options_for(first)
        async with await connect(options, discovery_cache=cache) as plane:
            await one_grant(plane)
    async with running(emulator_state_dir, monkeypatch, **ports, bastion=dict(enable_tunneling=False)) as second:
        async with await connect(options, discovery_cache=cache) as plane:
            assert plane.from_cache and plane.bastion.enable_tunneling  # the cache does not know yet
            with pytest.raises(NativeClientDisabled) as refused:
                await plane.open_grant()
            assert "--enable-tunneling true" in (refused.value.hint or "")
            assert not plane.bastion.enable_tunneling
        assert not cache.path(key_for(options)).exists()
        with pytest.raises(NativeClientDisabled):
            await connect(options, discovery_cache=cache)  # the next start asks ARM and refuses before "ready"
    assert second.ledger.sessions() == []


async def test_tunneling_disabled_next_start_refuses_before_ready(emulator_state_dir: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    cache = DiscoveryCache(600, directory=tmp_path)
    async with running(emulator_state_dir, monkeypatch, bastion=dict(enable_tunneling=False)) as emu:
        options = options_for(emu)
        cache.store(key_for(options), BastionInfo(
            id="x", name=emu.info["bastion"], resource_group=emu.info["resource_group"], subscription=SUB,
            sku="Standard", dns_name=emu.dns_name, enable_tunneling=False, enable_ip_connect=False,
            provisioning_state="Succeeded"))
        with pytest.raises(NativeClientDisabled):
            await connect(options, discovery_cache=cache)  # cached refusal → ARM asked → same answer, reported


async def test_unchanged_details_report_the_service_error_and_refresh_only_once(
        emulator_state_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    cache = DiscoveryCache(600, directory=tmp_path, clock=clock)
    target = TunnelTarget(None, "10.0.0.4", 22)
    async with running(emulator_state_dir, monkeypatch, bastion=dict(enable_ip_connect=True)) as emu:
        options = options_for(emu, target=target)
        async with await connect(options, discovery_cache=cache) as plane:
            await one_grant(plane)
        stored = json.loads(cache.path(key_for(options)).read_text())["stored_at"]
        emu.faults.update({"token_status": 403})  # a 403 for an IP target may mean "IP connect turned off"
        clock.now += 60
        async with await connect(options, discovery_cache=cache) as plane:
            assert plane.from_cache
            with pytest.raises(TokenExchangeError) as first:
                await plane.open_grant()
            assert first.value.status == 403
            assert not plane.from_cache  # ARM was asked; nothing had changed
            refreshed = json.loads(cache.path(key_for(options)).read_text())["stored_at"]
            assert refreshed == stored + 60  # ... so the entry was confirmed and re-stored
            clock.now += 60
            with pytest.raises(TokenExchangeError):
                await plane.open_grant()
            assert json.loads(cache.path(key_for(options)).read_text())["stored_at"] == refreshed  # once only
        await no_leaks(emu)
        assert len(emu.ledger.sessions()) == 1  # the refused requests opened no session


async def test_ttl_zero_neither_reads_nor_writes(emulator_state_dir: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BASTION_FAST_CACHE_DIR", str(tmp_path))
    async with running(emulator_state_dir, monkeypatch) as emu:
        for _ in range(2):
            async with await connect(options_for(emu, discovery_cache_ttl=0)) as plane:
                assert not plane.from_cache
                await one_grant(plane)
        assert not (tmp_path / "discovery").exists()
        async with await connect(options_for(emu)) as plane:  # the options' TTL: BASTION_FAST_CACHE_DIR is used
            assert not plane.from_cache
        assert list((tmp_path / "discovery").iterdir())
        await no_leaks(emu)


# -- one TLS context ---------------------------------------------------------------------------------------------------


def test_one_tls_context_per_bundle_and_switch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import trustme

    monkeypatch.delenv("AZURE_CLI_DISABLE_CONNECTION_VERIFICATION", raising=False)
    bundle = tmp_path / "ca.pem"
    trustme.CA().cert_pem.write_to_path(str(bundle))
    first = client_ssl_context(bundle)
    assert client_ssl_context(str(bundle)) is first  # shared by the token client, the WebSockets and ARM
    assert client_ssl_context() is not first
    assert first.verify_mode == ssl.CERT_REQUIRED and first.check_hostname
    trustme.CA().cert_pem.write_to_path(str(bundle))  # the bundle was replaced: a context that trusts the new CA
    os.utime(bundle, ns=(0, 10**9))
    replaced = client_ssl_context(bundle)
    assert replaced is not first
    monkeypatch.setenv("AZURE_CLI_DISABLE_CONNECTION_VERIFICATION", "1")
    insecure = client_ssl_context(bundle)
    assert insecure is not replaced and insecure.verify_mode == ssl.CERT_NONE
    bundle.write_text("garbage")
    with pytest.raises(ConfigurationError):
        client_ssl_context(bundle)
    with pytest.raises(ConfigurationError):  # errors are not cached away either
        client_ssl_context(bundle)


# -- the cold-start contract of `bastion-fast tunnel` ------------------------------------------------------------------


def _imported_before_ready(stderr: str) -> set[str]:
    """Modules ``-X importtime`` reported before the readiness lines (modules imported by any thread)."""
    names: set[str] = set()
    for line in stderr.splitlines():
        if line.startswith("Opening tunnel on port"):
            return names
        if line.startswith("import time:") and "|" in line:
            names.add(line.rsplit("|", 1)[1].strip())
    raise AssertionError(f"no readiness line in stderr:\n{stderr[-3000:]}")


@contextlib.contextmanager
def _no_proxy_env() -> Iterator[dict[str, str]]:
    env = dict(os.environ)
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        env.pop(name, None)
    yield env


async def _tunnel_once(emu: Emulator, *extra: str) -> tuple[str, bytes]:
    """Start ``bastion-fast tunnel`` under ``-X importtime``, push one echo through it, stop it with SIGINT."""
    info = emu.info
    args = ["tunnel", "-n", info["bastion"], "-g", info["resource_group"], "--target-resource-id", VM,
            "--resource-port", "22", "--port", "0", "--subscription", info["subscription"], "--auth", "static",
            "--arm-endpoint", info["arm_endpoint"], "--ca-bundle", info["ca_file"], "--output", "json", *extra]
    with _no_proxy_env() as env:
        env["BASTION_FAST_TOKEN"] = emu.token
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-X", "importtime", "-m", "bastion_fast", *args, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env)
    assert proc.stdout is not None and proc.stderr is not None
    stderr_task = asyncio.ensure_future(proc.stderr.read())
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), WAIT)
        assert line, (await stderr_task).decode(errors="replace")[-3000:]
        ready = json.loads(line)
        reader, writer = await asyncio.open_connection("127.0.0.1", ready["port"])
        writer.write(b"first bytes")
        echoed = await asyncio.wait_for(reader.readexactly(11), WAIT)
        writer.close()
        proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(proc.wait(), WAIT) == 130
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    return (await stderr_task).decode(errors="replace"), echoed


@pytest.mark.skipif(not POSIX, reason="SIGINT to a child process")
async def test_cli_cache_hit_is_ready_without_the_sdk_or_aiohttp(emulator_state_dir: Path, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BASTION_FAST_CACHE_DIR", str(tmp_path))
    async with running(emulator_state_dir, monkeypatch) as emu:
        cold, echoed = await _tunnel_once(emu)
        assert echoed == b"first bytes"
        before = _imported_before_ready(cold)
        assert "azure.mgmt.network.aio" in before  # discovery went through azure-mgmt-network
        assert list((tmp_path / "discovery").iterdir())

        warm, echoed = await _tunnel_once(emu)
        assert echoed == b"first bytes"  # the deferred HTTP client and WebSocket stack load after "ready"
        before = _imported_before_ready(warm)
        assert not {m for m in before if m.startswith(("azure.mgmt", "aiohttp", "websockets"))}, sorted(before)
        assert "aiohttp" in warm and "azure.mgmt" not in warm  # the first connection did need aiohttp

        off, _ = await _tunnel_once(emu, "--no-discovery-cache")
        assert "azure.mgmt.network.aio" in _imported_before_ready(off)
        await no_leaks(emu)
        assert len(emu.ledger.sessions()) == 3
