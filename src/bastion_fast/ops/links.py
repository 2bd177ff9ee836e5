"""``links create | list | revoke``: Bastion shareable links with an expiry, through azure-mgmt-network.

The ARM operations (``createShareableLinks``, ``getShareableLinks``, ``deleteShareableLinks``,
``deleteShareableLinksByToken`` on the bastionHosts resource) know nothing about expiry: a link Azure creates lives
until someone deletes it. bastion-fast therefore records each link's expiry on the Bastion host itself, as a tag
``bastion-fast-link-expiry-<hash of the link token>`` = ISO 8601 UTC time, so every administrator (and every
machine) sees the same deadline; ``links list`` shows it and ``links revoke --expired`` deletes what is past it.
Run that on a schedule (cron, an Automation runbook) to enforce the deadline against real Azure; the emulator
enforces it by itself at the instant of expiry. The tag name carries a hash, never the token: tags are readable
by anyone with Reader on the Bastion, and a link is a credential.

Creation order: links first, then the tags; if the tags cannot be written the links created by this call are
deleted again, so no link outlives its promised expiry because of a failed tag write.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from bastion_fast._logging import register_secret
from bastion_fast.exceptions import DiscoveryError, UnsupportedSku, UsageError
from bastion_fast.ops.arm import BastionRef, reraise
from bastion_fast.ops.output import Cell, Table
from bastion_fast.ops.show import BastionView, get_bastion

__all__ = [
    "DEFAULT_LIFETIME",
    "MAX_LIFETIME",
    "TAG_PREFIX",
    "Link",
    "LinksReport",
    "RevokeReport",
    "create_links",
    "expiry_tag",
    "link_token",
    "list_links",
    "revoke_links",
]

log = logging.getLogger("bastion_fast.ops.links")

MAX_LIFETIME = timedelta(days=90)
DEFAULT_LIFETIME = timedelta(hours=24)
TAG_PREFIX = "bastion-fast-link-expiry-"
MAX_TAGS = 50  # ARM's limit per resource


def link_token(url_or_token: str) -> str:
    """The token of a shareable link: the last path segment of its URL (a bare token is returned as is)."""
    text = url_or_token.strip()
    if "://" in text:
        path = urlsplit(text).path
        segments = [s for s in path.split("/") if s]
        return segments[-1] if segments else text
    return text


def expiry_tag(token: str) -> str:
    """The tag name that holds the expiry of the link with ``token``."""
    return TAG_PREFIX + hashlib.sha256(token.encode("utf-8")).hexdigest()[:16]


def _format_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@dataclass
class Link:
    """One shareable link as ARM reports it, plus bastion-fast's recorded expiry."""

    vm: str
    url: str | None
    created: str | None
    expires: datetime | None = None
    message: str | None = None

    @classmethod
    def from_arm(cls, raw: dict[str, Any], tags: dict[str, str]) -> Link:
        url = raw.get("bsl")
        expires = _parse_time(tags.get(expiry_tag(link_token(url)))) if url else None
        if url:
            register_secret(url)
            register_secret(link_token(url))
        return cls(vm=str((raw.get("vm") or {}).get("id") or ""), url=url, created=raw.get("createdAt"),
                   expires=expires, message=raw.get("message"))

    @property
    def token(self) -> str | None:
        return link_token(self.url) if self.url else None

    def expired(self, now: datetime) -> bool:
        return self.expires is not None and now >= self.expires

    def to_json(self, now: datetime) -> dict[str, Any]:
        return {
            "vm": self.vm,
            "url": self.url,
            "createdAt": self.created,
            "expiresAt": _format_time(self.expires) if self.expires else None,
            "expired": self.expired(now),
            "message": self.message,
        }


def _vm_name(vm_id: str) -> str:
    return vm_id.rstrip("/").rsplit("/", 1)[-1] if vm_id else "-"


@dataclass
class LinksReport:
    """Result of ``links create`` and ``links list``."""

    ref: BastionRef
    links: list[Link]
    now: datetime
    created: bool = False
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"bastion": self.ref.id, "links": [link.to_json(self.now) for link in self.links]}

    def tables(self) -> list[Table]:
        title = "Created shareable links" if self.created else "Shareable links"
        table = Table(f"{title} on {self.ref.name} ({len(self.links)})", ["VM", "URL", "created", "expires"])
        for link in self.links:
            if link.expires is None:
                expires: str | Cell = Cell("never (no bastion-fast expiry)", "warning")
            elif link.expired(self.now):
                expires = Cell(f"{_format_time(link.expires)} (EXPIRED)", "error")
            else:
                expires = _format_time(link.expires)
            table.rows.append([_vm_name(link.vm), link.url or (link.message or "-"), link.created or "-", expires])
        table.notes.extend(self.notes)
        if any(link.expired(self.now) for link in self.links):
            table.notes.append(f"Revoke expired links: bastion-fast links revoke {self.ref.cli_args} --expired")
        return [table]


@dataclass
class RevokeReport:
    """Result of ``links revoke``."""

    ref: BastionRef
    revoked: list[Link]
    by_token: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "bastion": self.ref.id,
            "revoked": [{"vm": link.vm, "url": link.url} for link in self.revoked]
            + [{"token": token} for token in self.by_token],
        }

    def tables(self) -> list[Table]:
        table = Table(f"Revoked on {self.ref.name}", ["VM", "link"])
        for link in self.revoked:
            table.rows.append([_vm_name(link.vm), link.url or "-"])
        for token in self.by_token:
            table.rows.append(["-", f"token {token}"])
        if not self.revoked and not self.by_token:
            table.notes.append("Nothing to revoke.")
        return [table]


def _check_enabled(view: BastionView) -> None:
    if view.rank < 2:
        raise UnsupportedSku(
            f"Shareable links need the Standard or Premium SKU; Bastion {view.ref.name!r} is {view.sku}.",
            hint=f"bastion-fast bastion configure {view.ref.cli_args} --sku Standard --shareable-link true",
        )
    if not view.features["shareableLink"]:
        raise DiscoveryError(
            f"Shareable links are not enabled on Bastion {view.ref.name!r}.",
            hint=f"bastion-fast bastion configure {view.ref.cli_args} --shareable-link true",
        )


def _vm_request(vm_ids: Sequence[str]) -> Any:
    from azure.mgmt.network.models import VM, BastionShareableLink, BastionShareableLinkListRequest

    return BastionShareableLinkListRequest(vms=[BastionShareableLink(vm=VM(id=vm)) for vm in vm_ids])


async def _fetch_links(arm: Any, ref: BastionRef, vm_ids: Sequence[str]) -> list[dict[str, Any]]:
    client = arm.client(ref.subscription)
    out: list[dict[str, Any]] = []
    try:
        async for item in client.get_bastion_shareable_link(ref.resource_group, ref.name, _vm_request(vm_ids)):
            out.append(item.as_dict())
    except Exception as exc:
        reraise(exc, f"read the shareable links of Bastion {ref.name!r}", bastion=ref)
    return out


async def _write_tags(arm: Any, ref: BastionRef, tags: dict[str, str]) -> None:
    from azure.mgmt.network.models import BastionHostUpdate

    client = arm.client(ref.subscription)
    poller = await client.bastion_hosts.begin_update(ref.resource_group, ref.name, BastionHostUpdate(tags=tags))
    await poller.result()


async def _delete_tokens(arm: Any, ref: BastionRef, tokens: Sequence[str]) -> None:
    from azure.mgmt.network.models import BastionShareableLinkTokenListRequest

    client = arm.client(ref.subscription)
    poller = await client.begin_delete_bastion_shareable_link_by_token(
        ref.resource_group, ref.name, BastionShareableLinkTokenListRequest(tokens=list(tokens)))
    await poller.result()


def _validate_vms(vm_ids: Sequence[str]) -> list[str]:
    from bastion_fast.control.targets import validate_resource_id

    out = []
    for vm in vm_ids:
        try:
            out.append(validate_resource_id(vm))
        except UsageError as exc:
            raise UsageError(str(exc).replace("--target-resource-id", "--vm"), hint=exc.hint) from None
    return list(dict.fromkeys(out))


async def create_links(
    arm: Any,
    ref: BastionRef,
    vm_ids: Sequence[str],
    lifetime: timedelta = DEFAULT_LIFETIME,
    *,
    now: datetime | None = None,
) -> LinksReport:
    """Create links for ``vm_ids`` that expire after ``lifetime`` (≤ 90 days).

    Raises:
        UsageError: lifetime out of range, no or malformed VM ids, too many tags.
        UnsupportedSku / DiscoveryError: the Bastion cannot have shareable links as it is configured.
    """
    if lifetime <= timedelta(0):
        raise UsageError("--expires must be a positive duration.", hint="For example --expires 24h or --expires 7d.")
    if lifetime > MAX_LIFETIME:
        raise UsageError(
            f"--expires {lifetime.days} days is longer than the 90 days bastion-fast allows for a shareable link.",
            hint="Use --expires 90d or less, and create a new link when it runs out.",
        )
    vms = _validate_vms(vm_ids)
    if not vms:
        raise UsageError("links create needs at least one --vm ID.", hint="Pass the VM's resource id with --vm.")
    now = now or datetime.now(UTC)
    expires = now + lifetime
    raw = await get_bastion(arm, ref)
    view = BastionView.from_arm(raw, ref)
    _check_enabled(view)
    existing = {link_token(x["bsl"]) for x in await _fetch_links(arm, ref, vms) if x.get("bsl")}
    client = arm.client(ref.subscription)
    created: list[dict[str, Any]] = []
    try:
        poller = await client.begin_put_bastion_shareable_link(ref.resource_group, ref.name, _vm_request(vms))
        async for item in await poller.result():
            created.append(item.as_dict())
    except Exception as exc:
        reraise(exc, f"create shareable links on Bastion {ref.name!r}", bastion=ref)
    tokens = [link_token(x["bsl"]) for x in created if x.get("bsl")]
    for token in tokens:
        register_secret(token)
    tags = dict(view.tags)
    for token in tokens:
        tags[expiry_tag(token)] = _format_time(expires)
    new_tokens = [t for t in tokens if t not in existing]
    if len(tags) > MAX_TAGS:
        await _rollback(arm, ref, new_tokens)
        raise UsageError(
            f"Bastion {ref.name!r} would need {len(tags)} tags to record these expiries; Azure allows {MAX_TAGS}.",
            hint=f"Revoke old links first (bastion-fast links revoke {ref.cli_args} --expired) or remove tags.",
        )
    try:
        await _write_tags(arm, ref, tags)
    except Exception as exc:
        await _rollback(arm, ref, new_tokens)
        reraise(exc, f"record the links' expiry as tags on Bastion {ref.name!r} (the new links were revoked "
                "again)", bastion=ref)
    links = [Link.from_arm(x, tags) for x in created]
    notes = [f"Expires {_format_time(expires)}. Azure does not expire shareable links by itself: schedule "
             f"`bastion-fast links revoke {ref.cli_args} --expired` to enforce it."]
    if existing & set(tokens):
        notes.append("Some VMs already had a link: the same URL is returned with the new expiry.")
    return LinksReport(ref, links, now, created=True, notes=notes)


async def _rollback(arm: Any, ref: BastionRef, tokens: Sequence[str]) -> None:
    if not tokens:
        return
    try:
        await _delete_tokens(arm, ref, tokens)
    except Exception as exc:
        log.error("Could not revoke %d new shareable link(s) after a failure (%s); revoke them with "
                  "`bastion-fast links revoke %s --vm …`", len(tokens), type(exc).__name__, ref.cli_args)


async def list_links(arm: Any, ref: BastionRef, *, now: datetime | None = None) -> LinksReport:
    """Every shareable link of the Bastion with its recorded expiry."""
    now = now or datetime.now(UTC)
    view = BastionView.from_arm(await get_bastion(arm, ref), ref)
    raw_links = await _fetch_links(arm, ref, [])
    links = sorted((Link.from_arm(x, view.tags) for x in raw_links), key=lambda link: (link.vm, link.created or ""))
    return LinksReport(ref, links, now)


async def revoke_links(
    arm: Any,
    ref: BastionRef,
    *,
    vm_ids: Sequence[str] = (),
    tokens: Sequence[str] = (),
    expired: bool = False,
    now: datetime | None = None,
) -> RevokeReport:
    """Delete links by VM, by token/URL, and/or every link past its recorded expiry; drop their expiry tags."""
    now = now or datetime.now(UTC)
    if not (vm_ids or tokens or expired):
        raise UsageError("links revoke needs --vm ID, --token TOKEN or --expired.",
                         hint="`bastion-fast links list` shows the links and their VMs.")
    vms = _validate_vms(vm_ids)
    view = BastionView.from_arm(await get_bastion(arm, ref), ref)
    all_links = [Link.from_arm(x, view.tags) for x in await _fetch_links(arm, ref, [])]
    wanted_tokens = [link_token(t) for t in tokens]
    for token in wanted_tokens:
        register_secret(token)
    by_vm = [link for link in all_links if link.vm.lower() in {v.lower() for v in vms}]
    if expired:
        wanted_tokens.extend(link.token for link in all_links if link.expired(now) and link.token)
    wanted_tokens = list(dict.fromkeys(wanted_tokens))
    known = {link.token: link for link in all_links if link.token}
    client = arm.client(ref.subscription)
    try:
        if vms:
            poller = await client.begin_delete_bastion_shareable_link(ref.resource_group, ref.name,
                                                                      _vm_request(vms))
            await poller.result()
        if wanted_tokens:
            await _delete_tokens(arm, ref, wanted_tokens)
    except Exception as exc:
        reraise(exc, f"revoke shareable links on Bastion {ref.name!r}", bastion=ref)
    revoked = list(by_vm) + [known[t] for t in wanted_tokens if t in known and known[t] not in by_vm]
    unknown = [t for t in wanted_tokens if t not in known]
    gone = {link.token for link in revoked if link.token} | set(unknown)
    stale = {expiry_tag(t) for t in gone} & set(view.tags)
    if stale:
        try:
            await _write_tags(arm, ref, {k: v for k, v in view.tags.items() if k not in stale})
        except Exception as exc:
            log.warning("Links revoked, but their expiry tags could not be removed (%s); they are harmless.",
                        type(exc).__name__)
    return RevokeReport(ref, revoked, by_token=unknown)
