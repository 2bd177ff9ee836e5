"""``bastion-fast ssh-config``: resolve targets (profiles or flags) into :class:`~.sshconfig.HostEntry` blocks.

For a profile the ProxyCommand names the profile (``bastion-fast proxy web1``), so later edits of the profile take
effect without regenerating; connection flags typed on this command line are added after it. For flags alone, the
ProxyCommand carries every resolved connection flag, so the block works without any profile file.
"""

from __future__ import annotations

import argparse
import copy
import logging
import os
import sys
from pathlib import Path
from typing import Any

from bastion_fast.commands.sshconfig import HostEntry, bastion_fast_command, render_block, write_blocks
from bastion_fast.exceptions import ConfigurationError, UsageError

__all__ = ["CONNECTION_FLAGS", "connection_flags", "run_ssh_config"]

log = logging.getLogger("bastion_fast.commands.ssh_config")

# argparse dest → flag, for every connection/target option that can be forwarded to `bastion-fast proxy`.
CONNECTION_FLAGS = {
    "name": "--name",
    "resource_group": "--resource-group",
    "subscription": "--subscription",
    "ids": "--ids",
    "auth": "--auth",
    "tenant": "--tenant",
    "client_id": "--client-id",
    "cloud": "--cloud",
    "arm_endpoint": "--arm-endpoint",
    "ca_bundle": "--ca-bundle",
    "target_resource_id": "--target-resource-id",
    "target_ip_address": "--target-ip-address",
    "resource_port": "--resource-port",
}
_PATH_DESTS = {"ca_bundle"}


def connection_flags(values: dict[str, Any]) -> list[str]:
    """``--flag value`` pairs for the set values (paths made absolute: the proxy runs from another directory)."""
    argv: list[str] = []
    for dest, flag in CONNECTION_FLAGS.items():
        value = values.get(dest)
        if value is None or value == "":
            continue
        if dest in _PATH_DESTS:
            value = os.path.abspath(os.path.expanduser(str(value)))
        argv += [flag, str(value)]
    return argv


def _options_values(options: Any) -> dict[str, Any]:
    target = options.target
    return {
        "name": options.name, "resource_group": options.resource_group, "subscription": options.subscription,
        "auth": None if options.auth == "default" else options.auth, "tenant": options.tenant,
        "client_id": options.client_id, "cloud": options.cloud, "arm_endpoint": options.arm_endpoint,
        "ca_bundle": options.ca_bundle, "target_resource_id": target.resource_id,
        "target_ip_address": target.ip_address,
        "resource_port": None if target.resource_port == 22 else target.resource_port,
    }


def _explicit(args: argparse.Namespace) -> dict[str, Any]:
    return {dest: getattr(args, dest, None) for dest in CONNECTION_FLAGS if getattr(args, dest, None) is not None}


def _auth_settings(args: argparse.Namespace, alias: str, options: Any) -> dict[str, Any]:
    """User, IdentityFile, CertificateFile and extra options for one block."""
    from bastion_fast.commands.ssh import plan_auth

    plan = plan_auth(args)
    settings: dict[str, Any] = {"user": plan.username, "identity_file": None, "certificate_file": None,
                                "extra": {}, "comment": None}
    if plan.auth_type == "password":
        settings["extra"] = {"PreferredAuthentications": "password,keyboard-interactive",
                             "PubkeyAuthentication": "no"}
    elif plan.auth_type == "ssh-key" or (plan.auth_type is None and getattr(args, "ssh_key", None)):
        settings["identity_file"] = os.path.abspath(os.path.expanduser(str(args.ssh_key)))
    elif plan.aad:
        from bastion_fast.commands.aadcert import aad_certificate
        from bastion_fast.commands.hostkeys import state_dir

        directory = state_dir() / "aad" / alias
        with aad_certificate(cloud=options.cloud, tenant=options.tenant, ca_bundle=options.ca_bundle,
                             use_device_code=bool(getattr(args, "use_device_code", False)),
                             key_path=getattr(args, "ssh_key", None), directory=directory) as cert:
            settings.update(user=cert.principal, identity_file=str(cert.key.private_key),
                            certificate_file=str(cert.certificate))
            until = cert.valid_before.strftime("%Y-%m-%d %H:%M UTC") if cert.valid_before else "no expiry"
            settings["comment"] = (f"Entra ID certificate valid until {until}; "
                                   "run `bastion-fast ssh-config` again to renew it.")
    return settings


def _entry(args: argparse.Namespace, profile_name: str | None, explicit: dict[str, Any]) -> HostEntry:
    from bastion_fast.cli._options import options_from_args
    from bastion_fast.commands.cliargs import apply_profile
    from bastion_fast.commands.ssh import host_key_policy, target_label

    local = copy.copy(args)
    if profile_name:
        apply_profile(local, profile_name)
    local.command = "proxy"
    options = options_from_args(local)
    if profile_name:
        alias = profile_name
        proxy = [*bastion_fast_command(), "proxy", profile_name]
        if getattr(args, "config", None):
            proxy += ["--config", os.path.abspath(os.path.expanduser(args.config))]
        proxy += connection_flags(explicit)
    else:
        alias = args.host or target_label(options).replace(":", "-")
        proxy = [*bastion_fast_command(), "proxy", *connection_flags(_options_values(options))]
    policy = host_key_policy(options, insecure=bool(getattr(local, "insecure_host_key", False)))
    policy.prepare()
    settings = _auth_settings(local, alias, options)
    try:
        return HostEntry(host=alias, proxy_argv=proxy, host_key=policy, **settings)
    except ValueError as exc:
        raise UsageError(str(exc), hint="Pick another alias with --host (letters, digits, '.', '_', '-').") \
            from exc


def run_ssh_config(args: argparse.Namespace) -> int:
    """Print or write the blocks; 0 on success."""
    profiles: list[str] = list(getattr(args, "profiles", None) or [])
    if profiles and args.host:
        raise UsageError("--host names the block of a target given by flags; with profiles the Host is the "
                         "profile name.", hint="Leave --host out, or give the target with flags instead.")
    explicit = _explicit(args)
    entries = [_entry(args, name, explicit) for name in profiles] if profiles else [_entry(args, None, explicit)]
    blocks = {entry.host: render_block(entry) for entry in entries}
    if not args.write:
        sys.stdout.write("\n".join(blocks.values()))
        return 0
    path = Path(args.write).expanduser()
    try:
        outcome = write_blocks(path, blocks)
    except OSError as exc:
        raise ConfigurationError(f"Cannot update {path}: {exc.strerror or exc}.",
                                 hint="Check the path and its permissions.") from exc
    for host, what in outcome:
        print(f"{host}: {what} in {path}", file=sys.stderr)
    return 0
