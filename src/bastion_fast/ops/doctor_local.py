"""The caller's side of ``doctor``: proxy and CA settings, local port permission, ssh/scp and an RDP client.

These are the local causes behind the classic ``az network bastion`` failures: a TLS-inspecting proxy whose CA is
not trusted (cli#27283), a tunnel on port 22 or 3389 refused by the OS for a normal user, no OpenSSH on Windows
(ext#7744). Every check is local except the proxy reachability probe (one TCP connect, 3 s at most).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import shutil
import socket
import sys
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

from bastion_fast.ops.findings import Finding

__all__ = ["check_ca_bundle", "check_local_port", "check_proxy", "check_tools", "local_findings"]

CALLER = "Caller"
RDP_CLIENTS_UNIX = ("xfreerdp3", "xfreerdp", "wlfreerdp", "sdl-freerdp", "remmina", "rdesktop")
MAC_RDP_APPS = ("/Applications/Windows App.app", "/Applications/Microsoft Remote Desktop.app")


def _redact_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.username or parts.password:
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
        return f"{parts.scheme}://***@{host}{port}"
    return url


def _bypassed(host: str, no_proxy: str) -> bool:
    host = host.lower()
    for raw in (e.strip().lower() for e in no_proxy.split(",")):
        if raw == "*":
            return True
        suffix = raw.lstrip("*").lstrip(".")
        if suffix and (host == suffix or host.endswith("." + suffix)):
            return True
    return False


async def check_proxy(arm_host: str, env: Mapping[str, str], *, connect_within: float = 3.0) -> list[Finding]:
    """HTTPS_PROXY/NO_PROXY as aiohttp and azure-core read them; is the proxy reachable?"""
    proxy = next((env[k] for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy") if env.get(k)), "")
    no_proxy = env.get("NO_PROXY") or env.get("no_proxy") or ""
    if not proxy:
        return [Finding("caller.proxy", CALLER, "ok", "No HTTPS proxy configured",
                        "Connections to ARM and the Bastion go direct.")]
    shown = _redact_url(proxy)
    if _bypassed(arm_host, no_proxy):
        return [Finding("caller.proxy", CALLER, "info", f"HTTPS_PROXY={shown} is set but NO_PROXY bypasses {arm_host}",
                        f"NO_PROXY={no_proxy}")]
    parts = urlsplit(proxy if "://" in proxy else "http://" + proxy)
    if not parts.hostname:
        return [Finding("caller.proxy", CALLER, "error", f"HTTPS_PROXY={shown} is not a URL",
                        fix="Set HTTPS_PROXY=http://HOST:PORT (or unset it).")]
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(parts.hostname, port), connect_within)
    except (OSError, TimeoutError) as exc:
        return [Finding("caller.proxy", CALLER, "error", f"The proxy {shown} does not accept connections",
                        f"{type(exc).__name__}: {exc}".strip(),
                        fix="Fix HTTPS_PROXY (host and port), or add the Azure hosts to NO_PROXY.")]
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return [Finding("caller.proxy", CALLER, "info", f"ARM and Bastion traffic goes through the proxy {shown}",
                    "A TLS-inspecting proxy needs its CA passed with --ca-bundle (or REQUESTS_CA_BUNDLE).")]


def check_ca_bundle(ca_bundle: str | None, env: Mapping[str, str]) -> list[Finding]:
    """The extra CA bundle (``--ca-bundle`` or the environment) must load; disabled verification is flagged."""
    from bastion_fast.exceptions import ConfigurationError
    from bastion_fast.tls import DISABLE_VERIFY_ENV, client_ssl_context, resolve_ca_bundle

    out: list[Finding] = []
    if env.get(DISABLE_VERIFY_ENV, "").strip():
        out.append(Finding("caller.tls.verify", CALLER, "warning",
                           f"{DISABLE_VERIFY_ENV} is set: TLS certificates are not verified",
                           fix=f"Unset {DISABLE_VERIFY_ENV} and pass your proxy's CA with --ca-bundle."))
    bundle = resolve_ca_bundle(ca_bundle)
    if not bundle:
        out.append(Finding("caller.tls.ca", CALLER, "ok", "System CA store only (no extra CA bundle)"))
        return out
    try:
        ctx = client_ssl_context(bundle)
    except ConfigurationError as exc:
        out.append(Finding("caller.tls.ca", CALLER, "error", f"The CA bundle {bundle} cannot be loaded",
                           str(exc), fix="Pass a readable PEM file with --ca-bundle (or fix BASTION_FAST_CA_BUNDLE / "
                           "SSL_CERT_FILE / REQUESTS_CA_BUNDLE)."))
        return out
    count = ctx.cert_store_stats().get("x509_ca", 0)
    out.append(Finding("caller.tls.ca", CALLER, "ok", f"Extra CA bundle {bundle} loads",
                       f"{count} CA certificates trusted in total."))
    return out


def _unprivileged_port_start() -> int | None:
    if os.name == "nt":
        return 0
    try:
        return int(Path("/proc/sys/net/ipv4/ip_unprivileged_port_start").read_text().strip())
    except (OSError, ValueError):
        return 1024  # macOS and BSDs keep the classic limit (macOS ≥ 10.14 relaxes it for 0.0.0.0 only)


def check_local_port(port: int | None, *, host: str = "127.0.0.1") -> list[Finding]:
    """Can this user listen on ``port``? Without a port: say where the privileged range starts."""
    root = hasattr(os, "geteuid") and os.geteuid() == 0
    if port is None:
        start = _unprivileged_port_start()
        if root or not start:
            return [Finding("caller.port", CALLER, "ok", "Any local port can be used")]
        return [Finding("caller.port", CALLER, "info", f"Local ports below {start} need administrator rights",
                        "Use --port 1024 or higher for tunnels (e.g. --port 50022 for SSH).")]
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno in {errno.EACCES, errno.EPERM}:
                return [Finding("caller.port", CALLER, "error", f"Not allowed to listen on {host}:{port}",
                                "Ports below 1024 are reserved for administrators on this system.",
                                fix="Use --port 1024 or higher (e.g. 50022), or grant the capability "
                                "(Linux: sysctl net.ipv4.ip_unprivileged_port_start).")]
            if exc.errno == errno.EADDRINUSE:
                return [Finding("caller.port", CALLER, "error", f"Local port {port} is already in use",
                                fix="Pick another --port, or stop the program holding it "
                                "(`ss -ltnp` / `netstat -ano`).")]
            return [Finding("caller.port", CALLER, "error", f"Cannot listen on {host}:{port}", str(exc))]
    return [Finding("caller.port", CALLER, "ok", f"Local port {port} is free and allowed")]


def check_tools(which: object = None) -> list[Finding]:
    """ssh and scp (for ``ssh``/``cp``) and an RDP client (for ``rdp``)."""
    find = which if callable(which) else shutil.which
    out: list[Finding] = []
    for tool, used_by in (("ssh", "bastion-fast ssh and ssh-config"), ("scp", "bastion-fast cp")):
        path = find(tool)
        if path:
            out.append(Finding(f"caller.tools.{tool}", CALLER, "ok", f"{tool} found", str(path)))
        else:
            fix = ("Install OpenSSH Client (Settings → Optional features) or add its folder to PATH."
                   if sys.platform == "win32" else "Install the OpenSSH client (e.g. apt install openssh-client).")
            out.append(Finding(f"caller.tools.{tool}", CALLER, "warning", f"{tool} not found on PATH",
                               f"Needed by {used_by}.", fix=fix))
    if sys.platform == "win32":
        rdp = find("mstsc")
        fix = "mstsc.exe ships with Windows; check %SystemRoot%\\System32 is on PATH."
    elif sys.platform == "darwin":
        rdp = next((app for app in MAC_RDP_APPS if Path(app).exists()), None)
        fix = "Install Windows App (formerly Microsoft Remote Desktop) from the App Store."
    else:
        rdp = next((p for p in (find(c) for c in RDP_CLIENTS_UNIX) if p), None)
        fix = "Install FreeRDP (e.g. apt install freerdp3-x11) or Remmina."
    if rdp:
        out.append(Finding("caller.tools.rdp", CALLER, "ok", "RDP client found", str(rdp)))
    else:
        out.append(Finding("caller.tools.rdp", CALLER, "info", "No RDP client found",
                           "Only needed by bastion-fast rdp.", fix=fix))
    return out


async def local_findings(*, arm_host: str, ca_bundle: str | None, port: int | None,
                         env: Mapping[str, str] | None = None) -> list[Finding]:
    """Every caller-side check."""
    env = os.environ if env is None else env
    out = await check_proxy(arm_host, env)
    out += check_ca_bundle(ca_bundle, env)
    out += check_local_port(port)
    out += check_tools()
    return out
