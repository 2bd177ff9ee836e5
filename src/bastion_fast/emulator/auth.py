"""Bearer tokens the Azurite way: accept anything by default, or check audience and expiry of an unsigned JWT.

The emulator never verifies signatures (it has no Entra ID); ``--strict-auth`` only checks that the token is a JWT
whose ``aud`` is the ARM audience and whose ``exp`` is in the future — enough to catch a client that sends the wrong
token (a Graph token, an expired cache entry, the authToken instead of the ARM token).

:func:`mint_token` makes the readiness line's ``token``: an **unsigned** JWT (``alg: none``, empty signature) with
the ARM audience, valid for 24 hours. Real Azure would reject it; the emulator accepts it in both modes.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from typing import Any

__all__ = ["ARM_AUDIENCES", "AuthResult", "check_bearer", "decode_claims", "mint_token", "user_of"]

ARM_AUDIENCES = frozenset({
    "https://management.core.windows.net/",
    "https://management.core.windows.net",
    "https://management.azure.com/",
    "https://management.azure.com",
    "797f4846-ba00-4fd7-ba43-dac1f8f63013",  # ARM's application id, the aud of some v2 tokens
})

DEFAULT_USER = "emulator-user@bastion-fast.invalid"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def mint_token(
    *,
    tenant: str,
    audience: str = "https://management.core.windows.net/",
    lifetime: float = 86400.0,
    user: str = DEFAULT_USER,
    now: float | None = None,
) -> str:
    """An unsigned JWT for the ARM audience (``alg: none``); accepted by the emulator, useless anywhere else."""
    issued = int(time.time() if now is None else now)
    header = {"typ": "JWT", "alg": "none"}
    claims = {
        "aud": audience,
        "iss": f"https://sts.windows.net/{tenant}/",
        "iat": issued,
        "nbf": issued,
        "exp": issued + int(lifetime),
        "tid": tenant,
        "oid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"bastion-fast-emulator:{user}")),
        "upn": user,
        "name": "bastion-fast emulator user",
    }
    return f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}."


def decode_claims(token: str) -> dict[str, Any] | None:
    """The JWT payload as a dict, or None when ``token`` is not a JWT (signature not checked)."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    payload = parts[1]
    try:
        raw = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
        claims = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    return claims if isinstance(claims, dict) else None


def user_of(token: str) -> str:
    """The user name a session is recorded under: ``upn``/``unique_name``/``preferred_username``/``oid``."""
    claims = decode_claims(token) or {}
    for key in ("upn", "unique_name", "preferred_username", "email", "appid", "oid"):
        value = claims.get(key)
        if isinstance(value, str) and value:
            return value
    return DEFAULT_USER


class AuthResult:
    """Outcome of a bearer check: ``ok``, or an ARM error ``code`` and ``message``."""

    __slots__ = ("code", "message", "ok")

    def __init__(self, ok: bool, code: str = "", message: str = "") -> None:
        self.ok = ok
        self.code = code
        self.message = message


def check_bearer(token: str | None, *, strict: bool, now: float | None = None) -> AuthResult:
    """Check a bearer token (without the ``Bearer`` prefix); messages follow ARM's wording, never echo the token."""
    if not token:
        return AuthResult(False, "AuthenticationFailed",
                          "Authentication failed. The 'Authorization' header is missing.")
    if not strict:
        return AuthResult(True)
    claims = decode_claims(token)
    if claims is None:
        return AuthResult(False, "InvalidAuthenticationToken", "The access token is invalid.")
    aud = claims.get("aud")
    if not isinstance(aud, str) or aud not in ARM_AUDIENCES:
        allowed = ",".join(f"'{a}'" for a in sorted(ARM_AUDIENCES) if a.startswith("https"))
        return AuthResult(
            False,
            "InvalidAuthenticationTokenAudience",
            f"The access token has been obtained for wrong audience or resource '{aud}'. "
            f"It should exactly match with one of the allowed audiences {allowed}.",
        )
    exp = claims.get("exp")
    current = time.time() if now is None else now
    if not isinstance(exp, (int, float)) or exp <= current:
        return AuthResult(False, "ExpiredAuthenticationToken",
                          "The access token expiry UTC time is earlier than current UTC time.")
    return AuthResult(True)
