"""The WebSocket leg's connection: TLS verification (CA bundle, hostname), HTTP CONNECT proxies, network errors."""

from __future__ import annotations

import asyncio
import base64
import socket
from pathlib import Path

import pytest

from bastion_fast.exceptions import ConfigurationError, HandshakeError, WebSocketError
from bastion_fast.tls import client_ssl_context
from bastion_fast.tunnel.connect import open_websocket, resolve_proxy
from bastion_fast.tunnel.handshake import parse_ws_url
from tests._tunnel_helpers import PKI, ConnectProxy, FakeSplice, ScriptedServer, on_each_loop, upgrade_response


def _server() -> ScriptedServer:
    return ScriptedServer(upgrade_response, tls=PKI.server)


async def _ok(server: ScriptedServer, url: str | None = None, **kw: object) -> FakeSplice:
    splice = FakeSplice()
    transport = await open_websocket(url or server.url(), splice, **kw)  # type: ignore[arg-type]
    assert splice.transport is transport
    transport.close()
    return splice


# ------------------------------------------------------------------------------------------------ TLS


@on_each_loop
async def test_ca_bundle_file_is_trusted(tmp_path: Path) -> None:
    async with _server().running() as server:
        await _ok(server, ssl_context=client_ssl_context(PKI.ca_file(tmp_path)), proxy=False)


@on_each_loop
async def test_wrong_ca_fails_with_a_clear_message(tmp_path: Path) -> None:
    async with _server().running() as server:
        with pytest.raises(WebSocketError) as info:
            await _ok(server, ssl_context=client_ssl_context(PKI.ca_file(tmp_path, other=True)), proxy=False)
    err = info.value
    assert "TLS certificate of 127.0.0.1" in str(err) and "could not be verified" in str(err)
    assert err.hint and "--ca-bundle" in err.hint
    assert "SECRETWSTOKEN" not in str(err)


@on_each_loop
async def test_hostname_is_verified() -> None:
    # The certificate names only "localhost": connecting to 127.0.0.1 must fail even though the CA is trusted.
    server = ScriptedServer(upgrade_response, tls=PKI.server_context("localhost"))
    async with server.running():
        with pytest.raises(WebSocketError, match="could not be verified") as info:
            await _ok(server, ssl_context=PKI.client(), proxy=False)
        assert "127.0.0.1" in str(info.value)
        # ... and works under the name the certificate carries.
        await _ok(server, f"wss://localhost:{server.port}/webtunnelv2/t?X-Node-Id=1", ssl_context=PKI.client(),
                  proxy=False)


@on_each_loop
async def test_unreadable_ca_bundle_is_a_configuration_error(tmp_path: Path) -> None:
    bad = tmp_path / "not-a-cert.pem"
    bad.write_text("hello")
    with pytest.raises(ConfigurationError, match="Cannot load the CA bundle"):
        client_ssl_context(str(bad))


# ------------------------------------------------------------------------------------------------ network errors


@on_each_loop
async def test_connection_refused() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(WebSocketError, match="refused the connection"):
        await open_websocket(f"wss://127.0.0.1:{port}/webtunnelv2/t?X-Node-Id=1", FakeSplice(),
                             ssl_context=PKI.client(), proxy=False)


@on_each_loop
async def test_tls_handshake_timeout_when_server_never_speaks() -> None:
    accepted: list[socket.socket] = []
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.setblocking(False)
        port = listener.getsockname()[1]

        async def accept() -> None:
            conn, _ = await asyncio.get_running_loop().sock_accept(listener)
            accepted.append(conn)

        task = asyncio.create_task(accept())
        try:
            with pytest.raises(WebSocketError, match="Timed out during TLS handshake"):
                await open_websocket(f"wss://127.0.0.1:{port}/x", FakeSplice(), ssl_context=PKI.client(),
                                     proxy=False, connect_timeout=0.3)
        finally:
            task.cancel()
            for conn in accepted:
                conn.close()


@on_each_loop
async def test_plain_ws_url_for_insecure_emulators() -> None:
    async with ScriptedServer(upgrade_response).running() as server:
        await _ok(server, proxy=False)


# ------------------------------------------------------------------------------------------------ proxies


@on_each_loop
async def test_https_proxy_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    async with _server().running() as server, ConnectProxy().running() as proxy:
        for name in ("NO_PROXY", "no_proxy", "https_proxy"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{proxy.port}")
        await _ok(server, ssl_context=PKI.client())
        assert proxy.targets == [f"127.0.0.1:{server.port}"]
        # The upgrade went through the tunnel to the real server.
        assert len(server.requests) == 1


@on_each_loop
async def test_lowercase_https_proxy_and_no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    async with _server().running() as server, ConnectProxy().running() as proxy:
        for name in ("HTTPS_PROXY", "NO_PROXY"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("https_proxy", f"http://127.0.0.1:{proxy.port}")
        monkeypatch.setenv("no_proxy", "example.com,127.0.0.1")
        await _ok(server, ssl_context=PKI.client())
        assert proxy.targets == []  # exempted: went direct
        monkeypatch.setenv("no_proxy", "example.com")
        await _ok(server, ssl_context=PKI.client())
        assert proxy.targets == [f"127.0.0.1:{server.port}"]


@on_each_loop
async def test_proxy_credentials_and_407() -> None:
    expected = "Basic " + base64.b64encode(b"alice:s3cret-pw").decode()
    async with _server().running() as server, ConnectProxy(require_auth=expected).running() as proxy:
        with pytest.raises(HandshakeError) as info:
            await _ok(server, ssl_context=PKI.client(), proxy=f"http://127.0.0.1:{proxy.port}")
        assert info.value.status == 407
        assert "refused CONNECT" in str(info.value) and "user:password" in (info.value.hint or "")
        await _ok(server, ssl_context=PKI.client(), proxy=f"http://alice:s3cret-pw@127.0.0.1:{proxy.port}")
        assert proxy.auth_seen == [None, expected]


@on_each_loop
async def test_proxy_that_is_down() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    async with _server().running() as server:
        with pytest.raises(WebSocketError, match=rf"proxy for 127.0.0.1:{server.port}"):
            await _ok(server, ssl_context=PKI.client(), proxy=f"http://127.0.0.1:{port}")


def test_unsupported_proxy_scheme() -> None:
    with pytest.raises(ConfigurationError, match="only HTTP CONNECT"):
        resolve_proxy(parse_ws_url("wss://h/x"), "socks5://127.0.0.1:1080")
    assert resolve_proxy(parse_ws_url("wss://h/x"), False) is None
    proxy = resolve_proxy(parse_ws_url("wss://h/x"), "127.0.0.1:3128")  # scheme-less, as people write it
    assert proxy is not None and (proxy.host, proxy.port) == ("127.0.0.1", 3128)


@on_each_loop
async def test_socket_options_on_the_websocket_leg() -> None:
    import sys

    async with _server().running() as server:
        splice = FakeSplice()
        transport = await open_websocket(server.url(), splice, ssl_context=PKI.client(), proxy=False)
        sock = transport.get_extra_info("socket")
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) != 0
        if sys.platform.startswith("linux"):
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 30
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL) == 10
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT) == 3
        transport.close()
