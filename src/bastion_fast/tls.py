"""One TLS policy for every connection bastion-fast makes (ARM, token API, WebSocket).

Verification is always on unless the user sets ``AZURE_CLI_DISABLE_CONNECTION_VERIFICATION`` (az compatibility).
Extra CA certificates come from, in order: the ``--ca-bundle`` option, ``BASTION_FAST_CA_BUNDLE``,
``SSL_CERT_FILE``, ``REQUESTS_CA_BUNDLE``; they are *added* to the system trust store, so a corporate proxy CA or the
emulator's CA works without losing the public roots. az resolved this differently per library (azure-cli#27283);
we resolve it once.

One context, built once: the token client (aiohttp), the WebSocket connects and the ARM SDK all use the object
``client_ssl_context`` returns, cached per (CA bundle path, its inode, size and mtime, verification switch).
Building a context reads the system trust store and parses the bundle (~10–20 ms each time on a small box), and a
shared context also shares its TLS session cache. Callers must not modify the returned context.
"""

from __future__ import annotations

import functools
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

    The same object is returned while the bundle file and the verification switch stay the same (see the module
    docstring); do not modify it.

    Raises:
        ConfigurationError: the CA bundle cannot be read or is not PEM.
    """
    bundle = resolve_ca_bundle(ca_bundle)
    insecure = verification_disabled()
    if insecure:  # said every time a context is handed out, as before the cache
        log.warning(
            "%s is set: TLS certificates are NOT verified. Use --ca-bundle instead where you can.",
            DISABLE_VERIFY_ENV,
        )
    return _build_context(bundle, _file_stamp(bundle), insecure)


def _file_stamp(bundle: str | None) -> tuple[int, int, int] | None:
    """Identity of the bundle's current content, so an edited or replaced file gets a new context."""
    if not bundle:
        return None
    try:
        st = os.stat(bundle)
    except OSError:
        return None  # _build_context reports the error (and errors are not cached)
    return (st.st_ino, st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=8)
def _build_context(bundle: str | None, stamp: tuple[int, int, int] | None, insecure: bool) -> ssl.SSLContext:
    del stamp  # part of the cache key only
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
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
    if insecure:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx
