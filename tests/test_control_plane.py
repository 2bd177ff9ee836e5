"""``control.connect`` end to end against scripted ARM + Bastion responses: discovery through azure-mgmt-network,
every validation rule, the Standard/IP-connect/Developer grant flows, cloud scopes, token caching and cleanup."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import pytest

from bastion_fast.control import ConnectionOptions, ControlPlane, TunnelTarget, connect
from bastion_fast.control.discovery import check_bastion
from bastion_fast.control.models import BastionInfo
from bastion_fast.exceptions import (
    AuthenticationError,
    BastionNotFound,
    DiscoveryError,
    IpConnectDisabled,
    NativeClientDisabled,
    PermissionDenied,
    TokenExchangeError,
    UnsupportedSku,
    UsageError,
)
from tests._control_scripted import (
    ARM_TOKEN,
    AUTH_TOKEN,
    BASTION_ID,
    BASTION_PATH,
    NAME,
    NODE_ID,
    RG,
    SUB,
    TLS,
    VM_ID,
    VMSS_INSTANCE_ID,
    WS_TOKEN,
    CountingCredential,
    Recorded,
    Reply,
    ScriptedServer,
    bastion_json,
    check_arm_get,
    check_delete,
    check_token_post,
    clean_env,  # noqa: F401 - fixture
    tls,  # noqa: F401 - fixture
    token_json,
)

pytestmark = pytest.mark.usefixtures("clean_env")


@pytest.fixture
async def server(tls: TLS) -> AsyncIterator[ScriptedServer]:  # noqa: F811
    async with ScriptedServer(tls) as srv:
        yield srv


def options(server: ScriptedServer, tls: TLS, **kw: Any) -> ConnectionOptions:  # noqa: F811
    base = ConnectionOptions(name=NAME, resource_group=RG, target=TunnelTarget(VM_ID, None, 22), subscription=SUB,
                             auth="static", arm_endpoint=server.url, ca_bundle=str(tls.ca_file), retries=0)
    return replace(base, **kw)


async def test_static_auth_standard_flow(server: ScriptedServer, tls: TLS,  # noqa: F811
                                         monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("BASTION_FAST_TOKEN", ARM_TOKEN)
    server.expect("GET", BASTION_PATH, Reply(json=bastion_json(server.host)), check_arm_get())
    server.expect("POST", "/api/tokens", Reply(json=token_json()), check_token_post(resource_id=VM_ID, port=22))
    server.expect("DELETE", f"/api/tokens/{AUTH_TOKEN}", Reply(status=204), check_delete(NODE_ID))
    async with await connect(options(server, tls)) as plane:
        assert isinstance(plane, ControlPlane)
        assert plane.bastion.sku == "Standard" and plane.bastion.dns_name == server.host
        grant = await plane.open_grant()
        assert grant.websocket_url == f"wss://{server.host}/webtunnelv2/{WS_TOKEN}?X-Node-Id={NODE_ID}"
        assert grant.endpoint == server.host and grant.node_id == NODE_ID
        for text in (repr(grant), str(grant), repr(plane)):
            assert AUTH_TOKEN not in text and WS_TOKEN not in text and ARM_TOKEN not in text
        await plane.close_grant(grant)
    server.assert_done()


async def test_vmss_instance_and_custom_port(server: ScriptedServer, tls: TLS):  # noqa: F811
    cred = CountingCredential()
    server.expect("GET", BASTION_PATH, Reply(json=bastion_json(server.host, sku="Premium")), check_arm_get())
    server.expect("POST", "/api/tokens", Reply(json=token_json()),
                  check_token_post(resource_id=VMSS_INSTANCE_ID, port=5432))
    server.expect("DELETE", f"/api/tokens/{AUTH_TOKEN}", Reply(status=204), check_delete())
    opts = options(server, tls, target=TunnelTarget(VMSS_INSTANCE_ID, None, 5432))
    async with await connect(opts, credential=cred) as plane:
        await plane.close_grant(await plane.open_grant())
    server.assert_done()
    assert not cred.closed, "a caller's credential stays open"


async def test_ip_connect_sends_host_connect_id_and_hostname(server: ScriptedServer, tls: TLS):  # noqa: F811
    hc = f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Network/bh-hostConnect/10.1.0.4"
    server.expect("GET", BASTION_PATH, Reply(json=bastion_json(server.host, ip_connect=True)))
    server.expect("POST", "/api/tokens", Reply(json=token_json()),
                  check_token_post(resource_id=hc, port=3389, hostname="10.1.0.4"))
    server.expect("DELETE", f"/api/tokens/{AUTH_TOKEN}", Reply(status=404), check_delete())
    opts = options(server, tls, target=TunnelTarget(None, "10.1.0.4", 3389))
    async with await connect(opts, credential=CountingCredential()) as plane:
        grant = await plane.open_grant()
        assert grant.websocket_url.startswith(f"wss://{server.host}/webtunnelv2/")
        await plane.close_grant(grant)
    server.assert_done()


async def test_developer_sku_gets_a_data_pod_per_connection(server: ScriptedServer, tls: TLS):  # noqa: F811
    def check_pod_request(rec: Recorded) -> None:
        import json

        assert json.loads(rec.body) == {"resourceId": VM_ID, "bastionResourceId": BASTION_ID, "vmPort": 22,
                                        "azToken": ARM_TOKEN, "connectionType": "nativeclient"}

    server.expect("GET", BASTION_PATH, Reply(json=bastion_json(server.host, sku="Developer", tunneling=None)))
    for _ in range(2):
        # the same server plays the brain and the data pod (the pod's host is what the brain returns)
        server.expect("POST", "/api/connection", Reply(text=server.host), check_pod_request)
        server.expect("POST", "/api/tokens", Reply(json=token_json()), check_token_post(resource_id=VM_ID, port=22))
    server.expect("DELETE", f"/api/tokens/{AUTH_TOKEN}", Reply(status=204))
    server.expect("DELETE", f"/api/tokens/{AUTH_TOKEN}", Reply(status=204))
    cred = CountingCredential()
    async with await connect(options(server, tls, command="ssh"), credential=cred) as plane:
        assert plane.bastion.developer
        grants = [await plane.open_grant(), await plane.open_grant()]
        for grant in grants:
            assert grant.websocket_url == f"wss://{server.host}/omni/webtunnel/{WS_TOKEN}"  # no X-Node-Id
            assert grant.endpoint == server.host
        # aclose() deletes grants the caller did not close
    server.assert_done()
    assert len(cred.calls) == 1, "one ARM token serves discovery and every connection"


async def test_developer_sku_refused_for_tunnel(server: ScriptedServer, tls: TLS):  # noqa: F811
    server.expect("GET", BASTION_PATH, Reply(json=bastion_json(server.host, sku="Developer", tunneling=None)))
    with pytest.raises(UnsupportedSku) as info:
        await connect(options(server, tls, command="tunnel"), credential=CountingCredential())
    assert "`tunnel` needs a Standard or Premium SKU" in str(info.value)
    assert "bastion-fast ssh" in (info.value.hint or "")
    server.assert_done()


@pytest.mark.parametrize(
    ("body", "target", "error", "text", "hint"),
    [
        (dict(tunneling=None), None, NativeClientDisabled,
         "Native client support (enableTunneling) is not enabled on Bastion host 'bastion-1'.",
         f"az network bastion update -n {NAME} -g {RG} --enable-tunneling true"),
        (dict(tunneling=False), None, NativeClientDisabled, "enableTunneling", "--enable-tunneling true"),
        (dict(ip_connect=None), TunnelTarget(None, "10.0.0.4", 22), IpConnectDisabled,
         "--target-ip-address flag cannot be used when IpConnect is not enabled on Bastion host 'bastion-1'.",
         "--enable-ip-connect true"),
        (dict(sku=None), None, UnsupportedSku,
         "Bastion Host SKU must be Standard or Premium and Native Client must be enabled ('bastion-1' is Basic).",
         "--sku Standard --enable-tunneling true"),
        (dict(sku="Basic"), None, UnsupportedSku, "is Basic", "--sku Standard"),
        (dict(state="Updating"), None, DiscoveryError,
         "Bastion host 'bastion-1' is in provisioning state 'Updating', not 'Succeeded'.", "Wait until it finishes"),
        (dict(state="Failed"), None, DiscoveryError, "'Failed'", "The last change failed"),
    ],
)
async def test_discovery_rules(server: ScriptedServer, tls: TLS, body: dict[str, Any],  # noqa: F811
                               target: TunnelTarget | None, error: type[Exception], text: str, hint: str):
    server.expect("GET", BASTION_PATH, Reply(json=bastion_json(server.host, **body)))
    opts = options(server, tls) if target is None else options(server, tls, target=target)
    cred = CountingCredential()
    with pytest.raises(error) as info:
        await connect(opts, credential=cred)
    assert text in str(info.value)
    assert hint in (getattr(info.value, "hint", None) or "")
    server.assert_done()


async def test_missing_booleans_mean_false_but_state_absent_is_fine(server: ScriptedServer, tls: TLS):  # noqa: F811
    server.expect("GET", BASTION_PATH, Reply(json=bastion_json(server.host, ip_connect=None, state=None)))
    async with await connect(options(server, tls), credential=CountingCredential()) as plane:
        assert plane.bastion.enable_ip_connect is False and plane.bastion.provisioning_state is None
    server.assert_done()


@pytest.mark.parametrize(
    ("status", "arm_body", "error", "text", "hint"),
    [
        (403, {"error": {"code": "AuthorizationFailed", "message": "The client 'u' does not have authorization."}},
         PermissionDenied,
         f"Not allowed to read Bastion host '{NAME}' in resource group '{RG}' (subscription {SUB}) "
         "(AuthorizationFailed: The client 'u' does not have authorization.).", "Reader role"),
        (404, {"error": {"code": "ResourceNotFound", "message": "not found"}}, BastionNotFound,
         f"Bastion host '{NAME}' in resource group '{RG}' (subscription {SUB}) was not found "
         "(ResourceNotFound: not found).", "az network bastion list"),
        (404, {"error": {"code": "ResourceGroupNotFound", "message": "rg missing"}}, BastionNotFound,
         "ResourceGroupNotFound", "the Bastion's resource group"),
        (404, {"error": {"code": "SubscriptionNotFound", "message": "no sub"}}, BastionNotFound,
         "SubscriptionNotFound", "Check --subscription"),
        (401, {"error": {"code": "InvalidAuthenticationTokenTenant", "message": "wrong tenant"}},
         AuthenticationError, "ARM refused the token", "--tenant"),
        (500, {"error": {"code": "InternalServerError", "message": "boom"}}, DiscoveryError,
         "ARM answered HTTP 500", "Retry"),
    ],
)
async def test_arm_errors(server: ScriptedServer, tls: TLS, status: int, arm_body: dict[str, Any],  # noqa: F811
                          error: type[Exception], text: str, hint: str):
    server.expect("GET", BASTION_PATH, Reply(status=status, json=arm_body))
    cred = CountingCredential()
    with pytest.raises(error) as info:
        await connect(options(server, tls), credential=cred, arm_retry_total=0)
    assert text in str(info.value)
    assert hint in (getattr(info.value, "hint", None) or "")
    assert ARM_TOKEN not in str(info.value)
    server.assert_done()


async def test_arm_unreachable(tls: TLS):  # noqa: F811
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    opts = ConnectionOptions(name=NAME, resource_group=RG, target=TunnelTarget(VM_ID, None, 22), subscription=SUB,
                             arm_endpoint=f"https://127.0.0.1:{port}", ca_bundle=str(tls.ca_file))
    with pytest.raises(DiscoveryError) as info:
        await connect(opts, credential=CountingCredential(), arm_retry_total=0)
    assert str(info.value).startswith(f"Cannot reach Azure Resource Manager at https://127.0.0.1:{port}")


async def test_us_government_scope_is_used_for_arm_and_aztoken(server: ScriptedServer, tls: TLS):  # noqa: F811
    cred = CountingCredential()
    server.expect("GET", BASTION_PATH, Reply(json=bastion_json(server.host)), check_arm_get())
    server.expect("POST", "/api/tokens", Reply(json=token_json()), check_token_post(resource_id=VM_ID, port=22))
    opts = options(server, tls, cloud="AzureUSGovernment")
    async with await connect(opts, credential=cred) as plane:
        await plane.open_grant()  # not closed here: aclose() must delete it
        server.expect("DELETE", f"/api/tokens/{AUTH_TOKEN}", Reply(status=204))
    server.assert_done()
    scopes = {call[0] for call in cred.calls}
    assert scopes == {("https://management.core.usgovcloudapi.net/.default",)}


async def test_token_cached_across_grants_and_refreshed_before_expiry(server: ScriptedServer,
                                                                      tls: TLS):  # noqa: F811
    from tests._control_scripted import FakeClock

    clock = FakeClock()
    cred = CountingCredential(lifetime=3600, clock=clock)
    server.expect("GET", BASTION_PATH, Reply(json=bastion_json(server.host)))
    for _ in range(3):
        server.expect("POST", "/api/tokens", Reply(json=token_json()))
    plane = await connect(options(server, tls), credential=cred, clock=clock)
    try:
        await plane.open_grant()
        clock.now += 3600 - 301  # still more than 300 s left: cached
        await plane.open_grant()
        assert len(cred.calls) == 1
        clock.now += 2  # inside the 300 s margin: refreshed
        await plane.open_grant()
        assert len(cred.calls) == 2
        for _ in range(3):
            server.expect("DELETE", f"/api/tokens/{AUTH_TOKEN}", Reply(status=204))
    finally:
        await plane.aclose()
    server.assert_done()


async def test_token_error_surfaces_from_open_grant(server: ScriptedServer, tls: TLS):  # noqa: F811
    server.expect("GET", BASTION_PATH, Reply(json=bastion_json(server.host)))
    server.expect("POST", "/api/tokens", Reply(status=403, json={"message": "Tunneling is disabled"}))
    async with await connect(options(server, tls), credential=CountingCredential()) as plane:
        with pytest.raises(TokenExchangeError) as info:
            await plane.open_grant()
    assert info.value.status == 403 and info.value.service_message == "Tunneling is disabled"
    server.assert_done()


async def test_close_grant_never_raises_when_bastion_is_gone(server: ScriptedServer, tls: TLS):  # noqa: F811
    server.expect("GET", BASTION_PATH, Reply(json=bastion_json(server.host)))
    server.expect("POST", "/api/tokens", Reply(json=token_json()))
    plane = await connect(options(server, tls), credential=CountingCredential())
    grant = await plane.open_grant()
    await server.__aexit__(None, None, None)  # the Bastion disappears
    await plane.close_grant(grant)
    await plane.aclose()
    await server.__aenter__()  # the fixture's teardown expects a running server


async def test_open_grant_after_aclose_is_a_usage_error(server: ScriptedServer, tls: TLS):  # noqa: F811
    server.expect("GET", BASTION_PATH, Reply(json=bastion_json(server.host)))
    plane = await connect(options(server, tls), credential=CountingCredential())
    await plane.aclose()
    with pytest.raises(UsageError):
        await plane.open_grant()


async def test_static_auth_without_token_fails_before_any_request(server: ScriptedServer, tls: TLS):  # noqa: F811
    with pytest.raises(AuthenticationError) as info:
        await connect(options(server, tls))
    assert "BASTION_FAST_TOKEN" in str(info.value)
    assert server.requests == []


async def test_arm_endpoint_must_be_https(server: ScriptedServer, tls: TLS):  # noqa: F811
    with pytest.raises(UsageError, match="must be an https:// URL"):
        await connect(options(server, tls, arm_endpoint="http://127.0.0.1:1"), credential=CountingCredential())


def _info(**kw: Any) -> BastionInfo:
    base = BastionInfo(id=BASTION_ID, name=NAME, resource_group=RG, subscription=SUB, sku="Standard",
                       dns_name="bst.example", enable_tunneling=True, enable_ip_connect=False,
                       provisioning_state="Succeeded")
    return replace(base, **kw)


@pytest.mark.parametrize("command", ["ssh", "proxy"])
def test_developer_allowed_for_ssh_commands(command: str):
    opts = ConnectionOptions(name=NAME, resource_group=RG, target=TunnelTarget(VM_ID, None, 22), command=command)
    check_bastion(_info(sku="Developer", enable_tunneling=False), opts)
    check_bastion(_info(sku="QuickConnect", enable_tunneling=False), opts)


def test_developer_with_ip_target_is_refused():
    opts = ConnectionOptions(name=NAME, resource_group=RG, target=TunnelTarget(None, "10.0.0.4", 22), command="ssh")
    with pytest.raises(IpConnectDisabled, match="Developer SKU has no IP-based connection"):
        check_bastion(_info(sku="Developer"), opts)


def test_allow_developer_overrides_command_rule():
    opts = ConnectionOptions(name=NAME, resource_group=RG, target=TunnelTarget(VM_ID, None, 22), command="tunnel",
                             allow_developer=True)
    check_bastion(_info(sku="Developer"), opts)


def test_unknown_sku_and_missing_dns_name():
    opts = ConnectionOptions(name=NAME, resource_group=RG, target=TunnelTarget(VM_ID, None, 22))
    with pytest.raises(UnsupportedSku, match="is Enterprise"):
        check_bastion(_info(sku="Enterprise"), opts)
    with pytest.raises(DiscoveryError, match="has no dnsName"):
        check_bastion(_info(dns_name=""), opts)


def fake_az(bin_dir: Any, log: Any, *, token: str, fail: bool = False) -> None:
    """An `az` on PATH that answers `az account get-access-token` and logs its arguments."""
    import sys

    script = bin_dir / "az"
    body = (f"import json, sys, time\nopen({str(log)!r}, 'a').write(' '.join(sys.argv[1:]) + '\\n')\n")
    if fail:
        body += "sys.stderr.write(\"Please run 'az login' to setup account.\\n\"); sys.exit(1)\n"
    else:
        body += (f"print(json.dumps({{'accessToken': {token!r}, 'expires_on': int(time.time()) + 3600, "
                 "'tokenType': 'Bearer'}))\n")
    script.write_text(f"#!{sys.executable}\n{body}")
    script.chmod(0o755)
    os.environ["PATH"] = f"{bin_dir}{os.pathsep}{os.environ['PATH']}"


async def test_cli_auth_runs_az_once_for_many_connections(server: ScriptedServer, tls: TLS,  # noqa: F811
                                                          tmp_path: Any, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("PATH", os.environ["PATH"])  # so monkeypatch restores PATH afterwards
    log = tmp_path / "az.log"
    fake_az(tmp_path, log, token=ARM_TOKEN)
    server.expect("GET", BASTION_PATH, Reply(json=bastion_json(server.host)), check_arm_get())
    for _ in range(3):
        server.expect("POST", "/api/tokens", Reply(json=token_json()), check_token_post(resource_id=VM_ID, port=22))
    for _ in range(3):
        server.expect("DELETE", f"/api/tokens/{AUTH_TOKEN}", Reply(status=204))
    async with await connect(options(server, tls, auth="cli")) as plane:
        grants = [await plane.open_grant() for _ in range(3)]
        for grant in grants:
            await plane.close_grant(grant)
    server.assert_done()
    calls = log.read_text().splitlines()
    assert len(calls) == 1, calls
    assert calls[0].startswith("account get-access-token --output json --resource https://management.azure.com")
    assert f"--subscription {SUB}" in calls[0], "the Bastion's subscription picks the az account (ext#8864)"


async def test_cli_auth_not_logged_in(server: ScriptedServer, tls: TLS, tmp_path: Any,  # noqa: F811
                                      monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("PATH", os.environ["PATH"])  # so monkeypatch restores PATH afterwards
    fake_az(tmp_path, tmp_path / "az.log", token="", fail=True)
    with pytest.raises(AuthenticationError) as info:
        await connect(options(server, tls, auth="cli"))
    assert str(info.value).startswith("Could not get an Azure token (cli sign-in): Please run 'az login'")
    assert "az login" in (info.value.hint or "")
    assert server.requests == []


class ConnectProxy:
    """A loopback HTTP CONNECT proxy that records the authorities it was asked for."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        self.server: asyncio.AbstractServer | None = None
        self.port = 0
        self.writers: list[asyncio.StreamWriter] = []

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        head = await reader.readuntil(b"\r\n\r\n")
        method, authority, _ = head.split(b"\r\n", 1)[0].decode().split(" ", 2)
        self.requests.append(f"{method} {authority}")
        host, port = authority.rsplit(":", 1)
        up_reader, up_writer = await asyncio.open_connection(host, int(port))
        self.writers.append(up_writer)
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    async def __aenter__(self) -> ConnectProxy:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        for writer in self.writers:
            writer.close()
        await self.server.wait_closed()


async def test_https_proxy_from_environment_is_used_for_arm_and_tokens(server: ScriptedServer, tls: TLS,  # noqa: F811
                                                                       monkeypatch: pytest.MonkeyPatch):
    server.expect("GET", BASTION_PATH, Reply(json=bastion_json(server.host)), check_arm_get())
    server.expect("POST", "/api/tokens", Reply(json=token_json()), check_token_post(resource_id=VM_ID, port=22))
    server.expect("DELETE", f"/api/tokens/{AUTH_TOKEN}", Reply(status=204), check_delete())
    async with ConnectProxy() as proxy:
        monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{proxy.port}")
        async with await connect(options(server, tls), credential=CountingCredential()) as plane:
            await plane.close_grant(await plane.open_grant())
    server.assert_done()
    assert proxy.requests and set(proxy.requests) == {f"CONNECT {server.host}"}


async def test_no_proxy_bypasses_the_proxy(server: ScriptedServer, tls: TLS,  # noqa: F811
                                           monkeypatch: pytest.MonkeyPatch):
    server.expect("GET", BASTION_PATH, Reply(json=bastion_json(server.host)))
    server.expect("POST", "/api/tokens", Reply(json=token_json()))
    server.expect("DELETE", f"/api/tokens/{AUTH_TOKEN}", Reply(status=204))
    async with ConnectProxy() as proxy:
        monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{proxy.port}")
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        async with await connect(options(server, tls), credential=CountingCredential()) as plane:
            await plane.close_grant(await plane.open_grant())
    server.assert_done()
    assert proxy.requests == []


async def test_arm_read_timeout(server: ScriptedServer, tls: TLS):  # noqa: F811
    server.expect("GET", BASTION_PATH, Reply(json=bastion_json(server.host), delay=1.0))
    with pytest.raises(DiscoveryError) as info:
        await connect(options(server, tls, read_timeout=0.2), credential=CountingCredential(), arm_retry_total=0)
    assert str(info.value).startswith(f"Azure Resource Manager at {server.url} did not answer in time")


async def test_subscription_from_az_profile_with_bom(server: ScriptedServer, tls: TLS,  # noqa: F811
                                                     clean_env: Any):  # noqa: F811
    import json

    profile = {"subscriptions": [{"id": "ffffffff-0000-0000-0000-000000000000", "isDefault": False},
                                 {"id": SUB, "name": "Prod", "isDefault": True, "tenantId": "t"}]}
    (clean_env / "azureProfile.json").write_bytes(b"\xef\xbb\xbf" + json.dumps(profile).encode())
    server.expect("GET", BASTION_PATH, Reply(json=bastion_json(server.host)), check_arm_get())
    async with await connect(options(server, tls, subscription=None), credential=CountingCredential()) as plane:
        assert plane.bastion.subscription == SUB
    server.assert_done()


async def test_untrusted_certificate_fails_discovery_unless_verification_disabled(
    server: ScriptedServer, tls: TLS, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,  # noqa: F811
):
    with pytest.raises(DiscoveryError) as info:  # no --ca-bundle: the emulator-style CA is not trusted
        await connect(options(server, tls, ca_bundle=None), credential=CountingCredential(), arm_retry_total=0)
    assert "--ca-bundle" in (info.value.hint or "")
    monkeypatch.setenv("AZURE_CLI_DISABLE_CONNECTION_VERIFICATION", "1")
    server.expect("GET", BASTION_PATH, Reply(json=bastion_json(server.host)))
    server.expect("POST", "/api/tokens", Reply(json=token_json()))
    server.expect("DELETE", f"/api/tokens/{AUTH_TOKEN}", Reply(status=204))
    async with await connect(options(server, tls, ca_bundle=None), credential=CountingCredential()) as plane:
        await plane.close_grant(await plane.open_grant())
    server.assert_done()
    assert "TLS certificates are NOT verified" in caplog.text
