"""Live tests against a real Azure Bastion — skipped unless ``BASTION_FAST_LIVE=1`` and a target is configured.

Whoever has a subscription sets::

    BASTION_FAST_LIVE=1
    BASTION_FAST_LIVE_NAME=<bastion name>            BASTION_FAST_LIVE_RESOURCE_GROUP=<bastion's group>
    BASTION_FAST_LIVE_SUBSCRIPTION=<sub id>          (else AZURE_SUBSCRIPTION_ID / az's default)
    BASTION_FAST_LIVE_TARGET_RESOURCE_ID=<VM id>     or BASTION_FAST_LIVE_TARGET_IP=<private IP> (IP connect)
    BASTION_FAST_LIVE_RESOURCE_PORT=22               (an sshd must listen there)
    BASTION_FAST_LIVE_AUTH=default                   (or cli, environment, managed-identity, …)

and signs in (``az login``, a service principal in the environment, a managed identity). For a dry run against
the emulator, ``BASTION_FAST_ARM_ENDPOINT`` and ``BASTION_FAST_CA_BUNDLE`` are honoured too. Without usable
credentials the tests skip with the sign-in error. They check what no emulator can: the real ARM answer, the real
token API (tokens' shapes, a node id), the DELETE status the service uses, and an SSH banner through the tunnel.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import re
import signal
import sys

import pytest

from bastion_fast.control import ConnectionOptions, TunnelTarget, connect
from bastion_fast.exceptions import AuthenticationError

pytestmark = [
    pytest.mark.live,
    pytest.mark.skipif(os.environ.get("BASTION_FAST_LIVE") != "1", reason="live Azure tests need BASTION_FAST_LIVE=1"),
]

ENV = "BASTION_FAST_LIVE_"


def _env(name: str) -> str | None:
    value = os.environ.get(ENV + name, "").strip()
    return value or None


def live_options() -> ConnectionOptions:
    name, group = _env("NAME"), _env("RESOURCE_GROUP")
    rid, ip = _env("TARGET_RESOURCE_ID"), _env("TARGET_IP")
    if not (name and group and (rid or ip)):
        pytest.skip(f"set {ENV}NAME, {ENV}RESOURCE_GROUP and {ENV}TARGET_RESOURCE_ID or {ENV}TARGET_IP")
    port = int(_env("RESOURCE_PORT") or "22")
    return ConnectionOptions(name=name, resource_group=group, target=TunnelTarget(rid, ip, port),
                             subscription=_env("SUBSCRIPTION"), auth=_env("AUTH") or "default",
                             tenant=_env("TENANT"), cloud=_env("CLOUD"), command="tunnel",
                             arm_endpoint=os.environ.get("BASTION_FAST_ARM_ENDPOINT") or None)


async def live_plane():  # type: ignore[no-untyped-def]
    try:
        return await connect(live_options())
    except AuthenticationError as exc:
        pytest.skip(f"no usable Azure credentials: {exc}")


async def test_live_grant_shapes_and_cleanup() -> None:
    plane = await live_plane()
    try:
        grant = await plane.open_grant()
        assert re.fullmatch(r"[0-9a-fA-F]{64}", grant.auth_token), "authToken: 64 hex characters (PROTOCOL §2.3)"
        assert grant.websocket_token and grant.websocket_token != grant.auth_token
        if not plane.bastion.developer:
            assert grant.node_id is not None
            ipaddress.ip_address(grant.node_id)  # a private IPv4 naming the issuing instance
            assert grant.websocket_url.endswith(f"?X-Node-Id={grant.node_id}")
        await plane.close_grant(grant)
        # a second DELETE of the same token is "already gone", never an error
        await plane.close_grant(grant)
    finally:
        await plane.aclose()


async def test_live_tunnel_shows_an_ssh_banner() -> None:
    opts = live_options()
    if opts.target.resource_port != 22:
        pytest.skip("the banner check needs an SSH target (resource port 22)")
    args = ["tunnel", "-n", opts.name, "-g", opts.resource_group, "--resource-port", "22", "--port", "0",
            "--output", "json", "--auth", opts.auth]
    args += ["--target-resource-id", opts.target.resource_id] if opts.target.resource_id else \
        ["--target-ip-address", str(opts.target.ip_address)]
    for flag, value in (("--subscription", opts.subscription), ("--tenant", opts.tenant), ("--cloud", opts.cloud)):
        if value:
            args += [flag, value]
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "bastion_fast", *args,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), 120)
        if not line:
            stderr = (await proc.stderr.read()).decode(errors="replace")
            if "Could not get an Azure token" in stderr:
                pytest.skip(f"no usable Azure credentials: {stderr.strip()}")
            pytest.fail(f"the tunnel did not become ready: {stderr}")
        port = json.loads(line)["port"]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        banner = await asyncio.wait_for(reader.readline(), 60)
        assert banner.startswith(b"SSH-2.0-"), banner
        writer.close()
        await writer.wait_closed()
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(proc.wait(), 30)
            except TimeoutError:
                proc.kill()
                await proc.wait()
