"""``bastion-fast emulator``: run a local Azure Bastion (ARM subset + data plane) until SIGINT/SIGTERM.

Prints exactly one JSON line on stdout once every listener is up (flushed)::

    {"arm_endpoint": "https://127.0.0.1:P", "dns_name": "127.0.0.1:Q", "ca_file": ".../ca.pem",
     "subscription": "...", "resource_group": "...", "bastion": "...", "token": "<unsigned ARM JWT>", "pid": N}

Logs go to stderr. Values come from ``--config FILE`` (TOML, see ``bastion_fast.emulator.config``), then the flags
below, which win. On SIGINT/SIGTERM every live WebSocket is closed with 1001 and the command exits 0.
"""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["HELP", "NAME", "build_config", "register", "run"]

NAME = "emulator"
HELP = "run a local Azure Bastion (ARM + data plane) for tests and demos; prints one JSON line when ready"


def register(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("listeners")
    g.add_argument("--port", type=int, default=None, metavar="Q",
                   help="data-plane port of the default Bastion (default 0 = a free port)")
    g.add_argument("--arm-port", dest="arm_port", type=int, default=None, metavar="P",
                   help="ARM port (default 0 = a free port)")
    g.add_argument("--bind", default=None, metavar="ADDR", help="listen address (default 127.0.0.1)")
    g.add_argument("--allow-remote", dest="allow_remote", action="store_true", default=None,
                   help="allow a non-loopback --bind (the emulator accepts any token: trusted networks only)")
    g.add_argument("--config", metavar="FILE", default=None, help="TOML config file; flags override it")
    g.add_argument("--state-dir", dest="state_dir", metavar="DIR", default=None,
                   help="where ca.pem and the server certificate are kept (default: the user cache dir)")
    g.add_argument("--insecure-http", dest="insecure_http", action="store_true", default=None,
                   help="serve plain HTTP/WS instead of HTTPS/WSS (clients will refuse bearer tokens over it)")

    b = parser.add_argument_group("default Bastion host")
    b.add_argument("-n", "--name", default=None, help="Bastion name (default bastion-emulator)")
    b.add_argument("-g", "--resource-group", dest="resource_group", default=None,
                   help="resource group (default rg-emulator)")
    b.add_argument("--subscription", default=None, help="subscription id (default all zeros)")
    b.add_argument("--sku", default=None, choices=("Basic", "Standard", "Premium", "Developer"),
                   help="SKU (default Standard)")
    b.add_argument("--no-tunneling", dest="no_tunneling", action="store_true", default=None,
                   help="enableTunneling=false (token requests get 'Tunneling is disabled')")
    b.add_argument("--ip-connect", dest="ip_connect", action="store_true", default=None,
                   help="enableIpConnect=true")
    b.add_argument("--omit-false-booleans", dest="omit_false_booleans", action="store_true", default=None,
                   help="leave false booleans out of ARM JSON (with --no-tunneling: enableTunneling absent)")
    b.add_argument("--nodes", type=int, default=None, help="instances with distinct nodeIds (default 2)")

    t = parser.add_argument_group("targets")
    t.add_argument("--default-target", dest="default_target", default=None, metavar="SPEC",
                   help="HOST:PORT | echo | sink | source[:N] for unmapped sessions (default echo; 'none' refuses)")
    t.add_argument("--target", dest="target_map", action="append", default=None, metavar="KEY=SPEC",
                   help="map a VM resource id, 'id:port', IP or 'ip:port' to a target (repeatable)")

    k = parser.add_argument_group("strictness knobs")
    k.add_argument("--strict-auth", dest="strict_auth", action="store_true", default=None,
                   help="require JWT bearers for the ARM audience that are not expired (signature not checked)")
    k.add_argument("--token-ttl", dest="token_ttl", type=float, default=None, metavar="S",
                   help="websocketToken lifetime in seconds (default 60; tokens are single-use)")
    k.add_argument("--max-client-frame", dest="max_client_frame", type=int, default=None, metavar="BYTES",
                   help="largest client frame accepted, else close 1009 (default 65536)")
    k.add_argument("--reject-continuation", dest="reject_continuation", action="store_true", default=None,
                   help="close 1002 on continuation frames")
    k.add_argument("--allow-unmasked", dest="allow_unmasked", action="store_true", default=None,
                   help="accept unmasked client frames (default: reject with 1002)")
    k.add_argument("--server-ping-interval", dest="server_ping_interval", type=float, default=None, metavar="S",
                   help="ping every S seconds (default off)")
    k.add_argument("--idle-timeout", dest="idle_timeout", type=float, default=None, metavar="S",
                   help="close 1001 after S idle seconds (default off)")
    k.add_argument("--server-frame-size", dest="server_frame_size", type=int, default=None, metavar="BYTES",
                   help="frame size sent to clients (default 16384)")
    k.add_argument("--omit-upgrade-headers", dest="omit_upgrade_headers", action="store_true", default=None,
                   help="send the 101 without Upgrade/Connection headers")

    f = parser.add_argument_group("faults (also at run time: POST /_emulator/faults)")
    f.add_argument("--drop-after-bytes", dest="drop_after_bytes", type=int, default=None, metavar="N")
    f.add_argument("--drop-after-seconds", dest="drop_after_seconds", type=float, default=None, metavar="S")
    f.add_argument("--close-code", dest="close_code", type=int, default=None, choices=(1000, 1001, 1008, 1011, 1012),
                   help="close every WebSocket with this code after --close-after-seconds")
    f.add_argument("--close-after-seconds", dest="close_after_seconds", type=float, default=None, metavar="S")
    f.add_argument("--token-delay", dest="token_delay", type=float, default=None, metavar="S",
                   help="delay POST /api/tokens answers")
    f.add_argument("--token-status", dest="token_status", type=int, default=None,
                   choices=(401, 403, 500, 502, 503), help="fail POST /api/tokens (502 = HTML gateway page)")
    f.add_argument("--handshake-status", dest="handshake_status", type=int, default=None,
                   choices=(403, 404, 500, 502, 503), help="refuse WebSocket handshakes")


def build_config(args: argparse.Namespace) -> Any:
    """The :class:`EmulatorConfig` from ``--config`` plus the flags."""
    from pathlib import Path

    from bastion_fast.emulator.config import EmulatorConfig, load_toml
    from bastion_fast.exceptions import UsageError

    config = load_toml(args.config) if args.config else EmulatorConfig()
    for attr in ("port", "arm_port", "bind", "allow_remote", "insecure_http", "subscription", "omit_false_booleans"):
        value = getattr(args, attr)
        if value is not None:
            setattr(config, attr, value)
    if args.state_dir is not None:
        config.state_dir = Path(args.state_dir).expanduser()
    if args.default_target is not None:
        config.default_target = None if args.default_target.lower() in ("", "none") else args.default_target
    for item in args.target_map or []:
        key, sep, spec = item.rpartition("=")
        if not sep or not key or not spec:
            raise UsageError(f"--target {item!r} is not KEY=SPEC.", hint="Example: --target 10.1.0.4:22=echo")
        config.targets[key] = spec
    bastion = config.bastion
    if args.name is not None:
        bastion.name = args.name
    if args.resource_group is not None:
        bastion.resource_group = args.resource_group
    if args.sku is not None:
        bastion.sku = args.sku
    if args.no_tunneling:
        bastion.enable_tunneling = False
    if args.ip_connect:
        bastion.enable_ip_connect = True
    if args.nodes is not None:
        bastion.nodes = args.nodes
    knobs = config.knobs
    for attr in ("strict_auth", "token_ttl", "max_client_frame", "reject_continuation", "server_ping_interval",
                 "idle_timeout", "server_frame_size", "omit_upgrade_headers"):
        value = getattr(args, attr)
        if value is not None:
            setattr(knobs, attr, value)
    if args.allow_unmasked:
        knobs.require_mask = False
    faults = {
        name: getattr(args, name)
        for name in ("drop_after_bytes", "drop_after_seconds", "close_code", "close_after_seconds", "token_delay",
                     "token_status", "handshake_status")
        if getattr(args, name) is not None
    }
    if faults:
        from bastion_fast.emulator.faults import FaultConfig

        config.faults = FaultConfig.from_mapping(faults, where="command line", base=config.faults)
    return config


def run(args: argparse.Namespace) -> int:
    from bastion_fast.loop import run as run_loop

    config = build_config(args)
    return run_loop(_serve(config))


async def _serve(config: Any) -> int:
    import asyncio
    import contextlib
    import json
    import logging
    import signal
    import sys

    from bastion_fast.emulator.core import Emulator

    log = logging.getLogger("bastion_fast.emulator")
    emu = Emulator(config)
    await emu.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        # Windows has no loop signal handlers: Ctrl+C arrives as KeyboardInterrupt there.
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    try:
        sys.stdout.write(json.dumps(emu.info) + "\n")
        sys.stdout.flush()
        log.warning("bastion-fast emulator ready: ARM %s, data plane %s, CA %s (Ctrl+C to stop)",
                    emu.info["arm_endpoint"], emu.info["dns_name"], emu.info["ca_file"])
        await stop.wait()
        log.warning("stopping: closing %d live session(s)", len(emu.ledger.live()))
    finally:
        await emu.stop()
    return 0
