"""The connection flags every command shares, spelled exactly like az's, and their conversion to
``ConnectionOptions``.

Precedence for each value: the command-line flag, then a profile (``args.profile``, see below), then the
environment (``BASTION_FAST_ARM_ENDPOINT``, ``AZURE_CLOUD``, ``AZURE_SUBSCRIPTION_ID``,
``BASTION_FAST_DISCOVERY_CACHE_TTL``, …), then az's own
configuration (default subscription, ``az configure --defaults group=``), then built-in defaults. argparse
defaults are ``None`` on purpose so a profile can fill what the user did not type; "required" is therefore checked
here, after the profile, with argparse's wording.

Profile hook: another module may set ``args.profile`` to a mapping (or an object with attributes) whose keys are
the ``dest`` names below (``name``, ``resource_group``, ``subscription``, ``ids``, ``auth``, ``tenant``,
``client_id``, ``cloud``, ``arm_endpoint``, ``ca_bundle``, ``target_resource_id``, ``target_ip_address``,
``resource_port``, ``discovery_cache_ttl``); ``bastion`` and ``rg`` are accepted as aliases of ``name`` and
``resource_group``.

Only argparse and light modules are imported here: this runs on every command's cold start.
"""

from __future__ import annotations

import argparse
import configparser
import os
from collections.abc import Mapping
from typing import Any

from bastion_fast.control.models import AUTH_KINDS, ConnectionOptions
from bastion_fast.exceptions import UsageError

__all__ = [
    "ARM_ENDPOINT_ENV",
    "add_connection_options",
    "add_target_options",
    "add_vm_arguments",
    "options_from_args",
    "positive_seconds",
    "profile_options",
]

ARM_ENDPOINT_ENV = "BASTION_FAST_ARM_ENDPOINT"
_ALIASES: dict[str, tuple[str, ...]] = {
    "name": ("name", "bastion", "bastion_name"),
    "resource_group": ("resource_group", "rg", "group", "resource-group"),
}


def positive_seconds(text: str) -> float:
    """argparse type for durations such as ``--keepalive`` and ``--timeout``: a positive number of seconds."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number of seconds: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text!r}")
    return value


def add_connection_options(parser: argparse.ArgumentParser) -> None:
    """``-n/--name``, ``-g/--resource-group``, ``--subscription``, ``--ids`` and the sign-in/endpoint flags."""
    bastion = parser.add_argument_group("Bastion host")
    bastion.add_argument("-n", "--name", dest="name", metavar="NAME", default=None,
                         help="name of the Bastion host")
    bastion.add_argument("-g", "--resource-group", dest="resource_group", metavar="GROUP", default=None,
                         help="resource group of the Bastion host (not of the VM); default: az configure --defaults "
                         "group=")
    bastion.add_argument("--subscription", metavar="ID", default=None,
                         help="subscription id or name; default: AZURE_SUBSCRIPTION_ID, then az's default "
                         "subscription")
    bastion.add_argument("--ids", metavar="ID", default=None,
                         help="resource id of the Bastion host (replaces -n, -g and --subscription)")
    bastion.add_argument("--discovery-cache-ttl", dest="discovery_cache_ttl", metavar="S", default=None,
                         help="reuse the Bastion's details (dnsName, SKU, flags) read from ARM for up to S seconds "
                         "instead of asking ARM again (default 43200 = 12 h; 0 = off; "
                         "env BASTION_FAST_DISCOVERY_CACHE_TTL)")
    bastion.add_argument("--no-discovery-cache", dest="no_discovery_cache", action="store_true", default=None,
                         help="always ask ARM for the Bastion's details (same as --discovery-cache-ttl 0)")
    auth = parser.add_argument_group("Azure sign-in")
    auth.add_argument("--auth", metavar="METHOD", default=None, type=str.lower, choices=AUTH_KINDS,
                      help=f"how to sign in: {', '.join(AUTH_KINDS)} (default: default = azure-identity's "
                      "DefaultAzureCredential; static reads BASTION_FAST_TOKEN)")
    auth.add_argument("--tenant", metavar="TENANT", default=None, help="Microsoft Entra tenant id or domain")
    auth.add_argument("--client-id", dest="client_id", metavar="ID", default=None,
                      help="client id of a user-assigned managed identity or app registration")
    auth.add_argument("--cloud", metavar="CLOUD", default=None,
                      help="AzureCloud, AzureChinaCloud or AzureUSGovernment (default: AZURE_CLOUD, then az's cloud)")
    auth.add_argument("--arm-endpoint", dest="arm_endpoint", metavar="URL", default=None,
                      help=f"Azure Resource Manager URL override, e.g. an emulator (env {ARM_ENDPOINT_ENV})")
    auth.add_argument("--ca-bundle", dest="ca_bundle", metavar="FILE", default=None,
                      help="extra CA certificates (PEM) to trust for every connection (env BASTION_FAST_CA_BUNDLE)")


def add_target_options(
    parser: argparse.ArgumentParser, *, resource_port_required: bool, default_port: int | None
) -> None:
    """``--target-resource-id``, ``--target-ip-address`` and ``--resource-port``."""
    target = parser.add_argument_group("target")
    target.add_argument("--target-resource-id", dest="target_resource_id", metavar="ID", default=None,
                        help="resource id of the target VM or VM scale set instance")
    target.add_argument("--target-ip-address", dest="target_ip_address", metavar="IP", default=None,
                        help="private IP address of the target (needs IP-based connection on the Bastion)")
    port_help = "port on the target" + ("" if default_port is None else f" (default: {default_port})")
    target.add_argument("--resource-port", dest="resource_port", metavar="PORT", type=int, default=None,
                        help=port_help + ("; required" if resource_port_required else ""))
    parser.set_defaults(_resource_port_required=resource_port_required, _default_resource_port=default_port)


def add_vm_arguments(parser: argparse.ArgumentParser, *, default_port: int | None,
                     resource_port_required: bool = False, profile: bool = True) -> None:
    """What every command that reaches a VM through Bastion takes: a profile name (unless the command names its
    targets itself), the Bastion and sign-in flags, and the target."""
    if profile:
        from bastion_fast.commands.cliargs import add_profile_arguments

        add_profile_arguments(parser)
    add_connection_options(parser)
    add_target_options(parser, resource_port_required=resource_port_required, default_port=default_port)


def profile_options(args: argparse.Namespace, command: str) -> ConnectionOptions:
    """Apply the named profile to ``args`` (flags win), then read the connection options for ``command``."""
    from bastion_fast.commands.cliargs import apply_profile

    apply_profile(args)
    args.command = command
    return options_from_args(args)


def _profile_value(profile: Any, dest: str) -> Any:
    if profile is None or isinstance(profile, str | bytes):
        return None
    for key in _ALIASES.get(dest, (dest,)):
        value = profile.get(key) if isinstance(profile, Mapping) else getattr(profile, key, None)
        if value is not None and value != "":
            return value
    return None


def _az_default_group(env: Mapping[str, str]) -> str | None:
    """``az configure --defaults group=X`` stores ``[defaults] group`` in az's config file."""
    from bastion_fast.control.clouds import az_config_dir

    parser = configparser.ConfigParser()
    try:
        with (az_config_dir(env) / "config").open(encoding="utf-8-sig") as fh:
            parser.read_file(fh)
    except (OSError, configparser.Error, UnicodeDecodeError):
        return None
    value = parser.get("defaults", "group", fallback="").strip()
    return value or None


def _discovery_cache_ttl(args: argparse.Namespace, pick: Any, env: Mapping[str, str]) -> float:
    """``--no-discovery-cache`` > ``--discovery-cache-ttl`` > profile > environment > 12 h."""
    from bastion_fast.control.discovery_cache import CACHE_TTL_ENV, DEFAULT_TTL, parse_ttl

    if getattr(args, "no_discovery_cache", None):
        return 0.0
    value = pick("discovery_cache_ttl")
    if value is not None:
        return parse_ttl(value, source="--discovery-cache-ttl")
    from_env = env.get(CACHE_TTL_ENV, "").strip()
    if from_env:
        return parse_ttl(from_env, source=CACHE_TTL_ENV)
    return DEFAULT_TTL


def options_from_args(args: argparse.Namespace, *, env: Mapping[str, str] | None = None) -> ConnectionOptions:
    """Turn parsed flags (plus an optional profile) into ``ConnectionOptions``.

    Raises:
        UsageError: a missing or contradictory flag, with the flag names az uses.
    """
    from bastion_fast.control.clouds import get_cloud
    from bastion_fast.control.subscription import parse_bastion_id
    from bastion_fast.control.targets import validate_target

    env = os.environ if env is None else env
    profile = getattr(args, "profile", None)

    def pick(dest: str) -> Any:
        value = getattr(args, dest, None)
        if value is None or value == "":
            value = _profile_value(profile, dest)
        return value

    name, group, subscription = pick("name"), pick("resource_group"), pick("subscription")
    ids = pick("ids")
    if ids:
        parsed = parse_bastion_id(str(ids))
        for flag, given, from_id in (("-n/--name", getattr(args, "name", None), parsed.name),
                                     ("-g/--resource-group", getattr(args, "resource_group", None),
                                      parsed.resource_group),
                                     ("--subscription", getattr(args, "subscription", None), parsed.subscription)):
            if given and str(given).lower() != from_id.lower():
                raise UsageError(f"--ids and {flag} disagree ({from_id!r} vs {given!r}).",
                                 hint=f"Pass either --ids or {flag}, not both.")
        name, group, subscription = parsed.name, parsed.resource_group, parsed.subscription
    if not group:
        group = _az_default_group(env)
    missing = [flag for flag, value in (("-n/--name", name), ("-g/--resource-group", group)) if not value]
    if missing:
        raise UsageError(
            f"the following arguments are required: {', '.join(missing)}",
            hint="Pass the Bastion host's name and resource group (-n NAME -g GROUP), or its resource id with --ids.",
        )

    auth = str(pick("auth") or "default").lower()
    if auth not in AUTH_KINDS:
        raise UsageError(f"Unknown --auth {auth!r}.", hint=f"Use one of: {', '.join(AUTH_KINDS)}.")
    cloud = pick("cloud")
    if cloud:
        cloud = get_cloud(str(cloud)).name
    arm_endpoint = pick("arm_endpoint") or env.get(ARM_ENDPOINT_ENV, "").strip() or None
    if arm_endpoint and not str(arm_endpoint).lower().startswith("https://"):
        raise UsageError(f"--arm-endpoint {arm_endpoint!r} must be an https:// URL.",
                         hint="ARM tokens are only sent over TLS, e.g. --arm-endpoint https://management.azure.com.")

    port = pick("resource_port")
    if port is None:
        if getattr(args, "_resource_port_required", False):
            raise UsageError("the following arguments are required: --resource-port",
                             hint="Pass the port on the target, e.g. --resource-port 22 for SSH or 3389 for RDP.")
        port = getattr(args, "_default_resource_port", None)
        if port is None:
            raise UsageError("the following arguments are required: --resource-port",
                             hint="Pass the port on the target, e.g. --resource-port 22.")
    try:
        port_number = int(port)
    except (TypeError, ValueError):
        raise UsageError(f"--resource-port {port!r} is not a number.", hint="Use a port between 1 and 65535.") \
            from None
    target_id, target_ip = pick("target_resource_id"), pick("target_ip_address")
    if getattr(args, "_target_optional", False) and not target_id and not target_ip:
        # Commands about the Bastion itself (bastion, sessions, links, doctor) need no target.
        from bastion_fast.control.models import TunnelTarget

        target = TunnelTarget(resource_id=None, ip_address=None, resource_port=port_number)
    else:
        target = validate_target(target_id, target_ip, port_number)

    return ConnectionOptions(
        name=str(name),
        resource_group=str(group),
        target=target,
        subscription=str(subscription) if subscription else None,
        auth=auth,
        tenant=pick("tenant"),
        client_id=pick("client_id"),
        cloud=cloud,
        arm_endpoint=str(arm_endpoint) if arm_endpoint else None,
        ca_bundle=pick("ca_bundle"),
        command=str(getattr(args, "command", None) or "tunnel"),
        discovery_cache_ttl=_discovery_cache_ttl(args, pick, env),
    )
