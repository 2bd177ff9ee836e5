"""Which subscription the Bastion lives in, and parsing of ``--ids``.

Order: ``--subscription`` (an id, or a name found in az's profile), ``AZURE_SUBSCRIPTION_ID``, the default
subscription of az's profile (``$AZURE_CONFIG_DIR/azureProfile.json``, written by ``az login`` with a UTF-8 BOM),
else an error telling the user how to choose. No network, no ``az`` process.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bastion_fast.control.clouds import az_config_dir
from bastion_fast.exceptions import UsageError

__all__ = ["SUBSCRIPTION_ENV", "BastionId", "Subscription", "parse_bastion_id", "resolve_subscription"]

log = logging.getLogger("bastion_fast.control.subscription")

SUBSCRIPTION_ENV = "AZURE_SUBSCRIPTION_ID"
_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_BASTION_ID = re.compile(
    r"^/subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<rg>[^/]+)"
    r"/providers/Microsoft\.Network/bastionHosts/(?P<name>[^/]+)/?$",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Subscription:
    """A resolved subscription id, where it came from, and its tenant when az's profile knows it."""

    id: str
    source: str
    tenant: str | None = None


@dataclass(frozen=True)
class BastionId:
    """The parts of a Bastion host's ARM id."""

    subscription: str
    resource_group: str
    name: str


def parse_bastion_id(value: str) -> BastionId:
    """Split ``--ids`` (one Bastion host resource id) into subscription, group and name.

    Raises:
        UsageError: more than one id, or not a ``Microsoft.Network/bastionHosts`` id.
    """
    parts = value.split()
    if len(parts) != 1:
        raise UsageError(
            "--ids takes exactly one Bastion host resource id.",
            hint="Run the command once per Bastion host.",
        )
    match = _BASTION_ID.match(parts[0])
    if match is None:
        raise UsageError(
            f"--ids {parts[0]!r} is not a Bastion host resource id.",
            hint="Expected /subscriptions/{sub}/resourceGroups/{group}/providers/Microsoft.Network/bastionHosts/"
            "{name} (copy it from the portal's JSON view or `az network bastion show --query id`).",
        )
    return BastionId(match["sub"], match["rg"], match["name"])


def _load_profile(env: Mapping[str, str]) -> list[dict[str, Any]] | None:
    path = az_config_dir(env) / "azureProfile.json"
    try:
        raw = path.read_bytes()
    except OSError:
        return None
    try:
        data = json.loads(raw.decode("utf-8-sig"))  # az writes a BOM
    except (UnicodeDecodeError, ValueError):
        log.warning("Ignoring %s: it is not valid JSON.", path)
        return None
    subscriptions = data.get("subscriptions") if isinstance(data, dict) else None
    if not isinstance(subscriptions, list):
        return None
    return [s for s in subscriptions if isinstance(s, dict) and isinstance(s.get("id"), str)]


def _tenant(entry: Mapping[str, Any]) -> str | None:
    tenant = entry.get("tenantId")
    return tenant if isinstance(tenant, str) and tenant else None


def resolve_subscription(explicit: str | None = None, *, env: Mapping[str, str] | None = None) -> Subscription:
    """Pick the subscription (see the module docstring for the order).

    Raises:
        UsageError: a subscription name that az's profile does not know, or no subscription anywhere.
    """
    env = os.environ if env is None else env
    if explicit and explicit.strip():
        value = explicit.strip()
        profile = _load_profile(env) or []
        if _GUID.match(value):
            tenant = next((_tenant(s) for s in profile if s["id"].lower() == value.lower()), None)
            return Subscription(value, "--subscription", tenant)
        by_name = [s for s in profile if str(s.get("name", "")).lower() == value.lower()]
        if len(by_name) == 1:
            return Subscription(by_name[0]["id"], "--subscription (name from az profile)", _tenant(by_name[0]))
        if len(by_name) > 1:
            raise UsageError(
                f"--subscription {value!r} matches {len(by_name)} subscriptions in az's profile.",
                hint="Pass the subscription id instead of its name.",
            )
        raise UsageError(
            f"--subscription {value!r} is neither a subscription id nor the name of a subscription az knows.",
            hint="Pass the subscription id (a GUID); `az account list -o table` lists them.",
        )
    from_env = env.get(SUBSCRIPTION_ENV, "").strip()
    if from_env:
        return Subscription(from_env, SUBSCRIPTION_ENV)
    for entry in _load_profile(env) or []:
        if entry.get("isDefault") is True:
            return Subscription(entry["id"], "az CLI default subscription", _tenant(entry))
    raise UsageError(
        "No subscription chosen.",
        hint=f"Pass --subscription ID (or --ids with the Bastion's resource id), set {SUBSCRIPTION_ENV}, or pick a "
        "default with `az account set --subscription ID`.",
    )
