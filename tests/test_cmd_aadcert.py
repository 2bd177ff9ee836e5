"""Entra ID SSH certificates: the MSAL request, the certificate, login with it, and cleanup of the key files."""

from __future__ import annotations

import hashlib
import json
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest

from bastion_fast.commands import aadcert
from bastion_fast.exceptions import AuthenticationError
from tests import fixtures_sshd
from tests.fixtures_entra import LocalEntra, running_entra
from tests.fixtures_sshd import SshServer

sshd_factory = fixtures_sshd.sshd_factory
pytestmark = pytest.mark.skipif(fixtures_sshd.sshd_missing_reason() is not None,
                                reason=fixtures_sshd.sshd_missing_reason() or "")


@pytest.fixture
def entra(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    import getpass

    with running_entra(getpass.getuser()) as provider:
        monkeypatch.setenv("AZURE_AUTHORITY_HOST", provider.authority_host)
        monkeypatch.setenv("BASTION_FAST_STATE_DIR", str(tmp_path / "state"))
        monkeypatch.setenv("AZURE_CONFIG_DIR", str(tmp_path / "az"))  # no real az cache
        yield provider


def test_jwk_and_key_id_match_az(tmp_path: Path) -> None:
    key = aadcert.KeyPair.generate(tmp_path)
    jwk = key.jwk()
    assert jwk["kty"] == "RSA" and jwk["e"] == "AQAB"
    assert jwk["kid"] == hashlib.sha256((jwk["n"] + jwk["e"]).encode()).hexdigest()
    assert stat.S_IMODE(key.private_key.stat().st_mode) == 0o600
    request = aadcert.CertificateRequest.for_key(key, aadcert.ssh_cert_scope("AzureCloud"))
    assert request.scopes == ["https://pas.windows.net/CheckMyAccess/Linux/.default"]
    assert request.data["token_type"] == "ssh-cert"
    assert json.loads(request.data["req_cnf"]) == jwk
    assert request.data["key_id"] == jwk["kid"]


def test_scopes_per_cloud() -> None:
    assert aadcert.ssh_cert_scope("AzureChinaCloud") == "https://pas.chinacloudapi.cn/CheckMyAccess/Linux/.default"
    assert aadcert.ssh_cert_scope("AzureUSGovernment") == \
        "https://pasff.usgovcloudapi.net/CheckMyAccess/Linux/.default"


def test_certificate_logs_in_and_files_are_removed(entra: LocalEntra, sshd_factory: Any,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    server: SshServer = sshd_factory(trusted_user_ca_keys=entra.ca_public_key, authorize_user_key=False)
    with aadcert.aad_certificate(ca_bundle=str(entra.tls_ca_file), use_device_code=True) as cert:
        directory = cert.directory
        assert cert.principal == server.user
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700
        for path in (cert.key.private_key, cert.certificate):
            assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert cert.certificate.read_text().startswith("ssh-rsa-cert-v01@openssh.com ")
        done = subprocess.run(["ssh", *server.ssh_base_args, *cert.ssh_args(), "-p", str(server.port),
                               "-l", cert.principal, server.host, "echo via-cert"],
                              check=False, capture_output=True, timeout=30)
        assert done.returncode == 0, done.stderr + server.log().encode()
        assert done.stdout == b"via-cert\n"
    assert not directory.exists()
    # the device code was shown to the user on stderr, and the request was the ssh-cert one
    assert "TEST-CODE" in capsys.readouterr().err
    device = [r for r in entra.requests if r["path"].endswith("/devicecode")]
    assert "https://pas.windows.net/CheckMyAccess/Linux/.default" in device[0]["form"]["scope"].split()


def test_second_certificate_comes_from_the_cache_without_sign_in(entra: LocalEntra) -> None:
    with aadcert.aad_certificate(ca_bundle=str(entra.tls_ca_file), use_device_code=True):
        pass
    with aadcert.aad_certificate(ca_bundle=str(entra.tls_ca_file), use_device_code=True) as cert:
        assert cert.principal
    grants = [r["form"].get("grant_type") for r in entra.requests if r["path"].endswith("/token")]
    assert grants == ["urn:ietf:params:oauth:grant-type:device_code", "refresh_token"]
    assert sum(r["path"].endswith("/devicecode") for r in entra.requests) == 1


def test_refusal_is_an_authentication_error_and_cleans_up(entra: LocalEntra, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    entra.refuse = True
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    with pytest.raises(AuthenticationError) as info, \
            aadcert.aad_certificate(ca_bundle=str(entra.tls_ca_file), use_device_code=True):
        pass
    assert "Virtual Machine User Login" in (info.value.hint or "")
    assert not list(tmp_path.glob("bastion-fast-aad-*"))


def test_existing_rsa_key_is_certified_and_kept(entra: LocalEntra, tmp_path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "rsa", "-b", "2048", "-N", "", "-f", str(tmp_path / "mine")],
                   check=True)
    with aadcert.aad_certificate(ca_bundle=str(entra.tls_ca_file), use_device_code=True,
                                 key_path=tmp_path / "mine") as cert:
        assert cert.key.private_key == tmp_path / "mine"
        shown = subprocess.run(["ssh-keygen", "-L", "-f", str(cert.certificate)], check=True,
                               capture_output=True, text=True).stdout
        fingerprint = subprocess.run(["ssh-keygen", "-l", "-f", str(tmp_path / "mine.pub")], check=True,
                                     capture_output=True, text=True).stdout.split()[1]
        assert fingerprint in shown
    assert (tmp_path / "mine").exists()
