"""The sshd fixture itself: a real OpenSSH client logs in, runs commands, uses sftp and a user certificate."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests import fixtures_sshd
from tests.fixtures_sshd import SshServer, make_user_key, sshd_missing_reason

sshd = fixtures_sshd.sshd
sshd_factory = fixtures_sshd.sshd_factory

pytestmark = pytest.mark.skipif(sshd_missing_reason() is not None, reason=sshd_missing_reason() or "")


def test_ssh_runs_a_command_and_passes_exit_status(sshd: SshServer) -> None:
    done = subprocess.run(sshd.ssh_command("echo ok"), check=False, capture_output=True, timeout=30)
    assert done.returncode == 0, sshd.log()
    assert done.stdout == b"ok\n"
    assert subprocess.run(sshd.ssh_command("exit 7"), check=False, capture_output=True, timeout=30).returncode == 7


def test_host_key_is_the_one_reported(sshd: SshServer, tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    known.write_text(sshd.known_hosts_line())
    args = list(sshd.ssh_base_args)
    args[args.index("StrictHostKeyChecking=no")] = "StrictHostKeyChecking=yes"
    args[args.index("UserKnownHostsFile=/dev/null")] = f"UserKnownHostsFile={known}"
    done = subprocess.run(["ssh", *args, "-p", str(sshd.port), f"{sshd.user}@{sshd.host}", "true"],
                          check=False, capture_output=True, timeout=30)
    assert done.returncode == 0, done.stderr


def test_sftp_subsystem(sshd: SshServer, tmp_path: Path) -> None:
    source = tmp_path / "up.bin"
    source.write_bytes(b"x" * 100_000)
    remote = sshd.directory / "remote.bin"
    batch = tmp_path / "batch"
    batch.write_text(f"put {source} {remote}\n")
    done = subprocess.run(["sftp", *sshd.ssh_base_args, "-P", str(sshd.port), "-b", str(batch),
                           f"{sshd.user}@{sshd.host}"], check=False, capture_output=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert remote.read_bytes() == source.read_bytes()


def test_trusted_user_ca_accepts_a_signed_certificate(sshd_factory: Any, tmp_path: Path) -> None:
    ca = make_user_key(tmp_path, "ca")
    server: SshServer = sshd_factory(trusted_user_ca_keys=ca.with_name("ca.pub"), authorize_user_key=False)
    # the plain key is not authorised
    assert subprocess.run(server.ssh_command("true"), check=False, capture_output=True, timeout=30).returncode == 255
    user_key = make_user_key(tmp_path, "user")
    subprocess.run(["ssh-keygen", "-q", "-s", str(ca), "-I", "test", "-n", server.user, "-V", "+10m",
                    str(user_key.with_name("user.pub"))], check=True)
    cert = tmp_path / "user-cert.pub"
    assert cert.exists()
    done = subprocess.run(["ssh", *server.ssh_base_args, "-i", str(user_key), "-o", f"CertificateFile={cert}",
                           "-p", str(server.port), f"{server.user}@{server.host}", "echo cert-ok"],
                          check=False, capture_output=True, timeout=30)
    assert done.returncode == 0, done.stderr + server.log().encode()
    assert done.stdout == b"cert-ok\n"


def test_server_is_stopped_afterwards() -> None:
    from tests.fixtures_sshd import running_sshd

    with running_sshd() as server:
        process = server.process
        directory = server.directory
        assert process.poll() is None
    assert process.poll() is not None
    assert not directory.exists()
