"""Azure control plane: sign-in, Bastion discovery, and the ``/api/tokens`` exchange (DESIGN.md §3).

Importing this package is cheap (dataclasses only); aiohttp, azure-core, azure-identity and azure-mgmt-network are
imported when ``connect`` runs — and, when the discovery cache answers (``control.discovery_cache``), the ARM SDK
not at all and aiohttp only when the first connection (or ``warm_up()``) needs it.

Usage::

    plane = await connect(options)          # sign in, GET the Bastion, check it
    grant = await plane.open_grant()        # per local connection
    ...                                     # WebSocket to grant.websocket_url
    await plane.close_grant(grant)          # DELETE, never raises
    await plane.aclose()
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bastion_fast.control.models import BastionInfo, ConnectionOptions, ControlPlane, TunnelGrant, TunnelTarget

if TYPE_CHECKING:
    from bastion_fast.control.plane import AzureControlPlane

__all__ = ["BastionInfo", "ConnectionOptions", "ControlPlane", "TunnelGrant", "TunnelTarget", "connect"]


async def connect(options: ConnectionOptions, **kwargs: Any) -> AzureControlPlane:
    """Sign in, discover and validate the Bastion once; see ``bastion_fast.control.plane.connect``."""
    from bastion_fast.control.plane import connect as _connect

    return await _connect(options, **kwargs)
