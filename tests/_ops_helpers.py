"""Shared pieces of the administration-command tests: an emulator with a network, and a CLI runner.

``ops_env`` starts an in-process emulator (its ARM endpoint, CA and static token wired into the environment) and
yields an :class:`OpsEnv`; ``env.cli(...)`` runs ``bastion-fast`` in a worker thread (its own event loop, as in real
use) while the emulator keeps serving on the test's loop, and returns exit code, stdout and stderr.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from bastion_fast.emulator import BastionConfig, Emulator, EmulatorConfig

SUB = "00000000-0000-0000-0000-000000000000"
RG = "rg-emulator"
NAME = "bastion-emulator"


def vm_id(name: str, rg: str = RG) -> str:
    return f"/subscriptions/{SUB}/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachines/{name}"


def rid(kind: str, name: str, rg: str = RG) -> str:
    return f"/subscriptions/{SUB}/resourceGroups/{rg}/providers/Microsoft.Network/{kind}/{name}"


def rule(name: str, priority: int, direction: str, access: str, source: str | list[str], destination: str | list[str],
         ports: str | list[str], protocol: str = "Tcp") -> dict[str, Any]:
    return {"name": name, "priority": priority, "direction": direction, "access": access, "protocol": protocol,
            "source": source, "destination": destination, "ports": ports}


# Azure's documented AzureBastionSubnet rules, plus the recommended outbound deny toward the VNet.
GOOD_BASTION_RULES = [
    rule("AllowHttpsInbound", 120, "Inbound", "Allow", "Internet", "*", "443"),
    rule("AllowGatewayManagerInbound", 130, "Inbound", "Allow", "GatewayManager", "*", "443"),
    rule("AllowAzureLoadBalancerInbound", 140, "Inbound", "Allow", "AzureLoadBalancer", "*", "443"),
    rule("AllowBastionHostCommunication", 150, "Inbound", "Allow", "VirtualNetwork", "VirtualNetwork",
         ["8080", "5701"], "*"),
    rule("AllowSshRdpOutbound", 100, "Outbound", "Allow", "*", "VirtualNetwork", ["22", "3389"], "*"),
    rule("AllowAzureCloudOutbound", 110, "Outbound", "Allow", "*", "AzureCloud", "443"),
    rule("AllowBastionCommunication", 120, "Outbound", "Allow", "VirtualNetwork", "VirtualNetwork",
         ["8080", "5701"], "*"),
    rule("AllowHttpOutbound", 130, "Outbound", "Allow", "*", "Internet", "80", "*"),
    rule("DenyVnetOutbound", 4000, "Outbound", "Deny", "*", "VirtualNetwork", "*", "*"),
]


def network(*, bastion_rules: list[dict[str, Any]] | None = None, spoke_rules: list[dict[str, Any]] | None = None,
            vm2_public_ip: str | None = None, forbidden: list[str] | None = None) -> dict[str, Any]:
    """A hub (the Bastion's VNet, vm1) peered with a spoke (vm2)."""
    nsgs = [{"name": "nsg-bastion", "rules": GOOD_BASTION_RULES if bastion_rules is None else bastion_rules},
            {"name": "nsg-spoke", "rules": spoke_rules or []}]
    vm2: dict[str, Any] = {"name": "vm2", "vnet": "vnet-spoke", "subnet": "default", "private_ip": "10.1.0.4"}
    if vm2_public_ip:
        vm2.update(public_ip=vm2_public_ip, public_ip_sku="Standard")
    return {
        "forbidden": forbidden or [],
        "nsgs": nsgs,
        "vnets": [
            {"name": f"vnet-{NAME}", "address_space": ["10.0.0.0/16"], "subnets": [
                {"name": "AzureBastionSubnet", "prefix": "10.0.254.0/26", "nsg": "nsg-bastion"},
                {"name": "default", "prefix": "10.0.0.0/24"},
            ]},
            {"name": "vnet-spoke", "address_space": ["10.1.0.0/16"], "peer_with": [f"vnet-{NAME}"],
             "subnets": [{"name": "default", "prefix": "10.1.0.0/24", "nsg": "nsg-spoke"}]},
        ],
        "vms": [{"name": "vm1", "subnet": "default", "private_ip": "10.0.0.4"}, vm2],
    }


@dataclass
class CliResult:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)

    @property
    def text(self) -> str:
        """stderr with whitespace collapsed (rich wraps long lines)."""
        return " ".join(self.err.split())


@dataclass
class OpsEnv:
    emu: Emulator
    capsys: pytest.CaptureFixture[str]
    monkeypatch: pytest.MonkeyPatch
    base: list[str] = field(default_factory=list)

    async def cli(self, *argv: str, stdin: str | None = None) -> CliResult:
        from bastion_fast.cli import main

        self.monkeypatch.setattr(sys, "stdin", io.StringIO(stdin if stdin is not None else ""))
        self.capsys.readouterr()

        def call() -> int:
            try:
                return main([*argv])
            except SystemExit as exc:  # argparse
                return int(exc.code or 0)

        code = await asyncio.to_thread(call)
        out, err = self.capsys.readouterr()
        return CliResult(code, out, err)

    def args(self, *extra: str) -> list[str]:
        return [*self.base, *extra]

    @property
    def resource(self) -> dict[str, Any]:
        state = self.emu.arm_state
        return state.get(f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Network/bastionHosts/{NAME}")


@contextlib.asynccontextmanager
async def ops_env(state_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, *,
                  net: dict[str, Any] | None = None, targets: dict[str, str] | None = None,
                  **bastion: Any) -> AsyncIterator[OpsEnv]:
    cfg = EmulatorConfig(state_dir=state_dir, bastion=BastionConfig(**bastion), network=net or {},
                         targets=targets or {})
    async with Emulator(cfg) as emu:
        monkeypatch.setenv("BASTION_FAST_TOKEN", emu.info["token"])
        base = ["-n", NAME, "-g", RG, "--subscription", SUB, "--auth", "static", "--arm-endpoint",
                emu.info["arm_endpoint"], "--ca-bundle", emu.info["ca_file"]]
        yield OpsEnv(emu, capsys, monkeypatch, base)


def ops_args(emu: Emulator) -> Callable[..., Any]:
    """ConnectionOptions for the ops API in-process (no CLI)."""
    from bastion_fast.control.models import ConnectionOptions, TunnelTarget

    def make(**kw: Any) -> ConnectionOptions:
        return ConnectionOptions(name=NAME, resource_group=RG, target=TunnelTarget(None, None, 22), subscription=SUB,
                                 auth="static", arm_endpoint=emu.info["arm_endpoint"], ca_bundle=emu.info["ca_file"],
                                 **kw)

    return make
