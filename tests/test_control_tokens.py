"""The Bastion token API client against scripted responses: exact request shapes, every error body kind,
retries (5xx and connection failures yes, 4xx no), timeouts, DELETE semantics and the Developer data-pod call."""

from __future__ import annotations

import json
import logging
import socket
import ssl
from collections.abc import AsyncIterator

import aiohttp
import pytest
import trustme

from bastion_fast.control.tokens import TokenClient, advice_for, error_from_response
from bastion_fast.exceptions import TokenExchangeError
from bastion_fast.tls import client_ssl_context
from tests._control_scripted import (
    ARM_TOKEN,
    AUTH_TOKEN,
    BASTION_ID,
    NODE_ID,
    TLS,
    VM_ID,
    WS_TOKEN,
    Recorded,
    Reply,
    ScriptedServer,
    check_delete,
    check_token_post,
    clean_env,  # noqa: F401 - fixture
    tls,  # noqa: F401 - fixture
    token_json,
)

pytestmark = pytest.mark.usefixtures("clean_env")


@pytest.fixture
async def session(tls: TLS) -> AsyncIterator[aiohttp.ClientSession]:  # noqa: F811
    connector = aiohttp.TCPConnector(ssl=client_ssl_context(tls.ca_file))
    async with aiohttp.ClientSession(connector=connector, trust_env=True) as s:
        yield s


@pytest.fixture
async def server(tls: TLS) -> AsyncIterator[ScriptedServer]:  # noqa: F811
    async with ScriptedServer(tls) as srv:
        yield srv


def client(session: aiohttp.ClientSession, **kwargs: float) -> TokenClient:
    opts = {"connect_timeout": 2.0, "read_timeout": 2.0, "retries": 2, "backoff": 0.01} | kwargs
    return TokenClient(session, **opts)  # type: ignore[arg-type]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- POST /api/tokens: request shape and response parsing ---------------------------------------------------------


async def test_exchange_sends_exact_form_and_parses_tokens(server: ScriptedServer, session: aiohttp.ClientSession):
    server.expect("POST", "/api/tokens", Reply(json=token_json() | {"extra": {"nested": 1}}),
                  check_token_post(resource_id=VM_ID, port=2222))
    answer = await client(session).exchange(server.host, resource_id=VM_ID, resource_port=2222, aztoken=ARM_TOKEN)
    server.assert_done()
    assert (answer.auth_token, answer.websocket_token, answer.node_id) == (AUTH_TOKEN, WS_TOKEN, NODE_ID)
    assert AUTH_TOKEN not in repr(answer) and WS_TOKEN not in repr(answer)


async def test_exchange_ip_connect_sends_hostname(server: ScriptedServer, session: aiohttp.ClientSession):
    hc_id = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/bh-hostConnect/10.1.0.4"
    server.expect("POST", "/api/tokens", Reply(json=token_json()),
                  check_token_post(resource_id=hc_id, port=22, hostname="10.1.0.4"))
    await client(session).exchange(server.host, resource_id=hc_id, resource_port=22, aztoken=ARM_TOKEN,
                                   hostname="10.1.0.4")
    server.assert_done()


async def test_exchange_without_node_id_and_with_bom(server: ScriptedServer, session: aiohttp.ClientSession):
    body = "\ufeff" + json.dumps(token_json(node=None))
    server.expect("POST", "/api/tokens", Reply(text=body, content_type="application/json"))
    answer = await client(session).exchange(server.host, resource_id=VM_ID, resource_port=22, aztoken=ARM_TOKEN)
    assert answer.node_id is None
    server.assert_done()


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (Reply(text="<html>ok</html>", content_type="text/html"), "body is not JSON"),
        (Reply(json=["not", "an", "object"]), "not an object"),
        (Reply(json={"authToken": AUTH_TOKEN, "nodeId": NODE_ID}), "without websocketToken"),
        (Reply(json={"nodeId": NODE_ID}), "without authToken and websocketToken"),
    ],
)
async def test_exchange_rejects_unusable_200(server: ScriptedServer, session: aiohttp.ClientSession,
                                             reply: Reply, expected: str):
    server.expect("POST", "/api/tokens", reply)
    with pytest.raises(TokenExchangeError) as info:
        await client(session).exchange(server.host, resource_id=VM_ID, resource_port=22, aztoken=ARM_TOKEN)
    assert expected in str(info.value)
    assert info.value.status == 200 and info.value.hint
    assert AUTH_TOKEN not in str(info.value)
    server.assert_done()


# -- error bodies ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "message_part", "service_message", "advice_part"),
    [
        (Reply(status=403, json={"message": "Tunneling is disabled"}), "(HTTP 403): Tunneling is disabled",
         "Tunneling is disabled", "--enable-tunneling true"),
        (Reply(status=404, json={"message": "Invalid IP address for connection."}),
         "(HTTP 404): Invalid IP address for connection.", "Invalid IP address for connection.", "IP-based"),
        (Reply(status=403, json={"message": "java.lang.NullPointerException"}),
         "java.lang.NullPointerException", "java.lang.NullPointerException", "virtualMachineScaleSets"),
        (Reply(status=400, json={"error": "bad", "code": 17}), "(HTTP 400, JSON without a message)", None,
         "Check the target"),
        (Reply(status=403, json={"error": {"code": "AuthorizationFailed", "message": "no access"}}),
         "(HTTP 403): no access", "no access", "Reader"),
        (Reply(status=401, text="Unauthorized"), "(HTTP 401): Unauthorized", "Unauthorized", "sign in again"),
        (Reply(status=409, text=""), "(HTTP 409, empty body)", None, "Check the target"),
    ],
)
async def test_4xx_error_bodies_are_explained_and_not_retried(
    server: ScriptedServer, session: aiohttp.ClientSession, reply: Reply, message_part: str,
    service_message: str | None, advice_part: str,
):
    server.expect("POST", "/api/tokens", reply)  # exactly one request: 4xx is final
    with pytest.raises(TokenExchangeError) as info:
        await client(session).exchange(server.host, resource_id=VM_ID, resource_port=22, aztoken=ARM_TOKEN)
    err = info.value
    assert message_part in str(err)
    assert str(err).startswith("Bastion refused POST /api/tokens")
    assert err.status == reply.status and err.service_message == service_message
    assert err.hint is not None and advice_part in err.hint
    server.assert_done()
    assert len(server.requests) == 1


async def test_html_502_is_retried_then_reported_with_its_title(server: ScriptedServer,
                                                                 session: aiohttp.ClientSession):
    page = "<html><head><title>502 Bad Gateway</title></head><body><h1>502</h1></body></html>"
    for _ in range(3):
        server.expect("POST", "/api/tokens", Reply(status=502, text=page, content_type="text/html"))
    with pytest.raises(TokenExchangeError) as info:
        await client(session, retries=2).exchange(server.host, resource_id=VM_ID, resource_port=22,
                                                  aztoken=ARM_TOKEN)
    assert str(info.value) == "Bastion refused POST /api/tokens (HTTP 502, HTML page '502 Bad Gateway')"
    assert info.value.status == 502 and info.value.service_message is None
    assert "Try again" in (info.value.hint or "")
    server.assert_done()


async def test_500_unexpected_internal_error_gets_target_advice(server: ScriptedServer,
                                                                 session: aiohttp.ClientSession):
    server.expect("POST", "/api/tokens", Reply(status=500, json={"message": "Unexpected internal error"}))
    with pytest.raises(TokenExchangeError) as info:
        await client(session, retries=0).exchange(server.host, resource_id=VM_ID, resource_port=22,
                                                  aztoken=ARM_TOKEN)
    assert "Unexpected internal error" in str(info.value)
    assert "not a VM" in (info.value.hint or "")
    server.assert_done()


async def test_5xx_then_success_is_retried(server: ScriptedServer, session: aiohttp.ClientSession):
    check = check_token_post(resource_id=VM_ID, port=22)
    server.expect("POST", "/api/tokens", Reply(status=503, text="busy"), check)
    server.expect("POST", "/api/tokens", Reply(status=500, json={"message": "x"}), check)
    server.expect("POST", "/api/tokens", Reply(json=token_json()), check)
    answer = await client(session, retries=2).exchange(server.host, resource_id=VM_ID, resource_port=22,
                                                       aztoken=ARM_TOKEN)
    assert answer.auth_token == AUTH_TOKEN
    server.assert_done()


async def test_dropped_connection_is_retried(server: ScriptedServer, session: aiohttp.ClientSession):
    server.expect("POST", "/api/tokens", Reply(drop=True))
    server.expect("POST", "/api/tokens", Reply(json=token_json()))
    answer = await client(session).exchange(server.host, resource_id=VM_ID, resource_port=22, aztoken=ARM_TOKEN)
    assert answer.websocket_token == WS_TOKEN
    server.assert_done()


async def test_read_timeout_is_retried_then_reported(server: ScriptedServer, session: aiohttp.ClientSession):
    server.expect("POST", "/api/tokens", Reply(json=token_json(), delay=1.0))
    server.expect("POST", "/api/tokens", Reply(json=token_json(), delay=1.0))
    with pytest.raises(TokenExchangeError) as info:
        await client(session, read_timeout=0.2, retries=1).exchange(server.host, resource_id=VM_ID,
                                                                    resource_port=22, aztoken=ARM_TOKEN)
    assert str(info.value) == f"POST /api/tokens to {server.host} timed out."
    assert info.value.status is None and "proxy" in (info.value.hint or "")
    assert len(server.requests) == 2


async def test_connection_refused_after_retries(session: aiohttp.ClientSession):
    host = f"127.0.0.1:{free_port()}"
    with pytest.raises(TokenExchangeError) as info:
        await client(session, retries=2).exchange(host, resource_id=VM_ID, resource_port=22, aztoken=ARM_TOKEN)
    assert str(info.value).startswith(f"POST /api/tokens to {host} failed: ClientConnectorError")
    assert info.value.status is None
    assert ARM_TOKEN not in str(info.value)


async def test_untrusted_certificate_is_not_retried(server: ScriptedServer):
    other_ca = trustme.CA()
    ctx = ssl.create_default_context()
    other_ca.configure_trust(ctx)  # trusts a CA that did not sign the server's certificate
    server.expect("POST", "/api/tokens", Reply(json=token_json()))  # never reached
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx)) as s:
        with pytest.raises(TokenExchangeError) as info:
            await client(s, retries=2).exchange(server.host, resource_id=VM_ID, resource_port=22,
                                                aztoken=ARM_TOKEN)
    assert "TLS certificate" in str(info.value) and "--ca-bundle" in (info.value.hint or "")
    assert server.requests == []


# -- DELETE /api/tokens/{authToken} --------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [200, 204, 404])
async def test_delete_success_and_already_gone(server: ScriptedServer, session: aiohttp.ClientSession,
                                               status: int):
    server.expect("DELETE", f"/api/tokens/{AUTH_TOKEN}", Reply(status=status), check_delete(NODE_ID))
    assert await client(session).delete(server.host, AUTH_TOKEN, NODE_ID) is True
    server.assert_done()


async def test_delete_without_node_id_sends_no_header(server: ScriptedServer, session: aiohttp.ClientSession):
    server.expect("DELETE", f"/api/tokens/{AUTH_TOKEN}", Reply(status=204), check_delete(None))
    assert await client(session).delete(server.host, AUTH_TOKEN, None) is True
    server.assert_done()


async def test_delete_failure_is_logged_without_token_and_never_raises(
    server: ScriptedServer, session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture,
):
    server.expect("DELETE", f"/api/tokens/{AUTH_TOKEN}", Reply(status=403, json={"message": "forbidden"}))
    with caplog.at_level(logging.DEBUG, logger="bastion_fast"):
        assert await client(session).delete(server.host, AUTH_TOKEN, NODE_ID) is False
    server.assert_done()
    assert "Could not delete the Bastion session" in caplog.text and "HTTP 403" in caplog.text
    assert AUTH_TOKEN not in caplog.text


async def test_delete_5xx_retried_then_logged(server: ScriptedServer, session: aiohttp.ClientSession,
                                              caplog: pytest.LogCaptureFixture):
    server.expect("DELETE", f"/api/tokens/{AUTH_TOKEN}", Reply(status=500, text="x"))
    server.expect("DELETE", f"/api/tokens/{AUTH_TOKEN}", Reply(status=204))
    assert await client(session).delete(server.host, AUTH_TOKEN, NODE_ID) is True
    server.assert_done()


async def test_delete_unreachable_never_raises(session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture):
    host = f"127.0.0.1:{free_port()}"
    with caplog.at_level(logging.WARNING, logger="bastion_fast"):
        assert await client(session, retries=0).delete(host, AUTH_TOKEN, NODE_ID) is False
    assert host in caplog.text and AUTH_TOKEN not in caplog.text


# -- Developer SKU: POST /api/connection ------------------------------------------------------------------------------


def check_connection_request(rec: Recorded) -> None:
    assert rec.headers.get("content-type") == "application/json"
    assert "authorization" not in rec.headers
    assert json.loads(rec.body) == {"resourceId": VM_ID, "bastionResourceId": BASTION_ID, "vmPort": 22,
                                    "azToken": ARM_TOKEN, "connectionType": "nativeclient"}


async def test_data_pod_request_shape_and_bare_host_answer(server: ScriptedServer,
                                                           session: aiohttp.ClientSession):
    pod = "0123456789abcdef0123456789abcdef.data.westus.bastionglobal.azure.com"
    server.expect("POST", "/api/connection", Reply(text=pod + "\n"), check_connection_request)
    host = await client(session).request_data_pod(server.host, resource_id=VM_ID, bastion_id=BASTION_ID,
                                                  resource_port=22, aztoken=ARM_TOKEN)
    assert host == pod
    server.assert_done()


async def test_data_pod_refusal(server: ScriptedServer, session: aiohttp.ClientSession):
    server.expect("POST", "/api/connection", Reply(status=400, json={"message": "VM not in VNet"}))
    with pytest.raises(TokenExchangeError) as info:
        await client(session).request_data_pod(server.host, resource_id=VM_ID, bastion_id=BASTION_ID,
                                               resource_port=22, aztoken=ARM_TOKEN)
    assert str(info.value) == "Bastion connection request failed (HTTP 400): VM not in VNet"
    assert "data pod" in (info.value.hint or "")


async def test_data_pod_garbage_answer(server: ScriptedServer, session: aiohttp.ClientSession):
    server.expect("POST", "/api/connection", Reply(text="<html>login page</html>", content_type="text/html"))
    with pytest.raises(TokenExchangeError, match="not a host name"):
        await client(session).request_data_pod(server.host, resource_id=VM_ID, bastion_id=BASTION_ID,
                                               resource_port=22, aztoken=ARM_TOKEN)


# -- pure helpers -----------------------------------------------------------------------------------------------------


def test_advice_for_ip_connect_403_mentions_enable_ip_connect():
    assert "--enable-ip-connect true" in advice_for(403, "whatever", ip_connect=True)
    assert "--enable-ip-connect" not in advice_for(403, "whatever", ip_connect=False)


def test_error_from_response_plain_text_is_shortened():
    err = error_from_response("POST /api/tokens", 418, b"  I'm   a\n teapot " + b"x" * 500)
    assert err.service_message is not None and len(err.service_message) <= 200
    assert str(err).startswith("Bastion refused POST /api/tokens (HTTP 418): I'm a teapot")


async def test_delete_retries_at_most_once(server: ScriptedServer, session: aiohttp.ClientSession):
    server.expect("DELETE", f"/api/tokens/{AUTH_TOKEN}", Reply(status=503, text="busy"))
    server.expect("DELETE", f"/api/tokens/{AUTH_TOKEN}", Reply(status=503, text="busy"))
    assert await client(session, retries=5).delete(server.host, AUTH_TOKEN, NODE_ID) is False
    server.assert_done()
    assert len(server.requests) == 2
