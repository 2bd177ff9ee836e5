"""``sessions list | disconnect``: the Bastion's Sessions page, from the command line.

Both go through the Bastion's own ARM actions: ``getActiveSessions`` (a long-running, pageable POST in
azure-mgmt-network: ``begin_get_active_sessions``) and ``disconnectActiveSessions`` (a pageable POST with
``{"sessionIds": [...]}``). Disconnecting ends the user's WebSocket on the Bastion; a bastion-fast tunnel sees that
one connection close and keeps listening for the next.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from bastion_fast.ops.arm import BastionRef, reraise
from bastion_fast.ops.output import Cell, Table

__all__ = ["DisconnectReport", "SessionsReport", "disconnect_sessions", "format_duration", "list_sessions"]

log = logging.getLogger("bastion_fast.ops.sessions")


def format_duration(minutes: float | None) -> str:
    """``62.5`` → ``"1h 02m"``; ``0.4`` → ``"0m 24s"``."""
    if minutes is None:
        return "-"
    seconds = round(float(minutes) * 60)
    hours, rest = divmod(seconds, 3600)
    mins, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {mins:02d}m"
    return f"{mins}m {secs:02d}s"


def _target(session: dict[str, Any]) -> str:
    rid = session.get("targetResourceId") or ""
    name = rid.rstrip("/").rsplit("/", 1)[-1] if rid else ""
    host = session.get("targetHostName") or name
    ip = session.get("targetIpAddress")
    if host and ip:
        return f"{host} ({ip})"
    return host or ip or "-"


@dataclass
class SessionsReport:
    """Result of ``sessions list``."""

    ref: BastionRef
    sessions: list[dict[str, Any]]
    taken_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def to_json(self) -> dict[str, Any]:
        return {"bastion": self.ref.id, "time": self.taken_at.isoformat(timespec="seconds"),
                "sessions": self.sessions}

    def tables(self) -> list[Table]:
        table = Table(f"Active sessions on {self.ref.name} ({len(self.sessions)}) at "
                      f"{self.taken_at.astimezone():%H:%M:%S}",
                      ["user", "target", "protocol", "started", "duration", "session id"])
        for s in self.sessions:
            table.rows.append([
                str(s.get("userName") or "-"),
                _target(s),
                str(s.get("protocol") or "-"),
                str(s.get("startTime") or "-"),
                format_duration(s.get("sessionDurationInMins")),
                str(s.get("sessionId") or "-"),
            ])
        if not self.sessions:
            table.notes.append("No active sessions.")
        else:
            table.notes.append(f"Disconnect one: bastion-fast sessions disconnect {self.ref.cli_args} "
                               "--session-id ID")
        return [table]


async def list_sessions(arm: Any, ref: BastionRef) -> SessionsReport:
    """The active sessions (``BastionActiveSession`` JSON, wire names)."""
    client = arm.client(ref.subscription)
    sessions: list[dict[str, Any]] = []
    try:
        poller = await client.begin_get_active_sessions(ref.resource_group, ref.name)
        pages = await poller.result()
        async for item in pages:
            sessions.append(item.as_dict())
    except Exception as exc:
        reraise(exc, f"list the sessions of Bastion {ref.name!r}", bastion=ref)
    sessions.sort(key=lambda s: str(s.get("startTime") or ""))
    return SessionsReport(ref, sessions)


@dataclass
class DisconnectReport:
    """Result of ``sessions disconnect``: one state per requested id."""

    ref: BastionRef
    results: list[dict[str, Any]]

    @property
    def all_disconnected(self) -> bool:
        return all(str(r.get("state", "")).lower() == "disconnected" for r in self.results)

    def to_json(self) -> dict[str, Any]:
        return {"bastion": self.ref.id, "results": self.results}

    def tables(self) -> list[Table]:
        table = Table(f"Disconnect on {self.ref.name}", ["session id", "state", "message"])
        for r in self.results:
            state = str(r.get("state") or "-")
            table.rows.append([str(r.get("sessionId") or "-"),
                               Cell(state, "ok" if state.lower() == "disconnected" else "error"),
                               str(r.get("message") or "")])
        return [table]


async def disconnect_sessions(arm: Any, ref: BastionRef, session_ids: Sequence[str]) -> DisconnectReport:
    """Disconnect ``session_ids``; ids the Bastion does not know come back as ``NotFound``."""
    from azure.mgmt.network.models import SessionIds

    client = arm.client(ref.subscription)
    wanted = list(dict.fromkeys(s.strip() for s in session_ids if s.strip()))
    results: list[dict[str, Any]] = []
    try:
        async for item in client.disconnect_active_sessions(ref.resource_group, ref.name,
                                                            SessionIds(session_ids=wanted)):
            results.append(item.as_dict())
    except Exception as exc:
        reraise(exc, f"disconnect sessions on Bastion {ref.name!r}", bastion=ref)
    answered = {str(r.get("sessionId", "")).lower() for r in results}
    for sid in wanted:
        if sid.lower() not in answered:
            results.append({"sessionId": sid, "state": "Unknown", "message": "the Bastion did not report on it"})
    for r in results:
        log.info("session %s: %s", r.get("sessionId"), r.get("state"))
    return DisconnectReport(ref, results)
