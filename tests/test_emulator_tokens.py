"""``/api/tokens`` (POST, DELETE), ``/api/connection`` and ``/api/rdpfile`` driven by a plain aiohttp client."""

from __future__ import annotations

import asyncio
import json
import re
import time
from typing import Any

import pytest

from bastion_fast.emulator import Emulator
from bastion_fast.emulator.auth import mint_token
from tests import fixtures_emulator
from tests.emulator_client import VM_ID, Tokens, delete_token, get_tokens, http, ip_connect_id, open_tunnel

emulator = fixtures_emulator.emulator
emulator_factory = fixtures_emulator.emulator_factory
emulator_state_dir = fixtures_emulator.emulator_state_dir


def form(emu: Emulator, **fields: str | None) -> dict[str, str]:
    base: dict[str, str | None] = {"resourceId": VM_ID, "protocol": "tcptunnel", "workloadHostPort": "22",
                                   "aztoken": emu.token}
    base.update(fields)
    return {k: v for k, v in base.items() if v is not None}


async def post(emu: Emulator, data: Any = None, *, endpoint: str | None = None, **kwargs: Any) -> tuple[int, str, str]:
    async with http(emu) as session, session.post(f"https://{endpoint or emu.dns_name}/api/tokens", data=data,
                                                  **kwargs) as response:
        return response.status, response.headers.get("Content-Type", ""), await response.text()


def message(text: str) -> str:
    return str(json.loads(text)["message"])


async def test_token_exchange_answers_like_the_service(emulator: Emulator) -> None:
    status, ctype, text = await post(emulator, form(emulator))
    assert status == 200 and ctype.startswith("application/json")
    body = json.loads(text)
    assert re.fullmatch(r"[0-9a-f]{64}", body["authToken"])
    assert re.fullmatch(r"[0-9a-f]+", body["websocketToken"]) and body["websocketToken"] != body["authToken"]
    assert re.fullmatch(r"10\.0\.0\.\d+", body["nodeId"])
    assert {"username", "dataSource", "availableDataSources"} <= set(body)
    session = emulator.ledger.by_auth_token(body["authToken"])
    assert session is not None and session.state == "issued" and session.port == 22
    assert not session.token_sent


async def test_json_body_is_500_unexpected_internal_error(emulator: Emulator) -> None:
    status, _, text = await post(emulator, json=form(emulator))
    assert (status, message(text)) == (500, "Unexpected internal error")


async def test_token_in_authorization_header_instead_of_aztoken_is_500(emulator: Emulator) -> None:
    status, _, text = await post(emulator, form(emulator, aztoken=None),
                                 headers={"Authorization": f"Bearer {emulator.token}"})
    assert (status, message(text)) == (500, "Unexpected internal error")


@pytest.mark.parametrize("fields", [
    {"protocol": None},
    {"protocol": "ssh"},
    {"workloadHostPort": None},
    {"workloadHostPort": "ssh"},
    {"workloadHostPort": "70000"},
    {"resourceId": None},
    {"resourceId": "/subscriptions/s/resourceGroups/rg"},  # a resource-group id (cli#23720)
    {"resourceId": "vm1"},
])
async def test_malformed_requests_are_500(emulator: Emulator, fields: dict[str, str | None]) -> None:
    status, _, text = await post(emulator, form(emulator, **fields))
    assert (status, message(text)) == (500, "Unexpected internal error")
    assert emulator.ledger.sessions() == []


async def test_wrong_resource_type_is_403_java_npe(emulator: Emulator) -> None:
    storage = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/sa"
    status, _, text = await post(emulator, form(emulator, resourceId=storage))
    assert (status, message(text)) == (403, "java.lang.NullPointerException")


async def test_vmss_instance_is_a_valid_target(emulator: Emulator) -> None:
    vmss = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachineScaleSets/ss/virtualMachines/3"
    status, _, _ = await post(emulator, form(emulator, resourceId=vmss))
    assert status == 200


@pytest.mark.parametrize("bastion", [
    {"enable_tunneling": False},
    {"sku": "Basic", "enable_tunneling": False},
    {"sku": "Basic", "enable_tunneling": True},  # Basic cannot tunnel whatever the flag says
])
async def test_tunneling_disabled(emulator_factory: Any, bastion: dict[str, Any]) -> None:
    async with emulator_factory(bastion=bastion) as emu:
        status, _, text = await post(emu, form(emu))
        assert status == 403 and message(text) == "Tunneling is disabled"


async def test_ip_connect_rules(emulator_factory: Any) -> None:
    async with emulator_factory(default_target="echo") as emu:  # IP connect off
        status, _, text = await post(emu, form(emu, resourceId=ip_connect_id(emu, "10.1.0.4"), hostname="10.1.0.4"))
        assert status == 403 and message(text) == "java.lang.NullPointerException"
    async with emulator_factory(bastion={"enable_ip_connect": True}, default_target=None,
                                targets={"10.1.0.4:22": "echo"}) as emu:
        rid = ip_connect_id(emu, "10.1.0.4")
        status, _, text = await post(emu, form(emu, resourceId=rid))
        assert (status, message(text)) == (404, "Invalid IP address for connection.")
        status, _, text = await post(emu, form(emu, resourceId=rid, hostname="not-an-ip"))
        assert (status, message(text)) == (404, "Invalid IP address for connection.")
        status, _, text = await post(emu, form(emu, resourceId=rid, hostname="10.1.0.4", workloadHostPort="2222"))
        assert status == 403 and "2222" in message(text)
        status, _, text = await post(emu, form(emu, resourceId=rid, hostname="10.1.0.4"))
        assert status == 200
        session = emu.ledger.by_auth_token(json.loads(text)["authToken"])
        assert session is not None and session.hostname == "10.1.0.4" and session.target == "echo"
        # no mapping for another IP and no default target
        status, _, text = await post(emu, form(emu, resourceId=ip_connect_id(emu, "10.1.0.5"), hostname="10.1.0.5"))
        assert status == 404 and "Target" in message(text)


async def test_unknown_target_without_default_is_refused(emulator_factory: Any) -> None:
    async with emulator_factory(default_target=None, targets={VM_ID: "sink"}) as emu:
        other = VM_ID.replace("vm1", "vm2")
        status, _, text = await post(emu, form(emu, resourceId=other))
        assert status == 404 and "no target mapped" in message(text)
        shouting = VM_ID.upper().replace("/SUBSCRIPTIONS", "/subscriptions")
        status, _, text = await post(emu, form(emu, resourceId=shouting))
        assert status == 200  # resource ids compare case-insensitively
        assert emu.ledger.by_auth_token(json.loads(text)["authToken"]).target == "sink"  # type: ignore[union-attr]


async def test_target_mapping_by_port(emulator_factory: Any) -> None:
    async with emulator_factory(targets={f"{VM_ID}:3389": "source:10", VM_ID: "sink"}) as emu:
        rdp = await get_tokens(emu, port=3389)
        ssh = await get_tokens(emu, port=22)
        assert emu.ledger.by_auth_token(rdp.auth).target == "source:10"  # type: ignore[union-attr]
        assert emu.ledger.by_auth_token(ssh.auth).target == "sink"  # type: ignore[union-attr]


@pytest.mark.parametrize("token", [None, "", "previous"])
async def test_token_field_absent_empty_or_previous_is_accepted(emulator: Emulator, token: str | None) -> None:
    if token == "previous":
        token = (await get_tokens(emulator)).auth
    status, _, text = await post(emulator, form(emulator, token=token))
    assert status == 200
    session = emulator.ledger.by_auth_token(json.loads(text)["authToken"])
    assert session is not None and session.token_sent is (token is not None)


async def test_nodes_rotate_and_x_node_id_is_honoured(emulator_factory: Any) -> None:
    async with emulator_factory(bastion={"nodes": 3}) as emu:
        nodes = {(await get_tokens(emu)).node for _ in range(6)}
        assert nodes == {"10.0.0.4", "10.0.0.5", "10.0.0.6"}
        for _ in range(3):
            status, _, text = await post(emu, form(emu), headers={"X-Node-Id": "10.0.0.6"})
            assert status == 200 and json.loads(text)["nodeId"] == "10.0.0.6"


async def test_strict_auth_on_aztoken(emulator_factory: Any) -> None:
    async with emulator_factory(knobs={"strict_auth": True}) as emu:
        assert (await post(emu, form(emu)))[0] == 200
        graph = mint_token(tenant="t", audience="https://graph.microsoft.com")
        status, _, text = await post(emu, form(emu, aztoken=graph))
        assert status == 401 and "audience" in message(text)
        expired = mint_token(tenant="t", now=time.time() - 7200, lifetime=60)
        assert (await post(emu, form(emu, aztoken=expired)))[0] == 401


# -- DELETE --------------------------------------------------------------------------------------------------------


async def test_delete_is_204_then_404(emulator: Emulator) -> None:
    tokens = await get_tokens(emulator)
    assert await delete_token(emulator, tokens) == 204
    assert emulator.ledger.sessions()[0].state == "deleted"
    assert await delete_token(emulator, tokens) == 404


async def test_delete_needs_the_issuing_node(emulator: Emulator) -> None:
    tokens = await get_tokens(emulator)
    other = "10.0.0.5" if tokens.node == "10.0.0.4" else "10.0.0.4"
    assert await delete_token(emulator, tokens, node=other) == 404
    assert await delete_token(emulator, tokens, send_node=False) == 404
    assert emulator.ledger.by_auth_token(tokens.auth).state == "issued"  # type: ignore[union-attr]
    assert await delete_token(emulator, tokens) == 204


async def test_delete_unknown_token_is_404(emulator: Emulator) -> None:
    fake = Tokens(authToken="ab" * 32, websocketToken="cd", nodeId="10.0.0.4")
    assert await delete_token(emulator, fake) == 404


async def test_tokens_are_per_bastion(emulator_factory: Any) -> None:
    async with emulator_factory(extra_bastions=[{"name": "b2", "nodes": 2}]) as emu:
        tokens = await get_tokens(emu)
        b2 = emu.bastion("b2")
        assert b2.nodes == ["10.0.1.4", "10.0.1.5"]
        assert await delete_token(emu, tokens, endpoint=b2.dns_name) == 404
        assert await delete_token(emu, tokens) == 204


# -- faults on the token endpoint -----------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [401, 403, 500, 503])
async def test_token_fault_statuses(emulator: Emulator, status: int) -> None:
    emulator.faults.update({"token_status": status, "token_fault_count": 1})
    got, ctype, text = await post(emulator, form(emulator))
    assert got == status and ctype.startswith("application/json") and message(text)
    assert (await post(emulator, form(emulator)))[0] == 200  # only the next request failed


async def test_token_fault_502_is_an_html_page(emulator: Emulator) -> None:
    emulator.faults.update({"token_status": 502})
    for _ in range(2):  # count 0 = until cleared
        status, ctype, text = await post(emulator, form(emulator))
        assert status == 502 and ctype.startswith("text/html") and "<html>" in text
        with pytest.raises(json.JSONDecodeError):
            json.loads(text)
    emulator.faults.reset()
    assert (await post(emulator, form(emulator)))[0] == 200


async def test_token_delay_holds_the_answer(emulator: Emulator) -> None:
    emulator.faults.update({"token_delay": 60})
    request = asyncio.ensure_future(post(emulator, form(emulator)))
    done, _ = await asyncio.wait({request}, timeout=0.5)
    assert not done  # still held by the delay
    request.cancel()
    emulator.faults.update({"token_delay": 0})
    assert (await post(emulator, form(emulator)))[0] == 200


async def test_admin_api_sets_and_clears_faults(emulator: Emulator) -> None:
    base = f"https://{emulator.dns_name}/_emulator/faults"
    async with http(emulator) as session:
        async with session.post(base, json={"token_status": 403}) as r:
            assert r.status == 200 and (await r.json())["token_status"] == 403
        assert (await post(emulator, form(emulator)))[0] == 403
        async with session.post(base, json={"token_status": 999}) as r:
            assert r.status == 400 and "token_status" in (await r.json())["message"]
        async with session.post(base, json={"no_such_fault": 1}) as r:
            assert r.status == 400
        async with session.delete(base) as r:
            assert r.status == 200 and (await r.json())["token_status"] is None
        assert (await post(emulator, form(emulator)))[0] == 200


# -- Developer SKU brain, rdpfile -------------------------------------------------------------------------------------


async def test_developer_brain_returns_the_data_pod(emulator_factory: Any) -> None:
    async with emulator_factory(bastion={"sku": "Developer", "enable_tunneling": False}) as emu:
        body = {"resourceId": VM_ID, "bastionResourceId": emu.bastion().id, "vmPort": 22,
                "azToken": emu.token, "connectionType": "nativeclient"}
        async with http(emu) as session:
            async with session.post(f"https://{emu.dns_name}/api/connection", json=body) as r:
                assert r.status == 200
                pod = (await r.read()).decode()
            assert pod == emu.dns_name  # bare host:port, used verbatim by clients
            async with session.post(f"https://{emu.dns_name}/api/connection",
                                    json={**body, "bastionResourceId": body["bastionResourceId"] + "x"}) as r:
                assert r.status == 404
            async with session.post(f"https://{emu.dns_name}/api/connection", json={**body, "azToken": ""}) as r:
                assert r.status == 400
        tokens = await get_tokens(emu, endpoint=pod)
        async with open_tunnel(emu, tokens, endpoint=pod, omni=True) as ws:
            await ws.send(b"omni")
            assert await ws.recv() == b"omni"
        assert await delete_token(emu, tokens, endpoint=pod) == 204


async def test_brain_is_only_on_developer(emulator: Emulator) -> None:
    async with http(emulator) as session, session.post(f"https://{emulator.dns_name}/api/connection",
                                                       json={"resourceId": VM_ID}) as r:
        assert r.status == 404


async def test_rdpfile_needs_a_bearer(emulator: Emulator) -> None:
    url = f"https://{emulator.dns_name}/api/rdpfile?resourceId={VM_ID}&format=rdp&rdpport=3389&enablerdsaad=False"
    async with http(emulator) as session:
        async with session.get(url) as r:
            assert r.status == 401
        async with session.get(url, headers={"Authorization": f"Bearer {emulator.token}"}) as r:
            assert r.status == 200
            text = await r.text()
    assert "full address:s:vm1:3389" in text
    assert f"gatewayhostname:s:{emulator.dns_name}" in text


async def test_unknown_paths_and_methods(emulator: Emulator) -> None:
    async with http(emulator) as session:
        async with session.get(f"https://{emulator.dns_name}/api/tokens") as r:
            assert r.status == 405
        async with session.get(f"https://{emulator.dns_name}/nothing") as r:
            assert r.status == 404
        # keep-alive: several requests on one connection
        for _ in range(3):
            async with session.get(f"https://{emulator.dns_name}/_emulator/info") as r:
                assert r.status == 200 and (await r.json())["dns_name"] == emulator.dns_name
