"""The knobs of one local tunnel, in one frozen value shared by the listener and its sessions."""

from __future__ import annotations

import ipaddress
import ssl
from dataclasses import dataclass
from types import ModuleType
from typing import Literal

from bastion_fast.exceptions import UsageError

__all__ = [
    "BUFFER_BUDGET",
    "DEFAULT_BIND_ADDRESS",
    "DEFAULT_FRAME_SIZE",
    "MAX_FRAME_SIZE",
    "MIN_FRAME_SIZE",
    "TunnelConfig",
    "buffer_limits",
    "is_loopback",
    "load_pump",
]

DEFAULT_BIND_ADDRESS = "127.0.0.1"
DEFAULT_FRAME_SIZE = 32768
MIN_FRAME_SIZE = 4096  # az's size: proven against the real service
MAX_FRAME_SIZE = 1024 * 1024

BUFFER_BUDGET = 4 * 1024 * 1024
MAX_READ_SIZE = 256 * 1024
MIN_READ_SIZE = 32 * 1024


def buffer_limits(concurrent: int) -> tuple[int, int, int]:
    """``(read_size, high_water, low_water)`` for a connection accepted while ``concurrent`` are open (itself too).

    Why they shrink: under load a connection keeps about one read's worth of frames, one of ciphertext and one in
    the TLS layer's outgoing buffer resident (uvloop's TLS turns every write into a fresh buffer). With fixed
    256 KiB reads, 256 busy connections peaked at 131 MB resident; with reads shrinking like this, ~100 MB
    (``bench/README.md``). Up to 16 connections keep the fastest size (256 KiB reads, 1 MiB high water: ~10 %
    less CPU per GB than 64 KiB reads); beyond that the read size halves, down to 32 KiB, so that
    ``read_size × concurrent`` stays within :data:`BUFFER_BUDGET`. High water is 4 reads and low water one read,
    so the documented bound per connection, ``2 × (read_size + high_water)``, shrinks with it. A connection keeps
    the sizes it started with.
    """
    read = MAX_READ_SIZE
    while read > MIN_READ_SIZE and read * max(1, concurrent) > BUFFER_BUDGET:
        read //= 2
    return read, 4 * read, read


def is_loopback(address: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``; other names and addresses are reachable from elsewhere."""
    if address.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def load_pump(implementation: str | None) -> ModuleType:
    """The data-path module: ``None`` = the selector's choice, ``"cython"`` (must import) or ``"python"``."""
    from bastion_fast import pump

    if implementation is None:
        return pump.impl
    if implementation == "python":
        return pump.load(pure=True)
    if implementation == "cython":
        module = pump.load(pure=False)
        if module.IMPLEMENTATION != "cython":
            raise UsageError(
                "implementation='cython' was asked for but the compiled extension bastion_fast._pump is missing.",
                hint="Reinstall bastion-fast from a wheel (or build it with a C compiler), or use 'python'.",
            )
        return module
    raise UsageError(f"Unknown implementation {implementation!r}.", hint="Use None, 'cython' or 'python'.")


@dataclass(frozen=True, eq=False)
class TunnelConfig:
    """Everything a tunnel needs besides the control plane.

    Attributes:
        bind_address: local address to listen on (loopback by default, like az).
        port: local port; 0 picks a free one.
        frame_size: payload bytes per WebSocket frame (4096 … 1 MiB).
        keepalive: WebSocket ping every this many seconds (``None`` = only OS keepalive, like az).
        half_close: keep carrying Bastion → local data after the local side shuts down writing.
        max_failures: consecutive failed connections after which the tunnel gives up (0 = never).
        timeout: maximum lifetime in seconds (az's ``--timeout``), then a clean exit.
        idle_timeout: exit after this many seconds without any connection.
        connect_timeout, handshake_timeout: for the WebSocket leg (TCP+proxy+TLS, HTTP upgrade).
        ssl_context: TLS for the WebSocket leg (``None`` = ``bastion_fast.tls.client_ssl_context()``).
        proxy: ``None`` = from the environment, ``False`` = direct, or an ``http://host:port`` URL.
        pump: the data-path module (``bastion_fast._pump`` or ``_pump_py``), see :func:`load_pump`.
        shutdown_grace: seconds to let connections close and tokens be deleted when stopping.
        stop_linger: on stop, seconds a live connection gets for the closing handshake and the local
            application's hang-up before both legs are dropped.
        backlog: listen backlog (bursts of new connections wait here while tokens are fetched).
    """

    bind_address: str = DEFAULT_BIND_ADDRESS
    port: int = 0
    frame_size: int = DEFAULT_FRAME_SIZE
    keepalive: float | None = None
    half_close: bool = False
    max_failures: int = 5
    timeout: float | None = None
    idle_timeout: float | None = None
    connect_timeout: float = 10.0
    handshake_timeout: float = 10.0
    ssl_context: ssl.SSLContext | None = None
    proxy: str | Literal[False] | None = None
    pump: ModuleType | None = None
    shutdown_grace: float = 5.0
    stop_linger: float = 1.0
    backlog: int = 512

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise UsageError(f"--port must be between 0 and 65535, got {self.port}.")
        if not MIN_FRAME_SIZE <= self.frame_size <= MAX_FRAME_SIZE:
            raise UsageError(
                f"--frame-size must be between {MIN_FRAME_SIZE} and {MAX_FRAME_SIZE} bytes, got {self.frame_size}.",
                hint="4096 is what az sends; 32768 (the default) is accepted by the real service.",
            )
        for name in ("keepalive", "timeout", "idle_timeout"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise UsageError(f"--{name.replace('_', '-')} must be a positive number of seconds, got {value}.")
        if self.max_failures < 0:
            raise UsageError(f"--max-failures must be 0 (never give up) or more, got {self.max_failures}.")
        if self.pump is None:
            object.__setattr__(self, "pump", load_pump(None))
