"""Entra ID (AAD) OpenSSH certificates, as ``az ssh`` gets them — but cleaned up afterwards.

PROTOCOL.md §6.2: the client makes an RSA key pair and asks Entra ID, through MSAL with the Azure CLI's public client
id, for a token of type ``ssh-cert`` on the cloud's "PAS" scope, sending the public key as a JWK
(``req_cnf``) and its id (``key_id`` = sha256 of the JWK's ``n`` and ``e`` strings). The "access token" that
comes back *is* the OpenSSH user certificate (``ssh-rsa-cert-v01@openssh.com``); the login name is its first
principal. The VM trusts it through the AADSSHLoginForLinux extension.

Where the token comes from, first that works:

1. a silent refresh from bastion-fast's own MSAL cache (user state dir, 0600);
2. a silent refresh from the Azure CLI's MSAL cache (``$AZURE_CONFIG_DIR/msal_token_cache.json``), read-only — so
   after ``az login`` no second sign-in is needed (same client id, as ``az ssh`` does);
3. interactive sign-in: the browser, or a device code printed on stderr (``--use-device-code``, or when no browser
   can be opened).

``AZURE_AUTHORITY_HOST`` (the azure-identity variable) overrides the cloud's sign-in host, e.g. for a test identity
provider. TLS uses the one policy of :mod:`bastion_fast.tls` (system roots plus ``--ca-bundle``).

The key pair and certificate live in a fresh ``mkdtemp`` directory (0700, files 0600) that
:func:`aad_certificate` removes on exit — az leaves ``aadsshcert*`` directories behind forever.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bastion_fast._logging import register_secret
from bastion_fast.exceptions import AuthenticationError, ConfigurationError, UsageError

__all__ = [
    "AZ_CLI_CLIENT_ID",
    "AadCertificate",
    "CertificateRequest",
    "KeyPair",
    "aad_certificate",
    "parse_certificate",
    "ssh_cert_scope",
]

log = logging.getLogger("bastion_fast.commands.aadcert")

AZ_CLI_CLIENT_ID = "04b07795-8ddb-461a-bbee-02f9e1bf7b46"
AUTHORITY_HOST_ENV = "AZURE_AUTHORITY_HOST"
CERT_TYPE = "ssh-rsa-cert-v01@openssh.com"
RSA_BITS = 3072


def ssh_cert_scope(cloud: str | None = None) -> str:
    """The cloud's PAS scope for SSH certificates (public, China, US Government)."""
    from bastion_fast.control.clouds import resolve_cloud

    return resolve_cloud(cloud).ssh_cert_scope


def _b64url_uint(value: int) -> str:
    raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


@dataclass(frozen=True)
class KeyPair:
    """An RSA key pair in OpenSSH format, on disk with 0600 permissions."""

    private_key: Path
    public_key: Path
    modulus: int
    exponent: int

    @classmethod
    def generate(cls, directory: Path, name: str = "id_rsa") -> KeyPair:
        """A fresh RSA key pair (Entra ID certifies RSA keys only)."""
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa

        key = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
        private = directory / name
        public = directory / f"{name}.pub"
        _write_private(private, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                                  serialization.NoEncryption()))
        _write_private(public, key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                                             serialization.PublicFormat.OpenSSH) + b"\n")
        numbers = key.public_key().public_numbers()
        return cls(private_key=private, public_key=public, modulus=numbers.n, exponent=numbers.e)

    @classmethod
    def load(cls, private_key: Path) -> KeyPair:
        """Reuse an existing RSA key pair (``--ssh-key PATH`` with ``PATH.pub`` next to it)."""
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa

        public_path = private_key.with_name(private_key.name + ".pub")
        try:
            public = serialization.load_ssh_public_key(public_path.read_bytes())
        except FileNotFoundError as exc:
            raise UsageError(f"--ssh-key {private_key}: the public key {public_path} is missing.",
                             hint="Keep KEY.pub next to the private key, or leave --ssh-key out to use a fresh "
                                  "key pair.") from exc
        except (OSError, ValueError) as exc:
            raise UsageError(f"Cannot read the public key {public_path}: {exc}.",
                             hint="Use an OpenSSH RSA public key file.") from exc
        if not isinstance(public, rsa.RSAPublicKey):
            raise UsageError(f"--ssh-key {private_key} is not an RSA key; Entra ID certifies RSA keys only.",
                             hint="Create one with `ssh-keygen -t rsa -b 3072`, or leave --ssh-key out.")
        numbers = public.public_numbers()
        return cls(private_key=private_key, public_key=public_path, modulus=numbers.n, exponent=numbers.e)

    def jwk(self) -> dict[str, str]:
        """The public key as the JWK Entra ID expects in ``req_cnf`` (with ``kid``)."""
        n = _b64url_uint(self.modulus)
        e = _b64url_uint(self.exponent)
        return {"kty": "RSA", "n": n, "e": e, "kid": self.key_id()}

    def key_id(self) -> str:
        """sha256 over the JWK's ``n`` then ``e`` strings, hex (the same id ``az ssh`` sends)."""
        digest = hashlib.sha256()
        digest.update(_b64url_uint(self.modulus).encode("utf-8"))
        digest.update(_b64url_uint(self.exponent).encode("utf-8"))
        return digest.hexdigest()


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    with contextlib.suppress(OSError):  # Windows: ACLs, not modes
        path.chmod(0o600)


@dataclass(frozen=True)
class CertificateRequest:
    """The MSAL request for one certificate: scopes and the extra token-request form fields."""

    scopes: list[str]
    data: dict[str, str]

    @classmethod
    def for_key(cls, key: KeyPair, scope: str) -> CertificateRequest:
        jwk = key.jwk()
        return cls(scopes=[scope], data={"token_type": "ssh-cert", "req_cnf": json.dumps(jwk),
                                         "key_id": jwk["kid"]})


@dataclass(frozen=True)
class CertificateInfo:
    principals: list[str]
    valid_before: datetime | None
    key_id: str


def parse_certificate(text: str | bytes) -> CertificateInfo:
    """Principals and expiry of an OpenSSH user certificate.

    Raises:
        AuthenticationError: the text is not an OpenSSH certificate.
    """
    from cryptography.hazmat.primitives.serialization import SSHCertificate, load_ssh_public_identity

    raw = text.encode("ascii", "replace") if isinstance(text, str) else text
    try:
        cert = load_ssh_public_identity(raw.strip())
    except (ValueError, TypeError) as exc:
        raise AuthenticationError("Entra ID returned something that is not an OpenSSH certificate.",
                                  hint="Check that the account may sign in to VMs (Virtual Machine User Login "
                                       "role) and retry with -v.") from exc
    if not isinstance(cert, SSHCertificate):
        raise AuthenticationError("Entra ID returned a public key, not an OpenSSH certificate.",
                                  hint="Retry; if it persists, report it with the output of -vv.")
    principals = [p.decode("utf-8", "replace") for p in cert.valid_principals]
    before = cert.valid_before
    valid_before = None if before >= 2**64 - 1 else datetime.fromtimestamp(before, tz=UTC)
    return CertificateInfo(principals=principals, valid_before=valid_before,
                           key_id=cert.key_id.decode("utf-8", "replace"))


@dataclass(frozen=True)
class AadCertificate:
    """A key pair and its Entra ID certificate on disk, and who it logs in as."""

    directory: Path
    key: KeyPair
    certificate: Path
    principal: str
    valid_before: datetime | None

    def ssh_args(self) -> list[str]:
        """``-i KEY -o CertificateFile=CERT`` for OpenSSH (plus ``IdentitiesOnly`` so only this key is offered)."""
        from bastion_fast.commands.hostkeys import ssh_option_value

        return ["-i", str(self.key.private_key), "-o", f"CertificateFile={ssh_option_value(str(self.certificate))}",
                "-o", "IdentitiesOnly=yes"]


def _authority_host(cloud_host: str) -> str:
    override = os.environ.get(AUTHORITY_HOST_ENV, "").strip().rstrip("/")
    host = override or cloud_host
    return host if "://" in host else f"https://{host}"


def _http_client(ca_bundle: str | None) -> Any:
    """A requests session using bastion-fast's TLS policy (system roots plus ``--ca-bundle``)."""
    import requests
    from requests.adapters import HTTPAdapter

    from bastion_fast.tls import client_ssl_context

    context = client_ssl_context(ca_bundle)

    class _Adapter(HTTPAdapter):
        def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
            kwargs["ssl_context"] = context
            super().init_poolmanager(*args, **kwargs)

        def proxy_manager_for(self, *args: Any, **kwargs: Any) -> Any:
            kwargs["ssl_context"] = context
            return super().proxy_manager_for(*args, **kwargs)

    session = requests.Session()
    session.mount("https://", _Adapter())
    return session


class _Cache:
    """bastion-fast's own MSAL token cache, persisted 0600 in the state dir."""

    def __init__(self, path: Path) -> None:
        import msal

        self.path = path
        self.cache = msal.SerializableTokenCache()
        with contextlib.suppress(OSError, ValueError):
            self.cache.deserialize(path.read_text(encoding="utf-8"))

    def save(self) -> None:
        if not self.cache.has_state_changed:
            return
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            _write_private(self.path, self.cache.serialize().encode("utf-8"))
        except OSError as exc:
            log.warning("could not save the sign-in cache %s: %s", self.path, exc)


def _az_cli_cache() -> Any | None:
    """The Azure CLI's plain-text MSAL cache (Linux/macOS), read-only; ``None`` when absent or encrypted."""
    import msal

    from bastion_fast.control.clouds import az_config_dir

    path = az_config_dir() / "msal_token_cache.json"
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    cache = msal.SerializableTokenCache()
    try:
        cache.deserialize(text)
    except ValueError:
        return None
    return cache


def _browser_possible() -> bool:
    """A browser sign-in can only work on a desktop session with a terminal to come back to."""
    if not sys.stdin.isatty():
        return False
    if sys.platform in ("win32", "darwin"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY") or os.environ.get("WSL_DISTRO_NAME"))


def _result_token(result: dict[str, Any] | None, how: str) -> str | None:
    if not result:
        return None
    token = result.get("access_token")
    if token:
        register_secret(str(token))
        return str(token)
    error = result.get("error_description") or result.get("error") or "unknown error"
    log.info("Entra ID %s did not give a certificate: %s", how, str(error).splitlines()[0])
    return None


def acquire_certificate_token(request: CertificateRequest, *, cloud: str | None = None, tenant: str | None = None,
                              ca_bundle: str | None = None, use_device_code: bool = False,
                              cache_path: Path | None = None, interactive: bool = True) -> str:
    """Run the MSAL flow (silent from caches, then interactive) and return the certificate body (base64).

    Raises:
        AuthenticationError: no flow produced a certificate.
    """
    import msal

    from bastion_fast.commands.hostkeys import state_dir
    from bastion_fast.control.clouds import resolve_cloud

    resolved = resolve_cloud(cloud)
    authority = f"{_authority_host(resolved.authority_host)}/{tenant or 'organizations'}"
    http_client = _http_client(ca_bundle)
    own = _Cache(cache_path or state_dir() / "msal_token_cache.json")
    common = {"authority": authority, "http_client": http_client,
              "instance_discovery": bool(not os.environ.get(AUTHORITY_HOST_ENV))}
    try:
        app = msal.PublicClientApplication(AZ_CLI_CLIENT_ID, token_cache=own.cache, **common)
        for account in app.get_accounts():
            token = _result_token(app.acquire_token_silent_with_error(request.scopes, account, data=request.data),
                                  "silent refresh (bastion-fast cache)")
            if token:
                own.save()
                return token
        az_cache = _az_cli_cache()
        if az_cache is not None:
            az_app = msal.PublicClientApplication(AZ_CLI_CLIENT_ID, token_cache=az_cache, **common)
            for account in az_app.get_accounts():
                token = _result_token(az_app.acquire_token_silent_with_error(request.scopes, account,
                                                                              data=request.data),
                                      "silent refresh (az CLI cache)")
                if token:
                    return token
        if not interactive:
            raise AuthenticationError("No signed-in Entra ID account could get an SSH certificate.",
                                      hint="Run `az login`, or run once interactively.")
        token = None
        if not use_device_code and _browser_possible():
            try:
                token = _result_token(app.acquire_token_interactive(
                    request.scopes, prompt="select_account", data=request.data, timeout=300), "browser sign-in")
            except Exception as exc:  # no browser, no display: fall back to a device code
                log.info("browser sign-in is not possible here (%s); using a device code", exc)
        if token is None:
            flow = app.initiate_device_flow(scopes=request.scopes)
            if "user_code" not in flow:
                raise AuthenticationError(
                    f"Entra ID refused to start a device-code sign-in: {flow.get('error_description') or flow}.",
                    hint="Check --tenant and your network, or sign in with `az login` first.")
            print(flow.get("message") or f"To sign in, open {flow.get('verification_uri')} and enter the code "
                  f"{flow['user_code']}.", file=sys.stderr, flush=True)
            token = _result_token(app.acquire_token_by_device_flow(flow, data=request.data), "device-code sign-in")
        if token is None:
            raise AuthenticationError(
                "Entra ID did not issue an SSH certificate.",
                hint="Check that your account has the Virtual Machine User Login (or Administrator Login) role on "
                     "the VM and that the VM has the AADSSHLoginForLinux extension; retry with -v for details.")
        own.save()
        return token
    finally:
        http_client.close()


def _obtain(work: Path, *, own_dir: bool, cloud: str | None, tenant: str | None, ca_bundle: str | None,
            use_device_code: bool, key_path: str | os.PathLike[str] | None,
            cache_path: Path | None) -> AadCertificate:
    try:
        if not own_dir:
            work.mkdir(mode=0o700, parents=True, exist_ok=True)
        key = KeyPair.load(Path(key_path).expanduser()) if key_path else KeyPair.generate(work)
    except OSError as exc:
        raise ConfigurationError(f"Cannot write the SSH key files in {work}: {exc}.",
                                 hint="Check that the directory is writable (TMPDIR for the temporary one).") from exc
    request = CertificateRequest.for_key(key, ssh_cert_scope(cloud))
    body = acquire_certificate_token(request, cloud=cloud, tenant=tenant, ca_bundle=ca_bundle,
                                     use_device_code=use_device_code, cache_path=cache_path)
    text = body.strip()
    line = text if text.startswith(CERT_TYPE) else f"{CERT_TYPE} {text}"
    info = parse_certificate(line)
    if not info.principals:
        raise AuthenticationError("The Entra ID certificate names no login (no principals).",
                                  hint="Retry; if it persists, report it with the output of -vv.")
    certificate = work / (key.private_key.name + "-aadcert.pub")
    if key_path and not own_dir:
        certificate = work / f"{Path(key_path).name}-aadcert.pub"
    try:
        _write_private(certificate, (line + "\n").encode("ascii"))
    except OSError as exc:
        raise ConfigurationError(f"Cannot write the SSH certificate {certificate}: {exc}.",
                                 hint="Check that the directory is writable.") from exc
    log.info("Entra ID certificate for %s, valid until %s", info.principals[0],
             info.valid_before.isoformat() if info.valid_before else "forever")
    return AadCertificate(directory=work, key=key, certificate=certificate, principal=info.principals[0],
                          valid_before=info.valid_before)


@contextlib.contextmanager
def aad_certificate(*, cloud: str | None = None, tenant: str | None = None, ca_bundle: str | None = None,
                    use_device_code: bool = False, key_path: str | os.PathLike[str] | None = None,
                    cache_path: Path | None = None, directory: Path | None = None) -> Iterator[AadCertificate]:
    """Get a certificate into a private temp directory, yield it, and remove the directory afterwards.

    With ``key_path`` the user's RSA key pair is certified (and left alone); otherwise a fresh pair is made in the
    temp directory. With ``directory`` the files go there and are kept (``ssh-config --write`` uses that).
    """
    own_dir = directory is None
    work = Path(tempfile.mkdtemp(prefix="bastion-fast-aad-")) if directory is None else directory
    try:
        certificate = _obtain(work, own_dir=own_dir, cloud=cloud, tenant=tenant, ca_bundle=ca_bundle,
                              use_device_code=use_device_code, key_path=key_path, cache_path=cache_path)
        yield certificate
    finally:
        if own_dir:
            shutil.rmtree(work, ignore_errors=True)
