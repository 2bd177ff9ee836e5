"""Azure clouds: sign-in authority, ARM endpoint and the scopes tokens are requested for (USERS.md §4.2).

The table is static so choosing a cloud costs no import of the SDK. The ARM scope doubles as the audience of the
``aztoken`` sent to ``/api/tokens``, so one cached token serves discovery and every connection. US Government's
ARM scope is ``management.core.usgovcloudapi.net`` (note ``core.``), unlike its ARM host.

Resolution order: ``--cloud``, then ``AZURE_CLOUD``, then az's own setting (``[cloud] name`` in
``$AZURE_CONFIG_DIR/config``, a hint only), then ``AzureCloud``.
"""

from __future__ import annotations

import configparser
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from bastion_fast.exceptions import UsageError

__all__ = ["CLOUDS", "CLOUD_ENV", "Cloud", "az_config_dir", "get_cloud", "resolve_cloud"]

log = logging.getLogger("bastion_fast.control.clouds")

CLOUD_ENV = "AZURE_CLOUD"


@dataclass(frozen=True)
class Cloud:
    """One Azure cloud's endpoints."""

    name: str
    authority_host: str
    arm_endpoint: str
    arm_scope: str
    ssh_cert_scope: str


CLOUDS: dict[str, Cloud] = {
    "AzureCloud": Cloud(
        name="AzureCloud",
        authority_host="login.microsoftonline.com",
        arm_endpoint="https://management.azure.com/",
        arm_scope="https://management.azure.com/.default",
        ssh_cert_scope="https://pas.windows.net/CheckMyAccess/Linux/.default",
    ),
    "AzureChinaCloud": Cloud(
        name="AzureChinaCloud",
        authority_host="login.chinacloudapi.cn",
        arm_endpoint="https://management.chinacloudapi.cn/",
        arm_scope="https://management.chinacloudapi.cn/.default",
        ssh_cert_scope="https://pas.chinacloudapi.cn/CheckMyAccess/Linux/.default",
    ),
    "AzureUSGovernment": Cloud(
        name="AzureUSGovernment",
        authority_host="login.microsoftonline.us",
        arm_endpoint="https://management.usgovcloudapi.net/",
        arm_scope="https://management.core.usgovcloudapi.net/.default",
        ssh_cert_scope="https://pasff.usgovcloudapi.net/CheckMyAccess/Linux/.default",
    ),
}

# Other spellings people use: azure-core's AzureClouds members and short names.
_ALIASES = {
    "azurecloud": "AzureCloud",
    "public": "AzureCloud",
    "azure_public_cloud": "AzureCloud",
    "azurechinacloud": "AzureChinaCloud",
    "china": "AzureChinaCloud",
    "azure_china_cloud": "AzureChinaCloud",
    "azureusgovernment": "AzureUSGovernment",
    "usgov": "AzureUSGovernment",
    "usgovernment": "AzureUSGovernment",
    "azure_us_government": "AzureUSGovernment",
}


def get_cloud(name: str) -> Cloud:
    """Look a cloud up by name (case-insensitive, aliases accepted).

    Raises:
        UsageError: unknown cloud (the message lists the known ones).
    """
    canonical = _ALIASES.get(name.strip().lower())
    if canonical is None:
        raise UsageError(
            f"Unknown cloud {name!r}.",
            hint=f"Use --cloud with one of: {', '.join(CLOUDS)} (or set {CLOUD_ENV}).",
        )
    return CLOUDS[canonical]


def az_config_dir(env: Mapping[str, str] | None = None) -> Path:
    """az's configuration directory: ``$AZURE_CONFIG_DIR`` or ``~/.azure``."""
    env = os.environ if env is None else env
    configured = env.get("AZURE_CONFIG_DIR", "").strip()
    return Path(configured).expanduser() if configured else Path.home() / ".azure"


def _az_cloud_hint(env: Mapping[str, str]) -> str | None:
    path = az_config_dir(env) / "config"
    parser = configparser.ConfigParser()
    try:
        with path.open(encoding="utf-8-sig") as fh:
            parser.read_file(fh)
    except (OSError, configparser.Error, UnicodeDecodeError):
        return None
    name = parser.get("cloud", "name", fallback="").strip()
    return name or None


def resolve_cloud(name: str | None = None, *, env: Mapping[str, str] | None = None) -> Cloud:
    """The cloud to use: explicit name, ``AZURE_CLOUD``, az's configured cloud, else public Azure."""
    env = os.environ if env is None else env
    if name:
        return get_cloud(name)
    from_env = env.get(CLOUD_ENV, "").strip()
    if from_env:
        return get_cloud(from_env)
    hint = _az_cloud_hint(env)
    if hint:
        canonical = _ALIASES.get(hint.lower())
        if canonical is not None:
            log.debug("using az's configured cloud %s", canonical)
            return CLOUDS[canonical]
        log.warning("az is configured for cloud %r, which bastion-fast does not know; using AzureCloud "
                    "(pass --cloud to choose).", hint)
    return CLOUDS["AzureCloud"]
