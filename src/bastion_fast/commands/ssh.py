"""``bastion-fast ssh``: the user's OpenSSH through an in-process tunnel, exit status passed on, host key pinned.

Order of events: sign-in for an Entra ID certificate first (it may prompt), then the tunnel (sign-in to ARM,
discovery), then ``ssh`` against ``127.0.0.1:<port>``; when ssh exits the tunnel closes and deletes its Bastion
tokens, the certificate directory is removed, and ssh's exit status becomes ours (az exits 0 whatever ssh did).

``--auth-type`` as in az: ``password`` (password or keyboard-interactive only — az still offered keys,
azure-cli#32776), ``ssh-key`` (``-i KEY``), ``AAD`` (Entra ID certificate, login = its principal). Without it,
OpenSSH's own configuration decides (agent, ``~/.ssh`` keys, then password), and ``--username`` is optional.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import sys
from collections.abc import Iterator
from typing import Any

from bastion_fast.commands.hostkeys import HostKeyPolicy, explain_ssh_log, host_key_alias
from bastion_fast.exceptions import UsageError

__all__ = ["AUTH_TYPES", "AuthPlan", "certificate_for", "host_key_policy", "plan_auth", "run_ssh", "target_label"]

log = logging.getLogger("bastion_fast.commands.ssh")

AUTH_TYPES = ("password", "ssh-key", "aad")


def target_label(options: Any) -> str:
    """How a target is named in messages: the VM name (or IP), with the port when not 22."""
    target = options.target
    name = target.resource_id.rstrip("/").split("/")[-1] if target.resource_id else target.ip_address
    return f"{name}:{target.resource_port}" if target.resource_port != 22 else str(name)


def host_key_policy(options: Any, *, insecure: bool) -> HostKeyPolicy:
    """The per-target known_hosts policy for ``options.target``."""
    target = options.target
    alias = host_key_alias(resource_id=target.resource_id, ip_address=target.ip_address,
                           resource_port=target.resource_port, bastion=options.name,
                           resource_group=options.resource_group)
    return HostKeyPolicy(alias=alias, insecure=insecure)


@dataclasses.dataclass
class AuthPlan:
    """How OpenSSH should authenticate: the login name, extra options, and whether a certificate is needed."""

    auth_type: str | None
    username: str | None
    options: list[str]
    aad: bool = False


def plan_auth(args: argparse.Namespace) -> AuthPlan:
    """Check the auth flags like az and turn them into OpenSSH options.

    Raises:
        UsageError: a flag az requires for this auth type is missing, or one that makes no sense is given.
    """
    auth_type = getattr(args, "auth_type", None)
    username = getattr(args, "username", None)
    ssh_key = getattr(args, "ssh_key", None)
    if auth_type is None:
        return AuthPlan(None, username, ["-i", ssh_key] if ssh_key else [])
    if auth_type == "password":
        if not username:
            raise UsageError("--auth-type password needs --username.", hint="Pass --username LOGIN.")
        return AuthPlan(auth_type, username, ["-o", "PreferredAuthentications=password,keyboard-interactive",
                                              "-o", "PubkeyAuthentication=no"])
    if auth_type == "ssh-key":
        missing = [flag for flag, value in (("--username", username), ("--ssh-key", ssh_key)) if not value]
        if missing:
            raise UsageError(f"--auth-type ssh-key needs {' and '.join(missing)}.",
                             hint="Pass --username LOGIN --ssh-key PATH_TO_PRIVATE_KEY.")
        return AuthPlan(auth_type, username, ["-i", str(ssh_key)])
    if username:
        log.warning("--username is ignored with --auth-type AAD: the login comes from the Entra ID certificate.")
    return AuthPlan("aad", None, [], aad=True)


@contextlib.contextmanager
def certificate_for(args: argparse.Namespace, options: Any, plan: AuthPlan) -> Iterator[Any]:
    """The Entra ID certificate for an AAD plan (removed on exit), else ``None``."""
    if not plan.aad:
        yield None
        return
    from bastion_fast.commands.aadcert import aad_certificate

    with aad_certificate(cloud=options.cloud, tenant=options.tenant, ca_bundle=options.ca_bundle,
                         use_device_code=bool(getattr(args, "use_device_code", False)),
                         key_path=getattr(args, "ssh_key", None)) as cert:
        yield cert


async def run_ssh(args: argparse.Namespace, options: Any) -> int:
    """Run OpenSSH through a tunnel for ``options``; return ssh's exit status."""
    from bastion_fast.commands.openssh import SshLog, split_ssh_args, user_controls_logging
    from bastion_fast.commands.sshclient import find_tool
    from bastion_fast.commands.tunnelling import command_tunnel, run_child

    ssh = find_tool("ssh", getattr(args, "ssh_client_folder", None))
    plan = plan_auth(args)
    policy = host_key_policy(options, insecure=bool(getattr(args, "insecure_host_key", False)))
    policy.prepare()
    user_options, remote_command = split_ssh_args(list(getattr(args, "ssh_args", None) or []))
    label = target_label(options)
    with certificate_for(args, options, plan) as cert:
        login = cert.principal if cert is not None else plan.username
        auth_options = cert.ssh_args() if cert is not None else plan.options
        ssh_log = None if user_controls_logging(user_options) or policy.insecure else SshLog()
        async with command_tunnel(options) as tunnel:
            argv = [ssh, *user_options, "-p", str(tunnel.port), *policy.ssh_args(), *auth_options]
            if policy.insecure:
                argv += ["-o", "LogLevel=ERROR"]
            if login:
                argv += ["-l", login]
            if ssh_log is not None:
                argv += ssh_log.args()
                ssh_log.start()
            argv += ["127.0.0.1", *remote_command]
            try:
                status = await run_child(argv)
            finally:
                held = await ssh_log.stop() if ssh_log is not None else ""
                if ssh_log is not None:
                    ssh_log.cleanup()
    if held:
        rest, changed = explain_ssh_log(held, policy, label)
        if rest.strip():
            sys.stderr.write(rest)
        if changed:
            message, hint = changed
            print(f"error: {message}\nhint: {hint}", file=sys.stderr)
    return status
