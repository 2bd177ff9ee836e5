"""``bastion-fast sessions list | disconnect``: the Bastion's active sessions, and ending them."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from bastion_fast.cli._ops import add_common

if TYPE_CHECKING:
    from bastion_fast.ops.arm import ArmSession, BastionRef

__all__ = ["HELP", "NAME", "register", "run"]

NAME = "sessions"
HELP = "list or disconnect the Bastion's active sessions (getActiveSessions / disconnectActiveSessions)"


def register(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    lister = sub.add_parser("list", help="active sessions: user, target, protocol, start, duration, session id",
                            description="List the Bastion's active sessions (all users).")
    add_common(lister)
    lister.add_argument("--watch", action="store_true",
                        help="refresh until Ctrl+C (in place on a terminal; one JSON document per line otherwise)")
    lister.add_argument("--interval", type=float, default=5.0, metavar="SECONDS",
                        help="seconds between refreshes with --watch (default 5)")
    lister.add_argument("--count", type=int, default=None, metavar="N", help="stop --watch after N refreshes")
    disconnect = sub.add_parser("disconnect", help="end sessions by id (their tunnels drop, listeners survive)",
                                description="Disconnect sessions through the Bastion's disconnectActiveSessions "
                                "action. Exit code 1 if any id was not disconnected.")
    add_common(disconnect)
    disconnect.add_argument("--session-id", dest="session_ids", nargs="+", action="extend", required=True,
                            metavar="ID", help="session id(s) from `sessions list` (repeatable)")


def run(args: argparse.Namespace) -> int:
    from bastion_fast.cli._ops import run_ops
    from bastion_fast.exceptions import UsageError

    if args.action == "list":
        if args.interval <= 0:
            raise UsageError("--interval must be positive.", hint="For example --interval 5.")
        return run_ops(args, lambda arm, ref, fmt: _list(arm, ref, fmt, args))
    return run_ops(args, lambda arm, ref, fmt: _disconnect(arm, ref, fmt, args.session_ids))


async def _list(arm: ArmSession, ref: BastionRef, fmt: str, args: argparse.Namespace) -> int:
    from bastion_fast.ops.output import emit, emit_json, render
    from bastion_fast.ops.sessions import list_sessions

    if not args.watch:
        emit(await list_sessions(arm, ref), fmt)
        return 0
    import asyncio

    refreshes = 0
    if fmt == "json":
        while args.count is None or refreshes < args.count:
            if refreshes:
                await asyncio.sleep(args.interval)
            emit_json((await list_sessions(arm, ref)).to_json(), compact=True)
            refreshes += 1
        return 0
    from rich.live import Live

    report = await list_sessions(arm, ref)
    with Live(render(report.tables()), auto_refresh=False) as live:
        refreshes = 1
        while args.count is None or refreshes < args.count:
            await asyncio.sleep(args.interval)
            report = await list_sessions(arm, ref)
            live.update(render(report.tables()), refresh=True)
            refreshes += 1
    return 0


async def _disconnect(arm: ArmSession, ref: BastionRef, fmt: str, session_ids: list[str]) -> int:
    from bastion_fast.ops.output import emit
    from bastion_fast.ops.sessions import disconnect_sessions

    report = await disconnect_sessions(arm, ref, session_ids)
    emit(report, fmt)
    return 0 if report.all_disconnected else 1
