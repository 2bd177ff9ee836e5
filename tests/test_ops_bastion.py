"""``bastion show`` and ``bastion configure`` end to end: the CLI, azure-mgmt-network and the emulator's ARM
(PUT with Azure-AsyncOperation, provisioningState Updating → Succeeded), confirmation both ways, refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import fixtures_emulator
from tests._control_scripted import clean_env  # noqa: F401 - fixture
from tests._ops_helpers import ops_env

pytestmark = pytest.mark.usefixtures("clean_env")
emulator_state_dir = fixtures_emulator.emulator_state_dir


async def test_show_basic_explains_what_to_change(emulator_state_dir: Path, capsys, monkeypatch) -> None:
    async with ops_env(emulator_state_dir, capsys, monkeypatch, sku="Basic", enable_tunneling=False) as env:
        result = await env.cli("bastion", "show", *env.args("--output", "json"))
    assert result.code == 0, result.err
    doc = result.json()
    assert doc["sku"] == "Basic"
    assert doc["provisioningState"] == "Succeeded"
    assert doc["features"]["nativeClient"] is False
    verdicts = {v["command"]: v for v in doc["commands"]}
    assert verdicts["tunnel"]["status"] == "disabled"
    assert "--sku Standard --native-client true" in verdicts["tunnel"]["fix"]
    assert verdicts["shareable links"]["status"] == "disabled"


async def test_show_table_for_a_ready_bastion(emulator_state_dir: Path, capsys, monkeypatch) -> None:
    async with ops_env(emulator_state_dir, capsys, monkeypatch, sku="Standard", enable_tunneling=True,
                       enable_ip_connect=False) as env:
        result = await env.cli("bastion", "show", *env.args("--output", "table"))
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    tunnel = next(line for line in lines if line.strip("│ ").startswith("tunnel"))
    assert "ready" in tunnel
    ip = next(line for line in lines if "IP connect" in line and "disabled" in line)
    assert "disabled" in ip


async def test_configure_answer_no_changes_nothing(emulator_state_dir: Path, capsys, monkeypatch) -> None:
    async with ops_env(emulator_state_dir, capsys, monkeypatch, sku="Basic", enable_tunneling=False) as env:
        etag = env.resource["etag"]
        result = await env.cli("bastion", "configure", *env.args("--sku", "Standard", "--native-client", "true"),
                               stdin="n\n")
        assert result.code == 1
        assert "Pricing" in result.text and "cannot be downgraded" in result.text
        assert "Basic" in result.err and "Standard" in result.err  # the before/after table
        assert "Apply these changes? [y/N]" in result.err
        assert "nothing was changed" in result.text.lower()
        assert env.resource["etag"] == etag
        assert env.resource["sku"]["name"] == "Basic"
        assert env.resource["properties"]["enableTunneling"] is False
        assert result.out == ""


async def test_configure_answer_yes_applies_and_confirms(emulator_state_dir: Path, capsys, monkeypatch) -> None:
    async with ops_env(emulator_state_dir, capsys, monkeypatch, sku="Basic", enable_tunneling=False) as env:
        assert not env.emu.bastion().tunneling_allowed
        result = await env.cli("bastion", "configure",
                               *env.args("--sku", "standard", "--native-client", "yes", "--ip-connect", "1",
                                         "--output", "json"), stdin="y\n")
        assert result.code == 0, result.err
        doc = result.json()
        assert doc["applied"] is True
        assert doc["sku"] == "Standard"
        assert doc["provisioningState"] == "Succeeded"
        changes = {c["setting"]: c for c in doc["changes"]}
        assert set(changes) == {"sku", "nativeClient", "ipConnect"}
        assert all(c["confirmed"] for c in changes.values())
        props = env.resource["properties"]
        assert env.resource["sku"]["name"] == "Standard"
        assert props["enableTunneling"] is True and props["enableIpConnect"] is True
        assert props["provisioningState"] == "Succeeded"
        # The data plane follows: native-client tunnels are now accepted.
        assert env.emu.bastion().tunneling_allowed


async def test_configure_yes_flag_needs_no_answer(emulator_state_dir: Path, capsys, monkeypatch) -> None:
    async with ops_env(emulator_state_dir, capsys, monkeypatch, sku="Standard", enable_shareable_link=False) as env:
        result = await env.cli("bastion", "configure",
                               *env.args("--shareable-link", "t", "--kerberos", "y", "--yes", "--output", "json"))
        assert result.code == 0, result.err
        assert "[y/N] yes (--yes)" in result.err
        props = env.resource["properties"]
        assert props["enableShareableLink"] is True and props["enableKerberos"] is True


async def test_configure_no_input_means_no(emulator_state_dir: Path, capsys, monkeypatch) -> None:
    async with ops_env(emulator_state_dir, capsys, monkeypatch, sku="Standard", enable_ip_connect=False) as env:
        result = await env.cli("bastion", "configure", *env.args("--ip-connect", "true"), stdin="")
        assert result.code == 1
        assert env.resource["properties"]["enableIpConnect"] is False


async def test_configure_refuses_downgrade(emulator_state_dir: Path, capsys, monkeypatch) -> None:
    async with ops_env(emulator_state_dir, capsys, monkeypatch, sku="Premium") as env:
        result = await env.cli("bastion", "configure", *env.args("--sku", "Standard", "--yes"))
        assert result.code == 1
        assert "downgrade" in result.text
        assert "hint:" in result.err and "Traceback" not in result.err
        assert "[y/N]" not in result.err  # refused before asking
        assert env.resource["sku"]["name"] == "Premium"


async def test_configure_refuses_feature_the_sku_lacks(emulator_state_dir: Path, capsys, monkeypatch) -> None:
    async with ops_env(emulator_state_dir, capsys, monkeypatch, sku="Basic") as env:
        result = await env.cli("bastion", "configure", *env.args("--ip-connect", "true", "--yes"))
        assert result.code == 1
        assert "needs the Standard SKU" in result.text
        assert "--sku Standard" in result.text
        assert env.resource["properties"]["enableIpConnect"] is False


async def test_configure_bad_boolean_is_usage_error(emulator_state_dir: Path, capsys, monkeypatch) -> None:
    async with ops_env(emulator_state_dir, capsys, monkeypatch) as env:
        result = await env.cli("bastion", "configure", *env.args("--kerberos", "maybe"))
        assert result.code == 2
        assert "true/false" in result.err


async def test_configure_nothing_to_change(emulator_state_dir: Path, capsys, monkeypatch) -> None:
    async with ops_env(emulator_state_dir, capsys, monkeypatch, sku="Standard", enable_tunneling=True) as env:
        etag = env.resource["etag"]
        result = await env.cli("bastion", "configure", *env.args("--native-client", "true", "--output", "json"))
        assert result.code == 0, result.err
        assert result.json()["applied"] is False and result.json()["changes"] == []
        assert "[y/N]" not in result.err
        assert env.resource["etag"] == etag
