# PYTHON_ARGCOMPLETE_OK
"""The ``bastion-fast`` command line: argparse, az-compatible flags, exit codes, no business logic.

Each subcommand lives in its own module ``bastion_fast.cli.<name>`` exposing ``NAME``, ``HELP``,
``register(parser)`` and ``run(args) -> int``. Modules import only argparse at top level; the heavy imports happen
inside ``run`` so ``--version`` and ``--help`` stay fast.

Exit codes (documented in README.md):

====  =====================================================================
0     success; also a tunnel stopped by ``--timeout``, ``--idle-timeout``, SIGTERM or SIGHUP after cleanup
1     runtime error (Azure, network, tunnel) — the message says what to do
2     usage error (bad flags, arguments, profile)
3     ``doctor``: could not check
130   interrupted (Ctrl+C / SIGINT); ``--az-exit-codes`` gives 0 like az
N     ``ssh``/``cp``: the exit status of OpenSSH itself is passed on
====  =====================================================================
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import sys
from collections.abc import Sequence
from types import ModuleType

from bastion_fast._version import __version__

__all__ = ["EXIT_ERROR", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_USAGE", "build_parser", "main"]

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

# Order = order in --help. A module that does not exist yet is simply not offered.
SUBCOMMANDS = (
    "tunnel",
    "proxy",
    "ssh",
    "ssh_config",
    "rdp",
    "cp",
    "up",
    "bastion",
    "sessions",
    "links",
    "doctor",
    "emulator",
    "demo",
)

log = logging.getLogger("bastion_fast.cli")


class _Parser(argparse.ArgumentParser):
    """argparse that exits 2 with a one-line hint instead of a traceback."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\nRun '{self.prog} --help' for all options.\n")


def _global_options() -> _Parser:
    """Flags accepted before or after the subcommand, like az's --debug."""
    common = _Parser(add_help=False)
    group = common.add_argument_group("logging (stderr only)")
    group.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS,
                       help="more output on stderr (-v info, -vv debug)")
    group.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="debug logs, tokens redacted")
    group.add_argument("--only-show-errors", action="store_true", default=argparse.SUPPRESS,
                       help="only errors on stderr")
    group.add_argument("--log-file", metavar="FILE", default=argparse.SUPPRESS,
                       help="also write logs to FILE (redacted)")
    return common


def _subcommand_modules() -> list[ModuleType]:
    modules = []
    for name in SUBCOMMANDS:
        qualified = f"{__name__}.{name}"
        if importlib.util.find_spec(qualified) is not None:
            modules.append(importlib.import_module(qualified))
    return modules


def build_parser() -> argparse.ArgumentParser:
    """The full parser; also used by the README/completion tooling."""
    return _build(_subcommand_modules())


def _command_parser(argv: list[str]) -> argparse.ArgumentParser | None:
    """The parser with only the subcommand ``argv`` starts with, or ``None`` (no subcommand first: ``--help``,
    ``--version``, a global flag, a typo — then ``main`` builds the full parser).

    Cold start: importing and registering the other twelve subcommands costs ~10 ms of a ~0.1 s warm start, on
    every run (``proxy`` runs once per ssh connection). Parsing is the same: a subcommand's flags, help and errors
    come from its own subparser either way.
    """
    if not argv or argv[0].startswith("-"):
        return None
    module_name = argv[0].replace("-", "_")
    if module_name not in SUBCOMMANDS or importlib.util.find_spec(f"{__name__}.{module_name}") is None:
        return None
    module = importlib.import_module(f"{__name__}.{module_name}")
    if argv[0] != module.NAME:
        return None
    return _build([module])


def _build(modules: list[ModuleType]) -> argparse.ArgumentParser:
    common = _global_options()
    parser = _Parser(
        prog="bastion-fast",
        description="Fast, faithful Azure Bastion native-client tunnels: az network bastion tunnel|ssh|rdp done right.",
        parents=[common],
    )
    parser.add_argument("--version", action="store_true", help="print version, data path and event loop, then exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for module in modules:
        p = sub.add_parser(module.NAME, help=module.HELP, description=module.HELP, parents=[common])
        module.register(p)
        p.set_defaults(_run=module.run)
    return parser


def _log_level(args: argparse.Namespace) -> int:
    if getattr(args, "debug", False) or getattr(args, "verbose", 0) >= 2:
        return logging.DEBUG
    if getattr(args, "verbose", 0) == 1:
        return logging.INFO
    if getattr(args, "only_show_errors", False):
        return logging.ERROR
    return logging.WARNING


def _version_text() -> str:
    from bastion_fast.loop import LOOP_NAME
    from bastion_fast.pump import IMPLEMENTATION

    python = sys.version.split()[0]
    return f"bastion-fast {__version__} (data path: {IMPLEMENTATION}, event loop: {LOOP_NAME}, Python {python})"


def _normalise_argv(argv: list[str]) -> list[str]:
    """Accept az's spelling: ``bastion-fast network bastion tunnel …`` = ``bastion-fast tunnel …``."""
    if argv[:2] == ["network", "bastion"]:
        return argv[2:]
    return argv


def report_error(exc: BaseException) -> None:
    """Print a user-facing error (never a traceback) with its hint."""
    from bastion_fast._logging import redact
    from bastion_fast.exceptions import BastionFastError

    text = redact(str(exc)) or type(exc).__name__
    print(f"error: {text}", file=sys.stderr)
    hint = getattr(exc, "hint", None) if isinstance(exc, BastionFastError) else None
    if hint:
        print(f"hint: {redact(hint)}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``bastion-fast`` console script; returns the exit code."""
    args_list = _normalise_argv(list(sys.argv[1:] if argv is None else argv))
    parser = _command_parser(args_list) or build_parser()
    args = parser.parse_args(args_list)
    if args.version:
        print(_version_text())
        return EXIT_OK
    from bastion_fast import _logging

    _logging.configure(_log_level(args), log_file=getattr(args, "log_file", None))
    run = getattr(args, "_run", None)
    if run is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    from bastion_fast.exceptions import BastionFastError

    try:
        return int(run(args))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BastionFastError as exc:
        log.debug("command failed", exc_info=True)
        report_error(exc)
        return exc.exit_code
