"""``bastion-fast ssh-config``: Host blocks that plain OpenSSH uses, written idempotently."""

from __future__ import annotations

import stat
import subprocess
from pathlib import Path

import pytest

from bastion_fast.commands.hostkeys import HostKeyPolicy
from bastion_fast.commands.sshconfig import HostEntry, command_line, render_block, write_blocks
from tests.cmd_harness import VmSetup, bastion_fast, needs_sshd, vm_setup_fixture  # noqa: F401


def _entry(host: str, tmp_path: Path, user: str = "azureuser") -> HostEntry:
    return HostEntry(host=host, proxy_argv=["/opt/my tools/bastion-fast", "proxy", host, "--x", "100%"],
                     host_key=HostKeyPolicy(alias=f"bastion-fast.{host}.0000", directory=tmp_path / "kh dir"),
                     user=user)


def test_block_quotes_for_openssh(tmp_path: Path) -> None:
    block = render_block(_entry("web1", tmp_path))
    assert block.startswith("# >>> bastion-fast web1 >>>\nHost web1\n")
    assert block.endswith("# <<< bastion-fast web1 <<<\n")
    # ProxyCommand goes through the shell: shell quoting, and % doubled for OpenSSH's token expansion
    assert "    ProxyCommand '/opt/my tools/bastion-fast' proxy web1 --x 100%%\n" in block
    assert f'    UserKnownHostsFile "{tmp_path}/kh dir/bastion-fast.web1.0000"\n' in block
    assert "    StrictHostKeyChecking accept-new\n" in block and "    HostKeyAlias bastion-fast.web1.0000\n" in block
    assert command_line(["a b", "c"]) == "'a b' c"


def test_write_is_idempotent_and_keeps_the_rest(tmp_path: Path) -> None:
    config = tmp_path / "ssh" / "config"
    config.parent.mkdir()
    config.write_text("Host other\n    User me\n")
    assert write_blocks(config, {"web1": render_block(_entry("web1", tmp_path))}) == [("web1", "added")]
    first = config.read_text()
    assert first.startswith("Host other\n    User me\n\n# >>> bastion-fast web1 >>>")
    assert write_blocks(config, {"web1": render_block(_entry("web1", tmp_path))}) == [("web1", "unchanged")]
    assert config.read_text() == first
    outcome = write_blocks(config, {"web1": render_block(_entry("web1", tmp_path, user="root")),
                                    "db1": render_block(_entry("db1", tmp_path))})
    assert outcome == [("web1", "updated"), ("db1", "added")]
    text = config.read_text()
    assert text.count("# >>> bastion-fast web1 >>>") == 1 and "User root" in text and "User azureuser" in text
    assert text.startswith("Host other\n    User me\n")


def test_new_file_is_private(tmp_path: Path) -> None:
    config = tmp_path / "new" / "config"
    write_blocks(config, {"web1": render_block(_entry("web1", tmp_path))})
    assert stat.S_IMODE(config.stat().st_mode) == 0o600


def test_bad_alias_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="host alias"):
        _entry("web 1", tmp_path)


@needs_sshd
def test_plain_ssh_uses_the_written_config(setup: VmSetup) -> None:
    config = setup.tmp / "ssh_config"
    args = [*setup.target_args, "--host", "web1", "--username", setup.user, "--write", str(config)]
    done = bastion_fast("ssh-config", *args, env=setup.env)
    assert done.returncode == 0, done.stderr.decode()
    assert b"web1: added" in done.stderr
    first = config.read_text()
    again = bastion_fast("ssh-config", *args, env=setup.env)
    assert again.returncode == 0 and b"web1: unchanged" in again.stderr
    assert config.read_text() == first
    ssh = subprocess.run(["ssh", "-F", str(config), "-o", "BatchMode=yes", "web1", "echo plain ssh; exit 4"],
                         env=setup.env, capture_output=True, timeout=120, check=False)
    assert ssh.returncode == 4, ssh.stderr.decode()
    assert ssh.stdout == b"plain ssh\n"
    # the host key went into bastion-fast's per-target known_hosts, not ~/.ssh/known_hosts
    known = list((setup.tmp / "state" / "known_hosts.d").iterdir())
    assert len(known) == 1 and setup.sshd.host_public_key in known[0].read_text()
    setup.emu.wait_all_deleted(minimum=1)


@needs_sshd
def test_profiles_become_blocks_that_name_the_profile(setup: VmSetup) -> None:
    profiles = setup.write_profiles()
    done = bastion_fast("ssh-config", "web1", "--config", str(profiles), env=setup.env)
    assert done.returncode == 0, done.stderr.decode()
    text = done.stdout.decode()
    assert "Host web1\n" in text and f"    User {setup.user}\n" in text
    assert f" proxy web1 --config {profiles}" in text
    config = setup.tmp / "cfg"
    config.write_text(text)
    scp_source = setup.tmp / "f.txt"
    scp_source.write_text("copied via ssh-config\n")
    scp = subprocess.run(["scp", "-F", str(config), "-o", "BatchMode=yes", str(scp_source),
                          f"web1:{setup.tmp}/g.txt"], env=setup.env, capture_output=True, timeout=120, check=False)
    assert scp.returncode == 0, scp.stderr.decode()
    assert (setup.tmp / "g.txt").read_text() == "copied via ssh-config\n"


@needs_sshd
def test_aad_block_keeps_key_and_certificate(tmp_path: Path) -> None:
    import getpass

    from tests.cmd_harness import running_emulator, vm_id
    from tests.fixtures_entra import running_entra
    from tests.fixtures_sshd import running_sshd

    with running_entra(getpass.getuser()) as entra, \
            running_sshd(trusted_user_ca_keys=entra.ca_public_key, authorize_user_key=False) as sshd, \
            running_emulator({vm_id("web1"): f"127.0.0.1:{sshd.port}"}, state_dir=tmp_path / "emu") as emu:
        bundle = tmp_path / "both.pem"
        bundle.write_text(Path(emu.info["ca_file"]).read_text() + entra.tls_ca_file.read_text())
        args = [a if a != emu.info["ca_file"] else str(bundle) for a in emu.connection_args()]
        env = emu.env(tmp_path, AZURE_AUTHORITY_HOST=entra.authority_host)
        config = tmp_path / "ssh_config"
        done = bastion_fast("ssh-config", *args, "--target-resource-id", vm_id("web1"), "--auth-type", "AAD",
                            "--use-device-code", "--write", str(config), env=env)
        assert done.returncode == 0, done.stderr.decode()
        text = config.read_text()
        assert f"    User {getpass.getuser()}\n" in text and "    CertificateFile " in text
        assert "# Entra ID certificate valid until" in text
        cert = Path(text.split("    CertificateFile ", 1)[1].split("\n", 1)[0])
        assert stat.S_IMODE(cert.stat().st_mode) == 0o600 and cert.is_relative_to(tmp_path / "state")
        ssh = subprocess.run(["ssh", "-F", str(config), "-o", "BatchMode=yes", "web1", "echo aad-config"],
                             env=env, capture_output=True, timeout=120, check=False)
        assert ssh.returncode == 0, ssh.stderr.decode() + sshd.log()
        assert ssh.stdout == b"aad-config\n"
