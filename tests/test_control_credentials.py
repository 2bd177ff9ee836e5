"""Sign-in: the in-memory token cache (fake clock, counting credential), sync credentials run off the event loop,
``--auth`` kinds mapped to azure-identity credentials, and error wording."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import threading

import pytest
from azure.core.exceptions import ClientAuthenticationError

from bastion_fast import _logging
from bastion_fast.control.clouds import CLOUDS
from bastion_fast.control.credentials import (
    AUTH_KINDS,
    StaticTokenCredential,
    ThreadedCredential,
    TokenCache,
    create_credential,
)
from bastion_fast.exceptions import AuthenticationError, UsageError
from tests._control_scripted import (
    ARM_TOKEN,
    CountingCredential,
    FakeClock,
    ThreadRecordingSyncCredential,
    clean_env,  # noqa: F401 - fixture
)

pytestmark = pytest.mark.usefixtures("clean_env")
SCOPE = "https://management.azure.com/.default"


# -- TokenCache ------------------------------------------------------------------------------------------------------


async def test_cache_serves_until_300_s_before_expiry():
    clock = FakeClock()
    cred = CountingCredential(lifetime=3600, clock=clock)
    cache = TokenCache(cred, clock=clock)
    for _ in range(5):
        assert (await cache.get_token_info(SCOPE)).token == ARM_TOKEN
    assert len(cred.calls) == 1
    clock.now += 3600 - 300 - 1
    await cache.get_token_info(SCOPE)
    assert len(cred.calls) == 1
    clock.now += 1
    await cache.get_token_info(SCOPE)
    assert len(cred.calls) == 2


async def test_cache_honours_refresh_on():
    clock = FakeClock()
    cred = CountingCredential(lifetime=3600, refresh_in=1800, clock=clock)
    cache = TokenCache(cred, clock=clock)
    await cache.get_token_info(SCOPE)
    clock.now += 1799
    await cache.get_token_info(SCOPE)
    assert len(cred.calls) == 1
    clock.now += 1
    await cache.get_token_info(SCOPE)
    assert len(cred.calls) == 2


async def test_short_lived_token_is_not_fetched_on_every_call():
    clock = FakeClock()
    cred = CountingCredential(lifetime=240, clock=clock)  # less than the 300 s margin
    cache = TokenCache(cred, clock=clock)
    await cache.get_token_info(SCOPE)
    clock.now += 100
    await cache.get_token_info(SCOPE)
    assert len(cred.calls) == 1, "refresh waits for half the lifetime"
    clock.now += 21
    await cache.get_token_info(SCOPE)
    assert len(cred.calls) == 2


async def test_one_token_per_scope():
    cred = CountingCredential()
    cache = TokenCache(cred)
    await cache.get_token_info(SCOPE)
    await cache.get_token_info("https://management.core.usgovcloudapi.net/.default")
    await cache.get_token(SCOPE)
    assert [c[0] for c in cred.calls] == [(SCOPE,), ("https://management.core.usgovcloudapi.net/.default",)]


async def test_concurrent_callers_share_one_fetch():
    release = asyncio.Event()

    class Slow(CountingCredential):
        async def get_token_info(self, *scopes, options=None):  # type: ignore[no-untyped-def]
            await release.wait()
            return await super().get_token_info(*scopes, options=options)

    cred = Slow()
    cache = TokenCache(cred)
    tasks = [asyncio.create_task(cache.get_token_info(SCOPE)) for _ in range(10)]
    await asyncio.sleep(0)
    release.set()
    results = await asyncio.gather(*tasks)
    assert {r.token for r in results} == {ARM_TOKEN}
    assert len(cred.calls) == 1


async def test_failed_refresh_keeps_valid_token_and_retries_later(caplog: pytest.LogCaptureFixture):
    clock = FakeClock()
    cred = CountingCredential(lifetime=3600, clock=clock)
    cache = TokenCache(cred, clock=clock, auth="cli")
    await cache.get_token_info(SCOPE)
    clock.now += 3400  # inside the margin, 200 s of validity left
    cred.fail = ClientAuthenticationError("az: please run 'az login'")
    with caplog.at_level(logging.WARNING, logger="bastion_fast"):
        assert (await cache.get_token_info(SCOPE)).token == ARM_TOKEN
    assert "Could not refresh the Azure token" in caplog.text
    await cache.get_token_info(SCOPE)
    assert len(cred.calls) == 2, "no new attempt within 30 s"
    clock.now += 30
    await cache.get_token_info(SCOPE)
    assert len(cred.calls) == 3


async def test_failure_without_usable_token_raises_authentication_error():
    cred = CountingCredential(fail=ClientAuthenticationError("Please run 'az login' to set up an account"))
    cache = TokenCache(cred, auth="cli")
    with pytest.raises(AuthenticationError) as info:
        await cache.get_token_info(SCOPE)
    assert str(info.value) == ("Could not get an Azure token (cli sign-in): Please run 'az login' to set up an "
                               "account")
    assert "az login" in (info.value.hint or "")


async def test_claims_challenge_bypasses_cache():
    cred = CountingCredential()
    cache = TokenCache(cred)
    await cache.get_token_info(SCOPE)
    await cache.get_token(SCOPE, claims='{"access_token":{}}')
    assert len(cred.calls) == 2 and cred.calls[1][1] == {"claims": '{"access_token":{}}'}


async def test_tenant_is_requested_on_every_fetch():
    cred = CountingCredential()
    await TokenCache(cred, tenant_id="contoso.onmicrosoft.com").get_token_info(SCOPE)
    assert cred.calls[0][1] == {"tenant_id": "contoso.onmicrosoft.com"}


async def test_tokens_are_registered_as_secrets():
    secret = "fresh-token-" + "9" * 40
    await TokenCache(CountingCredential(token=secret)).get_token_info(SCOPE)
    assert secret not in _logging.redact(f"token {secret} in a message")


async def test_cache_closes_only_owned_credentials():
    owned, borrowed = CountingCredential(), CountingCredential()
    await TokenCache(owned).close()
    await TokenCache(borrowed, owns_credential=False).close()
    assert owned.closed and not borrowed.closed


# -- sync credentials off the loop -----------------------------------------------------------------------------------


async def test_threaded_credential_runs_sync_credential_off_the_loop():
    sync = ThreadRecordingSyncCredential()
    cred = ThreadedCredential(sync)
    loop_thread = threading.get_ident()
    info = await TokenCache(cred).get_token_info(SCOPE)
    assert info.token == ARM_TOKEN
    await cred.close()
    assert sync.threads and loop_thread not in sync.threads
    assert sync.closed_in and loop_thread not in sync.closed_in


async def test_threaded_credential_keeps_loop_responsive():
    started, release = threading.Event(), threading.Event()

    class Blocking(ThreadRecordingSyncCredential):
        def get_token_info(self, *scopes, options=None):  # type: ignore[no-untyped-def]
            started.set()
            release.wait(10)
            return super().get_token_info(*scopes, options=options)

    task = asyncio.create_task(ThreadedCredential(Blocking()).get_token_info(SCOPE))
    await asyncio.to_thread(started.wait, 10)
    ticks = 0
    for _ in range(3):  # the loop keeps running while the "user signs in"
        await asyncio.sleep(0)
        ticks += 1
    assert ticks == 3 and not task.done()
    release.set()
    assert (await task).token == ARM_TOKEN


async def test_threaded_credential_with_get_token_only():
    class Legacy:
        def get_token(self, *scopes, **kwargs):  # type: ignore[no-untyped-def]
            from azure.core.credentials import AccessToken

            self.kwargs = kwargs
            return AccessToken("legacy-token-value", 2_000_000_000)

    legacy = Legacy()
    info = await ThreadedCredential(legacy).get_token_info(SCOPE, options={"tenant_id": "t1"})
    assert info.token == "legacy-token-value" and legacy.kwargs == {"tenant_id": "t1"}


# -- static ----------------------------------------------------------------------------------------------------------


def _jwt(exp: int) -> str:
    def enc(obj: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    return f"{enc({'alg': 'none'})}.{enc({'exp': exp, 'aud': 'https://management.azure.com'})}.sig"


async def test_static_token_reads_env_and_jwt_expiry(monkeypatch: pytest.MonkeyPatch):
    token = _jwt(1_900_000_000)
    monkeypatch.setenv("BASTION_FAST_TOKEN", token)
    info = await StaticTokenCredential().get_token_info(SCOPE)
    assert info.token == token and info.expires_on == 1_900_000_000
    monkeypatch.setenv("BASTION_FAST_TOKEN", "opaque-emulator-token")
    assert (await StaticTokenCredential().get_token(SCOPE)).token == "opaque-emulator-token"


async def test_expired_static_token_warns_and_is_reread(monkeypatch: pytest.MonkeyPatch,
                                                        caplog: pytest.LogCaptureFixture):
    import time

    monkeypatch.setenv("BASTION_FAST_TOKEN", _jwt(int(time.time()) - 100))
    cache = TokenCache(StaticTokenCredential(), auth="static")
    with caplog.at_level(logging.WARNING, logger="bastion_fast"):
        await cache.get_token_info(SCOPE)
    assert "BASTION_FAST_TOKEN expired" in caplog.text
    fresh = _jwt(int(time.time()) + 3600)
    monkeypatch.setenv("BASTION_FAST_TOKEN", fresh)
    assert (await cache.get_token_info(SCOPE)).token == fresh, "an expired token is not served from the cache"


def test_static_without_env_is_an_authentication_error():
    with pytest.raises(AuthenticationError) as info:
        create_credential("static", cloud=CLOUDS["AzureCloud"])
    assert str(info.value) == "--auth static needs the BASTION_FAST_TOKEN environment variable."


# -- create_credential -----------------------------------------------------------------------------------------------


def test_unknown_auth_kind():
    with pytest.raises(UsageError) as info:
        create_credential("password", cloud=CLOUDS["AzureCloud"])
    assert str(info.value) == "Unknown --auth 'password'."
    assert all(kind in (info.value.hint or "") for kind in AUTH_KINDS)


@pytest.mark.parametrize(
    ("kind", "class_name"),
    [
        ("default", "DefaultAzureCredential"),
        ("cli", "AzureCliCredential"),
        ("managed-identity", "ManagedIdentityCredential"),
        ("environment", "EnvironmentCredential"),
        ("DEVICE-CODE", "ThreadedCredential"),
        ("browser", "ThreadedCredential"),
    ],
)
async def test_auth_kinds_build_the_matching_credential(kind: str, class_name: str):
    cred = create_credential(kind, cloud=CLOUDS["AzureUSGovernment"], client_id="11111111-2222-3333-4444-555555555555")
    try:
        assert type(cred).__name__ == class_name
        assert cred.__module__.startswith(("azure.identity.aio", "bastion_fast.control.credentials"))
    finally:
        await cred.close()


async def test_device_code_wraps_sync_credential_with_cloud_authority_and_stderr_prompt(
    capsys: pytest.CaptureFixture[str],
):
    from datetime import datetime

    from azure.identity import DeviceCodeCredential

    cred = create_credential("device-code", cloud=CLOUDS["AzureChinaCloud"], tenant="contoso.cn")
    assert isinstance(cred, ThreadedCredential)
    inner = cred._sync
    assert isinstance(inner, DeviceCodeCredential)
    assert "login.chinacloudapi.cn" in inner._authority
    assert inner._tenant_id == "contoso.cn"
    inner._prompt_callback("https://microsoft.com/devicelogin", "ABCD-1234", datetime(2030, 1, 1, 12, 0, 0))
    out = capsys.readouterr()
    assert out.out == "", "stdout may carry tunnel data"
    assert "ABCD-1234" in out.err and "https://microsoft.com/devicelogin" in out.err
    await cred.close()


async def test_cli_credential_gets_subscription_or_tenant():
    cli = create_credential("cli", cloud=CLOUDS["AzureCloud"], subscription="00000000-1111-2222-3333-444444444444")
    assert cli.subscription == "00000000-1111-2222-3333-444444444444" and not cli.tenant_id
    cli2 = create_credential("cli", cloud=CLOUDS["AzureCloud"], tenant="72f988bf-86f1-41af-91ab-2d7cd011db47",
                             subscription="00000000-1111-2222-3333-444444444444")
    assert cli2.tenant_id == "72f988bf-86f1-41af-91ab-2d7cd011db47" and cli2.subscription is None
    await cli.close()
    await cli2.close()


def test_workload_identity_without_env_explains_what_to_set():
    with pytest.raises(AuthenticationError) as info:
        create_credential("workload-identity", cloud=CLOUDS["AzureCloud"])
    assert str(info.value).startswith("Could not get an Azure token (workload-identity sign-in):")
    assert "AZURE_FEDERATED_TOKEN_FILE" in (info.value.hint or "")


async def test_environment_credential_without_env_fails_with_hint():
    cache = TokenCache(create_credential("environment", cloud=CLOUDS["AzureCloud"]), auth="environment")
    try:
        with pytest.raises(AuthenticationError) as info:
            await cache.get_token_info(SCOPE)
    finally:
        await cache.close()
    assert "EnvironmentCredential" in str(info.value)
    assert "AZURE_CLIENT_SECRET" in (info.value.hint or "")
