"""One TLS policy for every connection bastion-fast makes (ARM, token API, WebSocket).

Verification is always on unless the user sets ``AZURE_CLI_DISABLE_CONNECTION_VERIFICATION`` (az compatibility).
Extra CA certificates come from, in order: the ``--ca-bundle`` option, ``BASTION_FAST_CA_BUNDLE``,
``SSL_CERT_FILE``, ``REQUESTS_CA_BUNDLE``; they are *added* to the system trust store, so a corporate proxy CA or the
emulator's CA works without losing the public roots. az resolved this differently per library (azure-cli#27283);
we resolve it once.
"""

from __future__ import annotations

import logging
import os
import ssl
from pathlib import Path

from bastion_fast.exceptions import ConfigurationError

__all__ = ["client_ssl_context", "resolve_ca_bundle", "verification_disabled"]

log = logging.getLogger("bastion_fast.tls")

CA_BUNDLE_ENV = ("BASTION_FAST_CA_BUNDLE", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE")
DISABLE_VERIFY_ENV = "AZURE_CLI_DISABLE_CONNECTION_VERIFICATION"


def verification_disabled() -> bool:
    """az's switch: any non-empty value turns certificate checks off (with a warning)."""
    return bool(os.environ.get(DISABLE_VERIFY_ENV, "").strip())


def resolve_ca_bundle(ca_bundle: str | os.PathLike[str] | None = None) -> str | None:
    """Return the CA bundle path to add to the trust store, or ``None`` for the system store only."""
    if ca_bundle:
        return os.fspath(ca_bundle)
    for name in CA_BUNDLE_ENV:
        value = os.environ.get(name, "").strip()
        if value:
            return value
    return None


def client_ssl_context(ca_bundle: str | os.PathLike[str] | None = None) -> ssl.SSLContext:
    """A TLS ≥ 1.2 client context: system roots plus the resolved CA bundle, hostname checked.

    Raises:
        ConfigurationError: the CA bundle cannot be read or is not PEM.
    """
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    bundle = resolve_ca_bundle(ca_bundle)
    if bundle:
        path = Path(bundle)
        try:
            if path.is_dir():
                ctx.load_verify_locations(capath=str(path))
            else:
                ctx.load_verify_locations(cafile=str(path))
        except (OSError, ssl.SSLError) as exc:
            raise ConfigurationError(
                f"Cannot load the CA bundle {bundle!s}: {exc}",
                hint="Pass a readable PEM file with --ca-bundle (or fix BASTION_FAST_CA_BUNDLE / SSL_CERT_FILE).",
            ) from exc
    if verification_disabled():
        log.warning(
            "%s is set: TLS certificates are NOT verified. Use --ca-bundle instead where you can.",
            DISABLE_VERIFY_ENV,
        )
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx
