"""What a tunnel tells the outside world: readiness, each connection opened and closed, the reason it stopped.

Two audiences, two channels (stdout is data, logs are stderr — USERS.md §6):

* **People** read stderr. Readiness repeats az's three lines (``Opening tunnel on port: N``, ``Tunnel is ready,
  connect on port N``, ``Ctrl + C to close``) as warnings, so ``--only-show-errors`` silences them as it does in
  az; connection stories are INFO (``-v``); a failed connection is a WARNING with its reason.
* **Programs** read stdout with ``--output json``: exactly one ``{"event":"ready","address":…,"port":N}`` line,
  flushed before any connection is accepted, then one line per connection ``opened`` and ``closed`` (bytes each
  way, duration, close code, error) and a final ``stopped``. Every line is flushed as written.

Error texts are redacted before they reach either channel.
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass
from typing import IO, Any

from bastion_fast._logging import redact

__all__ = ["ConnectionResult", "JsonEvents", "TextEvents", "TunnelEvents", "human_bytes"]

log = logging.getLogger("bastion_fast.tunnel")


@dataclass(frozen=True)
class ConnectionResult:
    """How one local connection ended.

    ``bytes_up`` went from the local application to Bastion, ``bytes_down`` the other way (payload bytes).
    ``ok`` is False when the connection failed for a reason on Bastion's side (token, WebSocket, drop, abnormal
    close code); ``phase`` says where it ended (``grant``, ``connect``, ``pump``).
    """

    id: int
    peer: str
    ok: bool
    phase: str
    bytes_up: int = 0
    bytes_down: int = 0
    duration: float = 0.0
    close_code: int | None = None
    error: str | None = None
    hint: str | None = None


def human_bytes(n: int) -> str:
    """``1234567`` → ``"1.2 MB"`` (decimal units, like transfer tools print)."""
    value = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


class TunnelEvents:
    """The silent sink (library default); subclasses print. All methods are called on the event loop."""

    def ready(self, address: str, port: int) -> None:
        """The listener accepts connections on ``address:port``."""

    def opened(self, conn_id: int, peer: str) -> None:
        """A local connection was accepted."""

    def closed(self, result: ConnectionResult) -> None:
        """A local connection ended (its token is being deleted)."""

    def stopped(self, reason: str, error: str | None = None) -> None:
        """The tunnel stopped accepting connections (``reason``: signal name, timeout, idle-timeout, …)."""


class TextEvents(TunnelEvents):
    """Human lines on stderr through logging (az's wording for readiness)."""

    def __init__(self, *, default_bind: bool = True) -> None:
        self.default_bind = default_bind

    def ready(self, address: str, port: int) -> None:
        log.warning("Opening tunnel on port: %d", port)
        if self.default_bind:
            log.warning("Tunnel is ready, connect on port %d", port)
        else:
            log.warning("Tunnel is ready, connect on %s port %d", address, port)
        log.warning("Ctrl + C to close")

    def opened(self, conn_id: int, peer: str) -> None:
        log.info("connection %d from %s: opening", conn_id, peer)

    def closed(self, result: ConnectionResult) -> None:
        if result.ok:
            log.info("connection %d closed: %s up, %s down in %.1f s", result.id, human_bytes(result.bytes_up),
                     human_bytes(result.bytes_down), result.duration)
            return
        log.warning("connection %d from %s failed: %s", result.id, result.peer, redact(result.error or "unknown"))
        if result.hint:
            log.info("hint: %s", redact(result.hint))

    def stopped(self, reason: str, error: str | None = None) -> None:
        log.info("tunnel stopped (%s)", reason)


class JsonEvents(TextEvents):
    """One JSON object per line on ``stream`` (stdout), flushed; the human lines still go to stderr."""

    def __init__(self, stream: IO[str] | None = None, *, default_bind: bool = True) -> None:
        super().__init__(default_bind=default_bind)
        self.stream = stream if stream is not None else sys.stdout

    def _emit(self, event: dict[str, Any]) -> None:
        try:
            self.stream.write(json.dumps(event, separators=(",", ":")) + "\n")
            self.stream.flush()
        except (OSError, ValueError):  # stdout closed by the reader: the tunnel itself goes on
            log.debug("could not write a JSON event to stdout", exc_info=True)

    def ready(self, address: str, port: int) -> None:
        self._emit({"event": "ready", "address": address, "port": port})
        super().ready(address, port)

    def opened(self, conn_id: int, peer: str) -> None:
        self._emit({"event": "opened", "id": conn_id, "peer": peer})
        super().opened(conn_id, peer)

    def closed(self, result: ConnectionResult) -> None:
        self._emit({
            "event": "closed",
            "id": result.id,
            "peer": result.peer,
            "ok": result.ok,
            "phase": result.phase,
            "bytes_up": result.bytes_up,
            "bytes_down": result.bytes_down,
            "duration": round(result.duration, 6),
            "close_code": result.close_code,
            "error": redact(result.error) if result.error else None,
        })
        super().closed(result)

    def stopped(self, reason: str, error: str | None = None) -> None:
        self._emit({"event": "stopped", "reason": reason, "error": redact(error) if error else None})
        super().stopped(reason, error)
