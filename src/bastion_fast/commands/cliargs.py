"""argparse helpers shared by the everyday commands: a profile argument and ``--`` pass-through.

*Profiles.* :func:`add_profile_arguments` gives a command an optional ``PROFILE`` positional and ``--config FILE``.
:func:`apply_profile` then pre-fills every option the user did not give on the command line from the profile, running
each value through the option's own ``type`` and ``choices`` so a profile is checked exactly like flags are. A value
"was not given" when it still equals the parser's default (argparse keeps no other record).

*Pass-through.* ``bastion-fast ssh web1 -- -L 8080:localhost:80`` must hand everything after the first ``--`` to
OpenSSH untouched. argparse cannot mix an optional positional with a ``--`` tail (the positional swallows the first
extra argument), so :func:`enable_passthrough` splits the argument list at ``--`` before argparse sees it, by wrapping
the subparser's ``parse_known_args`` (which the parent parser calls on every Python ≥ 3.11).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from typing import Any

from bastion_fast.commands.profiles import Config, Profile, load_config
from bastion_fast.exceptions import UsageError

__all__ = [
    "add_config_argument",
    "add_profile_arguments",
    "apply_profile",
    "apply_profile_settings",
    "enable_passthrough",
    "load_profile",
]

_PARSER_ATTR = "_bf_parser"
_IGNORED_DESTS = frozenset({"help", "profile", "profile_name", "config", "command", "_run", _PARSER_ATTR})


def add_config_argument(parser: argparse.ArgumentParser) -> None:
    """``--config FILE`` (the profiles file) and a back-reference so :func:`apply_profile` can see the options."""
    parser.add_argument("--config", metavar="FILE", default=None,
                        help="profiles file (default: the user config dir's bastion-fast/config.toml, "
                             "or $BASTION_FAST_CONFIG)")
    parser.set_defaults(**{_PARSER_ATTR: parser})


def add_profile_arguments(parser: argparse.ArgumentParser, *, help_text: str | None = None) -> None:
    """An optional ``PROFILE`` positional plus ``--config``."""
    parser.add_argument("profile_name", nargs="?", metavar="PROFILE", default=None,
                        help=help_text or "a named target from the profiles file; flags given here override it")
    add_config_argument(parser)


def enable_passthrough(parser: argparse.ArgumentParser, dest: str) -> None:
    """Put everything after the first ``--`` into ``args.<dest>`` (a list), unparsed."""
    original = parser.parse_known_args

    def parse_known_args(args: Sequence[str] | None = None,
                         namespace: argparse.Namespace | None = None) -> tuple[argparse.Namespace, list[str]]:
        import sys

        items = list(sys.argv[1:] if args is None else args)
        tail: list[str] = []
        if "--" in items:
            cut = items.index("--")
            items, tail = items[:cut], items[cut + 1:]
        parsed, extras = original(items, namespace)
        setattr(parsed, dest, tail)
        return parsed, extras

    parser.parse_known_args = parse_known_args  # type: ignore[method-assign,assignment]
    parser.set_defaults(**{dest: []})


def _convert(action: argparse.Action, key: str, value: Any, profile: Profile) -> Any:
    where = f"profile {profile.name!r} ({profile.source})"
    if action.nargs == 0:  # store_true / store_false / store_const
        if not isinstance(value, bool):
            raise UsageError(f"{where}: {key} must be true or false.", hint=f"Write {key} = true.")
        if isinstance(action, argparse._StoreTrueAction):
            return value
        if isinstance(action, argparse._StoreFalseAction):
            return not value
        return action.const if value else action.default
    many = action.nargs in ("*", "+", argparse.REMAINDER) or isinstance(action.nargs, int) or \
        isinstance(action, argparse._AppendAction)
    items = value if isinstance(value, list) else [value]
    if isinstance(value, list) and not many:
        raise UsageError(f"{where}: {key} takes one value, not a list.", hint=f"Write {key} = \"…\".")
    converted = []
    convert: Callable[[str], Any] | None = action.type if callable(action.type) else None
    for item in items:
        # Flags reach argparse as strings: give the option's own converter the same text a flag would carry.
        text = ("true" if item else "false") if isinstance(item, bool) else str(item)
        try:
            result = convert(text) if convert is not None else text
        except (argparse.ArgumentTypeError, TypeError, ValueError) as exc:
            raise UsageError(f"{where}: {key} = {item!r} is not valid: {exc}",
                             hint=f"Use a value the flag {_flag(action)} accepts.") from exc
        if action.choices is not None and result not in action.choices:
            choices = ", ".join(map(str, action.choices))
            raise UsageError(f"{where}: {key} = {item!r} is not one of {choices}.",
                             hint=f"Use one of: {choices}.")
        converted.append(result)
    return converted if many else converted[0]


def _flag(action: argparse.Action) -> str:
    longs = [opt for opt in action.option_strings if opt.startswith("--")]
    return (longs or action.option_strings or [action.dest])[0]


def _all_known_dests() -> set[str]:
    """Every option destination of every bastion-fast command (only built on the error path)."""
    from bastion_fast.cli import build_parser

    known: set[str] = set()

    def walk(parser: argparse.ArgumentParser) -> None:
        for action in parser._actions:
            known.add(action.dest)
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    walk(sub)

    walk(build_parser())
    return known


def apply_profile_settings(args: argparse.Namespace, parser: argparse.ArgumentParser, profile: Profile) -> None:
    """Fill ``args`` from ``profile`` wherever the user left the parser default.

    Keys that this command has no option for are skipped if *some* bastion-fast command knows them (a profile
    serves ``tunnel``, ``ssh`` and ``rdp`` alike); keys no command knows are an error, to catch typos.

    Raises:
        UsageError: unknown key, or a value the option would reject.
    """
    actions = {action.dest: action for action in parser._actions if action.dest not in _IGNORED_DESTS}
    unknown = [key for key in profile.settings if key not in actions]
    if unknown:
        everything = _all_known_dests()
        typos = [key for key in unknown if key not in everything]
        if typos:
            raise UsageError(
                f"profile {profile.name!r} ({profile.source}): unknown setting(s) {', '.join(sorted(typos))}.",
                hint="Settings are the long flag names with '_' for '-', e.g. target_resource_id, resource_port.",
            )
    for key, value in profile.settings.items():
        action = actions.get(key)
        if action is None:
            continue
        current = getattr(args, key, None)
        default = parser.get_default(key)
        if current is not None and current != default:
            continue  # given on the command line: the flag wins
        setattr(args, key, _convert(action, key, value, profile))


def load_profile(args: argparse.Namespace, name: str) -> Profile:
    """The profile ``name`` from ``args.config`` (or the default file)."""
    config: Config = load_config(getattr(args, "config", None))
    return config.profile(name)


def apply_profile(args: argparse.Namespace, name: str | None = None) -> Profile | None:
    """Apply the profile named by ``name`` (default ``args.profile_name``) to ``args``; ``None`` when no profile.

    Besides filling the flags, ``args.profile`` is set to the profile's settings: that is the hook
    ``cli._options.options_from_args`` reads, so values this command has no flag for still reach it.
    """
    name = name if name is not None else getattr(args, "profile_name", None)
    if not name:
        return None
    parser = getattr(args, _PARSER_ATTR, None)
    if parser is None:  # pragma: no cover - a command forgot add_profile_arguments
        raise RuntimeError("apply_profile needs add_profile_arguments/add_config_argument on the parser")
    profile = load_profile(args, name)
    apply_profile_settings(args, parser, profile)
    args.profile = dict(profile.settings)
    return profile


def _auth_type(value: str) -> str:
    """az accepts any case (``AAD``, ``aad``, ``SSH-Key``)."""
    return value.strip().lower()


def add_ssh_options(parser: argparse.ArgumentParser, *, host_keys: bool = True) -> None:
    """az's ``--auth-type``/``--username``/``--ssh-key`` plus ``--ssh-client-folder``, ``--insecure-host-key``."""
    group = parser.add_argument_group("SSH")
    group.add_argument("--auth-type", dest="auth_type", metavar="TYPE", type=_auth_type, default=None,
                       choices=("password", "ssh-key", "aad"),
                       help="password, ssh-key or AAD (Entra ID certificate); default: OpenSSH's own configuration")
    group.add_argument("--username", metavar="USER", default=None,
                       help="login name on the VM (with AAD it comes from the certificate)")
    group.add_argument("--ssh-key", dest="ssh_key", metavar="PATH", default=None,
                       help="private key file (with AAD: an RSA key pair to certify instead of a fresh one)")
    group.add_argument("--use-device-code", dest="use_device_code", action="store_true", default=False,
                       help="AAD: sign in with a device code instead of a browser")
    group.add_argument("--ssh-client-folder", dest="ssh_client_folder", metavar="DIR", default=None,
                       help="folder with the OpenSSH programs to use (default: PATH, then Windows' built-in "
                            "OpenSSH)")
    if host_keys:
        group.add_argument("--insecure-host-key", dest="insecure_host_key", action="store_true", default=False,
                           help="do not check or record the VM's host key (az's StrictHostKeyChecking=no)")
