"""Updates of ``Microsoft.Network/bastionHosts``: PUT (SKU and features, long-running) and PATCH (tags).

PUT follows ARM: the answer is immediate (200, the host in ``provisioningState: Updating``, with an
``Azure-AsyncOperation`` header); the new values are applied when the operation completes (see :mod:`.arm_lro`),
and only then does the host read ``Succeeded`` and the data plane honour them (``enableTunneling`` off → new token
requests refused). A second PUT while one is running gets 409 ``AnotherOperationInProgress``.

Refused like the service refuses: a SKU downgrade, a change away from Developer (that needs an AzureBastionSubnet
and a public IP the emulator does not model as a migration), and a feature the SKU does not have. The emulator does
not *create* Bastion hosts: a PUT for an unknown name answers 400 and points at the config file.
"""

from __future__ import annotations

import copy
import logging
import uuid
from typing import Any

from aiohttp import web

from bastion_fast.emulator.arm import STATE_KEY, ArmState, arm_error, arm_path, json_object_body
from bastion_fast.emulator.arm_bastion_hosts import bastion_id
from bastion_fast.emulator.arm_lro import operations

__all__ = ["FEATURE_SKUS", "register"]

log = logging.getLogger("bastion_fast.emulator.arm_bastion_ops")

_BASE = "/subscriptions/{subscription}/resourceGroups/{resourceGroup}/providers/Microsoft.Network/bastionHosts"
_RANK = {"developer": 0, "basic": 1, "standard": 2, "premium": 3}
_SKUS = {"developer": "Developer", "basic": "Basic", "standard": "Standard", "premium": "Premium"}

# Writable properties → (BastionConfig attribute, lowest SKU that may turn them on).
FEATURE_SKUS: dict[str, tuple[str, str]] = {
    "enableTunneling": ("enable_tunneling", "Standard"),
    "enableIpConnect": ("enable_ip_connect", "Standard"),
    "enableShareableLink": ("enable_shareable_link", "Standard"),
    "enableFileCopy": ("enable_file_copy", "Standard"),
    "disableCopyPaste": ("disable_copy_paste", "Standard"),
    "enableKerberos": ("enable_kerberos", "Basic"),
    "enableSessionRecording": ("enable_session_recording", "Premium"),
    "enablePrivateOnlyBastion": ("", "Premium"),
}
_OTHER_WRITABLE = {"scaleUnits": "scale_units"}


def _lookup(request: web.Request) -> tuple[ArmState, str, dict[str, Any] | None]:
    state = request.app[STATE_KEY]
    info = request.match_info
    rid = bastion_id(info["subscription"], info["resourceGroup"], info["name"])
    return state, rid, state.get(rid)


def _apply_to_runtime(state: ArmState, resource: dict[str, Any]) -> None:
    """Make the data plane follow the stored host (SKU and flags live in its BastionConfig)."""
    runtime = state.sessions
    find = getattr(runtime, "bastion_by_id", None)
    bastion = find(resource["id"]) if find is not None else None
    if bastion is None:
        return
    bastion.cfg.sku = resource["sku"]["name"]
    props = resource["properties"]
    for prop, (attr, _) in FEATURE_SKUS.items():
        if attr and prop in props:
            setattr(bastion.cfg, attr, bool(props[prop]))
    if isinstance(props.get("scaleUnits"), int):
        bastion.cfg.scale_units = props["scaleUnits"]


async def put_bastion(request: web.Request) -> web.Response:
    state, rid, current = _lookup(request)
    if current is None:
        return arm_error(400, "UnsupportedOperation",
                         f"The emulator does not create Bastion hosts; add {request.match_info['name']!r} to its "
                         "config file ([bastion] or [[bastions]]).")
    if current["properties"].get("provisioningState") == "Updating":
        return arm_error(409, "AnotherOperationInProgress",
                         f"Another operation on this or dependent resource is in progress: {rid}.")
    body = await json_object_body(request)
    if isinstance(body, web.Response):
        return body
    old_sku = current["sku"]["name"]
    wanted = _SKUS.get(str((body.get("sku") or {}).get("name") or old_sku).lower())
    if wanted is None:
        return arm_error(400, "InvalidSkuName", f"The SKU '{(body.get('sku') or {}).get('name')}' is not valid for "
                         "a Bastion host; use Basic, Standard, Premium or Developer.")
    if _RANK[wanted.lower()] < _RANK[old_sku.lower()]:
        return arm_error(400, "BastionHostSkuDowngradeNotAllowed",
                         f"Bastion host {current['name']} cannot be downgraded from {old_sku} to {wanted}.")
    if old_sku == "Developer" and wanted != "Developer":
        return arm_error(400, "BastionHostSkuUpgradeNotSupported",
                         "Upgrading a Developer Bastion needs an AzureBastionSubnet and a public IP; the emulator does "
                         "not model that migration.")
    props_in = body.get("properties") or {}
    if not isinstance(props_in, dict):
        return arm_error(400, "InvalidRequestContent", "properties must be a JSON object.")
    for prop, (_, min_sku) in FEATURE_SKUS.items():
        if props_in.get(prop) is True and _RANK[wanted.lower()] < _RANK[min_sku.lower()]:
            return arm_error(400, "BastionHostFeatureNotSupportedForSku",
                             f"{prop} requires the {min_sku} SKU or higher; Bastion host {current['name']} is "
                             f"{wanted}.")
    updated = copy.deepcopy(current)
    updated["sku"] = {"name": wanted}
    if isinstance(body.get("tags"), dict):
        updated["tags"] = {str(k): str(v) for k, v in body["tags"].items()}
    for prop in (*FEATURE_SKUS, *_OTHER_WRITABLE):
        if prop in props_in:
            updated["properties"][prop] = props_in[prop]
    updated["properties"]["provisioningState"] = "Updating"
    updated["etag"] = f'W/"{uuid.uuid4()}"'
    state.put(updated)

    def complete() -> None:
        updated["properties"]["provisioningState"] = "Succeeded"
        _apply_to_runtime(state, updated)
        log.info("Bastion host %s updated: sku %s", updated["name"], wanted)

    ops = operations(request.app)
    op = ops.start(updated.get("location", ""), complete)
    headers = ops.headers(request, request.match_info["subscription"], op, location=False)
    return web.json_response(state.render(updated), status=200, headers=headers)


async def patch_bastion(request: web.Request) -> web.Response:
    """``begin_update``: tags (and identity, ignored) — applied at once, like ARM's tag updates."""
    state, _, current = _lookup(request)
    if current is None:
        return arm_error(404, "ResourceNotFound",
                         f"The Resource 'Microsoft.Network/bastionHosts/{request.match_info['name']}' under resource "
                         f"group '{request.match_info['resourceGroup']}' was not found.")
    body = await json_object_body(request)
    if isinstance(body, web.Response):
        return body
    tags = body.get("tags")
    if tags is not None:
        if not isinstance(tags, dict) or len(tags) > 50:
            return arm_error(400, "InvalidTagsCount" if isinstance(tags, dict) else "InvalidRequestContent",
                             "Tags must be an object with at most 50 entries.")
        current["tags"] = {str(k): str(v) for k, v in tags.items()}
        current["etag"] = f'W/"{uuid.uuid4()}"'
    return web.json_response(state.render(current))


def register(app: web.Application, state: ArmState) -> None:
    """Add PUT and PATCH of bastionHosts (GET and the session actions are in :mod:`.arm_bastion_hosts`)."""
    del state
    operations(app)
    app.router.add_put(arm_path(_BASE + "/{name}"), put_bastion)
    app.router.add_patch(arm_path(_BASE + "/{name}"), patch_bastion)
