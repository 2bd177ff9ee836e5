"""The ControlPlane: sign-in, discovery and validation once; then one grant per local connection.

Theory of operation
-------------------
``connect(options)`` resolves the cloud and subscription (no network) and looks the Bastion up in the discovery
cache (``discovery_cache``; on by default in the CLI, off for library callers unless ``discovery_cache_ttl`` > 0).

* **Cache miss** (the cold path): import the ARM SDK in a worker thread at once, so the import overlaps the
  HTTP setup and the sign-in (mostly waiting on az, IMDS or AAD); open the aiohttp session (TLS from
  ``bastion_fast.tls``, environment proxies); get the ARM token; GET the Bastion through azure-mgmt-network's
  ``NetworkManagementClient``; check it; store what was learnt in the cache.
* **Cache hit** (the common path): the cached ``BastionInfo`` goes through the same checks; the SDK is not
  imported and ARM is not called. The ARM token is still fetched before ``connect`` returns, so sign-in problems
  surface at start, not at the first connection. With a credential that makes no HTTP calls of its own (``static``,
  ``cli``, ``device-code``, ``browser``) the aiohttp session — and the ~0.1–0.2 s aiohttp import — waits until it
  is needed: :meth:`AzureControlPlane.warm_up` (the tunnel calls it right after its ready event) or the first
  ``open_grant``. A cached entry the checks refuse is not reported: it is dropped and ARM is asked.

Any failure closes what was opened before the error is raised.

``open_grant`` takes the cached ARM token (refreshed ahead of expiry, so multi-day tunnels keep working), asks
the brain for a data pod first on the Developer SKU, then POSTs ``/api/tokens``. The grant carries the endpoint and
node id of the instance that issued it, and ``close_grant`` sends its DELETE there. Grants still open at
``aclose`` are deleted then (belt and braces: the tunnel is expected to close each one itself).

Stale cache entries: when the Bastion's details came from the cache and the token exchange fails in a way stale
details could explain — no connection to the endpoint (refused, DNS, TLS, timeout), HTTP 404, "Tunneling is
disabled", or 403 for an IP-connect target — the entry is dropped and discovery runs once more through the SDK
(one refresh per process, shared by concurrent connections). If the Bastion changed, the checks run on the fresh
details (so a Bastion whose tunneling was turned off is reported as such) and the exchange is tried once more;
if nothing changed, the original error is reported. The WebSocket leg needs no such rule: it goes to the endpoint
that has just answered the token exchange, so a failure there cannot come from stale discovery data.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from bastion_fast.control.models import BastionInfo, ConnectionOptions, TunnelGrant
from bastion_fast.exceptions import TokenExchangeError, UsageError

if TYPE_CHECKING:
    import aiohttp

    from bastion_fast.control.clouds import Cloud
    from bastion_fast.control.credentials import TokenCache
    from bastion_fast.control.discovery_cache import CacheKey, DiscoveryCache
    from bastion_fast.control.tokens import TokenClient

__all__ = ["AzureControlPlane", "connect", "make_session"]

log = logging.getLogger("bastion_fast.control")


# Credentials that make HTTP calls themselves, through a transport on our aiohttp session.


def _stale_data_could_explain(exc: TokenExchangeError, *, ip_target: bool) -> bool:
    """Whether a failed token exchange may come from cached Bastion details that are out of date."""
    if exc.status is None:  # no answer at all: refused, DNS, TLS, timeout — the dnsName may have moved
        return True
    if exc.status == 404:
        return True
    if "tunneling is disabled" in (exc.service_message or str(exc)).lower():
        return True
    return exc.status == 403 and ip_target  # IP-based connection turned off


class AzureControlPlane:
    """The ``ControlPlane`` for a real (or emulated) Azure Bastion. Build it with ``connect``."""

    def __init__(
        self,
        *,
        options: ConnectionOptions,
        bastion: BastionInfo,
        cloud: Cloud,
        tokens: TokenCache,
        session: aiohttp.ClientSession | None,
        subscription: str,
        token_backoff: float = 0.5,
        arm_retry_total: int = 3,
        discovery_cache: DiscoveryCache | None = None,
        cache_key: CacheKey | None = None,
        from_cache: bool = False,
    ) -> None:
        self.options = options
        self._bastion = bastion
        self.cloud = cloud
        self.tokens = tokens
        self._session = session
        self._client: TokenClient | None = None
        self._subscription = subscription
        self._token_backoff = token_backoff
        self._arm_retry_total = arm_retry_total
        self._cache = discovery_cache
        self._cache_key = cache_key
        self._verified = not from_cache  # the details came from ARM in this process
        self._refresh_tried = not from_cache  # stale-entry recovery runs at most once
        self._refresh_lock = asyncio.Lock()
        self._open: dict[int, TunnelGrant] = {}
        self._closed = False
        if session is not None:
            self._ensure_client()

    @property
    def bastion(self) -> BastionInfo:
        return self._bastion

    @property
    def from_cache(self) -> bool:
        """True while the Bastion's details are the discovery cache's (not confirmed by ARM in this process)."""
        return not self._verified

    @property
    def target_resource_id(self) -> str:
        """The ``resourceId`` sent to the service: the VM's id, or the synthetic ``bh-hostConnect`` id."""
        from bastion_fast.control.targets import host_connect_resource_id

        target = self.options.target
        if target.ip_address:
            return host_connect_resource_id(self._bastion.subscription, self._bastion.resource_group,
                                            target.ip_address)
        assert target.resource_id is not None
        return target.resource_id

    async def arm_token(self) -> str:
        """The current ARM access token for the cloud's scope (from the cache)."""
        info = await self.tokens.get_token_info(self.cloud.arm_scope)
        return str(info.token)

    def _ensure_client(self) -> TokenClient:
        """The token client, and the aiohttp session under it, created on first use (see the module docstring)."""
        if self._client is None:
            from bastion_fast.control.tokens import TokenClient

            if self._session is None:
                self._session = make_session(self.options)
            self._client = TokenClient(self._session, connect_timeout=self.options.connect_timeout,
                                       read_timeout=self.options.read_timeout, retries=self.options.retries,
                                       backoff=self._token_backoff)
        return self._client

    def warm_up(self) -> None:
        """Import aiohttp and open the HTTP session now, if that was deferred (call it once "ready" is out)."""
        if not self._closed:
            self._ensure_client()

    async def open_grant(self) -> TunnelGrant:
        if self._closed:
            raise UsageError("open_grant() after aclose().", hint="Create a new control plane with connect().")
        used = self._bastion
        try:
            return await self._open_grant(used)
        except TokenExchangeError as exc:
            ip_target = bool(self.options.target.ip_address)
            if self._cache is None or not _stale_data_could_explain(exc, ip_target=ip_target):
                raise
            fresh = await self._refresh_after(exc)
            if fresh == used:
                raise  # the cached details were right: the failure is the service's answer
            log.info("The Bastion's details had changed since they were cached; trying again with the new ones.")
            return await self._open_grant(fresh)

    async def _open_grant(self, bastion: BastionInfo) -> TunnelGrant:
        client = self._ensure_client()
        aztoken = await self.arm_token()
        target = self.options.target
        endpoint = bastion.dns_name
        if bastion.developer:
            endpoint = await client.request_data_pod(
                bastion.dns_name,
                resource_id=self.target_resource_id,
                bastion_id=bastion.id,
                resource_port=target.resource_port,
                aztoken=aztoken,
            )
            log.debug("Developer data pod for this connection: %s", endpoint)
        answer = await client.exchange(
            endpoint,
            resource_id=self.target_resource_id,
            resource_port=target.resource_port,
            aztoken=aztoken,
            hostname=target.ip_address,
        )
        if bastion.developer:
            url = f"wss://{endpoint}/omni/webtunnel/{answer.websocket_token}"
        else:
            url = f"wss://{endpoint}/webtunnelv2/{answer.websocket_token}"
            if answer.node_id:
                url += f"?X-Node-Id={answer.node_id}"
        grant = TunnelGrant(auth_token=answer.auth_token, websocket_token=answer.websocket_token,
                            node_id=answer.node_id, websocket_url=url, endpoint=endpoint)
        self._open[id(grant)] = grant
        log.debug("Bastion session opened on %s (node %s)", endpoint, answer.node_id or "-")
        return grant

    async def _refresh_after(self, exc: TokenExchangeError) -> BastionInfo:
        """Drop the cache entry and GET the Bastion again (once per process; concurrent failures share it).

        Raises:
            DiscoveryError (and subclasses): ARM refused, or the fresh details fail the checks.
        """
        async with self._refresh_lock:
            if self._refresh_tried:
                return self._bastion
            self._refresh_tried = True
            from bastion_fast.control import discovery

            log.info("%s — the Bastion's details came from the discovery cache; asking ARM again.", exc)
            assert self._cache is not None and self._cache_key is not None
            self._cache.drop(self._cache_key)
            self._ensure_client()
            assert self._session is not None
            # The tunnel may be carrying other connections: import the SDK off the event loop.
            await asyncio.to_thread(discovery.import_sdk)
            fresh = await discovery.fetch_bastion(
                self.tokens, subscription=self._subscription, resource_group=self.options.resource_group,
                name=self.options.name, cloud=self.cloud, arm_endpoint=self.options.arm_endpoint,
                session=self._session, retry_total=self._arm_retry_total,
                connect_timeout=self.options.connect_timeout, read_timeout=self.options.read_timeout)
            self._verified = True
            self._bastion = fresh
            discovery.check_bastion(fresh, self.options)
            self._cache.store(self._cache_key, fresh)
            return fresh

    async def close_grant(self, grant: TunnelGrant) -> None:
        if self._open.pop(id(grant), None) is None and self._closed:
            return
        try:
            await self._ensure_client().delete(grant.endpoint, grant.auth_token, grant.node_id)
        except Exception as exc:  # TokenClient.delete never raises; this guards the contract anyway
            log.warning("Could not delete the Bastion session on %s: %s", grant.endpoint, type(exc).__name__)

    async def aclose(self) -> None:
        if self._closed:
            return
        leftovers = list(self._open.values())
        self._open.clear()
        if leftovers:
            log.info("Deleting %d Bastion session(s) still open", len(leftovers))
            client = self._ensure_client()
            await asyncio.gather(*(client.delete(g.endpoint, g.auth_token, g.node_id) for g in leftovers))
        self._closed = True
        try:
            await self.tokens.close()
        finally:
            if self._session is not None:
                await self._session.close()

    async def __aenter__(self) -> AzureControlPlane:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"AzureControlPlane(bastion={self._bastion.name!r}, sku={self._bastion.sku!r}, " \
               f"endpoint={self._bastion.dns_name!r})"


def make_session(options: ConnectionOptions) -> aiohttp.ClientSession:
    """The aiohttp session every control-plane call shares: the ``bastion_fast.tls`` context (one per process),
    environment proxies (``HTTPS_PROXY``/``NO_PROXY``, like requests in az), no cookies. Used by ``connect`` and by
    ``bastion_fast.ops.arm``; must be called with an event loop running."""
    import aiohttp

    from bastion_fast.tls import client_ssl_context

    ssl_ctx = client_ssl_context(options.ca_bundle)
    connector = aiohttp.TCPConnector(ssl=ssl_ctx, limit=100, ttl_dns_cache=300)
    return aiohttp.ClientSession(
        connector=connector,
        trust_env=True,
        cookie_jar=aiohttp.DummyCookieJar(),
        auto_decompress=True,
    )


def _discovery_cache_for(options: ConnectionOptions, given: DiscoveryCache | None) -> DiscoveryCache | None:
    if given is not None:
        return given
    if options.discovery_cache_ttl <= 0:
        return None
    from bastion_fast.control.discovery_cache import DiscoveryCache

    return DiscoveryCache(options.discovery_cache_ttl)


async def connect(
    options: ConnectionOptions,
    *,
    credential: Any = None,
    clock: Callable[[], float] | None = None,
    arm_retry_total: int = 3,
    token_backoff: float = 0.5,
    discovery_cache: DiscoveryCache | None = None,
) -> AzureControlPlane:
    """Sign in, discover and check the Bastion; return a ControlPlane ready for ``open_grant``.

    Args:
        options: from ``cli._options.options_from_args`` or built by hand.
        credential: an async credential to use instead of ``options.auth`` (library users, tests).
        clock: time source for the token cache (tests).
        discovery_cache: the cache to use instead of the one ``options.discovery_cache_ttl`` selects (tests).

    Raises:
        UsageError, ConfigurationError, AuthenticationError, DiscoveryError (and subclasses).
    """
    from bastion_fast.control import discovery
    from bastion_fast.control.clouds import resolve_cloud
    from bastion_fast.control.credentials import HTTP_CREDENTIALS, signed_in_token_cache
    from bastion_fast.control.subscription import resolve_subscription
    from bastion_fast.control.targets import validate_target
    from bastion_fast.exceptions import DiscoveryError
    from bastion_fast.tls import client_ssl_context

    cloud = resolve_cloud(options.cloud)
    sub = resolve_subscription(options.subscription)
    target = options.target
    validate_target(target.resource_id, target.ip_address, target.resource_port)
    if options.arm_endpoint and not options.arm_endpoint.lower().startswith("https://"):
        raise UsageError(f"--arm-endpoint {options.arm_endpoint!r} must be an https:// URL.",
                         hint="ARM tokens are only sent over TLS, e.g. --arm-endpoint https://management.azure.com.")
    client_ssl_context(options.ca_bundle)  # a bad --ca-bundle is reported now, even when the session waits

    cache = _discovery_cache_for(options, discovery_cache)
    key: CacheKey | None = None
    cached: BastionInfo | None = None
    if cache is not None:
        from bastion_fast.control.discovery_cache import CacheKey

        key = CacheKey.of(cloud=cloud.name, arm_endpoint=options.arm_endpoint or cloud.arm_endpoint,
                          subscription=sub.id, resource_group=options.resource_group, name=options.name)
        cached = cache.load(key)
        if cached is not None:
            try:
                discovery.check_bastion(cached, options)
            except DiscoveryError as exc:
                # Maybe fixed since: a refusal must come from fresh data, so forget the entry and ask ARM.
                log.debug("cached Bastion details refused (%s); asking ARM", exc)
                cache.drop(key)
                cached = None

    # The ARM SDK takes 0.2–0.4 s to import: on the cold path do that in a worker thread from now on, so it
    # overlaps the HTTP setup and the sign-in (mostly waiting on az, IMDS or AAD).
    sdk_ready = None if cached is not None else asyncio.ensure_future(asyncio.to_thread(discovery.import_sdk))
    auth = options.auth.lower()
    session: aiohttp.ClientSession | None = None
    tokens: TokenCache | None = None
    try:
        if cached is None or (credential is None and auth in HTTP_CREDENTIALS):
            session = make_session(options)
        tokens = signed_in_token_cache(options, cloud=cloud, subscription=sub.id, session=session,
                                       credential=credential, clock=clock)
        await tokens.get_token_info(cloud.arm_scope)
        if cached is not None:
            bastion = cached
            log.debug("Bastion details from the discovery cache (ARM not asked)")
        else:
            assert sdk_ready is not None and session is not None
            await sdk_ready
            bastion = await discovery.fetch_bastion(
                tokens, subscription=sub.id, resource_group=options.resource_group, name=options.name, cloud=cloud,
                arm_endpoint=options.arm_endpoint, session=session, retry_total=arm_retry_total,
                connect_timeout=options.connect_timeout, read_timeout=options.read_timeout)
            discovery.check_bastion(bastion, options)
            if cache is not None and key is not None:
                cache.store(key, bastion)
        log.info("Bastion %s (%s SKU) at %s", bastion.name, bastion.sku, bastion.dns_name)
        return AzureControlPlane(options=options, bastion=bastion, cloud=cloud, tokens=tokens, session=session,
                                 subscription=sub.id, token_backoff=token_backoff, arm_retry_total=arm_retry_total,
                                 discovery_cache=cache, cache_key=key, from_cache=cached is not None)
    except BaseException:
        if sdk_ready is not None:
            sdk_ready.cancel()
            if sdk_ready.done() and not sdk_ready.cancelled():
                sdk_ready.exception()  # retrieved: an import error must not resurface as a loop warning
        try:
            if tokens is not None:
                await tokens.close()  # closes the credential too when the cache built it
        finally:
            if session is not None:
                await session.close()
        raise
