"""TLS material for the emulator: a private CA and a server certificate, cached in the state directory.

Why a CA and not one self-signed certificate: clients verify the server against ``ca.pem`` exactly as they would
against a corporate CA, hostname check included, so no ``--insecure`` switch is ever needed. Keys are ECDSA P-256
(generation takes milliseconds, unlike RSA). The files are reused across runs — the readiness line must come in
well under a second and loading PEM files needs no ``cryptography`` import at all — and regenerated only when
missing, close to expiry, or when the server certificate's names change (``--bind`` on another address).

Files in the state dir: ``ca.pem`` (give this to clients), ``ca-key.pem``, ``server.pem`` (leaf + CA),
``server-key.pem``, ``certs.json`` (names and expiry, so the cache check needs no X.509 parser).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import ipaddress
import json
import os
import ssl
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bastion_fast.exceptions import ConfigurationError

__all__ = ["TlsFiles", "default_names", "ensure_certificates", "server_ssl_context"]

_FORMAT = 1
_RENEW_BEFORE = 7 * 86400  # seconds of validity left below which we regenerate
_CA_DAYS = 3650
_SERVER_DAYS = 365


@dataclass(frozen=True)
class TlsFiles:
    """Paths of the generated PEM files."""

    ca_file: Path
    cert_file: Path
    key_file: Path


def default_names(bind: str) -> list[str]:
    """Names the server certificate covers: loopback names plus the bind address when it is not a wildcard."""
    names = ["localhost", "127.0.0.1", "::1"]
    host = bind.strip("[]")
    if host and host not in names and host not in ("0.0.0.0", "::"):
        names.append(host)
    return names


def ensure_certificates(state_dir: Path, names: list[str]) -> TlsFiles:
    """Return usable TLS files in ``state_dir``, generating what is missing or stale."""
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigurationError(f"Cannot create the emulator state directory {state_dir}: {exc.strerror or exc}.",
                                 hint="Pass a writable directory with --state-dir.") from exc
    files = TlsFiles(state_dir / "ca.pem", state_dir / "server.pem", state_dir / "server-key.pem")
    with _locked(state_dir):
        meta = _read_meta(state_dir / "certs.json")
        now = time.time()
        ca_ok = (
            meta is not None
            and files.ca_file.exists()
            and (state_dir / "ca-key.pem").exists()
            and meta.get("ca_not_after", 0) - now > _RENEW_BEFORE
        )
        server_ok = (
            ca_ok
            and meta is not None
            and files.cert_file.exists()
            and files.key_file.exists()
            and sorted(meta.get("names", [])) == sorted(names)
            and meta.get("server_not_after", 0) - now > _RENEW_BEFORE
        )
        if not server_ok:
            _generate(state_dir, names, regenerate_ca=not ca_ok, meta=meta or {})
    return files


def server_ssl_context(files: TlsFiles) -> ssl.SSLContext:
    """A TLS ≥ 1.2 server context over the generated certificate, HTTP/1.1 only."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(str(files.cert_file), str(files.key_file))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigurationError(f"Cannot load the emulator certificate from {files.cert_file.parent}: {exc}.",
                                 hint="Delete the state directory's *.pem files; they are regenerated.") from exc
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


@contextlib.contextmanager
def _locked(state_dir: Path) -> Iterator[None]:
    """Serialise generation between emulators sharing a state dir (POSIX flock; best effort elsewhere)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(state_dir / ".certs.lock", "a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _read_meta(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("format") != _FORMAT:
        return None
    return data


def _write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _generate(state_dir: Path, names: list[str], *, regenerate_ca: bool, meta: dict[str, Any]) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = _dt.datetime.now(_dt.UTC)
    start = now - _dt.timedelta(hours=1)
    pem = serialization.Encoding.PEM
    pkcs8 = serialization.PrivateFormat.PKCS8
    no_enc = serialization.NoEncryption()

    if regenerate_ca:
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "bastion-fast emulator"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"bastion-fast emulator CA {now:%Y-%m-%d %H:%M:%S}"),
        ])
        ca_cert = (
            x509.CertificateBuilder()
            .subject_name(ca_name)
            .issuer_name(ca_name)
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(now + _dt.timedelta(days=_CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                              data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                              encipher_only=False, decipher_only=False),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        _write_atomic(state_dir / "ca-key.pem", ca_key.private_bytes(pem, pkcs8, no_enc), 0o600)
        _write_atomic(state_dir / "ca.pem", ca_cert.public_bytes(pem))
        ca_not_after = ca_cert.not_valid_after_utc.timestamp()
    else:
        loaded_key = serialization.load_pem_private_key((state_dir / "ca-key.pem").read_bytes(), password=None)
        if not isinstance(loaded_key, ec.EllipticCurvePrivateKey):
            raise ConfigurationError(f"{state_dir / 'ca-key.pem'} is not an EC key.",
                                     hint="Delete the state directory's *.pem files; they are regenerated.")
        ca_key = loaded_key
        ca_cert = x509.load_pem_x509_certificate((state_dir / "ca.pem").read_bytes())
        ca_not_after = float(meta.get("ca_not_after", 0))

    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = []
    for name in names:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            sans.append(x509.DNSName(name))
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(now + _dt.timedelta(days=_SERVER_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    _write_atomic(state_dir / "server-key.pem", key.private_bytes(pem, pkcs8, no_enc), 0o600)
    _write_atomic(state_dir / "server.pem", cert.public_bytes(pem) + ca_cert.public_bytes(pem))
    _write_atomic(
        state_dir / "certs.json",
        json.dumps({
            "format": _FORMAT,
            "names": names,
            "ca_not_after": ca_not_after,
            "server_not_after": cert.not_valid_after_utc.timestamp(),
        }).encode(),
    )
