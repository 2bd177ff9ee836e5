"""The emulator's ARM additions at the HTTP level: bastionHosts PUT/PATCH with ARM's long-running-operation headers,
shareable links (202 + Azure-AsyncOperation + Location), the network graph and its config, 403 injection."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bastion_fast.emulator import BastionConfig, Emulator, EmulatorConfig
from bastion_fast.emulator.arm_network import parse_network
from bastion_fast.exceptions import ConfigurationError
from tests import fixtures_emulator
from tests._ops_helpers import NAME, RG, SUB, network, rid, vm_id

emulator_state_dir = fixtures_emulator.emulator_state_dir
API = "api-version=2026-03-01"
HOST = f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Network/bastionHosts/{NAME}"


class Arm:
    def __init__(self, emu: Emulator, session: aiohttp.ClientSession) -> None:
        self.emu = emu
        self.session = session
        self.base = emu.info["arm_endpoint"]
        self.headers = {"Authorization": f"Bearer {emu.info['token']}"}

    async def call(self, method: str, path_or_url: str, body: Any = None) -> tuple[int, dict[str, str], Any]:
        url = path_or_url if path_or_url.startswith("https://") else f"{self.base}{path_or_url}?{API}"
        async with self.session.request(method, url, json=body, headers=self.headers,
                                        ssl=self.emu.client_ssl_context()) as response:
            text = await response.text()
            import json

            return response.status, dict(response.headers), (json.loads(text) if text else None)


@contextlib.asynccontextmanager
async def arm(state_dir: Path, *, net: dict[str, Any] | None = None, targets: dict[str, str] | None = None,
              **bastion: Any) -> AsyncIterator[Arm]:
    cfg = EmulatorConfig(state_dir=state_dir, bastion=BastionConfig(**bastion), network=net or {},
                         targets=targets or {})
    async with Emulator(cfg) as emu, aiohttp.ClientSession() as session:
        yield Arm(emu, session)


async def test_put_is_a_long_running_operation(emulator_state_dir: Path) -> None:
    async with arm(emulator_state_dir, sku="Basic", enable_tunneling=False, net={"lro_polls": 3}) as a:
        status, _, host = await a.call("GET", HOST)
        host["sku"]["name"] = "Standard"
        host["properties"]["enableTunneling"] = True
        status, headers, body = await a.call("PUT", HOST, host)
        assert status == 200
        assert body["properties"]["provisioningState"] == "Updating"
        operation = headers["Azure-AsyncOperation"]
        assert "/providers/Microsoft.Network/locations/westeurope/operations/" in operation
        assert headers["x-ms-retry-after-ms"] == "50"
        assert (await a.call("GET", HOST))[2]["properties"]["provisioningState"] == "Updating"
        busy = await a.call("PUT", HOST, host)
        assert busy[0] == 409 and busy[2]["error"]["code"] == "AnotherOperationInProgress"
        assert not a.emu.bastion().tunneling_allowed  # not applied before the operation completes
        statuses = [(await a.call("GET", operation))[2]["status"] for _ in range(4)]
        assert statuses == ["InProgress", "InProgress", "Succeeded", "Succeeded"]
        done = (await a.call("GET", HOST))[2]
        assert done["properties"]["provisioningState"] == "Succeeded" and done["sku"]["name"] == "Standard"
        assert a.emu.bastion().tunneling_allowed and a.emu.bastion().cfg.sku == "Standard"


async def test_put_refusals_and_patch_tags(emulator_state_dir: Path) -> None:
    async with arm(emulator_state_dir, sku="Premium") as a:
        host = (await a.call("GET", HOST))[2]
        host["sku"]["name"] = "Basic"
        status, _, body = await a.call("PUT", HOST, host)
        assert status == 400 and body["error"]["code"] == "BastionHostSkuDowngradeNotAllowed"
        missing = await a.call("PUT", HOST.replace(NAME, "other"), host)
        assert missing[0] == 400 and "does not create" in missing[2]["error"]["message"]
        status, _, body = await a.call("PATCH", HOST, {"tags": {"owner": "ops"}})
        assert status == 200 and body["tags"] == {"owner": "ops"}
        assert (await a.call("GET", HOST))[2]["tags"] == {"owner": "ops"}
    async with arm(emulator_state_dir, sku="Basic") as a:
        host = (await a.call("GET", HOST))[2]
        host["properties"]["enableIpConnect"] = True
        status, _, body = await a.call("PUT", HOST, host)
        assert status == 400 and body["error"]["code"] == "BastionHostFeatureNotSupportedForSku"


async def test_shareable_links_lro_and_url(emulator_state_dir: Path) -> None:
    vm1 = vm_id("vm1")
    async with arm(emulator_state_dir, targets={vm1: "echo"}, enable_shareable_link=True) as a:
        status, headers, _ = await a.call("POST", HOST + "/createShareableLinks", {"vms": [{"vm": {"id": vm1}}]})
        assert status == 202
        location = headers["Location"]
        assert "/operationResults/" in location and "/operations/" in headers["Azure-AsyncOperation"]
        first = await a.call("GET", location)
        assert first[0] == 202
        final = await a.call("GET", location)
        assert final[0] == 200
        [link] = final[2]["value"]
        assert link["vm"]["id"] == vm1 and link["createdAt"].endswith("Z")
        async with a.session.get(link["bsl"], ssl=a.emu.client_ssl_context()) as page:
            assert page.status == 200
        listed = await a.call("POST", HOST + "/getShareableLinks", {"vms": []})
        assert [x["bsl"] for x in listed[2]["value"]] == [link["bsl"]]
        token = link["bsl"].rsplit("/", 1)[-1]
        status, headers, _ = await a.call("POST", HOST + "/deleteShareableLinksByToken", {"tokens": [token]})
        assert status == 202
        async with a.session.get(link["bsl"], ssl=a.emu.client_ssl_context()) as page:
            assert page.status == 404  # at once, before the operation is polled
        assert (await a.call("POST", HOST + "/getShareableLinks", {"vms": []}))[2]["value"] == []
    async with arm(emulator_state_dir, targets={vm1: "echo"}, enable_shareable_link=False) as a:
        status, _, body = await a.call("POST", HOST + "/createShareableLinks", {"vms": [{"vm": {"id": vm1}}]})
        assert status == 400 and body["error"]["code"] == "BastionShareableLinkNotEnabled"


async def test_network_graph(emulator_state_dir: Path) -> None:
    forbidden = rid("networkSecurityGroups", "nsg-spoke")
    async with arm(emulator_state_dir, net=network(vm2_public_ip="20.30.40.50", forbidden=[forbidden])) as a:
        status, _, vnet = await a.call("GET", rid("virtualNetworks", f"vnet-{NAME}"))
        assert status == 200
        subnets = {s["name"]: s for s in vnet["properties"]["subnets"]}
        assert subnets["AzureBastionSubnet"]["properties"]["networkSecurityGroup"]["id"].endswith("/nsg-bastion")
        assert [c["id"] for c in subnets["default"]["properties"]["ipConfigurations"]] == [
            rid("networkInterfaces", "vm1-nic") + "/ipConfigurations/ipconfig1"]
        [peering] = vnet["properties"]["virtualNetworkPeerings"]
        assert peering["properties"]["remoteVirtualNetwork"]["id"] == rid("virtualNetworks", "vnet-spoke")
        spoke = (await a.call("GET", rid("virtualNetworks", "vnet-spoke")))[2]
        assert spoke["properties"]["virtualNetworkPeerings"][0]["properties"]["peeringState"] == "Connected"
        status, _, body = await a.call("GET", forbidden)
        assert status == 403 and body["error"]["code"] == "AuthorizationFailed"
        assert "'Microsoft.Network/networkSecurityGroups/read'" in body["error"]["message"]
        pip = (await a.call("GET", rid("publicIPAddresses", "pip-vm2")))[2]
        assert pip["properties"]["ipConfiguration"]["id"].startswith(rid("networkInterfaces", "vm2-nic"))
        vm = (await a.call("GET", vm_id("vm2")))
        assert vm[0] == 200 and vm[2]["properties"]["networkProfile"]["networkInterfaces"][0]["id"].endswith("vm2-nic")
        nic = (await a.call("GET", rid("networkInterfaces", "vm2-nic")))[2]
        del nic["properties"]["ipConfigurations"][0]["properties"]["publicIPAddress"]
        status, headers, body = await a.call("PUT", rid("networkInterfaces", "vm2-nic"), nic)
        assert status == 200 and body["properties"]["provisioningState"] == "Updating"
        while (await a.call("GET", headers["Azure-AsyncOperation"]))[2]["status"] == "InProgress":
            pass
        pip = (await a.call("GET", rid("publicIPAddresses", "pip-vm2")))[2]
        assert "ipConfiguration" not in pip["properties"]
        listed = (await a.call("GET", f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Network/"
                                      "networkSecurityGroups"))[2]
        assert [n["name"] for n in listed["value"]] == ["nsg-bastion"]  # the forbidden one is not listed


async def test_default_network_without_config(emulator_state_dir: Path) -> None:
    async with arm(emulator_state_dir, targets={vm_id("web"): "echo"}) as a:
        vnet = (await a.call("GET", rid("virtualNetworks", f"vnet-{NAME}")))[2]
        assert {s["name"] for s in vnet["properties"]["subnets"]} == {"AzureBastionSubnet", "default"}
        assert (await a.call("GET", vm_id("web")))[0] == 200
        assert (await a.call("GET", rid("publicIPAddresses", f"pip-{NAME}")))[0] == 200


def test_network_config_is_validated(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="unknown key"):
        parse_network({"vnets": [{"name": "v", "colour": "blue"}]})
    with pytest.raises(ConfigurationError, match="prefix"):
        parse_network({"vnets": [{"name": "v", "subnets": [{"name": "s"}]}]})
    with pytest.raises(ConfigurationError, match=r"subnets\[0\]"):
        parse_network({"vnets": [{"name": "v", "subnets": [{"name": "s", "prefix": "10.0.0.300/24"}]}]})
    path = tmp_path / "emulator.toml"
    path.write_text('[network]\nlro_polls = 1\n[[network.nsgs]]\nname = "n"\n[[network.nsgs.rules]]\n'
                    'name = "r"\npriority = 100\ndirection = "Inbound"\naccess = "Deny"\nports = ["22", "3389"]\n')
    from bastion_fast.emulator.config import load_toml

    cfg = load_toml(path)
    cfg.validate()
    assert cfg.network["lro_polls"] == 1 and cfg.network["nsgs"][0]["rules"][0]["ports"] == ["22", "3389"]
    path.write_text("[network]\nlro_pols = 1\n")
    with pytest.raises(ConfigurationError, match="lro_pols"):
        load_toml(path).validate()
