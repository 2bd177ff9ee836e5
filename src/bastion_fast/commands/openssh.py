"""Building OpenSSH command lines for a target behind the tunnel, and reading OpenSSH's log afterwards.

*Argument order.* OpenSSH keeps the **first** value it sees for an option, so the user's own options (after ``--``)
go first and can override ours (``-o StrictHostKeyChecking=…``, ``-o User=…``); then ours; then the destination;
then the user's remote command. :func:`split_ssh_args` separates the user's options from their command with
OpenSSH's own option table.

*The log.* OpenSSH writes diagnostics to stderr, where a changed host key shows up as a 15-line banner that ends in
"Host key verification failed." — with no word about Bastion targets. With ``-E FILE`` those lines go to a file
instead; :class:`SshLog` copies them to stderr as they come (with ``\\r\\n`` so an interactive session in raw mode
does not staircase) and holds back the host-key banner, which :func:`bastion_fast.commands.hostkeys.explain_ssh_log`
replaces with one clear message. When the user asks for ``-v``, ``-q``, ``-E`` or ``-y`` themselves, we leave
logging alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["SSH_OPTS_WITH_ARG", "SshLog", "split_ssh_args", "user_controls_logging"]

# ssh(1)'s getopt string: letters followed by ':' take an argument (OpenSSH 9.x).
_SSH_GETOPT = "1246ab:c:e:fgi:kl:m:no:p:qstvxAB:CD:E:F:GI:J:KL:MNO:P:Q:R:S:TVw:W:XYy"
_SCP_GETOPT = "12346ABCTdfOpqRrstvD:F:J:M:P:S:X:c:i:l:o:"
_SFTP_GETOPT = "1246AafNpqrvCB:D:F:J:l:P:R:S:s:b:c:i:o:X:"


def _with_arg(getopt: str) -> frozenset[str]:
    return frozenset(getopt[i] for i in range(len(getopt) - 1) if getopt[i + 1] == ":" and getopt[i] != ":")


SSH_OPTS_WITH_ARG = _with_arg(_SSH_GETOPT)
SCP_OPTS_WITH_ARG = _with_arg(_SCP_GETOPT)


def split_ssh_args(args: Sequence[str], with_arg: frozenset[str] = SSH_OPTS_WITH_ARG) -> tuple[list[str], list[str]]:
    """Split the user's extra arguments into (options, remote command), as ssh's getopt would."""
    options: list[str] = []
    items = list(args)
    i = 0
    while i < len(items):
        item = items[i]
        if item == "--":
            return options, items[i + 1:]
        if not item.startswith("-") or item == "-":
            return options, items[i:]
        options.append(item)
        # -L8080:x:80 carries its value; -L 8080:x:80 takes the next word; -vvv is flags only
        for pos, letter in enumerate(item[1:], start=1):
            if letter in with_arg:
                if pos == len(item) - 1 and i + 1 < len(items):
                    options.append(items[i + 1])
                    i += 1
                break
        i += 1
    return options, []


def user_controls_logging(options: Sequence[str]) -> bool:
    """True when the user's options set OpenSSH's logging themselves (-v, -q, -y, -E FILE, -o LogLevel=…)."""
    i = 0
    while i < len(options):
        item = options[i]
        i += 1
        if not item.startswith("-"):
            continue
        for pos, letter in enumerate(item[1:], start=1):
            if letter in "vqyE":
                return True
            if letter in SSH_OPTS_WITH_ARG:
                value = item[pos + 1:]
                if not value and i < len(options):
                    value = options[i]
                    i += 1
                if letter == "o" and value.replace(" ", "").lower().startswith("loglevel"):
                    return True
                break
    return False


@dataclass
class SshLog:
    """OpenSSH's ``-E`` log file, relayed to stderr while it grows (host-key banner held back)."""

    path: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="bastion-fast-ssh-")) / "ssh.log")
    interval: float = 0.2
    _offset: int = 0
    _held: list[str] = field(default_factory=list)
    _holding: bool = False
    _task: asyncio.Task[None] | None = None
    text: str = ""

    def args(self) -> list[str]:
        return ["-E", str(self.path)]

    def start(self) -> None:
        self.path.touch(mode=0o600)
        self._task = asyncio.get_running_loop().create_task(self._follow())

    async def _follow(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            self._pump(final=False)

    def _pump(self, *, final: bool) -> None:
        try:
            with self.path.open("rb") as fh:
                fh.seek(self._offset)
                raw = fh.read()
        except OSError:
            return
        if not final:
            raw = raw[: raw.rfind(b"\n") + 1]
        if not raw:
            return
        self._offset += len(raw)
        complete = raw.decode("utf-8", errors="replace")
        self.text += complete
        out = []
        for line in complete.splitlines():
            if line.startswith("@@@") or self._holding:
                self._holding = True
                self._held.append(line)
                continue
            out.append(line)
        if out:
            newline = "\r\n" if sys.stderr.isatty() else "\n"
            sys.stderr.write(newline.join(out) + newline)
            sys.stderr.flush()

    async def stop(self) -> str:
        """Stop following; return the held-back lines (the host-key banner, if any) as text."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._pump(final=True)
        return "\n".join(self._held) + ("\n" if self._held else "")

    def cleanup(self) -> None:
        with contextlib.suppress(OSError):
            self.path.unlink()
        with contextlib.suppress(OSError):
            os.rmdir(self.path.parent)
