"""The foundation a user touches first: version/implementation reporting, exit codes, selector, TLS, redaction."""

from __future__ import annotations

import logging
import os
import ssl
import subprocess
import sys
from pathlib import Path

import pytest

from bastion_fast import _logging
from bastion_fast.cli import EXIT_USAGE, main
from bastion_fast.exceptions import ConfigurationError
from bastion_fast.tls import client_ssl_context, resolve_ca_bundle
from tests.conftest import PURE_ONLY


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "bastion_fast", *args], capture_output=True, text=True, env=full_env, timeout=60,
        check=False,
    )


def test_version_names_data_path_and_loop() -> None:
    proc = run_cli("--version")
    assert proc.returncode == 0
    assert proc.stdout.startswith("bastion-fast ")
    expected = "python" if PURE_ONLY else "cython"
    assert f"data path: {expected}" in proc.stdout
    assert "event loop: " in proc.stdout
    assert proc.stderr == ""


def test_no_extensions_env_forces_pure_python() -> None:
    proc = run_cli("--version", env={"BASTION_FAST_NO_EXTENSIONS": "1"})
    assert proc.returncode == 0
    assert "data path: python" in proc.stdout


def test_unknown_flag_is_usage_error_without_traceback() -> None:
    proc = run_cli("--no-such-flag")
    assert proc.returncode == EXIT_USAGE
    assert "Traceback" not in proc.stderr
    assert "--help" in proc.stderr
    assert proc.stdout == ""


def test_no_command_prints_help_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == EXIT_USAGE
    assert "COMMAND" in capsys.readouterr().err


def test_az_spelling_is_accepted(capsys: pytest.CaptureFixture[str]) -> None:
    # `bastion-fast network bastion --version` behaves as `bastion-fast --version`
    assert main(["network", "bastion", "--version"]) == 0
    assert "bastion-fast" in capsys.readouterr().out


def test_ca_bundle_resolution_order(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("BASTION_FAST_CA_BUNDLE", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)
    assert resolve_ca_bundle() is None
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/r.pem")
    assert resolve_ca_bundle() == "/r.pem"
    monkeypatch.setenv("SSL_CERT_FILE", "/s.pem")
    assert resolve_ca_bundle() == "/s.pem"
    monkeypatch.setenv("BASTION_FAST_CA_BUNDLE", "/b.pem")
    assert resolve_ca_bundle() == "/b.pem"
    assert resolve_ca_bundle(tmp_path / "x.pem") == str(tmp_path / "x.pem")


def test_unreadable_ca_bundle_is_a_clear_configuration_error(tmp_path: Path) -> None:
    bogus = tmp_path / "not-a-cert.pem"
    bogus.write_text("hello")
    with pytest.raises(ConfigurationError) as info:
        client_ssl_context(bogus)
    assert str(bogus) in str(info.value)
    assert info.value.hint and "--ca-bundle" in info.value.hint


def test_tls_verification_on_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AZURE_CLI_DISABLE_CONNECTION_VERIFICATION", raising=False)
    ctx = client_ssl_context()
    assert ctx.verify_mode == ssl.CERT_REQUIRED
    assert ctx.check_hostname
    assert ctx.minimum_version >= ssl.TLSVersion.TLSv1_2


def test_az_disable_verification_switch_is_honoured_with_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("AZURE_CLI_DISABLE_CONNECTION_VERIFICATION", "1")
    with caplog.at_level(logging.WARNING, logger="bastion_fast.tls"):
        ctx = client_ssl_context()
    assert ctx.verify_mode == ssl.CERT_NONE
    assert "NOT verified" in caplog.text


def test_redaction_of_registered_secrets_and_patterns() -> None:
    secret = "s3cr3t-token-value-0123456789"
    _logging.register_secret(secret)
    text = _logging.redact(f"posting aztoken={secret}&x=1 and Authorization: Bearer abc.def.ghi {secret}")
    assert secret not in text
    assert "Bearer <redacted>" in text
    jwt = "eyJhbGciOiJub25lIn0.eyJhdWQiOiJodHRwczovL21hbmFnZW1lbnQifQ.sig"
    assert jwt not in _logging.redact(f"token is {jwt}")
    url = "wss://host/webtunnelv2/0123abcd9876?X-Node-Id=10.0.0.4"
    assert "0123abcd9876" not in _logging.redact(url)
    assert "X-Node-Id=10.0.0.4" in _logging.redact(url)


def test_log_handler_redacts_messages_args_and_tracebacks() -> None:
    secret = "zz-another-secret-987654321"
    _logging.register_secret(secret)
    import io

    stream = io.StringIO()
    _logging.configure(logging.DEBUG, stream=stream)
    try:
        log = logging.getLogger("bastion_fast.test")
        log.debug("value %s", secret)
        try:
            raise RuntimeError(f"failed with {secret}")
        except RuntimeError:
            log.exception("boom")
        logging.getLogger("aiohttp.client").debug("third party %s", secret)
    finally:
        _logging.configure(logging.WARNING)
    out = stream.getvalue()
    assert "value <redacted>" in out
    assert "boom" in out and "RuntimeError" in out
    assert "third party <redacted>" in out
    assert secret not in out
