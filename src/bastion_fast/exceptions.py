"""Every error bastion-fast raises, in one tree.

The CLI maps each branch to an exit code and a message that says what went wrong *and what to do*; library users
catch the branch they care about. Local misuse and remote misbehaviour are distinct types (h11's lesson).

::

    BastionFastError                       base; ``.hint`` is the advice shown to users
    ├── UsageError                         bad flags / arguments / profile (exit 2)
    ├── ConfigurationError                 the local environment is wrong: CA bundle, config file, port in use (exit 1)
    ├── WebSocketError                     the WebSocket data channel
    │   ├── ProtocolError                  the peer broke RFC 6455; ``.close_code`` is the code to send
    │   │   ├── FrameTooLarge              a frame above the configured maximum (1009)
    │   │   └── InvalidClosePayload        bad close code (1002) or reason that is not UTF-8 (1007)
    │   ├── HandshakeError                 the HTTP upgrade failed; ``.status`` when the server answered
    │   └── ConnectionClosed               the channel ended; ``.code``/``.reason`` of the close frame
    ├── ControlPlaneError                  Azure sign-in, ARM and the Bastion token API
    │   ├── AuthenticationError            no usable credential / token
    │   ├── DiscoveryError                 the Bastion host cannot be used as asked
    │   │   ├── BastionNotFound            ARM 404
    │   │   ├── PermissionDenied           ARM 403 (RBAC)
    │   │   ├── UnsupportedSku             SKU cannot do what was asked
    │   │   ├── NativeClientDisabled       enableTunneling false/absent
    │   │   └── IpConnectDisabled          --target-ip-address without enableIpConnect
    │   └── TokenExchangeError             POST/DELETE /api/tokens failed; ``.status``, ``.service_message``
    └── TunnelError                        the local tunnel (listener, too many failed connections)

Messages never contain tokens: constructors take the message text only, and every raise site builds it from
non-secret values. ``tests/test_secrets.py`` checks this end to end.
"""

from __future__ import annotations

__all__ = [
    "AuthenticationError",
    "BastionFastError",
    "BastionNotFound",
    "ConfigurationError",
    "ConnectionClosed",
    "ControlPlaneError",
    "DiscoveryError",
    "FrameTooLarge",
    "HandshakeError",
    "InvalidClosePayload",
    "IpConnectDisabled",
    "NativeClientDisabled",
    "PermissionDenied",
    "ProtocolError",
    "TokenExchangeError",
    "TunnelError",
    "UnsupportedSku",
    "UsageError",
    "WebSocketError",
]

# RFC 6455 §7.4.1 close codes used when we detect a violation.
CLOSE_PROTOCOL_ERROR = 1002
CLOSE_INVALID_DATA = 1007
CLOSE_MESSAGE_TOO_BIG = 1009


class BastionFastError(Exception):
    """Base of every bastion-fast error.

    Args:
        message: what went wrong, in words a user understands.
        hint: what to do about it (shown on its own line by the CLI).
    """

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class UsageError(BastionFastError):
    """The command line, profile or API call is wrong (exit code 2)."""

    exit_code = 2


class ConfigurationError(BastionFastError):
    """The local environment is wrong: unreadable CA bundle, bad config file, port in use."""


class WebSocketError(BastionFastError):
    """Anything wrong on the WebSocket data channel."""


class ProtocolError(WebSocketError):
    """The peer violated RFC 6455; send a close frame with ``close_code`` and drop the connection."""

    def __init__(self, message: str, close_code: int = CLOSE_PROTOCOL_ERROR, *, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.close_code = close_code


class FrameTooLarge(ProtocolError):
    """A frame's declared length exceeds the configured maximum (close code 1009)."""

    def __init__(self, message: str, close_code: int = CLOSE_MESSAGE_TOO_BIG, *, hint: str | None = None) -> None:
        super().__init__(message, close_code, hint=hint)


class InvalidClosePayload(ProtocolError):
    """A close frame carried a forbidden code (1002) or a reason that is not UTF-8 (1007)."""


class HandshakeError(WebSocketError):
    """The WebSocket opening handshake failed.

    ``status`` is the HTTP status when the server answered with something other than 101, else ``None``.
    """

    def __init__(self, message: str, *, status: int | None = None, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.status = status


class ConnectionClosed(WebSocketError):
    """The channel ended; ``code`` and ``reason`` come from the close frame (1006 = no close frame)."""

    def __init__(self, message: str, *, code: int = 1006, reason: str = "", hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.code = code
        self.reason = reason


class ControlPlaneError(BastionFastError):
    """Azure sign-in, ARM discovery or the Bastion token API failed."""


class AuthenticationError(ControlPlaneError):
    """No credential could produce an ARM token."""


class DiscoveryError(ControlPlaneError):
    """The Bastion host exists but cannot be used the way it was asked to."""


class BastionNotFound(DiscoveryError):
    """ARM answered 404 for the Bastion host."""


class PermissionDenied(DiscoveryError):
    """ARM answered 403: the signed-in identity lacks a role."""


class UnsupportedSku(DiscoveryError):
    """The Bastion SKU cannot do what was asked (e.g. tunnel on Basic)."""


class NativeClientDisabled(DiscoveryError):
    """Native client support (``enableTunneling``) is off."""


class IpConnectDisabled(DiscoveryError):
    """``--target-ip-address`` was given but IP-based connection is off."""


class TokenExchangeError(ControlPlaneError):
    """``POST``/``DELETE /api/tokens`` failed.

    ``status`` is the HTTP status (``None`` for a connection failure); ``service_message`` is the service's
    ``message`` field when it sent one.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        service_message: str | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.status = status
        self.service_message = service_message


class TunnelError(BastionFastError):
    """The local tunnel failed as a whole (listener, repeated connection failures)."""
