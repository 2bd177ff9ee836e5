"""Sign-in: pick an azure-identity credential from ``--auth``, and keep its tokens in memory.

Theory of operation
-------------------
``create_credential`` builds one async credential (``azure.identity.aio``) per ``--auth`` kind. Device-code and
browser sign-in exist only as *sync* credentials, so ``ThreadedCredential`` runs them in a worker thread
(``asyncio.to_thread``) and the event loop keeps serving live connections while the user signs in. ``static``
takes a bearer token from ``BASTION_FAST_TOKEN`` (emulator, CI) and imports nothing from azure-identity.

``TokenCache`` wraps any credential and is what the rest of the control plane (and the ARM SDK client) talks to.
It keeps one token per scope set and hands it out until its refresh time: ``refresh_on`` when the credential sent
one, else 300 s before ``expires_on`` (azure-identity's own margin) — but never earlier than half the token's
remaining lifetime, so a short-lived token does not trigger a sign-in per connection. Concurrent callers share one
refresh (a lock per scope set). If a refresh fails while the old token is still valid, the old token is served and
the refresh retried 30 s later; ``AzureCliCredential`` does not cache, so without this every connection would
spawn an ``az`` process. Every token is registered with ``_logging.register_secret`` the moment it arrives.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, cast

from bastion_fast._logging import redact, register_secret
from bastion_fast.control.models import AUTH_KINDS
from bastion_fast.exceptions import AuthenticationError, UsageError

if TYPE_CHECKING:
    from azure.core.credentials import AccessToken, AccessTokenInfo, TokenRequestOptions

    from bastion_fast.control.clouds import Cloud

__all__ = [
    "AUTH_KINDS",
    "HTTP_CREDENTIALS",
    "STATIC_TOKEN_ENV",
    "StaticTokenCredential",
    "ThreadedCredential",
    "TokenCache",
    "create_credential",
    "signed_in_token_cache",
]

log = logging.getLogger("bastion_fast.control.credentials")

STATIC_TOKEN_ENV = "BASTION_FAST_TOKEN"  # noqa: S105 - a variable name, not a secret
# The --auth kinds whose credential makes HTTP calls itself (AAD, IMDS): they share our aiohttp session.
HTTP_CREDENTIALS = frozenset({"default", "managed-identity", "environment", "workload-identity"})
DEFAULT_REFRESH_MARGIN = 300.0
RETRY_AFTER_FAILED_REFRESH = 30.0

_HINTS = {
    "default": "Sign in with `az login`, or set AZURE_TENANT_ID/AZURE_CLIENT_ID/AZURE_CLIENT_SECRET, or run where a "
    "managed identity is available — or pick one method with --auth (cli, managed-identity, environment, "
    "workload-identity, device-code, browser, static).",
    "cli": "Run `az login` (with --tenant TENANT if the Bastion's subscription is in another tenant) and make sure "
    "`az` is on PATH.",
    "managed-identity": "Run on an Azure resource that has a managed identity; for a user-assigned identity pass "
    "--client-id CLIENT_ID.",
    "environment": "Set AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_CLIENT_SECRET (or AZURE_CLIENT_CERTIFICATE_PATH).",
    "workload-identity": "Set AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_FEDERATED_TOKEN_FILE (AKS workload "
    "identity sets them in the pod).",
    "device-code": "Finish the device-code sign-in before the code expires; pass --tenant TENANT for a specific "
    "tenant.",
    "browser": "Finish the sign-in in the browser window; on a machine without a browser use --auth device-code.",
    "static": f"Set {STATIC_TOKEN_ENV} to a valid ARM access token (for the emulator: the \"token\" field of its "
    "readiness line).",
}


def _jwt_expiry(token: str) -> int | None:
    """The ``exp`` claim of a JWT, read without verification (only to schedule a re-read)."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        padded = parts[1] + "=" * (-len(parts[1]) % 4)
        claims = json.loads(base64.urlsafe_b64decode(padded))
    except (ValueError, TypeError):
        return None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    return int(exp) if isinstance(exp, int | float) else None


@dataclass(frozen=True)
class _StaticTokenInfo:
    """The attributes of azure-core's ``AccessTokenInfo``, which azure-core's policies and ``TokenCache`` read by
    name, without importing azure-core: for ``--auth static`` on a discovery-cache hit nothing else needs it, and
    it costs 20–40 ms of a ~0.1 s warm start. Unlike ``AccessTokenInfo`` its repr does not show the token."""

    token: str = field(repr=False)
    expires_on: int
    token_type: str = "Bearer"  # noqa: S105 - the scheme name, not a secret
    refresh_on: int | None = None


class StaticTokenCredential:
    """An ARM bearer token given from outside (``BASTION_FAST_TOKEN``); re-read from the environment each fetch."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        self._env = os.environ if env is None else env
        self._warned = ""
        if not self._env.get(STATIC_TOKEN_ENV, "").strip():
            raise AuthenticationError(f"--auth static needs the {STATIC_TOKEN_ENV} environment variable.",
                                      hint=_HINTS["static"])

    async def get_token_info(self, *scopes: str, options: TokenRequestOptions | None = None) -> AccessTokenInfo:
        token = self._env.get(STATIC_TOKEN_ENV, "").strip()
        if not token:
            raise AuthenticationError(f"{STATIC_TOKEN_ENV} is empty.", hint=_HINTS["static"])
        register_secret(token)
        now = int(time.time())
        expires = _jwt_expiry(token)
        if expires is not None and expires <= now and token != self._warned:
            self._warned = token
            log.warning("%s expired %d s ago; Azure will refuse it. Get a fresh token (e.g. `az account "
                        "get-access-token --query accessToken -o tsv`).", STATIC_TOKEN_ENV, now - expires)
        # An expired token keeps its real expiry, so the cache re-reads the environment on every use and picks up
        # a refreshed variable; an opaque (non-JWT) token is re-read every few minutes.
        info = _StaticTokenInfo(token, expires if expires is not None else now + 600)
        return cast("AccessTokenInfo", info)  # same attributes (see _StaticTokenInfo)

    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        from azure.core.credentials import AccessToken

        info = await self.get_token_info(*scopes)
        return AccessToken(info.token, info.expires_on)

    async def close(self) -> None:
        return None


class ThreadedCredential:
    """Drive a *sync* azure-identity credential from asyncio without blocking the loop (device code, browser)."""

    def __init__(self, sync_credential: Any) -> None:
        self._sync = sync_credential

    async def get_token_info(self, *scopes: str, options: TokenRequestOptions | None = None) -> AccessTokenInfo:
        if hasattr(self._sync, "get_token_info"):
            result: AccessTokenInfo = await asyncio.to_thread(self._sync.get_token_info, *scopes, options=options)
            return result
        from azure.core.credentials import AccessTokenInfo

        kwargs: dict[str, Any] = {}
        if options and options.get("tenant_id"):
            kwargs["tenant_id"] = options["tenant_id"]
        token = await asyncio.to_thread(self._sync.get_token, *scopes, **kwargs)
        return AccessTokenInfo(token.token, token.expires_on)

    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        from azure.core.credentials import AccessToken

        info = await self.get_token_info(*scopes)
        return AccessToken(info.token, info.expires_on)

    async def close(self) -> None:
        close = getattr(self._sync, "close", None)
        if close is not None:
            await asyncio.to_thread(close)


@dataclass
class _Entry:
    info: Any  # AccessTokenInfo
    refresh_at: float


class TokenCache:
    """An ``AsyncTokenCredential`` that caches tokens per scope set and refreshes them ahead of expiry.

    Args:
        credential: any async credential (``get_token_info`` preferred, ``get_token`` accepted).
        auth: the ``--auth`` kind, used to word errors.
        tenant_id: requested from the credential on every fetch (``--tenant`` with ``default``).
        clock: seconds since the epoch (tests pass a fake).
        owns_credential: close the credential in ``close()`` (false for a caller-supplied credential).
    """

    def __init__(
        self,
        credential: Any,
        *,
        auth: str = "default",
        tenant_id: str | None = None,
        clock: Callable[[], float] = time.time,
        refresh_margin: float = DEFAULT_REFRESH_MARGIN,
        owns_credential: bool = True,
    ) -> None:
        self.credential = credential
        self._owns_credential = owns_credential
        self._auth = auth
        self._tenant_id = tenant_id
        self._clock = clock
        self._margin = refresh_margin
        self._entries: dict[tuple[str, ...], _Entry] = {}
        self._locks: dict[tuple[str, ...], asyncio.Lock] = {}
        self.fetches = 0  # how many times the underlying credential was asked (diagnostics, tests)

    def _refresh_at(self, info: Any, now: float) -> float:
        refresh_on = getattr(info, "refresh_on", None)
        if refresh_on:
            return float(refresh_on)
        expires = float(info.expires_on)
        return max(expires - self._margin, now + (expires - now) / 2)

    async def get_token_info(self, *scopes: str, options: TokenRequestOptions | None = None) -> AccessTokenInfo:
        """A valid token for ``scopes``, from memory when possible."""
        claims = options.get("claims") if options else None
        key = tuple(sorted(scopes))
        entry = self._entries.get(key)
        if entry is not None and not claims and self._clock() < entry.refresh_at:
            info: AccessTokenInfo = entry.info
            return info
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            entry = self._entries.get(key)
            now = self._clock()
            if entry is not None and not claims and now < entry.refresh_at:
                cached: AccessTokenInfo = entry.info
                return cached
            try:
                fresh = await self._fetch(scopes, options)
            except AuthenticationError as exc:
                if entry is not None and not claims and now < float(entry.info.expires_on) - 60:
                    log.warning("Could not refresh the Azure token (%s); using the current one until it expires.",
                                exc)
                    entry.refresh_at = now + RETRY_AFTER_FAILED_REFRESH
                    kept: AccessTokenInfo = entry.info
                    return kept
                raise
            self._entries[key] = _Entry(fresh, self._refresh_at(fresh, now))
            return fresh

    async def _fetch(self, scopes: tuple[str, ...], options: TokenRequestOptions | None) -> AccessTokenInfo:
        opts: dict[str, Any] = dict(options or {})
        if self._tenant_id and "tenant_id" not in opts:
            opts["tenant_id"] = self._tenant_id
        self.fetches += 1
        log.debug("requesting a token for %s (%s sign-in)", " ".join(scopes), self._auth)
        try:
            if hasattr(self.credential, "get_token_info"):
                info = await self.credential.get_token_info(*scopes, options=opts or None)
            else:
                kwargs = {k: v for k, v in opts.items() if k in {"tenant_id", "claims", "enable_cae"}}
                token = await self.credential.get_token(*scopes, **kwargs)
                from azure.core.credentials import AccessTokenInfo

                info = AccessTokenInfo(token.token, token.expires_on)
        except AuthenticationError:
            raise
        except Exception as exc:
            raise _authentication_error(exc, self._auth) from exc
        register_secret(info.token)
        result: AccessTokenInfo = info
        return result

    async def get_token(
        self,
        *scopes: str,
        claims: str | None = None,
        tenant_id: str | None = None,
        enable_cae: bool = False,
        **kwargs: Any,
    ) -> AccessToken:
        from azure.core.credentials import AccessToken

        options: dict[str, Any] = {}
        if claims:
            options["claims"] = claims
        if tenant_id:
            options["tenant_id"] = tenant_id
        info = await self.get_token_info(*scopes, options=options or None)  # type: ignore[arg-type]
        return AccessToken(info.token, info.expires_on)

    async def close(self) -> None:
        """Close the wrapped credential if this cache created it (a caller's credential stays open)."""
        close = getattr(self.credential, "close", None)
        if close is not None and self._owns_credential:
            await close()

    async def __aenter__(self) -> TokenCache:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


def _first_lines(text: str, limit: int = 6) -> str:
    lines = [line.rstrip() for line in text.strip().splitlines() if line.strip()]
    shown = "\n".join(lines[:limit])
    return shown + ("\n…" if len(lines) > limit else "")


def _authentication_error(exc: BaseException, auth: str) -> AuthenticationError:
    """Turn whatever a credential raised into our error, keeping azure-identity's explanation."""
    detail = redact(_first_lines(str(exc))) or type(exc).__name__
    return AuthenticationError(f"Could not get an Azure token ({auth} sign-in): {detail}", hint=_HINTS.get(auth))


def _device_code_prompt(verification_uri: str, user_code: str, expires_on: datetime) -> None:
    # stdout may carry tunnel data (proxy mode): prompts go to stderr.
    print(
        f"To sign in, open {verification_uri} and enter the code {user_code} "
        f"(valid until {expires_on:%H:%M:%S}).",
        file=sys.stderr,
        flush=True,
    )


def create_credential(
    auth: str,
    *,
    cloud: Cloud,
    tenant: str | None = None,
    client_id: str | None = None,
    subscription: str | None = None,
    transport: Any = None,
    env: Mapping[str, str] | None = None,
) -> Any:
    """Build the credential for ``--auth`` (an object with async ``get_token_info``/``get_token``/``close``).

    ``transport`` (an azure-core async transport) is shared with the credentials that make HTTP calls, so sign-in
    follows the same TLS and proxy settings as everything else.

    Raises:
        UsageError: unknown ``--auth`` kind.
        AuthenticationError: the chosen method cannot even be set up (missing environment variables).
    """
    kind = auth.strip().lower()
    if kind not in AUTH_KINDS:
        raise UsageError(f"Unknown --auth {auth!r}.", hint=f"Use one of: {', '.join(AUTH_KINDS)}.")
    if kind == "static":
        return StaticTokenCredential(env)
    http: dict[str, Any] = {"transport": transport} if transport is not None else {}
    try:
        if kind == "default":
            from azure.identity.aio import DefaultAzureCredential

            kwargs: dict[str, Any] = {"authority": cloud.authority_host, **http}
            if client_id:
                kwargs["managed_identity_client_id"] = client_id
            if tenant:
                kwargs.update(workload_identity_tenant_id=tenant, shared_cache_tenant_id=tenant,
                              visual_studio_code_tenant_id=tenant)
            return DefaultAzureCredential(**kwargs)
        if kind == "cli":
            from azure.identity.aio import AzureCliCredential

            if tenant:
                return AzureCliCredential(tenant_id=tenant)
            # The Bastion's subscription picks the right account/tenant in az (ext#8864).
            return AzureCliCredential(subscription=subscription) if subscription else AzureCliCredential()
        if kind == "managed-identity":
            from azure.identity.aio import ManagedIdentityCredential

            return ManagedIdentityCredential(client_id=client_id, **http)
        if kind == "environment":
            from azure.identity.aio import EnvironmentCredential

            return EnvironmentCredential(authority=cloud.authority_host, **http)
        if kind == "workload-identity":
            from azure.identity.aio import WorkloadIdentityCredential

            return WorkloadIdentityCredential(tenant_id=tenant, client_id=client_id, authority=cloud.authority_host,
                                              **http)
        if kind == "device-code":
            from azure.identity import DeviceCodeCredential

            dc_kwargs: dict[str, Any] = {"authority": cloud.authority_host, "prompt_callback": _device_code_prompt}
            if tenant:
                dc_kwargs["tenant_id"] = tenant
            if client_id:
                dc_kwargs["client_id"] = client_id
            return ThreadedCredential(DeviceCodeCredential(**dc_kwargs))
        from azure.identity import InteractiveBrowserCredential

        ib_kwargs: dict[str, Any] = {"authority": cloud.authority_host}
        if tenant:
            ib_kwargs["tenant_id"] = tenant
        if client_id:
            ib_kwargs["client_id"] = client_id
        return ThreadedCredential(InteractiveBrowserCredential(**ib_kwargs))
    except ValueError as exc:  # azure-identity validates its inputs in constructors
        raise _authentication_error(exc, kind) from exc


def signed_in_token_cache(
    options: Any,
    *,
    cloud: Cloud,
    subscription: str,
    session: Any,
    credential: Any = None,
    clock: Any = None,
) -> TokenCache:
    """The one way a command turns ``--auth``/``--tenant``/``--client-id`` into a cached ARM token source.

    Used by the tunnel's control plane and by the Bastion-administration commands, so both sign in identically.
    ``credential`` (tests, library callers) is used as given and not closed by the cache; otherwise one is built
    for ``options.auth``, with the HTTP-calling kinds sharing ``session`` (same TLS and proxy settings).
    """
    import time

    auth = options.auth.lower()
    owns_credential = credential is None
    if credential is None:
        transport = None
        if auth in HTTP_CREDENTIALS and session is not None:
            from azure.core.pipeline.transport import AioHttpTransport

            transport = AioHttpTransport(session=session, session_owner=False)
        credential = create_credential(options.auth, cloud=cloud, tenant=options.tenant,
                                       client_id=options.client_id, subscription=subscription, transport=transport)
    tenant_option = options.tenant if auth == "default" else None
    return TokenCache(credential, auth=auth, tenant_id=tenant_option, owns_credential=owns_credential,
                      clock=clock or time.time)
