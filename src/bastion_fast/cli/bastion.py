"""``bastion-fast bastion show | configure``: inspect a Bastion host and turn on what bastion-fast needs."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from bastion_fast.cli._ops import add_common, bool_arg

if TYPE_CHECKING:
    from bastion_fast.ops.arm import ArmSession, BastionRef

__all__ = ["HELP", "NAME", "register", "run"]

NAME = "bastion"
HELP = "show or configure a Bastion host (SKU, native client, IP connect, shareable links, …)"

_FEATURE_FLAGS = (
    ("--native-client", "nativeClient", "native client support (enableTunneling), needed by tunnel/ssh/rdp"),
    ("--ip-connect", "ipConnect", "IP-based connection (--target-ip-address)"),
    ("--kerberos", "kerberos", "Kerberos authentication"),
    ("--shareable-link", "shareableLink", "shareable links (bastion-fast links)"),
    ("--file-copy", "fileCopy", "file upload/download in the browser client"),
)


def register(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    show = sub.add_parser("show", help="SKU, state, features and what each bastion-fast command can do",
                          description="Show the Bastion's SKU, provisioning state, scale units and features, and a "
                          "verdict for each bastion-fast command with the exact fix.")
    add_common(show)
    configure = sub.add_parser(
        "configure", help="change SKU and features (asks first; shows the before/after)",
        description="Change the Bastion's SKU and features with azure-mgmt-network's long-running update. Shows "
        "the change and the pricing warning, asks for confirmation (unless --yes), waits for the update and reads "
        "the Bastion back. Booleans take true/false, yes/no, 1/0, t/f or y/n, like az.")
    add_common(configure)
    configure.add_argument("--sku", metavar="SKU", default=None,
                           help="upgrade the SKU to Standard or Premium (a SKU cannot be downgraded)")
    for flag, key, text in _FEATURE_FLAGS:
        configure.add_argument(flag, dest=f"feature_{key}", metavar="BOOL", type=bool_arg, default=None, help=text)
    configure.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")


def run(args: argparse.Namespace) -> int:
    from bastion_fast.cli._ops import run_ops

    if args.action == "show":
        return run_ops(args, _show)
    return run_ops(args, lambda arm, ref, fmt: _configure(arm, ref, fmt, args))


async def _show(arm: ArmSession, ref: BastionRef, fmt: str) -> int:
    from bastion_fast.ops.output import emit
    from bastion_fast.ops.show import show

    report = await show(arm, ref)
    emit(report, fmt)
    return 0


async def _configure(arm: ArmSession, ref: BastionRef, fmt: str, args: argparse.Namespace) -> int:
    import asyncio
    import sys

    from bastion_fast.exceptions import UsageError
    from bastion_fast.ops.configure import ConfigureReport, ConfigureRequest, apply_plan, plan_changes, pricing_warning
    from bastion_fast.ops.output import confirm, emit, render, stderr_console
    from bastion_fast.ops.show import get_bastion

    features = {key: getattr(args, f"feature_{key}") for _, key, _ in _FEATURE_FLAGS
                if getattr(args, f"feature_{key}") is not None}
    if args.sku is None and not features:
        raise UsageError("bastion configure needs at least one change.",
                         hint="Pass --sku and/or a feature flag, e.g. --native-client true.")
    request = ConfigureRequest(sku=args.sku, features=features)
    raw = await get_bastion(arm, ref)
    plan = plan_changes(raw, ref, request)
    if not plan.changes:
        emit(ConfigureReport(plan, applied=False), fmt)
        return 0
    console = stderr_console()
    console.print(render([plan.table()]))
    console.print(pricing_warning(plan), style="yellow", soft_wrap=True)
    approved = await asyncio.to_thread(confirm, "Apply these changes?", assume_yes=args.yes)
    if not approved:
        print("Cancelled: nothing was changed.", file=sys.stderr)
        return 1
    with console.status(f"Updating Bastion {plan.before.ref.name} …") as status:
        report = await apply_plan(arm, plan, progress=status.update)
    emit(report, fmt)
    return 0
