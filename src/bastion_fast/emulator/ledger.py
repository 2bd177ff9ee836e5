"""The session ledger: every Bastion session the emulator issued, and what became of it.

Theory of operation — one :class:`Session` per successful ``POST /api/tokens``, moving through::

    issued ──WebSocket 101──▶ live ──WebSocket ends──▶ ended ──DELETE──▶ deleted
       │                                                 ▲
       ├──handshake refused after the token was found────┘  (the client must still DELETE: PROTOCOL §10.2)
       └──DELETE (or ARM disconnectActiveSessions) at any point ─────────▶ deleted

A session is **leaked** when its WebSocket ended (or its handshake was refused) but its authToken was never deleted —
the orphan pattern of ext#10137. A session whose websocketToken was never used is *unused*, not leaked, because the
emulator cannot tell a slow client from a forgetful one; :meth:`Ledger.unused` lists them.

Every change wakes :meth:`Ledger.wait_for` waiters, so tests wait for a state instead of sleeping. Tokens never
appear in snapshots: a session carries ``auth_token_sha256`` (first 16 hex digits) so a client can find its own.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Ledger", "Session"]

_MAX_FINISHED = 10000  # deleted sessions kept for inspection; older ones are forgotten (bounded memory)


def token_digest(token: str) -> str:
    """What snapshots show instead of a token: the first 16 hex digits of its SHA-256."""
    return hashlib.sha256(token.encode()).hexdigest()[:16]


@dataclass(eq=False)
class Session:
    """One Bastion session; times are ``time.time()`` seconds (None = not yet)."""

    bastion_id: str
    node_id: str
    auth_token: str = field(repr=False)
    websocket_token: str = field(repr=False)
    user: str
    resource_id: str
    port: int
    target: str
    hostname: str | None = None
    developer: bool = False
    token_sent: bool = False
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    issued_at: float = field(default_factory=time.time)
    expires_at: float = 0.0  # monotonic deadline of the websocketToken
    ws_token_spent: bool = False
    ws_opened_at: float | None = None
    ws_closed_at: float | None = None
    handshake_refused: str | None = None
    deleted_at: float | None = None
    deleted_by: str | None = None
    ended_by: str | None = None
    bytes_to_target: int = 0
    bytes_to_client: int = 0
    close_code: int | None = None
    close_reason: str | None = None
    close_code_sent: int | None = None
    error: str | None = None
    sink: dict[str, Any] | None = None
    handle: Any = field(default=None, repr=False)  # the live bridge (has .close(code, reason) / .abort())
    spec: Any = field(default=None, repr=False)  # the TargetSpec resolved when the token was issued

    @property
    def state(self) -> str:
        if self.deleted_at is not None:
            return "deleted"
        if self.ws_opened_at is not None and self.ws_closed_at is None:
            return "live"
        if self.ws_closed_at is not None or self.handshake_refused is not None:
            return "ended"
        return "issued"

    @property
    def leaked(self) -> bool:
        return self.state == "ended"

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "state": self.state,
            "leaked": self.leaked,
            "bastion_id": self.bastion_id,
            "node_id": self.node_id,
            "user": self.user,
            "resource_id": self.resource_id,
            "hostname": self.hostname,
            "port": self.port,
            "target": self.target,
            "developer": self.developer,
            "token_sent": self.token_sent,
            "auth_token_sha256": token_digest(self.auth_token),
            "issued_at": self.issued_at,
            "websocket_token_spent": self.ws_token_spent,
            "websocket_token_expired": not self.ws_token_spent and time.monotonic() > self.expires_at,
            "ws_opened_at": self.ws_opened_at,
            "ws_closed_at": self.ws_closed_at,
            "handshake_refused": self.handshake_refused,
            "deleted_at": self.deleted_at,
            "deleted_by": self.deleted_by,
            "ended_by": self.ended_by,
            "bytes_to_target": self.bytes_to_target,
            "bytes_to_client": self.bytes_to_client,
            "close_code": self.close_code,
            "close_reason": self.close_reason,
            "close_code_sent": self.close_code_sent,
            "error": self.error,
            "sink": self.sink,
        }


class Ledger:
    """All sessions of one emulator, indexed by token; single event loop, no locking needed."""

    def __init__(self) -> None:
        self._sessions: dict[str, Session] = {}
        self._by_auth: dict[str, Session] = {}
        self._by_ws: dict[str, Session] = {}
        self._waiters: list[asyncio.Future[None]] = []
        self._pending = 0  # handshakes/bridges in progress (not yet reflected in a session state)

    # -- changes ------------------------------------------------------------------------------------------------

    def add(self, session: Session) -> Session:
        self._sessions[session.id] = session
        self._by_auth[session.auth_token] = session
        self._by_ws[session.websocket_token] = session
        self._prune()
        self.changed()
        return session

    def changed(self) -> None:
        """Wake every :meth:`wait_for` waiter (call after any change to a session)."""
        waiters, self._waiters = self._waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    def begin(self) -> None:
        """Mark an operation in flight (a handshake being served); :meth:`wait_idle` waits for it."""
        self._pending += 1

    def end(self) -> None:
        self._pending -= 1
        self.changed()

    def mark_live(self, session: Session, handle: Any) -> None:
        session.ws_opened_at = time.time()
        session.handle = handle
        self.changed()

    def mark_ended(self, session: Session, **fields: Any) -> None:
        session.ws_closed_at = time.time()
        for key, value in fields.items():
            setattr(session, key, value)
        session.handle = None
        self.changed()

    def mark_refused(self, session: Session, reason: str) -> None:
        session.handshake_refused = reason
        self.changed()

    def mark_deleted(self, session: Session, by: str) -> None:
        session.deleted_at = time.time()
        session.deleted_by = by
        self._by_auth.pop(session.auth_token, None)
        self._by_ws.pop(session.websocket_token, None)
        self.changed()

    def _prune(self) -> None:
        if len(self._sessions) <= _MAX_FINISHED * 2:
            return
        finished = [s for s in self._sessions.values() if s.state == "deleted"]
        for session in finished[: len(finished) - _MAX_FINISHED]:
            del self._sessions[session.id]

    # -- queries -------------------------------------------------------------------------------------------------

    def by_auth_token(self, token: str) -> Session | None:
        """The undeleted session with this authToken."""
        return self._by_auth.get(token)

    def by_websocket_token(self, token: str) -> Session | None:
        """The undeleted session with this websocketToken (spent or not)."""
        return self._by_ws.get(token)

    def get(self, session_id: str) -> Session | None:
        return self._sessions.get(session_id)

    def sessions(self, bastion_id: str | None = None) -> list[Session]:
        """All sessions in issue order, optionally of one Bastion (``bastion_id`` compared case-insensitively)."""
        items = list(self._sessions.values())
        if bastion_id is not None:
            key = bastion_id.lower()
            items = [s for s in items if s.bastion_id.lower() == key]
        return items

    def live(self) -> list[Session]:
        return [s for s in self._sessions.values() if s.state == "live"]

    def leaked(self) -> list[Session]:
        """Sessions whose WebSocket ended (or was refused) while the authToken was never deleted."""
        return [s for s in self._sessions.values() if s.leaked]

    def unused(self) -> list[Session]:
        """Sessions issued but never connected nor deleted."""
        return [s for s in self._sessions.values() if s.state == "issued"]

    def active(self, bastion_id: str) -> list[Session]:
        """What ARM ``getActiveSessions`` reports: every undeleted session (orphans included, as in ext#10137)."""
        return [s for s in self.sessions(bastion_id) if s.state != "deleted"]

    def snapshot(self) -> dict[str, Any]:
        """JSON-ready view (``GET /_emulator/sessions``)."""
        sessions = [s.to_dict() for s in self._sessions.values()]
        counts: dict[str, int] = {"issued": 0, "live": 0, "ended": 0, "deleted": 0}
        for s in sessions:
            counts[s["state"]] += 1
        return {
            "sessions": sessions,
            "counts": counts,
            "leaked": [s["id"] for s in sessions if s["leaked"]],
            "pending_handshakes": self._pending,
        }

    # -- waiting -------------------------------------------------------------------------------------------------

    @property
    def idle(self) -> bool:
        return self._pending == 0 and not any(s.state == "live" for s in self._sessions.values())

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:  # noqa: ASYNC109
        """Return once ``predicate()`` is true (checked after every ledger change); TimeoutError after ``timeout``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not predicate():
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError("the emulator's ledger did not reach the expected state in time")
            fut: asyncio.Future[None] = loop.create_future()
            self._waiters.append(fut)
            try:
                await asyncio.wait_for(fut, remaining)
            except TimeoutError:
                continue
