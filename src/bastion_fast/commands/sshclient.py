"""Find the user's OpenSSH programs (``ssh``, ``scp``, ``sftp``, ``ssh-keygen``) and run them without a shell.

az hard-codes ``%SystemRoot%\\System32\\OpenSSH\\ssh.exe`` on Windows and runs it with ``shell=True``, and offers no
way to pick another client (azure-cli-extensions#7744). Here the order is:

1. ``--ssh-client-folder DIR`` (the user's explicit choice; a missing program there is an error, not a fallback);
2. ``PATH`` (``shutil.which``), so Git for Windows, MSYS2, Homebrew or a custom build win when first on PATH;
3. on Windows, the inbox OpenSSH folder — ``%SystemRoot%\\Sysnative\\OpenSSH`` first when a 32-bit Python runs on
   64-bit Windows (``System32`` is redirected for it), then ``%SystemRoot%\\System32\\OpenSSH``.

Programs always run from an argument list (never a shell), so paths and arguments with spaces or quotes pass
through unchanged.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from bastion_fast.exceptions import ConfigurationError

__all__ = ["OPENSSH_TOOLS", "find_tool", "install_hint", "windows_openssh_dirs"]

OPENSSH_TOOLS = ("ssh", "scp", "sftp", "ssh-keygen")


def _is_windows() -> bool:
    return sys.platform == "win32"


def windows_openssh_dirs() -> list[Path]:
    """The inbox OpenSSH folders to try on Windows, most specific first."""
    root = Path(os.environ.get("SYSTEMROOT") or os.environ.get("WINDIR") or r"C:\Windows")
    dirs = []
    if sys.maxsize <= 2**32 and os.environ.get("PROCESSOR_ARCHITEW6432"):
        dirs.append(root / "Sysnative" / "OpenSSH")
    dirs.append(root / "System32" / "OpenSSH")
    return dirs


def install_hint(tool: str = "ssh") -> str:
    """How to get OpenSSH on this platform."""
    if _is_windows():
        return ("Install the OpenSSH client (Settings → Apps → Optional features → OpenSSH Client, or "
                "`Add-WindowsCapability -Online -Name OpenSSH.Client~~~~0.0.1.0` as administrator), "
                "or point --ssh-client-folder at the folder that has ssh.exe.")
    if sys.platform == "darwin":
        return f"macOS ships {tool} in /usr/bin; check PATH, or pass --ssh-client-folder."
    return (f"Install the OpenSSH client (e.g. `apt-get install openssh-client`, `dnf install openssh-clients`), "
            f"or pass --ssh-client-folder with the folder that has {tool}.")


def _candidates(folder: Path, tool: str) -> list[Path]:
    names = [tool + ".exe", tool] if _is_windows() else [tool]
    return [folder / name for name in names]


def find_tool(tool: str = "ssh", client_folder: str | os.PathLike[str] | None = None) -> str:
    """The full path of an OpenSSH program.

    Raises:
        ConfigurationError: the program is not in ``client_folder`` (when given) or anywhere we look.
    """
    if client_folder:
        folder = Path(client_folder).expanduser()
        for candidate in _candidates(folder, tool):
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return str(candidate)
        raise ConfigurationError(
            f"--ssh-client-folder {folder} has no {tool!r} program.",
            hint=f"Point --ssh-client-folder at the folder that contains {tool}"
                 f"{'.exe' if _is_windows() else ''} (for Windows' built-in client: "
                 r"C:\Windows\System32\OpenSSH).",
        )
    found = shutil.which(tool)
    if found:
        return found
    if _is_windows():
        for folder in windows_openssh_dirs():
            for candidate in _candidates(folder, tool):
                if candidate.is_file():
                    return str(candidate)
    raise ConfigurationError(f"OpenSSH's {tool!r} was not found on PATH.", hint=install_hint(tool))
