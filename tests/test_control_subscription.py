"""Subscription resolution order (flag, env, az profile with BOM), ``--ids`` parsing, and cloud selection."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bastion_fast.control.clouds import CLOUDS, get_cloud, resolve_cloud
from bastion_fast.control.subscription import parse_bastion_id, resolve_subscription
from bastion_fast.exceptions import UsageError
from tests._control_scripted import clean_env  # noqa: F401 - fixture

pytestmark = pytest.mark.usefixtures("clean_env")

SUB_A = "aaaaaaaa-0000-0000-0000-000000000001"
SUB_B = "bbbbbbbb-0000-0000-0000-000000000002"


def write_profile(config: Path, *, bom: bool = True, default: str = SUB_B) -> None:
    data = {
        "installationId": "x",
        "subscriptions": [
            {"id": SUB_A, "name": "Dev", "isDefault": default == SUB_A, "tenantId": "tenant-a"},
            {"id": SUB_B, "name": "Prod", "isDefault": default == SUB_B, "tenantId": "tenant-b"},
            {"id": "cccccccc-0000-0000-0000-000000000003", "name": "Twin", "isDefault": False},
            {"id": "dddddddd-0000-0000-0000-000000000004", "name": "twin", "isDefault": False},
        ],
    }
    raw = json.dumps(data).encode()
    (config / "azureProfile.json").write_bytes((b"\xef\xbb\xbf" if bom else b"") + raw)


def test_flag_wins_over_env_and_profile(clean_env: Path, monkeypatch: pytest.MonkeyPatch):  # noqa: F811
    write_profile(clean_env)
    monkeypatch.setenv("AZURE_SUBSCRIPTION_ID", SUB_B)
    sub = resolve_subscription(SUB_A)
    assert (sub.id, sub.source, sub.tenant) == (SUB_A, "--subscription", "tenant-a")


def test_env_wins_over_profile(clean_env: Path, monkeypatch: pytest.MonkeyPatch):  # noqa: F811
    write_profile(clean_env, default=SUB_A)
    monkeypatch.setenv("AZURE_SUBSCRIPTION_ID", SUB_B)
    assert resolve_subscription(None).id == SUB_B


@pytest.mark.parametrize("bom", [True, False])
def test_az_profile_default_with_or_without_bom(clean_env: Path, bom: bool):  # noqa: F811
    write_profile(clean_env, bom=bom)
    sub = resolve_subscription(None)
    assert (sub.id, sub.source, sub.tenant) == (SUB_B, "az CLI default subscription", "tenant-b")


def test_subscription_by_name_from_profile(clean_env: Path):  # noqa: F811
    write_profile(clean_env)
    assert resolve_subscription("dev").id == SUB_A
    with pytest.raises(UsageError, match="matches 2 subscriptions"):
        resolve_subscription("TWIN")
    with pytest.raises(UsageError) as info:
        resolve_subscription("Nope")
    assert str(info.value) == ("--subscription 'Nope' is neither a subscription id nor the name of a subscription "
                               "az knows.")


def test_no_subscription_anywhere_is_a_clear_error(clean_env: Path):  # noqa: F811
    with pytest.raises(UsageError) as info:
        resolve_subscription(None)
    assert str(info.value) == "No subscription chosen."
    hint = info.value.hint or ""
    assert "--subscription" in hint and "AZURE_SUBSCRIPTION_ID" in hint and "az account set" in hint


def test_broken_profile_is_ignored(clean_env: Path, caplog: pytest.LogCaptureFixture):  # noqa: F811
    (clean_env / "azureProfile.json").write_text("{not json")
    with pytest.raises(UsageError, match="No subscription chosen"):
        resolve_subscription(None)
    assert "not valid JSON" in caplog.text


def test_parse_bastion_id():
    rid = f"/subscriptions/{SUB_A}/resourceGroups/My-RG/providers/Microsoft.Network/bastionHosts/bh1"
    parsed = parse_bastion_id(rid)
    assert (parsed.subscription, parsed.resource_group, parsed.name) == (SUB_A, "My-RG", "bh1")
    assert parse_bastion_id(rid.lower() + "/").name == "bh1"


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("/subscriptions/x/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm", "is not a Bastion host"),
        ("/subscriptions/x/resourceGroups/rg", "is not a Bastion host"),
        ("a b", "exactly one"),
    ],
)
def test_parse_bastion_id_rejects(value: str, text: str):
    with pytest.raises(UsageError, match=text):
        parse_bastion_id(value)


# -- clouds ----------------------------------------------------------------------------------------------------------


def test_cloud_table():
    us = CLOUDS["AzureUSGovernment"]
    assert us.arm_scope == "https://management.core.usgovcloudapi.net/.default"
    assert us.arm_endpoint == "https://management.usgovcloudapi.net/"
    assert us.authority_host == "login.microsoftonline.us"
    assert us.ssh_cert_scope == "https://pasff.usgovcloudapi.net/CheckMyAccess/Linux/.default"
    cn = CLOUDS["AzureChinaCloud"]
    assert (cn.authority_host, cn.arm_scope) == ("login.chinacloudapi.cn", "https://management.chinacloudapi.cn/.default")
    pub = CLOUDS["AzureCloud"]
    assert (pub.arm_endpoint, pub.arm_scope) == ("https://management.azure.com/", "https://management.azure.com/.default")


def test_cloud_table_matches_azure_core():
    from azure.core import AzureClouds
    from azure.identity import AzureAuthorityHosts
    from azure.mgmt.core.tools import get_arm_endpoints

    table = (
        ("AzureCloud", AzureClouds.AZURE_PUBLIC_CLOUD, AzureAuthorityHosts.AZURE_PUBLIC_CLOUD),
        ("AzureChinaCloud", AzureClouds.AZURE_CHINA_CLOUD, AzureAuthorityHosts.AZURE_CHINA),
        ("AzureUSGovernment", AzureClouds.AZURE_US_GOVERNMENT, AzureAuthorityHosts.AZURE_GOVERNMENT),
    )
    for ours, theirs, authority in table:
        endpoints = get_arm_endpoints(theirs)
        assert CLOUDS[ours].arm_endpoint == endpoints["resource_manager"]
        assert [CLOUDS[ours].arm_scope] == endpoints["credential_scopes"]
        assert CLOUDS[ours].authority_host == authority


def test_cloud_resolution_order(clean_env: Path, monkeypatch: pytest.MonkeyPatch):  # noqa: F811
    assert resolve_cloud(None).name == "AzureCloud"
    (clean_env / "config").write_text("\ufeff[cloud]\nname = AzureChinaCloud\n", encoding="utf-8")
    assert resolve_cloud(None).name == "AzureChinaCloud"
    monkeypatch.setenv("AZURE_CLOUD", "usgov")
    assert resolve_cloud(None).name == "AzureUSGovernment"
    assert resolve_cloud("azurecloud").name == "AzureCloud"
    assert resolve_cloud("AZURE_CHINA_CLOUD").name == "AzureChinaCloud"


def test_unknown_az_cloud_falls_back_with_warning(clean_env: Path, caplog: pytest.LogCaptureFixture):  # noqa: F811
    (clean_env / "config").write_text("[cloud]\nname = MyAzureStack\n")
    assert resolve_cloud(None).name == "AzureCloud"
    assert "MyAzureStack" in caplog.text


def test_unknown_cloud_flag():
    with pytest.raises(UsageError) as info:
        get_cloud("AzureGermanCloud")
    assert str(info.value) == "Unknown cloud 'AzureGermanCloud'."
    assert "AzureUSGovernment" in (info.value.hint or "")
