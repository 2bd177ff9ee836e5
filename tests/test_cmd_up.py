"""``bastion-fast up``: several named tunnels in one process, readiness per tunnel, clean shutdown."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
from pathlib import Path

from tests.cmd_harness import WAIT, PtyCapture, cli_command, running_emulator, vm_id


def write_profiles(path: Path, info: dict[str, str]) -> None:
    path.write_text(
        "[defaults]\n"
        f'bastion = "{info["bastion"]}"\nrg = "{info["resource_group"]}"\nsubscription = "{info["subscription"]}"\n'
        f'arm_endpoint = "{info["arm_endpoint"]}"\nca_bundle = "{info["ca_file"]}"\nauth = "static"\n\n'
        f'[targets.web1]\ntarget_resource_id = "{vm_id("web1")}"\nresource_port = 22\n\n'
        f'[targets.db1]\ntarget_resource_id = "{vm_id("db1")}"\nresource_port = 5432\nport = 0\n')


def echo(port: int, payload: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as sock:
        sock.sendall(payload)  # no half-close: by default (as in az) EOF from the app ends the session
        received = b""
        while len(received) < len(payload) and (chunk := sock.recv(65536)):
            received += chunk
    return received


def test_two_tunnels_json_readiness_and_ctrl_c(tmp_path: Path) -> None:
    with running_emulator({vm_id("web1"): "echo", vm_id("db1"): "echo"}, state_dir=tmp_path / "emu") as emu:
        env = emu.env(tmp_path)
        write_profiles(tmp_path / "config.toml", emu.info)
        process = subprocess.Popen([*cli_command(), "up", "web1", "db1:0:6543", "--output", "json"], env=env,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert process.stdout is not None
            ready = [json.loads(process.stdout.readline()) for _ in range(2)]
            assert [r["event"] for r in ready] == ["ready", "ready"]
            by_name = {r["name"]: r for r in ready}
            assert by_name["web1"]["target"] == "web1:22"
            assert by_name["db1"]["target"] == "db1:6543"  # NAME:LOCAL:REMOTE overrode the profile's port
            assert by_name["web1"]["port"] != by_name["db1"]["port"]
            assert echo(by_name["web1"]["port"], b"to web1" * 1000) == b"to web1" * 1000
            assert echo(by_name["db1"]["port"], b"to db1") == b"to db1"
        finally:
            process.send_signal(signal.SIGINT)
            out, err = process.communicate(timeout=WAIT)
        assert process.returncode == 130, err
        events = [json.loads(line) for line in out.splitlines()]
        closed = [e for e in events if e["event"] == "closed"]
        assert sorted(e["name"] for e in closed) == ["db1", "web1"] and all(e["ok"] for e in closed)
        assert sorted(e["name"] for e in events if e["event"] == "stopped") == ["db1", "web1"]
        sessions = emu.wait_all_deleted(minimum=2)
        assert {s["port"] for s in sessions} == {22, 6543}


def test_one_bad_profile_stops_everything_with_its_name(tmp_path: Path) -> None:
    with running_emulator({vm_id("web1"): "echo"}, state_dir=tmp_path / "emu") as emu:
        env = emu.env(tmp_path)
        write_profiles(tmp_path / "config.toml", emu.info)
        with (tmp_path / "config.toml").open("a") as fh:
            fh.write('\n[targets.broken]\nbastion = "no-such-bastion"\ntarget_ip_address = "10.0.0.9"\n'
                     'resource_port = 22\n')
        done = subprocess.run([*cli_command(), "up", "web1", "broken"], env=env, capture_output=True, text=True,
                              timeout=WAIT, check=False)
        assert done.returncode == 1
        assert "broken:" in done.stderr and "Traceback" not in done.stderr
        missing = subprocess.run([*cli_command(), "up", "web1", "nope"], env=env, capture_output=True, text=True,
                                 timeout=WAIT, check=False)
        assert missing.returncode == 2 and "No profile named 'nope'" in missing.stderr


def test_status_table_on_a_terminal(tmp_path: Path) -> None:
    import time

    with running_emulator({vm_id("web1"): "echo", vm_id("db1"): "echo"}, state_dir=tmp_path / "emu") as emu:
        env = {**emu.env(tmp_path), "COLUMNS": "120", "TERM": "xterm"}
        write_profiles(tmp_path / "config.toml", emu.info)
        terminal = PtyCapture()
        process = subprocess.Popen([*cli_command(), "up", "web1:0", "db1:0"], env=env, stdin=subprocess.DEVNULL,
                                   stdout=subprocess.DEVNULL, stderr=terminal.slave)
        try:
            deadline = time.monotonic() + WAIT
            while time.monotonic() < deadline and b"db1:5432" not in terminal.raw():
                time.sleep(0.1)
            shown = terminal.text()
            assert "web1:22" in shown and "db1:5432" in shown, shown
            assert "connections" in shown and "0 open / 0" in shown
        finally:
            process.send_signal(signal.SIGINT)
            assert process.wait(timeout=WAIT) == 130
            terminal.close()
