"""``bastion-fast ssh``: OpenSSH to a VM through Bastion, like ``az network bastion ssh`` (exit status kept)."""

from __future__ import annotations

import argparse

__all__ = ["HELP", "NAME", "register", "run"]

NAME = "ssh"
HELP = "SSH to a VM through Bastion with your OpenSSH client (exit status passed on, host key pinned)"

_EPILOG = """\
examples:
  bastion-fast ssh -n MyBastion -g MyRG --target-resource-id VM_ID --auth-type ssh-key \\
      --username azureuser --ssh-key ~/.ssh/id_ed25519
  bastion-fast ssh web1 -- -L 8080:127.0.0.1:80        (profile web1, extra OpenSSH arguments)
  bastion-fast ssh web1 -- uptime                       (run a command; its exit status is ours)
"""


def register(parser: argparse.ArgumentParser) -> None:
    from bastion_fast.cli._options import add_vm_arguments
    from bastion_fast.commands.cliargs import add_ssh_options, enable_passthrough

    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = _EPILOG
    add_vm_arguments(parser, default_port=22)
    add_ssh_options(parser)
    enable_passthrough(parser, "ssh_args")


def run(args: argparse.Namespace) -> int:
    from bastion_fast.cli._options import profile_options
    from bastion_fast.commands.ssh import run_ssh
    from bastion_fast.loop import run as run_loop

    options = profile_options(args, "ssh")
    return run_loop(run_ssh(args, options))
