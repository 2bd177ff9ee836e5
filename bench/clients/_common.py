"""What the reference clients share: az's flags, the token-exchange form, the URLs and the readiness line.

Every reference client is a separate process that listens like ``bastion-fast tunnel`` and prints one
``{"event": "ready", "address": …, "port": N}`` line on stdout, so the harness can start it, find its port and
charge CPU and memory to it alone. The ARM bearer comes from ``BASTION_FAST_TOKEN`` (never argv, where ``ps``
shows it), as for our own client's ``--auth static``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys

__all__ = ["add_bastion_arguments", "delete_url", "print_ready", "redact", "token_form", "tokens_url",
           "websocket_url"]

_TOKENISH = re.compile(r"[0-9a-fA-F]{24,}|eyJ[\w.-]+")


def add_bastion_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--endpoint", required=True, help="data-plane host[:port] (the Bastion's dnsName)")
    parser.add_argument("--ca-file", help="extra CA bundle (the emulator's ca.pem)")
    parser.add_argument("--target-resource-id", required=True)
    parser.add_argument("--resource-port", type=int, required=True)
    parser.add_argument("--port", type=int, default=0, help="local port (0 = any free port)")
    parser.add_argument("--bind-address", default="127.0.0.1")


def aad_token() -> str:
    token = os.environ.get("BASTION_FAST_TOKEN", "")
    if not token:
        sys.exit("set BASTION_FAST_TOKEN to the ARM bearer token (the emulator's readiness line has one)")
    return token


def token_form(args: argparse.Namespace) -> dict[str, str]:
    """The POST /api/tokens form of PROTOCOL.md §2.2 for a fresh connection (``token`` omitted, like requests)."""
    return {
        "resourceId": args.target_resource_id,
        "protocol": "tcptunnel",
        "workloadHostPort": str(args.resource_port),
        "aztoken": aad_token(),
    }


def tokens_url(endpoint: str) -> str:
    return f"https://{endpoint}/api/tokens"


def delete_url(endpoint: str, auth_token: str) -> str:
    return f"https://{endpoint}/api/tokens/{auth_token}"


def websocket_url(endpoint: str, websocket_token: str, node_id: str) -> str:
    return f"wss://{endpoint}/webtunnelv2/{websocket_token}?X-Node-Id={node_id}"


def print_ready(address: str, port: int) -> None:
    print(json.dumps({"event": "ready", "address": address, "port": port}), flush=True)


def redact(text: object) -> str:
    """Error text without anything token-like (hex session tokens in URLs, JWTs): logs go into CI artifacts."""
    return _TOKENISH.sub("***", str(text))
