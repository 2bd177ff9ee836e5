"""A tiny local Entra ID for the SSH-certificate flow: OIDC discovery, device code, token endpoint.

It behaves like the parts of login.microsoftonline.com that MSAL uses for ``token_type=ssh-cert`` (PROTOCOL.md §6.2):
the token request must carry ``token_type=ssh-cert``, a JWK in ``req_cnf`` and a ``key_id`` equal to sha256(n ‖ e);
the "access token" returned is an OpenSSH user certificate for that very public key, signed with ``ssh-keygen -s``
by a test CA, with the configured principal. Point clients at it with ``AZURE_AUTHORITY_HOST=https://127.0.0.1:PORT``
and trust its TLS CA (``ca_file``).

Everything a test needs to assert is recorded in ``requests``: grant types, the form fields, the scopes.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import ssl
import subprocess
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from bastion_fast.emulator.certs import ensure_certificates, server_ssl_context

__all__ = ["LocalEntra", "running_entra"]

CLIENT_ID = "04b07795-8ddb-461a-bbee-02f9e1bf7b46"
TENANT = "organizations"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class LocalEntra:
    """State of the local identity provider."""

    directory: Path
    ca_key: Path  # the SSH user CA (private); ca_key.pub goes into sshd's TrustedUserCAKeys
    principal: str
    tls_ca_file: Path = field(default=Path())
    port: int = 0
    requests: list[dict[str, Any]] = field(default_factory=list)
    issued: int = 0
    refuse: bool = False

    @property
    def authority_host(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def ca_public_key(self) -> Path:
        return self.ca_key.with_name(self.ca_key.name + ".pub")

    def sign(self, jwk: dict[str, str]) -> str:
        """An OpenSSH certificate (base64 body, no type prefix) for the JWK's RSA key."""
        n = int.from_bytes(_b64url_decode(jwk["n"]), "big")
        e = int.from_bytes(_b64url_decode(jwk["e"]), "big")
        public = rsa.RSAPublicNumbers(e, n).public_key()
        with tempfile.TemporaryDirectory(prefix="entra-sign-") as tmp:
            pub = Path(tmp) / "user.pub"
            pub.write_bytes(public.public_bytes(serialization.Encoding.OpenSSH,
                                                serialization.PublicFormat.OpenSSH) + b"\n")
            subprocess.run(["ssh-keygen", "-q", "-s", str(self.ca_key), "-I", f"entra-{self.issued}",
                            "-n", self.principal, "-V", "-1m:+30m", str(pub)], check=True, capture_output=True)
            text = (Path(tmp) / "user-cert.pub").read_text().split()
        self.issued += 1
        return text[1]


def _id_token(entra: LocalEntra) -> str:
    now = int(time.time())
    claims = {"aud": CLIENT_ID, "iss": f"{entra.authority_host}/{TENANT}/v2.0", "iat": now, "nbf": now,
              "exp": now + 3600, "oid": "00000000-0000-0000-0000-0000000000aa", "tid": "tenant-id",
              "preferred_username": "user@example.test", "sub": "subject"}
    header = _b64url(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    return f"{header}.{_b64url(json.dumps(claims).encode())}."


class _Handler(BaseHTTPRequestHandler):
    server: Any

    def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
        pass

    def _json(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        entra: LocalEntra = self.server.entra
        base = f"{entra.authority_host}/{TENANT}"
        if self.path.startswith(f"/{TENANT}/v2.0/.well-known/openid-configuration"):
            self._json(200, {
                "issuer": f"{base}/v2.0",
                "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                "token_endpoint": f"{base}/oauth2/v2.0/token",
                "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
                "jwks_uri": f"{base}/discovery/v2.0/keys",
                "response_types_supported": ["code"],
            })
            return
        self._json(404, {"error": "not_found"})

    def do_POST(self) -> None:
        entra: LocalEntra = self.server.entra
        length = int(self.headers.get("Content-Length") or 0)
        form = {k: v[0] for k, v in urllib.parse.parse_qs(self.rfile.read(length).decode()).items()}
        entra.requests.append({"path": self.path, "form": form})
        if self.path.endswith("/oauth2/v2.0/devicecode"):
            self._json(200, {"user_code": "TEST-CODE", "device_code": "device-code-1",
                             "verification_uri": f"{entra.authority_host}/devicelogin", "expires_in": 300,
                             "interval": 1, "message": "To sign in, open the test page and enter TEST-CODE."})
            return
        if not self.path.endswith("/oauth2/v2.0/token"):
            self._json(404, {"error": "not_found"})
            return
        if entra.refuse:
            self._json(400, {"error": "invalid_grant", "error_description": "AADSTS50105: not assigned a role"})
            return
        if form.get("token_type") != "ssh-cert" or "req_cnf" not in form:
            self._json(400, {"error": "invalid_request", "error_description": "expected an ssh-cert request"})
            return
        jwk = json.loads(form["req_cnf"])
        expected_kid = hashlib.sha256(jwk["n"].encode() + jwk["e"].encode()).hexdigest()
        if form.get("key_id") != expected_kid or jwk.get("kid") != expected_kid:
            self._json(400, {"error": "invalid_request", "error_description": "key_id does not match req_cnf"})
            return
        client_info = _b64url(json.dumps({"uid": "00000000-0000-0000-0000-0000000000aa",
                                          "utid": "tenant-id"}).encode())
        self._json(200, {"token_type": "ssh-cert", "access_token": entra.sign(jwk), "expires_in": 3600,
                         "ext_expires_in": 3600, "scope": form.get("scope", ""), "refresh_token": "refresh-1",
                         "id_token": _id_token(entra), "client_info": client_info})


@contextlib.contextmanager
def running_entra(principal: str) -> Iterator[LocalEntra]:
    """Start the local identity provider with a fresh SSH user CA; stop it and remove its files afterwards."""
    with tempfile.TemporaryDirectory(prefix="bf-entra-") as tmp:
        directory = Path(tmp)
        ca_key = directory / "user_ca"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "test-user-ca", "-f", str(ca_key)],
                       check=True)
        tls = ensure_certificates(directory / "tls", ["127.0.0.1", "localhost"])
        entra = LocalEntra(directory=directory, ca_key=ca_key, principal=principal, tls_ca_file=tls.ca_file)
        server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        server.daemon_threads = True
        context: ssl.SSLContext = server_ssl_context(tls)
        server.socket = context.wrap_socket(server.socket, server_side=True)
        server.entra = entra  # type: ignore[attr-defined]
        entra.port = server.server_address[1]
        thread = threading.Thread(target=server.serve_forever, name="local-entra", daemon=True)
        thread.start()
        try:
            yield entra
        finally:
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)
