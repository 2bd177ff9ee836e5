"""Bastion shareable links: the four ARM actions azure-mgmt-network calls, and the link URL itself.

ARM side (POST on ``…/bastionHosts/{name}/…``, bodies as the SDK sends them):

* ``createShareableLinks`` ``{"vms": [{"vm": {"id": …}}]}`` — long-running: 202 with ``Azure-AsyncOperation`` and
  ``Location``; the final GET of ``Location`` returns ``{"value": [BastionShareableLink…]}``. A VM that already has
  a link gets the same link back; a VM the emulator does not know gets an entry with only ``message`` (ARM's
  partial failure).
* ``getShareableLinks`` — pageable, ``{"value": […]}``; an empty ``vms`` list means every link of the host.
* ``deleteShareableLinks`` (by VM) and ``deleteShareableLinksByToken`` (``{"tokens": […]}``) — long-running too,
  but the links stop working the moment the request is accepted.

Data-plane side: ``GET https://{dnsName}/api/shareable-url/{token}`` (the URL in ``bsl``) answers 200 with the
sign-in page while the link exists, 404 once it is revoked or expired, or when the host no longer allows links.

Expiry: Azure keeps links until they are deleted; bastion-fast records an expiry per link as a tag on the host
(``bastion_fast.ops.links.expiry_tag``). The emulator plays the scheduled ``links revoke --expired`` job: a link
whose tag says it has expired is deleted at its first use or listing after that instant. ``LinkStore.clock`` is
the time source (tests move it forward instead of sleeping).
"""

from __future__ import annotations

import logging
import time
import uuid
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from aiohttp import web

from bastion_fast.emulator.arm import STATE_KEY, ArmState, arm_error, arm_path, request_json
from bastion_fast.emulator.arm_bastion_hosts import bastion_id
from bastion_fast.emulator.arm_lro import Operations, operations

__all__ = ["LINKS_KEY", "LinkStore", "ShareableLink", "register", "serve_link", "store_for"]

log = logging.getLogger("bastion_fast.emulator.arm_shareable_links")

_BASE = "/subscriptions/{subscription}/resourceGroups/{resourceGroup}/providers/Microsoft.Network/bastionHosts/{name}"
URL_PREFIX = "/api/shareable-url/"


@dataclass
class ShareableLink:
    token: str
    bastion_id: str
    vm_id: str
    dns_name: str
    created: float

    def to_arm(self) -> dict[str, Any]:
        return {
            "vm": {"id": self.vm_id},
            "bsl": f"https://{self.dns_name}{URL_PREFIX}{self.token}",
            "createdAt": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(self.created)),
        }


@dataclass
class LinkStore:
    """Every live link of one emulator; ``clock`` returns seconds since the epoch."""

    state: ArmState
    links: dict[str, ShareableLink] = field(default_factory=dict)
    clock: Callable[[], float] = time.time
    served: int = 0

    def _expiry(self, link: ShareableLink) -> float | None:
        from bastion_fast.ops.links import expiry_tag

        host = self.state.get(link.bastion_id)
        value = (host or {}).get("tags", {}).get(expiry_tag(link.token))
        if not value:
            return None
        try:
            return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
        except ValueError:
            return None

    def sweep(self) -> None:
        """Delete links whose recorded expiry has passed."""
        now = self.clock()
        for token, link in list(self.links.items()):
            expiry = self._expiry(link)
            if expiry is not None and now >= expiry:
                log.info("shareable link for %s expired", link.vm_id.rsplit("/", 1)[-1])
                del self.links[token]

    def of(self, bastion: str, vm_ids: list[str] | None = None) -> list[ShareableLink]:
        self.sweep()
        wanted = {v.lower() for v in vm_ids} if vm_ids else None
        return [link for link in self.links.values() if link.bastion_id.lower() == bastion.lower()
                and (wanted is None or link.vm_id.lower() in wanted)]

    def revoke(self, tokens: list[str]) -> int:
        count = 0
        for token in tokens:
            if self.links.pop(token, None) is not None:
                count += 1
        return count


LINKS_KEY = web.AppKey("bastion_fast_shareable_links", LinkStore)
_BY_RUNTIME: weakref.WeakKeyDictionary[Any, LinkStore] = weakref.WeakKeyDictionary()


def store_for(runtime: Any) -> LinkStore | None:
    """The link store of the emulator that owns ``runtime`` (the data plane's view)."""
    return _BY_RUNTIME.get(runtime)


def _host(request: web.Request) -> tuple[ArmState, dict[str, Any] | None]:
    state = request.app[STATE_KEY]
    info = request.match_info
    return state, state.get(bastion_id(info["subscription"], info["resourceGroup"], info["name"]))


def _not_found(request: web.Request) -> web.Response:
    return arm_error(404, "ResourceNotFound",
                     f"The Resource 'Microsoft.Network/bastionHosts/{request.match_info['name']}' under resource "
                     f"group '{request.match_info['resourceGroup']}' was not found.")


def _links_allowed(host: dict[str, Any]) -> web.Response | None:
    sku = str(host.get("sku", {}).get("name", "Basic"))
    if sku not in ("Standard", "Premium"):
        return arm_error(400, "BastionShareableLinkNotSupportedForSku",
                         f"Shareable links need the Standard or Premium SKU; Bastion host {host['name']} is {sku}.")
    if host["properties"].get("enableShareableLink") is not True:
        return arm_error(400, "BastionShareableLinkNotEnabled",
                         f"Shareable links are not enabled on Bastion host {host['name']}.")
    return None


async def _vm_ids(request: web.Request) -> list[str] | web.Response:
    body = await request_json(request)
    vms = body.get("vms") if isinstance(body, dict) else None
    if vms is None and isinstance(body, dict):
        vms = []
    if not isinstance(vms, list):
        return arm_error(400, "InvalidRequestContent", 'Expected {"vms": [{"vm": {"id": "<vm id>"}}]}.')
    out = []
    for entry in vms:
        vm_id = ((entry or {}).get("vm") or {}).get("id") if isinstance(entry, dict) else None
        if not isinstance(vm_id, str) or not vm_id.startswith("/subscriptions/"):
            return arm_error(400, "InvalidRequestContent", "Each entry of vms needs vm.id, a VM resource id.")
        out.append(vm_id)
    return out


async def create_links(request: web.Request) -> web.Response:
    state, host = _host(request)
    if host is None:
        return _not_found(request)
    refused = _links_allowed(host)
    if refused is not None:
        return refused
    vm_ids = await _vm_ids(request)
    if isinstance(vm_ids, web.Response):
        return vm_ids
    store = request.app[LINKS_KEY]
    results: list[dict[str, Any]] = []
    for vm_id in vm_ids:
        if state.get(vm_id) is None:
            results.append({"vm": {"id": vm_id}, "message": f"The virtual machine {vm_id} was not found in the "
                            "Bastion's virtual network or its peered networks."})
            continue
        existing = store.of(host["id"], [vm_id])
        link = existing[0] if existing else ShareableLink(
            token=str(uuid.uuid4()), bastion_id=host["id"], vm_id=vm_id,
            dns_name=str(host["properties"].get("dnsName", "")), created=store.clock())
        store.links[link.token] = link
        results.append(link.to_arm())
    ops = _ops(request)
    op = ops.start(host.get("location", ""), lambda: {"value": results})
    return web.Response(status=202, headers=ops.headers(request, request.match_info["subscription"], op,
                                                        location=True))


async def get_links(request: web.Request) -> web.Response:
    _, host = _host(request)
    if host is None:
        return _not_found(request)
    vm_ids = await _vm_ids(request)
    if isinstance(vm_ids, web.Response):
        return vm_ids
    store = request.app[LINKS_KEY]
    return web.json_response({"value": [link.to_arm() for link in store.of(host["id"], vm_ids or None)]})


async def delete_links(request: web.Request) -> web.Response:
    _, host = _host(request)
    if host is None:
        return _not_found(request)
    vm_ids = await _vm_ids(request)
    if isinstance(vm_ids, web.Response):
        return vm_ids
    store = request.app[LINKS_KEY]
    count = store.revoke([link.token for link in store.of(host["id"], vm_ids)]) if vm_ids else 0
    log.info("revoked %d shareable link(s) by VM", count)
    return _accepted_delete(request, host)


async def delete_links_by_token(request: web.Request) -> web.Response:
    _, host = _host(request)
    if host is None:
        return _not_found(request)
    body = await request_json(request)
    tokens = body.get("tokens") if isinstance(body, dict) else None
    if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
        return arm_error(400, "InvalidRequestContent", 'Expected {"tokens": ["<token>", ...]}.')
    store = request.app[LINKS_KEY]
    mine = {link.token for link in store.of(host["id"])}
    count = store.revoke([t for t in tokens if t in mine])
    log.info("revoked %d shareable link(s) by token", count)
    return _accepted_delete(request, host)


def _ops(request: web.Request) -> Operations:
    return operations(request.app)


def _accepted_delete(request: web.Request, host: dict[str, Any]) -> web.Response:
    ops = _ops(request)
    op = ops.start(host.get("location", ""), lambda: None)
    return web.Response(status=202, headers=ops.headers(request, request.match_info["subscription"], op,
                                                        location=True))


def serve_link(runtime: Any, bastion: Any, path: str) -> tuple[int, str]:
    """The data plane's answer to ``GET /api/shareable-url/{token}``: (status, HTML)."""
    store = store_for(runtime)
    token = path[len(URL_PREFIX):]
    link = None
    if store is not None and token and "/" not in token:
        store.sweep()
        link = store.links.get(token)
    host = store.state.get(link.bastion_id) if store is not None and link is not None else None
    if (link is None or host is None or link.bastion_id.lower() != str(bastion.id).lower()
            or host["properties"].get("enableShareableLink") is not True):
        return 404, ("<!doctype html><title>Link not valid</title><p>This Bastion shareable link does not exist, "
                     "was revoked or has expired.</p>")
    assert store is not None
    store.served += 1
    vm = link.vm_id.rsplit("/", 1)[-1]
    return 200, (f"<!doctype html><title>Bastion: {vm}</title><h1>Connect to {vm}</h1>"
                 "<p>Sign in with the VM's username and password or SSH key (bastion-fast emulator).</p>")


def register(app: web.Application, state: ArmState) -> None:
    """Add the shareable-link actions and hand the link store to the data plane."""
    store = LinkStore(state)
    app[LINKS_KEY] = store
    if state.sessions is not None:
        _BY_RUNTIME[state.sessions] = store
    operations(app)
    app.router.add_post(arm_path(_BASE + "/createShareableLinks"), create_links)
    app.router.add_post(arm_path(_BASE + "/getShareableLinks"), get_links)
    app.router.add_post(arm_path(_BASE + "/deleteShareableLinks"), delete_links)
    app.router.add_post(arm_path(_BASE + "/deleteShareableLinksByToken"), delete_links_by_token)
