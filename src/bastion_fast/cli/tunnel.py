"""``bastion-fast tunnel``: az's ``network bastion tunnel`` with the same flags, done properly.

Same as az: ``-n/--name``, ``-g/--resource-group``, ``--target-resource-id``, ``--target-ip-address``,
``--resource-port``, ``--port`` (required; 0 = a free port), ``--timeout`` (maximum lifetime in seconds), the three
readiness lines on stderr, one Bastion session per local connection.

Better than az (PROTOCOL.md §10.3): every connection's token is deleted when it ends, and all of them on Ctrl+C,
SIGTERM, SIGHUP and ``--timeout``; a failing connection does not kill the listener (``--max-failures``);
``--idle-timeout``; ``--bind-address``; ``--output json`` events for scripts; ``--frame-size``, ``--keepalive``,
``--half-close``.

Exit codes: 0 when stopped by ``--timeout``, ``--idle-timeout``, SIGTERM or SIGHUP (a supervisor asked, the tunnel
obeyed and cleaned up); 130 on Ctrl+C/SIGINT (0 with ``--az-exit-codes``, as az does); 1 after ``--max-failures``
consecutive failed connections or any runtime error; 2 for usage errors. A second Ctrl+C while closing exits at once
(sessions not yet deleted then end at Bastion's idle timeout).
"""

from __future__ import annotations

import argparse

from bastion_fast.cli._options import positive_seconds

__all__ = ["HELP", "NAME", "register", "run"]

NAME = "tunnel"
HELP = "open a local port that forwards to a target through Azure Bastion (az network bastion tunnel)"

_SIZE_UNITS = {"": 1, "k": 1024, "kb": 1024, "kib": 1024, "m": 1024 * 1024, "mb": 1024 * 1024, "mib": 1024 * 1024}


def parse_size(text: str) -> int:
    """``32768``, ``32k``, ``32KiB``, ``1m`` → bytes (binary units)."""
    value = text.strip().lower()
    digits = value.rstrip("kmib")
    unit = value[len(digits):]
    if not digits.isdigit() or unit not in _SIZE_UNITS:
        raise argparse.ArgumentTypeError(f"invalid size {text!r} (use bytes, or a number with k/KiB or m/MiB)")
    return int(digits) * _SIZE_UNITS[unit]


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid port {text!r}: give a number (use --bind-address for the address)") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port must be between 0 and 65535, got {value}")
    return value


def add_tunnel_options(parser: argparse.ArgumentParser) -> None:
    """The local-side and data-path flags (shared with commands that run a tunnel internally)."""
    local = parser.add_argument_group("local listener")
    local.add_argument("--bind-address", dest="bind_address", metavar="ADDRESS", default="127.0.0.1",
                       help="address to listen on (default 127.0.0.1; anything else is reachable by other hosts)")
    local.add_argument("--idle-timeout", dest="idle_timeout", metavar="S", type=positive_seconds, default=None,
                       help="exit after S seconds without any connection")
    local.add_argument("--max-failures", dest="max_failures", metavar="N", type=int, default=5,
                       help="exit (code 1) after N consecutive failed connections (default 5; 0 = never)")
    local.add_argument("--output", "-o", dest="output", choices=("text", "json"), default="text",
                       help="json: one JSON event per line on stdout (ready, opened, closed, stopped)")
    local.add_argument("--az-exit-codes", dest="az_exit_codes", action="store_true",
                       help="exit 0 on Ctrl+C like az (default 130)")
    data = parser.add_argument_group("data path")
    data.add_argument("--frame-size", dest="frame_size", metavar="BYTES", type=parse_size, default=32768,
                      help="payload bytes per WebSocket frame, 4096…1MiB (default 32k; 4096 is what az sends)")
    data.add_argument("--keepalive", metavar="S", type=positive_seconds, default=None,
                      help="send a WebSocket ping every S seconds (default: TCP keepalive only, like az)")
    data.add_argument("--half-close", dest="half_close", action="store_true",
                      help="when the local app shuts down writing, keep receiving until Bastion or the target closes "
                      "(default: close the session, like az)")
    data.add_argument("--connect-timeout", dest="connect_timeout", metavar="S", type=positive_seconds,
                      default=10.0,
                      help="seconds to connect the WebSocket (TCP, proxy, TLS; default 10)")


def register(parser: argparse.ArgumentParser) -> None:
    from bastion_fast.cli._options import add_vm_arguments

    add_vm_arguments(parser, default_port=None, resource_port_required=True)
    # Required like az's --port, but checked after a profile had its say (a profile may set `port`).
    parser.add_argument("--port", type=_port, default=None, metavar="PORT",
                        help="Local port to use for the tunneling (0 = pick a free port and report it); required "
                        "unless the profile sets it.")
    parser.add_argument("--timeout", type=positive_seconds, default=None, metavar="S",
                        help="Timeout for connection to bastion host tunnel: the tunnel's maximum lifetime in "
                        "seconds (as in az); connections are closed and their sessions deleted at expiry.")
    add_tunnel_options(parser)


def build_config(args: argparse.Namespace, *, ca_bundle: str | None) -> object:
    """A ``TunnelConfig`` from parsed flags (imports the tunnel package)."""
    from bastion_fast.tls import client_ssl_context
    from bastion_fast.tunnel.config import TunnelConfig

    return TunnelConfig(
        bind_address=args.bind_address, port=args.port, frame_size=args.frame_size, keepalive=args.keepalive,
        half_close=args.half_close, max_failures=args.max_failures, timeout=getattr(args, "timeout", None),
        idle_timeout=args.idle_timeout, connect_timeout=args.connect_timeout,
        ssl_context=client_ssl_context(ca_bundle),
    )


def run(args: argparse.Namespace) -> int:
    from bastion_fast.cli._options import options_from_args
    from bastion_fast.commands.cliargs import apply_profile
    from bastion_fast.exceptions import UsageError
    from bastion_fast.loop import run as run_loop

    apply_profile(args)
    if args.port is None:
        raise UsageError("the following arguments are required: --port",
                         hint="Pass the local port, e.g. --port 50022, or --port 0 for a free one "
                         "(or set `port` in the profile).")
    options = options_from_args(args)
    return run_loop(_serve(args, options))


async def _serve(args: argparse.Namespace, options: object) -> int:
    import asyncio
    import logging
    import os
    import signal

    from bastion_fast.cli import EXIT_INTERRUPTED, EXIT_OK
    from bastion_fast.control.models import ConnectionOptions
    from bastion_fast.exceptions import BastionFastError
    from bastion_fast.tunnel.api import Tunnel
    from bastion_fast.tunnel.config import DEFAULT_BIND_ADDRESS, TunnelConfig
    from bastion_fast.tunnel.events import JsonEvents, TextEvents

    assert isinstance(options, ConnectionOptions)
    log = logging.getLogger("bastion_fast.tunnel")
    config = build_config(args, ca_bundle=options.ca_bundle)
    assert isinstance(config, TunnelConfig)
    default_bind = args.bind_address == DEFAULT_BIND_ADDRESS
    events = JsonEvents(default_bind=default_bind) if args.output == "json" else TextEvents(default_bind=default_bind)
    tunnel = Tunnel(config=config, options=options, events=events)
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    received: list[str] = []

    def on_signal(name: str) -> None:
        if received:
            log.warning("Second %s: exiting now; Bastion sessions not yet deleted end at the service's idle "
                        "timeout.", name)
            os._exit(EXIT_INTERRUPTED if received[0] == "SIGINT" and not args.az_exit_codes else EXIT_OK)
        received.append(name)
        log.warning("%s received: closing connections and deleting Bastion sessions…", name)
        if tunnel.listener is None and main is not None:
            main.cancel()  # still signing in / discovering: nothing to clean up but the control plane
        else:
            tunnel.stop(f"signal {name}")

    installed: list[int] = []
    for name in ("SIGINT", "SIGTERM", "SIGHUP"):
        signum = getattr(signal, name, None)
        if signum is None:
            continue
        try:
            loop.add_signal_handler(signum, on_signal, name)
            installed.append(signum)
        except (NotImplementedError, RuntimeError):  # Windows: Ctrl+C arrives as KeyboardInterrupt
            pass
    try:
        try:
            try:
                await tunnel.start()
            except BastionFastError as exc:
                events.stopped("error", str(exc))  # JSON readers get a last line, not just EOF
                raise
            reason = await tunnel.wait()
        except asyncio.CancelledError:
            if not received:
                raise
            reason = f"signal {received[0]}"
        finally:
            await tunnel.aclose()
    finally:
        for signum in installed:
            loop.remove_signal_handler(signum)
    if reason == "timeout":
        log.warning("Tunnel lifetime (--timeout %g s) reached: closed.", config.timeout)
    if received and received[0] == "SIGINT" and not args.az_exit_codes:
        return EXIT_INTERRUPTED
    return EXIT_OK
