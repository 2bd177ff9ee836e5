"""Host-key pinning per target, instead of az's ``StrictHostKeyChecking=no``.

Through a tunnel every VM is ``127.0.0.1:<random port>``, so OpenSSH cannot tell targets apart by address — which is
why az turns checking off. We give OpenSSH a stable name per target with ``HostKeyAlias`` and a known_hosts file of
its own under the user state directory (``platformdirs``), then let OpenSSH do what it does well:

* the first connection records the key without a prompt (``StrictHostKeyChecking=accept-new``);
* a changed key makes OpenSSH refuse to connect; :func:`explain_ssh_log` turns its long banner into one clear message
  that says what to do;
* ``--insecure-host-key`` restores az's behaviour (no checking, nothing recorded).

The alias is readable (``bastion-fast.web1.3f2a9c1e``): the VM name (or IP) for people, a hash of the full target
(resource id, or Bastion + IP for IP connect, plus the port when not 22) so two VMs called ``web1`` in different
groups never share a key. ``CheckHostIP=no`` because 127.0.0.1 says nothing about the target.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "HostKeyPolicy",
    "explain_ssh_log",
    "host_key_alias",
    "known_hosts_dir",
    "ssh_option_value",
    "state_dir",
]

APP_NAME = "bastion-fast"
STATE_ENV = "BASTION_FAST_STATE_DIR"
_CHANGED_MARKER = "REMOTE HOST IDENTIFICATION HAS CHANGED"
_SAFE = re.compile(r"[^a-z0-9._-]+")


def state_dir() -> Path:
    """``$BASTION_FAST_STATE_DIR`` or the platform's user state dir for bastion-fast (not created here)."""
    env = os.environ.get(STATE_ENV, "").strip()
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_state_dir(APP_NAME, appauthor=False))


def known_hosts_dir() -> Path:
    return state_dir() / "known_hosts.d"


def host_key_alias(*, resource_id: str | None, ip_address: str | None, resource_port: int,
                   bastion: str | None = None, resource_group: str | None = None) -> str:
    """A stable, known_hosts-safe name for one target (see the module docstring)."""
    if resource_id:
        identity = f"id:{resource_id.strip().rstrip('/').lower()}"
        label = resource_id.strip().rstrip("/").split("/")[-1]
        parts = resource_id.strip().rstrip("/").split("/")
        if len(parts) >= 4 and parts[-4].lower() == "virtualmachinescalesets":
            label = f"{parts[-3]}_{parts[-1]}"
    elif ip_address:
        identity = f"ip:{(resource_group or '').lower()}/{(bastion or '').lower()}/{ip_address.lower()}"
        label = ip_address
    else:
        raise ValueError("a target needs a resource id or an IP address")
    identity += f":{resource_port}"
    label = _SAFE.sub("-", label.lower()).strip("-.") or "target"
    if resource_port != 22:
        label += f"-{resource_port}"
    digest = hashlib.sha256(identity.encode()).hexdigest()[:8]
    return f"bastion-fast.{label}.{digest}"


def ssh_option_value(value: str) -> str:
    """Quote a value for ``ssh -o`` / ssh_config when it has spaces (macOS' "Application Support")."""
    if any(ch.isspace() for ch in value) or '"' in value:
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return value


@dataclass(frozen=True)
class HostKeyPolicy:
    """How OpenSSH should check the host key of one target."""

    alias: str
    insecure: bool = False
    directory: Path | None = None

    @property
    def known_hosts(self) -> Path:
        return (self.directory or known_hosts_dir()) / self.alias

    def prepare(self) -> None:
        """Create the known_hosts directory (0700) so OpenSSH can write the first key."""
        if not self.insecure:
            self.known_hosts.parent.mkdir(mode=0o700, parents=True, exist_ok=True)

    def options(self) -> dict[str, str]:
        """ssh_config options (name → value) implementing the policy."""
        if self.insecure:
            return {
                "StrictHostKeyChecking": "no",
                "UserKnownHostsFile": os.devnull,
                "GlobalKnownHostsFile": os.devnull,
                "CheckHostIP": "no",
            }
        return {
            "HostKeyAlias": self.alias,
            "UserKnownHostsFile": ssh_option_value(str(self.known_hosts)),
            "StrictHostKeyChecking": "accept-new",
            "CheckHostIP": "no",
            "UpdateHostKeys": "no",
        }

    def ssh_args(self) -> list[str]:
        """The same as ``-o Name=value`` arguments."""
        args: list[str] = []
        for name, value in self.options().items():
            args += ["-o", f"{name}={value}"]
        return args

    def recorded(self) -> bool:
        """Whether a key has been recorded for this target."""
        try:
            return self.known_hosts.stat().st_size > 0
        except OSError:
            return False


def explain_ssh_log(text: str, policy: HostKeyPolicy, target: str) -> tuple[str, tuple[str, str] | None]:
    """Split OpenSSH's log into (text to show, our host-key (message, hint) or ``None``).

    When the host key changed, OpenSSH's "@@@ WARNING …" banner is replaced by one message naming the target, the
    key it sent, the file holding the recorded key, and the ways forward.
    """
    if _CHANGED_MARKER not in text:
        return text, None
    fingerprint = None
    key_type = None
    match = re.search(r"The fingerprint for the (\S+) key sent by the remote host is\s*\n?\s*(\S+?)\.?\s*$", text,
                      re.MULTILINE)
    if match:
        key_type, fingerprint = match.group(1), match.group(2)
    kept = []
    skipping = False
    for line in text.splitlines(keepends=True):
        if line.startswith("@@@") or _CHANGED_MARKER in line:
            skipping = True
        if skipping:
            if line.startswith("Host key verification failed") or line.startswith("Host key for "):
                continue
            if re.match(r"^(IT IS POSSIBLE|Someone could|It is also possible|The fingerprint|SHA256:|MD5:|Please "
                        r"contact|Add correct host key|Offending|  remove with|  ssh-keygen|@)", line):
                continue
            skipping = False
        kept.append(line)
    sent = f" The server now presents {key_type} key {fingerprint}." if fingerprint else ""
    message = (f"The host key of {target} has changed since it was first recorded (in {policy.known_hosts}), "
               f"so the connection was refused.{sent}")
    hint = ("This happens when the VM was re-created or re-imaged — or when someone intercepts the connection. "
            "If the change is expected, forget the old key with "
            f"`ssh-keygen -f {ssh_option_value(str(policy.known_hosts))} -R {policy.alias}` and connect again "
            "(the new key is then recorded), or connect once without checking with --insecure-host-key.")
    return "".join(kept), (message, hint)
