"""``bastion show``: what a Bastion host is, what it can do, and what each bastion-fast command will make of it.

The verdicts apply the same rules the tunnel's discovery enforces (PROTOCOL §1.2) plus the documented SKU matrix,
so "tunnel: ready" here means ``bastion-fast tunnel`` will not be refused client-side, and every "disabled" comes
with the ``bastion configure`` command that fixes it. Missing booleans mean false: ARM omits flags that were never
set (ext#8799 crashed on exactly that).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bastion_fast.ops.arm import BastionRef
from bastion_fast.ops.output import Cell, Table

__all__ = [
    "FEATURES",
    "SKU_RANK",
    "BastionView",
    "Feature",
    "ShowReport",
    "Verdict",
    "sku_rank",
    "verdicts",
]

# Documented SKU ladder (Bastion "SKU comparison"); QuickConnect is the old internal name of the Developer flow.
SKU_RANK = {"developer": 0, "quickconnect": 0, "basic": 1, "standard": 2, "premium": 3}


def sku_rank(sku: str) -> int:
    """Position of ``sku`` on the ladder (unknown SKUs rank like Basic, the ARM default)."""
    return SKU_RANK.get(sku.strip().lower(), 1)


@dataclass(frozen=True)
class Feature:
    """One feature flag: its JSON key, ARM property, label, the lowest SKU that has it, and the configure flag."""

    key: str
    prop: str
    label: str
    min_sku: str
    flag: str | None
    inverted: bool = False  # disableCopyPaste: the property says the opposite of the feature


FEATURES = (
    Feature("nativeClient", "enableTunneling", "Native client support", "Standard", "--native-client"),
    Feature("ipConnect", "enableIpConnect", "IP-based connection", "Standard", "--ip-connect"),
    Feature("kerberos", "enableKerberos", "Kerberos authentication", "Basic", "--kerberos"),
    Feature("shareableLink", "enableShareableLink", "Shareable links", "Standard", "--shareable-link"),
    Feature("fileCopy", "enableFileCopy", "File copy (browser upload/download)", "Standard", "--file-copy"),
    Feature("sessionRecording", "enableSessionRecording", "Session recording", "Premium", None),
    Feature("copyPaste", "disableCopyPaste", "Copy/paste (browser)", "Basic", None, inverted=True),
    Feature("privateOnly", "enablePrivateOnlyBastion", "Private-only deployment", "Premium", None),
)


def _flag(props: dict[str, Any], name: str) -> bool:
    value = props.get(name)
    return value is True or (isinstance(value, str) and value.strip().lower() == "true")


@dataclass
class BastionView:
    """The facts of one Bastion host, read from its ARM JSON."""

    ref: BastionRef
    id: str
    location: str | None
    sku: str
    provisioning_state: str | None
    scale_units: int | None
    dns_name: str | None
    features: dict[str, bool]
    tags: dict[str, str] = field(default_factory=dict)
    subnet_id: str | None = None
    vnet_id: str | None = None

    @classmethod
    def from_arm(cls, raw: dict[str, Any], ref: BastionRef) -> BastionView:
        props = raw.get("properties") or {}
        sku = (raw.get("sku") or {}).get("name") or "Basic"
        features = {}
        for feature in FEATURES:
            value = _flag(props, feature.prop)
            features[feature.key] = (not value) if feature.inverted else value
        ip_configs = props.get("ipConfigurations") or []
        subnet_id = None
        if ip_configs:
            subnet_id = ((ip_configs[0].get("properties") or {}).get("subnet") or {}).get("id")
        vnet_id = (props.get("virtualNetwork") or {}).get("id")
        if vnet_id is None and subnet_id and "/subnets/" in subnet_id.lower():
            vnet_id = subnet_id[: subnet_id.lower().index("/subnets/")]
        scale = props.get("scaleUnits")
        return cls(
            ref=ref,
            id=str(raw.get("id") or ref.id),
            location=raw.get("location"),
            sku=str(sku),
            provisioning_state=props.get("provisioningState"),
            scale_units=int(scale) if isinstance(scale, (int, float)) else None,
            dns_name=props.get("dnsName"),
            features=features,
            tags=dict(raw.get("tags") or {}),
            subnet_id=subnet_id,
            vnet_id=vnet_id,
        )

    @property
    def rank(self) -> int:
        return sku_rank(self.sku)

    @property
    def developer(self) -> bool:
        return self.rank == 0

    @property
    def ready(self) -> bool:
        return (self.provisioning_state or "Succeeded").lower() == "succeeded"


@dataclass(frozen=True)
class Verdict:
    """Whether one bastion-fast command can use this Bastion: ``ready``, ``disabled`` (fixable by configure) or
    ``unavailable`` (needs something configure cannot do, or a wait)."""

    command: str
    status: str
    reason: str
    fix: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"command": self.command, "status": self.status, "reason": self.reason, "fix": self.fix}


def _configure(view: BastionView, *flags: str) -> str:
    return f"bastion-fast bastion configure {view.ref.cli_args} {' '.join(flags)}"


def _native_verdict(view: BastionView, command: str, *, developer_ok: bool) -> Verdict:
    if view.developer:
        if developer_ok:
            return Verdict(command, "ready", f"{view.sku} SKU supports SSH through its shared pool")
        return Verdict(command, "unavailable", f"the {view.sku} SKU has no native-client tunnels",
                       "upgrade to Standard in the portal (Configuration → Tier): a Developer bastion needs an "
                       "AzureBastionSubnet and a public IP first")
    if view.rank < 2:
        return Verdict(command, "disabled", f"{view.sku} SKU has no native client support",
                       _configure(view, "--sku Standard --native-client true"))
    if not view.features["nativeClient"]:
        return Verdict(command, "disabled", "native client support is off",
                       _configure(view, "--native-client true"))
    return Verdict(command, "ready", "native client support is on")


def verdicts(view: BastionView) -> list[Verdict]:
    """One verdict per bastion-fast command family, in the order a user meets them."""
    if not view.ready:
        state = view.provisioning_state or "unknown"
        why = (f"provisioning state is {state}" + (": the last change failed" if state.lower() == "failed" else
                                                    ": an update is in progress"))
        fix = ("re-apply the change with bastion configure" if state.lower() == "failed"
               else f"wait, then run bastion-fast bastion show {view.ref.cli_args}")
        return [Verdict(c, "unavailable", why, fix) for c in
                ("tunnel", "rdp", "ssh", "proxy", "cp", "IP connect", "shareable links")]
    out = [
        _native_verdict(view, "tunnel", developer_ok=False),
        _native_verdict(view, "rdp", developer_ok=False),
        _native_verdict(view, "ssh", developer_ok=True),
        _native_verdict(view, "proxy", developer_ok=True),
        _native_verdict(view, "cp", developer_ok=True),
    ]
    if view.rank < 2:
        flags = "--sku Standard --ip-connect true"
        out.append(Verdict("IP connect", "unavailable" if view.developer else "disabled",
                           f"{view.sku} SKU has no IP-based connection",
                           None if view.developer else _configure(view, flags)))
    elif not view.features["ipConnect"]:
        out.append(Verdict("IP connect", "disabled", "IP-based connection is off",
                           _configure(view, "--ip-connect true")))
    else:
        out.append(Verdict("IP connect", "ready", "tunnel --target-ip-address works (ports 22 and 3389)"))
    if view.rank < 2:
        out.append(Verdict("shareable links", "unavailable" if view.developer else "disabled",
                           f"{view.sku} SKU has no shareable links",
                           None if view.developer else _configure(view, "--sku Standard --shareable-link true")))
    elif not view.features["shareableLink"]:
        out.append(Verdict("shareable links", "disabled", "shareable links are off",
                           _configure(view, "--shareable-link true")))
    else:
        out.append(Verdict("shareable links", "ready", "bastion-fast links create works"))
    return out


@dataclass
class ShowReport:
    """Result of ``bastion show``."""

    view: BastionView

    def to_json(self) -> dict[str, Any]:
        v = self.view
        return {
            "id": v.id,
            "name": v.ref.name,
            "resourceGroup": v.ref.resource_group,
            "subscription": v.ref.subscription,
            "location": v.location,
            "sku": v.sku,
            "provisioningState": v.provisioning_state,
            "scaleUnits": v.scale_units,
            "dnsName": v.dns_name,
            "features": dict(v.features),
            "commands": [verdict.to_json() for verdict in verdicts(v)],
        }

    def tables(self) -> list[Table]:
        v = self.view
        state = v.provisioning_state or "unknown"
        facts = Table(f"Bastion {v.ref.name} ({v.ref.resource_group})", ["property", "value"], [
            ["SKU", v.sku],
            ["provisioning state", Cell(state, "ok" if v.ready else "warning")],
            ["scale units", "-" if v.scale_units is None else str(v.scale_units)],
            ["DNS name", v.dns_name or "-"],
            ["location", v.location or "-"],
        ])
        feats = Table("Features", ["feature", "state", "needs SKU"])
        for feature in FEATURES:
            on = v.features[feature.key]
            available = v.rank >= sku_rank(feature.min_sku)
            text = "on" if on else ("off" if available else f"off (not in {v.sku})")
            feats.rows.append([feature.label, Cell(text, "ok" if on else None), f"{feature.min_sku}+"])
        cmds = Table("bastion-fast commands", ["command", "status", "why", "fix"])
        for verdict in verdicts(v):
            cmds.rows.append([verdict.command, Cell(verdict.status, verdict.status), verdict.reason,
                              verdict.fix or ""])
        return [facts, feats, cmds]


async def show(arm: Any, ref: BastionRef) -> ShowReport:
    """GET the host and build the report (``arm`` is an :class:`~bastion_fast.ops.arm.ArmSession`)."""
    raw = await get_bastion(arm, ref)
    return ShowReport(BastionView.from_arm(raw, ref))


async def get_bastion(arm: Any, ref: BastionRef) -> dict[str, Any]:
    """The Bastion host's ARM JSON (wire names), errors translated."""
    from bastion_fast.ops.arm import reraise

    try:
        host = await arm.client(ref.subscription).bastion_hosts.get(ref.resource_group, ref.name)
    except Exception as exc:
        reraise(exc, f"read Bastion host {ref.name!r} in {ref.resource_group!r}", bastion=ref)
    result: dict[str, Any] = host.as_dict()
    return result
