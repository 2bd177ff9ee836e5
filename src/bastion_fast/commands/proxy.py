"""``bastion-fast proxy``: one Bastion connection on stdin/stdout — OpenSSH's ProxyCommand (ext#5807, cli#27999).

    ssh -o ProxyCommand="bastion-fast proxy -n B -g RG --target-resource-id %h --resource-port %p" user@VM_ID

Theory of operation: sign in and discover the Bastion once, then run the tunnel's own per-connection
:class:`~bastion_fast.tunnel.session.Session` — token, WebSocket, pump, token deletion — with the pump's stream leg
attached to a *pipe pair* (stdin for reading, stdout for writing, DESIGN.md §2) instead of a TCP socket. Reading
stdin starts only once the WebSocket is up, so the client's first bytes wait in the pipe. When the client closes its
end (EOF on stdin) the pump sends Close 1000 and waits for Bastion's; when Bastion closes or drops, stdout gets EOF at
once. Either way the token is deleted before we exit.

stdout carries nothing but tunnel bytes: ``sys.stdout`` is pointed at stderr for the whole run, so a stray
``print`` anywhere cannot corrupt the SSH stream; logs are on stderr as always. Exit status: 0 when the connection
ended normally, 1 when Bastion failed it (the reason on stderr), 130/143 when interrupted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import stat
import sys
from typing import Any

from bastion_fast.exceptions import UsageError

__all__ = ["run_proxy"]

log = logging.getLogger("bastion_fast.commands.proxy")


class _Paused(asyncio.Protocol):
    """Holds stdin (pipe, or the bridge socket) paused until the pump takes it over.

    uvloop starts reading a pipe right after ``connection_made`` even when the protocol paused it there, so the
    first bytes (ssh's banner) and even EOF can arrive before the pump owns the pipe: they are kept here, reading is
    paused again, and :class:`_EarlyReadPipe` hands them to the pump when it first asks to read.
    """

    def __init__(self) -> None:
        self.transport: Any = None
        self.early: list[bytes] = []
        self.eof = False
        self.lost = False
        self.lost_exc: Exception | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        transport.pause_reading()  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        self.early.append(data)
        self.transport.pause_reading()

    def eof_received(self) -> bool:
        self.eof = True
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.lost_exc = exc


class _EarlyReadPipe:
    """The stdin read transport as the pump sees it: delivers what :class:`_Paused` kept on the first resume."""

    def __init__(self, transport: Any, early: _Paused) -> None:
        self._transport = transport
        self._early: _Paused | None = early

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)

    def resume_reading(self) -> None:
        early, self._early = self._early, None
        if early is None or not (early.early or early.eof or early.lost):
            self._transport.resume_reading()
            return
        asyncio.get_running_loop().call_soon(self._deliver, early)

    def _deliver(self, early: _Paused) -> None:
        protocol = self._transport.get_protocol()
        data = b"".join(early.early)
        if data:
            protocol.data_received(data)
        if early.eof:
            protocol.eof_received()
        if early.lost:
            protocol.connection_lost(early.lost_exc)
        elif not early.eof:
            self._transport.resume_reading()


def _pipe_like() -> bool:
    """Whether the event loop can watch stdin and stdout directly (pipes, sockets, terminals).

    Raises:
        UsageError: stdin or stdout is closed.
    """
    for fd, name in ((0, "stdin"), (1, "stdout")):
        try:
            mode = os.fstat(fd).st_mode
        except OSError as exc:
            raise UsageError(f"bastion-fast proxy needs an open {name} ({exc.strerror}).",
                             hint="Run it as OpenSSH's ProxyCommand (see `bastion-fast proxy --help`).") from exc
        if not (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or stat.S_ISCHR(mode)):
            return False
    return True


async def _stdio_transports() -> tuple[asyncio.BaseTransport, asyncio.BaseTransport]:
    loop = asyncio.get_running_loop()
    reader = os.fdopen(os.dup(0), "rb", buffering=0)
    writer = os.fdopen(os.dup(1), "wb", buffering=0)
    read_transport, early = await loop.connect_read_pipe(_Paused, reader)
    write_transport, _ = await loop.connect_write_pipe(asyncio.Protocol, writer)
    return _EarlyReadPipe(read_transport, early), write_transport  # type: ignore[return-value]


def _restore_blocking(saved: dict[int, bool]) -> None:
    for fd, blocking in saved.items():
        with contextlib.suppress(OSError):
            os.set_blocking(fd, blocking)


async def run_proxy(options: Any, *, keepalive: float | None = None, frame_size: int | None = None) -> int:
    """Carry one connection between stdin/stdout and the target; return the exit status.

    OpenSSH sends its ProxyCommand SIGHUP when it exits, so SIGHUP (like SIGINT and SIGTERM) means: close the
    WebSocket, delete the token, exit.
    """
    from bastion_fast.control import connect
    from bastion_fast.tls import client_ssl_context
    from bastion_fast.tunnel.config import DEFAULT_FRAME_SIZE, TunnelConfig
    from bastion_fast.tunnel.session import Session

    threads = sys.platform == "win32" or bool(os.environ.get("BASTION_FAST_PROXY_THREADS")) or not _pipe_like()
    config = TunnelConfig(ssl_context=client_ssl_context(options.ca_bundle), keepalive=keepalive,
                          frame_size=frame_size or DEFAULT_FRAME_SIZE)
    real_stdout = sys.stdout
    sys.stdout = sys.stderr  # nothing but tunnel bytes on fd 1
    saved = {} if threads else {fd: os.get_blocking(fd) for fd in (0, 1)}
    loop = asyncio.get_running_loop()
    session: Session | None = None
    interrupted: list[int] = []

    def on_signal(signum: int) -> None:
        if interrupted:  # a second signal: leave now (a session not yet deleted ends at Bastion's idle timeout)
            os._exit(128 + interrupted[0])
        interrupted.append(signum)
        if session is not None:
            session.stop()

    installed = []
    for signum in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None)):
        if signum is None:
            continue
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signum, on_signal, int(signum))
            installed.append(signum)
    out_thread = None
    try:
        control = await connect(options)
        try:
            if threads:
                # Windows pipes/consoles and regular files cannot be watched by the loop: bridge them.
                from bastion_fast.commands.stdiobridge import stdio_socket

                sock, out_thread = stdio_socket()
                transport, _ = await loop.connect_accepted_socket(_Paused, sock)
                session = Session(1, transport, "stdio", control, config)
            else:
                read_transport, write_transport = await _stdio_transports()
                session = Session(1, read_transport, "stdio", control, config,  # type: ignore[arg-type]
                                  write_transport=write_transport)
            if interrupted:
                session.stop()
            result = await session.start()
            if out_thread is not None:  # everything Bastion sent must reach stdout before we exit
                await asyncio.to_thread(out_thread.join, 30.0)
        finally:
            await control.aclose()
    finally:
        for installed_signal in installed:
            loop.remove_signal_handler(installed_signal)
        sys.stdout = real_stdout
        _restore_blocking(saved)
    if interrupted:
        return 128 + interrupted[0]
    if not result.ok:
        log.error("error: %s", result.error or "the Bastion connection failed")
        if result.hint:
            log.error("hint: %s", result.hint)
        return 1
    log.info("connection closed: %d bytes up, %d bytes down", result.bytes_up, result.bytes_down)
    return 0
