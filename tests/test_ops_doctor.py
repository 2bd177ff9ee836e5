"""``doctor`` end to end against an emulated network (hub VNet with the Bastion, peered spoke), plus the caller-side
checks: required AzureBastionSubnet rules, hardening, exposed VMs, ``--fix-public-ips`` both ways, RBAC read
failures, clock skew, target reachability, exit codes 0 / 1 / 3."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from bastion_fast.control.models import TunnelTarget
from bastion_fast.ops.arm import BastionRef, open_arm
from bastion_fast.ops.doctor import DoctorOptions, run_doctor
from bastion_fast.ops.doctor_local import check_local_port, check_proxy, check_tools
from tests import fixtures_emulator
from tests._control_scripted import clean_env  # noqa: F401 - fixture
from tests._ops_helpers import GOOD_BASTION_RULES, NAME, RG, SUB, network, ops_args, ops_env, rid, rule, vm_id

pytestmark = pytest.mark.usefixtures("clean_env")
emulator_state_dir = fixtures_emulator.emulator_state_dir

OPEN_SSH = [rule("AllowSshFromInternet", 100, "Inbound", "Allow", "Internet", "*", "22")]


def findings(doc: dict) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for f in doc["findings"]:
        out.setdefault(f["check"], []).append(f)
    return out


def severity(doc: dict, check: str) -> set[str]:
    return {f["severity"] for f in findings(doc).get(check, [])}


async def test_clean_network_exits_0(emulator_state_dir: Path, capsys, monkeypatch) -> None:
    async with ops_env(emulator_state_dir, capsys, monkeypatch, net=network()) as env:
        result = await env.cli("doctor", *env.args("--skip-caller-checks", "--output", "json"))
    assert result.code == 0, result.out
    doc = result.json()
    assert doc["exitCode"] == 0 and doc["summary"]["error"] == 0 and doc["summary"]["unchecked"] == 0
    assert severity(doc, "nsg.required") == {"ok"}
    assert severity(doc, "nsg.hardening") == {"ok"}
    assert severity(doc, "vms.exposure") == {"ok"}
    assert "2 VM(s)" in findings(doc)["vms.exposure"][0]["title"]
    assert doc["publicIps"] == []


async def test_broken_bastion_nsg_is_an_error_with_the_fix(emulator_state_dir: Path, capsys, monkeypatch) -> None:
    broken = [r for r in GOOD_BASTION_RULES if r["name"] not in {"AllowGatewayManagerInbound", "DenyVnetOutbound"}]
    broken.append(rule("DenyHttpsFromInternet", 100, "Inbound", "Deny", "Internet", "*", "443"))
    async with ops_env(emulator_state_dir, capsys, monkeypatch, net=network(bastion_rules=broken)) as env:
        result = await env.cli("doctor", *env.args("--skip-caller-checks", "--output", "json"))
    assert result.code == 1
    doc = findings(result.json())
    internet = doc["nsg.inbound.443.internet"][0]
    assert internet["severity"] == "error" and "DenyHttpsFromInternet" in internet["detail"]
    assert "--source-address-prefixes Internet --destination-port-ranges 443" in internet["fix"]
    assert "below 100" in internet["fix"]
    gateway = doc["nsg.inbound.443.gatewaymanager"][0]
    assert gateway["severity"] == "error" and "DenyAllInBound" in gateway["detail"]
    assert "nsg.inbound.443.azureloadbalancer" not in doc  # the default rule allows it
    hardening = doc["nsg.hardening"][0]
    assert hardening["severity"] == "warning"
    assert "AllowVnetOutBound" in hardening["detail"] and "DenyVnetOutbound" in hardening["fix"]
    assert "1-21" in hardening["title"] or "0-21" in hardening["title"]


async def test_table_output(emulator_state_dir: Path, capsys, monkeypatch) -> None:
    broken = [r for r in GOOD_BASTION_RULES if r["name"] != "AllowHttpOutbound"]
    broken.append(rule("DenyInternetOut", 200, "Outbound", "Deny", "*", "Internet", "*", "*"))
    monkeypatch.setenv("COLUMNS", "300")  # one table row per line
    async with ops_env(emulator_state_dir, capsys, monkeypatch, net=network(bastion_rules=broken)) as env:
        result = await env.cli("doctor", *env.args("--skip-caller-checks", "--output", "table"))
    assert result.code == 1
    text = " ".join(result.out.split())
    assert "Outbound TCP 80 to Internet is blocked" in text
    assert "exit code 1" in text


async def test_exposed_vm_and_fix_declined(emulator_state_dir: Path, capsys, monkeypatch) -> None:
    net = network(spoke_rules=OPEN_SSH, vm2_public_ip="20.30.40.50")
    async with ops_env(emulator_state_dir, capsys, monkeypatch, net=net) as env:
        nic = env.emu.arm_state.get(rid("networkInterfaces", "vm2-nic"))
        etag = nic["etag"]
        result = await env.cli("doctor", *env.args("--skip-caller-checks", "--fix-public-ips", "--output", "json"),
                               stdin="n\n")
        assert result.code == 1
        doc = result.json()
        by = findings(doc)
        assert by["vms.inbound.22"][0]["severity"] == "error"
        assert "vm2" in by["vms.inbound.22"][0]["title"] and "AllowSshFromInternet" in by["vms.inbound.22"][0]["detail"]
        assert "vms.inbound.3389" not in by
        assert by["vms.public_ip"][0]["severity"] == "warning" and "20.30.40.50" in by["vms.public_ip"][0]["title"]
        assert [p["vm"] for p in doc["publicIps"]] == ["vm2"]
        assert "20.30.40.50" in result.err and "Disassociate 1 public IP(s)? [y/N]" in result.err
        assert "Nothing was changed" in result.err
        assert doc["fixed"] == []
        nic = env.emu.arm_state.get(rid("networkInterfaces", "vm2-nic"))
        assert nic["etag"] == etag
        assert nic["properties"]["ipConfigurations"][0]["properties"]["publicIPAddress"]["id"].endswith("/pip-vm2")


async def test_fix_public_ips_accepted(emulator_state_dir: Path, capsys, monkeypatch) -> None:
    net = network(spoke_rules=OPEN_SSH, vm2_public_ip="20.30.40.50")
    async with ops_env(emulator_state_dir, capsys, monkeypatch, net=net) as env:
        result = await env.cli("doctor", *env.args("--skip-caller-checks", "--fix-public-ips", "--output", "json"),
                               stdin="y\n")
        doc = result.json()
        assert [(f["vm"], f["ok"]) for f in doc["fixed"]] == [("vm2", True)]
        nic = env.emu.arm_state.get(rid("networkInterfaces", "vm2-nic"))
        assert "publicIPAddress" not in nic["properties"]["ipConfigurations"][0]["properties"]
        assert nic["properties"]["provisioningState"] == "Succeeded"
        assert env.emu.arm_state.get(rid("publicIPAddresses", "pip-vm2")) is not None  # kept, only detached
        # The re-check after the fix: no public IP left; the NSG rule is still worth removing, but not an error.
        by = findings(doc)
        assert "vms.public_ip" not in by
        assert by["vms.inbound.22"][0]["severity"] == "warning"
        assert result.code == 0, result.out
        again = await env.cli("doctor", *env.args("--skip-caller-checks", "--fix-public-ips", "--output", "json"))
        assert "no VM in the Bastion's reach has a public IP" in again.text
        assert "[y/N]" not in again.err


async def test_unreadable_nsg_names_the_missing_role_and_exits_3(emulator_state_dir: Path, capsys,
                                                                monkeypatch) -> None:
    net = network(forbidden=[rid("networkSecurityGroups", "nsg-bastion")])
    async with ops_env(emulator_state_dir, capsys, monkeypatch, net=net) as env:
        result = await env.cli("doctor", *env.args("--skip-caller-checks", "--output", "json"))
    assert result.code == 3, result.out
    doc = result.json()
    rbac = [f for f in doc["findings"] if f["check"].startswith("rbac.")]
    assert len(rbac) == 1
    assert rbac[0]["severity"] == "unchecked"
    assert "missing role Reader" in rbac[0]["title"] and "nsg-bastion" in rbac[0]["title"]
    assert rbac[0]["fix"].startswith('az role assignment create --role "Reader"')
    assert rid("networkSecurityGroups", "nsg-bastion") in rbac[0]["fix"]
    assert doc["summary"]["error"] == 0


async def test_bastion_itself_unreadable_is_an_error(emulator_state_dir: Path, capsys, monkeypatch) -> None:
    async with ops_env(emulator_state_dir, capsys, monkeypatch, net=network()) as env:
        result = await env.cli("doctor", *[a if a != NAME else "no-such-bastion" for a in env.args()],
                               "--skip-caller-checks", "--output", "json")
    assert result.code == 1
    assert any(f["severity"] == "error" and "does not exist" in f["title"] for f in result.json()["findings"])


async def test_targets(emulator_state_dir: Path, capsys, monkeypatch) -> None:
    async with ops_env(emulator_state_dir, capsys, monkeypatch, net=network(), enable_ip_connect=False) as env:
        inside = await env.cli("doctor", *env.args("--skip-caller-checks", "--target-resource-id", vm_id("vm2"),
                                                    "--output", "json"))
        assert inside.code == 0, inside.out
        assert severity(inside.json(), "target.reachable") == {"ok"}
        outside = await env.cli("doctor", *env.args("--skip-caller-checks", "--target-resource-id",
                                                     vm_id("elsewhere", "rg-other"), "--output", "json"))
        assert outside.code == 1
        assert severity(outside.json(), "target.reachable") == {"error"}
        by_ip = await env.cli("doctor", *env.args("--skip-caller-checks", "--target-ip-address", "10.1.0.4",
                                                   "--output", "json"))
        assert by_ip.code == 1
        assert "--ip-connect true" in findings(by_ip.json())["target.ip_connect"][0]["fix"]


async def test_clock_skew_against_the_date_header(emulator_state_dir: Path, capsys, monkeypatch) -> None:
    async with ops_env(emulator_state_dir, capsys, monkeypatch, net=network()) as env, \
            await open_arm(ops_args(env.emu)()) as arm:
        ref = BastionRef(SUB, RG, NAME)
        fine = await run_doctor(arm, ref, DoctorOptions(check_caller=False))
        ahead = await run_doctor(arm, ref, DoctorOptions(check_caller=False, clock=lambda: time.time() + 600))
        behind = await run_doctor(arm, ref, DoctorOptions(check_caller=False, clock=lambda: time.time() - 90))
    ok, fast, slow = (next(f for f in r.findings if f.check == "caller.clock") for r in (fine, ahead, behind))
    assert ok.severity == "ok"
    assert fast.severity == "error" and "ahead of" in fast.title and ahead.exit_code == 1
    assert slow.severity == "warning" and "off Azure" in slow.title


async def test_developer_sku(emulator_state_dir: Path, capsys, monkeypatch) -> None:
    async with ops_env(emulator_state_dir, capsys, monkeypatch, sku="Developer") as env:
        result = await env.cli("doctor", *env.args("--skip-caller-checks", "--output", "json"))
    doc = result.json()
    assert severity(doc, "bastion.sku") == {"warning"}
    assert not any(f["check"].startswith("nsg.") for f in doc["findings"])
    assert result.code == 0


async def test_caller_checks(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        [finding] = check_local_port(port)
        assert finding.severity == "error" and "already in use" in finding.title
    [free] = check_local_port(port)
    assert free.severity == "ok"
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        dead = closed.getsockname()[1]
    [proxy] = await check_proxy("management.azure.com", {"HTTPS_PROXY": f"http://user:pw@127.0.0.1:{dead}"})
    assert proxy.severity == "error" and "pw" not in proxy.title and "***@127.0.0.1" in proxy.title
    [bypass] = await check_proxy("management.azure.com", {"HTTPS_PROXY": "http://127.0.0.1:1",
                                                           "NO_PROXY": ".azure.com"})
    assert bypass.severity == "info"
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        [up] = await check_proxy("management.azure.com",
                                 {"https_proxy": f"http://127.0.0.1:{listening.getsockname()[1]}"})
        assert up.severity == "info" and "goes through the proxy" in up.title
    tools = {f.check: f for f in check_tools(lambda name: None)}
    assert tools["caller.tools.ssh"].severity == "warning" and tools["caller.tools.scp"].severity == "warning"
    found = {f.check: f for f in check_tools(lambda name: f"/opt/bin/{name}")}
    assert found["caller.tools.ssh"].severity == "ok" and found["caller.tools.ssh"].detail == "/opt/bin/ssh"


async def test_caller_checks_in_the_cli(emulator_state_dir: Path, capsys, monkeypatch) -> None:
    """Without --skip-caller-checks the caller's findings are part of the report (port given: checked)."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        async with ops_env(emulator_state_dir, capsys, monkeypatch, net=network()) as env:
            result = await env.cli("doctor", *env.args("--port", str(busy.getsockname()[1]), "--output", "json"))
    doc = result.json()
    assert severity(doc, "caller.port") == {"error"} and result.code == 1
    assert severity(doc, "caller.tls.ca") == {"ok"}  # the emulator's CA bundle loads
    assert {"caller.proxy", "caller.tools.ssh", "caller.tools.rdp", "caller.clock"} <= set(findings(doc))


def test_target_with_port_rule() -> None:
    """IP connect reaches 22/3389 only; the doctor says so even before asking Azure."""
    from bastion_fast.ops.doctor import _check_target_rules, _Run
    from bastion_fast.ops.findings import DoctorReport
    from bastion_fast.ops.show import BastionView

    view = BastionView.from_arm({"sku": {"name": "Standard"}, "properties": {"enableIpConnect": True}},
                                BastionRef(SUB, RG, NAME))
    run = _Run(arm=None, ref=view.ref, report=DoctorReport("b"))
    _check_target_rules(run, view, TunnelTarget(None, "10.0.0.4", 5432))
    assert [f.check for f in run.report.findings] == ["target.port"]


def test_privileged_port_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    from bastion_fast.ops import doctor_local

    def refuse(self: socket.socket, address: object) -> None:
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(socket.socket, "bind", refuse)
    [finding] = check_local_port(22)
    assert finding.severity == "error" and "Not allowed to listen on 127.0.0.1:22" in finding.title
    assert "1024 or higher" in (finding.fix or "")
    monkeypatch.setattr(doctor_local.os, "geteuid", lambda: 1000, raising=False)
    monkeypatch.setattr(doctor_local, "_unprivileged_port_start", lambda: 1024)
    [info] = check_local_port(None)
    assert info.severity == "info" and "below 1024" in info.title
