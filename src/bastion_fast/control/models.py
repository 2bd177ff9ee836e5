"""The values that cross the control-plane boundary (DESIGN.md §3): plain, frozen, cheap to import.

The tunnel imports these on its cold-start path, so this module imports nothing beyond the standard library.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

__all__ = [
    "AUTH_KINDS",
    "BastionInfo",
    "ConnectionOptions",
    "ControlPlane",
    "TunnelGrant",
    "TunnelTarget",
]

AUTH_KINDS = (
    "default",
    "cli",
    "managed-identity",
    "environment",
    "workload-identity",
    "device-code",
    "browser",
    "static",
)
"""The ``--auth`` choices (``control.credentials`` maps each to a credential)."""


@dataclass(frozen=True)
class TunnelTarget:
    """Where the Bastion should connect: a VM (or VMSS instance) by ARM id, or a private IP (IP connect)."""

    resource_id: str | None
    ip_address: str | None
    resource_port: int


@dataclass(frozen=True)
class TunnelGrant:
    """One accepted ``POST /api/tokens``: everything one WebSocket connection needs, and its cleanup key.

    ``endpoint`` is ``host[:port]`` of the instance that issued the tokens (the Bastion's ``dnsName``, or the
    data pod for the Developer SKU); ``close_grant`` sends the DELETE there with this grant's own ``node_id`` —
    one connection's token is never paired with another's node id (PROTOCOL §2.3).
    """

    auth_token: str = field(repr=False)
    websocket_token: str = field(repr=False)
    node_id: str | None
    websocket_url: str = field(repr=False)
    endpoint: str

    def __repr__(self) -> str:
        # The URL embeds the websocket token, so it is left out like the tokens themselves.
        return f"TunnelGrant(endpoint={self.endpoint!r}, node_id={self.node_id!r}, tokens=<redacted>)"


@dataclass(frozen=True)
class BastionInfo:
    """What discovery learnt about the Bastion host (no secrets)."""

    id: str
    name: str
    resource_group: str
    subscription: str
    sku: str
    dns_name: str
    enable_tunneling: bool
    enable_ip_connect: bool
    provisioning_state: str | None

    @property
    def developer(self) -> bool:
        """Developer (and the older "QuickConnect") bastions hand out a data pod per connection (PROTOCOL §1.3)."""
        return self.sku.lower() in {"developer", "quickconnect"}


@dataclass(frozen=True)
class ConnectionOptions:
    """Everything ``control.connect`` needs; built from the shared CLI flags by ``cli._options``.

    ``subscription`` ``None`` means: ``AZURE_SUBSCRIPTION_ID``, then the az CLI's default subscription.
    ``cloud`` ``None`` means: ``AZURE_CLOUD``, then az's configured cloud, then ``AzureCloud``.
    ``command`` selects the SKU rule: ``ssh``/``proxy`` accept the Developer SKU (az ≥ 1.4.1); ``tunnel``/``rdp``
    need Standard or Premium unless ``allow_developer`` says otherwise.
    ``discovery_cache_ttl``: seconds a cached Bastion ARM GET stays usable (``control.discovery_cache``); 0 (the
    library default) neither reads nor writes the cache. The CLI sets it from ``--discovery-cache-ttl`` /
    ``--no-discovery-cache`` / ``BASTION_FAST_DISCOVERY_CACHE_TTL``, default 600.
    """

    name: str
    resource_group: str
    target: TunnelTarget
    subscription: str | None = None
    auth: str = "default"
    tenant: str | None = None
    client_id: str | None = None
    cloud: str | None = None
    arm_endpoint: str | None = None
    ca_bundle: str | None = None
    command: str = "tunnel"
    allow_developer: bool | None = None
    connect_timeout: float = 10.0
    read_timeout: float = 30.0
    retries: int = 2
    discovery_cache_ttl: float = 0.0

    @property
    def developer_allowed(self) -> bool:
        """Whether a Developer-SKU bastion is acceptable for this command."""
        if self.allow_developer is not None:
            return self.allow_developer
        return self.command in {"ssh", "proxy", "ssh_config", "cp"}


@runtime_checkable
class ControlPlane(Protocol):
    """What the tunnel needs from Azure: one grant per local connection, and its cleanup.

    (The object ``connect`` returns also has ``.bastion -> BastionInfo``; it is not part of this protocol so
    test doubles need only the three methods.)
    """

    async def open_grant(self) -> TunnelGrant:
        """``POST /api/tokens`` (after the data-pod call for Developer) → a fresh grant for one connection."""
        ...

    async def close_grant(self, grant: TunnelGrant) -> None:
        """``DELETE /api/tokens/{authToken}`` with the grant's node id; never raises, never logs the token."""
        ...

    async def aclose(self) -> None:
        """Release the HTTP session and the credential."""
        ...
