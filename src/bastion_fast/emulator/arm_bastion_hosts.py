"""ARM routes for ``Microsoft.Network/bastionHosts``: get, list (subscription, resource group), active sessions.

``getActiveSessions`` is a long-running, pageable POST in azure-mgmt-network (``begin_get_active_sessions``): the
SDK accepts 200 or 202 and, with no ``Location``/``Azure-AsyncOperation`` header, treats a 200 as finished and pages
its ``value``. The emulator answers 200 at once. ``disconnectActiveSessions`` is a pageable POST with body
``{"sessionIds": [...]}`` answering ``{"value": [BastionSessionState...]}``; it really ends the WebSockets.
"""

from __future__ import annotations

import uuid
from typing import Any

from aiohttp import web

from bastion_fast.emulator.arm import STATE_KEY, ArmState, arm_error, arm_path, request_json
from bastion_fast.emulator.config import BastionConfig

__all__ = ["BASTION_TYPE", "bastion_id", "bastion_resource", "register"]

BASTION_TYPE = "Microsoft.Network/bastionHosts"
_BASE = "/subscriptions/{subscription}/resourceGroups/{resourceGroup}/providers/Microsoft.Network/bastionHosts"


def bastion_id(subscription: str, resource_group: str, name: str) -> str:
    return (f"/subscriptions/{subscription}/resourceGroups/{resource_group}"
            f"/providers/Microsoft.Network/bastionHosts/{name}")


def bastion_resource(cfg: BastionConfig, subscription: str, dns_name: str) -> dict[str, Any]:
    """ARM JSON (api-version 2024-01-01 schema, PROTOCOL §1.1) for one configured Bastion host."""
    rid = bastion_id(subscription, cfg.resource_group, cfg.name)
    rg_prefix = f"/subscriptions/{subscription}/resourceGroups/{cfg.resource_group}/providers/Microsoft.Network"
    vnet_id = f"{rg_prefix}/virtualNetworks/vnet-{cfg.name}"
    props: dict[str, Any] = {
        "provisioningState": "Succeeded",
        "dnsName": dns_name,
        "scaleUnits": cfg.scale_units,
        "enableTunneling": cfg.enable_tunneling,
        "enableIpConnect": cfg.enable_ip_connect,
        "enableShareableLink": cfg.enable_shareable_link,
        "enableKerberos": cfg.enable_kerberos,
        "enableFileCopy": cfg.enable_file_copy,
        "disableCopyPaste": cfg.disable_copy_paste,
        "enableSessionRecording": cfg.enable_session_recording,
        "networkAcls": {"ipRules": []},
    }
    if cfg.sku == "Developer":
        props["virtualNetwork"] = {"id": vnet_id}
        props["ipConfigurations"] = []
    else:
        props["ipConfigurations"] = [{
            "id": f"{rid}/bastionHostIpConfigurations/IpConf",
            "name": "IpConf",
            "etag": f'W/"{uuid.uuid4()}"',
            "type": "Microsoft.Network/bastionHosts/bastionHostIpConfigurations",
            "properties": {
                "provisioningState": "Succeeded",
                "privateIPAllocationMethod": "Dynamic",
                "publicIPAddress": {"id": f"{rg_prefix}/publicIPAddresses/pip-{cfg.name}"},
                "subnet": {"id": f"{vnet_id}/subnets/AzureBastionSubnet"},
            },
        }]
    return {
        "id": rid,
        "name": cfg.name,
        "type": BASTION_TYPE,
        "location": cfg.location,
        "etag": f'W/"{uuid.uuid4()}"',
        "tags": dict(cfg.tags),
        "sku": {"name": cfg.sku},
        "properties": props,
    }


def _check_scope(state: ArmState, subscription: str, resource_group: str | None) -> web.Response | None:
    if not state.has_subscription(subscription):
        return arm_error(404, "SubscriptionNotFound", f"The subscription '{subscription}' could not be found.")
    if resource_group is not None and resource_group.lower() not in state.resource_groups:
        return arm_error(404, "ResourceGroupNotFound", f"Resource group '{resource_group}' could not be found.")
    return None


def _lookup(request: web.Request) -> tuple[ArmState, dict[str, Any] | None, web.Response | None]:
    state = request.app[STATE_KEY]
    info = request.match_info
    error = _check_scope(state, info["subscription"], info["resourceGroup"])
    if error is not None:
        return state, None, error
    resource = state.get(bastion_id(info["subscription"], info["resourceGroup"], info["name"]))
    if resource is None:
        return state, None, arm_error(
            404, "ResourceNotFound",
            f"The Resource '{BASTION_TYPE}/{info['name']}' under resource group '{info['resourceGroup']}' was not "
            "found. For more details please go to https://aka.ms/ARMResourceNotFoundFix",
        )
    return state, resource, None


async def get_bastion(request: web.Request) -> web.Response:
    state, resource, error = _lookup(request)
    if error is not None:
        return error
    assert resource is not None
    return web.json_response(state.render(resource))


async def list_in_group(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    sub, rg = request.match_info["subscription"], request.match_info["resourceGroup"]
    error = _check_scope(state, sub, rg)
    if error is not None:
        return error
    return web.json_response({"value": [state.render(r) for r in state.list(BASTION_TYPE, sub, rg)]})


async def list_in_subscription(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    sub = request.match_info["subscription"]
    error = _check_scope(state, sub, None)
    if error is not None:
        return error
    return web.json_response({"value": [state.render(r) for r in state.list(BASTION_TYPE, sub)]})


async def get_active_sessions(request: web.Request) -> web.Response:
    state, resource, error = _lookup(request)
    if error is not None:
        return error
    assert resource is not None
    sessions = state.sessions.active_sessions(resource["id"]) if state.sessions is not None else []
    return web.json_response({"value": sessions})


async def disconnect_active_sessions(request: web.Request) -> web.Response:
    state, resource, error = _lookup(request)
    if error is not None:
        return error
    assert resource is not None
    body = await request_json(request)
    ids = body.get("sessionIds") if isinstance(body, dict) else None
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        return arm_error(400, "InvalidRequestContent",
                         "The request content was invalid: expected {\"sessionIds\": [\"<id>\", ...]}.")
    results = await state.sessions.disconnect_sessions(resource["id"], ids) if state.sessions is not None else [
        {"sessionId": i, "message": "Session not found", "state": "NotFound"} for i in ids
    ]
    return web.json_response({"value": results})


def register(app: web.Application, state: ArmState) -> None:
    """Add the bastionHosts routes to the ARM app."""
    del state  # routes read it from the app
    app.router.add_get(arm_path("/subscriptions/{subscription}/providers/Microsoft.Network/bastionHosts"),
                       list_in_subscription)
    app.router.add_get(arm_path(_BASE), list_in_group)
    app.router.add_get(arm_path(_BASE + "/{name}"), get_bastion)
    app.router.add_post(arm_path(_BASE + "/{name}/getActiveSessions"), get_active_sessions)
    app.router.add_post(arm_path(_BASE + "/{name}/disconnectActiveSessions"), disconnect_active_sessions)
