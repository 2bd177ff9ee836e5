"""Bastion discovery through ARM (azure-mgmt-network, async) and the rules that decide whether it can be used.

``fetch_bastion`` does the one ARM GET and turns the SDK's answers and errors into ``BastionInfo`` or our error
tree; ``check_bastion`` applies the rules of PROTOCOL §1.2 and says, for each refusal, what to change on the
Bastion or the command line. Missing booleans mean false (ARM omits unset flags; az crashed on that, ext#8799).

The SDK costs ~0.2 s to import, so it is imported inside ``fetch_bastion`` only; it shares the ControlPlane's
aiohttp session (and so its TLS context — system roots plus ``--ca-bundle`` — and environment proxies) through
azure-core's ``AioHttpTransport(session=…, session_owner=False)``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from bastion_fast._logging import redact
from bastion_fast.control.models import BastionInfo, ConnectionOptions
from bastion_fast.exceptions import (
    AuthenticationError,
    BastionNotFound,
    DiscoveryError,
    IpConnectDisabled,
    NativeClientDisabled,
    PermissionDenied,
    UnsupportedSku,
)

if TYPE_CHECKING:
    import aiohttp

    from bastion_fast.control.clouds import Cloud

__all__ = ["ARM_API_VERSION", "check_bastion", "fetch_bastion", "import_sdk", "network_client", "to_bastion_info"]

log = logging.getLogger("bastion_fast.control.discovery")

# What the az bastion extension uses since 1.2.0; available in every cloud, unlike the SDK's newest default.
ARM_API_VERSION = "2024-01-01"

_RBAC_HINT = (
    "Ask for the Reader role on the Bastion host, on the target VM and its network interface, and on the virtual "
    "network when the Bastion's network is peered (`az role assignment create --role Reader --assignee YOU "
    "--scope ID`)."
)
_STANDARD_SKUS = {"standard", "premium"}


def import_sdk() -> None:
    """Import the ARM SDK (slow); callable from a worker thread so the import overlaps a sign-in."""
    import azure.core.pipeline.transport
    import azure.mgmt.network.aio  # noqa: F401


def _text(value: Any) -> str | None:
    """A string from an SDK value (its str-enums print as ``Class.MEMBER``, so take ``.value``)."""
    if value is None:
        return None
    text = str(getattr(value, "value", value)).strip()
    return text or None


def _bool(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.strip().lower() == "true")


def to_bastion_info(host: Any, *, subscription: str, resource_group: str, name: str) -> BastionInfo:
    """Flatten the SDK's ``BastionHost`` (hybrid model, properties flattened) into ``BastionInfo``."""
    sku = _text(getattr(getattr(host, "sku", None), "name", None))
    return BastionInfo(
        id=str(getattr(host, "id", None) or f"/subscriptions/{subscription}/resourceGroups/{resource_group}"
               f"/providers/Microsoft.Network/bastionHosts/{name}"),
        name=str(getattr(host, "name", None) or name),
        resource_group=resource_group,
        subscription=subscription,
        sku=sku or "Basic",  # ARM's default SKU when none is stored
        dns_name=str(getattr(host, "dns_name", None) or ""),
        enable_tunneling=_bool(getattr(host, "enable_tunneling", None)),
        enable_ip_connect=_bool(getattr(host, "enable_ip_connect", None)),
        provisioning_state=_text(getattr(host, "provisioning_state", None)),
    )


def _arm_error(exc: Any) -> tuple[str | None, str]:
    """(ARM error code, one-line message) from an azure-core HttpResponseError."""
    error = getattr(exc, "error", None)
    code = getattr(error, "code", None)
    message = getattr(error, "message", None)
    if not message:
        message = str(getattr(exc, "reason", "") or exc).strip().splitlines()[0] if str(exc).strip() else ""
    return (str(code) if code else None), redact(" ".join(str(message).split())[:400])


async def fetch_bastion(
    credential: Any,
    *,
    subscription: str,
    resource_group: str,
    name: str,
    cloud: Cloud,
    arm_endpoint: str | None,
    session: aiohttp.ClientSession,
    retry_total: int = 3,
    connect_timeout: float = 10.0,
    read_timeout: float = 30.0,
) -> BastionInfo:
    """GET the Bastion host from ARM.

    Raises:
        BastionNotFound: 404 (host, group or subscription).
        PermissionDenied: 403.
        AuthenticationError: 401 or a token for the wrong tenant.
        DiscoveryError: anything else (network, 5xx after retries).
    """
    from azure.core.exceptions import (
        ClientAuthenticationError,
        HttpResponseError,
        ResourceNotFoundError,
        ServiceRequestError,
        ServiceResponseError,
    )
    from azure.core.pipeline.transport import AioHttpTransport
    from azure.mgmt.network.aio import NetworkManagementClient

    base_url = (arm_endpoint or cloud.arm_endpoint).rstrip("/")
    where = f"Bastion host {name!r} in resource group {resource_group!r} (subscription {subscription})"
    client = NetworkManagementClient(
        credential,
        subscription,
        base_url=base_url,
        credential_scopes=[cloud.arm_scope],
        transport=AioHttpTransport(session=session, session_owner=False, connection_timeout=connect_timeout,
                                   read_timeout=read_timeout),
        retry_total=retry_total,
    )
    try:
        log.debug("GET %s from %s", where, base_url)
        host = await client.bastion_hosts.get(resource_group, name, api_version=ARM_API_VERSION)
    except ResourceNotFoundError as exc:
        code, message = _arm_error(exc)
        if code == "SubscriptionNotFound":
            hint = "Check --subscription (or AZURE_SUBSCRIPTION_ID / `az account show`) and --cloud."
        elif code == "ResourceGroupNotFound":
            hint = "-g/--resource-group is the Bastion's resource group (not the VM's); check the name."
        else:
            hint = ("Check -n/--name and -g/--resource-group (the Bastion's group, not the VM's) and --subscription; "
                    "`az network bastion list -o table` lists the Bastions you can see.")
        raise BastionNotFound(f"{where} was not found ({code or 'HTTP 404'}: {message}).", hint=hint) from None
    except ClientAuthenticationError as exc:
        code, message = _arm_error(exc)
        raise AuthenticationError(
            f"ARM refused the token while reading {where} ({code or 'HTTP 401'}: {message}).",
            hint="The token is for another tenant or cloud: pass --tenant TENANT (the subscription's tenant) and "
            "check --cloud; with az, `az login --tenant TENANT`.",
        ) from None
    except HttpResponseError as exc:
        code, message = _arm_error(exc)
        status = getattr(exc, "status_code", None)
        if status == 403:
            raise PermissionDenied(f"Not allowed to read {where} ({code or 'HTTP 403'}: {message}).",
                                   hint=_RBAC_HINT) from None
        if status == 401 or code in {"InvalidAuthenticationTokenTenant", "InvalidAuthenticationToken"}:
            raise AuthenticationError(
                f"ARM refused the token while reading {where} ({code}: {message}).",
                hint="Pass --tenant with the subscription's tenant and check --cloud.",
            ) from None
        raise DiscoveryError(f"ARM answered HTTP {status} for {where} ({code or 'no error code'}: {message}).",
                             hint="Retry in a minute; if it persists, check https://status.azure.com.") from None
    except (ServiceRequestError, ServiceResponseError) as exc:
        reason = redact(" ".join(str(exc).split())[:300])
        hint = "Check network access to ARM (proxy: HTTPS_PROXY/NO_PROXY), --arm-endpoint and --cloud."
        if "certificate" in reason.lower():
            hint = ("The TLS certificate was not trusted: behind a TLS-inspecting proxy pass its CA with --ca-bundle "
                    "(or REQUESTS_CA_BUNDLE).")
        if "timeout" in type(exc).__name__.lower() or "timed out" in reason.lower():
            raise DiscoveryError(f"Azure Resource Manager at {base_url} did not answer in time: {reason}",
                                 hint=hint) from None
        raise DiscoveryError(f"Cannot reach Azure Resource Manager at {base_url}: {reason}", hint=hint) from None
    finally:
        await client.close()
    info = to_bastion_info(host, subscription=subscription, resource_group=resource_group, name=name)
    log.debug("Bastion %s: sku=%s tunneling=%s ip_connect=%s state=%s dns=%s", info.name, info.sku,
              info.enable_tunneling, info.enable_ip_connect, info.provisioning_state, info.dns_name)
    return info


def check_bastion(info: BastionInfo, options: ConnectionOptions) -> None:
    """Refuse a Bastion that cannot do what ``options`` asks, saying what to change.

    Raises:
        DiscoveryError: provisioning not Succeeded, or no dnsName.
        UnsupportedSku: Basic, Developer for tunnel/rdp, or an unknown SKU.
        NativeClientDisabled: Standard/Premium with enableTunneling false or absent.
        IpConnectDisabled: ``--target-ip-address`` with enableIpConnect false or absent.
    """
    ref = f"-n {info.name} -g {info.resource_group}"
    state = info.provisioning_state
    if state is not None and state.lower() != "succeeded":
        hint = f"Wait until it finishes (`az network bastion show {ref} --query provisioningState`)"
        if state.lower() == "failed":
            hint = f"The last change failed: fix or re-apply it (`az network bastion update {ref} …`) or recreate it"
        raise DiscoveryError(f"Bastion host {info.name!r} is in provisioning state {state!r}, not 'Succeeded'.",
                             hint=hint + ".")
    sku = info.sku.lower()
    command = options.command
    if info.developer:
        if not options.developer_allowed:
            raise UnsupportedSku(
                f"Bastion host {info.name!r} is a {info.sku} SKU; `{command}` needs a Standard or Premium SKU with "
                "native client support.",
                hint=f"Use `bastion-fast ssh` (the Developer SKU supports SSH), or upgrade: az network bastion update "
                f"{ref} --sku Standard --enable-tunneling true.",
            )
    elif sku not in _STANDARD_SKUS:
        raise UnsupportedSku(
            f"Bastion Host SKU must be Standard or Premium and Native Client must be enabled "
            f"({info.name!r} is {info.sku}).",
            hint=f"Upgrade the Bastion: az network bastion update {ref} --sku Standard --enable-tunneling true.",
        )
    elif not info.enable_tunneling:
        raise NativeClientDisabled(
            f"Native client support (enableTunneling) is not enabled on Bastion host {info.name!r}.",
            hint=f"Enable it: az network bastion update {ref} --enable-tunneling true "
            "(portal: Bastion → Configuration → Native client support).",
        )
    if options.target.ip_address and not info.enable_ip_connect:
        where = (f"Bastion host {info.name!r} ({info.sku} SKU has no IP-based connection)" if info.developer
                 else f"Bastion host {info.name!r}")
        raise IpConnectDisabled(
            f"--target-ip-address flag cannot be used when IpConnect is not enabled on {where}.",
            hint=f"Enable IP-based connection (Standard or Premium): az network bastion update {ref} "
            "--enable-ip-connect true — or target the VM with --target-resource-id.",
        )
    if not info.dns_name:
        raise DiscoveryError(f"Bastion host {info.name!r} has no dnsName, so it cannot be reached.",
                             hint="It may still be deploying; check `az network bastion show "
                             f"{ref} --query dnsName`.")


def network_client(
    credential: Any,
    subscription: str,
    *,
    cloud: Cloud,
    arm_endpoint: str | None,
    session: aiohttp.ClientSession,
    retry_total: int = 3,
    **kwargs: Any,
) -> Any:
    """An async ``NetworkManagementClient`` on the shared aiohttp session (same TLS policy and proxies), with the
    cloud's ARM endpoint and scope; ``kwargs`` go to azure-core (e.g. ``raw_response_hook``). Used by the
    administration commands (``bastion_fast.ops``); the caller closes it."""
    from azure.core.pipeline.transport import AioHttpTransport
    from azure.mgmt.network.aio import NetworkManagementClient

    return NetworkManagementClient(
        credential,
        subscription,
        base_url=(arm_endpoint or cloud.arm_endpoint).rstrip("/"),
        credential_scopes=[cloud.arm_scope],
        transport=AioHttpTransport(session=session, session_owner=False),
        retry_total=retry_total,
        **kwargs,
    )
