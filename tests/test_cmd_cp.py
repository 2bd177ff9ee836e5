"""``bastion-fast cp``: uploads and downloads through the emulator to a real sshd, progress, resume, verify."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest

from bastion_fast.commands.cp import Pair, parse_location, plan_pairs, resume_batch, verify_pairs
from tests.cmd_harness import PtyCapture, VmSetup, bastion_fast, cli_command, needs_sshd, vm_setup_fixture  # noqa: F401

MiB = 1024 * 1024


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(MiB):
            digest.update(chunk)
    return digest.hexdigest()


def random_file(path: Path, size: int) -> Path:
    with path.open("wb") as fh:
        left = size
        while left:
            chunk = os.urandom(min(left, 4 * MiB))
            fh.write(chunk)
            left -= len(chunk)
    return path


def summary(done: subprocess.CompletedProcess[bytes]) -> dict[str, object]:
    assert done.returncode == 0, done.stderr.decode()
    result: dict[str, object] = json.loads(done.stdout)
    return result


# -- pure pieces -------------------------------------------------------------------------------------------------


def test_parse_location_follows_scp() -> None:
    assert parse_location("azureuser@web1:/tmp/x").target == "web1"
    assert parse_location("azureuser@web1:/tmp/x").user == "azureuser"
    assert parse_location("web1:").path == "."
    assert not parse_location("./web1:x").remote
    assert not parse_location("dir/a:b").remote
    assert not parse_location("C:\\Users\\me\\file").remote
    assert not parse_location("plain.txt").remote
    assert parse_location("a@b@web1:p").user == "a@b"  # Entra ID principals contain '@'


def test_plan_pairs_places_files_like_scp(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "a").write_bytes(b"1")
    (tree / "sub" / "b").write_bytes(b"22")
    single = tmp_path / "one.bin"
    single.write_bytes(b"333")
    into_dir = plan_pairs(upload=True, sources=[str(single)], dest="/data", dest_is_dir=True)
    assert [(p.remote, p.size) for p in into_dir] == [("/data/one.bin", 3)]
    renamed = plan_pairs(upload=True, sources=[str(single)], dest="/data/new.bin", dest_is_dir=False)
    assert renamed[0].remote == "/data/new.bin"
    recursive = plan_pairs(upload=True, sources=[str(tree)], dest="/data", dest_is_dir=True)
    assert sorted(p.remote for p in recursive) == ["/data/tree/a", "/data/tree/sub/b"]
    download = plan_pairs(upload=False, sources=["/srv/logs"], dest=str(tmp_path / "dl"), dest_is_dir=False,
                          remote_files={"/srv/logs": [("/srv/logs/x.log", 5), ("/srv/logs/d/y.log", 6)]})
    assert sorted(Path(p.local).relative_to(tmp_path).as_posix() for p in download) == ["dl/d/y.log", "dl/x.log"]


def test_resume_batch_decides_per_file() -> None:
    pairs = [Pair("/l/a", "/r/a", 100), Pair("/l/b", "/r/b", 100), Pair("/l/c", "/r/c", 100),
             Pair("/l/d", "/r/d", 100)]
    text, remaining, complete = resume_batch(pairs, upload=True, existing={"/r/a": 40, "/r/b": 100, "/r/d": 150})
    assert text.splitlines() == ['@reput "/l/a" "/r/a"', '@put "/l/c" "/r/c"', '@put "/l/d" "/r/d"']
    assert (remaining, complete) == (60 + 100 + 100, 1)


def test_verify_reports_a_difference(tmp_path: Path) -> None:
    local = tmp_path / "f"
    local.write_bytes(b"local bytes")

    class Shell:
        async def run(self, command: str, *, check: bool = True) -> tuple[int, str]:
            assert command.startswith("sha256sum -- ")
            return 0, f"{'0' * 64}  /remote/f\n"

    assert asyncio.run(verify_pairs(Shell(), [Pair(str(local), "/remote/f", 11)])) is False  # type: ignore[arg-type]

    class Good(Shell):
        async def run(self, command: str, *, check: bool = True) -> tuple[int, str]:
            return 0, f"{hashlib.sha256(b'local bytes').hexdigest()}  /remote/f\n"

    assert asyncio.run(verify_pairs(Good(), [Pair(str(local), "/remote/f", 11)])) is True  # type: ignore[arg-type]


# -- end to end --------------------------------------------------------------------------------------------------


@needs_sshd
def test_upload_and_download_64mib_with_checksums(setup: VmSetup, tmp_path: Path) -> None:
    source = random_file(tmp_path / "payload.bin", 64 * MiB)
    remote_dir = tmp_path / "vm-disk"
    remote_dir.mkdir()
    up = summary(bastion_fast("cp", *setup.target_args, "--verify", "-o", "json", str(source),
                              f"{setup.user}@web1:{remote_dir}/", env=setup.env, timeout=600))
    assert up["direction"] == "upload" and up["bytes"] == 64 * MiB and up["verified"] is True
    assert int(str(up["wire_bytes"])) >= 64 * MiB  # the tunnel carried at least the file (plus SSH overhead)
    assert sha256(remote_dir / "payload.bin") == sha256(source)
    local_dir = tmp_path / "downloads"
    local_dir.mkdir()
    down = summary(bastion_fast("cp", *setup.target_args, "--verify", "-o", "json",
                                f"{setup.user}@web1:{remote_dir}/payload.bin", str(local_dir), env=setup.env,
                                timeout=600))
    assert down["direction"] == "download" and down["bytes"] == 64 * MiB and down["verified"] is True
    assert sha256(local_dir / "payload.bin") == sha256(source)
    sessions = setup.emu.wait_all_deleted(minimum=2)
    assert len(sessions) == 2  # one SSH connection (and one Bastion session) per cp, thanks to ControlMaster


@needs_sshd
def test_recursive_copy_both_ways(setup: VmSetup, tmp_path: Path) -> None:
    tree = tmp_path / "site"
    (tree / "css").mkdir(parents=True)
    (tree / "index.html").write_text("<h1>hi</h1>\n")
    random_file(tree / "css" / "big.bin", 300_000)
    remote = tmp_path / "vm"
    remote.mkdir()
    up = bastion_fast("cp", *setup.target_args, "-r", "--verify", str(tree), f"{setup.user}@web1:{remote}",
                      env=setup.env)
    assert up.returncode == 0, up.stderr.decode()
    assert b"uploaded 2 files" in up.stderr and b"sha256 verified" in up.stderr
    assert (remote / "site" / "css" / "big.bin").read_bytes() == (tree / "css" / "big.bin").read_bytes()
    back = tmp_path / "back"
    down = bastion_fast("cp", *setup.target_args, "-r", "--verify", f"web1:{remote}/site", str(back),
                        "--username", setup.user, env=setup.env)
    assert down.returncode == 0, down.stderr.decode()
    assert (back / "index.html").read_text() == "<h1>hi</h1>\n"
    assert (back / "css" / "big.bin").read_bytes() == (tree / "css" / "big.bin").read_bytes()


@needs_sshd
def test_resume_after_the_websocket_drops(setup: VmSetup, tmp_path: Path) -> None:
    size = 24 * MiB
    source = random_file(tmp_path / "big.bin", size)
    remote_dir = tmp_path / "vm"
    remote_dir.mkdir()
    setup.emu.set_faults(drop_after_bytes=size // 2)  # Bastion drops the WebSocket half-way
    broken = bastion_fast("cp", *setup.target_args, str(source), f"{setup.user}@web1:{remote_dir}/",
                          env=setup.env, timeout=300)
    assert broken.returncode != 0
    assert b"--resume" in broken.stderr  # the hint says how to continue
    partial = (remote_dir / "big.bin").stat().st_size
    assert 0 < partial < size
    setup.emu.clear_faults()
    resumed = summary(bastion_fast("cp", *setup.target_args, "--resume", "--verify", "-o", "json", str(source),
                                   f"{setup.user}@web1:{remote_dir}/", env=setup.env, timeout=300))
    assert resumed["resumed"] is True and resumed["verified"] is True
    assert resumed["bytes"] == size - partial  # only the missing tail crossed the tunnel
    assert sha256(remote_dir / "big.bin") == sha256(source)
    # and a download interrupted the same way
    local_dir = tmp_path / "dl"
    local_dir.mkdir()
    setup.emu.set_faults(drop_after_bytes=size // 3)
    broken = bastion_fast("cp", *setup.target_args, f"{setup.user}@web1:{remote_dir}/big.bin", str(local_dir),
                          env=setup.env, timeout=300)
    assert broken.returncode != 0
    setup.emu.clear_faults()
    got = (local_dir / "big.bin").stat().st_size
    assert 0 < got < size
    resumed = summary(bastion_fast("cp", *setup.target_args, "--resume", "--verify", "-o", "json",
                                   f"{setup.user}@web1:{remote_dir}/big.bin", str(local_dir), env=setup.env,
                                   timeout=300))
    assert resumed["bytes"] == size - got and resumed["verified"] is True
    assert sha256(local_dir / "big.bin") == sha256(source)
    setup.emu.wait_all_deleted(minimum=4)
    # resuming a complete file copies nothing
    again = summary(bastion_fast("cp", *setup.target_args, "--resume", "-o", "json", str(source),
                                 f"{setup.user}@web1:{remote_dir}/", env=setup.env))
    assert again["bytes"] == 0


@needs_sshd
def test_progress_bar_on_a_terminal(setup: VmSetup, tmp_path: Path) -> None:
    source = random_file(tmp_path / "p.bin", 16 * MiB)
    remote_dir = tmp_path / "vm"
    remote_dir.mkdir()
    terminal = PtyCapture()
    env = {**setup.env, "COLUMNS": "120", "TERM": "xterm"}
    process = subprocess.run([*cli_command(), "cp", *setup.target_args, str(source),
                              f"{setup.user}@web1:{remote_dir}/"], env=env, stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=terminal.slave, timeout=300, check=False)
    terminal.close()
    shown = terminal.text()
    assert process.returncode == 0, shown
    assert "upload" in shown and "MB/s" in shown  # the bar (label, rate) and the summary line
    assert "uploaded 16.0 MiB in" in shown
    assert process.stdout == b""


@needs_sshd
def test_no_progress_and_usage_errors(setup: VmSetup, tmp_path: Path) -> None:
    source = tmp_path / "s.txt"
    source.write_text("x")
    both_local = bastion_fast("cp", *setup.target_args, str(source), str(tmp_path / "t.txt"), env=setup.env)
    assert both_local.returncode == 2 and b"Neither the sources nor the destination is remote" in both_local.stderr
    missing = bastion_fast("cp", *setup.target_args, str(tmp_path / "nope"), "web1:/tmp/", env=setup.env)
    assert missing.returncode == 2 and b"no such file" in missing.stderr
    no_profile = bastion_fast("cp", str(source), "ghost:/tmp/", env=setup.env)
    assert no_profile.returncode == 2 and b"No profile named 'ghost'" in no_profile.stderr
    remote_missing = bastion_fast("cp", *setup.target_args, "--username", setup.user, "web1:/no/such/file",
                                  str(tmp_path), env=setup.env)
    assert remote_missing.returncode == 2 and b"no such file on the VM" in remote_missing.stderr
    setup.emu.wait_all_deleted(minimum=1)


@needs_sshd
def test_profile_target(setup: VmSetup, tmp_path: Path) -> None:
    setup.write_profiles()
    source = tmp_path / "p.txt"
    source.write_text("via profile\n")
    done = bastion_fast("cp", "--no-progress", str(source), f"web1:{tmp_path}/q.txt", env=setup.env)
    assert done.returncode == 0, done.stderr.decode()
    assert (tmp_path / "q.txt").read_text() == "via profile\n"


@pytest.mark.slow
@needs_sshd
def test_one_gib_up_and_down(setup: VmSetup, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    size = 1024 * MiB
    source = random_file(tmp_path / "1g.bin", size)
    remote_dir = tmp_path / "vm"
    remote_dir.mkdir()
    up = summary(bastion_fast("cp", *setup.target_args, "-o", "json", str(source), f"{setup.user}@web1:{remote_dir}/",
                              env=setup.env, timeout=3600))
    local_dir = tmp_path / "dl"
    local_dir.mkdir()
    down = summary(bastion_fast("cp", *setup.target_args, "-o", "json", f"{setup.user}@web1:{remote_dir}/1g.bin",
                                str(local_dir), env=setup.env, timeout=3600))
    digest = sha256(source)
    assert sha256(remote_dir / "1g.bin") == digest
    assert sha256(local_dir / "1g.bin") == digest
    with capsys.disabled():
        print(f"\n1 GiB cp through the emulator: up {up['mb_per_s']} MB/s ({up['seconds']} s), "
              f"down {down['mb_per_s']} MB/s ({down['seconds']} s)")
