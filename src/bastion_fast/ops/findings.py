"""What ``doctor`` reports: findings with a severity and the exact fix, and the exit code they add up to.

Severities, from worst: ``error`` (a connection will fail, or SSH/RDP is open to the Internet), ``unchecked``
(doctor could not look — a read was refused or ARM did not answer), ``warning`` (works, but weaker than the
Bastion documentation recommends), ``info`` and ``ok``. Exit code: 1 when any error, else 3 when anything could not
be checked, else 0 — so CI can tell "broken" from "doctor was blind".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bastion_fast.ops.output import Cell, Table

__all__ = ["EXIT_CLEAN", "EXIT_ERRORS", "EXIT_UNCHECKED", "SEVERITIES", "DoctorReport", "ExposedIp", "Finding"]

SEVERITIES = ("error", "unchecked", "warning", "info", "ok")
EXIT_CLEAN, EXIT_ERRORS, EXIT_UNCHECKED = 0, 1, 3


@dataclass(frozen=True)
class Finding:
    """One result: ``check`` is a stable id for scripts (``nsg.inbound.443.internet``)."""

    check: str
    area: str
    severity: str
    title: str
    detail: str = ""
    fix: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"check": self.check, "area": self.area, "severity": self.severity, "title": self.title,
                "detail": self.detail, "fix": self.fix}


@dataclass(frozen=True)
class ExposedIp:
    """A public IP on a VM's NIC in the Bastion's reach (what ``--fix-public-ips`` removes)."""

    vm: str
    nic_id: str
    ip_configuration: str
    public_ip_id: str
    address: str | None

    def to_json(self) -> dict[str, Any]:
        return {"vm": self.vm, "nic": self.nic_id, "ipConfiguration": self.ip_configuration,
                "publicIp": self.public_ip_id, "address": self.address}


@dataclass
class DoctorReport:
    """All findings of one doctor run, plus the public IPs found and what ``--fix-public-ips`` did."""

    bastion: str
    findings: list[Finding] = field(default_factory=list)
    exposed: list[ExposedIp] = field(default_factory=list)
    fixed: list[dict[str, Any]] = field(default_factory=list)

    def add(self, finding: Finding) -> None:
        self.findings.append(finding)

    @property
    def exit_code(self) -> int:
        severities = {f.severity for f in self.findings}
        if "error" in severities or any(not r.get("ok") for r in self.fixed):
            return EXIT_ERRORS
        if "unchecked" in severities:
            return EXIT_UNCHECKED
        return EXIT_CLEAN

    def counts(self) -> dict[str, int]:
        return {s: sum(1 for f in self.findings if f.severity == s) for s in SEVERITIES}

    def to_json(self) -> dict[str, Any]:
        return {
            "bastion": self.bastion,
            "exitCode": self.exit_code,
            "summary": self.counts(),
            "findings": [f.to_json() for f in self.sorted()],
            "publicIps": [e.to_json() for e in self.exposed],
            "fixed": self.fixed,
        }

    def sorted(self) -> list[Finding]:
        order = {s: i for i, s in enumerate(SEVERITIES)}
        return sorted(self.findings, key=lambda f: order.get(f.severity, 9))

    def tables(self) -> list[Table]:
        table = Table(f"bastion-fast doctor: {self.bastion}", ["severity", "area", "finding", "fix"])
        style = {"unchecked": "warning"}
        for f in self.sorted():
            title = f.title + (f"\n{f.detail}" if f.detail else "")
            table.rows.append([Cell(f.severity, style.get(f.severity, f.severity)), f.area, title, f.fix or ""])
        counts = self.counts()
        table.notes.append(", ".join(f"{n} {s}" for s, n in counts.items() if n) + f" — exit code {self.exit_code}")
        out = [table]
        if self.fixed:
            fixed = Table("Public IPs disassociated", ["VM", "public IP", "result"])
            for r in self.fixed:
                fixed.rows.append([r.get("vm", "-"), r.get("address") or r.get("publicIp", "-"),
                                   Cell("done" if r.get("ok") else f"FAILED: {r.get('error')}",
                                        "ok" if r.get("ok") else "error")])
            out.append(fixed)
        return out
