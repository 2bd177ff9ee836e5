"""``bastion-fast cp``: copy files to or from a VM through Bastion (OpenSSH scp/sftp over an in-process tunnel)."""

from __future__ import annotations

import argparse

__all__ = ["HELP", "NAME", "register", "run"]

NAME = "cp"
HELP = "copy files to or from a VM through Bastion (upload and download, progress, --resume, --verify)"

_EPILOG = """\
remote paths are [USER@]TARGET:PATH, where TARGET is a profile name — or any name when the target is given with
--target-resource-id / --target-ip-address.

examples:
  bastion-fast cp ./site.tar.gz azureuser@web1:/tmp/                 (upload, profile web1)
  bastion-fast cp -r azureuser@web1:/var/log/nginx ./logs            (download a directory)
  bastion-fast cp --resume --verify big.iso azureuser@web1:/data/    (continue an interrupted upload, check sha256)
  bastion-fast cp -n MyBastion -g MyRG --target-resource-id VM_ID --ssh-key ~/.ssh/id_ed25519 \\
      file.txt azureuser@vm:/tmp/

exit status: 0 ok; scp/sftp's own status when the copy fails (255 = connection); 1 when --verify finds a difference.
"""


def register(parser: argparse.ArgumentParser) -> None:
    from bastion_fast.cli._options import add_vm_arguments
    from bastion_fast.commands.cliargs import add_config_argument, add_ssh_options

    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = _EPILOG
    parser.add_argument("paths", nargs="+", metavar="PATH", help="SRC... DEST (one side [USER@]TARGET:PATH)")
    parser.add_argument("-r", "--recursive", action="store_true", help="copy directories recursively")
    parser.add_argument("--resume", action="store_true",
                        help="continue an interrupted copy: append to partial files (sftp reput/reget), skip "
                             "complete ones")
    parser.add_argument("--verify", action="store_true",
                        help="compare sha256 of every file on both ends afterwards (sha256sum on the VM)")
    parser.add_argument("--no-progress", dest="no_progress", action="store_true",
                        help="no progress bar (it is only drawn when stderr is a terminal)")
    parser.add_argument("--output", "-o", dest="output", choices=("text", "json"), default="text",
                        help="json: one JSON summary object on stdout")
    add_config_argument(parser)
    add_vm_arguments(parser, default_port=22, profile=False)
    add_ssh_options(parser)


def run(args: argparse.Namespace) -> int:
    from bastion_fast.cli._options import options_from_args
    from bastion_fast.commands.cliargs import apply_profile
    from bastion_fast.commands.cp import make_plan, run_cp
    from bastion_fast.commands.profiles import load_config
    from bastion_fast.exceptions import UsageError
    from bastion_fast.loop import run as run_loop

    plan = make_plan(args)
    flags_name_target = bool(args.target_resource_id or args.target_ip_address)
    config = load_config(args.config)
    if plan.target in config.profiles:
        apply_profile(args, plan.target)
    elif not flags_name_target:
        config.profile(plan.target)  # raises the "no such profile" error with the list of profiles
        raise UsageError(f"Unknown target {plan.target!r}.")  # pragma: no cover - profile() raised
    args.command = "cp"
    options = options_from_args(args)
    return run_loop(run_cp(args, options, plan))
