"""Expected-request → canned-response scripts for the control plane (Azure SDK test style).

``ScriptedServer`` is a loopback HTTPS server (aiohttp, certificate from a throwaway ``trustme`` CA) that plays
ARM and the Bastion data plane at once. Each test lists the requests it expects, in order, with a check and a
canned reply; the server records every request, and ``assert_done()`` fails the test on an unexpected request, a
failed check, or an expectation never met.

Also here: an environment fixture that isolates tests from the machine's Azure/proxy settings, and fake
credentials that count their calls.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trustme
from aiohttp import web

SUB = "00000000-1111-2222-3333-444444444444"
RG = "rg-bastion"
NAME = "bastion-1"
VM_ID = f"/subscriptions/{SUB}/resourceGroups/rg-vms/providers/Microsoft.Compute/virtualMachines/vm1"
VMSS_INSTANCE_ID = (f"/subscriptions/{SUB}/resourceGroups/rg-vms/providers/Microsoft.Compute/"
                    "virtualMachineScaleSets/ss1/virtualMachines/3")
BASTION_PATH = f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Network/bastionHosts/{NAME}"
BASTION_ID = BASTION_PATH
# Recognisable fake secrets: tests assert they never show up in logs or errors.
ARM_TOKEN = "eyJhbGciOiJub25lIn0.ARMTOKEN-SECRET-0123456789abcdef.c2ln"
AUTH_TOKEN = "a" * 16 + "AUTHTOKEN-SECRET" + "b" * 32
WS_TOKEN = "c" * 16 + "WSTOKEN-SECRET" + "d" * 16
NODE_ID = "10.0.0.7"

_ENV_PREFIXES = ("AZURE_", "BASTION_FAST_", "MSI_", "IDENTITY_")
_ENV_NAMES = ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "NO_PROXY", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE")


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No Azure, proxy or CA settings from the machine; an empty az config dir. Returns that dir."""
    import os

    for key in list(os.environ):
        if (key.startswith(_ENV_PREFIXES) or key.upper() in _ENV_NAMES) and key != "BASTION_FAST_CACHE_DIR":
            monkeypatch.delenv(key, raising=False)  # (the cache dir is conftest's per-test one: kept)
    config = tmp_path / "azure-config"
    config.mkdir()
    monkeypatch.setenv("AZURE_CONFIG_DIR", str(config))
    return config


@dataclass
class TLS:
    ca_file: Path
    server_context: ssl.SSLContext


@pytest.fixture(scope="session")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TLS:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(ctx)
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return TLS(path, ctx)


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-cased names
    body: bytes
    version: str

    def form(self) -> dict[str, str]:
        from urllib.parse import parse_qsl

        pairs = parse_qsl(self.body.decode(), keep_blank_values=True)
        assert len({k for k, _ in pairs}) == len(pairs), f"duplicate form fields: {pairs}"
        return dict(pairs)


@dataclass
class Reply:
    status: int = 200
    json: Any = None
    text: str | None = None
    content_type: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    drop: bool = False  # close the connection without answering


@dataclass
class Expect:
    method: str
    path: str
    reply: Reply
    check: Callable[[Recorded], None] | None = None


class ScriptedServer:
    """A loopback HTTPS server answering a script of expected requests in order."""

    def __init__(self, tls: TLS) -> None:
        self._tls = tls
        self.script: list[Expect] = []
        self.requests: list[Recorded] = []
        self.errors: list[str] = []
        self._runner: web.AppRunner | None = None
        self.port = 0

    def expect(self, method: str, path: str, reply: Reply | None = None,
               check: Callable[[Recorded], None] | None = None) -> ScriptedServer:
        self.script.append(Expect(method, path, reply or Reply(), check))
        return self

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"https://{self.host}"

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        rec = Recorded(request.method, request.path, dict(request.query),
                       {k.lower(): v for k, v in request.headers.items()}, body,
                       f"{request.version.major}.{request.version.minor}")
        self.requests.append(rec)
        if not self.script:
            self.errors.append(f"unexpected request {rec.method} {rec.path}")
            return web.Response(status=599, text="unexpected")
        exp = self.script.pop(0)
        if (exp.method, exp.path) != (rec.method, rec.path):
            self.errors.append(f"expected {exp.method} {exp.path}, got {rec.method} {rec.path}")
            return web.Response(status=599, text="unexpected")
        if exp.check is not None:
            try:
                exp.check(rec)
            except AssertionError as exc:
                self.errors.append(f"{rec.method} {rec.path}: {exc}")
                return web.Response(status=598, text="check failed")
        reply = exp.reply
        if reply.delay:
            await asyncio.sleep(reply.delay)
        if reply.drop:
            assert request.transport is not None
            request.transport.abort()
            return web.Response(status=200)
        if reply.json is not None:
            return web.Response(status=reply.status, text=json.dumps(reply.json),
                                content_type=reply.content_type or "application/json", headers=reply.headers)
        return web.Response(status=reply.status, text=reply.text or "",
                            content_type=reply.content_type or "text/plain", headers=reply.headers)

    async def __aenter__(self) -> ScriptedServer:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=self._tls.server_context)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    def assert_done(self) -> None:
        assert not self.errors, self.errors
        assert not self.script, f"expected but never received: {[(e.method, e.path) for e in self.script]}"


def bastion_json(dns_name: str, *, sku: str | None = "Standard", tunneling: bool | None = True,
                 ip_connect: bool | None = None, state: str | None = "Succeeded") -> dict[str, Any]:
    """An ARM BastionHost body; ``None`` leaves a field out, as ARM does for unset flags."""
    props: dict[str, Any] = {"dnsName": dns_name, "scaleUnits": 2}
    if tunneling is not None:
        props["enableTunneling"] = tunneling
    if ip_connect is not None:
        props["enableIpConnect"] = ip_connect
    if state is not None:
        props["provisioningState"] = state
    body: dict[str, Any] = {"id": BASTION_ID, "name": NAME, "location": "westeurope",
                            "type": "Microsoft.Network/bastionHosts", "properties": props}
    if sku is not None:
        body["sku"] = {"name": sku}
    return body


def token_json(auth: str = AUTH_TOKEN, ws: str = WS_TOKEN, node: str | None = NODE_ID) -> dict[str, Any]:
    body: dict[str, Any] = {"authToken": auth, "websocketToken": ws, "username": "", "dataSource": "",
                            "availableDataSources": []}
    if node is not None:
        body["nodeId"] = node
    return body


def check_arm_get(token: str = ARM_TOKEN) -> Callable[[Recorded], None]:
    def check(rec: Recorded) -> None:
        assert rec.query.get("api-version") == "2024-01-01", rec.query
        assert rec.headers.get("authorization") == f"Bearer {token}", "ARM GET must carry the bearer token"
        assert rec.headers.get("accept") == "application/json"
    return check


def check_token_post(*, resource_id: str, port: int, token: str = ARM_TOKEN,
                     hostname: str | None = None) -> Callable[[Recorded], None]:
    def check(rec: Recorded) -> None:
        assert rec.version == "1.1"
        assert "authorization" not in rec.headers, "the ARM token must not travel in an Authorization header"
        assert rec.headers.get("content-type", "").startswith("application/x-www-form-urlencoded")
        assert "x-node-id" not in rec.headers
        expected = {"resourceId": resource_id, "protocol": "tcptunnel", "workloadHostPort": str(port),
                    "aztoken": token}
        if hostname is not None:
            expected["hostname"] = hostname
        assert rec.form() == expected  # exact: no `token`, no stray fields
    return check


def check_delete(node: str | None = NODE_ID) -> Callable[[Recorded], None]:
    def check(rec: Recorded) -> None:
        assert rec.body == b""
        assert "authorization" not in rec.headers
        if node is None:
            assert "x-node-id" not in rec.headers
        else:
            assert rec.headers.get("x-node-id") == node
    return check


class CountingCredential:
    """An async credential returning a fixed token; records scopes, options and the calling thread."""

    def __init__(self, token: str = ARM_TOKEN, *, lifetime: float = 3600, clock: Callable[[], float] | None = None,
                 refresh_in: float | None = None, fail: BaseException | None = None) -> None:
        import time

        self.token = token
        self.lifetime = lifetime
        self.clock = clock or time.time
        self.refresh_in = refresh_in
        self.fail = fail
        self.calls: list[tuple[tuple[str, ...], dict[str, Any] | None]] = []
        self.closed = False

    async def get_token_info(self, *scopes: str, options: Any = None) -> Any:
        from azure.core.credentials import AccessTokenInfo

        self.calls.append((scopes, dict(options) if options else None))
        if self.fail is not None:
            raise self.fail
        now = self.clock()
        refresh_on = int(now + self.refresh_in) if self.refresh_in is not None else None
        return AccessTokenInfo(f"{self.token}", int(now + self.lifetime), refresh_on=refresh_on)

    async def close(self) -> None:
        self.closed = True


class ThreadRecordingSyncCredential:
    """A *sync* credential (like DeviceCodeCredential) that records which thread called it."""

    def __init__(self, token: str = ARM_TOKEN) -> None:
        self.token = token
        self.threads: list[int] = []
        self.closed_in: list[int] = []

    def get_token_info(self, *scopes: str, options: Any = None) -> Any:
        import time

        from azure.core.credentials import AccessTokenInfo

        self.threads.append(threading.get_ident())
        return AccessTokenInfo(self.token, int(time.time()) + 3600)

    def close(self) -> None:
        self.closed_in.append(threading.get_ident())


class FakeClock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now
