"""``bastion-fast ssh-config``: print or install OpenSSH ``Host`` blocks that go through ``bastion-fast proxy``."""

from __future__ import annotations

import argparse

__all__ = ["HELP", "NAME", "register", "run"]

NAME = "ssh-config"
HELP = "print (or --write) ssh_config Host blocks using bastion-fast as ProxyCommand, so plain `ssh web1` works"

_EPILOG = """\
examples:
  bastion-fast ssh-config web1 db1 --write ~/.ssh/config        (profiles web1, db1; run again to update)
  bastion-fast ssh-config -n MyBastion -g MyRG --target-resource-id VM_ID --host web1 --username azureuser
  ssh web1; scp file web1:/tmp/; rsync -a dir/ web1:dir/; git clone web1:/srv/repo.git

Each block is fenced by "# >>> bastion-fast HOST >>>" comments; --write replaces that host's block or appends it,
and leaves the rest of the file untouched. With --auth-type AAD the key pair and certificate are kept in
bastion-fast's state directory (Entra ID certificates expire after about an hour: run the command again to renew).
"""


def register(parser: argparse.ArgumentParser) -> None:
    from bastion_fast.cli._options import add_vm_arguments
    from bastion_fast.commands.cliargs import add_config_argument, add_ssh_options

    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = _EPILOG
    parser.add_argument("profiles", nargs="*", metavar="PROFILE",
                        help="named targets from the profiles file (one Host block each; the Host is the name)")
    add_config_argument(parser)
    add_vm_arguments(parser, default_port=22, profile=False)
    add_ssh_options(parser)
    out = parser.add_argument_group("output")
    out.add_argument("--host", metavar="ALIAS", default=None,
                     help="the Host alias (without profiles; default: the VM name or the IP address)")
    out.add_argument("--write", metavar="FILE", default=None,
                     help="update FILE (e.g. ~/.ssh/config) in place instead of printing; idempotent")


def run(args: argparse.Namespace) -> int:
    from bastion_fast.commands.sshconfig_cmd import run_ssh_config

    return run_ssh_config(args)
