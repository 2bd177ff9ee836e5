"""``bastion-fast proxy``: one connection on stdin/stdout, for OpenSSH's ProxyCommand (and git, rsync, Ansible)."""

from __future__ import annotations

import argparse

from bastion_fast.cli._options import positive_seconds

__all__ = ["HELP", "NAME", "register", "run"]

NAME = "proxy"
HELP = "carry one connection on stdin/stdout (for ssh's ProxyCommand, scp, sftp, rsync, git, Ansible)"

_EPILOG = """\
examples:
  ssh -o ProxyCommand="bastion-fast proxy -n MyBastion -g MyRG --target-resource-id %h --resource-port %p" \\
      azureuser@/subscriptions/…/virtualMachines/web1
  ssh -o ProxyCommand="bastion-fast proxy web1" azureuser@web1          (profile web1)
  rsync -e 'ssh -o ProxyCommand="bastion-fast proxy web1"' -a dir/ azureuser@web1:dir/
  bastion-fast ssh-config web1 --write ~/.ssh/config                     (then plain `ssh web1`)

Only tunnel bytes go to stdout; logs go to stderr. Exit status: 0 when the connection ended normally, 1 when
Bastion failed it, 130/143 when interrupted.
"""


def register(parser: argparse.ArgumentParser) -> None:
    from bastion_fast.cli._options import add_vm_arguments

    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = _EPILOG
    add_vm_arguments(parser, default_port=22)
    data = parser.add_argument_group("data path")
    data.add_argument("--keepalive", metavar="S", type=positive_seconds, default=None,
                      help="send a WebSocket ping every S seconds (default: TCP keepalive only)")


def run(args: argparse.Namespace) -> int:
    from bastion_fast.cli._options import profile_options
    from bastion_fast.commands.proxy import run_proxy
    from bastion_fast.loop import run as run_loop

    options = profile_options(args, "proxy")
    return run_loop(run_proxy(options, keepalive=args.keepalive))
