"""One Bastion host's data-plane listener: TLS, HTTP/1.1 keep-alive (h11), routing.

Routes (PROTOCOL §2–§4, §10.1; rules in :mod:`.api` and :mod:`.bridge`)::

    POST   /api/tokens                        issue a session (form body)
    DELETE /api/tokens/{authToken}            delete it (X-Node-Id header)
    POST   /api/connection                    Developer SKU brain → data-pod host (JSON body)
    GET    /api/rdpfile                       gateway-mode .rdp (Bearer)
    GET    /webtunnelv2/{websocketToken}      WebSocket (?X-Node-Id=)
    GET    /omni/webtunnel/{websocketToken}   WebSocket, Developer SKU
    *      /_emulator/…                       admin API (:mod:`.admin`)

Every request path is matched exactly; tokens are never logged.
"""

from __future__ import annotations

import asyncio
import logging
import ssl

from bastion_fast.emulator import admin, api
from bastion_fast.emulator.bridge import handle_websocket
from bastion_fast.emulator.http11 import HttpRequest, HttpResponse, HttpServerProtocol
from bastion_fast.emulator.runtime import BastionRuntime, Runtime

__all__ = ["DataPlane"]

log = logging.getLogger("bastion_fast.emulator.dataplane")

_WS_PREFIXES = (("/webtunnelv2/", "v2"), ("/omni/webtunnel/", "omni"))


class DataPlane:
    """The listener and request router for one Bastion host."""

    def __init__(self, rt: Runtime, bastion: BastionRuntime, ssl_context: ssl.SSLContext | None) -> None:
        self.rt = rt
        self.bastion = bastion
        self.ssl_context = ssl_context
        self.server: asyncio.Server | None = None
        self.connections: set[HttpServerProtocol] = set()

    async def start(self, host: str, port: int) -> int:
        """Listen on ``host:port`` (0 = a free port); returns the port."""
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(
            lambda: HttpServerProtocol(self.handle, registry=self.connections),
            host, port, ssl=self.ssl_context, backlog=512, reuse_address=True,
            ssl_handshake_timeout=10.0 if self.ssl_context else None,
        )
        return int(self.server.sockets[0].getsockname()[1])

    def close(self) -> None:
        """Stop accepting and close idle HTTP connections (WebSockets are the bridges' business)."""
        if self.server is not None:
            self.server.close()
        for conn in list(self.connections):
            conn.close()

    async def wait_closed(self) -> None:
        if self.server is not None:
            try:
                await asyncio.wait_for(self.server.wait_closed(), 2.0)
            except TimeoutError:
                log.debug("data-plane listener did not close in time")

    async def handle(self, req: HttpRequest, conn: HttpServerProtocol) -> HttpResponse | None:
        path = req.path
        method = req.method
        rt, bastion = self.rt, self.bastion
        if path == "/api/tokens":
            if method == "POST":
                return await api.post_tokens(rt, bastion, req)
            return _method_not_allowed("POST")
        if path.startswith("/api/tokens/"):
            token = path[len("/api/tokens/"):]
            if method == "DELETE" and token and "/" not in token:
                return api.delete_token(rt, bastion, req, token)
            return _method_not_allowed("DELETE") if token and "/" not in token else _not_found()
        if path == "/api/connection":
            return api.post_connection(rt, bastion, req) if method == "POST" else _method_not_allowed("POST")
        if path == "/api/rdpfile":
            return api.get_rdpfile(rt, bastion, req) if method == "GET" else _method_not_allowed("GET")
        if path.startswith("/_emulator/"):
            return admin.handle_admin(rt, req)
        if path.startswith("/api/shareable-url/"):
            from bastion_fast.emulator.arm_shareable_links import serve_link

            status, page = serve_link(rt, bastion, path)
            return HttpResponse.text(status, page, "text/html; charset=utf-8")
        for prefix, kind in _WS_PREFIXES:
            if path.startswith(prefix):
                token = path[len(prefix):]
                if not token or "/" in token:
                    return _not_found()
                if method != "GET":
                    return _method_not_allowed("GET")
                return await handle_websocket(rt, bastion, req, conn, kind=kind, token=token)
        return _not_found()


def _not_found() -> HttpResponse:
    return HttpResponse.json(404, {"message": "Not Found"})


def _method_not_allowed(allow: str) -> HttpResponse:
    return HttpResponse.json(405, {"message": "Method Not Allowed"}, headers=[("Allow", allow)])
