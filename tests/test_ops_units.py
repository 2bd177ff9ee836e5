"""The pure parts of the administration commands: az booleans and durations, NSG evaluation, the configure plan,
show's verdicts, output format choice, the confirmation prompt and doctor's exit codes."""

from __future__ import annotations

import io
from datetime import timedelta

import pytest

from bastion_fast.exceptions import UnsupportedSku
from bastion_fast.ops import nsg
from bastion_fast.ops.arm import BastionRef, arm_failure, role_for_action
from bastion_fast.ops.configure import ConfigureRequest, plan_changes, pricing_warning
from bastion_fast.ops.findings import DoctorReport, Finding
from bastion_fast.ops.links import expiry_tag, link_token
from bastion_fast.ops.output import choose_format, confirm
from bastion_fast.ops.sessions import format_duration
from bastion_fast.ops.show import BastionView, verdicts
from bastion_fast.ops.values import parse_bool, parse_duration

REF = BastionRef("sub", "rg", "b")


@pytest.mark.parametrize("word", ["true", "TRUE", "yes", "Y", "1", "t", "on"])
def test_true_words(word: str) -> None:
    assert parse_bool(word) is True


@pytest.mark.parametrize("word", ["false", "No", "n", "0", "F", "off"])
def test_false_words(word: str) -> None:
    assert parse_bool(word) is False


@pytest.mark.parametrize("word", ["", "maybe", "2", "yess"])
def test_not_booleans(word: str) -> None:
    with pytest.raises(ValueError, match="true/false"):
        parse_bool(word)


def test_durations() -> None:
    assert parse_duration("24h") == timedelta(hours=24)
    assert parse_duration("30m") == timedelta(minutes=30)
    assert parse_duration("90d") == timedelta(days=90)
    assert parse_duration("2w") == timedelta(weeks=2)
    assert parse_duration("6") == timedelta(hours=6)
    for bad in ("0h", "-1d", "1y", "soon"):
        with pytest.raises(ValueError):
            parse_duration(bad)


def test_port_sets() -> None:
    a = nsg.PortSet.of("20-30", "22", "100")
    assert str(a) == "20-30, 100"
    assert str(a - nsg.PortSet.of("22")) == "20-21, 23-30, 100"
    assert str(a & nsg.PortSet.of("25-200")) == "25-30, 100"
    assert str(nsg.ALL_PORTS - nsg.PortSet.of("0-65534")) == "65535"
    assert 22 in a and 99 not in a
    assert str(nsg.PortSet.of("*")) == "all ports"


def _rules(*rules: dict) -> list[nsg.Rule]:
    return nsg.rules_of({"properties": {"securityRules": [
        {"name": r["name"], "properties": {k: v for k, v in r.items() if k != "name"}} for r in rules]}})


SUBNET = nsg.Endpoint.net("VirtualNetwork", "10.0.254.0/26")


def test_first_matching_rule_decides() -> None:
    rules = _rules(
        {"name": "deny", "priority": 100, "direction": "Inbound", "access": "Deny", "protocol": "Tcp",
         "sourceAddressPrefix": "Internet", "destinationAddressPrefix": "*", "destinationPortRange": "443"},
        {"name": "allow", "priority": 200, "direction": "Inbound", "access": "Allow", "protocol": "*",
         "sourceAddressPrefix": "*", "destinationAddressPrefix": "*", "destinationPortRange": "*"},
    )
    verdict = nsg.evaluate(rules, direction="Inbound", protocol="Tcp", port=443, source=nsg.Endpoint("Internet"),
                           destination=SUBNET)
    assert (verdict.outcome, verdict.rule) == ("denied", "deny")
    other = nsg.evaluate(rules, direction="Inbound", protocol="Tcp", port=443,
                         source=nsg.Endpoint("GatewayManager"), destination=SUBNET)
    assert (other.outcome, other.rule) == ("allowed", "allow")
    udp = nsg.evaluate(rules, direction="Inbound", protocol="Udp", port=443, source=nsg.Endpoint("Internet"),
                       destination=SUBNET)
    assert udp.outcome == "allowed"


def test_default_rules_close_the_list() -> None:
    verdict = nsg.evaluate(_rules(), direction="Inbound", protocol="Tcp", port=443, source=nsg.Endpoint("Internet"),
                           destination=SUBNET)
    assert (verdict.outcome, verdict.rule) == ("denied", "DenyAllInBound")
    lb = nsg.evaluate(_rules(), direction="Inbound", protocol="Tcp", port=443,
                      source=nsg.Endpoint("AzureLoadBalancer"), destination=SUBNET)
    assert (lb.outcome, lb.rule) == ("allowed", "AllowAzureLoadBalancerInBound")


def test_office_range_only_is_partial() -> None:
    rules = _rules({"name": "office", "priority": 100, "direction": "Inbound", "access": "Allow", "protocol": "Tcp",
                    "sourceAddressPrefixes": ["198.51.100.0/24"], "destinationAddressPrefix": "*",
                    "destinationPortRange": "443"})
    verdict = nsg.evaluate(rules, direction="Inbound", protocol="Tcp", port=443, source=nsg.Endpoint("Internet"),
                           destination=SUBNET)
    assert verdict.outcome == "partial" and verdict.partial_rules == ["office"]


def test_subnet_cidr_destination_covers_the_subnet() -> None:
    rules = _rules({"name": "to-subnet", "priority": 100, "direction": "Inbound", "access": "Allow",
                    "protocol": "Tcp", "sourceAddressPrefix": "GatewayManager",
                    "destinationAddressPrefix": "10.0.254.0/24", "destinationPortRange": "443"})
    verdict = nsg.evaluate(rules, direction="Inbound", protocol="Tcp", port=443,
                           source=nsg.Endpoint("GatewayManager"), destination=SUBNET)
    assert (verdict.outcome, verdict.rule) == ("allowed", "to-subnet")


def test_allowed_ports_toward_the_vnet() -> None:
    hardened = _rules(
        {"name": "ssh-rdp", "priority": 100, "direction": "Outbound", "access": "Allow", "protocol": "*",
         "sourceAddressPrefix": "*", "destinationAddressPrefix": "VirtualNetwork",
         "destinationPortRanges": ["22", "3389"]},
        {"name": "deny-vnet", "priority": 4000, "direction": "Outbound", "access": "Deny", "protocol": "*",
         "sourceAddressPrefix": "*", "destinationAddressPrefix": "VirtualNetwork", "destinationPortRange": "*"},
    )
    opened, why = nsg.allowed_ports(hardened, direction="Outbound", protocol="Tcp", source=SUBNET,
                                    destination=nsg.Endpoint("VirtualNetwork"))
    assert str(opened) == "22, 3389" and why == ["ssh-rdp (22, 3389)"]
    sneaky = _rules(
        {"name": "db", "priority": 90, "direction": "Outbound", "access": "Allow", "protocol": "Tcp",
         "sourceAddressPrefix": "*", "destinationAddressPrefix": "10.0.5.0/24", "destinationPortRange": "5432"},
        {"name": "deny-vnet", "priority": 4000, "direction": "Outbound", "access": "Deny", "protocol": "*",
         "sourceAddressPrefix": "*", "destinationAddressPrefix": "VirtualNetwork", "destinationPortRange": "*"},
    )
    opened, why = nsg.allowed_ports(sneaky, direction="Outbound", protocol="Tcp", source=SUBNET,
                                    destination=nsg.Endpoint("VirtualNetwork"))
    assert str(opened) == "5432" and why == ["db (5432)"]


def _host(sku: str, **props: bool) -> dict:
    return {"id": "/x", "sku": {"name": sku}, "properties": {"provisioningState": "Succeeded", **props}}


def test_plan_upgrade_and_features() -> None:
    plan = plan_changes(_host("Basic"), REF, ConfigureRequest(sku="standard", features={"nativeClient": True,
                                                                                       "kerberos": False}))
    assert [(c.key, c.before, c.after) for c in plan.changes] == [("sku", "Basic", "Standard"),
                                                                  ("nativeClient", "off", "on")]
    assert plan.body["sku"]["name"] == "Standard" and plan.body["properties"]["enableTunneling"] is True
    assert plan.body["properties"]["scaleUnits"] == 2
    assert "cannot be downgraded" in pricing_warning(plan) and "Basic to Standard" in pricing_warning(plan)


def test_plan_refusals() -> None:
    with pytest.raises(UnsupportedSku, match="downgrade"):
        plan_changes(_host("Premium"), REF, ConfigureRequest(sku="Standard"))
    with pytest.raises(UnsupportedSku, match="downgrade"):
        plan_changes(_host("Standard"), REF, ConfigureRequest(sku="Basic"))
    with pytest.raises(UnsupportedSku, match="AzureBastionSubnet"):
        plan_changes(_host("Developer"), REF, ConfigureRequest(sku="Standard"))
    with pytest.raises(UnsupportedSku, match="needs the Standard SKU"):
        plan_changes(_host("Basic"), REF, ConfigureRequest(features={"shareableLink": True}))
    with pytest.raises(UnsupportedSku, match="not a Bastion SKU"):
        plan_changes(_host("Basic"), REF, ConfigureRequest(sku="Gold"))
    # Turning a feature off never needs a higher SKU, and same-SKU is no change.
    plan = plan_changes(_host("Standard", enableTunneling=True), REF,
                        ConfigureRequest(sku="Standard", features={"nativeClient": False}))
    assert [(c.key, c.after) for c in plan.changes] == [("nativeClient", "off")]
    assert plan.body["properties"]["enableTunneling"] is False


def test_verdicts() -> None:
    ready = {v.command: v for v in verdicts(BastionView.from_arm(_host("Standard", enableTunneling=True), REF))}
    assert ready["tunnel"].status == "ready" and ready["IP connect"].status == "disabled"
    assert ready["IP connect"].fix == "bastion-fast bastion configure -n b -g rg --ip-connect true"
    dev = {v.command: v for v in verdicts(BastionView.from_arm(_host("Developer"), REF))}
    assert dev["ssh"].status == "ready" and dev["tunnel"].status == "unavailable"
    updating = _host("Standard", enableTunneling=True)
    updating["properties"]["provisioningState"] = "Updating"
    assert {v.status for v in verdicts(BastionView.from_arm(updating, REF))} == {"unavailable"}
    absent = BastionView.from_arm({"sku": {"name": "Premium"}, "properties": {}}, REF)  # ARM omits false flags
    assert absent.features["nativeClient"] is False and absent.features["copyPaste"] is True


def test_choose_format() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert choose_format(None, Tty()) == "table"
    assert choose_format(None, io.StringIO()) == "json"
    assert choose_format("table", io.StringIO()) == "table"


def test_confirm(capsys: pytest.CaptureFixture[str]) -> None:
    assert confirm("Go?", stdin=io.StringIO("y\n")) is True
    assert confirm("Go?", stdin=io.StringIO("YES\n")) is True
    assert confirm("Go?", stdin=io.StringIO("n\n")) is False
    assert confirm("Go?", stdin=io.StringIO("sure\n")) is False
    assert confirm("Go?", stdin=io.StringIO("")) is False
    assert confirm("Go?", assume_yes=True, stdin=io.StringIO("n\n")) is True
    out, err = capsys.readouterr()
    assert out == "" and err.count("Go? [y/N]") == 6


def test_doctor_exit_codes() -> None:
    report = DoctorReport("b")
    report.add(Finding("a", "x", "warning", "w"))
    assert report.exit_code == 0
    report.add(Finding("b", "x", "unchecked", "u"))
    assert report.exit_code == 3
    report.add(Finding("c", "x", "error", "e"))
    assert report.exit_code == 1
    assert [f.severity for f in report.sorted()] == ["error", "unchecked", "warning"]


def test_links_tokens_and_tags() -> None:
    assert link_token("https://bst-1.bastion.azure.com/api/shareable-url/abc-123") == "abc-123"
    assert link_token("abc-123") == "abc-123"
    tag = expiry_tag("abc-123")
    assert tag.startswith("bastion-fast-link-expiry-") and "abc" not in tag[len("bastion-fast-link-expiry-"):]
    assert len(tag) <= 512


def test_format_duration() -> None:
    assert format_duration(62.5) == "1h 02m"
    assert format_duration(0.4) == "0m 24s"
    assert format_duration(None) == "-"


def test_arm_failure_extracts_the_refused_action() -> None:
    from azure.core.exceptions import HttpResponseError

    class Response:
        status_code = 403
        reason = "Forbidden"
        request = None

        def __init__(self) -> None:
            self.headers: dict[str, str] = {}

        def text(self) -> str:
            return ('{"error": {"code": "AuthorizationFailed", "message": "The client \'u\' with object id \'o\' '
                    "does not have authorization to perform action 'Microsoft.Network/bastionHosts/"
                    "getShareableLinks/action' over scope '/subscriptions/s/resourceGroups/rg' or the scope is "
                    'invalid."}}')

    from azure.mgmt.network.models import CloudError

    exc = HttpResponseError(response=Response(), model=CloudError({"error": {"code": "AuthorizationFailed",
                                                                             "message": Response().text()}}))
    exc.status_code = 403
    failure = arm_failure(exc)
    assert failure is not None and failure.forbidden
    assert failure.action == "Microsoft.Network/bastionHosts/getShareableLinks/action"
    assert failure.scope == "/subscriptions/s/resourceGroups/rg"
    assert failure.missing_role().startswith("Network Contributor")
    assert role_for_action("Microsoft.Network/virtualNetworks/read") == "Reader"
