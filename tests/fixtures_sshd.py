"""A real OpenSSH ``sshd`` on 127.0.0.1 for end-to-end tests.

Import the fixtures into a test module (``from tests.fixtures_sshd import sshd, sshd_factory  # noqa: F401``) or use
:func:`running_sshd` directly. Each server gets its own directory with a fresh host key, an ephemeral user key pair
authorised for the current user, its own ``sshd_config`` and log, and listens on a free loopback port. sshd runs in
the foreground (``-D -e``) as our child, so stopping it is a plain terminate/wait; nothing touches ``/etc/ssh``.

Theory of operation: pick a free port (bind to port 0, read it, close), write the config, start ``sshd -D -e -f``,
then poll the port until the server sends its ``SSH-2.0-`` banner. If sshd exits first (the port was taken in the
window between our probe and its bind), try again with a new port; any other failure raises with sshd's own log.

Running as root (as in CI containers) the config allows root logins by key only (``PermitRootLogin
prohibit-password``), turns off PAM and ``StrictModes`` (tmp dirs are world-writable parents) and creates the
privilege-separation directory ``/run/sshd`` if it is missing. As a non-root user sshd still runs (without privilege
separation) and only that user can log in.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

__all__ = [
    "SSHD_BINARY",
    "SshServer",
    "make_user_key",
    "running_sshd",
    "sshd",
    "sshd_factory",
    "sshd_missing_reason",
]

SSHD_BINARY = shutil.which("sshd") or "/usr/sbin/sshd"
_SFTP_SERVER_CANDIDATES = ("/usr/lib/openssh/sftp-server", "/usr/libexec/openssh/sftp-server",
                           "/usr/libexec/sftp-server", "/usr/lib/ssh/sftp-server")
_START_TIMEOUT = 10.0 * float(os.environ.get("BASTION_FAST_TESTS_TIMEOUT_FACTOR", "1"))


def sshd_missing_reason() -> str | None:
    """Why a real sshd cannot run here (``None`` when it can): use with ``pytest.mark.skipif``."""
    if not Path(SSHD_BINARY).exists():
        return f"OpenSSH server not installed ({SSHD_BINARY} missing; apt-get install openssh-server)"
    for tool in ("ssh", "ssh-keygen"):
        if shutil.which(tool) is None:
            return f"OpenSSH client tool {tool!r} not on PATH (apt-get install openssh-client)"
    return None


@dataclass
class SshServer:
    """One running sshd and everything a client needs to log in to it.

    ``ssh_base_args`` are host-independent options for ``ssh``/``scp``/``sftp`` (key, no user config, no agent,
    batch mode, no host-key prompts, quiet); append ``-p PORT`` (``-P`` for scp/sftp) and the destination. Host-key
    checking is off in them because tests usually reach the server through a tunnel port; tests about host keys
    use :attr:`host_public_key` / :meth:`known_hosts_line` instead.
    """

    host: str
    port: int
    user: str
    key_path: Path
    host_public_key: str  # "ssh-ed25519 AAAA..." (no comment)
    directory: Path
    log_path: Path
    process: subprocess.Popen[bytes] = field(repr=False)
    ssh_base_args: list[str] = field(default_factory=list)

    @property
    def public_key_path(self) -> Path:
        return self.key_path.with_name(self.key_path.name + ".pub")

    def known_hosts_line(self, name: str | None = None) -> str:
        """A known_hosts line for this server under ``name`` (default ``[host]:port``)."""
        alias = name if name is not None else f"[{self.host}]:{self.port}"
        return f"{alias} {self.host_public_key}\n"

    def ssh_command(self, *remote: str, port: int | None = None, host: str | None = None) -> list[str]:
        """``ssh … user@host remote…`` straight to this server (or to ``host:port``, e.g. a tunnel)."""
        return ["ssh", *self.ssh_base_args, "-p", str(port or self.port), f"{self.user}@{host or self.host}", *remote]

    def log(self) -> str:
        """sshd's log so far (for assertion messages)."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


def make_user_key(directory: Path, name: str = "id_ed25519", comment: str = "bastion-fast-test") -> Path:
    """Create an unencrypted ed25519 key pair in ``directory`` and return the private key path (0600)."""
    path = directory / name
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
                   check=True, stdin=subprocess.DEVNULL)
    path.chmod(0o600)
    return path


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _sftp_server() -> str | None:
    for candidate in _SFTP_SERVER_CANDIDATES:
        if Path(candidate).exists():
            return candidate
    return None


def _write_config(directory: Path, *, host: str, port: int, host_key: Path, authorized_keys: Path,
                  trusted_user_ca_keys: Path | None, sftp: bool, extra_config: str) -> Path:
    lines = [
        f"Port {port}",
        f"ListenAddress {host}",
        f"HostKey {host_key}",
        f"PidFile {directory / 'sshd.pid'}",
        f"AuthorizedKeysFile {authorized_keys}",
        "PermitRootLogin prohibit-password",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "StrictModes no",
        "PrintMotd no",
        "PrintLastLog no",
        "UseDNS no",
        "X11Forwarding no",
        "AllowTcpForwarding yes",
        "MaxStartups 100:30:200",
        "MaxSessions 50",
        "LogLevel VERBOSE",
    ]
    if os.geteuid() == 0:
        lines.append("UsePAM no")
    if trusted_user_ca_keys is not None:
        lines.append(f"TrustedUserCAKeys {trusted_user_ca_keys}")
    if sftp:
        server = _sftp_server()
        if server is None:
            raise RuntimeError("sftp requested but no sftp-server binary found")
        lines.append(f"Subsystem sftp {server}")
    if extra_config:
        lines.append(extra_config.strip())
    config = directory / "sshd_config"
    config.write_text("\n".join(lines) + "\n")
    return config


def _wait_for_banner(host: str, port: int, process: subprocess.Popen[bytes], deadline: float) -> bool:
    """Poll until sshd answers with its banner; False if the process died first."""
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            with socket.create_connection((host, port), timeout=1.0) as sock:
                sock.settimeout(2.0)
                if sock.recv(64).startswith(b"SSH-2.0-"):
                    return True
        except OSError:
            pass
        time.sleep(0.02)
    return False


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


@contextlib.contextmanager
def running_sshd(
    directory: Path | None = None,
    *,
    host: str = "127.0.0.1",
    trusted_user_ca_keys: Path | str | None = None,
    authorize_user_key: bool = True,
    sftp: bool = True,
    host_key_type: str = "ed25519",
    extra_config: str = "",
) -> Iterator[SshServer]:
    """Start a real sshd on a free loopback port; stop it (and remove its temp dir) on exit.

    Args:
        directory: where keys, config and log live (a temp dir, removed afterwards, when ``None``).
        trusted_user_ca_keys: a CA public key file for ``TrustedUserCAKeys`` (user certificates signed by it with
            the login name as principal are accepted).
        authorize_user_key: put the generated user key in ``authorized_keys`` (off for certificate-only tests).
        sftp: enable the ``sftp`` subsystem (scp in OpenSSH ≥ 9 uses it by default).
        host_key_type: ``ed25519``, ``ecdsa`` or ``rsa``.
        extra_config: more ``sshd_config`` lines.
    """
    reason = sshd_missing_reason()
    if reason:
        raise RuntimeError(reason)
    owned = directory is None
    root = Path(tempfile.mkdtemp(prefix="bf-sshd-")) if directory is None else Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    process: subprocess.Popen[bytes] | None = None
    try:
        if os.geteuid() == 0:
            Path("/run/sshd").mkdir(mode=0o755, parents=True, exist_ok=True)
        host_key = root / f"ssh_host_{host_key_type}_key"
        subprocess.run(["ssh-keygen", "-q", "-t", host_key_type, "-N", "", "-f", str(host_key)], check=True,
                       stdin=subprocess.DEVNULL)
        host_public = " ".join(host_key.with_name(host_key.name + ".pub").read_text().split()[:2])
        key_path = make_user_key(root)
        authorized = root / "authorized_keys"
        authorized.write_text(key_path.with_name(key_path.name + ".pub").read_text() if authorize_user_key else "")
        log_path = root / "sshd.log"
        base_args = [
            "-F", "/dev/null",
            "-i", str(key_path),
            "-o", "IdentitiesOnly=yes",
            "-o", "IdentityAgent=none",
            "-o", "BatchMode=yes",
            "-o", "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=/dev/null",
            "-o", "GlobalKnownHostsFile=/dev/null",
            "-o", "LogLevel=ERROR",
            "-o", "ConnectTimeout=20",
        ]
        deadline = time.monotonic() + _START_TIMEOUT
        for _attempt in range(5):
            port = _free_port(host)
            config = _write_config(root, host=host, port=port, host_key=host_key, authorized_keys=authorized,
                                   trusted_user_ca_keys=Path(trusted_user_ca_keys) if trusted_user_ca_keys else None,
                                   sftp=sftp, extra_config=extra_config)
            with log_path.open("ab") as log_file:
                process = subprocess.Popen([SSHD_BINARY, "-D", "-e", "-f", str(config)], stdin=subprocess.DEVNULL,
                                           stdout=log_file, stderr=log_file)
            if _wait_for_banner(host, port, process, deadline):
                break
            _stop(process)
            process = None
            if time.monotonic() >= deadline:
                break
        if process is None:
            raise RuntimeError(f"sshd did not start; its log:\n{log_path.read_text(errors='replace')}")
        yield SshServer(host=host, port=port, user=getpass.getuser(), key_path=key_path,
                        host_public_key=host_public, directory=root, log_path=log_path, process=process,
                        ssh_base_args=base_args)
    finally:
        if process is not None:
            _stop(process)
        if owned:
            shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def sshd_factory() -> Iterator[object]:
    """``sshd_factory(**running_sshd_kwargs) -> SshServer``; every server started is stopped after the test."""
    with contextlib.ExitStack() as stack:

        def start(**kwargs: object) -> SshServer:
            reason = sshd_missing_reason()
            if reason:
                pytest.skip(reason)
            return stack.enter_context(running_sshd(None, **kwargs))  # type: ignore[arg-type]

        yield start


@pytest.fixture
def sshd(sshd_factory: object) -> SshServer:
    """A default sshd (key auth for the current user, sftp on)."""
    return sshd_factory()  # type: ignore[operator,no-any-return]
