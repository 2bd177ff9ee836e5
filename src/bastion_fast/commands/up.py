"""``bastion-fast up NAME...``: several named tunnels from the profiles file in one process, with one status table.

Like ``kubectl port-forward`` with several ports, but across targets: each ``NAME`` is a profile; ``NAME:LOCAL``
overrides its local port and ``NAME:LOCAL:REMOTE`` its port on the target too. All tunnels start together; if one
cannot start (port in use, discovery error) the others are closed again and the error names the profile.

Output: with a terminal, a live table on stderr (name, local address, target, open/total connections, bytes each
way); without one, a line per tunnel when it is ready and per failed connection; with ``--output json``, one JSON
object per line on stdout — ``{"event":"ready","name":…,"address":…,"port":…,"target":…}`` per tunnel once all are
listening, then ``opened``/``closed`` per connection (with ``name``) and ``stopped`` at the end.

Ctrl+C, SIGTERM or SIGHUP close every tunnel (deleting every Bastion session); exit 130 for Ctrl+C, else 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys
from dataclasses import dataclass, field
from typing import IO, Any

from bastion_fast.exceptions import BastionFastError, UsageError
from bastion_fast.tunnel.events import ConnectionResult, TunnelEvents

__all__ = ["UpSpec", "parse_spec", "run_up"]

log = logging.getLogger("bastion_fast.commands.up")


@dataclass(frozen=True)
class UpSpec:
    """``NAME[:LOCAL[:REMOTE]]`` from the command line."""

    name: str
    local_port: int | None = None
    remote_port: int | None = None


def parse_spec(text: str) -> UpSpec:
    """Parse ``NAME[:LOCAL[:REMOTE]]``.

    Raises:
        UsageError: a port is not a number in range.
    """
    name, *ports = text.split(":")
    if not name or len(ports) > 2:
        raise UsageError(f"{text!r} is not NAME, NAME:LOCAL or NAME:LOCAL:REMOTE.",
                         hint="e.g. `bastion-fast up web1 db1:15432:5432`.")
    numbers: list[int | None] = []
    for port in ports:
        if port == "":
            numbers.append(None)
            continue
        if not port.isdigit() or not 0 <= int(port) <= 65535:
            raise UsageError(f"{text!r}: {port!r} is not a port number.", hint="Ports are 0..65535 (0 = any free).")
        numbers.append(int(port))
    numbers += [None] * (2 - len(numbers))
    return UpSpec(name=name, local_port=numbers[0], remote_port=numbers[1])


class _Events(TunnelEvents):
    """Per-tunnel events: counted for the table, printed as text or JSON lines with the tunnel's name."""

    def __init__(self, name: str, *, json_stream: IO[str] | None) -> None:
        self.name = name
        self.json_stream = json_stream
        self.opened_count = 0
        self.failed = 0

    def emit(self, event: dict[str, Any]) -> None:
        if self.json_stream is None:
            return
        try:
            self.json_stream.write(json.dumps({**event, "name": self.name}, separators=(",", ":")) + "\n")
            self.json_stream.flush()
        except (OSError, ValueError):
            log.debug("could not write a JSON event", exc_info=True)

    def ready(self, address: str, port: int) -> None:
        pass  # reported once every tunnel listens (run_up), with the target

    def opened(self, conn_id: int, peer: str) -> None:
        self.opened_count += 1
        self.emit({"event": "opened", "id": conn_id, "peer": peer})
        log.info("%s: connection %d from %s", self.name, conn_id, peer)

    def closed(self, result: ConnectionResult) -> None:
        from bastion_fast._logging import redact

        if not result.ok:
            self.failed += 1
        self.emit({"event": "closed", "id": result.id, "ok": result.ok, "bytes_up": result.bytes_up,
                   "bytes_down": result.bytes_down, "duration": round(result.duration, 6),
                   "close_code": result.close_code, "error": redact(result.error) if result.error else None})
        if not result.ok:
            log.warning("%s: connection %d failed: %s", self.name, result.id, redact(result.error or "unknown"))

    def stopped(self, reason: str, error: str | None = None) -> None:
        self.emit({"event": "stopped", "reason": reason, "error": error})


@dataclass
class _Running:
    spec: UpSpec
    options: Any
    events: _Events
    tunnel: Any = None
    target: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def _profile_options(args: argparse.Namespace, spec: UpSpec) -> tuple[Any, int]:
    """ConnectionOptions and local port for one profile, checked like `bastion-fast tunnel` flags."""
    from bastion_fast.cli._options import add_connection_options, add_target_options, options_from_args
    from bastion_fast.commands.cliargs import add_config_argument, apply_profile

    parser = argparse.ArgumentParser(add_help=False)
    add_config_argument(parser)
    add_connection_options(parser)
    add_target_options(parser, resource_port_required=True, default_port=None)
    parser.add_argument("--port", type=int, default=None)
    local = parser.parse_args([])
    local.config = args.config
    apply_profile(local, spec.name)
    if spec.remote_port is not None:
        local.resource_port = spec.remote_port
    local.command = "tunnel"
    options = options_from_args(local)
    port = spec.local_port if spec.local_port is not None else (local.port or 0)
    return options, int(port)


def _target_text(options: Any) -> str:
    target = options.target
    name = target.resource_id.rstrip("/").split("/")[-1] if target.resource_id else target.ip_address
    return f"{name}:{target.resource_port}"


def _table(running: list[_Running]) -> Any:
    from rich.table import Table

    from bastion_fast.commands.progress import format_size, tunnel_counters

    table = Table(title="bastion-fast up", title_justify="left", expand=False)
    for column in ("name", "local", "target", "connections", "up", "down"):
        table.add_column(column, justify="right" if column in ("connections", "up", "down") else "left")
    for item in running:
        tunnel = item.tunnel
        up, down = tunnel_counters(tunnel) if tunnel is not None else (0, 0)
        local = f"{tunnel.address}:{tunnel.port}" if tunnel is not None and tunnel.listener is not None else "…"
        active = tunnel.active if tunnel is not None else 0
        table.add_row(item.spec.name, local, item.target, f"{active} open / {item.events.opened_count}",
                      format_size(up), format_size(down))
    return table


async def run_up(args: argparse.Namespace) -> int:
    """Start every named tunnel, serve until a signal, close them all."""
    from bastion_fast.tunnel import open_tunnel

    specs = [parse_spec(text) for text in args.names]
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise UsageError("A profile is named twice.", hint="Give each profile once.")
    json_stream = sys.stdout if args.output == "json" else None
    live_table = args.output != "json" and sys.stderr.isatty() and not getattr(args, "no_table", False)
    running = []
    for spec in specs:
        options, port = _profile_options(args, spec)
        item = _Running(spec=spec, options=options, events=_Events(spec.name, json_stream=json_stream))
        item.target = _target_text(options)
        item.extra["port"] = port
        running.append(item)

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    received: list[str] = []

    def on_signal(name: str) -> None:
        received.append(name)
        stop.set()

    installed = []
    for name in ("SIGINT", "SIGTERM", "SIGHUP"):
        signum = getattr(signal, name, None)
        if signum is None:
            continue
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, on_signal, name)
            installed.append(signum)
    try:
        async with contextlib.AsyncExitStack() as stack:
            async def start(item: _Running) -> None:
                try:
                    item.tunnel = await stack.enter_async_context(open_tunnel(
                        options=item.options, port=item.extra["port"], bind_address=args.bind_address,
                        events=item.events))
                except BastionFastError as exc:
                    exc.message = f"{item.spec.name}: {exc.message}"
                    exc.args = (exc.message,)
                    raise

            for item in running:  # one at a time: the exit stack is not safe to enter concurrently
                await start(item)
                if stop.is_set():
                    break
            if not stop.is_set():
                for item in running:
                    ready = {"event": "ready", "address": item.tunnel.address, "port": item.tunnel.port,
                             "target": item.target}
                    item.events.emit(ready)
                    if not live_table and json_stream is None:
                        log.warning("%s: ready on %s:%d -> %s", item.spec.name, item.tunnel.address,
                                    item.tunnel.port, item.target)
                if not live_table:
                    log.warning("Ctrl + C to close")
                await _serve(running, stop, live_table)
    finally:
        for installed_signal in installed:
            loop.remove_signal_handler(installed_signal)
    if received and received[0] == "SIGINT":
        return 130
    return 0


async def _serve(running: list[_Running], stop: asyncio.Event, live_table: bool) -> None:
    """Until ``stop``: refresh the table (terminal) or just wait; a tunnel that gives up stops everything."""
    waiters = [asyncio.ensure_future(item.tunnel.wait()) for item in running]
    stopper = asyncio.ensure_future(stop.wait())
    live = None
    if live_table:
        from rich.console import Console
        from rich.live import Live

        live = Live(_table(running), console=Console(stderr=True), refresh_per_second=2, transient=False)
        live.start()
    try:
        pending = {*waiters, stopper}
        while not stop.is_set():
            done, pending = await asyncio.wait(pending, timeout=0.5, return_when=asyncio.FIRST_COMPLETED)
            if live is not None:
                live.update(_table(running))
            finished = [w for w in done if w in waiters]
            if finished:
                for waiter in finished:
                    exc = waiter.exception()
                    if exc is not None:
                        raise exc
                break
    finally:
        if live is not None:
            live.update(_table(running))
            live.stop()
        for waiter in [*waiters, stopper]:
            waiter.cancel()
