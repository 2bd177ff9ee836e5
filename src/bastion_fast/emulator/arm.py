"""The emulator's Azure Resource Manager subset: an aiohttp app, HTTPS on its own port.

Structure (so more resource types can be added without touching the core):

* :class:`ArmState` is the whole resource store — ARM JSON dicts keyed by lower-cased resource id — plus the hooks
  into the data plane (:class:`SessionControl`). One instance per emulator, stored in the app under
  :data:`STATE_KEY`.
* :func:`build_app` adds ARM's cross-cutting behaviour as middlewares (bearer check → 401, ``api-version`` check →
  400, ARM-shaped errors for unknown routes and crashes, request-id headers), then calls ``register(app, state)`` of
  every module in :data:`ROUTE_MODULES`. A new resource type is a new module with a ``register`` function, appended
  there.
* :func:`arm_path` turns an ARM path template into a case-insensitive aiohttp route (ARM ids are case-insensitive);
  :func:`arm_error` builds ``{"error": {"code", "message"}}`` responses.

Resource store shape::

    state.resources["/subscriptions/<s>/resourcegroups/<rg>/providers/microsoft.network/bastionhosts/<n>"] = {
        "id": "/subscriptions/<s>/resourceGroups/<rg>/providers/Microsoft.Network/bastionHosts/<n>",
        "name": "<n>", "type": "Microsoft.Network/bastionHosts", "location": "westeurope", "etag": "W/\\"…\\"",
        "tags": {}, "sku": {"name": "Standard"}, "properties": {"dnsName": "127.0.0.1:<port>", …},
    }
    state.resource_groups["<rg lower>"] = {"name": "<rg>", "location": "westeurope"}
"""

from __future__ import annotations

import importlib
import json
import logging
import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiohttp import web

from bastion_fast.emulator.auth import check_bearer

__all__ = [
    "API_VERSIONS",
    "ROUTE_MODULES",
    "STATE_KEY",
    "ArmState",
    "SessionControl",
    "arm_error",
    "arm_path",
    "build_app",
    "parse_resource_id",
]

log = logging.getLogger("bastion_fast.emulator.arm")

ROUTE_MODULES = [
    "bastion_fast.emulator.arm_bastion_hosts",
    "bastion_fast.emulator.arm_network",
    "bastion_fast.emulator.arm_bastion_ops",
    "bastion_fast.emulator.arm_shareable_links",
]
"""Modules whose ``register(app, state)`` adds routes; append a module name to add a resource type."""

API_VERSIONS = frozenset({
    "2019-04-01", "2019-06-01", "2019-07-01", "2019-08-01", "2019-09-01", "2019-11-01", "2019-12-01",
    "2020-03-01", "2020-04-01", "2020-05-01", "2020-06-01", "2020-07-01", "2020-08-01", "2020-11-01",
    "2021-02-01", "2021-03-01", "2021-05-01", "2021-08-01", "2022-01-01", "2022-05-01", "2022-07-01",
    "2022-09-01", "2022-11-01", "2023-02-01", "2023-04-01", "2023-05-01", "2023-06-01", "2023-09-01",
    "2023-11-01", "2024-01-01", "2024-03-01", "2024-05-01", "2024-07-01", "2024-10-01", "2025-01-01",
    "2025-03-01", "2025-05-01", "2025-07-01", "2025-09-01", "2026-01-01", "2026-03-01",
})
"""Microsoft.Network api-versions accepted for bastionHosts (others get 400 InvalidApiVersionParameter)."""

_NO_AUTH_PATHS = ("/metadata/endpoints",)


class SessionControl(Protocol):
    """What ARM needs from the data plane (implemented by the emulator core)."""

    def active_sessions(self, bastion_id: str) -> list[dict[str, Any]]:
        """``BastionActiveSession`` JSON objects for every undeleted session of the host."""

    async def disconnect_sessions(self, bastion_id: str, session_ids: list[str]) -> list[dict[str, Any]]:
        """End the sessions (closing their WebSockets); ``BastionSessionState`` JSON objects."""


@dataclass
class ArmState:
    """The resource store and settings shared by every ARM route module."""

    subscription: str
    tenant: str
    endpoint: str = ""
    strict_auth: bool = False
    omit_false_booleans: bool = False
    resources: dict[str, dict[str, Any]] = field(default_factory=dict)
    resource_groups: dict[str, dict[str, str]] = field(default_factory=dict)
    sessions: SessionControl | None = None

    def put(self, resource: dict[str, Any]) -> None:
        """Store ``resource`` (ARM JSON with ``id``); its resource group is created if needed."""
        rid = resource["id"]
        parts = parse_resource_id(rid)
        rg = parts.get("resourcegroups")
        if rg is not None:
            self.resource_groups.setdefault(rg.lower(), {"name": rg, "location": resource.get("location", "")})
        self.resources[rid.lower()] = resource

    def get(self, resource_id: str) -> dict[str, Any] | None:
        return self.resources.get(resource_id.lower())

    def list(self, resource_type: str, subscription: str, resource_group: str | None = None) -> list[dict[str, Any]]:
        """Resources of ``resource_type`` in a subscription (and resource group), in insertion order."""
        prefix = f"/subscriptions/{subscription}/".lower()
        if resource_group is not None:
            prefix += f"resourcegroups/{resource_group}/".lower()
        rtype = resource_type.lower()
        return [
            r for key, r in self.resources.items()
            if key.startswith(prefix) and str(r.get("type", "")).lower() == rtype
        ]

    def render(self, resource: dict[str, Any]) -> dict[str, Any]:
        """The JSON a client sees: a deep copy, false booleans left out when ``omit_false_booleans``."""
        out: dict[str, Any] = json.loads(json.dumps(resource))
        if self.omit_false_booleans:
            props = out.get("properties")
            if isinstance(props, dict):
                out["properties"] = {k: v for k, v in props.items() if v is not False}
        return out

    def has_subscription(self, subscription: str) -> bool:
        return subscription.lower() == self.subscription.lower()


STATE_KEY = web.AppKey("bastion_fast_arm_state", ArmState)


def arm_path(template: str) -> str:
    """Make the literal segments of ``template`` case-insensitive.

    ``/subscriptions/{s}`` becomes ``/{_l0:(?i:subscriptions)}/{s}``.
    """
    out = []
    for i, segment in enumerate(template.strip("/").split("/")):
        if segment.startswith("{"):
            out.append(segment)
        else:
            out.append(f"{{_l{i}:(?i:{re.escape(segment)})}}")
    return "/" + "/".join(out)


def arm_error(status: int, code: str, message: str, *, headers: dict[str, str] | None = None) -> web.Response:
    """An ARM-shaped error response."""
    return web.json_response({"error": {"code": code, "message": message}}, status=status, headers=headers)


async def request_json(request: web.Request) -> Any:
    """The request's JSON body, or ``None`` when it is absent or not JSON (handlers that name what they expect)."""
    try:
        return await request.json()
    except ValueError:
        return None


async def json_object_body(request: web.Request) -> dict[str, Any] | web.Response:
    """The request's JSON object, or the ARM 400 that says why there is none."""
    try:
        body = await request.json()
    except ValueError:
        return arm_error(400, "InvalidRequestContent", "The request content was not valid JSON.")
    if not isinstance(body, dict):
        return arm_error(400, "InvalidRequestContent", "The request content must be a JSON object.")
    return body


def parse_resource_id(resource_id: str) -> dict[str, str]:
    """Key/value pairs of an ARM id, keys lower-cased: ``{"subscriptions": s, "resourcegroups": rg, …}``."""
    parts = [p for p in resource_id.split("/") if p]
    return {parts[i].lower(): parts[i + 1] for i in range(0, len(parts) - 1, 2)}


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    request_id = str(uuid.uuid4())
    headers = {
        "x-ms-request-id": request_id,
        "x-ms-correlation-request-id": request.headers.get("x-ms-correlation-request-id", request_id),
    }
    try:
        response = await handler(request)
    except web.HTTPNotFound:
        response = arm_error(404, "NotFound", f"The requested resource path '{request.path}' was not found.")
    except web.HTTPMethodNotAllowed as exc:
        response = arm_error(405, "MethodNotAllowed",
                             f"The method '{request.method}' is not allowed for this resource; "
                             f"allowed: {', '.join(sorted(exc.allowed_methods))}.")
    except web.HTTPException as exc:
        response = arm_error(exc.status, exc.reason.replace(" ", ""), exc.text or exc.reason)
    except Exception:
        log.exception("ARM handler failed for %s %s", request.method, request.path)
        response = arm_error(500, "InternalServerError", "Encountered internal server error.")
    for key, value in headers.items():
        response.headers.setdefault(key, value)
    return response


@web.middleware
async def _auth_and_version(request: web.Request, handler: Handler) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    if request.path in _NO_AUTH_PATHS:
        return await handler(request)
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    bearer = token.strip() if scheme.lower() == "bearer" else ""
    result = check_bearer(bearer or None, strict=state.strict_auth)
    if not result.ok:
        challenge = (
            'Bearer authorization_uri="https://login.microsoftonline.com/common", error="invalid_token", '
            f'error_description="{result.message}"'
        )
        return arm_error(401, result.code, result.message, headers={"WWW-Authenticate": challenge})
    version = request.query.get("api-version")
    if version is None:
        return arm_error(400, "MissingApiVersionParameter",
                         "The api-version query parameter (?api-version=) is required for all requests.")
    if version not in API_VERSIONS:
        return arm_error(
            400, "InvalidApiVersionParameter",
            f"The api-version '{version}' is invalid. The supported versions are "
            f"'{','.join(sorted(API_VERSIONS, reverse=True))}'.",
        )
    return await handler(request)


async def _metadata_endpoints(request: web.Request) -> web.Response:
    """``az cloud register --endpoint-resource-manager`` reads this to learn the cloud's endpoints."""
    state = request.app[STATE_KEY]
    return web.json_response({
        "resourceManager": state.endpoint + "/",
        "authentication": {
            "loginEndpoint": "https://login.microsoftonline.com/",
            "audiences": ["https://management.core.windows.net/", "https://management.azure.com/"],
            "tenant": "common",
            "identityProvider": "AAD",
        },
        "name": "BastionFastEmulator",
        "suffixes": {"keyVaultDns": "vault.azure.net", "storage": "core.windows.net"},
    })


def build_app(state: ArmState, modules: list[str] | None = None) -> web.Application:
    """The ARM app: middlewares, ``/metadata/endpoints``, then each route module's ``register(app, state)``."""
    app = web.Application(middlewares=[_errors, _auth_and_version], client_max_size=1 << 20)
    app[STATE_KEY] = state
    app.router.add_get("/metadata/endpoints", _metadata_endpoints)
    for name in ROUTE_MODULES if modules is None else modules:
        module = importlib.import_module(name)
        module.register(app, state)
    return app
