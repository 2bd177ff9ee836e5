"""The Bastion token API (PROTOCOL §2, §4) and the Developer SKU's data-pod call (§1.3), over aiohttp.

Theory of operation
-------------------
``POST https://{endpoint}/api/tokens`` with a *form* body (JSON bodies get a 500) and the raw ARM token in the
``aztoken`` field — never an ``Authorization`` header (also a 500). ``token`` is never sent: every connection
negotiates its own Bastion session (the ext#10137 fix). aiohttp speaks HTTP/1.1 only, which is what the service
wants (a .NET client saw HTTP/2 hang).

A request is retried, with jittered exponential backoff, only when retrying cannot make things worse: the
connection failed or timed out, or the service answered 5xx. A 4xx is the service's final word and is turned into
a ``TokenExchangeError`` at once. Error bodies come in three shapes — JSON with ``message``, JSON without, and a
gateway's HTML page — and each becomes a message naming the HTTP status, the service's text and, for the messages
users meet in practice, what to change.

``DELETE /api/tokens/{authToken}`` carries the grant's own ``X-Node-Id`` (tokens are node-local). 200/204 mean
deleted, 404 means already gone; anything else is logged — without the token, which sits in the URL path, so no
URL is ever logged here — and never raised: cleanup must not break the caller's exit path.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bastion_fast._logging import redact, register_secret
from bastion_fast._version import __version__
from bastion_fast.exceptions import TokenExchangeError

if TYPE_CHECKING:
    import aiohttp

__all__ = ["TokenClient", "TokenResponse", "advice_for", "error_from_response"]

log = logging.getLogger("bastion_fast.control.tokens")

USER_AGENT = f"bastion-fast/{__version__}"
MAX_ERROR_BODY = 64 * 1024  # an error page is read up to this size; the rest is dropped
MAX_TOKEN_BODY = 1024 * 1024
_HOSTNAME = re.compile(r"^[A-Za-z0-9.\-]{1,253}(:\d{1,5})?$")

_RBAC_ADVICE = (
    "Check that your identity has Reader on the target VM, its network interface and the Bastion host (and on the "
    "virtual network when it is peered)."
)


@dataclass(frozen=True)
class TokenResponse:
    """The fields of a 200 from ``POST /api/tokens`` that a connection needs (extra fields are ignored)."""

    auth_token: str = field(repr=False)
    websocket_token: str = field(repr=False)
    node_id: str | None


def advice_for(status: int | None, message: str | None, *, ip_connect: bool = False) -> str:
    """What the user should change, for a failed ``/api/tokens`` call (PROTOCOL §2.5 table)."""
    text = (message or "").strip().lower()
    if "tunneling is disabled" in text:
        return ("Enable native client support on the Bastion (Standard or Premium SKU): "
                "az network bastion update -n NAME -g GROUP --enable-tunneling true.")
    if "invalid ip address for connection" in text:
        return ("The Bastion could not use the target IP: check it is the private IP of a machine reachable from the "
                "Bastion's virtual network, and that IP-based connection is enabled (--enable-ip-connect true).")
    if "nullpointerexception" in text:
        return ("The service could not resolve the target. For a VM scale set, pass an instance id "
                "(…/virtualMachineScaleSets/{vmss}/virtualMachines/{instance}); with --target-ip-address, check that "
                "IP-based connection is enabled and the IP belongs to a machine the Bastion can reach.")
    if "unexpected internal error" in text:
        return ("The service could not process the request; this happens when --target-resource-id is not a VM or "
                "VM scale set instance (e.g. a resource group or NIC id). Copy the VM's id from the portal's JSON "
                "view; if the id is right, retry later.")
    if status == 401:
        return "The ARM token was refused: sign in again (e.g. `az login`) or check --tenant / --cloud."
    if status == 403:
        if ip_connect:
            return ("With --target-ip-address the Bastion answers 403 while IP-based connection is disabled "
                    "(az network bastion update --enable-ip-connect true). " + _RBAC_ADVICE)
        return _RBAC_ADVICE
    if status == 404:
        return "The Bastion did not find the target or the session; check the target and try again."
    if status is not None and status >= 500:
        return ("The Bastion service or a gateway in front of it failed; it may be scaling or under maintenance. "
                "Try again in a minute.")
    return "Check the target and the Bastion's settings, then try again."


def _body_text(body: bytes) -> str:
    return body[:MAX_ERROR_BODY].decode("utf-8", errors="replace")


def _service_message(body: bytes, content_type: str) -> tuple[str | None, str]:
    """(message field, short description of the body) for any error body, secrets masked.

    Services sometimes echo the request (and so the ``aztoken``) in error texts; exceptions carry this text, so it
    is redacted here rather than only at logging time.
    """
    message, kind = _raw_service_message(body, content_type)
    return (redact(message) if message else None), redact(kind)


def _raw_service_message(body: bytes, content_type: str) -> tuple[str | None, str]:
    text = _body_text(body).strip()
    if not text:
        return None, "empty body"
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if isinstance(data, dict):
        for key in ("message", "Message", "error_description"):
            value = data.get(key)
            if isinstance(value, str) and value.strip():
                return value.strip(), "JSON"
        error = data.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return error["message"].strip(), "JSON"
        return None, "JSON without a message"
    if "html" in content_type.lower() or text.lstrip().startswith("<"):
        title = re.search(r"<title[^>]*>(.*?)</title>", text, re.IGNORECASE | re.DOTALL)
        if title and title.group(1).strip():
            return None, f"HTML page {' '.join(title.group(1).split())!r}"
        return None, "HTML page"
    first = " ".join(text.split())[:200]
    return (first or None), "text"


def error_from_response(
    what: str, status: int, body: bytes, content_type: str = "", *, ip_connect: bool = False
) -> TokenExchangeError:
    """Build the error for a non-success answer to ``what`` (e.g. ``"POST /api/tokens"``)."""
    message, kind = _service_message(body, content_type)
    if message:
        text = f"Bastion refused {what} (HTTP {status}): {message}"
    else:
        text = f"Bastion refused {what} (HTTP {status}, {kind})"
    return TokenExchangeError(text, status=status, service_message=message,
                              hint=advice_for(status, message, ip_connect=ip_connect))


class _Retryable(Exception):
    """An attempt failed in a way worth retrying; ``error`` is what to raise if no attempt is left."""

    def __init__(self, error: TokenExchangeError) -> None:
        super().__init__(str(error))
        self.error = error


class TokenClient:
    """Calls the Bastion data-plane HTTP API over one shared aiohttp session.

    Args:
        session: the ControlPlane's session (TLS context and proxy settings already in it).
        connect_timeout: seconds to connect (TCP + TLS, proxy included).
        read_timeout: seconds to wait for each read of the answer.
        retries: extra attempts after the first, for connection errors, timeouts and 5xx.
        backoff: base of the exponential backoff, in seconds (full jitter).
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        connect_timeout: float = 10.0,
        read_timeout: float = 30.0,
        retries: int = 2,
        backoff: float = 0.5,
    ) -> None:
        import aiohttp

        self._session = session
        self._timeout = aiohttp.ClientTimeout(total=None, connect=connect_timeout, sock_connect=connect_timeout,
                                              sock_read=read_timeout)
        self._retries = max(0, retries)
        self._backoff = backoff

    # -- plumbing -----------------------------------------------------------------------------------------------

    async def _send(self, method: str, url: str, what: str, *, limit: int, **kwargs: Any) -> tuple[int, bytes, str]:
        """One HTTP exchange → (status, body, content type); 5xx and transport failures raise ``_Retryable``."""
        import aiohttp

        host = url.split("/", 3)[2]
        try:
            async with self._session.request(method, url, timeout=self._timeout, allow_redirects=False,
                                             **kwargs) as resp:
                body = await resp.content.read(limit)
                status = resp.status
                ctype = resp.headers.get("Content-Type", "")
        except TimeoutError:
            raise _Retryable(TokenExchangeError(
                f"{what} to {host} timed out.",
                hint="Check network access to the Bastion (proxy, firewall, HTTPS_PROXY/NO_PROXY) and try again.",
            )) from None
        except aiohttp.ClientConnectorCertificateError as exc:
            raise TokenExchangeError(
                f"{what}: the TLS certificate of {host} is not trusted ({exc.certificate_error}).",
                hint="Behind a TLS-inspecting proxy pass its CA with --ca-bundle (or set REQUESTS_CA_BUNDLE); "
                "AZURE_CLI_DISABLE_CONNECTION_VERIFICATION=1 turns checks off (not recommended).",
            ) from None
        except (aiohttp.ClientError, OSError) as exc:
            reason = redact(str(exc).replace(url, host)) or type(exc).__name__
            raise _Retryable(TokenExchangeError(
                f"{what} to {host} failed: {type(exc).__name__}: {reason}",
                hint="Check network access to the Bastion (DNS, proxy, firewall) and try again.",
            )) from None
        if status >= 500:
            raise _Retryable(error_from_response(what, status, body, ctype))
        return status, body, ctype

    async def _with_retries(self, method: str, url: str, what: str, *, limit: int, retries: int | None = None,
                            **kwargs: Any) -> tuple[int, bytes, str]:
        allowed = self._retries if retries is None else retries
        attempt = 0
        while True:
            try:
                return await self._send(method, url, what, limit=limit, **kwargs)
            except _Retryable as failure:
                if attempt >= allowed:
                    raise failure.error from None
                delay = random.uniform(0, self._backoff * (2**attempt))  # noqa: S311 - jitter, not crypto
                log.info("%s failed (%s); retrying in %.1f s", what, failure.error, delay)
                attempt += 1
                await asyncio.sleep(delay)

    # -- API ------------------------------------------------------------------------------------------------------

    async def exchange(
        self,
        endpoint: str,
        *,
        resource_id: str,
        resource_port: int,
        aztoken: str,
        hostname: str | None = None,
    ) -> TokenResponse:
        """``POST /api/tokens`` → tokens for one connection.

        Raises:
            TokenExchangeError: the service refused, or the network failed after all retries.
        """
        form = {
            "resourceId": resource_id,
            "protocol": "tcptunnel",
            "workloadHostPort": str(resource_port),
            "aztoken": aztoken,
        }
        if hostname:
            form["hostname"] = hostname
        headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
        what = "POST /api/tokens"
        status, body, ctype = await self._with_retries(
            "POST", f"https://{endpoint}/api/tokens", what, limit=MAX_TOKEN_BODY, data=form, headers=headers)
        if status != 200:
            raise error_from_response(what, status, body, ctype, ip_connect=hostname is not None)
        return self._parse_tokens(body)

    @staticmethod
    def _parse_tokens(body: bytes) -> TokenResponse:
        try:
            data = json.loads(body.decode("utf-8-sig"))
        except (UnicodeDecodeError, ValueError):
            raise TokenExchangeError(
                "Bastion answered POST /api/tokens with HTTP 200 but the body is not JSON.",
                status=200, hint="A proxy may be rewriting the answer; check HTTPS_PROXY/NO_PROXY and retry.",
            ) from None
        if not isinstance(data, Mapping):
            raise TokenExchangeError("Bastion answered POST /api/tokens with JSON that is not an object.", status=200,
                                     hint="Retry; if it persists, report it with --debug output.")
        auth_token = data.get("authToken")
        ws_token = data.get("websocketToken")
        node_id = data.get("nodeId")
        for value in (auth_token, ws_token):
            if isinstance(value, str):
                register_secret(value)
        missing = [name for name, value in (("authToken", auth_token), ("websocketToken", ws_token))
                   if not isinstance(value, str) or not value]
        if missing:
            raise TokenExchangeError(
                f"Bastion answered POST /api/tokens without {' and '.join(missing)}.",
                status=200, hint="The service may not support this client's protocol version; retry, and report it "
                "with --debug output if it persists.")
        assert isinstance(auth_token, str) and isinstance(ws_token, str)
        node = str(node_id) if isinstance(node_id, str | int) and str(node_id) else None
        return TokenResponse(auth_token=auth_token, websocket_token=ws_token, node_id=node)

    async def delete(self, endpoint: str, auth_token: str, node_id: str | None) -> bool:
        """``DELETE /api/tokens/{authToken}``; True when the session is gone (deleted or already absent).

        Never raises; failures are logged without the token.
        """
        headers = {"User-Agent": USER_AGENT}
        if node_id:
            headers["X-Node-Id"] = node_id
        what = "DELETE /api/tokens"
        try:
            # One retry at most: cleanup runs on exit paths (Ctrl+C) and must not hold them up for long.
            status, body, ctype = await self._with_retries(
                "DELETE", f"https://{endpoint}/api/tokens/{auth_token}", what, limit=MAX_ERROR_BODY,
                retries=min(self._retries, 1), headers=headers)
        except TokenExchangeError as exc:
            log.warning("Could not delete the Bastion session on %s (node %s): %s", endpoint, node_id or "-", exc)
            return False
        except Exception as exc:  # cleanup must never raise
            log.warning("Could not delete the Bastion session on %s (node %s): %s", endpoint, node_id or "-",
                        type(exc).__name__)
            return False
        if status in (200, 202, 204):
            log.debug("Bastion session deleted on %s (node %s)", endpoint, node_id or "-")
            return True
        if status == 404:
            log.debug("Bastion session on %s (node %s) was already deleted", endpoint, node_id or "-")
            return True
        err = error_from_response(what, status, body, ctype)
        log.warning("Could not delete the Bastion session on %s (node %s): %s", endpoint, node_id or "-", err)
        return False

    async def request_data_pod(
        self,
        brain: str,
        *,
        resource_id: str,
        bastion_id: str,
        resource_port: int,
        aztoken: str,
    ) -> str:
        """Developer SKU: ``POST https://{brain}/api/connection`` → the bare data-pod host for one connection.

        Raises:
            TokenExchangeError: refused, or the answer is not a host name.
        """
        payload = {
            "resourceId": resource_id,
            "bastionResourceId": bastion_id,
            "vmPort": resource_port,
            "azToken": aztoken,
            "connectionType": "nativeclient",
        }
        headers = {"User-Agent": USER_AGENT, "Content-Type": "application/json"}
        what = "POST /api/connection"
        status, body, ctype = await self._with_retries(
            "POST", f"https://{brain}/api/connection", what, limit=MAX_ERROR_BODY, data=json.dumps(payload),
            headers=headers)
        if status != 200:
            err = error_from_response(what, status, body, ctype)
            raise TokenExchangeError(
                f"Bastion connection request failed (HTTP {status})"
                + (f": {err.service_message}" if err.service_message else ""),
                status=status, service_message=err.service_message,
                hint="The Developer Bastion could not assign a data pod. Check the VM is in the Bastion's virtual "
                "network and try again; " + advice_for(status, err.service_message))
        host = _body_text(body).strip().strip('"').strip()
        if not _HOSTNAME.match(host):
            raise TokenExchangeError(
                "Bastion connection request returned something that is not a host name.",
                status=status, hint="A proxy may be rewriting the answer; check HTTPS_PROXY/NO_PROXY and retry.")
        return host
