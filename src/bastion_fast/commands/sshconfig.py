"""OpenSSH ``Host`` blocks that reach VMs through ``bastion-fast proxy`` — so plain ``ssh web1``, ``scp``, ``rsync``,
``git``, Ansible and VS Code Remote-SSH work with no tunnel terminal.

Each block is wrapped in marker comments naming the host, so ``--write FILE`` can replace the block for that host on
a second run instead of appending a duplicate (idempotent), and leave everything else in the file byte for byte.

``ProxyCommand`` is run by OpenSSH through ``$SHELL -c`` on Unix (CreateProcess on Windows), so the command line is
quoted for that shell, and ``%`` is doubled because OpenSSH expands ``%h``-style tokens in it. The program itself is
this very installation (``…/bin/bastion-fast`` next to the running Python, else ``python -m bastion_fast``), so the
block keeps working whatever is first on PATH.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bastion_fast.commands.hostkeys import HostKeyPolicy, ssh_option_value

__all__ = [
    "HostEntry",
    "bastion_fast_command",
    "command_line",
    "render_block",
    "write_blocks",
]

_BEGIN = "# >>> bastion-fast {host} >>>"
_END = "# <<< bastion-fast {host} <<<"
_HOST_SAFE = re.compile(r"^[A-Za-z0-9._-]+$")


def bastion_fast_command() -> list[str]:
    """How to run this installation of bastion-fast from another program."""
    exe = Path(sys.executable)
    names = ["bastion-fast.exe", "bastion-fast"] if sys.platform == "win32" else ["bastion-fast"]
    for folder in (exe.parent, exe.parent / "Scripts"):
        for name in names:
            script = folder / name
            if script.is_file():
                return [str(script)]
    return [str(exe), "-m", "bastion_fast"]


def command_line(argv: Sequence[str]) -> str:
    """Quote ``argv`` for OpenSSH's ProxyCommand (its shell on Unix, CreateProcess on Windows); escape ``%``."""
    text = subprocess.list2cmdline(list(argv)) if sys.platform == "win32" else shlex.join(argv)
    return text.replace("%", "%%")


@dataclass(frozen=True)
class HostEntry:
    """One ``Host`` block: its alias, how to reach it (proxy argv), and the login settings."""

    host: str
    proxy_argv: list[str]
    host_key: HostKeyPolicy
    user: str | None = None
    identity_file: str | None = None
    certificate_file: str | None = None
    extra: dict[str, str] = field(default_factory=dict)
    comment: str | None = None

    def __post_init__(self) -> None:
        if not _HOST_SAFE.match(self.host):
            raise ValueError(f"host alias {self.host!r} may only contain letters, digits, '.', '_' and '-'")


def render_block(entry: HostEntry) -> str:
    """The marked ``Host`` block for ``entry`` (ends with a newline)."""
    lines = [_BEGIN.format(host=entry.host)]
    if entry.comment:
        lines += [f"# {line}" for line in entry.comment.splitlines()]
    lines.append(f"Host {entry.host}")
    options: dict[str, str] = {"HostName": entry.host}
    if entry.user:
        options["User"] = ssh_option_value(entry.user)
    options["ProxyCommand"] = command_line(entry.proxy_argv)
    options.update(entry.host_key.options())
    if entry.identity_file:
        options["IdentityFile"] = ssh_option_value(entry.identity_file)
    if entry.certificate_file:
        options["CertificateFile"] = ssh_option_value(entry.certificate_file)
    if entry.identity_file or entry.certificate_file:
        options["IdentitiesOnly"] = "yes"
    options.update(entry.extra)
    lines += [f"    {name} {value}" for name, value in options.items()]
    lines.append(_END.format(host=entry.host))
    return "\n".join(lines) + "\n"


def _replace_block(text: str, host: str, block: str) -> tuple[str, bool]:
    begin = _BEGIN.format(host=host)
    end = _END.format(host=host)
    lines = text.splitlines(keepends=True)
    out: list[str] = []
    replaced = False
    i = 0
    while i < len(lines):
        if lines[i].rstrip("\r\n") == begin:
            j = i
            while j < len(lines) and lines[j].rstrip("\r\n") != end:
                j += 1
            if j < len(lines):  # a complete block: swap it
                if not replaced:
                    out.append(block)
                    replaced = True
                i = j + 1
                continue
        out.append(lines[i])
        i += 1
    return "".join(out), replaced


def write_blocks(path: Path, blocks: dict[str, str]) -> list[tuple[str, str]]:
    """Put each host's block into ``path``: replace the marked block of that host, else append.

    Returns ``(host, "added" | "updated" | "unchanged")`` per host. The file is created 0600 when missing (OpenSSH
    refuses configs others can write) and replaced atomically.
    """
    try:
        original = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        original = ""
    text = original
    outcome: list[tuple[str, str]] = []
    for host, block in blocks.items():
        updated, replaced = _replace_block(text, host, block)
        if replaced:
            outcome.append((host, "unchanged" if updated == text else "updated"))
            text = updated
        else:
            if text and not text.endswith("\n"):
                text += "\n"
            if text and not text.endswith("\n\n"):
                text += "\n"
            text += block
            outcome.append((host, "added"))
    if text != original:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.bastion-fast.tmp")
        mode = path.stat().st_mode & 0o777 if path.exists() else 0o600
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
        os.replace(tmp, path)
    return outcome
