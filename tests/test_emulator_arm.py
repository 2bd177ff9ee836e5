"""The emulator's ARM subset: shapes, errors, auth, and azure-mgmt-network (async) used unchanged against it."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
import websockets

from bastion_fast.emulator import Emulator
from bastion_fast.emulator.auth import mint_token
from tests import fixtures_emulator
from tests.emulator_client import delete_token, get_tokens, http, open_tunnel

emulator = fixtures_emulator.emulator
emulator_factory = fixtures_emulator.emulator_factory
emulator_state_dir = fixtures_emulator.emulator_state_dir

API = "api-version=2024-01-01"


def bastion_url(emu: Emulator, name: str | None = None, rg: str | None = None, suffix: str = "") -> str:
    return (f"{emu.info['arm_endpoint']}/subscriptions/{emu.info['subscription']}/resourceGroups/"
            f"{rg or emu.info['resource_group']}/providers/Microsoft.Network/bastionHosts/"
            f"{name or emu.info['bastion']}{suffix}?{API}")


async def arm_get(emu: Emulator, url: str, token: str | None = "anything", method: str = "GET",
                  json: Any = None) -> tuple[int, Any, dict[str, str]]:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    async with http(emu) as session, session.request(method, url, headers=headers, json=json) as response:
        return response.status, await response.json(content_type=None), dict(response.headers)


async def test_get_bastion_has_arm_shape(emulator: Emulator) -> None:
    status, body, headers = await arm_get(emulator, bastion_url(emulator))
    assert status == 200
    assert body["id"] == emulator.bastion().id
    assert body["type"] == "Microsoft.Network/bastionHosts"
    assert body["sku"] == {"name": "Standard"}
    props = body["properties"]
    assert props["dnsName"] == emulator.info["dns_name"]
    assert props["enableTunneling"] is True
    assert props["enableIpConnect"] is False
    assert props["enableShareableLink"] is False
    assert props["enableKerberos"] is False
    assert props["provisioningState"] == "Succeeded"
    assert props["ipConfigurations"][0]["properties"]["subnet"]["id"].endswith("/subnets/AzureBastionSubnet")
    assert "x-ms-request-id" in {k.lower() for k in headers}


async def test_paths_are_case_insensitive(emulator: Emulator) -> None:
    url = bastion_url(emulator).replace("/resourceGroups/", "/resourcegroups/").replace(
        "Microsoft.Network/bastionHosts", "microsoft.network/BASTIONHOSTS")
    status, body, _ = await arm_get(emulator, url)
    assert status == 200 and body["name"] == emulator.info["bastion"]


async def test_lists_by_subscription_and_resource_group(emulator_factory: Any) -> None:
    extra = [{"name": "b2", "resource_group": "rg-other", "sku": "Premium"},
             {"name": "b3", "resource_group": "rg-emulator", "sku": "Basic", "enable_tunneling": False}]
    async with emulator_factory(extra_bastions=extra) as emu:
        sub = f"{emu.info['arm_endpoint']}/subscriptions/{emu.info['subscription']}"
        status, body, _ = await arm_get(emu, f"{sub}/providers/Microsoft.Network/bastionHosts?{API}")
        assert status == 200 and "nextLink" not in body
        assert sorted(b["name"] for b in body["value"]) == ["b2", "b3", "bastion-emulator"]
        status, body, _ = await arm_get(
            emu, f"{sub}/resourceGroups/rg-emulator/providers/Microsoft.Network/bastionHosts?{API}")
        assert status == 200
        assert sorted(b["name"] for b in body["value"]) == ["b3", "bastion-emulator"]
        # each host has its own data plane
        dns = {b["name"]: b["properties"]["dnsName"] for b in body["value"]}
        assert dns["b3"] != dns["bastion-emulator"]


async def test_unauthenticated_is_401_with_challenge(emulator: Emulator) -> None:
    status, body, headers = await arm_get(emulator, bastion_url(emulator), token=None)
    assert status == 401
    assert body["error"]["code"] == "AuthenticationFailed"
    assert "WWW-Authenticate" in headers


async def test_api_version_missing_or_bad_is_400(emulator: Emulator) -> None:
    url = bastion_url(emulator).split("?")[0]
    status, body, _ = await arm_get(emulator, url)
    assert (status, body["error"]["code"]) == (400, "MissingApiVersionParameter")
    status, body, _ = await arm_get(emulator, url + "?api-version=2099-01-01")
    assert (status, body["error"]["code"]) == (400, "InvalidApiVersionParameter")
    assert "2024-01-01" in body["error"]["message"]


async def test_not_found_errors(emulator: Emulator) -> None:
    status, body, _ = await arm_get(emulator, bastion_url(emulator, name="nope"))
    assert (status, body["error"]["code"]) == (404, "ResourceNotFound")
    status, body, _ = await arm_get(emulator, bastion_url(emulator, rg="rg-missing"))
    assert (status, body["error"]["code"]) == (404, "ResourceGroupNotFound")
    url = bastion_url(emulator).replace(emulator.info["subscription"], "99999999-0000-0000-0000-000000000000")
    status, body, _ = await arm_get(emulator, url)
    assert (status, body["error"]["code"]) == (404, "SubscriptionNotFound")
    status, body, _ = await arm_get(emulator, f"{emulator.info['arm_endpoint']}/subscriptions/x/nothing?{API}")
    assert status == 404 and "error" in body


async def test_omit_false_booleans(emulator_factory: Any) -> None:
    async with emulator_factory(omit_false_booleans=True,
                                bastion={"enable_tunneling": False, "enable_ip_connect": False}) as emu:
        status, body, _ = await arm_get(emu, bastion_url(emu))
        assert status == 200
        props = body["properties"]
        assert "enableTunneling" not in props
        assert "enableIpConnect" not in props
        assert "enableKerberos" not in props
        assert props["dnsName"] == emu.info["dns_name"]


async def test_strict_auth_checks_audience_and_expiry(emulator_factory: Any) -> None:
    async with emulator_factory(knobs={"strict_auth": True}) as emu:
        url = bastion_url(emu)
        assert (await arm_get(emu, url, token=emu.token))[0] == 200
        for aud in ("https://management.azure.com", "https://management.core.windows.net"):
            assert (await arm_get(emu, url, token=mint_token(tenant="t", audience=aud)))[0] == 200
        status, body, _ = await arm_get(emu, url, token=mint_token(tenant="t", audience="https://graph.microsoft.com"))
        assert (status, body["error"]["code"]) == (401, "InvalidAuthenticationTokenAudience")
        expired = mint_token(tenant="t", now=time.time() - 7200, lifetime=3600)
        status, body, _ = await arm_get(emu, url, token=expired)
        assert (status, body["error"]["code"]) == (401, "ExpiredAuthenticationToken")
        status, body, _ = await arm_get(emu, url, token="not-a-jwt")
        assert (status, body["error"]["code"]) == (401, "InvalidAuthenticationToken")


async def test_any_bearer_accepted_by_default(emulator: Emulator) -> None:
    assert (await arm_get(emulator, bastion_url(emulator), token="whatever"))[0] == 200


async def test_disconnect_rejects_a_bad_body(emulator: Emulator) -> None:
    status, body, _ = await arm_get(emulator, bastion_url(emulator, suffix="/disconnectActiveSessions"),
                                    method="POST", json={"ids": []})
    assert (status, body["error"]["code"]) == (400, "InvalidRequestContent")


# -- azure-mgmt-network, unchanged, is the acceptance test ------------------------------------------------------


class StaticCredential:
    """The smallest AsyncTokenCredential: one fixed token."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.scopes: list[tuple[str, ...]] = []

    async def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        from azure.core.credentials import AccessToken

        self.scopes.append(scopes)
        return AccessToken(self.token, int(time.time()) + 3600)

    async def close(self) -> None:
        pass

    async def __aenter__(self) -> StaticCredential:
        return self

    async def __aexit__(self, *exc: object) -> None:
        pass


async def test_azure_mgmt_network_reads_lists_and_manages_sessions(emulator_factory: Any) -> None:
    from azure.core.exceptions import ResourceNotFoundError
    from azure.mgmt.network.aio import NetworkManagementClient
    from azure.mgmt.network.models import SessionIds

    async with emulator_factory(knobs={"strict_auth": True}) as emu:
        info = emu.info
        credential = StaticCredential(info["token"])
        client = NetworkManagementClient(
            credential, info["subscription"], base_url=info["arm_endpoint"],
            credential_scopes=["https://management.core.windows.net//.default"],
            connection_verify=info["ca_file"],
        )
        async with client:
            host = await client.bastion_hosts.get(info["resource_group"], info["bastion"])
            assert host.dns_name == info["dns_name"]
            assert host.enable_tunneling is True
            assert host.sku.name == "Standard"

            in_group = [b.name async for b in client.bastion_hosts.list_by_resource_group(info["resource_group"])]
            assert in_group == [info["bastion"]]
            assert [b.name async for b in client.bastion_hosts.list()] == [info["bastion"]]

            with pytest.raises(ResourceNotFoundError):
                await client.bastion_hosts.get(info["resource_group"], "missing")

            # one live session and one orphan (WebSocket ended, token never deleted)
            orphan = await get_tokens(emu)
            async with open_tunnel(emu, orphan) as ws:
                await ws.send(b"x")
                assert await ws.recv() == b"x"
            live_tokens = await get_tokens(emu, port=3389)
            async with open_tunnel(emu, live_tokens) as ws:
                poller = await client.begin_get_active_sessions(info["resource_group"], info["bastion"])
                pages = await poller.result()
                sessions = [s async for s in pages]
                assert len(sessions) == 2
                by_port = {s.protocol: s for s in sessions}
                assert set(by_port) == {"SSH", "RDP"}
                assert by_port["RDP"].target_resource_id == emu.ledger.by_auth_token(live_tokens.auth).resource_id
                assert by_port["RDP"].user_name.startswith("emulator-user")
                live_id = by_port["RDP"].session_id

                states = [s async for s in client.disconnect_active_sessions(
                    info["resource_group"], info["bastion"], SessionIds(session_ids=[live_id, "no-such-session"]))]
                assert [(s.session_id, s.state) for s in states] == [
                    (live_id, "Disconnected"), ("no-such-session", "NotFound")]
                # the WebSocket really ends, with a close frame from the server
                with pytest.raises(websockets.ConnectionClosedOK):
                    await asyncio.wait_for(ws.recv(), 5)
                assert ws.close_code == 1000

            pages = await (await client.begin_get_active_sessions(info["resource_group"], info["bastion"])).result()
            assert [s.session_id async for s in pages] == [emu.ledger.by_auth_token(orphan.auth).id]
            assert await delete_token(emu, live_tokens) == 404  # already ended by the administrator
            assert await delete_token(emu, orphan) == 204
        assert credential.scopes and credential.scopes[0] == ("https://management.core.windows.net//.default",)
