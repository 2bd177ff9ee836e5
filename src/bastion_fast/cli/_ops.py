"""Shared plumbing of the administration commands (``bastion``, ``sessions``, ``links``, ``doctor``).

Each takes the connection flags of ``tunnel`` (no target needed) plus ``--output table|json``, signs in through
``bastion_fast.ops.arm.open_arm`` and prints one report. Only argparse is imported at module level.
"""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bastion_fast.ops.arm import ArmSession, BastionRef

__all__ = ["add_common", "bool_arg", "duration_arg", "run_ops"]


def bool_arg(value: str) -> bool:
    """argparse ``type=`` for az's three-state booleans."""
    from bastion_fast.ops.values import parse_bool

    try:
        return parse_bool(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def duration_arg(value: str) -> Any:
    """argparse ``type=`` for durations like ``24h``."""
    from bastion_fast.ops.values import parse_duration

    try:
        return parse_duration(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_common(parser: argparse.ArgumentParser, *, target: bool = False) -> None:
    """Connection flags, ``--output``, and (for doctor) the optional target flags."""
    from bastion_fast.cli._options import add_connection_options, add_target_options

    add_connection_options(parser)
    if target:
        add_target_options(parser, resource_port_required=False, default_port=22)
    parser.add_argument("-o", "--output", choices=("table", "json"), default=None,
                        help="table (default on a terminal) or json (default when stdout is a pipe or file)")
    parser.set_defaults(_target_optional=True, _default_resource_port=22)


def run_ops(args: argparse.Namespace, body: Callable[[ArmSession, BastionRef, str], Awaitable[int]]) -> int:
    """Build the options, sign in, run ``body(arm, ref, output_format)`` and close everything."""
    from bastion_fast.cli._options import options_from_args
    from bastion_fast.loop import run
    from bastion_fast.ops.arm import BastionRef, open_arm
    from bastion_fast.ops.output import choose_format

    options = options_from_args(args)
    fmt = choose_format(getattr(args, "output", None))

    async def main() -> int:
        arm = await open_arm(options)
        async with arm:
            ref = BastionRef(arm.subscription, options.resource_group, options.name)
            return await body(arm, ref, fmt)

    return run(main())
