"""``bastion-fast proxy`` as OpenSSH's ProxyCommand: ssh, scp, sftp, rsync and git through the emulator."""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.cmd_harness import VmSetup, cli_command, vm_setup_fixture  # noqa: F401 - the fixture "setup"
from tests.fixtures_sshd import sshd_missing_reason

pytestmark = pytest.mark.skipif(sshd_missing_reason() is not None, reason=sshd_missing_reason() or "")


def proxy_command(setup: VmSetup) -> str:
    """The ProxyCommand line users write: %h = the VM's resource id, %p = the port."""
    return shlex.join([*cli_command(), "proxy", *setup.emu.connection_args(), "--target-resource-id", "%h",
                       "--resource-port", "%p"])


def ssh_options(setup: VmSetup) -> list[str]:
    return [*setup.sshd.ssh_base_args, "-o", f"ProxyCommand={proxy_command(setup)}", "-o", f"User={setup.user}"]


def run(argv: list[str], setup: VmSetup, **kwargs: object) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(argv, env=setup.env, capture_output=True, timeout=120, check=False, **kwargs)  # type: ignore[call-overload]


def test_ssh_via_proxycommand(setup: VmSetup) -> None:
    done = run(["ssh", *ssh_options(setup), setup.vm, "echo through-proxy; exit 5"], setup)
    assert done.returncode == 5, done.stderr.decode()
    assert done.stdout == b"through-proxy\n"
    setup.emu.wait_all_deleted(minimum=1)


def test_scp_and_sftp_via_proxycommand(setup: VmSetup, tmp_path: Path) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    source = tmp_path / "up.bin"
    source.write_bytes(data)
    remote = tmp_path / "remote.bin"
    # scp/sftp take host:path, and a resource id has '/': name the host web1 and let HostName carry the id (%h)
    done = run(["scp", *ssh_options(setup), "-o", f"HostName={setup.vm}", str(source), f"web1:{remote}"], setup)
    assert done.returncode == 0, done.stderr.decode()
    assert remote.read_bytes() == data
    back = tmp_path / "back.bin"
    batch = tmp_path / "batch"
    batch.write_text(f"get {remote} {back}\n")
    done = run(["sftp", *ssh_options(setup), "-o", f"HostName={setup.vm}", "-b", str(batch), "web1"], setup)
    assert done.returncode == 0, done.stderr.decode()
    assert back.read_bytes() == data
    setup.emu.wait_all_deleted(minimum=2)


@pytest.mark.skipif(shutil.which("rsync") is None, reason="rsync not installed (apt-get install rsync)")
def test_rsync_via_proxycommand(setup: VmSetup, tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "a.txt").write_text("alpha\n")
    (tree / "sub" / "b.bin").write_bytes(os.urandom(200_000))
    dest = tmp_path / "mirror"
    rsh = shlex.join(["ssh", *ssh_options(setup), "-o", f"HostName={setup.vm}"])
    done = run(["rsync", "-a", "-e", rsh, f"{tree}/", f"web1:{dest}/"], setup)
    assert done.returncode == 0, done.stderr.decode()
    assert (dest / "a.txt").read_text() == "alpha\n"
    assert (dest / "sub" / "b.bin").read_bytes() == (tree / "sub" / "b.bin").read_bytes()
    setup.emu.wait_all_deleted(minimum=1)


@pytest.mark.skipif(shutil.which("git") is None, reason="git not installed")
def test_git_clone_via_proxycommand(setup: VmSetup, tmp_path: Path) -> None:
    work = tmp_path / "work"
    bare = tmp_path / "repo.git"
    git_env = {**setup.env, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.test",
               "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.test"}
    subprocess.run(["git", "init", "-q", "--bare", str(bare)], check=True, env=git_env)
    subprocess.run(["git", "init", "-q", str(work)], check=True, env=git_env)
    (work / "README").write_text("hello through bastion\n")
    subprocess.run(["git", "-C", str(work), "add", "README"], check=True, env=git_env)
    subprocess.run(["git", "-C", str(work), "commit", "-q", "-m", "first"], check=True, env=git_env)
    git_ssh = shlex.join(["ssh", *ssh_options(setup), "-o", f"HostName={setup.vm}"])
    env = {**git_env, "GIT_SSH_COMMAND": git_ssh}
    push = subprocess.run(["git", "-C", str(work), "push", "-q", f"web1:{bare}", "HEAD:refs/heads/main"],
                          env=env, capture_output=True, timeout=120, check=False)
    assert push.returncode == 0, push.stderr.decode()
    clone = tmp_path / "clone"
    done = subprocess.run(["git", "clone", "-q", "-b", "main", f"web1:{bare}", str(clone)], env=env,
                          capture_output=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr.decode()
    assert (clone / "README").read_text() == "hello through bastion\n"
    setup.emu.wait_all_deleted(minimum=2)


@pytest.mark.parametrize("threads", [False, True], ids=["pipes", "thread-bridge"])
def test_stdout_carries_only_tunnel_bytes(setup: VmSetup, threads: bool) -> None:
    """Driving the proxy by hand: sshd's banner is the first thing on stdout, logs go to stderr, EOF ends it."""
    env = {**setup.env, **({"BASTION_FAST_PROXY_THREADS": "1"} if threads else {})}
    process = subprocess.Popen([*cli_command(), "-v", "proxy", *setup.emu.connection_args(),
                                "--target-resource-id", setup.vm], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, env=env)
    assert process.stdin is not None and process.stdout is not None
    process.stdin.write(b"SSH-2.0-probe\r\n")
    process.stdin.flush()
    banner = process.stdout.readline()
    assert banner.startswith(b"SSH-2.0-OpenSSH"), banner
    process.stdin.close()  # EOF: the proxy closes the WebSocket and exits
    assert process.wait(timeout=60) == 0
    assert process.stderr is not None
    err = process.stderr.read()
    process.stdout.close()
    process.stderr.close()
    assert b"SSH-2.0" not in err
    assert b"connection closed" in err  # -v logs went to stderr
    setup.emu.wait_all_deleted(minimum=1)


def test_large_stream_both_ways_through_proxy(setup: VmSetup) -> None:
    data = os.urandom(8 * 1024 * 1024)
    done = run(["ssh", *ssh_options(setup), setup.vm, "sha256sum; head -c 4000000 /dev/zero | sha256sum"],
               setup, input=data)
    assert done.returncode == 0, done.stderr.decode()
    lines = done.stdout.decode().split("\n")
    assert lines[0].split()[0] == hashlib.sha256(data).hexdigest()
    assert lines[1].split()[0] == hashlib.sha256(b"\0" * 4_000_000).hexdigest()


def test_failure_is_reported_on_stderr_with_status_1(setup: VmSetup) -> None:
    done = subprocess.run([*cli_command(), "proxy", *setup.emu.connection_args(), "--target-resource-id",
                           setup.vm.replace("web1", "missing")], input=b"", env=setup.env, capture_output=True,
                          timeout=60, check=False)
    assert done.returncode == 1
    assert done.stdout == b""
    assert b"error:" in done.stderr and b"Traceback" not in done.stderr
