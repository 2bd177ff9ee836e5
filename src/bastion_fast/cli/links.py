"""``bastion-fast links create | list | revoke``: Bastion shareable links with an expiry (≤ 90 days)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from bastion_fast.cli._ops import add_common, duration_arg

if TYPE_CHECKING:
    from bastion_fast.ops.arm import ArmSession, BastionRef

__all__ = ["HELP", "NAME", "register", "run"]

NAME = "links"
HELP = "create, list or revoke Bastion shareable links (Standard+ with shareable links enabled)"


def register(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    create = sub.add_parser(
        "create", help="a link per VM, expiring after --expires (default 24h, at most 90d)",
        description="Create shareable links for VMs. Azure itself never expires a link: bastion-fast records the "
        "expiry as a tag on the Bastion and `links revoke --expired` enforces it (schedule it).")
    add_common(create)
    create.add_argument("--vm", dest="vms", nargs="+", action="extend", required=True, metavar="ID",
                        help="resource id of a VM (repeatable)")
    create.add_argument("--expires", type=duration_arg, default=None, metavar="DURATION",
                        help="lifetime: 30m, 24h, 7d, 2w … (default 24h, at most 90d)")
    lister = sub.add_parser("list", help="every link: VM, URL, created, expires",
                            description="List the Bastion's shareable links with their recorded expiry.")
    add_common(lister)
    revoke = sub.add_parser("revoke", help="delete links by VM, by token/URL, or all expired ones",
                            description="Delete shareable links; a revoked link stops working at once.")
    add_common(revoke)
    revoke.add_argument("--vm", dest="vms", nargs="+", action="extend", default=[], metavar="ID",
                        help="revoke the links of these VMs")
    revoke.add_argument("--token", dest="tokens", nargs="+", action="extend", default=[], metavar="TOKEN",
                        help="revoke these links (the token, or the whole URL)")
    revoke.add_argument("--expired", action="store_true", help="revoke every link past its recorded expiry")


def run(args: argparse.Namespace) -> int:
    from bastion_fast.cli._ops import run_ops

    return run_ops(args, lambda arm, ref, fmt: _run(arm, ref, fmt, args))


async def _run(arm: ArmSession, ref: BastionRef, fmt: str, args: argparse.Namespace) -> int:
    from bastion_fast.ops import links
    from bastion_fast.ops.output import emit

    if args.action == "create":
        report = await links.create_links(arm, ref, args.vms, args.expires or links.DEFAULT_LIFETIME)
        emit(report, fmt)
        return 0 if all(link.url for link in report.links) else 1
    if args.action == "list":
        emit(await links.list_links(arm, ref), fmt)
        return 0
    emit(await links.revoke_links(arm, ref, vm_ids=args.vms, tokens=args.tokens, expired=args.expired), fmt)
    return 0
