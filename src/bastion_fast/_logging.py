"""Logging to stderr with secrets redacted, whatever the level.

stdout carries data (tunnel bytes in ``proxy`` mode, JSON events), so every log line goes to stderr. Secrets are
removed in a handler-level filter, so a token cannot leak through any logger, ours or a library's:

* values registered with :func:`register_secret` (every ARM token, authToken and websocketToken we obtain) are
  replaced wherever they appear;
* as a safety net, patterns that look like secrets are masked too: ``aztoken=…``, ``Bearer …``, JWTs, and the
  ``/webtunnelv2/<token>`` path segment.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
from typing import Any

__all__ = ["REDACTED", "RedactingFilter", "configure", "redact", "register_secret"]

REDACTED = "<redacted>"

_lock = threading.Lock()
_secrets: set[str] = set()
_PATTERNS = [
    re.compile(r"(?i)(aztoken|authToken|websocketToken|token|access_token|refresh_token)(\"?\s*[=:]\s*\"?)([^&\s\"',}]+)"),
    re.compile(r"(?i)(bearer)(\s+)([A-Za-z0-9\-_.~+/]+=*)"),
    re.compile(r"()()(eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*)"),
    re.compile(r"(/(?:webtunnelv2|webtunnel|omni/webtunnel|api/tokens)/)()([^/?\s\"']+)"),
]


def register_secret(value: str | None) -> None:
    """Remember a secret so that it is masked in every later log line (tokens of 8+ characters only)."""
    if value and len(value) >= 8:
        with _lock:
            _secrets.add(value)


def redact(text: str) -> str:
    """Return ``text`` with every registered secret and secret-looking pattern masked."""
    if _secrets:
        with _lock:
            secrets = sorted(_secrets, key=len, reverse=True)
        for secret in secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
    for pattern in _PATTERNS:
        text = pattern.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}", text)
    return text


class RedactingFilter(logging.Filter):
    """Render each record once, redact it, and freeze the result into the record."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string must not kill logging
            message = str(record.msg)
        record.msg = redact(message)
        record.args = None
        if record.exc_info and record.exc_info[1] is not None:
            import traceback

            record.exc_text = redact("".join(traceback.format_exception(*record.exc_info)))
            record.exc_info = None
        return True


def configure(level: int, *, stream: Any = None, log_file: str | None = None) -> None:
    """Send bastion-fast's and libraries' logs to stderr (and optionally a file), always redacted.

    Libraries stay at WARNING unless ``level`` is DEBUG, so ``-v`` shows our story, ``--debug`` everything.
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_bastion_fast", False):
            root.removeHandler(handler)
    handlers: list[logging.Handler] = [logging.StreamHandler(stream or sys.stderr)]
    if log_file:
        handlers.append(logging.FileHandler(log_file, encoding="utf-8"))
    detailed = "%(asctime)s %(levelname)s %(name)s: %(message)s"
    fmt = logging.Formatter(detailed if level <= logging.DEBUG else "%(message)s")
    for handler in handlers:
        handler.setFormatter(fmt)
        handler.addFilter(RedactingFilter())
        handler._bastion_fast = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(level if level <= logging.DEBUG else logging.WARNING)
    logging.getLogger("bastion_fast").setLevel(level)
