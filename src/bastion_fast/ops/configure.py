"""``bastion configure``: turn on the SKU and features bastion-fast needs, safely.

Theory of operation: read the host (GET) → plan (pure: the before/after of each setting, refusals) → the CLI
shows the plan with the pricing warning and asks → apply with ``begin_create_or_update`` (a PUT of the whole host,
the only way ARM changes these properties; ARM answers with an Azure-AsyncOperation the SDK polls while the host is
``Updating``) → read the host again and check that every planned value is really there.

Refusals happen in the plan, before any question is asked: a SKU downgrade (Azure cannot do it; the only way back
is delete and recreate), an upgrade from Developer (it needs an AzureBastionSubnet and a public IP that this command
does not create), and a feature the target SKU does not have (the message names the ``--sku`` to add).
"""

from __future__ import annotations

import asyncio
import copy
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from bastion_fast.exceptions import ControlPlaneError, UnsupportedSku
from bastion_fast.ops.arm import BastionRef, reraise
from bastion_fast.ops.output import Cell, Table
from bastion_fast.ops.show import FEATURES, BastionView, get_bastion, sku_rank

__all__ = ["CONFIGURABLE", "ConfigureReport", "ConfigureRequest", "Plan", "apply_plan", "plan_changes",
           "pricing_warning"]

log = logging.getLogger("bastion_fast.ops.configure")

CONFIGURABLE = {f.key: f for f in FEATURES if f.flag}
TARGET_SKUS = ("Standard", "Premium")


@dataclass(frozen=True)
class ConfigureRequest:
    """What the user asked for: a SKU and/or feature values (``None``/absent = leave as is)."""

    sku: str | None = None
    features: Mapping[str, bool] = field(default_factory=dict)


@dataclass(frozen=True)
class Change:
    """One setting that will change."""

    key: str  # "sku" or a feature key
    label: str
    before: str
    after: str


@dataclass
class Plan:
    """The PUT body and the changes it makes; ``changes`` empty = nothing to do."""

    before: BastionView
    body: dict[str, Any]
    changes: list[Change]
    sku_before: str
    sku_after: str

    @property
    def sku_changes(self) -> bool:
        return self.sku_before.lower() != self.sku_after.lower()

    def table(self, title: str = "Planned change") -> Table:
        table = Table(f"{title}: Bastion {self.before.ref.name} ({self.before.ref.resource_group})",
                      ["setting", "before", "after"])
        for change in self.changes:
            table.rows.append([change.label, change.before, Cell(change.after, "ok")])
        return table


def _on_off(value: bool) -> str:
    return "on" if value else "off"


def pricing_warning(plan: Plan) -> str:
    """What changes on the bill, and what cannot be undone."""
    if plan.sku_changes:
        return (f"Pricing: the Bastion moves from {plan.sku_before} to {plan.sku_after}. Bastion is billed per hour "
                f"(plus outbound data, and per scale unit above 2 on Standard/Premium), so the hourly price changes "
                f"as soon as the update completes. A SKU cannot be downgraded: going back to {plan.sku_before} "
                "means deleting and recreating the Bastion.")
    return ("Pricing: the SKU stays " + plan.sku_before + "; Bastion is billed per hour for its SKU and scale units, "
            "and these features do not change the hourly price. (A SKU, once raised, cannot be downgraded.)")


def plan_changes(raw: dict[str, Any], ref: BastionRef, request: ConfigureRequest) -> Plan:
    """Compute the new host JSON and the list of changes.

    Raises:
        UnsupportedSku: downgrade, upgrade from Developer, or a feature the target SKU lacks.
    """
    before = BastionView.from_arm(raw, ref)
    body = copy.deepcopy(raw)
    changes: list[Change] = []
    sku_after = before.sku
    if request.sku:
        names = {"basic": "Basic", "standard": "Standard", "premium": "Premium", "developer": "Developer"}
        wanted = names.get(request.sku.strip().lower())
        if wanted is None:
            raise UnsupportedSku(f"--sku {request.sku!r} is not a Bastion SKU.",
                                 hint=f"Use one of: {', '.join(TARGET_SKUS)}.")
        if sku_rank(wanted) < before.rank:
            raise UnsupportedSku(
                f"Refusing to change Bastion {ref.name!r} from {before.sku} to {wanted}: Azure does not support "
                "SKU downgrades.",
                hint=f"Keep {before.sku} (it has every {wanted} feature), or delete the Bastion and create a new "
                f"{wanted} one.",
            )
        if before.developer and sku_rank(wanted) > before.rank:
            raise UnsupportedSku(
                f"Bastion {ref.name!r} is a {before.sku} SKU; upgrading it needs an AzureBastionSubnet (/26 or "
                "larger) and a Standard public IP, which `bastion configure` does not create.",
                hint="Upgrade it in the portal (Bastion → Configuration → Tier) or deploy a new Standard Bastion "
                "with `az network bastion create --sku Standard …`, then run this command again.",
            )
        if sku_rank(wanted) > before.rank:
            if wanted not in TARGET_SKUS:
                raise UnsupportedSku(f"--sku {wanted} cannot be configured here.",
                                     hint=f"Use one of: {', '.join(TARGET_SKUS)}.")
            sku_after = wanted
            body.setdefault("sku", {})["name"] = wanted
            changes.append(Change("sku", "SKU", before.sku, wanted))
    props = body.setdefault("properties", {})
    for key, value in request.features.items():
        feature = CONFIGURABLE[key]
        if value and sku_rank(sku_after) < sku_rank(feature.min_sku):
            raise UnsupportedSku(
                f"{feature.label} needs the {feature.min_sku} SKU or higher; Bastion {ref.name!r} is {sku_after}.",
                hint=(f"Add --sku {feature.min_sku if feature.min_sku in TARGET_SKUS else 'Standard'} to this "
                      "command." if not before.developer else
                      "A Developer bastion must be upgraded in the portal first (it needs an AzureBastionSubnet "
                      "and a public IP)."),
            )
        current = before.features[key]
        if current != value:
            props[feature.prop] = (not value) if feature.inverted else value
            changes.append(Change(key, feature.label, _on_off(current), _on_off(value)))
    if changes and sku_rank(sku_after) >= 2 and not props.get("scaleUnits"):
        props["scaleUnits"] = 2  # Azure's Standard default; Basic hosts often carry no value
    return Plan(before=before, body=body, changes=changes, sku_before=before.sku, sku_after=sku_after)


@dataclass
class ConfigureReport:
    """Result of ``bastion configure``."""

    plan: Plan
    applied: bool
    after: BastionView | None = None
    confirmed: dict[str, bool] = field(default_factory=dict)
    elapsed: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.plan.before.id,
            "applied": self.applied,
            "changes": [
                {"setting": c.key, "before": c.before, "after": c.after, "confirmed": self.confirmed.get(c.key)}
                for c in self.plan.changes
            ],
            "sku": self.after.sku if self.after else self.plan.before.sku,
            "provisioningState": (self.after or self.plan.before).provisioning_state,
            "seconds": None if self.elapsed is None else round(self.elapsed, 1),
        }

    def tables(self) -> list[Table]:
        if not self.plan.changes:
            table = Table(f"Bastion {self.plan.before.ref.name}", ["result"],
                          [["Nothing to change: the Bastion already has these settings."]])
            return [table]
        table = Table(f"Bastion {self.plan.before.ref.name} ({self.plan.before.ref.resource_group})",
                      ["setting", "before", "after", "now"])
        for change in self.plan.changes:
            now: str | Cell = "-"
            if self.after is not None:
                ok = self.confirmed.get(change.key, False)
                now = Cell(_current(self.after, change.key) + ("" if ok else " (NOT applied)"),
                           "ok" if ok else "error")
            table.rows.append([change.label, change.before, change.after, now])
        if self.applied and self.after is not None:
            table.notes.append(f"Provisioning state: {self.after.provisioning_state or 'unknown'}"
                               + (f" after {self.elapsed:.0f} s." if self.elapsed is not None else "."))
        return [table]


def _current(view: BastionView, key: str) -> str:
    return view.sku if key == "sku" else _on_off(view.features[key])


async def apply_plan(
    arm: Any,
    plan: Plan,
    *,
    progress: Callable[[str], None] | None = None,
    tick: float = 0.25,
    polling_interval: float | None = None,
) -> ConfigureReport:
    """PUT the planned host, follow the long-running operation, re-read and verify.

    ``progress`` is called with a one-line status while ARM works (the CLI shows it in a spinner).

    Raises:
        ControlPlaneError (and subclasses): ARM refused or the operation failed; the update did not stick.
    """
    from azure.mgmt.network.models import BastionHost

    ref = plan.before.ref
    client = arm.client(ref.subscription)
    started = time.monotonic()
    kwargs: dict[str, Any] = {}
    if polling_interval is not None:
        kwargs["polling_interval"] = polling_interval
    try:
        poller = await client.bastion_hosts.begin_create_or_update(
            ref.resource_group, ref.name, BastionHost(plan.body), **kwargs)
        task = asyncio.ensure_future(poller.result())
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=tick)
                if done:
                    break
                if progress is not None:
                    progress(f"Updating Bastion {ref.name}: {poller.status()} "
                             f"({time.monotonic() - started:.0f} s)")
        finally:
            if not task.done():
                task.cancel()
        task.result()
    except Exception as exc:
        reraise(exc, f"update Bastion host {ref.name!r}", bastion=ref)
    elapsed = time.monotonic() - started
    after = BastionView.from_arm(await get_bastion(arm, ref), ref)
    confirmed = {c.key: _current(after, c.key) == c.after for c in plan.changes}
    report = ConfigureReport(plan=plan, applied=True, after=after, confirmed=confirmed, elapsed=elapsed)
    missing = [c.label for c in plan.changes if not confirmed[c.key]]
    if missing:
        raise ControlPlaneError(
            f"Azure accepted the update of Bastion {ref.name!r} but {', '.join(missing)} did not change "
            f"(provisioning state {after.provisioning_state or 'unknown'}).",
            hint=f"Check `bastion-fast bastion show {ref.cli_args}` in a minute; an Azure Policy may be reverting "
            "or denying the setting.",
        )
    log.info("Bastion %s updated in %.1f s", ref.name, elapsed)
    return report
