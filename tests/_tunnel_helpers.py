"""Loopback stand-ins for the tunnel's tests: TLS material, scripted HTTP servers, a CONNECT proxy, a fake control
plane, and a minimal Bastion data plane on the ``websockets`` library (an implementation independent of ours).

Everything listens on 127.0.0.1 and is closed by the ``async with`` that started it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import hashlib
import inspect
import ssl
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import pytest

from bastion_fast.control.models import BastionInfo, TunnelGrant
from bastion_fast.exceptions import TokenExchangeError
from tests.conftest import TIMEOUT_FACTOR

WAIT = 20.0 * TIMEOUT_FACTOR
GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#: The CLI runs on uvloop (asyncio on Windows): the tunnel's tests run on both, their transports differ.
LOOPS = ("asyncio", "uvloop") if sys.platform != "win32" else ("asyncio",)


def new_loop(name: str) -> asyncio.AbstractEventLoop:
    if name == "uvloop":
        import uvloop

        return uvloop.new_event_loop()  # type: ignore[no-any-return]
    return asyncio.new_event_loop()


def run_on(loop_name: str, coro: Coroutine[Any, Any, Any], bound: float = 12 * WAIT) -> Any:
    """Run one test coroutine on a fresh loop of the named kind (bounded, so a hang fails instead of blocking)."""
    with asyncio.Runner(loop_factory=functools.partial(new_loop, loop_name)) as runner:
        return runner.run(asyncio.wait_for(coro, bound))


def on_each_loop(fn: Callable[..., Coroutine[Any, Any, Any]]) -> Callable[..., Any]:
    """Turn an ``async def`` test into a sync one run once per event loop in :data:`LOOPS` (id ``asyncio``/
    ``uvloop``); its other fixtures and parameters are untouched."""
    signature = inspect.signature(fn)

    @pytest.mark.parametrize("loop_name", LOOPS)
    @functools.wraps(fn)
    def wrapper(*args: Any, loop_name: str, **kwargs: Any) -> Any:
        return run_on(loop_name, fn(*args, **kwargs))

    params = [*signature.parameters.values(),
              inspect.Parameter("loop_name", inspect.Parameter.KEYWORD_ONLY)]
    wrapper.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
    del wrapper.__wrapped__  # type: ignore[attr-defined]  # pytest-asyncio must not see a coroutine function
    return wrapper


def accept_for(key: str) -> str:
    return base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()



@contextlib.asynccontextmanager
async def listening(handle: Any, *, ssl: Any = None) -> AsyncIterator[int]:
    """An ``asyncio.start_server`` on a free loopback port (yielded), closed on exit."""
    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=ssl)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), 2)


class Pki:
    """A throw-away CA (trustme) with a server certificate for 127.0.0.1/localhost, and a second, unrelated CA."""

    @cached_property
    def ca(self) -> Any:
        import trustme

        return trustme.CA()

    @cached_property
    def other_ca(self) -> Any:
        import trustme

        return trustme.CA()

    def server_context(self, *names: str) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ca.issue_cert(*(names or ("127.0.0.1", "localhost"))).configure_cert(ctx)
        return ctx

    @cached_property
    def server(self) -> ssl.SSLContext:
        return self.server_context()

    def client(self, *, trust_other: bool = False) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        (self.other_ca if trust_other else self.ca).configure_trust(ctx)
        return ctx

    def ca_file(self, directory: Any, *, other: bool = False) -> str:
        path = directory / ("other-ca.pem" if other else "ca.pem")
        (self.other_ca if other else self.ca).cert_pem.write_to_path(str(path))
        return str(path)


PKI = Pki()


async def read_head(reader: asyncio.StreamReader) -> tuple[str, dict[str, str]]:
    """Read an HTTP request head; return the request line and lower-cased headers."""
    raw = await reader.readuntil(b"\r\n\r\n")
    lines = raw.decode("latin-1").split("\r\n")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    return lines[0], headers


@dataclass
class ScriptedServer:
    """A TLS (or plain) server that reads one upgrade request and answers with ``respond(headers) -> bytes``."""

    respond: Callable[[dict[str, str]], bytes]
    tls: ssl.SSLContext | None = None
    then: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]] | None = None
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    port: int = 0

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line, headers = await read_head(reader)
            self.requests.append((line, headers))
            answer = self.respond(headers)
            if answer:
                writer.write(answer)
                await writer.drain()
            if self.then is not None:
                await self.then(reader, writer)
        except (OSError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            writer.close()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[ScriptedServer]:
        async with listening(self._handle, ssl=self.tls) as self.port:
            yield self

    def url(self, path: str = "/webtunnelv2/SECRETWSTOKEN0123456789?X-Node-Id=10.0.0.7") -> str:
        return f"{'wss' if self.tls else 'ws'}://127.0.0.1:{self.port}{path}"


def upgrade_response(headers: dict[str, str], *, accept: str | None = None, upgrade: str | None = "websocket",
                     connection: str | None = "Upgrade", extra: str = "") -> bytes:
    """A 101 with knobs to break it."""
    lines = ["HTTP/1.1 101 Switching Protocols"]
    if upgrade is not None:
        lines.append(f"Upgrade: {upgrade}")
    if connection is not None:
        lines.append(f"Connection: {connection}")
    lines.append(f"Sec-WebSocket-Accept: {accept if accept is not None else accept_for(headers['sec-websocket-key'])}")
    return ("\r\n".join(lines) + "\r\n" + extra + "\r\n").encode()


class ConnectProxy:
    """A tiny HTTP CONNECT proxy (optionally demanding credentials); records every CONNECT target."""

    def __init__(self, *, require_auth: str | None = None) -> None:
        self.require_auth = require_auth
        self.targets: list[str] = []
        self.auth_seen: list[str | None] = []
        self.port = 0
        self._tasks: set[asyncio.Task[None]] = set()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()
        except (OSError, RuntimeError):
            pass

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line, headers = await read_head(reader)
            method, target, _ = line.split(" ", 2)
            self.targets.append(target)
            self.auth_seen.append(headers.get("proxy-authorization"))
            if method != "CONNECT":
                writer.write(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
                return
            if self.require_auth and headers.get("proxy-authorization") != self.require_auth:
                writer.write(b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                             b"Proxy-Authenticate: Basic realm=\"t\"\r\nContent-Length: 0\r\n\r\n")
                await writer.drain()
                return
            host, port = target.rsplit(":", 1)
            up_reader, up_writer = await asyncio.open_connection(host.strip("[]"), int(port))
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await writer.drain()
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
            up_writer.close()
        except (OSError, ValueError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[ConnectProxy]:
        async with listening(self._handle) as self.port:
            yield self


class FakeSplice:
    """Records the hand-off from ``open_websocket``: the leftover and every byte that follows on the WebSocket."""

    def __init__(self) -> None:
        self.received = bytearray()
        self.transport: asyncio.Transport | None = None
        self.leftover: bytes | None = None
        self.lost = asyncio.get_running_loop().create_future()
        splice = self

        class _Proto(asyncio.Protocol):
            def data_received(self, data: bytes) -> None:
                splice.received += data

            def connection_lost(self, exc: Exception | None) -> None:
                if not splice.lost.done():
                    splice.lost.set_result(exc)

        self.ws_protocol = _Proto()

    def attach_ws(self, transport: asyncio.Transport, leftover: bytes = b"") -> None:
        self.transport = transport
        self.leftover = leftover
        self.received += leftover


# ---------------------------------------------------------------------------------------------------------------
# A minimal Bastion data plane (websockets library) + a fake control plane that issues grants for it.


@dataclass
class FakeBastion:
    """WebSocket endpoint ``/webtunnelv2/{token}?X-Node-Id=…``: echoes binary messages (or runs ``handler``).

    Tokens are single use and must come with the node id they were issued for (like the emulator / real service).
    """

    tls: ssl.SSLContext | None = None
    handler: Callable[[Any], Awaitable[None]] | None = None
    port: int = 0
    valid: dict[str, str] = field(default_factory=dict)  # websocket token -> node id
    connections: int = 0

    async def _echo(self, ws: Any) -> None:
        with contextlib.suppress(Exception):
            async for message in ws:
                await ws.send(message if isinstance(message, bytes) else message.encode())

    async def _process_request(self, connection: Any, request: Any) -> Any:
        from urllib.parse import parse_qs, urlsplit

        parts = urlsplit(request.path)
        token = parts.path.rsplit("/", 1)[-1]
        node = parse_qs(parts.query).get("X-Node-Id", [None])[0]
        if self.valid.pop(token, object()) != node:
            return connection.respond(404, '{"message":"Invalid websocket token"}')
        self.connections += 1
        return None

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[FakeBastion]:
        from websockets.asyncio.server import serve

        async with serve(self.handler or self._echo, "127.0.0.1", 0, ssl=self.tls, compression=None,
                         max_size=None, process_request=self._process_request, ping_interval=None) as server:
            self.port = next(iter(server.sockets)).getsockname()[1]
            yield self


class FakeControl:
    """A ControlPlane for tests: grants for a :class:`FakeBastion`, a ledger of live grants, scripted failures."""

    def __init__(self, bastion: FakeBastion, *, fail_grants: int = 0, grant_delay: float = 0.0) -> None:
        self.bastion_ep = bastion
        self.fail_grants = fail_grants
        self.grant_delay = grant_delay
        self.issued = 0
        self.live: dict[str, TunnelGrant] = {}
        self.deleted: list[TunnelGrant] = []
        self.closed = False
        self.bastion = BastionInfo(id="/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/"
                                   "bastionHosts/b", name="b", resource_group="rg", subscription="s",
                                   sku="Standard", dns_name=f"127.0.0.1:{bastion.port}", enable_tunneling=True,
                                   enable_ip_connect=False, provisioning_state="Succeeded")

    async def open_grant(self) -> TunnelGrant:
        if self.grant_delay:
            await asyncio.sleep(self.grant_delay)
        if self.fail_grants:
            self.fail_grants -= 1
            raise TokenExchangeError("POST /api/tokens failed: HTTP 500 Unexpected internal error", status=500)
        self.issued += 1
        auth = f"{self.issued:064x}"
        ws_token = f"ws{self.issued:030x}"
        node = f"10.0.0.{1 + self.issued % 3}"
        self.bastion_ep.valid[ws_token] = node
        scheme = "wss" if self.bastion_ep.tls else "ws"
        grant = TunnelGrant(auth_token=auth, websocket_token=ws_token, node_id=node,
                            websocket_url=f"{scheme}://127.0.0.1:{self.bastion_ep.port}/webtunnelv2/{ws_token}"
                                          f"?X-Node-Id={node}",
                            endpoint=f"127.0.0.1:{self.bastion_ep.port}")
        self.live[auth] = grant
        return grant

    async def close_grant(self, grant: TunnelGrant) -> None:
        stored = self.live.pop(grant.auth_token, None)
        assert stored is None or stored.node_id == grant.node_id, "a token was deleted with another node id"
        self.deleted.append(grant)

    async def aclose(self) -> None:
        self.closed = True
