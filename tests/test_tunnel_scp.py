"""Real OpenSSH through the tunnel: ``scp`` of a 256 MiB file to a real ``sshd`` behind the emulator, checksum
compared, on both data-path implementations; and an interactive-style ``ssh`` command.

The emulator maps the target VM to the sshd's loopback port; ssh/scp connect to the tunnel's local port exactly
as a user would after ``bastion-fast tunnel … --resource-port 22 --port N``.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path
from types import ModuleType

import pytest

from bastion_fast import open_tunnel
from bastion_fast.emulator import Emulator
from tests import fixtures_emulator
from tests._tunnel_helpers import WAIT, on_each_loop
from tests.fixtures_emulator import make_config
from tests.fixtures_sshd import SshServer, sshd, sshd_factory, sshd_missing_reason  # noqa: F401

pytestmark = pytest.mark.skipif(sshd_missing_reason() is not None, reason=str(sshd_missing_reason()))

emulator_state_dir = fixtures_emulator.emulator_state_dir

SUB = "00000000-0000-0000-0000-000000000000"
VM = f"/subscriptions/{SUB}/resourceGroups/rg-vm/providers/Microsoft.Compute/virtualMachines/ssh-vm"
SIZE = 256 * 1024 * 1024


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


@pytest.fixture(scope="module")
def big_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    path = tmp_path_factory.mktemp("scp") / "payload.bin"
    digest = hashlib.sha256()
    with path.open("wb") as fh:
        for _ in range(SIZE // (4 << 20)):
            block = os.urandom(4 << 20)
            digest.update(block)
            fh.write(block)
    return path, digest.hexdigest()


async def _run(*cmd: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(*cmd, stdin=asyncio.subprocess.DEVNULL,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 12 * WAIT)
    return proc.returncode or 0, out.decode(errors="replace")


async def _scp_through_tunnel(impl: ModuleType, server: SshServer, source: Path, dest: Path,
                              monkeypatch: pytest.MonkeyPatch, state_dir: Path) -> None:
    config = make_config(state_dir, targets={VM: f"127.0.0.1:{server.port}"}, default_target=None)
    async with Emulator(config) as emu:
        monkeypatch.setenv("BASTION_FAST_TOKEN", emu.token)
        info = emu.info
        async with open_tunnel(name=info["bastion"], resource_group=info["resource_group"], target_resource_id=VM,
                               resource_port=22, subscription=info["subscription"], auth="static",
                               arm_endpoint=info["arm_endpoint"], ca_bundle=info["ca_file"], proxy=False,
                               implementation=impl.IMPLEMENTATION) as t:
            code, out = await _run("scp", *server.ssh_base_args, "-P", str(t.port), str(source),
                                   f"{server.user}@127.0.0.1:{dest}")
            assert code == 0, f"scp failed: {out}\nsshd log:\n{server.log()}"
            code, out = await _run(*server.ssh_command("echo", "through-bastion", port=t.port))
            assert code == 0 and out.strip() == "through-bastion", out
            async with asyncio.timeout(WAIT):
                while len(t.results) < 2:
                    await asyncio.sleep(0.01)
            assert all(r.ok for r in t.results), t.results
            assert t.results[0].bytes_up > SIZE  # the file plus SSH framing went up through the tunnel
        ledger = emu.ledger
        await ledger.wait_for(lambda: all(s.state == "deleted" for s in ledger.sessions()), WAIT)
        assert len(ledger.sessions()) == 2 and ledger.leaked() == []


@on_each_loop
async def test_scp_256_mib_to_real_sshd(impl: ModuleType, sshd: SshServer,  # noqa: F811
                                        big_file: tuple[Path, str], monkeypatch: pytest.MonkeyPatch,
                                        emulator_state_dir: Path) -> None:
    source, digest = big_file
    dest = sshd.directory / f"received-{impl.IMPLEMENTATION}.bin"
    await _scp_through_tunnel(impl, sshd, source, dest, monkeypatch, emulator_state_dir)
    assert dest.stat().st_size == SIZE
    assert _sha256_file(dest) == digest
    dest.unlink()
