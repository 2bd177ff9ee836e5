"""Run-time state shared by the data plane, the admin API and ARM: Bastion hosts, nodes, ledger, faults, targets.

Each Bastion host has its own data-plane listener (its ``dnsName`` is ``127.0.0.1:<port>``, unique like a real
``bst-<guid>.bastion.azure.com``) and ``nodes`` instances with distinct nodeIds ``10.0.<host index>.<4+i>``. Tokens
are node-local: a token request is answered by the node named in ``X-Node-Id`` when there is one, otherwise the next
node round-robin, and a WebSocket or DELETE naming another node finds nothing (404), like the real front end routing
by ``X-Node-Id``.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Any

from bastion_fast.emulator.arm_bastion_hosts import bastion_id
from bastion_fast.emulator.config import BastionConfig, EmulatorConfig
from bastion_fast.emulator.faults import Faults
from bastion_fast.emulator.ledger import Ledger, Session
from bastion_fast.emulator.targets import Targets

if TYPE_CHECKING:
    from bastion_fast.emulator.bridge import Bridge

__all__ = ["BastionRuntime", "Runtime"]


@dataclass
class BastionRuntime:
    """One Bastion host at run time."""

    cfg: BastionConfig
    id: str
    index: int
    host: str = "127.0.0.1"
    port: int = 0
    nodes: list[str] = field(default_factory=list)
    _rr: Any = None

    def __post_init__(self) -> None:
        self.nodes = [f"10.0.{self.index}.{4 + i}" for i in range(self.cfg.nodes)]
        self._rr = itertools.cycle(self.nodes)

    @property
    def dns_name(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def developer(self) -> bool:
        return self.cfg.sku == "Developer"

    @property
    def tunneling_allowed(self) -> bool:
        """Native client works on Standard/Premium with enableTunneling, and on Developer (omni) always."""
        if self.developer:
            return True
        return self.cfg.sku in ("Standard", "Premium") and self.cfg.enable_tunneling

    @property
    def ip_connect_allowed(self) -> bool:
        return self.cfg.sku in ("Standard", "Premium") and self.cfg.enable_ip_connect

    def pick_node(self, wanted: str | None) -> str:
        """The node answering a token request: the one in ``X-Node-Id`` if it exists, else round-robin."""
        if wanted and wanted in self.nodes:
            return wanted
        node: str = next(self._rr)
        return node


class Runtime:
    """Everything the request handlers need; owned by :class:`bastion_fast.emulator.Emulator`."""

    def __init__(self, config: EmulatorConfig, pump: ModuleType) -> None:
        self.config = config
        self.knobs = config.knobs
        self.pump = pump
        self.ledger = Ledger()
        self.faults = Faults(config.faults)
        self.targets = Targets(config.targets, config.default_target, source_size=config.knobs.source_size,
                               on_change=self.ledger.changed)
        self.bastions = [
            BastionRuntime(cfg, bastion_id(config.subscription, cfg.resource_group, cfg.name), index)
            for index, cfg in enumerate(config.all_bastions())
        ]
        self.bridges: set[Bridge] = set()
        self.closing = False
        self.started = time.time()
        self.info: dict[str, Any] = {}

    def bastion_by_id(self, resource_id: str) -> BastionRuntime | None:
        key = resource_id.lower()
        for bastion in self.bastions:
            if bastion.id.lower() == key:
                return bastion
        return None

    # -- SessionControl (ARM) ------------------------------------------------------------------------------------

    def active_sessions(self, bastion_id: str) -> list[dict[str, Any]]:
        """``BastionActiveSession`` objects (azure-mgmt-network model) for undeleted sessions."""
        now = time.time()
        out = []
        for s in self.ledger.active(bastion_id):
            parts = _id_parts(s.resource_id)
            start = s.ws_opened_at or s.issued_at
            out.append({
                "sessionId": s.id,
                "startTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start)),
                "targetSubscriptionId": parts.get("subscriptions", ""),
                "resourceType": "VM" if s.hostname is None else "IPAddress",
                "targetHostName": s.hostname or _last_name(s.resource_id),
                "targetResourceGroup": parts.get("resourcegroups", ""),
                "userName": s.user,
                "targetIpAddress": s.hostname or "",
                "protocol": "RDP" if s.port == 3389 else "SSH",
                "targetResourceId": s.resource_id,
                "sessionDurationInMins": round((now - start) / 60.0, 3),
            })
        return out

    async def disconnect_sessions(self, bastion_id: str, session_ids: list[str]) -> list[dict[str, Any]]:
        """End the named sessions: close their WebSockets (1000) and delete their tokens."""
        results = []
        active = {s.id: s for s in self.ledger.active(bastion_id)}
        for sid in session_ids:
            session = active.get(sid)
            if session is None:
                results.append({"sessionId": sid, "message": "Session not found", "state": "NotFound"})
                continue
            self.end_session(session, by="arm")
            results.append({"sessionId": sid, "message": "Session disconnected", "state": "Disconnected"})
        return results

    def end_session(self, session: Session, *, by: str, code: int = 1000, reason: str = "Session disconnected") -> None:
        """Delete ``session`` and close its WebSocket if live."""
        handle = session.handle
        if handle is not None:
            handle.close(code, reason, by=by)
        self.ledger.mark_deleted(session, by)

    def maintenance(self, *, code: int | None = 1012, reason: str = "Service restart") -> int:
        """Close every live WebSocket at once (``code=None``: drop without a close frame); returns how many."""
        count = 0
        for bridge in list(self.bridges):
            if code is None:
                bridge.abort(by="maintenance")
            else:
                bridge.close(code, reason, by="maintenance")
            count += 1
        return count


def _id_parts(resource_id: str) -> dict[str, str]:
    parts = [p for p in resource_id.split("/") if p]
    return {parts[i].lower(): parts[i + 1] for i in range(0, len(parts) - 1, 2)}


def _last_name(resource_id: str) -> str:
    parts = [p for p in resource_id.split("/") if p]
    if len(parts) >= 2 and parts[-2].lower() == "virtualmachines" and len(parts) >= 4 \
            and parts[-4].lower() == "virtualmachinescalesets":
        return f"{parts[-3]}_{parts[-1]}"
    return parts[-1] if parts else ""
