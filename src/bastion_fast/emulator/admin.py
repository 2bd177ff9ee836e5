"""The emulator's own admin API under ``/_emulator/`` on every data-plane listener (JSON in, JSON out).

==========================  ======  ===========================================================================
path                        method  effect
==========================  ======  ===========================================================================
``/_emulator/info``         GET     the readiness dict (same as the CLI's JSON line, without the token)
``/_emulator/sessions``     GET     the ledger: every session, counts, ids of leaked sessions
``/_emulator/faults``       GET     faults in force; POST merges a JSON object (``null`` clears a field);
                                    DELETE clears all
``/_emulator/maintenance``  POST    close every live WebSocket now: ``{"code": 1012, "reason": "…"}``, or
                                    ``{"drop": true}`` to drop them without a close frame
``/_emulator/targets``      GET     target mapping, built-in ports, sink results; POST ``{"default": "sink"}``
                                    and/or ``{"set": {"<key>": "<spec>"}}``
==========================  ======  ===========================================================================

There is no authentication: the emulator binds to loopback unless ``--allow-remote`` is given.
"""

from __future__ import annotations

import json
from typing import Any

from bastion_fast.emulator.http11 import HttpRequest, HttpResponse
from bastion_fast.emulator.runtime import Runtime
from bastion_fast.exceptions import ConfigurationError

__all__ = ["handle_admin"]


def _json_body(req: HttpRequest) -> dict[str, Any] | HttpResponse:
    if not req.body.strip():
        return {}
    try:
        data = json.loads(req.body)
    except ValueError:
        return HttpResponse.json(400, {"message": "The body must be a JSON object."})
    if not isinstance(data, dict):
        return HttpResponse.json(400, {"message": "The body must be a JSON object."})
    return data


def handle_admin(rt: Runtime, req: HttpRequest) -> HttpResponse:
    """Dispatch ``/_emulator/<name>``."""
    name = req.path[len("/_emulator/"):].strip("/")
    method = req.method
    if name == "info" and method == "GET":
        info = {k: v for k, v in rt.info.items() if k != "token"}
        return HttpResponse.json(200, info)
    if name == "sessions" and method == "GET":
        return HttpResponse.json(200, rt.ledger.snapshot())
    if name == "faults":
        if method == "GET":
            return HttpResponse.json(200, rt.faults.snapshot())
        if method == "DELETE":
            rt.faults.reset()
            return HttpResponse.json(200, rt.faults.snapshot())
        if method == "POST":
            body = _json_body(req)
            if isinstance(body, HttpResponse):
                return body
            try:
                rt.faults.update(body)
            except ConfigurationError as exc:
                return HttpResponse.json(400, {"message": str(exc), "hint": exc.hint})
            return HttpResponse.json(200, rt.faults.snapshot())
    if name == "maintenance" and method == "POST":
        body = _json_body(req)
        if isinstance(body, HttpResponse):
            return body
        code = body.get("code", 1012)
        if body.get("drop"):
            code = None
        elif not isinstance(code, int) or not (1000 <= code <= 1014 or 3000 <= code <= 4999):
            return HttpResponse.json(400, {"message": "code must be a valid close code (e.g. 1001, 1012)."})
        reason = str(body.get("reason", "Service restart"))[:100]
        closed = rt.maintenance(code=code, reason=reason)
        return HttpResponse.json(200, {"closed": closed})
    if name == "targets":
        if method == "GET":
            return HttpResponse.json(200, rt.targets.snapshot())
        if method == "POST":
            body = _json_body(req)
            if isinstance(body, HttpResponse):
                return body
            try:
                if "default" in body:
                    rt.targets.set_default(body["default"] or None)
                for key, spec in (body.get("set") or {}).items():
                    rt.targets.set(str(key), str(spec))
            except ConfigurationError as exc:
                return HttpResponse.json(400, {"message": str(exc), "hint": exc.hint})
            return HttpResponse.json(200, rt.targets.snapshot())
    if name in ("info", "sessions", "faults", "maintenance", "targets"):
        return HttpResponse.json(405, {"message": f"Method {method} not allowed on /_emulator/{name}."})
    return HttpResponse.json(404, {"message": f"Unknown admin endpoint /_emulator/{name}."})
