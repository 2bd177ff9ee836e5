"""``bastion-fast up``: several named tunnels (profiles) in one process, with one status table."""

from __future__ import annotations

import argparse

__all__ = ["HELP", "NAME", "register", "run"]

NAME = "up"
HELP = "open several named tunnels from the profiles file at once, with one status table"

_EPILOG = """\
profiles file (default: the user config dir's bastion-fast/config.toml, or --config / $BASTION_FAST_CONFIG):

  [defaults]
  bastion = "corp-bastion"
  resource_group = "rg-hub"

  [targets.web1]
  target_resource_id = "/subscriptions/…/providers/Microsoft.Compute/virtualMachines/web1"
  resource_port = 22
  port = 50022
  username = "azureuser"

  [targets.db1]
  target_ip_address = "10.0.1.5"
  resource_port = 22
  port = 50023

examples:
  bastion-fast up web1 db1                     (both tunnels; Ctrl+C closes them)
  bastion-fast up web1:2222 db1:15432:5432     (NAME:LOCAL[:REMOTE] overrides the ports)
  bastion-fast up web1 db1 --output json       (one ready event per tunnel on stdout)

Any command accepts a profile name instead of flags: bastion-fast ssh web1, bastion-fast rdp win1,
bastion-fast cp file azureuser@web1:/tmp/, bastion-fast ssh-config web1 db1.
"""


def register(parser: argparse.ArgumentParser) -> None:
    from bastion_fast.commands.cliargs import add_config_argument

    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = _EPILOG
    parser.add_argument("names", nargs="+", metavar="NAME[:LOCAL[:REMOTE]]", help="profiles to open")
    add_config_argument(parser)
    parser.add_argument("--bind-address", dest="bind_address", metavar="ADDRESS", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--output", "-o", dest="output", choices=("text", "json"), default="text",
                        help="json: ready/opened/closed/stopped events (with the tunnel name) on stdout")
    parser.add_argument("--no-table", dest="no_table", action="store_true",
                        help="plain log lines instead of the live table on a terminal")


def run(args: argparse.Namespace) -> int:
    from bastion_fast.commands.up import run_up
    from bastion_fast.loop import run as run_loop

    return run_loop(run_up(args))
