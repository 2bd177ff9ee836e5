"""``links create | list | revoke``: through azure-mgmt-network's shareable-link operations against the emulator,
which serves each link's URL — a revoked or expired link stops working at once."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest

from bastion_fast.emulator.arm_shareable_links import store_for
from bastion_fast.ops import links as ops_links
from bastion_fast.ops.arm import BastionRef, open_arm
from tests import fixtures_emulator
from tests._control_scripted import clean_env  # noqa: F401 - fixture
from tests._ops_helpers import NAME, RG, SUB, OpsEnv, ops_args, ops_env, vm_id

pytestmark = pytest.mark.usefixtures("clean_env")
emulator_state_dir = fixtures_emulator.emulator_state_dir

VM1, VM2 = vm_id("vm1"), vm_id("vm2")
TARGETS = {VM1: "echo", VM2: "echo"}


async def fetch(env: OpsEnv, url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, \
            session.get(url, ssl=env.emu.client_ssl_context()) as response:
        return response.status, await response.text()


def expiry_tags(env: OpsEnv) -> dict[str, str]:
    return {k: v for k, v in env.resource.get("tags", {}).items() if k.startswith(ops_links.TAG_PREFIX)}


async def test_create_list_revoke_by_vm(emulator_state_dir: Path, capsys, monkeypatch) -> None:
    async with ops_env(emulator_state_dir, capsys, monkeypatch, targets=TARGETS, enable_shareable_link=True) as env:
        before = datetime.now(UTC).replace(microsecond=0)
        created = await env.cli("links", "create", *env.args("--vm", VM1, "--vm", VM2, "--expires", "2h",
                                                              "--output", "json"))
        after = datetime.now(UTC)
        assert created.code == 0, created.err
        made = {link["vm"]: link for link in created.json()["links"]}
        assert set(made) == {VM1, VM2}
        url = made[VM1]["url"]
        assert url.startswith(f"https://{env.emu.dns_name}/api/shareable-url/")
        expires = datetime.fromisoformat(made[VM1]["expiresAt"].replace("Z", "+00:00"))
        assert before <= expires - timedelta(hours=2) <= after
        assert len(expiry_tags(env)) == 2
        assert not any(url.rsplit("/", 1)[-1] in k or url in v for k, v in env.resource["tags"].items())

        status, page = await fetch(env, url)
        assert status == 200 and "vm1" in page

        listed = await env.cli("links", "list", *env.args("--output", "json"))
        assert {link["vm"] for link in listed.json()["links"]} == {VM1, VM2}
        assert all(link["expired"] is False for link in listed.json()["links"])

        revoked = await env.cli("links", "revoke", *env.args("--vm", VM1, "--output", "json"))
        assert revoked.code == 0, revoked.err
        assert [r["vm"] for r in revoked.json()["revoked"]] == [VM1]
        status, _ = await fetch(env, url)
        assert status == 404
        status, _ = await fetch(env, made[VM2]["url"])
        assert status == 200
        listed = await env.cli("links", "list", *env.args("--output", "json"))
        assert [link["vm"] for link in listed.json()["links"]] == [VM2]
        assert len(expiry_tags(env)) == 1


async def test_revoke_by_token_url(emulator_state_dir: Path, capsys, monkeypatch) -> None:
    async with ops_env(emulator_state_dir, capsys, monkeypatch, targets=TARGETS, enable_shareable_link=True) as env:
        created = await env.cli("links", "create", *env.args("--vm", VM1, "--output", "json"))
        url = created.json()["links"][0]["url"]
        revoked = await env.cli("links", "revoke", *env.args("--token", url, "--output", "json"))
        assert revoked.code == 0, revoked.err
        status, _ = await fetch(env, url)
        assert status == 404
        assert expiry_tags(env) == {}


async def test_table_output_and_existing_link_is_reused(emulator_state_dir: Path, capsys, monkeypatch) -> None:
    async with ops_env(emulator_state_dir, capsys, monkeypatch, targets=TARGETS, enable_shareable_link=True) as env:
        first = await env.cli("links", "create", *env.args("--vm", VM1, "--output", "json"))
        before = datetime.now(UTC).replace(microsecond=0)
        again = await env.cli("links", "create", *env.args("--vm", VM1, "--expires", "7d", "--output", "table"))
        assert again.code == 0, again.err
        assert "already had a link" in " ".join(again.out.split())
        listed = await env.cli("links", "list", *env.args("--output", "json"))
        only = listed.json()["links"]
        assert len(only) == 1 and only[0]["url"] == first.json()["links"][0]["url"]
        expires = datetime.fromisoformat(only[0]["expiresAt"].replace("Z", "+00:00"))
        assert expires >= before + timedelta(days=7)


async def test_emulator_expires_links_at_their_recorded_time(emulator_state_dir: Path, capsys, monkeypatch) -> None:
    async with ops_env(emulator_state_dir, capsys, monkeypatch, targets=TARGETS, enable_shareable_link=True) as env:
        created = await env.cli("links", "create", *env.args("--vm", VM1, "--expires", "1h", "--output", "json"))
        url = created.json()["links"][0]["url"]
        assert (await fetch(env, url))[0] == 200
        store = store_for(env.emu.rt)
        assert store is not None
        store.clock = lambda: time.time() + 2 * 3600
        assert (await fetch(env, url))[0] == 404
        listed = await env.cli("links", "list", *env.args("--output", "json"))
        assert listed.json()["links"] == []


async def test_revoke_expired_enforces_the_deadline_against_azure(emulator_state_dir: Path, capsys,
                                                                  monkeypatch) -> None:
    """Real Azure keeps links forever: ``revoke --expired`` is what enforces the recorded expiry."""
    async with ops_env(emulator_state_dir, capsys, monkeypatch, targets=TARGETS, enable_shareable_link=True) as env:
        ref = BastionRef(SUB, RG, NAME)
        async with await open_arm(ops_args(env.emu)()) as arm:
            report = await ops_links.create_links(arm, ref, [VM1], timedelta(hours=1))
            await ops_links.create_links(arm, ref, [VM2], timedelta(days=3))
            later = datetime.now(UTC) + timedelta(hours=2)
            listed = await ops_links.list_links(arm, ref, now=later)
            assert {link.vm: link.expired(later) for link in listed.links} == {VM1: True, VM2: False}
            assert "--expired" in " ".join(" ".join(t.notes) for t in listed.tables())
            revoked = await ops_links.revoke_links(arm, ref, expired=True, now=later)
            assert [link.vm for link in revoked.revoked] == [VM1]
        url = report.links[0].url
        assert url is not None
        assert (await fetch(env, url))[0] == 404
        assert len(expiry_tags(env)) == 1


async def test_refusals(emulator_state_dir: Path, capsys, monkeypatch) -> None:
    async with ops_env(emulator_state_dir, capsys, monkeypatch, targets=TARGETS, enable_shareable_link=False) as env:
        too_long = await env.cli("links", "create", *env.args("--vm", VM1, "--expires", "91d"))
        assert too_long.code == 2 and "90 days" in too_long.text
        disabled = await env.cli("links", "create", *env.args("--vm", VM1))
        assert disabled.code == 1
        assert "not enabled" in disabled.text and "--shareable-link true" in disabled.text
        nothing = await env.cli("links", "revoke", *env.args())
        assert nothing.code == 2
    async with ops_env(emulator_state_dir, capsys, monkeypatch, targets=TARGETS, sku="Basic") as env:
        basic = await env.cli("links", "create", *env.args("--vm", VM1))
        assert basic.code == 1 and "Standard or Premium" in basic.text


async def test_unknown_vm_is_reported_per_vm(emulator_state_dir: Path, capsys, monkeypatch) -> None:
    async with ops_env(emulator_state_dir, capsys, monkeypatch, targets=TARGETS, enable_shareable_link=True) as env:
        ghost = vm_id("ghost")
        result = await env.cli("links", "create", *env.args("--vm", VM1, "--vm", ghost, "--output", "json"))
        assert result.code == 1
        by_vm = {link["vm"]: link for link in result.json()["links"]}
        assert by_vm[VM1]["url"] and by_vm[ghost]["url"] is None and "not found" in by_vm[ghost]["message"]


async def test_links_are_revoked_again_when_the_expiry_cannot_be_recorded(emulator_state_dir: Path, capsys,
                                                                         monkeypatch) -> None:
    """49 tags already: two more expiry tags would pass ARM's limit of 50, so the new links must not survive."""
    tags = {f"team-{i}": "x" for i in range(49)}
    async with ops_env(emulator_state_dir, capsys, monkeypatch, targets=TARGETS, enable_shareable_link=True,
                       tags=tags) as env:
        result = await env.cli("links", "create", *env.args("--vm", VM1, "--vm", VM2, "--output", "json"))
        assert result.code == 2
        assert "51 tags" in result.text and "allows 50" in result.text
        listed = await env.cli("links", "list", *env.args("--output", "json"))
        assert listed.json()["links"] == []
        assert env.resource["tags"] == tags
