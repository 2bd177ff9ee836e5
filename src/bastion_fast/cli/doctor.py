"""``bastion-fast doctor``: everything that would stop a connection through a Bastion, or weaken its security.

Exit codes: 0 clean (warnings allowed), 1 at least one finding of severity error, 3 something could not be checked.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from bastion_fast.cli._ops import add_common

if TYPE_CHECKING:
    from bastion_fast.ops.arm import ArmSession, BastionRef

__all__ = ["HELP", "NAME", "register", "run"]

NAME = "doctor"
HELP = "check a Bastion, its subnet NSG, the VMs in reach and this machine; exit 0 clean / 1 errors / 3 unchecked"


def register(parser: argparse.ArgumentParser) -> None:
    add_common(parser, target=True)
    parser.add_argument("--port", type=int, default=None, metavar="PORT",
                        help="local port you plan to use for tunnels (checks permission and availability)")
    parser.add_argument("--fix-public-ips", action="store_true",
                        help="disassociate the public IPs of VMs in the Bastion's reach (shows them and asks first)")
    parser.add_argument("-y", "--yes", action="store_true",
                        help="with --fix-public-ips: do not ask (the list is still printed)")
    parser.add_argument("--skip-caller-checks", action="store_true",
                        help="skip the local checks (proxy, CA bundle, port, ssh/scp/RDP client)")


def run(args: argparse.Namespace) -> int:
    from bastion_fast.cli._ops import run_ops

    if args.yes and not args.fix_public_ips:
        from bastion_fast.exceptions import UsageError

        raise UsageError("--yes only applies to --fix-public-ips.", hint="Add --fix-public-ips, or drop --yes.")
    return run_ops(args, lambda arm, ref, fmt: _doctor(arm, ref, fmt, args))


async def _doctor(arm: ArmSession, ref: BastionRef, fmt: str, args: argparse.Namespace) -> int:
    import asyncio
    import sys

    from bastion_fast.cli._options import options_from_args
    from bastion_fast.ops.doctor import DoctorOptions, fix_public_ips, run_doctor
    from bastion_fast.ops.output import Table, confirm, emit, render, stderr_console

    options = options_from_args(args)
    target = options.target if (options.target.resource_id or options.target.ip_address) else None
    doctor_options = DoctorOptions(target=target, local_port=args.port, ca_bundle=options.ca_bundle,
                                   check_caller=not args.skip_caller_checks)
    report = await run_doctor(arm, ref, doctor_options)
    if args.fix_public_ips:
        if not report.exposed:
            print("--fix-public-ips: no VM in the Bastion's reach has a public IP.", file=sys.stderr)
        else:
            console = stderr_console()
            listing = Table("Public IPs to disassociate from their VMs", ["VM", "public IP", "NIC"])
            for item in report.exposed:
                listing.rows.append([item.vm, item.address or item.public_ip_id.rsplit("/", 1)[-1],
                                     item.nic_id.rsplit("/", 1)[-1]])
            listing.notes.append("The VMs stay reachable through the Bastion; the public IP resources are kept "
                                 "(delete them separately if they are no longer needed).")
            console.print(render([listing]))
            question = f"Disassociate {len(report.exposed)} public IP(s)?"
            if await asyncio.to_thread(confirm, question, assume_yes=args.yes):
                with console.status("Disassociating public IPs …") as status:
                    fixed = await fix_public_ips(arm, report.exposed, progress=status.update)
                report = await run_doctor(arm, ref, doctor_options)
                report.fixed = fixed
            else:
                print("Nothing was changed.", file=sys.stderr)
    emit(report, fmt)
    return report.exit_code
