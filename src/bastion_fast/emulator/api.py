"""The Bastion REST endpoints of the data plane: ``/api/tokens`` (POST, DELETE), ``/api/connection``, ``/api/rdpfile``.

Answers follow PROTOCOL.md §2 and §10.1. Where the real service's exact status or text is unknown, the choice is
written next to the rule below, so client authors know what is evidence and what is the emulator's pick:

=========================================================  ======  =============================================
request                                                     status  body ``message``
=========================================================  ======  =============================================
body not ``application/x-www-form-urlencoded`` (JSON)       500     ``Unexpected internal error`` [OBS]
no ``aztoken`` (e.g. sent as an Authorization header)       500     ``Unexpected internal error`` [OBS, azlin]
``aztoken`` rejected by ``--strict-auth``                   401     ARM-style reason (emulator's pick)
Bastion SKU/flags do not allow tunneling                    403     ``Tunneling is disabled`` [OBS text; status pick]
``resourceId``/``protocol``/``workloadHostPort`` missing,   500     ``Unexpected internal error`` [OBS for bad ids]
not an ARM resource id (e.g. a resource-group id)
resource type not a VM / VMSS instance / bh-hostConnect     403     ``java.lang.NullPointerException`` [OBS]
IP connect while ``enableIpConnect`` is off                 403     ``java.lang.NullPointerException`` [OBS, 403]
IP connect without (valid) ``hostname``                     404     ``Invalid IP address for connection.`` [OBS]
IP connect port not in ``ip_connect_ports`` (22, 3389)      403     ``Port N is not allowed …`` (emulator's pick)
no target mapped and no default target                      404     ``Target … could not be reached …`` (pick)
=========================================================  ======  =============================================

``token`` (absent, empty or a previous authToken) is accepted and only recorded; ``X-Node-Id`` picks the answering
node when it names one of this host's nodes.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import secrets
import time
from urllib.parse import parse_qsl

from bastion_fast.emulator.auth import check_bearer, user_of
from bastion_fast.emulator.http11 import HttpRequest, HttpResponse
from bastion_fast.emulator.ledger import Session
from bastion_fast.emulator.runtime import BastionRuntime, Runtime

__all__ = ["GATEWAY_502_HTML", "delete_token", "get_rdpfile", "post_connection", "post_tokens", "token_fault_response"]

UNEXPECTED = "Unexpected internal error"
NPE = "java.lang.NullPointerException"

GATEWAY_502_HTML = (
    "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1></center>\r\n"
    "<hr><center>Microsoft-Azure-Application-Gateway/v2</center>\r\n</body>\r\n</html>\r\n"
)

_SEG = r"[^/]+"
_RG = rf"^/subscriptions/{_SEG}/resourceGroups/{_SEG}/providers/"
_RESOURCE_RE = re.compile(rf"{_RG}{_SEG}/{_SEG}/{_SEG}(/{_SEG}/{_SEG})*$", re.IGNORECASE)
_VM_RE = re.compile(rf"{_RG}Microsoft\.Compute/virtualMachines/{_SEG}$", re.IGNORECASE)
_VMSS_RE = re.compile(rf"{_RG}Microsoft\.Compute/virtualMachineScaleSets/{_SEG}/virtualMachines/{_SEG}$", re.IGNORECASE)
_IP_RE = re.compile(rf"{_RG}Microsoft\.Network/bh-hostConnect/{_SEG}$", re.IGNORECASE)


def _message(status: int, text: str) -> HttpResponse:
    return HttpResponse.json(status, {"message": text})


def token_fault_response(status: int) -> HttpResponse:
    """What an injected token-endpoint fault looks like: JSON ``message``, or a gateway's HTML page for 502."""
    if status == 502:
        return HttpResponse.text(502, GATEWAY_502_HTML, "text/html")
    text = {401: "Unauthorized", 403: "Forbidden", 500: UNEXPECTED, 503: "Service Unavailable"}.get(status, "Error")
    return _message(status, text)


async def post_tokens(rt: Runtime, bastion: BastionRuntime, req: HttpRequest) -> HttpResponse:
    """``POST /api/tokens``: issue one Bastion session (authToken, websocketToken, nodeId)."""
    faults = rt.faults.config
    if faults.token_delay > 0:
        await asyncio.sleep(faults.token_delay)
    status = rt.faults.take_token_fault()
    if status is not None:
        return token_fault_response(status)

    content_type = req.header("content-type").split(";", 1)[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        return _message(500, UNEXPECTED)
    try:
        form = dict(parse_qsl(req.body.decode("utf-8"), keep_blank_values=True))
    except UnicodeDecodeError:
        return _message(500, UNEXPECTED)
    aztoken = form.get("aztoken", "")
    if not aztoken:
        return _message(500, UNEXPECTED)
    auth = check_bearer(aztoken, strict=rt.knobs.strict_auth)
    if not auth.ok:
        return _message(401, auth.message)
    if not bastion.tunneling_allowed:
        return _message(403, "Tunneling is disabled")

    resource_id = form.get("resourceId", "").strip()
    port_text = form.get("workloadHostPort", "").strip()
    if form.get("protocol") != "tcptunnel" or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        return _message(500, UNEXPECTED)
    port = int(port_text)
    if not _RESOURCE_RE.match(resource_id):
        return _message(500, UNEXPECTED)

    hostname: str | None = None
    if _IP_RE.match(resource_id):
        if bastion.developer or not bastion.ip_connect_allowed:
            return _message(403, NPE)
        raw_host = form.get("hostname", "").strip()
        try:
            hostname = str(ipaddress.ip_address(raw_host))
        except ValueError:
            return _message(404, "Invalid IP address for connection.")
        if port not in rt.knobs.ip_connect_ports:
            allowed = " or ".join(str(p) for p in rt.knobs.ip_connect_ports)
            return _message(403, f"Port {port} is not allowed for IP-based connection; use {allowed}.")
    elif not (_VM_RE.match(resource_id) or _VMSS_RE.match(resource_id)):
        return _message(403, NPE)

    spec = rt.targets.resolve(resource_id, port, hostname)
    if spec is None:
        return _message(404, "Target resource could not be reached from this Bastion "
                             "(emulator: no target mapped for it and no default target).")

    node = bastion.pick_node(req.header("x-node-id") or None)
    session = Session(
        bastion_id=bastion.id,
        node_id=node,
        auth_token=secrets.token_hex(32),
        websocket_token=secrets.token_hex(40),
        user=user_of(aztoken),
        resource_id=resource_id,
        port=port,
        target=str(spec),
        hostname=hostname,
        developer=bastion.developer,
        token_sent="token" in form,
        expires_at=time.monotonic() + rt.knobs.token_ttl,
        spec=spec,
    )
    rt.ledger.add(session)
    return HttpResponse.json(200, {
        "authToken": session.auth_token,
        "username": session.user,
        "dataSource": "tcptunnel",
        "availableDataSources": ["tcptunnel"],
        "websocketToken": session.websocket_token,
        "nodeId": node,
    })


def delete_token(rt: Runtime, bastion: BastionRuntime, req: HttpRequest, token: str) -> HttpResponse:
    """``DELETE /api/tokens/{authToken}`` with ``X-Node-Id``: 204, or 404 when this node does not know the token."""
    session = rt.ledger.by_auth_token(token)
    node = req.header("x-node-id")
    if session is None or session.bastion_id != bastion.id or session.node_id != node:
        return _message(404, "Session not found")
    rt.ledger.mark_deleted(session, "client")
    return HttpResponse(204)


def post_connection(rt: Runtime, bastion: BastionRuntime, req: HttpRequest) -> HttpResponse:
    """Developer SKU "brain": ``POST /api/connection`` (JSON) → the bare data-pod host as text.

    The data pod is this same listener (``dnsName``), so the answer is ``127.0.0.1:<port>``.
    """
    import json

    if not bastion.developer:
        return _message(404, "Not Found")
    try:
        body = json.loads(req.body or b"null")
    except ValueError:
        return _message(400, "Request body must be JSON.")
    if not isinstance(body, dict):
        return _message(400, "Request body must be a JSON object.")
    missing = [k for k in ("resourceId", "bastionResourceId", "vmPort", "azToken") if body.get(k) in (None, "")]
    if missing:
        return _message(400, f"Missing field(s): {', '.join(missing)}.")
    auth = check_bearer(str(body["azToken"]), strict=rt.knobs.strict_auth)
    if not auth.ok:
        return _message(401, auth.message)
    if str(body["bastionResourceId"]).lower() != bastion.id.lower():
        return _message(404, f"Failed to get a data pod from the brain for bastion - {bastion.dns_name}")
    try:
        int(body["vmPort"])
    except (TypeError, ValueError):
        return _message(400, "vmPort must be a port number.")
    return HttpResponse.text(200, bastion.dns_name)


def get_rdpfile(rt: Runtime, bastion: BastionRuntime, req: HttpRequest) -> HttpResponse:
    """Gateway-mode rdp: ``GET /api/rdpfile?resourceId=…&format=rdp&rdpport=…`` with a Bearer token → .rdp text."""
    scheme, _, token = req.header("authorization").partition(" ")
    auth = check_bearer(token.strip() if scheme.lower() == "bearer" else None, strict=rt.knobs.strict_auth)
    if not auth.ok:
        return _message(401, auth.message)
    if bastion.cfg.sku not in ("Standard", "Premium"):
        return _message(403, "Tunneling is disabled")
    resource_id = req.query_ci("resourceId") or ""
    if not (_VM_RE.match(resource_id) or _VMSS_RE.match(resource_id)):
        return _message(400, "Invalid resourceId.")
    port = req.query_ci("rdpport") or "3389"
    aad = (req.query_ci("enablerdsaad") or "").lower() == "true"
    name = resource_id.rstrip("/").rsplit("/", 1)[-1]
    lines = [
        f"full address:s:{name}:{port}",
        f"gatewayhostname:s:{bastion.dns_name}",
        "gatewayusagemethod:i:1",
        "gatewaycredentialssource:i:5",
        "gatewayprofileusagemethod:i:1",
        f"gatewayaccesstoken:s:{secrets.token_hex(32)}",
        "prompt for credentials:i:1",
        f"enablerdsaadauth:i:{int(aad)}",
        "authentication level:i:2",
        "",
    ]
    return HttpResponse.text(200, "\r\n".join(lines), "application/x-rdp")
