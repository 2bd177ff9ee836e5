"""The ARM side of the operations commands: one signed-in azure-mgmt-network client, and ARM errors in words.

Theory of operation. ``open_arm(options)`` resolves cloud and subscription, opens one aiohttp session (the TLS
policy of ``bastion_fast.tls`` plus environment proxies, exactly like the tunnel's control plane), builds the
credential through ``bastion_fast.control.credentials`` and hands out ``NetworkManagementClient`` objects that share
that session — one per subscription, because a peered virtual network may live in another one. Every response's
``Date`` header is remembered (``doctor`` compares it with the local clock).

Unlike the tunnel's ``control.connect`` nothing is validated up front: ``show`` must work on a Basic bastion, and
``configure`` exists precisely to change what ``connect`` would refuse.

``arm_failure`` turns azure-core's exceptions into an :class:`ArmFailure` (status, ARM code, the RBAC action that was
refused); ``raise_for`` turns that into our error tree with the role to ask for.
"""

from __future__ import annotations

import email.utils
import logging
import re
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, NoReturn

from bastion_fast.control.models import ConnectionOptions
from bastion_fast.exceptions import (
    AuthenticationError,
    BastionNotFound,
    ControlPlaneError,
    DiscoveryError,
    PermissionDenied,
    UsageError,
)

if TYPE_CHECKING:
    import aiohttp
    from azure.mgmt.network.aio import NetworkManagementClient

    from bastion_fast.control.clouds import Cloud

__all__ = [
    "ArmFailure",
    "ArmSession",
    "BastionRef",
    "arm_failure",
    "open_arm",
    "parse_resource_id",
    "raise_for",
    "reraise",
    "role_for_action",
]

log = logging.getLogger("bastion_fast.ops")

_ID = re.compile(
    r"^/subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<rg>[^/]+)/providers/(?P<ns>[^/]+)/(?P<type>[^/]+)"
    r"/(?P<name>[^/]+)(?P<rest>(?:/[^/]+/[^/]+)*)/?$",
    re.IGNORECASE,
)
_ACTION = re.compile(r"perform action '([^']+)'", re.IGNORECASE)
_SCOPE = re.compile(r"over scope '([^']+)'", re.IGNORECASE)


@dataclass(frozen=True)
class BastionRef:
    """Which Bastion host a command is about."""

    subscription: str
    resource_group: str
    name: str

    @property
    def id(self) -> str:
        return (f"/subscriptions/{self.subscription}/resourceGroups/{self.resource_group}"
                f"/providers/Microsoft.Network/bastionHosts/{self.name}")

    @property
    def cli_args(self) -> str:
        """``-n NAME -g GROUP`` for fix commands shown to the user."""
        return f"-n {self.name} -g {self.resource_group}"


@dataclass(frozen=True)
class ResourceId:
    """The parts of an ARM resource id that the operations need."""

    subscription: str
    resource_group: str
    type: str  # e.g. "virtualNetworks"
    name: str
    child: tuple[tuple[str, str], ...] = ()  # (("subnets", "AzureBastionSubnet"),)


def parse_resource_id(value: str) -> ResourceId:
    """Split an ARM resource id; raises ``UsageError`` for anything else."""
    match = _ID.match(value.strip())
    if match is None:
        raise UsageError(f"{value!r} is not an Azure resource id.",
                         hint="Resource ids look like /subscriptions/{sub}/resourceGroups/{group}/providers/…")
    parts = [p for p in match["rest"].split("/") if p]
    child = tuple((parts[i], parts[i + 1]) for i in range(0, len(parts), 2))
    return ResourceId(match["sub"], match["rg"], match["type"], match["name"], child)


@dataclass(frozen=True)
class ArmFailure:
    """An ARM call that did not succeed, reduced to what a user needs to hear."""

    status: int | None
    code: str | None
    message: str
    action: str | None = None
    scope: str | None = None

    @property
    def forbidden(self) -> bool:
        return self.status == 403

    @property
    def not_found(self) -> bool:
        return self.status == 404

    def missing_role(self) -> str:
        """The built-in role that grants the refused action (best effort)."""
        return role_for_action(self.action)


def role_for_action(action: str | None) -> str:
    """Reader for reads, Network Contributor for Network writes and actions, else Contributor."""
    if not action:
        return "Reader"
    low = action.lower()
    if low.endswith("/read"):
        return "Reader"
    if low.startswith("microsoft.network/"):
        return f"Network Contributor (or a custom role with {action})"
    return f"Contributor (or a custom role with {action})"


def arm_failure(exc: BaseException) -> ArmFailure | None:
    """Classify an azure-core exception; ``None`` when ``exc`` is not an ARM/HTTP failure."""
    from azure.core.exceptions import (
        ClientAuthenticationError,
        HttpResponseError,
        ServiceRequestError,
        ServiceResponseError,
    )

    if isinstance(exc, (ServiceRequestError, ServiceResponseError)):
        return ArmFailure(None, "ConnectionFailed", " ".join(str(exc).split())[:300])
    if not isinstance(exc, HttpResponseError):
        return None
    error = getattr(exc, "error", None)
    code = getattr(error, "code", None)
    message = getattr(error, "message", None) or str(getattr(exc, "reason", "") or "") or str(exc)
    message = " ".join(str(message).split())[:500]
    status = getattr(exc, "status_code", None)
    if status is None and isinstance(exc, ClientAuthenticationError):
        status = 401
    action = _ACTION.search(message)
    scope = _SCOPE.search(message)
    return ArmFailure(status, str(code) if code else None, message,
                      action[1] if action else None, scope[1] if scope else None)


def reraise(exc: Exception, what: str, *, bastion: BastionRef | None = None) -> NoReturn:
    """Re-raise ``exc`` (caught while doing ``what``) as our error when it is an ARM/HTTP failure, else as is."""
    failure = arm_failure(exc)
    if failure is None:
        raise exc
    raise_for(failure, what, bastion=bastion)


def raise_for(failure: ArmFailure, what: str, *, bastion: BastionRef | None = None) -> NoReturn:
    """Raise the error of our tree that matches ``failure`` while doing ``what`` (e.g. "read Bastion host 'b'")."""
    detail = f"{failure.code or ('HTTP ' + str(failure.status) if failure.status else 'no answer')}: {failure.message}"
    if failure.status is None:
        hint = "Check network access to ARM (HTTPS_PROXY/NO_PROXY), --arm-endpoint and --cloud."
        if "certificate" in failure.message.lower():
            hint = "The TLS certificate was not trusted: pass your proxy's CA with --ca-bundle (or REQUESTS_CA_BUNDLE)."
        raise ControlPlaneError(f"Could not {what}: Azure Resource Manager did not answer ({failure.message}).",
                                hint=hint)
    if failure.status == 401:
        raise AuthenticationError(f"ARM refused the token when trying to {what} ({detail}).",
                                  hint="Pass --tenant with the subscription's tenant and check --cloud.")
    if failure.status == 403:
        scope = failure.scope or (bastion.id if bastion else "the resource")
        raise PermissionDenied(
            f"Not allowed to {what} ({detail}).",
            hint=f"Ask for the {failure.missing_role()} role on {scope} "
            f"(`az role assignment create --role \"{failure.missing_role().split(' (')[0]}\" --assignee YOU "
            f"--scope {scope}`).",
        )
    if failure.status == 404:
        if bastion is not None and failure.code not in {"SubscriptionNotFound"}:
            raise BastionNotFound(
                f"Could not {what}: not found ({detail}).",
                hint="Check -n/--name, -g/--resource-group (the Bastion's group) and --subscription; "
                "`az network bastion list -o table` lists the Bastions you can see.",
            )
        raise DiscoveryError(f"Could not {what}: not found ({detail}).",
                             hint="Check the resource id, --subscription and --cloud.")
    raise ControlPlaneError(f"Could not {what} ({detail}).",
                            hint="If Azure says the resource is busy, wait until its current update finishes and "
                            "retry; otherwise fix what the message names.")


class ArmSession:
    """Signed-in ``NetworkManagementClient`` objects sharing one HTTP session; close with ``aclose``."""

    def __init__(
        self,
        *,
        credential: Any,
        cloud: Cloud,
        base_url: str,
        subscription: str,
        session: aiohttp.ClientSession,
        retry_total: int = 3,
    ) -> None:
        self.credential = credential
        self.cloud = cloud
        self.base_url = base_url
        self.subscription = subscription
        self._session = session
        self._retry_total = retry_total
        self._clients: dict[str, NetworkManagementClient] = {}
        self.server_date: datetime | None = None
        self.server_date_seen_at: float | None = None

    def _hook(self, response: Any) -> None:
        import time

        date = response.http_response.headers.get("Date")
        if date:
            try:
                self.server_date = email.utils.parsedate_to_datetime(date)
                self.server_date_seen_at = time.time()
            except (TypeError, ValueError):
                pass

    def client(self, subscription: str | None = None) -> NetworkManagementClient:
        """The client for ``subscription`` (default: the Bastion's), built by ``control.discovery.network_client``."""
        from bastion_fast.control.discovery import network_client

        sub = subscription or self.subscription
        key = sub.lower()
        if key not in self._clients:
            self._clients[key] = network_client(self.credential, sub, cloud=self.cloud, arm_endpoint=self.base_url,
                                                session=self._session, retry_total=self._retry_total,
                                                raw_response_hook=self._hook)
        return self._clients[key]

    async def aclose(self) -> None:
        try:
            for client in self._clients.values():
                await client.close()
        finally:
            self._clients.clear()
            try:
                close = getattr(self.credential, "close", None)
                if close is not None:
                    await close()
            finally:
                await self._session.close()

    async def __aenter__(self) -> ArmSession:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


async def open_arm(options: ConnectionOptions, *, credential: Any = None, retry_total: int = 3) -> ArmSession:
    """Sign-in pieces of the control plane, without its Bastion checks (see the module docstring).

    Raises:
        UsageError, ConfigurationError, AuthenticationError.
    """
    from bastion_fast.control.clouds import resolve_cloud
    from bastion_fast.control.credentials import signed_in_token_cache
    from bastion_fast.control.plane import make_session
    from bastion_fast.control.subscription import resolve_subscription

    cloud = resolve_cloud(options.cloud)
    sub = resolve_subscription(options.subscription)
    if options.arm_endpoint and not options.arm_endpoint.lower().startswith("https://"):
        raise UsageError(f"--arm-endpoint {options.arm_endpoint!r} must be an https:// URL.",
                         hint="ARM tokens are only sent over TLS, e.g. --arm-endpoint https://management.azure.com.")
    session = make_session(options)
    try:
        cache = signed_in_token_cache(options, cloud=cloud, subscription=sub.id, session=session,
                                      credential=credential)
        base_url = (options.arm_endpoint or cloud.arm_endpoint).rstrip("/")
        return ArmSession(credential=cache, cloud=cloud, base_url=base_url, subscription=sub.id, session=session,
                          retry_total=retry_total)
    except BaseException:
        await session.close()
        raise
