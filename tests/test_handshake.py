"""The opening handshake: the exact request az sends, strict validation of the 101, clear errors for refusals.

Two levels: ``ClientHandshake`` fed bytes directly (sans I/O), and ``open_websocket`` against tiny loopback
servers that answer with well-formed and malformed responses over real TLS.
"""

from __future__ import annotations

import asyncio
import base64
import json

import pytest

from bastion_fast.exceptions import HandshakeError, WebSocketError
from bastion_fast.tunnel.connect import open_websocket
from bastion_fast.tunnel.handshake import MAX_HEAD_BYTES, ClientHandshake
from tests._tunnel_helpers import PKI, WAIT, FakeSplice, ScriptedServer, accept_for, on_each_loop, upgrade_response

TOKEN = "SECRETWSTOKEN0123456789"
URL = f"wss://bastion.example.net/webtunnelv2/{TOKEN}?X-Node-Id=10.0.0.7"


def _request_headers(hs: ClientHandshake) -> tuple[str, dict[str, str]]:
    lines = hs.request().decode().split("\r\n")
    headers = {}
    for line in lines[1:]:
        if line:
            k, v = line.split(":", 1)
            assert k.lower() not in headers, f"duplicate header {k}"
            headers[k.lower()] = v.strip()
    assert hs.request().endswith(b"\r\n\r\n")
    return lines[0], headers


def _accept(hs: ClientHandshake, **kw: object) -> bytes:
    _, headers = _request_headers(hs)
    return upgrade_response(headers, **kw)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------ request shape


def test_request_matches_what_az_sends() -> None:
    hs = ClientHandshake(URL)
    line, headers = _request_headers(hs)
    assert line == f"GET /webtunnelv2/{TOKEN}?X-Node-Id=10.0.0.7 HTTP/1.1"
    assert headers["host"] == "bastion.example.net"
    assert headers["origin"] == "https://bastion.example.net"
    assert headers["upgrade"] == "websocket"
    assert headers["connection"] == "Upgrade"
    assert headers["sec-websocket-version"] == "13"
    assert len(base64.b64decode(headers["sec-websocket-key"])) == 16
    # No subprotocol, no compression, no credentials in headers.
    for forbidden in ("sec-websocket-extensions", "sec-websocket-protocol", "authorization", "cookie"):
        assert forbidden not in headers


def test_origin_and_host_carry_a_non_default_port() -> None:
    _, headers = _request_headers(ClientHandshake("wss://127.0.0.1:8443/webtunnelv2/t?X-Node-Id=1"))
    assert headers["host"] == "127.0.0.1:8443"
    assert headers["origin"] == "https://127.0.0.1:8443"


def test_each_handshake_uses_a_fresh_key() -> None:
    keys = {_request_headers(ClientHandshake(URL))[1]["sec-websocket-key"] for _ in range(20)}
    assert len(keys) == 20


# ------------------------------------------------------------------------------------------------ 101 handling


def test_valid_101_returns_the_bytes_after_it() -> None:
    hs = ClientHandshake(URL)
    frames = b"\x82\x03abc\x82\x01d"
    assert hs.receive_data(_accept(hs) + frames)
    assert hs.result() == frames
    # Bytes arriving after completion (before the pump took over) are kept too, in order.
    hs.receive_data(b"\x82\x01e")
    assert hs.result() == frames + b"\x82\x01e"


def test_response_split_into_single_bytes() -> None:
    hs = ClientHandshake(URL)
    response = _accept(hs) + b"\x82\x01z"
    done = [hs.receive_data(response[i:i + 1]) for i in range(len(response))]
    assert done[-1] and not any(done[:-len(b"\x82\x01z") - 1])
    assert hs.result() == b"\x82\x01z"


def test_header_names_and_upgrade_value_are_case_insensitive() -> None:
    hs = ClientHandshake(URL)
    _, headers = _request_headers(hs)
    response = (f"HTTP/1.1 101 Switching Protocols\r\nupgrade: WebSocket\r\nconnection: upgrade\r\n"
                f"sec-websocket-accept: {accept_for(headers['sec-websocket-key'])}\r\n\r\n").encode()
    assert hs.receive_data(response)
    assert hs.result() == b""


@pytest.mark.parametrize(("kw", "needle"), [
    ({"accept": "dGhlIHNhbXBsZSBub25jZQ=="}, "Sec-WebSocket-Accept"),
    ({"upgrade": None}, "Upgrade"),
    ({"upgrade": "h2c"}, "Upgrade"),
    ({"connection": None}, "Connection"),
    ({"connection": "keep-alive"}, "Connection"),
    ({"extra": "Sec-WebSocket-Extensions: permessage-deflate\r\n"}, "negotiate"),
    ({"extra": "Sec-WebSocket-Protocol: chat\r\n"}, "negotiate"),
], ids=["bad-accept", "no-upgrade", "wrong-upgrade", "no-connection", "wrong-connection", "extension",
        "subprotocol"])
def test_invalid_101_is_refused(kw: dict[str, object], needle: str) -> None:
    hs = ClientHandshake(URL)
    assert hs.receive_data(_accept(hs, **kw) + b"\x82\x01x")
    with pytest.raises(HandshakeError) as info:
        hs.result()
    assert needle in str(info.value)
    assert info.value.status == 101
    assert info.value.hint
    assert TOKEN not in str(info.value)


# ------------------------------------------------------------------------------------------------ refusals


def test_refusal_with_json_message() -> None:
    hs = ClientHandshake(URL)
    body = json.dumps({"message": "Invalid websocket token"}).encode()
    hs.receive_data(b"HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\n\r\n" % len(body) + body)
    assert hs.done
    with pytest.raises(HandshakeError) as info:
        hs.result()
    err = info.value
    assert err.status == 404
    assert "HTTP 404 Not Found" in str(err) and "Invalid websocket token" in str(err)
    assert "bastion.example.net" in str(err) and TOKEN not in str(err)
    assert err.hint and "node id" in err.hint


def test_refusal_body_arriving_in_pieces() -> None:
    hs = ClientHandshake(URL)
    body = b'{"message":"Tunneling is disabled"}'
    assert not hs.receive_data(b"HTTP/1.1 403 Forbidden\r\nContent-Length: %d\r\n\r\n" % len(body) + body[:5])
    assert hs.receive_data(body[5:])
    with pytest.raises(HandshakeError, match="403 Forbidden: Tunneling is disabled"):
        hs.result()


def test_refusal_with_html_body_until_eof() -> None:
    hs = ClientHandshake(URL)
    hs.receive_data(b"HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/html\r\n\r\n"
                    b"<html><head><title>502 Bad Gateway</title></head><body><h1>nginx</h1></body></html>")
    assert not hs.done  # no length: the body ends at EOF
    hs.receive_eof()
    with pytest.raises(HandshakeError) as info:
        hs.result()
    assert info.value.status == 502
    assert str(info.value).endswith("HTTP 502 Bad Gateway: 502 Bad Gateway")
    assert "proxy" in (info.value.hint or "")


def test_eof_before_any_response() -> None:
    hs = ClientHandshake(URL)
    hs.receive_data(b"HTTP/1.1 101 Swi")
    hs.receive_eof()
    with pytest.raises(HandshakeError, match="closed the connection during the WebSocket handshake"):
        hs.result()


def test_not_http_at_all() -> None:
    hs = ClientHandshake(URL)
    hs.receive_data(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")
    with pytest.raises(HandshakeError, match="invalid handshake response"):
        hs.result()


def test_endless_head_is_bounded() -> None:
    hs = ClientHandshake(URL)
    hs.receive_data(b"HTTP/1.1 101 Switching Protocols\r\n")
    chunk = b"X-Filler: " + b"a" * 1000 + b"\r\n"
    while not hs.done:
        hs.receive_data(chunk)
        assert hs._buffer.__len__() <= MAX_HEAD_BYTES + len(chunk)
    with pytest.raises(HandshakeError, match="larger than"):
        hs.result()


# ------------------------------------------------------------------------------------------------ over sockets


@on_each_loop
async def test_open_websocket_hands_leftover_and_stream_to_the_splice() -> None:
    async def then(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"\x82\x05later")
        await writer.drain()
        await reader.read()

    server = ScriptedServer(lambda h: upgrade_response(h) + b"\x82\x05early", tls=PKI.server, then=then)
    async with server.running():
        splice = FakeSplice()
        transport = await open_websocket(server.url(), splice, ssl_context=PKI.client(), proxy=False)
        assert splice.transport is transport
        assert transport.get_protocol() is splice.ws_protocol
        assert splice.leftover is not None and splice.leftover.startswith(b"\x82\x05early")
        async with asyncio.timeout(WAIT):
            while bytes(splice.received) != b"\x82\x05early\x82\x05later":
                await asyncio.sleep(0.01)
        transport.close()
        await asyncio.wait_for(splice.lost, WAIT)
    line, headers = server.requests[0]
    assert line.startswith("GET /webtunnelv2/SECRETWSTOKEN0123456789?X-Node-Id=10.0.0.7 ")
    assert headers["origin"] == f"https://127.0.0.1:{server.port}"


@on_each_loop
async def test_open_websocket_non_101_with_body() -> None:
    body = b'{"message":"Invalid websocket token"}'
    server = ScriptedServer(lambda h: b"HTTP/1.1 404 Not Found\r\nContent-Length: %d\r\n\r\n" % len(body) + body,
                            tls=PKI.server)
    async with server.running():
        splice = FakeSplice()
        with pytest.raises(HandshakeError) as info:
            await open_websocket(server.url(), splice, ssl_context=PKI.client(), proxy=False)
    assert info.value.status == 404 and "Invalid websocket token" in str(info.value)
    assert splice.transport is None  # nothing handed over


@on_each_loop
async def test_open_websocket_bad_accept_over_tls() -> None:
    server = ScriptedServer(lambda h: upgrade_response(h, accept="AAAAAAAAAAAAAAAAAAAAAAAAAAA="), tls=PKI.server)
    async with server.running():
        with pytest.raises(HandshakeError, match="Sec-WebSocket-Accept"):
            await open_websocket(server.url(), FakeSplice(), ssl_context=PKI.client(), proxy=False)


@on_each_loop
async def test_open_websocket_missing_upgrade_over_tls() -> None:
    server = ScriptedServer(lambda h: upgrade_response(h, upgrade=None), tls=PKI.server)
    async with server.running():
        with pytest.raises(HandshakeError, match="Upgrade"):
            await open_websocket(server.url(), FakeSplice(), ssl_context=PKI.client(), proxy=False)


@on_each_loop
async def test_open_websocket_server_silent_times_out() -> None:
    async def hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()

    server = ScriptedServer(lambda h: b"", tls=PKI.server, then=hang)
    async with server.running():
        with pytest.raises(WebSocketError, match="Timed out during WebSocket handshake"):
            await open_websocket(server.url(), FakeSplice(), ssl_context=PKI.client(), proxy=False,
                                 handshake_timeout=0.3)


@on_each_loop
async def test_open_websocket_server_closes_mid_response() -> None:
    server = ScriptedServer(lambda h: b"HTTP/1.1 101 Switching", tls=PKI.server)
    async with server.running():
        with pytest.raises(HandshakeError, match="closed the connection"):
            await open_websocket(server.url(), FakeSplice(), ssl_context=PKI.client(), proxy=False)
