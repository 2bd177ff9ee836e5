"""No secret is ever shown: ARM tokens, authTokens and websocketTokens stay out of stderr, stdout, log files,
exception texts and reprs — with logging at DEBUG (libraries included), on success and on every error path.

Each test mints fresh, recognisable token values so a leak cannot hide behind a registration made by an earlier
test. The tunnel-level test (a real ``bastion-fast tunnel --debug`` against the emulator) runs when the tunnel CLI
and the emulator are present.
"""

from __future__ import annotations

import io
import logging
import secrets
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bastion_fast import _logging
from bastion_fast.cli import report_error
from bastion_fast.control import ConnectionOptions, TunnelTarget, connect
from bastion_fast.exceptions import BastionFastError
from tests._control_scripted import (
    BASTION_PATH,
    NAME,
    RG,
    SUB,
    TLS,
    VM_ID,
    Reply,
    ScriptedServer,
    bastion_json,
    clean_env,  # noqa: F401 - fixture
    tls,  # noqa: F401 - fixture
)

pytestmark = pytest.mark.usefixtures("clean_env")


@dataclass
class Secrets:
    arm: str
    auth: str
    ws: str

    def all(self) -> list[str]:
        # also the distinctive middle parts, in case something printed a fragment
        return [self.arm, self.auth, self.ws, self.arm[10:40], self.auth[8:40], self.ws[8:30]]


@pytest.fixture
def fresh() -> Secrets:
    return Secrets(
        arm="eyJ0eXAiOiJKV1QifQ." + secrets.token_urlsafe(48) + "." + secrets.token_urlsafe(16),
        auth=secrets.token_hex(32),
        ws=secrets.token_hex(24),
    )


@dataclass
class Captured:
    stream: io.StringIO
    log_file: Path


@pytest.fixture
def debug_logging(tmp_path: Path) -> Iterator[Captured]:
    """bastion_fast._logging at DEBUG into a string stream and a log file; restored afterwards."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level, logging.getLogger("bastion_fast").level)
    stream = io.StringIO()
    log_file = tmp_path / "debug.log"
    _logging.configure(logging.DEBUG, stream=stream, log_file=str(log_file))
    try:
        yield Captured(stream, log_file)
    finally:
        for handler in list(root.handlers):
            if getattr(handler, "_bastion_fast", False):
                root.removeHandler(handler)
                handler.close()
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        logging.getLogger("bastion_fast").setLevel(saved[2])


@pytest.fixture
async def server(tls: TLS) -> AsyncIterator[ScriptedServer]:  # noqa: F811
    async with ScriptedServer(tls) as srv:
        yield srv


def options(server: ScriptedServer, tls: TLS, **kw: object) -> ConnectionOptions:  # noqa: F811
    return ConnectionOptions(name=NAME, resource_group=RG, target=TunnelTarget(VM_ID, None, 22), subscription=SUB,
                             auth="static", arm_endpoint=server.url, ca_bundle=str(tls.ca_file), retries=1,
                             **kw)  # type: ignore[arg-type]


def assert_clean(texts: list[str], fresh: Secrets) -> None:
    for text in texts:
        for secret in fresh.all():
            assert secret not in text, f"secret leaked: ...{secret[:12]}... in {text[:2000]!r}"


def error_texts(exc: BaseException) -> list[str]:
    texts = [str(exc), repr(exc), str(getattr(exc, "hint", "") or ""), str(exc.args)]
    if isinstance(exc, BastionFastError):
        texts.append(str(getattr(exc, "service_message", "") or ""))
    return texts


async def test_successful_session_at_debug_leaks_nothing(server: ScriptedServer, tls: TLS,  # noqa: F811
                                                         fresh: Secrets, debug_logging: Captured,
                                                         monkeypatch: pytest.MonkeyPatch,
                                                         capfd: pytest.CaptureFixture[str]):
    monkeypatch.setenv("BASTION_FAST_TOKEN", fresh.arm)
    token_body = {"authToken": fresh.auth, "websocketToken": fresh.ws, "nodeId": "10.0.0.5", "username": "",
                  "dataSource": fresh.auth, "availableDataSources": []}
    server.expect("GET", BASTION_PATH, Reply(json=bastion_json(server.host)))
    server.expect("POST", "/api/tokens", Reply(json=token_body))
    server.expect("DELETE", f"/api/tokens/{fresh.auth}", Reply(status=204))
    plane = await connect(options(server, tls))
    grant = await plane.open_grant()
    logging.getLogger("bastion_fast.test").debug("grant %r url %s", grant, grant.websocket_url)
    await plane.close_grant(grant)
    await plane.aclose()
    server.assert_done()
    out, err = capfd.readouterr()
    logged = debug_logging.stream.getvalue()
    assert "Bastion session opened" in logged and "Bastion session deleted" in logged  # we did log at DEBUG
    assert "webtunnelv2/<redacted>" in logged
    assert_clean([out, err, logged, debug_logging.log_file.read_text(), repr(grant), repr(plane)], fresh)


async def test_error_paths_at_debug_leak_nothing(server: ScriptedServer, tls: TLS,  # noqa: F811
                                                 fresh: Secrets, debug_logging: Captured,
                                                 monkeypatch: pytest.MonkeyPatch,
                                                 capfd: pytest.CaptureFixture[str]):
    """5xx with the token echoed back, a retried failure, a failed DELETE, an HTML error page."""
    monkeypatch.setenv("BASTION_FAST_TOKEN", fresh.arm)
    echo = {"message": f"Unexpected internal error for aztoken={fresh.arm}"}
    server.expect("GET", BASTION_PATH, Reply(json=bastion_json(server.host)))
    server.expect("POST", "/api/tokens", Reply(status=500, json=echo))
    server.expect("POST", "/api/tokens", Reply(status=502, text=f"<html><title>{fresh.arm}</title></html>",
                                                content_type="text/html"))
    server.expect("POST", "/api/tokens", Reply(json={"authToken": fresh.auth, "websocketToken": fresh.ws,
                                                     "nodeId": "10.0.0.5"}))
    server.expect("DELETE", f"/api/tokens/{fresh.auth}",
                  Reply(status=500, json={"message": f"cannot delete {fresh.auth}"}))
    server.expect("DELETE", f"/api/tokens/{fresh.auth}", Reply(status=409, text=f"session {fresh.auth} busy"))
    plane = await connect(options(server, tls))
    errors: list[BaseException] = []
    try:
        await plane.open_grant()
    except BastionFastError as exc:
        errors.append(exc)
        report_error(exc)
    grant = await plane.open_grant()
    await plane.close_grant(grant)  # 500, retried, then 409: logged, not raised
    await plane.aclose()
    server.assert_done()
    assert errors, "the first grant must fail after its retry"
    out, err = capfd.readouterr()
    logged = debug_logging.stream.getvalue()
    assert "Could not delete the Bastion session" in logged
    assert "error: Bastion refused POST /api/tokens (HTTP 502" in err
    texts = [out, err, logged, debug_logging.log_file.read_text()]
    for exc in errors:
        texts += error_texts(exc)
    assert_clean(texts, fresh)


async def test_arm_error_echoing_the_token_leaks_nothing(server: ScriptedServer, tls: TLS,  # noqa: F811
                                                         fresh: Secrets, debug_logging: Captured,
                                                         monkeypatch: pytest.MonkeyPatch,
                                                         capfd: pytest.CaptureFixture[str]):
    monkeypatch.setenv("BASTION_FAST_TOKEN", fresh.arm)
    server.expect("GET", BASTION_PATH, Reply(status=403, json={"error": {
        "code": "AuthorizationFailed", "message": f"token {fresh.arm} lacks Microsoft.Network/bastionHosts/read"}}))
    with pytest.raises(BastionFastError) as info:
        await connect(options(server, tls), arm_retry_total=0)
    report_error(info.value)
    out, err = capfd.readouterr()
    assert "error: Not allowed to read Bastion host" in err
    # The raw exception text may contain what ARM sent; what users and logs see is redacted.
    assert_clean([out, err, debug_logging.stream.getvalue(), debug_logging.log_file.read_text()], fresh)


async def test_authentication_failure_text_leaks_nothing(server: ScriptedServer, tls: TLS,  # noqa: F811
                                                         fresh: Secrets, debug_logging: Captured,
                                                         capfd: pytest.CaptureFixture[str]):
    from azure.core.exceptions import ClientAuthenticationError

    from tests._control_scripted import CountingCredential

    cred = CountingCredential(fail=ClientAuthenticationError(f"AADSTS50173: the grant {fresh.arm} expired"))
    _logging.register_secret(fresh.arm)  # azure-identity knows its refresh token; we know the ARM token
    with pytest.raises(BastionFastError) as info:
        await connect(options(server, tls), credential=cred)
    report_error(info.value)
    out, err = capfd.readouterr()
    assert "error: Could not get an Azure token" in err
    assert_clean([out, err, debug_logging.stream.getvalue()], fresh)


# -- a full tunnel at --debug -----------------------------------------------------------------------------------------


def _tunnel_cli_available() -> bool:
    import importlib.util

    return all(importlib.util.find_spec(m) is not None
               for m in ("bastion_fast.cli.tunnel", "bastion_fast.tunnel", "bastion_fast.emulator"))


@pytest.mark.skipif(not _tunnel_cli_available(), reason="the tunnel CLI or the emulator is not built yet")
async def test_full_tunnel_at_debug_leaks_nothing(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory):
    """`bastion-fast tunnel --debug --log-file` against the emulator: two good connections, one whose token
    request fails (5xx echoing the token), one whose WebSocket is refused; then Ctrl+C. Every ARM token, authToken
    and websocketToken the run used must be absent from stdout, stderr and the log file."""
    import asyncio
    import contextlib
    import json
    import os
    import signal
    import sys

    from bastion_fast.emulator import Emulator, EmulatorConfig
    from bastion_fast.emulator.auth import mint_token
    from tests.conftest import TIMEOUT_FACTOR

    wait = 30 * TIMEOUT_FACTOR
    arm_token = mint_token(tenant="00000000-0000-0000-0000-00000000e11a", user=f"{secrets.token_hex(8)}@x.invalid")
    log_file = tmp_path / "tunnel.log"
    config = EmulatorConfig(state_dir=tmp_path_factory.mktemp("emu-secrets"), default_target="echo")
    async with Emulator(config) as emu:
        info = emu.info
        env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
        env["BASTION_FAST_TOKEN"] = arm_token
        env["BASTION_FAST_NO_EXTENSIONS"] = "1"  # the pure pump: this test is about logs, not the data path
        args = ["tunnel", "-n", info["bastion"], "-g", info["resource_group"], "--subscription", info["subscription"],
                "--target-resource-id", VM_ID.replace(SUB, info["subscription"]), "--resource-port", "22",
                "--port", "0", "--auth", "static", "--arm-endpoint", info["arm_endpoint"], "--ca-bundle",
                info["ca_file"], "--output", "json", "--debug", "--log-file", str(log_file), "--max-failures", "0"]
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bastion_fast", *args, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env)
        assert proc.stdout is not None and proc.stderr is not None
        stderr_task = asyncio.create_task(proc.stderr.read())
        try:
            first = await asyncio.wait_for(proc.stdout.readline(), wait)
            assert first, (await stderr_task).decode(errors="replace")
            port = json.loads(first)["port"]

            async def one(payload: bytes, *, expect_echo: bool) -> None:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                try:
                    writer.write(payload)
                    if expect_echo:
                        assert await asyncio.wait_for(reader.readexactly(len(payload)), wait) == payload
                    else:
                        await asyncio.wait_for(reader.read(), wait)  # the tunnel closes the failed connection
                finally:
                    writer.close()
                    with contextlib.suppress(ConnectionError):
                        await writer.wait_closed()

            await one(b"hello through bastion", expect_echo=True)
            emu.faults.update({"token_status": 500, "token_fault_count": 3})  # > the tunnel's retries
            await one(b"x", expect_echo=False)
            emu.faults.update({"token_status": None, "handshake_status": 403, "handshake_fault_count": 1})
            await one(b"y", expect_echo=False)
            emu.faults.update({"handshake_status": None})
            await one(b"second good connection", expect_echo=True)
            await emu.ledger.wait_for(lambda: all(s.state in ("deleted", "ended") for s in emu.ledger.sessions()),
                                      wait)
            proc.send_signal(signal.SIGINT)
            await asyncio.wait_for(proc.wait(), wait)
            stdout = (await proc.stdout.read()).decode(errors="replace")
            stderr = (await stderr_task).decode(errors="replace")
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            if not stderr_task.done():
                stderr_task.cancel()
        sessions = emu.ledger.sessions()
    assert len(sessions) >= 3, "the run must have issued sessions, or the check below proves nothing"
    used = [arm_token] + [s.auth_token for s in sessions] + [s.websocket_token for s in sessions]
    logged = log_file.read_text()
    assert "DEBUG" in logged and "bastion_fast.control" in logged  # it really ran at --debug
    for text in (first.decode(), stdout, stderr, logged):
        for secret in used:
            assert secret not in text, f"secret ...{secret[:10]}... leaked in {text[:3000]!r}"
        assert arm_token.split(".")[1] not in text  # the JWT payload alone identifies the token
