"""``bastion-fast rdp``: Remote Desktop to a VM through Bastion, on Windows, macOS and Linux."""

from __future__ import annotations

import argparse

__all__ = ["HELP", "NAME", "register", "run"]

NAME = "rdp"
HELP = "Remote Desktop to a VM through Bastion (mstsc, FreeRDP or Windows App; gateway or tunnel mode)"

_EPILOG = """\
examples:
  bastion-fast rdp -n MyBastion -g MyRG --target-resource-id VM_ID              (Windows: Bastion's RD gateway)
  bastion-fast rdp win1 --disable-gateway                                        (local tunnel + .rdp)
  bastion-fast rdp win1 -- /u:azureuser /dynamic-resolution                      (Linux: extra xfreerdp arguments)

Tunnel mode is used with --disable-gateway, with --target-ip-address, and by default on macOS and Linux. The .rdp
file is written 0600 to a private temporary directory and removed when the client exits; the tunnel stays while a
connection is open. Exit status: the RDP client's.
"""

_TRUE = {"true", "yes", "y", "1", "t", "on"}
_FALSE = {"false", "no", "n", "0", "f", "off"}


def three_state(value: str) -> bool:
    """az's three-state booleans: true/false/yes/no/y/n/1/0/t/f (any case)."""
    text = value.strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")


def register(parser: argparse.ArgumentParser) -> None:
    from bastion_fast.cli._options import add_vm_arguments
    from bastion_fast.commands.cliargs import enable_passthrough

    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = _EPILOG
    add_vm_arguments(parser, default_port=3389)
    rdp = parser.add_argument_group("RDP")
    rdp.add_argument("--auth-type", dest="auth_type", metavar="TYPE", type=str.lower, choices=("password", "aad"),
                     default=None, help="password (default) or AAD (Entra ID sign-in; gateway mode, sets "
                                        "--enable-mfa)")
    rdp.add_argument("--disable-gateway", dest="disable_gateway", nargs="?", const=True, default=False,
                     type=three_state, metavar="BOOL", help="use a local tunnel and a generated .rdp instead of "
                                                            "Bastion's RD gateway")
    rdp.add_argument("--gateway", action="store_true", default=False,
                     help="use Bastion's RD gateway .rdp on macOS/Linux too (the Windows default)")
    rdp.add_argument("--enable-mfa", dest="enable_mfa", nargs="?", const=True, default=False, type=three_state,
                     metavar="BOOL", help="enable RDS AAD auth for MFA if the VM supports it (gateway mode)")
    rdp.add_argument("--configure", action="store_true", default=False,
                     help="edit the .rdp settings before connecting (mstsc /edit, else $EDITOR)")
    rdp.add_argument("--client", metavar="PATH", default=None,
                     help="RDP client to run (default: mstsc on Windows, Windows App on macOS, xfreerdp/wlfreerdp "
                          "on Linux)")
    rdp.add_argument("--username", metavar="USER", default=None, help="user name to pre-fill in the client")
    enable_passthrough(parser, "client_args")


def run(args: argparse.Namespace) -> int:
    from bastion_fast.cli._options import profile_options
    from bastion_fast.commands.rdpcmd import run_rdp
    from bastion_fast.loop import run as run_loop

    options = profile_options(args, "rdp")
    return run_loop(run_rdp(args, options))
