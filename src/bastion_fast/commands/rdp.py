"""RDP: ``.rdp`` files, Bastion's gateway ``.rdp`` (``GET /api/rdpfile``), and finding an RDP client on any OS.

az's ``rdp`` is Windows-only (azure-cli#25151, #25678). Here:

* **Gateway mode** (Windows default, as in az; ``--gateway`` elsewhere): Bastion itself acts as RD Gateway; the
  ``.rdp`` comes from ``GET https://{endpoint}/api/rdpfile?resourceId=…&format=rdp&rdpport=…&enablerdsaad=…`` with
  the ARM bearer token (PROTOCOL.md §6.3: the query is not URL-encoded and the booleans are Python's
  ``True``/``False``, exactly as az sends them). No local tunnel.
* **Tunnel mode** (``--disable-gateway``, IP connect, and by default on macOS/Linux): a local tunnel plus a generated
  ``.rdp`` with ``full address:s:127.0.0.1:PORT`` (az writes ``localhost``, which some clients try on ``::1``
  first — the listener is IPv4).

The ``.rdp`` is written 0600 into a private temp directory that is removed after the client exits: the gateway file
carries a one-time credential.

Clients: ``mstsc`` on Windows; ``xfreerdp``/``xfreerdp3``/``wlfreerdp``/``sdl-freerdp`` on Linux and BSD (with
``/v:127.0.0.1:PORT`` in tunnel mode, since FreeRDP's ``.rdp`` parsing varies by version); on macOS ``open -W`` hands
the file to Microsoft's "Windows App" (formerly "Microsoft Remote Desktop") and waits for it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from bastion_fast.exceptions import ConfigurationError, ControlPlaneError

__all__ = [
    "RdpClient",
    "build_client_argv",
    "fetch_gateway_rdp",
    "find_rdp_client",
    "private_rdp_file",
    "tunnel_rdp_text",
]

FREERDP_NAMES = ("xfreerdp", "xfreerdp3", "wlfreerdp", "wlfreerdp3", "sdl-freerdp", "sdl-freerdp3")
MAC_APPS = ("Windows App", "Microsoft Remote Desktop")


def tunnel_rdp_text(port: int, *, host: str = "127.0.0.1", username: str | None = None) -> str:
    """The ``.rdp`` for a local tunnel (az's three settings, plus the user name when known)."""
    lines = [
        f"full address:s:{host}:{port}",
        f"alternate full address:s:{host}:{port}",
        "use multimon:i:0",
    ]
    if username:
        lines.append(f"username:s:{username}")
    return "\r\n".join(lines) + "\r\n"


@contextlib.contextmanager
def private_rdp_file(text: str) -> Iterator[Path]:
    """Write ``text`` to ``conn_<uuid>.rdp`` (0600) in a private temp dir; remove both afterwards."""
    directory = Path(tempfile.mkdtemp(prefix="bastion-fast-rdp-"))
    path = directory / f"conn_{uuid.uuid4()}.rdp"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
        yield path
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@dataclass(frozen=True)
class RdpClient:
    """An RDP client program and how to drive it: ``kind`` is ``mstsc``, ``freerdp``, ``macos`` or ``custom``."""

    kind: str
    path: str


def _platform() -> str:
    if sys.platform == "win32":
        return "windows"
    if sys.platform == "darwin":
        return "macos"
    return "unix"


def find_rdp_client(override: str | None = None) -> RdpClient:
    """The RDP client to launch: ``--client PATH`` when given, else the platform's usual one.

    Raises:
        ConfigurationError: nothing usable is installed (the hint says what to install).
    """
    if override:
        found = shutil.which(override) or (override if Path(override).is_file() else None)
        if not found:
            raise ConfigurationError(f"--client {override!r} is not an executable file or a program on PATH.",
                                     hint="Pass the full path of your RDP client.")
        name = Path(found).name.lower()
        if name.startswith("mstsc"):
            kind = "mstsc"
        elif "freerdp" in name:
            kind = "freerdp"
        else:
            kind = "custom"
        return RdpClient(kind, found)
    platform = _platform()
    if platform == "windows":
        root = Path(os.environ.get("SYSTEMROOT") or r"C:\Windows")
        for candidate in (shutil.which("mstsc"), str(root / "System32" / "mstsc.exe")):
            if candidate and Path(candidate).exists():
                return RdpClient("mstsc", candidate)
        raise ConfigurationError("mstsc.exe (Remote Desktop Connection) was not found.",
                                 hint="Pass another client with --client PATH.")
    if platform == "macos":
        for app in MAC_APPS:
            for base in (Path("/Applications"), Path.home() / "Applications"):
                if (base / f"{app}.app").exists():
                    return RdpClient("macos", app)
        freerdp = _freerdp()
        if freerdp is not None:
            return freerdp
        raise ConfigurationError("No RDP client found (Windows App / Microsoft Remote Desktop, or FreeRDP).",
                                 hint="Install Windows App from the Mac App Store (or `brew install freerdp`), or "
                                      "pass --client PATH.")
    freerdp = _freerdp()
    if freerdp is not None:
        return freerdp
    raise ConfigurationError("No RDP client found (xfreerdp, wlfreerdp or sdl-freerdp).",
                             hint="Install FreeRDP (e.g. `apt-get install freerdp2-x11`, `dnf install freerdp`), or "
                                  "pass --client PATH.")


def _freerdp() -> RdpClient | None:
    """The first FreeRDP client on PATH, in :data:`FREERDP_NAMES` order."""
    for name in FREERDP_NAMES:
        found = shutil.which(name)
        if found:
            return RdpClient("freerdp", found)
    return None


def build_client_argv(client: RdpClient, rdp_file: Path, *, port: int | None, host: str = "127.0.0.1",
                      username: str | None = None, edit: bool = False, extra: Sequence[str] = ()) -> list[str]:
    """The command line that opens ``rdp_file`` (tunnel mode: also the local ``port``) with ``client``."""
    if client.kind == "mstsc":
        return [client.path, *(["/edit"] if edit else []), str(rdp_file), *extra]
    if client.kind == "macos":
        # -W waits for the app to quit, -n opens a new instance so we wait for *this* session
        return ["open", "-W", "-n", "-a", client.path, str(rdp_file), *(["--args", *extra] if extra else [])]
    if client.kind == "freerdp":
        argv = [client.path, str(rdp_file)]
        if port is not None:
            argv.append(f"/v:{host}:{port}")
        if username:
            argv.append(f"/u:{username}")
        return argv + list(extra)
    return [client.path, str(rdp_file), *extra]


async def fetch_gateway_rdp(*, endpoint: str, resource_id: str, resource_port: int, enable_mfa: bool,
                            arm_token: str, ca_bundle: str | None = None, request_timeout: float = 30.0) -> str:
    """``GET /api/rdpfile`` from the Bastion with the ARM bearer token and return the ``.rdp`` text.

    Raises:
        ControlPlaneError: the service refused (its message is included) or could not be reached.
    """
    import aiohttp
    import yarl

    from bastion_fast.tls import client_ssl_context

    # Sent exactly like az: no URL-encoding of the resource id, Python booleans.
    url = (f"https://{endpoint}/api/rdpfile?resourceId={resource_id}&format=rdp&rdpport={resource_port}"
           f"&enablerdsaad={enable_mfa!s}")
    headers = {"Authorization": f"Bearer {arm_token}", "Accept": "*/*", "Content-Type": "application/json"}
    connector = aiohttp.TCPConnector(ssl=client_ssl_context(ca_bundle))
    try:
        limit = aiohttp.ClientTimeout(total=request_timeout)
        async with aiohttp.ClientSession(connector=connector, trust_env=True) as session, \
                session.get(yarl.URL(url, encoded=True), headers=headers, timeout=limit) as response:
            body = await response.text(errors="replace")
            if response.status != 200:
                message = body.strip()
                with contextlib.suppress(ValueError):
                    import json

                    message = str(json.loads(body).get("message") or message)
                raise ControlPlaneError(
                    f"Bastion refused the RDP file request (HTTP {response.status}): {message[:300]}",
                    hint="Check the target and your role on it, or use the tunnel mode with --disable-gateway.")
            return body
    except aiohttp.ClientError as exc:
        raise ControlPlaneError(f"Cannot reach the Bastion at {endpoint} for the RDP file: {exc}.",
                                hint="Check your network and proxy settings, or use --disable-gateway.") from exc
