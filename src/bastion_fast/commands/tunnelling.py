"""Run a program (ssh, scp, sftp, an RDP client) against an in-process tunnel, and pass its exit status on.

The tunnel listens on 127.0.0.1 on a free port for exactly as long as the child runs; leaving
:func:`command_tunnel` closes every connection and deletes every Bastion token (the tunnel's own guarantee).

Signals, theory of operation: the child runs in our process group, so a Ctrl+C typed in the terminal reaches it
directly (an interactive ssh in raw mode even receives it as a byte and forwards it to the VM). While the child
lives, SIGINT, SIGTERM and SIGHUP do not stop us: they are passed to the child (a second SIGINT after the
terminal's is harmless) and the child decides; when it exits, its status is ours — a child killed by signal N
gives 128+N, like a shell — and only then does the tunnel close and delete its sessions.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator, Sequence
from typing import IO, Any

from bastion_fast.tunnel.events import ConnectionResult, TunnelEvents

__all__ = ["QuietEvents", "command_tunnel", "exit_status", "run_child"]

log = logging.getLogger("bastion_fast.commands")


class QuietEvents(TunnelEvents):
    """Tunnel events for commands that own the terminal: no readiness banner, failures as warnings."""

    def ready(self, address: str, port: int) -> None:
        log.info("tunnel listening on %s:%d", address, port)

    def opened(self, conn_id: int, peer: str) -> None:
        log.debug("connection %d from %s", conn_id, peer)

    def closed(self, result: ConnectionResult) -> None:
        if result.ok:
            log.debug("connection %d closed: %d bytes up, %d down", result.id, result.bytes_up, result.bytes_down)
            return
        log.warning("Bastion connection %d failed: %s", result.id, result.error or "unknown error")
        if result.hint:
            log.warning("hint: %s", result.hint)


@contextlib.asynccontextmanager
async def command_tunnel(options: Any, *, events: TunnelEvents | None = None, **tunnel_kwargs: Any
                         ) -> AsyncIterator[Any]:
    """An in-process tunnel on 127.0.0.1 with a free port for one command (``t.port``)."""
    from bastion_fast.tunnel import open_tunnel

    tunnel_kwargs.setdefault("port", 0)
    async with open_tunnel(options=options, events=events or QuietEvents(), **tunnel_kwargs) as tunnel:
        yield tunnel


def exit_status(returncode: int) -> int:
    """A child's status as a shell reports it (killed by signal N → 128+N)."""
    return 128 - returncode if returncode < 0 else returncode


async def run_child(argv: Sequence[str], *, stdin: int | IO[Any] | None = None,
                    stdout: int | IO[Any] | None = None, stderr: int | IO[Any] | None = None,
                    env: dict[str, str] | None = None) -> int:
    """Run ``argv`` (no shell) with inherited terminal unless redirected; return its shell-style exit status."""
    log.debug("running %s", " ".join(argv))
    loop = asyncio.get_running_loop()
    process = await asyncio.create_subprocess_exec(*argv, stdin=stdin, stdout=stdout, stderr=stderr, env=env)
    installed: list[signal.Signals] = []

    def forward(signum: int) -> None:
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signum)

    if sys.platform != "win32":
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            try:
                loop.add_signal_handler(signum, forward, signum)
                installed.append(signum)
            except (NotImplementedError, RuntimeError, ValueError):  # not the main thread
                pass
    try:
        returncode = await process.wait()
    except asyncio.CancelledError:
        forward(signal.SIGTERM)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(process.wait(), timeout=5)
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
        raise
    finally:
        for installed_signal in installed:
            loop.remove_signal_handler(installed_signal)
    return exit_status(returncode)


def environ_with(**extra: str) -> dict[str, str]:
    """``os.environ`` plus ``extra``."""
    env = dict(os.environ)
    env.update(extra)
    return env
