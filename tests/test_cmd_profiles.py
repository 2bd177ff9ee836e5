"""Profiles (TOML named targets) and the argparse helpers every everyday command shares."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from bastion_fast.cli import build_parser
from bastion_fast.commands.cliargs import apply_profile
from bastion_fast.commands.profiles import load_config
from bastion_fast.commands.up import parse_spec
from bastion_fast.exceptions import UsageError

CONFIG = """
[defaults]
bastion = "corp-bastion"
rg = "rg-hub"

[targets.web1]
target_resource_id = "/subscriptions/s/resourceGroups/g/providers/Microsoft.Compute/virtualMachines/web1"
resource-port = 2222
user = "azureuser"
auth_type = "SSH-KEY"
ssh_key = "~/.ssh/id_ed25519"
port = 50022

[targets.db1]
bastion = "other-bastion"
target_ip_address = "10.0.1.5"
"""


def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(list(argv))


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(CONFIG)
    monkeypatch.setenv("BASTION_FAST_CONFIG", str(path))
    return path


def test_defaults_merge_and_aliases(config: Path) -> None:
    loaded = load_config()
    web1 = loaded.profile("web1")
    assert web1.settings["name"] == "corp-bastion" and web1.settings["resource_group"] == "rg-hub"
    assert web1.settings["resource_port"] == 2222 and web1.settings["username"] == "azureuser"
    assert loaded.profile("db1").settings["name"] == "other-bastion"
    with pytest.raises(UsageError, match="profiles there: db1, web1"):
        loaded.profile("nope")


def test_profile_fills_flags_through_their_own_types(config: Path) -> None:
    args = parse("ssh", "web1")
    apply_profile(args)
    assert (args.name, args.resource_group, args.resource_port) == ("corp-bastion", "rg-hub", 2222)
    assert args.auth_type == "ssh-key"  # the --auth-type converter lower-cased it, as for the flag
    assert args.username == "azureuser"


def test_command_line_wins_over_profile(config: Path) -> None:
    args = parse("ssh", "web1", "--username", "root", "--resource-port", "22", "-n", "b2")
    apply_profile(args)
    assert (args.username, args.resource_port, args.name) == ("root", 22, "b2")
    assert args.resource_group == "rg-hub"


def test_passthrough_after_double_dash(config: Path) -> None:
    args = parse("ssh", "web1", "--username", "u", "--", "-L", "8080:localhost:80", "--", "uptime")
    assert args.profile_name == "web1" and args.username == "u"
    assert args.ssh_args == ["-L", "8080:localhost:80", "--", "uptime"]
    args = parse("ssh", "-n", "b", "--", "-v")
    assert args.profile_name is None and args.ssh_args == ["-v"]


def test_unknown_and_bad_values_are_usage_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "c.toml"
    monkeypatch.setenv("BASTION_FAST_CONFIG", str(path))
    path.write_text('[targets.x]\nbastoin = "typo"\n')
    with pytest.raises(UsageError, match="unknown setting"):
        apply_profile(parse("ssh", "x"))
    path.write_text('[targets.x]\nresource_port = "twenty-two"\n')
    with pytest.raises(UsageError, match="resource_port"):
        apply_profile(parse("ssh", "x"))
    path.write_text('[targets.x]\nauth_type = "kerberos"\n')
    with pytest.raises(UsageError, match="not one of"):
        apply_profile(parse("ssh", "x"))
    path.write_text("[targets.x\n")
    with pytest.raises(UsageError, match="not valid TOML"):
        load_config()
    # a key only another command has (port: tunnel/up) is fine for ssh
    path.write_text('[targets.x]\nport = 1234\nbastion = "b"\n')
    args = parse("ssh", "x")
    apply_profile(args)
    assert args.name == "b"


def test_missing_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(UsageError, match="does not exist"):
        load_config(tmp_path / "absent.toml")
    monkeypatch.setenv("BASTION_FAST_CONFIG", str(tmp_path / "none.toml"))
    assert not load_config().exists  # the default file may be missing: no profiles, no error
    with pytest.raises(UsageError, match="there is no config file"):
        load_config().profile("web1")


def test_up_specs() -> None:
    assert parse_spec("web1").local_port is None
    spec = parse_spec("db1:15432:5432")
    assert (spec.name, spec.local_port, spec.remote_port) == ("db1", 15432, 5432)
    assert parse_spec("web1:0").local_port == 0
    with pytest.raises(UsageError):
        parse_spec("web1:http")
    with pytest.raises(UsageError):
        parse_spec("a:1:2:3")
