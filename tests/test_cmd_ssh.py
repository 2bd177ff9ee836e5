"""``bastion-fast ssh`` end to end: real OpenSSH through the emulator to a real sshd.

Exit status passed on, Bastion sessions deleted, host keys pinned per target, az's auth flags, Entra ID certificates.
"""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from bastion_fast.commands.openssh import split_ssh_args, user_controls_logging
from bastion_fast.commands.sshclient import find_tool
from bastion_fast.exceptions import ConfigurationError
from tests.cmd_harness import (  # noqa: F401 - vm_setup_fixture is the fixture "setup"
    VmSetup,
    bastion_fast,
    cli_command,
    needs_sshd,
    running_emulator,
    vm_id,
    vm_setup_fixture,
)
from tests.fixtures_entra import running_entra
from tests.fixtures_sshd import running_sshd


def _known_hosts(setup: VmSetup) -> list[Path]:
    directory = setup.tmp / "state" / "known_hosts.d"
    return sorted(directory.iterdir()) if directory.exists() else []


# -- pure pieces -------------------------------------------------------------------------------------------------


def test_split_user_args_like_ssh_getopt() -> None:
    assert split_ssh_args(["-L", "8080:localhost:80", "-v", "uptime", "-a"]) == (
        ["-L", "8080:localhost:80", "-v"], ["uptime", "-a"])
    assert split_ssh_args(["-L8080:x:80", "-tt", "--", "ls", "-l"]) == (["-L8080:x:80", "-tt"], ["ls", "-l"])
    assert split_ssh_args(["-o", "User=bob"]) == (["-o", "User=bob"], [])
    assert split_ssh_args(["echo hi; exit 7"]) == ([], ["echo hi; exit 7"])
    assert user_controls_logging(["-vvv"]) and user_controls_logging(["-o", "LogLevel=DEBUG"])
    assert not user_controls_logging(["-L", "8080:vq:80", "-o", "User=v"])


def test_find_tool_honours_client_folder(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError) as info:
        find_tool("ssh", tmp_path)
    assert "--ssh-client-folder" in str(info.value)
    fake = tmp_path / "ssh"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    assert find_tool("ssh", tmp_path) == str(fake)


# -- end to end --------------------------------------------------------------------------------------------------


@needs_sshd
def test_exit_status_is_passed_on_and_sessions_are_deleted(setup: VmSetup) -> None:
    done = bastion_fast("ssh", *setup.target_args, "--auth-type", "ssh-key", "--username", setup.user,
                        "--", "echo hello from the vm; exit 7", env=setup.env)
    assert done.returncode == 7, done.stderr.decode()
    assert done.stdout == b"hello from the vm\n"
    sessions = setup.emu.wait_all_deleted(minimum=1)
    assert len(sessions) == 1 and sessions[0]["deleted_by"] is not None
    ok = bastion_fast("ssh", *setup.target_args, "--username", setup.user, "--", "true", env=setup.env)
    assert ok.returncode == 0, ok.stderr.decode()
    assert len(setup.emu.wait_all_deleted(minimum=2)) == 2


@needs_sshd
def test_remote_command_sees_stdin_and_user_options(setup: VmSetup) -> None:
    done = bastion_fast("ssh", *setup.target_args, "--username", setup.user, "--", "-o", "SendEnv=NOTHING",
                        "wc", "-c", env=setup.env, input=b"x" * 100_000)
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout.strip() == b"100000"


@needs_sshd
def test_host_key_is_recorded_then_a_changed_key_is_refused(setup: VmSetup, tmp_path: Path) -> None:
    first = bastion_fast("ssh", *setup.target_args, "--username", setup.user, "--", "true", env=setup.env)
    assert first.returncode == 0, first.stderr.decode()
    files = _known_hosts(setup)
    assert len(files) == 1 and files[0].name.startswith("bastion-fast.web1.")
    recorded = files[0].read_text()
    assert setup.sshd.host_public_key in recorded
    # the same VM id now answers with another host key (VM re-created, or someone in the middle)
    with running_sshd() as impostor, running_emulator({setup.vm: f"127.0.0.1:{impostor.port}"},
                                                      state_dir=tmp_path / "emulator2") as emu2:
        env = emu2.env(setup.tmp)
        refused = bastion_fast("ssh", *emu2.connection_args(), "--target-resource-id", setup.vm,
                               "--ssh-key", str(impostor.key_path), "--username", impostor.user, "--",
                               "echo should-not-run", env=env)
        err = refused.stderr.decode()
        assert refused.returncode == 255
        assert refused.stdout == b""
        assert "The host key of web1 has changed" in err, err
        assert "--insecure-host-key" in err and "ssh-keygen -f" in err
        assert "@@@@" not in err  # OpenSSH's banner is replaced by our message
        assert files[0].read_text() == recorded
        # az's behaviour on request: no check, nothing recorded
        insecure = bastion_fast("ssh", *emu2.connection_args(), "--target-resource-id", setup.vm,
                                "--ssh-key", str(impostor.key_path), "--username", impostor.user,
                                "--insecure-host-key", "--", "echo ran", env=env)
        assert insecure.returncode == 0, insecure.stderr.decode()
        assert insecure.stdout == b"ran\n"
        assert files[0].read_text() == recorded
        emu2.wait_all_deleted(minimum=2)


@needs_sshd
def test_az_auth_flag_rules(setup: VmSetup) -> None:
    missing = bastion_fast("ssh", *setup.emu.connection_args(), "--target-resource-id", setup.vm,
                           "--auth-type", "ssh-key", env=setup.env)
    assert missing.returncode == 2
    assert b"--auth-type ssh-key needs --username and --ssh-key" in missing.stderr
    password = bastion_fast("ssh", *setup.emu.connection_args(), "--target-resource-id", setup.vm,
                            "--auth-type", "Password", env=setup.env)
    assert password.returncode == 2 and b"--username" in password.stderr
    # password auth offers no keys (azure-cli#32776): the sshd accepts keys only, so it fails even with a key
    refused = bastion_fast("ssh", *setup.target_args, "--auth-type", "password", "--username", setup.user,
                           "--", "-o", "BatchMode=yes", "true", env=setup.env)
    assert refused.returncode == 255
    assert b"Permission denied" in refused.stderr
    assert not setup.emu.sessions() or setup.emu.wait_all_deleted()


@needs_sshd
def test_unknown_target_fails_cleanly(setup: VmSetup) -> None:
    done = bastion_fast("ssh", *setup.emu.connection_args(), "--target-resource-id", vm_id("nope"),
                        "--ssh-key", str(setup.sshd.key_path), "--username", setup.user, "--",
                        "-o", "BatchMode=yes", "true", env=setup.env)
    assert done.returncode == 255
    assert b"Traceback" not in done.stderr
    assert b"Bastion connection 1 failed" in done.stderr


@needs_sshd
def test_aad_certificate_login_and_cleanup(tmp_path: Path) -> None:
    import getpass

    with running_entra(getpass.getuser()) as entra, \
            running_sshd(trusted_user_ca_keys=entra.ca_public_key, authorize_user_key=False) as sshd, \
            running_emulator({vm_id("web1"): f"127.0.0.1:{sshd.port}"}, state_dir=tmp_path / "emu") as emu:
        temp = tmp_path / "tmpdir"
        temp.mkdir()
        env = emu.env(tmp_path, AZURE_AUTHORITY_HOST=entra.authority_host, TMPDIR=str(temp))
        # one --ca-bundle serves every connection: the emulator's CA and the identity provider's
        bundle = tmp_path / "both.pem"
        bundle.write_text(Path(emu.info["ca_file"]).read_text() + entra.tls_ca_file.read_text())
        args = [a if a != emu.info["ca_file"] else str(bundle) for a in emu.connection_args()]
        done = bastion_fast("ssh", *args, "--target-resource-id", vm_id("web1"), "--auth-type", "AAD",
                            "--use-device-code", "--", "-o", "BatchMode=yes", "whoami; exit 3", env=env)
        assert done.returncode == 3, done.stderr.decode() + sshd.log()
        assert done.stdout.decode().strip() == getpass.getuser()
        assert "TEST-CODE" in done.stderr.decode()  # the device-code prompt reached the user
        assert not any(temp.iterdir()), "certificate/key files were left behind"
        assert "Accepted publickey" in sshd.log() and "CERT" in sshd.log()
        emu.wait_all_deleted(minimum=1)
        state = tmp_path / "state" / "msal_token_cache.json"
        assert stat.S_IMODE(state.stat().st_mode) == 0o600


@needs_sshd
def test_profile_instead_of_flags(setup: VmSetup) -> None:
    setup.write_profiles()
    done = bastion_fast("ssh", "web1", "--", "echo via profile", env=setup.env)
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout == b"via profile\n"
    # a flag on the command line wins over the profile
    bad = bastion_fast("ssh", "web1", "--username", "nobody-here", "--", "-o", "BatchMode=yes", "true",
                       env=setup.env)
    assert bad.returncode == 255
    unknown = bastion_fast("ssh", "web9", env=setup.env)
    assert unknown.returncode == 2
    assert b"No profile named 'web9'" in unknown.stderr and b"web1" in unknown.stderr


def test_ssh_help_lists_az_flags() -> None:
    done = subprocess.run([*cli_command(), "ssh", "--help"], capture_output=True, text=True, check=False,
                          env={**os.environ})
    assert done.returncode == 0
    for flag in ("--name", "--resource-group", "--target-resource-id", "--target-ip-address", "--auth-type",
                 "--username", "--ssh-key", "--resource-port", "--ssh-client-folder", "--insecure-host-key"):
        assert flag in done.stdout


@needs_sshd
def test_sigterm_ends_ssh_and_still_deletes_the_session(setup: VmSetup) -> None:
    import signal
    import time

    process = subprocess.Popen([*cli_command(), "ssh", *setup.target_args, "--username", setup.user, "--",
                                "echo started; sleep 60"], env=setup.env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    assert process.stdout is not None
    assert process.stdout.readline() == b"started\n"
    time.sleep(0.2)
    process.send_signal(signal.SIGTERM)  # forwarded to ssh; the tunnel closes after it
    _, err = process.communicate(timeout=60)
    assert process.returncode == 255, err.decode()  # what OpenSSH exits with on SIGTERM, passed on
    setup.emu.wait_all_deleted(minimum=1)
