"""The control plane end to end against the built-in emulator: discovery through azure-mgmt-network for each
SKU/flag combination (booleans present and absent), IP connect, the Developer data-pod flow, the service-side
refusals, and every token-endpoint fault the emulator can inject. The emulator's ledger is the witness: each grant
is one Bastion session, deleted on the node that issued it, none leaked."""

from __future__ import annotations

import asyncio
import dataclasses
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bastion_fast.control import ConnectionOptions, TunnelTarget, connect
from bastion_fast.control.tokens import TokenClient
from bastion_fast.emulator import BastionConfig, Emulator, EmulatorConfig, Knobs
from bastion_fast.emulator.faults import FaultConfig
from bastion_fast.exceptions import (
    AuthenticationError,
    BastionNotFound,
    IpConnectDisabled,
    NativeClientDisabled,
    TokenExchangeError,
    UnsupportedSku,
    UsageError,
)
from bastion_fast.tls import client_ssl_context
from tests._control_scripted import clean_env  # noqa: F401 - fixture

pytestmark = pytest.mark.usefixtures("clean_env")

SUB = "00000000-0000-0000-0000-000000000000"
VM = f"/subscriptions/{SUB}/resourceGroups/rg-vms/providers/Microsoft.Compute/virtualMachines/vm1"
VMSS = (f"/subscriptions/{SUB}/resourceGroups/rg-vms/providers/Microsoft.Compute/virtualMachineScaleSets/ss"
        "/virtualMachines/0")


@pytest.fixture(scope="session")
def emulator_state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("emulator-state")  # certificates generated once per session


@pytest.fixture
def emulator(emulator_state: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    @asynccontextmanager
    async def run(*, omit: bool = False, knobs: Knobs | None = None, faults: FaultConfig | None = None,
                  **bastion: Any) -> AsyncIterator[Emulator]:
        cfg = EmulatorConfig(state_dir=emulator_state, omit_false_booleans=omit, bastion=BastionConfig(**bastion),
                             knobs=knobs or Knobs(), faults=faults or FaultConfig())
        async with Emulator(cfg) as emu:
            monkeypatch.setenv("BASTION_FAST_TOKEN", emu.info["token"])
            yield emu
    return run


def options_for(emu: Emulator, target: TunnelTarget | None = None, **kw: Any) -> ConnectionOptions:
    info = emu.info
    base = ConnectionOptions(name=info["bastion"], resource_group=info["resource_group"],
                             target=target or TunnelTarget(VM, None, 22), subscription=info["subscription"],
                             auth="static", arm_endpoint=info["arm_endpoint"], ca_bundle=info["ca_file"], retries=0)
    return dataclasses.replace(base, **kw)


def assert_no_leaks(emu: Emulator) -> None:
    snap = emu.ledger.snapshot()
    assert snap["leaked"] == [], snap
    assert all(s["state"] == "deleted" for s in snap["sessions"]), snap["sessions"]


# -- SKU / flag combinations ------------------------------------------------------------------------------------------


OK_COMBOS = [
    pytest.param(dict(sku="Standard"), False, "tunnel", id="standard"),
    pytest.param(dict(sku="Standard"), True, "tunnel", id="standard-omit-false"),
    pytest.param(dict(sku="Premium"), True, "rdp", id="premium-omit-false"),
    pytest.param(dict(sku="Developer", enable_tunneling=False), True, "ssh", id="developer-ssh"),
]


@pytest.mark.parametrize(("bastion", "omit", "command"), OK_COMBOS)
async def test_usable_bastions_issue_and_delete_sessions(emulator, bastion: dict[str, Any], omit: bool,  # type: ignore[no-untyped-def]
                                                         command: str):
    async with emulator(omit=omit, **bastion) as emu:
        async with await connect(options_for(emu, command=command)) as plane:
            assert plane.bastion.sku == bastion["sku"]
            grant = await plane.open_grant()
            session = emu.ledger.by_websocket_token(grant.websocket_token)
            assert session is not None and session.auth_token == grant.auth_token
            assert session.node_id == grant.node_id, "grant carries the issuing node's id"
            assert (session.resource_id, session.port, session.token_sent) == (VM, 22, False)
            if bastion["sku"] == "Developer":
                assert grant.websocket_url == f"wss://{grant.endpoint}/omni/webtunnel/{grant.websocket_token}"
                assert session.developer
            else:
                assert grant.websocket_url == (f"wss://{emu.info['dns_name']}/webtunnelv2/{grant.websocket_token}"
                                               f"?X-Node-Id={grant.node_id}")
            await plane.close_grant(grant)
        assert_no_leaks(emu)


REFUSED = [
    pytest.param(dict(sku="Standard", enable_tunneling=False), True, "tunnel", None, NativeClientDisabled,
                 "Native client support (enableTunneling) is not enabled", id="tunneling-absent"),
    pytest.param(dict(sku="Standard", enable_tunneling=False), False, "tunnel", None, NativeClientDisabled,
                 "enableTunneling", id="tunneling-false"),
    pytest.param(dict(sku="Basic", enable_tunneling=False), True, "tunnel", None, UnsupportedSku,
                 "must be Standard or Premium", id="basic"),
    pytest.param(dict(sku="Developer", enable_tunneling=False), False, "tunnel", None, UnsupportedSku,
                 "`tunnel` needs a Standard or Premium SKU", id="developer-tunnel"),
    pytest.param(dict(sku="Standard"), True, "tunnel", TunnelTarget(None, "10.1.0.4", 22), IpConnectDisabled,
                 "IpConnect is not enabled", id="ip-connect-absent"),
    pytest.param(dict(sku="Premium", enable_ip_connect=False), False, "tunnel", TunnelTarget(None, "10.1.0.4", 22),
                 IpConnectDisabled, "IpConnect is not enabled", id="ip-connect-false"),
]


@pytest.mark.parametrize(("bastion", "omit", "command", "target", "error", "text"), REFUSED)
async def test_unusable_bastions_are_refused_before_any_session(  # type: ignore[no-untyped-def]
    emulator, bastion: dict[str, Any], omit: bool, command: str, target: TunnelTarget | None,
    error: type[Exception], text: str,
):
    async with emulator(omit=omit, **bastion) as emu:
        with pytest.raises(error) as info:
            await connect(options_for(emu, target, command=command))
        assert text in str(info.value) and getattr(info.value, "hint", None)
        assert emu.ledger.snapshot()["sessions"] == []


async def test_ip_connect_session_uses_host_connect_id(emulator):  # type: ignore[no-untyped-def]
    async with emulator(enable_ip_connect=True) as emu:
        async with await connect(options_for(emu, TunnelTarget(None, "10.1.0.4", 3389))) as plane:
            grant = await plane.open_grant()
            session = emu.ledger.by_auth_token(grant.auth_token)
            assert session is not None
            assert session.resource_id == (f"/subscriptions/{SUB}/resourceGroups/rg-emulator/providers/"
                                           "Microsoft.Network/bh-hostConnect/10.1.0.4")
            assert (session.hostname, session.port) == ("10.1.0.4", 3389)
            await plane.close_grant(grant)
        assert_no_leaks(emu)


async def test_ip_connect_custom_port_refused_client_side(emulator):  # type: ignore[no-untyped-def]
    async with emulator(enable_ip_connect=True) as emu:
        with pytest.raises(UsageError, match="Custom ports are not allowed"):
            await connect(options_for(emu, TunnelTarget(None, "10.1.0.4", 8080)))
        assert emu.ledger.snapshot()["sessions"] == []


async def test_vmss_instance_target(emulator):  # type: ignore[no-untyped-def]
    async with emulator() as emu:
        async with await connect(options_for(emu, TunnelTarget(VMSS, None, 2222))) as plane:
            grant = await plane.open_grant()
            session = emu.ledger.by_auth_token(grant.auth_token)
            assert session is not None and (session.resource_id, session.port) == (VMSS, 2222)
            await plane.close_grant(grant)
        assert_no_leaks(emu)


async def test_concurrent_grants_each_deleted_on_their_own_node(emulator):  # type: ignore[no-untyped-def]
    async with emulator(nodes=3) as emu:
        async with await connect(options_for(emu)) as plane:
            grants = await asyncio.gather(*(plane.open_grant() for _ in range(9)))
            assert len({g.auth_token for g in grants}) == 9
            assert len({g.node_id for g in grants}) > 1, "sessions spread over nodes"
            await asyncio.gather(*(plane.close_grant(g) for g in grants))
        snap = emu.ledger.snapshot()
        assert snap["counts"]["deleted"] == 9
        assert_no_leaks(emu)


async def test_aclose_deletes_grants_left_open(emulator):  # type: ignore[no-untyped-def]
    async with emulator() as emu:
        plane = await connect(options_for(emu))
        await plane.open_grant()
        await plane.open_grant()
        await plane.aclose()
        assert emu.ledger.snapshot()["counts"]["deleted"] == 2
        assert_no_leaks(emu)


# -- ARM errors from the emulator ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "code", "hint"),
    [
        (dict(name="no-such-bastion"), "ResourceNotFound", "az network bastion list"),
        (dict(resource_group="rg-other"), "ResourceGroupNotFound", "the Bastion's resource group"),
        (dict(subscription="11111111-1111-1111-1111-111111111111"), "SubscriptionNotFound", "Check --subscription"),
    ],
)
async def test_arm_not_found_variants(emulator, change: dict[str, str], code: str, hint: str):  # type: ignore[no-untyped-def]
    async with emulator() as emu:
        with pytest.raises(BastionNotFound) as info:
            await connect(options_for(emu, **change), arm_retry_total=0)
        assert code in str(info.value) and hint in (info.value.hint or "")


async def test_strict_auth_rejects_a_token_for_the_wrong_audience(emulator, monkeypatch):  # type: ignore[no-untyped-def]
    from bastion_fast.emulator.auth import mint_token

    async with emulator(knobs=Knobs(strict_auth=True)) as emu:
        monkeypatch.setenv("BASTION_FAST_TOKEN", mint_token(tenant="t", audience="https://graph.microsoft.com"))
        with pytest.raises(AuthenticationError) as info:
            await connect(options_for(emu), arm_retry_total=0)
        assert str(info.value).startswith("ARM refused the token while reading Bastion host 'bastion-emulator'")
        assert "--tenant" in (info.value.hint or "")


# -- token-endpoint faults ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "text", "hint"),
    [
        (401, "(HTTP 401): Unauthorized", "sign in again"),
        (403, "(HTTP 403): Forbidden", "Reader"),
        (500, "(HTTP 500): Unexpected internal error", "not a VM"),
        (502, "(HTTP 502, HTML page '502 Bad Gateway')", "Try again"),
        (503, "(HTTP 503): Service Unavailable", "Try again"),
    ],
)
async def test_every_token_fault_becomes_a_clear_error(emulator, status: int, text: str, hint: str):  # type: ignore[no-untyped-def]
    async with emulator(faults=FaultConfig(token_status=status)) as emu:
        async with await connect(options_for(emu, retries=1), token_backoff=0.01) as plane:
            with pytest.raises(TokenExchangeError) as info:
                await plane.open_grant()
        assert str(info.value) == f"Bastion refused POST /api/tokens {text}"
        assert info.value.status == status and hint in (info.value.hint or "")
        assert emu.ledger.snapshot()["sessions"] == []


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_transient_5xx_fault_is_retried(emulator, status: int):  # type: ignore[no-untyped-def]
    async with emulator(faults=FaultConfig(token_status=status, token_fault_count=2)) as emu:
        async with await connect(options_for(emu, retries=2), token_backoff=0.01) as plane:
            grant = await plane.open_grant()
            await plane.close_grant(grant)
        assert emu.faults.snapshot()["token_faults_left"] == 0, "both faults consumed: two retries happened"
        assert_no_leaks(emu)


@pytest.mark.parametrize("status", [401, 403])
async def test_4xx_fault_is_not_retried(emulator, status: int):  # type: ignore[no-untyped-def]
    async with emulator(faults=FaultConfig(token_status=status, token_fault_count=1)) as emu:
        async with await connect(options_for(emu, retries=3), token_backoff=0.01) as plane:
            with pytest.raises(TokenExchangeError):
                await plane.open_grant()
            assert emu.faults.snapshot()["token_faults_left"] == 0
            grant = await plane.open_grant()  # the next connection is tried afresh and works
            await plane.close_grant(grant)
        assert_no_leaks(emu)


async def test_slow_token_endpoint_times_out(emulator):  # type: ignore[no-untyped-def]
    async with emulator(faults=FaultConfig(token_delay=1.0)) as emu:
        async with await connect(options_for(emu, read_timeout=0.2, retries=0)) as plane:
            with pytest.raises(TokenExchangeError) as info:
                await plane.open_grant()
        assert str(info.value) == f"POST /api/tokens to {emu.info['dns_name']} timed out."


# -- the service's own refusals, straight through the token client -----------------------------------------------


@pytest.fixture
async def token_client(emulator_state: Path) -> AsyncIterator[Any]:
    sessions: list[aiohttp.ClientSession] = []

    def make(ca_file: str) -> TokenClient:
        s = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=client_ssl_context(ca_file)))
        sessions.append(s)
        return TokenClient(s, retries=0)

    yield make
    for s in sessions:
        await s.close()


@pytest.mark.parametrize(
    ("bastion", "resource_id", "hostname", "status", "message", "advice"),
    [
        (dict(enable_tunneling=False), VM, None, 403, "Tunneling is disabled", "--enable-tunneling true"),
        (dict(), f"/subscriptions/{SUB}/resourceGroups/rg-vms", None, 500, "Unexpected internal error", "not a VM"),
        (dict(), f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.Network/networkInterfaces/nic", None,
         403, "java.lang.NullPointerException", "virtualMachineScaleSets"),
        (dict(enable_ip_connect=True),
         f"/subscriptions/{SUB}/resourceGroups/rg-emulator/providers/Microsoft.Network/bh-hostConnect/10.0.0.4",
         None, 404, "Invalid IP address for connection.", "IP-based connection"),
        (dict(enable_ip_connect=False),
         f"/subscriptions/{SUB}/resourceGroups/rg-emulator/providers/Microsoft.Network/bh-hostConnect/10.0.0.4",
         "10.0.0.4", 403, "java.lang.NullPointerException", "IP-based connection is enabled"),
    ],
)
async def test_service_refusals_are_explained(emulator, token_client, bastion: dict[str, Any],  # type: ignore[no-untyped-def]
                                              resource_id: str, hostname: str | None, status: int, message: str,
                                              advice: str):
    async with emulator(**bastion) as emu:
        client = token_client(emu.info["ca_file"])
        with pytest.raises(TokenExchangeError) as info:
            await client.exchange(emu.info["dns_name"], resource_id=resource_id, resource_port=22,
                                  aztoken=os.environ["BASTION_FAST_TOKEN"], hostname=hostname)
        assert (info.value.status, info.value.service_message) == (status, message)
        assert advice in (info.value.hint or "")


async def test_delete_on_the_wrong_node_is_not_counted_as_done_by_the_emulator(emulator, token_client):  # type: ignore[no-untyped-def]
    """Why grants carry their own node id: the emulator (like the service) only deletes on the issuing node."""
    async with emulator(nodes=2) as emu:
        client = token_client(emu.info["ca_file"])
        host, token = emu.info["dns_name"], os.environ["BASTION_FAST_TOKEN"]
        answer = await client.exchange(host, resource_id=VM, resource_port=22, aztoken=token)
        other = next(n for n in ("10.0.0.4", "10.0.0.5", "10.0.1.4", "10.0.1.5") if n != answer.node_id)
        await client.delete(host, answer.auth_token, other)
        session = emu.ledger.by_auth_token(answer.auth_token)
        assert session is not None and session.state != "deleted"
        assert await client.delete(host, answer.auth_token, answer.node_id) is True
        assert session.state == "deleted"
