"""The ControlPlane: sign-in, discovery and validation once; then one grant per local connection.

Theory of operation
-------------------
``connect(options)`` resolves the cloud and subscription (no network), opens one aiohttp session (TLS from
``bastion_fast.tls``, environment proxies), builds the credential wrapped in a ``TokenCache``, then — while the
ARM token is fetched (an ``az`` process for ``--auth cli``) — imports the ARM SDK in a worker thread, GETs the
Bastion and checks it. Any failure closes what was opened before the error is raised.

``open_grant`` takes the cached ARM token (refreshed ahead of expiry, so multi-day tunnels keep working), asks
the brain for a data pod first on the Developer SKU, then POSTs ``/api/tokens``. The grant carries the endpoint and
node id of the instance that issued it, and ``close_grant`` sends its DELETE there. Grants still open at
``aclose`` are deleted then (belt and braces: the tunnel is expected to close each one itself).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from bastion_fast.control.models import BastionInfo, ConnectionOptions, TunnelGrant
from bastion_fast.exceptions import UsageError

if TYPE_CHECKING:
    import aiohttp

    from bastion_fast.control.clouds import Cloud
    from bastion_fast.control.credentials import TokenCache
    from bastion_fast.control.tokens import TokenClient

__all__ = ["AzureControlPlane", "connect"]

log = logging.getLogger("bastion_fast.control")


class AzureControlPlane:
    """The ``ControlPlane`` for a real (or emulated) Azure Bastion. Build it with ``connect``."""

    def __init__(
        self,
        *,
        options: ConnectionOptions,
        bastion: BastionInfo,
        cloud: Cloud,
        tokens: TokenCache,
        session: aiohttp.ClientSession,
        client: TokenClient,
    ) -> None:
        self.options = options
        self._bastion = bastion
        self.cloud = cloud
        self.tokens = tokens
        self._session = session
        self._client = client
        self._open: dict[int, TunnelGrant] = {}
        self._closed = False

    @property
    def bastion(self) -> BastionInfo:
        return self._bastion

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

    async def open_grant(self) -> TunnelGrant:
        if self._closed:
            raise UsageError("open_grant() after aclose().", hint="Create a new control plane with connect().")
        aztoken = await self.arm_token()
        target = self.options.target
        endpoint = self._bastion.dns_name
        if self._bastion.developer:
            endpoint = await self._client.request_data_pod(
                self._bastion.dns_name,
                resource_id=self.target_resource_id,
                bastion_id=self._bastion.id,
                resource_port=target.resource_port,
                aztoken=aztoken,
            )
            log.debug("Developer data pod for this connection: %s", endpoint)
        answer = await self._client.exchange(
            endpoint,
            resource_id=self.target_resource_id,
            resource_port=target.resource_port,
            aztoken=aztoken,
            hostname=target.ip_address,
        )
        if self._bastion.developer:
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

    async def close_grant(self, grant: TunnelGrant) -> None:
        if self._open.pop(id(grant), None) is None and self._closed:
            return
        try:
            await self._client.delete(grant.endpoint, grant.auth_token, grant.node_id)
        except Exception as exc:  # TokenClient.delete never raises; this guards the contract anyway
            log.warning("Could not delete the Bastion session on %s: %s", grant.endpoint, type(exc).__name__)

    async def aclose(self) -> None:
        if self._closed:
            return
        leftovers = list(self._open.values())
        self._open.clear()
        if leftovers:
            log.info("Deleting %d Bastion session(s) still open", len(leftovers))
            await asyncio.gather(*(self._client.delete(g.endpoint, g.auth_token, g.node_id) for g in leftovers))
        self._closed = True
        try:
            await self.tokens.close()
        finally:
            await self._session.close()

    async def __aenter__(self) -> AzureControlPlane:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"AzureControlPlane(bastion={self._bastion.name!r}, sku={self._bastion.sku!r}, " \
               f"endpoint={self._bastion.dns_name!r})"


def _make_session(options: ConnectionOptions) -> aiohttp.ClientSession:
    import aiohttp

    from bastion_fast.tls import client_ssl_context

    ssl_ctx = client_ssl_context(options.ca_bundle)
    connector = aiohttp.TCPConnector(ssl=ssl_ctx, limit=100, ttl_dns_cache=300)
    return aiohttp.ClientSession(
        connector=connector,
        trust_env=True,  # HTTPS_PROXY / NO_PROXY, like requests in az
        cookie_jar=aiohttp.DummyCookieJar(),
        auto_decompress=True,
    )


async def connect(
    options: ConnectionOptions,
    *,
    credential: Any = None,
    clock: Callable[[], float] | None = None,
    arm_retry_total: int = 3,
    token_backoff: float = 0.5,
) -> AzureControlPlane:
    """Sign in, discover and check the Bastion; return a ControlPlane ready for ``open_grant``.

    Args:
        options: from ``cli._options.options_from_args`` or built by hand.
        credential: an async credential to use instead of ``options.auth`` (library users, tests).
        clock: time source for the token cache (tests).

    Raises:
        UsageError, ConfigurationError, AuthenticationError, DiscoveryError (and subclasses).
    """
    from bastion_fast.control import discovery
    from bastion_fast.control.clouds import resolve_cloud
    from bastion_fast.control.credentials import TokenCache, create_credential
    from bastion_fast.control.subscription import resolve_subscription
    from bastion_fast.control.targets import validate_target
    from bastion_fast.control.tokens import TokenClient

    cloud = resolve_cloud(options.cloud)
    sub = resolve_subscription(options.subscription)
    target = options.target
    validate_target(target.resource_id, target.ip_address, target.resource_port)
    if options.arm_endpoint and not options.arm_endpoint.lower().startswith("https://"):
        raise UsageError(f"--arm-endpoint {options.arm_endpoint!r} must be an https:// URL.",
                         hint="ARM tokens are only sent over TLS, e.g. --arm-endpoint https://management.azure.com.")
    # The ARM SDK takes ~0.2 s to import: do that in a worker thread from now on, so it overlaps the HTTP setup
    # and the sign-in (mostly waiting on az, IMDS or AAD).
    sdk_ready = asyncio.ensure_future(asyncio.to_thread(discovery.import_sdk))
    session: aiohttp.ClientSession | None = None
    cache: TokenCache | None = None
    owns_credential = credential is None
    try:
        session = _make_session(options)
        if credential is None:
            transport = None
            if options.auth.lower() not in {"static", "cli", "device-code", "browser"}:
                from azure.core.pipeline.transport import AioHttpTransport

                transport = AioHttpTransport(session=session, session_owner=False)
            credential = create_credential(options.auth, cloud=cloud, tenant=options.tenant,
                                           client_id=options.client_id, subscription=sub.id, transport=transport)
        tenant_option = options.tenant if options.auth.lower() == "default" else None
        cache = TokenCache(credential, auth=options.auth.lower(), tenant_id=tenant_option,
                           owns_credential=owns_credential, clock=clock or time.time)
        await cache.get_token_info(cloud.arm_scope)
        await sdk_ready
        bastion = await discovery.fetch_bastion(
            cache, subscription=sub.id, resource_group=options.resource_group, name=options.name, cloud=cloud,
            arm_endpoint=options.arm_endpoint, session=session, retry_total=arm_retry_total,
            connect_timeout=options.connect_timeout, read_timeout=options.read_timeout)
        discovery.check_bastion(bastion, options)
        client = TokenClient(session, connect_timeout=options.connect_timeout, read_timeout=options.read_timeout,
                             retries=options.retries, backoff=token_backoff)
        log.info("Bastion %s (%s SKU) at %s", bastion.name, bastion.sku, bastion.dns_name)
        return AzureControlPlane(options=options, bastion=bastion, cloud=cloud, tokens=cache, session=session,
                                 client=client)
    except BaseException:
        sdk_ready.cancel()
        if sdk_ready.done() and not sdk_ready.cancelled():
            sdk_ready.exception()  # retrieved: an import error must not resurface as a loop warning
        try:
            if cache is not None:
                await cache.close()
            elif owns_credential and credential is not None and hasattr(credential, "close"):
                await credential.close()
        finally:
            if session is not None:
                await session.close()
        raise
