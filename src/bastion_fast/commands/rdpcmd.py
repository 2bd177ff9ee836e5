"""``bastion-fast rdp``: a desktop through Bastion on Windows, macOS and Linux (az's ``rdp`` is Windows-only).

Mode choice (as az, extended): ``--disable-gateway`` or IP connect → tunnel mode; otherwise gateway mode on Windows
(Bastion's RD Gateway ``.rdp``, no local tunnel) and tunnel mode elsewhere, unless ``--gateway`` asks for the gateway
file anyway (FreeRDP and Windows App can use it too). ``--auth-type AAD`` (= ``--enable-mfa``) needs the gateway.

Waiting: the RDP client runs in the foreground and the tunnel lives until it exits — and then for as long as a
connection through the tunnel is still open, because ``mstsc`` re-launches itself and its first process exits at
once (az waits on a Windows Job Object for the same reason). A client that exits before it ever connected gets a
short grace period for its relaunched copy to connect.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import logging
import os
import shutil
import sys
import time
from collections.abc import Callable
from typing import Any

from bastion_fast.exceptions import ConfigurationError, UsageError

__all__ = ["choose_gateway", "run_rdp"]

log = logging.getLogger("bastion_fast.commands.rdp")

RELAUNCH_GRACE = 30.0  # seconds a quickly-exited client has to reconnect through the tunnel


def choose_gateway(args: argparse.Namespace, options: Any) -> bool:
    """Whether to use Bastion's RD gateway (True) or a local tunnel (False).

    Raises:
        UsageError: AAD/MFA asked for where only tunnel mode is possible.
    """
    mfa = bool(getattr(args, "enable_mfa", False)) or getattr(args, "auth_type", None) == "aad"
    tunnel_reason = None
    if getattr(args, "disable_gateway", False):
        tunnel_reason = "--disable-gateway"
    elif options.target.ip_address:
        tunnel_reason = "--target-ip-address"
    if tunnel_reason:
        if mfa:
            raise UsageError(f"--auth-type AAD / --enable-mfa need Bastion's RD gateway, which {tunnel_reason} "
                             "turns off.", hint="Leave out --disable-gateway (and use --target-resource-id).")
        return False
    if getattr(args, "gateway", False) or mfa:
        return True
    return sys.platform == "win32"


async def _wait_for_connections(tunnel: Any, client_runtime: float) -> None:
    """Keep the tunnel while any connection is open; give a relaunched client a moment to connect."""
    from bastion_fast.commands.progress import tunnel_counters

    ever_connected = bool(tunnel.results) or tunnel.active > 0 or any(tunnel_counters(tunnel))
    if not ever_connected and client_runtime < 10.0:
        deadline = time.monotonic() + RELAUNCH_GRACE
        await _poll(lambda: time.monotonic() >= deadline or tunnel.active > 0 or bool(tunnel.results), 0.25)
    await _poll(lambda: tunnel.active == 0, 0.5)


async def _poll(done: Callable[[], bool], interval: float) -> None:
    """Check ``done`` every ``interval`` seconds (the tunnel has no event for "a connection closed")."""
    for _ in itertools.count():
        if done():
            return
        await asyncio.sleep(interval)


async def _edit(path: str) -> None:
    """``--configure`` without mstsc: open the .rdp in the user's editor first."""
    from bastion_fast.commands.tunnelling import run_child

    editor = os.environ.get("VISUAL") or os.environ.get("EDITOR")
    if sys.platform == "darwin" and not editor:
        await run_child(["open", "-W", "-t", path])
        return
    if not editor:
        editor = "notepad" if sys.platform == "win32" else (shutil.which("nano") or shutil.which("vi") or "")
    if not editor:
        raise ConfigurationError("--configure needs an editor for the .rdp file.",
                                 hint="Set EDITOR (e.g. EDITOR=nano).")
    import shlex

    await run_child([*shlex.split(editor), path])


async def run_rdp(args: argparse.Namespace, options: Any) -> int:
    """Open the desktop; return the client's exit status."""
    from bastion_fast.commands.rdp import (
        build_client_argv,
        fetch_gateway_rdp,
        find_rdp_client,
        private_rdp_file,
        tunnel_rdp_text,
    )
    from bastion_fast.commands.tunnelling import command_tunnel, run_child

    gateway = choose_gateway(args, options)
    client = find_rdp_client(getattr(args, "client", None))
    extra = list(getattr(args, "client_args", None) or [])
    configure = bool(getattr(args, "configure", False))
    edit_in_client = configure and client.kind == "mstsc"
    username = getattr(args, "username", None)
    if gateway:
        from bastion_fast.control import connect

        mfa = bool(getattr(args, "enable_mfa", False)) or getattr(args, "auth_type", None) == "aad"
        control = await connect(options)
        try:
            text = await fetch_gateway_rdp(endpoint=control.bastion.dns_name,
                                           resource_id=control.target_resource_id,
                                           resource_port=options.target.resource_port, enable_mfa=mfa,
                                           arm_token=await control.arm_token(), ca_bundle=options.ca_bundle)
        finally:
            await control.aclose()
        with private_rdp_file(text) as path:
            if configure and not edit_in_client:
                await _edit(str(path))
            log.info("opening the gateway .rdp with %s", client.path)
            return await run_child(build_client_argv(client, path, port=None, username=username,
                                                     edit=edit_in_client, extra=extra))
    async with command_tunnel(options) as tunnel:
        with private_rdp_file(tunnel_rdp_text(tunnel.port, username=username)) as path:
            if configure and not edit_in_client:
                await _edit(str(path))
            argv = build_client_argv(client, path, port=tunnel.port, username=username, edit=edit_in_client,
                                     extra=extra)
            log.warning("Remote desktop through Bastion on 127.0.0.1:%d (%s)", tunnel.port, client.path)
            started = time.monotonic()
            status = await run_child(argv)
            await _wait_for_connections(tunnel, time.monotonic() - started)
    return status
