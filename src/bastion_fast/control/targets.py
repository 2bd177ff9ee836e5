"""The target of a tunnel: syntax checks done before any network call (PROTOCOL §1.2, §2.2).

Like az since cli#23834, a target id is checked for ARM-id *syntax* only — the service decides which resource
types it accepts. We do warn about ids that are well-formed but certainly not a machine (a VMSS without an instance,
a NIC), because the service answers those with an unhelpful 403/500.
"""

from __future__ import annotations

import ipaddress
import logging
import re

from bastion_fast.control.models import TunnelTarget
from bastion_fast.exceptions import UsageError

__all__ = [
    "IP_CONNECT_PORTS",
    "host_connect_resource_id",
    "parse_ip_address",
    "validate_port",
    "validate_resource_id",
    "validate_target",
]

log = logging.getLogger("bastion_fast.control.targets")

IP_CONNECT_PORTS = (22, 3389)
_SEGMENT = r"[^/\s]+"
_RESOURCE_ID = re.compile(
    rf"^/subscriptions/{_SEGMENT}/resourceGroups/{_SEGMENT}/providers/{_SEGMENT}"
    rf"/{_SEGMENT}/{_SEGMENT}(?:/{_SEGMENT}/{_SEGMENT})*/?$",
    re.IGNORECASE,
)
_VM = re.compile(r"/providers/Microsoft\.Compute/virtualMachines/[^/]+/?$", re.IGNORECASE)
_VMSS_INSTANCE = re.compile(
    r"/providers/Microsoft\.Compute/virtualMachineScaleSets/[^/]+/virtualMachines/[^/]+/?$", re.IGNORECASE
)
_VMSS = re.compile(r"/providers/Microsoft\.Compute/virtualMachineScaleSets/[^/]+/?$", re.IGNORECASE)
_COPY_ID_HINT = (
    "Copy the id from the VM's JSON view in the portal, or run `az vm show -g GROUP -n VM --query id -o tsv`. "
    "It looks like /subscriptions/{sub}/resourceGroups/{group}/providers/Microsoft.Compute/virtualMachines/{vm} "
    "(VMSS instance: …/virtualMachineScaleSets/{vmss}/virtualMachines/{instance})."
)


def validate_resource_id(value: str) -> str:
    """Check ``--target-resource-id`` is a well-formed ARM resource id and return it stripped.

    Raises:
        UsageError: not an ARM resource id (e.g. a resource-group id, a name, or a URL).
    """
    candidate = value.strip()
    if not _RESOURCE_ID.match(candidate):
        raise UsageError(f"--target-resource-id {value!r} is not a valid resource id.", hint=_COPY_ID_HINT)
    if _VMSS.search(candidate):
        log.warning(
            "--target-resource-id names a whole VM scale set; Bastion needs one instance: append "
            "/virtualMachines/{instanceId} (`az vmss list-instances` lists them)."
        )
    elif not (_VM.search(candidate) or _VMSS_INSTANCE.search(candidate)):
        log.warning(
            "--target-resource-id is not a virtual machine or VM scale set instance; "
            "the Bastion service may refuse it."
        )
    return candidate


def parse_ip_address(value: str) -> str:
    """Check ``--target-ip-address`` like az does (``ipaddress.ip_address``, no spaces) and normalise it.

    Raises:
        UsageError: not an IPv4/IPv6 address.
    """
    if value != value.strip() or " " in value:
        raise UsageError(
            f"--target-ip-address {value!r} contains spaces.",
            hint="Pass only the private IP address of the target, e.g. --target-ip-address 10.0.0.4.",
        )
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise UsageError(
            f"--target-ip-address {value!r} is not a valid IP address.",
            hint="Pass the target's private IP address, e.g. --target-ip-address 10.0.0.4 "
            "(for a VM by name use --target-resource-id).",
        ) from None


def validate_port(port: int) -> int:
    """``--resource-port`` must be a TCP port.

    Raises:
        UsageError: outside 1–65535.
    """
    if not 1 <= port <= 65535:
        raise UsageError(f"--resource-port {port} is not a TCP port.", hint="Use a port between 1 and 65535.")
    return port


def validate_target(resource_id: str | None, ip_address: str | None, resource_port: int) -> TunnelTarget:
    """Build a ``TunnelTarget`` from the flags, enforcing the rules that need no network.

    Raises:
        UsageError: no target or both targets, a malformed id or IP, a bad port, or a custom port with IP connect.
    """
    if resource_id and ip_address:
        raise UsageError(
            "--target-resource-id and --target-ip-address cannot be used together.",
            hint="Pass one of them: the VM's resource id, or its private IP address (needs IP-based connection).",
        )
    if not resource_id and not ip_address:
        raise UsageError(
            "Please provide either --target-resource-id or --target-ip-address.",
            hint="--target-resource-id takes the VM's ARM id; --target-ip-address its private IP "
            "(the Bastion needs IP-based connection enabled).",
        )
    validate_port(resource_port)
    if ip_address:
        ip = parse_ip_address(ip_address)
        if resource_port not in IP_CONNECT_PORTS:
            raise UsageError(
                f"Custom ports are not allowed with --target-ip-address (got --resource-port {resource_port}).",
                hint="Bastion's IP-based connection only reaches ports 22 and 3389: use --resource-port 22 or "
                "3389, or target the VM with --target-resource-id to reach another port.",
            )
        return TunnelTarget(resource_id=None, ip_address=ip, resource_port=resource_port)
    assert resource_id is not None
    return TunnelTarget(resource_id=validate_resource_id(resource_id), ip_address=None, resource_port=resource_port)


def host_connect_resource_id(subscription: str, resource_group: str, ip_address: str) -> str:
    """The synthetic ``resourceId`` az sends for IP connect (PROTOCOL §2.2): the Bastion's group, provider
    ``Microsoft.Network/bh-hostConnect``, the IP as the name."""
    return (
        f"/subscriptions/{subscription}/resourceGroups/{resource_group}"
        f"/providers/Microsoft.Network/bh-hostConnect/{ip_address}"
    )
