"""``bastion-fast rdp``: .rdp files, the gateway request, client discovery, and a real xrdp + xfreerdp session."""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bastion_fast.commands.rdp import RdpClient, build_client_argv, tunnel_rdp_text
from bastion_fast.commands.rdpcmd import choose_gateway
from bastion_fast.control.models import ConnectionOptions, TunnelTarget
from bastion_fast.exceptions import UsageError
from tests.cmd_harness import WAIT, bastion_fast, cli_command, running_emulator, vm_id
from tests.fixtures_rdp import (
    LOGIN_BACKGROUND,
    LOGIN_BOX,
    rdp_missing_reason,
    read_xwd,
    running_xrdp,
    running_xvfb,
    write_png,
)

FAKE_CLIENT = """#!{python}
# Stands in for an RDP client: records its arguments and the .rdp file (content and mode), and in tunnel mode
# talks through the tunnel once (the emulator's echo target answers).
import json, os, re, socket, stat, sys
rdp = next(a for a in sys.argv[1:] if a.endswith(".rdp"))
text = open(rdp, encoding="utf-8").read()
record = {{"argv": sys.argv[1:], "rdp": text, "mode": stat.S_IMODE(os.stat(rdp).st_mode)}}
match = re.search(r"full address:s:127\\.0\\.0\\.1:(\\d+)", text)
if match:
    with socket.create_connection(("127.0.0.1", int(match.group(1)))) as s:
        s.sendall(b"rdp-probe")
        record["echo"] = s.recv(100).decode()
open(os.environ["FAKE_RDP_RECORD"], "w").write(json.dumps(record))
sys.exit(int(os.environ.get("FAKE_RDP_EXIT", "0")))
"""


def options(ip: str | None = None) -> ConnectionOptions:
    return ConnectionOptions(name="b", resource_group="g", target=TunnelTarget(
        resource_id=None if ip else vm_id("win1"), ip_address=ip, resource_port=3389))


def fake_client(tmp_path: Path) -> Path:
    path = tmp_path / "fake-rdp-client"
    path.write_text(FAKE_CLIENT.format(python=sys.executable))
    path.chmod(0o755)
    return path


# -- pure pieces -------------------------------------------------------------------------------------------------


def test_rdp_text_and_client_command_lines(tmp_path: Path) -> None:
    text = tunnel_rdp_text(50001, username="azureuser")
    assert text.splitlines() == ["full address:s:127.0.0.1:50001", "alternate full address:s:127.0.0.1:50001",
                                 "use multimon:i:0", "username:s:azureuser"]
    assert text.endswith("\r\n")
    rdp = tmp_path / "c.rdp"
    assert build_client_argv(RdpClient("mstsc", "mstsc.exe"), rdp, port=None, edit=True) == ["mstsc.exe", "/edit",
                                                                                             str(rdp)]
    assert build_client_argv(RdpClient("freerdp", "/usr/bin/xfreerdp"), rdp, port=50001, username="u",
                             extra=["/cert:ignore"]) == ["/usr/bin/xfreerdp", str(rdp), "/v:127.0.0.1:50001",
                                                         "/u:u", "/cert:ignore"]
    assert build_client_argv(RdpClient("macos", "Windows App"), rdp, port=5) == ["open", "-W", "-n", "-a",
                                                                               "Windows App", str(rdp)]


def test_mode_rules_follow_az() -> None:
    args = argparse.Namespace(disable_gateway=True, enable_mfa=False, auth_type=None, gateway=False)
    assert choose_gateway(args, options()) is False
    args = argparse.Namespace(disable_gateway=False, enable_mfa=False, auth_type=None, gateway=False)
    assert choose_gateway(args, options(ip="10.0.0.4")) is False
    assert choose_gateway(args, options()) is (sys.platform == "win32")
    args.gateway = True
    assert choose_gateway(args, options()) is True
    aad = argparse.Namespace(disable_gateway=True, enable_mfa=False, auth_type="aad", gateway=False)
    with pytest.raises(UsageError, match="gateway"):
        choose_gateway(aad, options())


# -- against the emulator ----------------------------------------------------------------------------------------


def test_gateway_mode_fetches_the_rdp_file(tmp_path: Path) -> None:
    import json

    vm = vm_id("win1")
    with running_emulator({vm: "echo"}, state_dir=tmp_path / "emu") as emu:
        record = tmp_path / "record.json"
        temp = tmp_path / "tmp"
        temp.mkdir()
        env = emu.env(tmp_path, FAKE_RDP_RECORD=str(record), TMPDIR=str(temp), FAKE_RDP_EXIT="3")
        done = bastion_fast("rdp", *emu.connection_args(), "--target-resource-id", vm, "--gateway", "--enable-mfa",
                            "--client", str(fake_client(tmp_path)), env=env)
        assert done.returncode == 3, done.stderr.decode()  # the client's status is ours
        seen = json.loads(record.read_text())
        assert "gatewayaccesstoken:s:" in seen["rdp"] and f"gatewayhostname:s:{emu.info['dns_name']}" in seen["rdp"]
        assert "enablerdsaadauth:i:1" in seen["rdp"] and "full address:s:win1:3389" in seen["rdp"]
        assert seen["mode"] == 0o600
        assert not list(temp.iterdir())  # the .rdp (a one-time credential) is gone
        assert emu.sessions() == []  # gateway mode opens no tunnel


def test_tunnel_mode_with_a_client_that_connects(tmp_path: Path) -> None:
    import json

    vm = vm_id("win1")
    with running_emulator({vm: "echo"}, state_dir=tmp_path / "emu") as emu:
        record = tmp_path / "record.json"
        env = emu.env(tmp_path, FAKE_RDP_RECORD=str(record))
        done = bastion_fast("rdp", *emu.connection_args(), "--target-resource-id", vm, "--disable-gateway",
                            "--client", str(fake_client(tmp_path)), "--username", "azureuser", "--",
                            "/extra-arg", env=env)
        assert done.returncode == 0, done.stderr.decode()
        seen = json.loads(record.read_text())
        assert seen["echo"] == "rdp-probe"
        assert "username:s:azureuser" in seen["rdp"] and seen["argv"][-1] == "/extra-arg"
        sessions = emu.wait_all_deleted(minimum=1)
        assert sessions[0]["port"] == 3389


@pytest.mark.skipif(rdp_missing_reason() is not None, reason=rdp_missing_reason() or "")
def test_real_xrdp_login_screen_through_the_tunnel(tmp_path: Path, artifacts_dir: Path) -> None:
    """xfreerdp under Xvfb → bastion-fast tunnel → emulator → xrdp: the login screen is drawn (TLS + bitmaps)."""
    vm = vm_id("win1")
    with running_xrdp() as rdp_port, running_xvfb() as (display, framebuffer), \
            running_emulator({vm: f"127.0.0.1:{rdp_port}"}, state_dir=tmp_path / "emu") as emu:
        env = emu.env(tmp_path, DISPLAY=display)
        process = subprocess.Popen([*cli_command(), "rdp", *emu.connection_args(), "--target-resource-id", vm,
                                    "--disable-gateway", "--client", "xfreerdp", "--", "/cert:ignore",
                                    "/size:1024x768", "/log-level:ERROR"], env=env, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE)
        screen = None
        deadline = time.monotonic() + WAIT
        try:
            while time.monotonic() < deadline and process.poll() is None:
                time.sleep(0.5)
                screen = read_xwd(framebuffer)
                if screen.fraction(LOGIN_BACKGROUND) > 0.3 and screen.fraction(LOGIN_BOX) > 0.01:
                    time.sleep(1.0)  # let the logo and fields finish drawing for the artifact
                    screen = read_xwd(framebuffer)
                    break
            assert screen is not None
            write_png(screen, artifacts_dir / "rdp-xrdp-login-through-bastion-fast.png")
            assert process.poll() is None, process.communicate()[1].decode()
            assert screen.fraction(LOGIN_BACKGROUND) > 0.3, "xrdp's login screen was not drawn"
            assert screen.fraction(LOGIN_BOX) > 0.01, "xrdp's login box was not drawn"
            assert len(emu.sessions()) >= 1
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)  # forwarded to xfreerdp; the tunnel closes after it
            _out, err = process.communicate(timeout=WAIT)
        emu.wait_all_deleted(minimum=1)
        assert b"Traceback" not in err, err.decode()


def test_rdp_file_is_private_and_removed_in_tunnel_mode(tmp_path: Path) -> None:
    import json

    vm = vm_id("win1")
    with running_emulator({vm: "echo"}, state_dir=tmp_path / "emu") as emu:
        temp = tmp_path / "tmp"
        temp.mkdir()
        record = tmp_path / "r.json"
        env = emu.env(tmp_path, FAKE_RDP_RECORD=str(record), TMPDIR=str(temp))
        done = bastion_fast("rdp", *emu.connection_args(), "--target-resource-id", vm, "--disable-gateway",
                            "--client", str(fake_client(tmp_path)), env=env)
        assert done.returncode == 0, done.stderr.decode()
        assert json.loads(record.read_text())["mode"] == 0o600
        assert not [p for p in temp.iterdir() if p.name.startswith("bastion-fast-rdp")]
