"""Local tunnels through Azure Bastion: listener, per-connection session, WebSocket connect, events.

``open_tunnel`` is the library API (``bastion_fast.open_tunnel``); the CLI's ``bastion-fast tunnel`` drives the
same :class:`~bastion_fast.tunnel.listener.Listener`. Module map:

* ``handshake`` — the opening handshake, sans I/O (websockets' ``ClientProtocol``), strict 101 validation
* ``connect``   — TCP → optional HTTP CONNECT proxy → TLS → upgrade → hand-off to the pump
* ``session``   — one local connection: grant → connect → pump → token deletion, always
* ``listener``  — accept, one session each, stop reasons, clean shutdown
* ``events``    — readiness and per-connection events (stderr text, stdout JSON)
* ``config``    — the tunnel's knobs
* ``api``       — ``open_tunnel`` / ``Tunnel``
"""

from __future__ import annotations

from bastion_fast.tunnel.api import Tunnel, open_tunnel
from bastion_fast.tunnel.config import TunnelConfig
from bastion_fast.tunnel.events import ConnectionResult, JsonEvents, TextEvents, TunnelEvents
from bastion_fast.tunnel.listener import Listener

__all__ = [
    "ConnectionResult",
    "JsonEvents",
    "Listener",
    "TextEvents",
    "Tunnel",
    "TunnelConfig",
    "TunnelEvents",
    "open_tunnel",
]
