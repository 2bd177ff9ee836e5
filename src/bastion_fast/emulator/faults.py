"""Fault injection: what Bastion users suffer from, on demand.

Faults come from the config file, CLI flags, or at run time from ``POST /_emulator/faults`` (a JSON object with any
subset of :class:`FaultConfig`'s fields; ``null`` clears one) and ``DELETE /_emulator/faults`` (clear all). WebSocket
faults are read when a WebSocket is accepted, so they apply to WebSockets opened after the change. Token and
handshake faults apply to the next ``*_fault_count`` requests (0 = every request until cleared).

"Maintenance" (close every live WebSocket at once) is an action, not a standing fault: ``POST
/_emulator/maintenance`` or :meth:`bastion_fast.emulator.Emulator.maintenance`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from bastion_fast.exceptions import ConfigurationError

__all__ = ["CLOSE_CODES", "HANDSHAKE_STATUSES", "TOKEN_STATUSES", "FaultConfig", "Faults"]

CLOSE_CODES = (1000, 1001, 1008, 1011, 1012)
TOKEN_STATUSES = (401, 403, 500, 502, 503)
HANDSHAKE_STATUSES = (403, 404, 500, 502, 503)


@dataclass
class FaultConfig:
    """Faults in force; every field's zero/None value means "no fault"."""

    drop_after_bytes: int = 0
    """Abort the WebSocket (no close frame) once this many payload bytes passed in either direction."""
    drop_after_seconds: float = 0.0
    """Abort the WebSocket (no close frame) this many seconds after the 101."""
    close_code: int | None = None
    """Send a close frame with this code (1000/1001/1008/1011/1012) ``close_after_seconds`` after the 101."""
    close_after_seconds: float = 0.0
    close_reason: str = ""
    token_delay: float = 0.0
    """Seconds ``POST /api/tokens`` waits before answering (applies to every request)."""
    token_status: int | None = None
    """Answer ``POST /api/tokens`` with 401/403/500/503 (JSON ``message``) or 502 (an HTML gateway page)."""
    token_fault_count: int = 0
    handshake_status: int | None = None
    """Refuse the WebSocket handshake with this status (404, 503, …)."""
    handshake_fault_count: int = 0

    def validate(self) -> None:
        if self.drop_after_bytes < 0 or self.drop_after_seconds < 0 or self.close_after_seconds < 0:
            raise ConfigurationError("Fault byte counts and times must be >= 0.")
        if self.token_delay < 0:
            raise ConfigurationError("token_delay must be >= 0 seconds.")
        if self.close_code is not None and self.close_code not in CLOSE_CODES:
            raise ConfigurationError(f"close_code must be one of {CLOSE_CODES}, got {self.close_code}.")
        if self.token_status is not None and self.token_status not in TOKEN_STATUSES:
            raise ConfigurationError(f"token_status must be one of {TOKEN_STATUSES}, got {self.token_status}.")
        if self.handshake_status is not None and self.handshake_status not in HANDSHAKE_STATUSES:
            raise ConfigurationError(
                f"handshake_status must be one of {HANDSHAKE_STATUSES}, got {self.handshake_status}."
            )
        if self.token_fault_count < 0 or self.handshake_fault_count < 0:
            raise ConfigurationError("Fault counts must be >= 0 (0 = every request).")
        if len(self.close_reason.encode()) > 123:
            raise ConfigurationError("close_reason must fit a control frame (123 bytes UTF-8).")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_mapping(cls, data: dict[str, Any], *, where: str = "faults",
                     base: FaultConfig | None = None) -> FaultConfig:
        """Apply ``data`` on top of ``base`` (or the defaults); ``None`` values reset a field to its default."""
        result = dataclasses.replace(base) if base is not None else cls()
        defaults = cls()
        fields = {f.name: f for f in dataclasses.fields(cls)}
        for key, raw in data.items():
            if key not in fields:
                raise ConfigurationError(f"{where}: unknown fault {key!r}.",
                                         hint=f"Known: {', '.join(sorted(fields))}.")
            default = getattr(defaults, key)
            setattr(result, key, default if raw is None else _coerce(where, key, raw, default))
        result.validate()
        return result


def _coerce(where: str, key: str, value: Any, default: Any) -> Any:
    if isinstance(value, bool):
        raise ConfigurationError(f"{where}: {key} must be a number or string, not a boolean.")
    if key in ("close_code", "token_status", "handshake_status"):
        if not isinstance(value, int):
            raise ConfigurationError(f"{where}: {key} must be an integer.")
        return value
    if isinstance(default, str):
        if not isinstance(value, str):
            raise ConfigurationError(f"{where}: {key} must be a string.")
        return value
    if isinstance(default, float):
        if not isinstance(value, (int, float)):
            raise ConfigurationError(f"{where}: {key} must be a number.")
        return float(value)
    if not isinstance(value, int):
        raise ConfigurationError(f"{where}: {key} must be an integer.")
    return value


class Faults:
    """The faults in force at run time, with the "next N requests" counters."""

    def __init__(self, initial: FaultConfig | None = None) -> None:
        self.config = dataclasses.replace(initial) if initial is not None else FaultConfig()
        self._token_left = self.config.token_fault_count
        self._handshake_left = self.config.handshake_fault_count

    def update(self, data: dict[str, Any]) -> FaultConfig:
        """Merge ``data`` (admin API / tests); raises :class:`ConfigurationError` on bad values."""
        self.config = FaultConfig.from_mapping(data, where="faults", base=self.config)
        self._token_left = self.config.token_fault_count
        self._handshake_left = self.config.handshake_fault_count
        return self.config

    def reset(self) -> None:
        self.config = FaultConfig()
        self._token_left = self._handshake_left = 0

    def snapshot(self) -> dict[str, Any]:
        data = self.config.to_dict()
        data["token_faults_left"] = self._token_left if self.config.token_fault_count else None
        data["handshake_faults_left"] = self._handshake_left if self.config.handshake_fault_count else None
        return data

    def take_token_fault(self) -> int | None:
        """The status to fail this token request with, or None; consumes one of ``token_fault_count``."""
        status = self.config.token_status
        if status is None:
            return None
        if self.config.token_fault_count:
            if self._token_left <= 0:
                return None
            self._token_left -= 1
        return status

    def take_handshake_fault(self) -> int | None:
        """The status to refuse this WebSocket handshake with, or None (consumes one count)."""
        status = self.config.handshake_status
        if status is None:
            return None
        if self.config.handshake_fault_count:
            if self._handshake_left <= 0:
                return None
            self._handshake_left -= 1
        return status
