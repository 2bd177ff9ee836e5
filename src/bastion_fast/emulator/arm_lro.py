"""Long-running operations the way ARM (and azure-core's ``AsyncARMPolling``) does them.

Theory of operation. A handler that starts a change calls :meth:`Operations.start` with a *completion* callback and
answers at once (PUT: 200/201 with the resource in ``Updating``; POST: 202) carrying two headers:

* ``Azure-AsyncOperation: …/providers/Microsoft.Network/locations/{loc}/operations/{id}`` — the poller GETs it and
  reads ``{"status": "InProgress" | "Succeeded" | "Failed"}``;
* ``Location: …/locations/{loc}/operationResults/{id}`` — for a POST the poller GETs it once the status is terminal
  and uses its body as the final result (202 while in progress, like ARM).

Progress is counted in polls, not seconds: the operation completes on its ``polls``-th status request, then the
completion callback runs (the resource moves from ``Updating`` to ``Succeeded``). Deterministic for tests, and the
client still sees the real header dance. The delay the client should wait is sent as ``Retry-After`` (whole
seconds) or, below one second, ``x-ms-retry-after-ms`` — azure-core reads both, and a ``Retry-After: 0`` would make
it fall back to its 30 s default.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from bastion_fast.emulator.arm import STATE_KEY, arm_error, arm_path

__all__ = ["OPERATIONS_KEY", "Operation", "Operations", "operations"]

log = logging.getLogger("bastion_fast.emulator.arm_lro")

_STATUS = "/subscriptions/{subscription}/providers/Microsoft.Network/locations/{location}/operations/{op}"
_RESULT = "/subscriptions/{subscription}/providers/Microsoft.Network/locations/{location}/operationResults/{op}"


@dataclass
class Operation:
    """One long-running operation."""

    id: str
    location: str
    polls_left: int
    complete: Callable[[], Any]
    status: str = "InProgress"
    result: Any = None
    error: dict[str, str] | None = None
    started: float = field(default_factory=time.time)
    ended: float | None = None

    def poll(self) -> None:
        """One status request: count down, finish on the last one."""
        if self.status != "InProgress":
            return
        self.polls_left -= 1
        if self.polls_left > 0:
            return
        try:
            self.result = self.complete()
            self.status = "Succeeded"
        except Exception as exc:  # a completion that fails turns into an ARM "Failed" operation
            log.exception("operation %s failed", self.id)
            self.status = "Failed"
            self.error = {"code": "InternalServerError", "message": str(exc)}
        self.ended = time.time()


class Operations:
    """The operations of one emulator (stored in the ARM app under :data:`OPERATIONS_KEY`)."""

    def __init__(self, *, polls: int = 2, interval: float = 0.05) -> None:
        self.polls = max(1, polls)
        self.interval = interval
        self._ops: dict[str, Operation] = {}

    def start(self, location: str, complete: Callable[[], Any]) -> Operation:
        op = Operation(id=str(uuid.uuid4()), location=location or "westeurope", polls_left=self.polls,
                       complete=complete)
        self._ops[op.id] = op
        return op

    def get(self, op_id: str) -> Operation | None:
        return self._ops.get(op_id)

    def retry_headers(self) -> dict[str, str]:
        if self.interval >= 1:
            return {"Retry-After": str(int(self.interval))}
        return {"x-ms-retry-after-ms": str(max(1, int(self.interval * 1000)))}

    def headers(self, request: web.Request, subscription: str, op: Operation, *, location: bool) -> dict[str, str]:
        """``Azure-AsyncOperation`` (and ``Location`` for POSTs) pointing back at this ARM endpoint."""
        origin = str(request.url.origin())
        version = request.query.get("api-version", "2024-01-01")
        base = f"{origin}/subscriptions/{subscription}/providers/Microsoft.Network/locations/{op.location}"
        out = {"Azure-AsyncOperation": f"{base}/operations/{op.id}?api-version={version}", **self.retry_headers()}
        if location:
            out["Location"] = f"{base}/operationResults/{op.id}?api-version={version}"
        return out


OPERATIONS_KEY = web.AppKey("bastion_fast_arm_operations", Operations)


def operations(app: web.Application, *, polls: int = 2, interval: float = 0.05) -> Operations:
    """The app's :class:`Operations`, created (with its two status routes) on first use."""
    if OPERATIONS_KEY not in app:
        app[OPERATIONS_KEY] = Operations(polls=polls, interval=interval)
        app.router.add_get(arm_path(_STATUS), _status)
        app.router.add_get(arm_path(_RESULT), _result)
    return app[OPERATIONS_KEY]


def _find(request: web.Request) -> tuple[Operations, Operation | None]:
    ops = request.app[OPERATIONS_KEY]
    state = request.app[STATE_KEY]
    op = ops.get(request.match_info["op"])
    if op is not None and not state.has_subscription(request.match_info["subscription"]):
        op = None
    return ops, op


def _not_found(request: web.Request) -> web.Response:
    return arm_error(404, "OperationNotFound", f"Operation {request.match_info['op']} was not found.")


async def _status(request: web.Request) -> web.Response:
    ops, op = _find(request)
    if op is None:
        return _not_found(request)
    op.poll()
    body: dict[str, Any] = {"id": str(request.url.path), "name": op.id, "status": op.status,
                            "startTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(op.started))}
    if op.ended is not None:
        body["endTime"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(op.ended))
    if op.error is not None:
        body["error"] = op.error
    headers = ops.retry_headers() if op.status == "InProgress" else {}
    return web.json_response(body, headers=headers)


async def _result(request: web.Request) -> web.Response:
    ops, op = _find(request)
    if op is None:
        return _not_found(request)
    op.poll()
    if op.status == "InProgress":
        return web.Response(status=202, headers={"Location": str(request.url), **ops.retry_headers()})
    if op.status == "Failed":
        error = op.error or {"code": "Failed", "message": "The operation failed."}
        return arm_error(500, error["code"], error["message"])
    if op.result is None:
        return web.Response(status=204)
    return web.json_response(op.result)
