"""Named targets from a TOML file, so ``bastion-fast ssh web1`` replaces five flags.

The file lives in the user config directory (``platformdirs``: ``~/.config/bastion-fast/config.toml`` on Linux,
``~/Library/Application Support/bastion-fast/config.toml`` on macOS, ``%LOCALAPPDATA%\\bastion-fast\\config.toml``
on Windows), or wherever ``--config`` / ``BASTION_FAST_CONFIG`` point::

    [defaults]                       # optional: merged under every target
    subscription = "00000000-0000-0000-0000-000000000000"

    [targets.web1]
    bastion = "corp-bastion"         # = --name
    resource_group = "rg-hub"        # = --resource-group (also: group, rg)
    target_resource_id = "/subscriptions/…/virtualMachines/web1"
    resource_port = 22
    port = 50022                     # local port for `tunnel` / `up`
    auth_type = "ssh-key"
    username = "azureuser"           # also: user
    ssh_key = "~/.ssh/id_ed25519"

Keys are the long flag names with ``_`` (or ``-``) for dashes: whatever a command's flag is called, the profile can
set it. Flags given on the command line win over the profile; the profile wins over built-in defaults. Checking keys
against the flags of the command happens in :mod:`.cliargs`, where the parser is known.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bastion_fast.exceptions import UsageError

__all__ = [
    "ALIASES",
    "CONFIG_ENV",
    "Config",
    "Profile",
    "default_config_path",
    "load_config",
    "normalise_key",
]

CONFIG_ENV = "BASTION_FAST_CONFIG"
APP_NAME = "bastion-fast"

# Friendlier spellings accepted in the file, mapped to the argparse destination they mean.
ALIASES: Mapping[str, str] = {
    "bastion": "name",
    "bastion_name": "name",
    "group": "resource_group",
    "rg": "resource_group",
    "user": "username",
    "local_port": "port",
    "target": "target_resource_id",
    "ip": "target_ip_address",
}

_VALUE_TYPES = (str, int, float, bool)


def normalise_key(key: str) -> str:
    """``Target-Resource-Id`` / ``target-resource-id`` → ``target_resource_id``; aliases resolved."""
    canonical = key.strip().lower().replace("-", "_")
    return ALIASES.get(canonical, canonical)


def default_config_path() -> Path:
    """``$BASTION_FAST_CONFIG``, else ``<user config dir>/config.toml``."""
    env = os.environ.get(CONFIG_ENV, "").strip()
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_config_dir(APP_NAME, appauthor=False)) / "config.toml"


@dataclass(frozen=True)
class Profile:
    """One named target: ``settings`` maps argparse destinations to values (defaults already merged)."""

    name: str
    settings: Mapping[str, Any]
    source: Path

    def get(self, key: str, default: Any = None) -> Any:
        return self.settings.get(normalise_key(key), default)


@dataclass(frozen=True)
class Config:
    """The parsed file: every profile by name. ``exists`` is False when there is no file (an empty config)."""

    path: Path
    exists: bool
    profiles: Mapping[str, Profile] = field(default_factory=dict)

    def profile(self, name: str) -> Profile:
        """The profile called ``name``.

        Raises:
            UsageError: no such profile (the message lists the ones that exist and where they were read from).
        """
        found = self.profiles.get(name)
        if found is not None:
            return found
        if not self.exists:
            raise UsageError(
                f"No profile named {name!r}: there is no config file at {self.path}.",
                hint=f"Create it with a [targets.{name}] table (see `bastion-fast up --help`), pass --config FILE, "
                "or give the target with flags (-n, -g, --target-resource-id …).",
            )
        known = ", ".join(sorted(self.profiles)) or "none"
        raise UsageError(
            f"No profile named {name!r} in {self.path} (profiles there: {known}).",
            hint=f"Add a [targets.{name}] table to {self.path}, or give the target with flags.",
        )


def _check_value(path: Path, where: str, key: str, value: Any) -> Any:
    if isinstance(value, _VALUE_TYPES):
        return value
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return list(value)
    raise UsageError(
        f"{path}: {where}: setting {key!r} must be a string, number, boolean or list of strings, "
        f"not {type(value).__name__}.",
        hint="Write flag values as plain TOML values, e.g. resource_port = 22.",
    )


def _settings(path: Path, where: str, table: Any) -> dict[str, Any]:
    if not isinstance(table, dict):
        raise UsageError(f"{path}: {where} must be a table ([{where}]).",
                         hint="See `bastion-fast up --help` for the file format.")
    result: dict[str, Any] = {}
    for key, value in table.items():
        dest = normalise_key(key)
        if dest in result:
            raise UsageError(f"{path}: {where}: {key!r} sets {dest!r} a second time.",
                             hint="Keep one spelling of each setting.")
        result[dest] = _check_value(path, where, key, value)
    return result


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    """Read the config file (``path`` or the default location); a missing default file is an empty config.

    Raises:
        UsageError: the file given explicitly does not exist, is not valid TOML, or has a malformed table.
    """
    explicit = path is not None
    file = Path(path).expanduser() if path is not None else default_config_path()
    if not file.exists():
        if explicit:
            raise UsageError(f"Config file {file} does not exist.",
                             hint="Check the --config path (or BASTION_FAST_CONFIG).")
        return Config(path=file, exists=False)
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{file} is not valid TOML: {exc}.", hint="Fix the line named above.") from exc
    except OSError as exc:
        raise UsageError(f"Cannot read config file {file}: {exc.strerror or exc}.",
                         hint="Check the file's permissions.") from exc
    unknown = sorted(set(data) - {"defaults", "targets"})
    if unknown:
        raise UsageError(f"{file}: unknown top-level entries {', '.join(unknown)}.",
                         hint="The file has an optional [defaults] table and [targets.NAME] tables.")
    defaults = _settings(file, "defaults", data.get("defaults", {}))
    targets = data.get("targets", {})
    if not isinstance(targets, dict):
        raise UsageError(f"{file}: 'targets' must be tables like [targets.web1].",
                         hint="See `bastion-fast up --help` for the file format.")
    profiles = {}
    for name, table in targets.items():
        merged = {**defaults, **_settings(file, f"targets.{name}", table)}
        profiles[name] = Profile(name=name, settings=merged, source=file)
    return Config(path=file, exists=True, profiles=profiles)
