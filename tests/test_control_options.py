"""The shared connection flags (az spelling), their conversion to ConnectionOptions, and target syntax rules."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from types import SimpleNamespace

import pytest

from bastion_fast.cli._options import add_connection_options, add_target_options, options_from_args
from bastion_fast.control.models import TunnelTarget
from bastion_fast.control.targets import host_connect_resource_id, parse_ip_address, validate_target
from bastion_fast.exceptions import UsageError
from tests._control_scripted import RG, SUB, VM_ID, VMSS_INSTANCE_ID, clean_env  # noqa: F401

pytestmark = pytest.mark.usefixtures("clean_env")
BASTION_ID = f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Network/bastionHosts/bh1"


def parser(command: str = "tunnel", *, required: bool = True, default: int | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bastion-fast")
    p.set_defaults(command=command)
    add_connection_options(p)
    add_target_options(p, resource_port_required=required, default_port=default)
    return p


def opts(argv: list[str], **kw: object):  # type: ignore[no-untyped-def]
    return options_from_args(parser(**kw).parse_args(argv))  # type: ignore[arg-type]


def test_az_flags_byte_for_byte():
    o = opts(["-n", "bh1", "-g", RG, "--subscription", SUB, "--target-resource-id", VM_ID, "--resource-port", "22",
              "--auth", "Static", "--tenant", "t", "--client-id", "c", "--cloud", "azureusgovernment",
              "--arm-endpoint", "https://127.0.0.1:9", "--ca-bundle", "/tmp/ca.pem"])
    assert (o.name, o.resource_group, o.subscription) == ("bh1", RG, SUB)
    assert o.target == TunnelTarget(VM_ID, None, 22)
    assert (o.auth, o.tenant, o.client_id, o.cloud) == ("static", "t", "c", "AzureUSGovernment")
    assert (o.arm_endpoint, o.ca_bundle, o.command) == ("https://127.0.0.1:9", "/tmp/ca.pem", "tunnel")
    long = opts(["--name", "bh1", "--resource-group", RG, "--target-ip-address", "10.0.0.4", "--resource-port",
                 "3389"])
    assert long.target == TunnelTarget(None, "10.0.0.4", 3389) and long.auth == "default"


def test_ids_supplies_name_group_subscription():
    o = opts(["--ids", BASTION_ID, "--target-resource-id", VM_ID, "--resource-port", "22"])
    assert (o.name, o.resource_group, o.subscription) == ("bh1", RG, SUB)
    same = opts(["--ids", BASTION_ID, "-n", "BH1", "--target-resource-id", VM_ID, "--resource-port", "22"])
    assert same.name == "bh1"
    with pytest.raises(UsageError) as info:
        opts(["--ids", BASTION_ID, "-g", "other", "--target-resource-id", VM_ID, "--resource-port", "22"])
    assert str(info.value) == "--ids and -g/--resource-group disagree ('rg-bastion' vs 'other')."


def test_missing_name_and_group():
    with pytest.raises(UsageError) as info:
        opts(["--target-resource-id", VM_ID, "--resource-port", "22"])
    assert str(info.value) == "the following arguments are required: -n/--name, -g/--resource-group"
    assert "--ids" in (info.value.hint or "")
    with pytest.raises(UsageError) as info:
        opts(["-n", "bh1", "--target-resource-id", VM_ID, "--resource-port", "22"])
    assert str(info.value) == "the following arguments are required: -g/--resource-group"


def test_az_default_group_is_honoured(clean_env: Path):  # noqa: F811
    (clean_env / "config").write_text("[defaults]\ngroup = rg-from-az\n")
    assert opts(["-n", "bh1", "--target-resource-id", VM_ID, "--resource-port", "22"]).resource_group == "rg-from-az"


def test_resource_port_required_for_tunnel_defaulted_for_ssh():
    with pytest.raises(UsageError) as info:
        opts(["-n", "bh1", "-g", RG, "--target-resource-id", VM_ID])
    assert str(info.value) == "the following arguments are required: --resource-port"
    ssh = opts(["-n", "bh1", "-g", RG, "--target-resource-id", VM_ID], command="ssh", required=False, default=22)
    assert ssh.target.resource_port == 22 and ssh.command == "ssh" and ssh.developer_allowed
    rdp = opts(["-n", "bh1", "-g", RG, "--target-resource-id", VM_ID], command="rdp", required=False, default=3389)
    assert rdp.target.resource_port == 3389 and not rdp.developer_allowed


def test_profile_prefills_but_flags_win():
    args = parser().parse_args(["-g", "flag-rg"])
    args.profile = {"bastion": "bh-prof", "rg": "prof-rg", "target_resource_id": VM_ID, "resource_port": "2222",
                    "auth": "CLI", "cloud": "AzureChinaCloud"}
    o = options_from_args(args)
    assert (o.name, o.resource_group, o.target.resource_port, o.auth, o.cloud) == (
        "bh-prof", "flag-rg", 2222, "cli", "AzureChinaCloud")
    args2 = parser().parse_args([])
    args2.profile = SimpleNamespace(name="bh2", resource_group="rg2", target_ip_address="10.0.0.5",
                                    resource_port=22)
    assert options_from_args(args2).target == TunnelTarget(None, "10.0.0.5", 22)


def test_env_arm_endpoint(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("BASTION_FAST_ARM_ENDPOINT", "https://127.0.0.1:4443")
    assert opts(["-n", "b", "-g", RG, "--target-resource-id", VM_ID, "--resource-port", "22"]).arm_endpoint == \
        "https://127.0.0.1:4443"
    with pytest.raises(UsageError, match="must be an https:// URL"):
        opts(["-n", "b", "-g", RG, "--target-resource-id", VM_ID, "--resource-port", "22",
              "--arm-endpoint", "http://x"])


def test_bad_auth_and_cloud_values():
    with pytest.raises(SystemExit):  # argparse's own choice check, exit 2
        parser().parse_args(["--auth", "password"])
    args = parser().parse_args(["-n", "b", "-g", RG, "--target-resource-id", VM_ID, "--resource-port", "22"])
    args.profile = {"auth": "password"}
    with pytest.raises(UsageError, match="Unknown --auth 'password'"):
        options_from_args(args)
    with pytest.raises(UsageError, match="Unknown cloud 'Mars'"):
        opts(["-n", "b", "-g", RG, "--target-resource-id", VM_ID, "--resource-port", "22", "--cloud", "Mars"])


# -- targets ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("resource_id", "ip", "port", "message"),
    [
        (None, None, 22, "Please provide either --target-resource-id or --target-ip-address."),
        (VM_ID, "10.0.0.4", 22, "--target-resource-id and --target-ip-address cannot be used together."),
        (None, "10.0.0.4", 8080,
         "Custom ports are not allowed with --target-ip-address (got --resource-port 8080)."),
        (None, "10.0.0.400", 22, "--target-ip-address '10.0.0.400' is not a valid IP address."),
        (None, "vm1.contoso.local", 22, "--target-ip-address 'vm1.contoso.local' is not a valid IP address."),
        (None, " 10.0.0.4", 22, "--target-ip-address ' 10.0.0.4' contains spaces."),
        (VM_ID, None, 0, "--resource-port 0 is not a TCP port."),
        (VM_ID, None, 70000, "--resource-port 70000 is not a TCP port."),
        (f"/subscriptions/{SUB}/resourceGroups/rg", None, 22,
         f"--target-resource-id '/subscriptions/{SUB}/resourceGroups/rg' is not a valid resource id."),
        ("vm1", None, 22, "--target-resource-id 'vm1' is not a valid resource id."),
        ("https://portal.azure.com/#@x/resource" + VM_ID, None, 22, "is not a valid resource id."),
    ],
)
def test_target_rules(resource_id: str | None, ip: str | None, port: int, message: str):
    with pytest.raises(UsageError) as info:
        validate_target(resource_id, ip, port)
    assert message in str(info.value)
    assert info.value.hint


def test_valid_targets(caplog: pytest.LogCaptureFixture):
    with caplog.at_level(logging.WARNING):
        assert validate_target(VM_ID, None, 22).resource_id == VM_ID
        assert validate_target(VMSS_INSTANCE_ID, None, 8080).resource_port == 8080
        assert validate_target(f" {VM_ID} ", None, 1).resource_id == VM_ID
        assert validate_target(None, "10.0.0.4", 3389).ip_address == "10.0.0.4"
    assert caplog.text == ""
    assert parse_ip_address("fd00::0004") == "fd00::4"


def test_suspicious_ids_warn_but_pass(caplog: pytest.LogCaptureFixture):
    vmss = VMSS_INSTANCE_ID.rsplit("/virtualMachines/", 1)[0]
    nic = f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.Network/networkInterfaces/nic1"
    with caplog.at_level(logging.WARNING):
        validate_target(vmss, None, 22)
        validate_target(nic, None, 22)
    assert "append /virtualMachines/{instanceId}" in caplog.text
    assert "not a virtual machine" in caplog.text


def test_host_connect_resource_id():
    assert host_connect_resource_id(SUB, RG, "10.0.0.4") == (
        f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Network/bh-hostConnect/10.0.0.4")
