"""The WebSocket opening handshake, sans I/O: request bytes out, response bytes in, a strict verdict.

The HTTP side is the ``websockets`` library's sans-I/O :class:`~websockets.client.ClientProtocol` (request
serialisation, response parsing, ``Sec-WebSocket-Accept``/``Upgrade``/``Connection`` checks, refusal of any
extension or subprotocol the server tries to impose). What this module adds:

* **A clean cut after the 101.** ``ClientProtocol`` would go on parsing WebSocket frames from the same buffer; our
  pump must get those bytes instead. So we find the end of the response head ourselves and feed the protocol exactly
  the head; whatever followed it (the first frames, if the server was quick) is handed back as ``leftover``.
* **Errors a user can act on.** A refusal becomes :class:`~bastion_fast.exceptions.HandshakeError` with the HTTP
  status, the service's own ``message`` when the body carries one, and a hint per status. Nothing in a message comes
  from the request path, which holds the websocket token.

The request is what az's websocket-client sends (PROTOCOL.md §3.1): ``GET`` with ``Host``, ``Origin: https://host``,
``Upgrade``, ``Connection``, ``Sec-WebSocket-Key``, ``Sec-WebSocket-Version: 13`` — no subprotocol, no extensions,
no authorisation header.

Theory of operation::

    HEAD ──(blank line seen)──► 101 valid ─────────────────────► DONE (leftover = bytes after the head)
      │                          │
      │                          └► other status: BODY ──(body complete / EOF)──► FAILED (status + message)
      └──(EOF / head too long / not HTTP)──────────────────────────────────────────► FAILED
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping

from websockets.client import ClientProtocol
from websockets.exceptions import (
    InvalidHandshake,
    InvalidHeader,
    InvalidStatus,
    InvalidUpgrade,
    NegotiationError,
)
from websockets.http11 import Response
from websockets.typing import Origin
from websockets.uri import WebSocketURI, parse_uri

from bastion_fast._logging import redact
from bastion_fast.exceptions import HandshakeError, UsageError

__all__ = ["MAX_HEAD_BYTES", "ClientHandshake", "describe_refusal", "origin_for", "parse_ws_url"]

log = logging.getLogger("bastion_fast.tunnel.handshake")

#: Largest response head we accept before the blank line (a real 101 is a few hundred bytes).
MAX_HEAD_BYTES = 64 * 1024
#: How much of a refusal body we keep to find the service's message.
MAX_BODY_BYTES = 64 * 1024
_HEAD_END = b"\r\n\r\n"

_STATUS_HINTS = {
    400: "The service did not accept the WebSocket request; check --target-resource-id/--resource-port.",
    401: "The Bastion session token was not accepted; sign in again (az login / --auth) and retry.",
    403: "Access was refused: check that your identity has Reader on the VM, its NIC and the Bastion host, and "
    "that native client support is enabled on the Bastion.",
    404: "The websocket token is unknown to the node it was sent to (expired, already used, or sent with another "
    "connection's node id). Retry; if it persists, report it with --debug output.",
    408: "The service timed out waiting for the handshake; check your network or proxy.",
    429: "The service is throttling new sessions; wait a little and retry.",
    500: "The Bastion service had an internal error; retry, and check the Bastion's health in the portal.",
    502: "A gateway between you and Bastion failed; retry, and check any HTTPS proxy (HTTPS_PROXY).",
    503: "The Bastion service is unavailable (maintenance or scaling); retry in a minute.",
    504: "A gateway between you and Bastion timed out; retry, and check any HTTPS proxy (HTTPS_PROXY).",
}
_DEFAULT_HINT = "Retry with --debug for details; if it persists, check the Bastion host and the target VM."


def parse_ws_url(url: str) -> WebSocketURI:
    """Parse a ``ws://``/``wss://`` URL, raising :class:`UsageError` (without echoing the token) if it is not one."""
    try:
        return parse_uri(url)
    except Exception as exc:  # websockets raises InvalidURI; never show the URL (it carries the token)
        raise UsageError(
            "The WebSocket URL from the token exchange is not a valid ws:// or wss:// URL.",
            hint="This is a service or emulator bug; run with --debug and report it.",
        ) from exc


def origin_for(uri: WebSocketURI) -> str:
    """``Origin`` as websocket-client builds it for az: ``https://host`` (port only when not the default)."""
    scheme = "https" if uri.secure else "http"
    default = 443 if uri.secure else 80
    host = f"[{uri.host}]" if ":" in uri.host else uri.host
    return f"{scheme}://{host}" if uri.port == default else f"{scheme}://{host}:{uri.port}"


def _service_message(body: bytes) -> str | None:
    """The service's message from a refusal body: JSON ``message``/``error``, else plain or HTML text."""
    text = body[:MAX_BODY_BYTES].decode("utf-8", "replace").strip()
    if not text:
        return None
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if isinstance(data, dict):
        for key in ("message", "Message", "error_description", "error"):
            value = data.get(key)
            if isinstance(value, dict):
                value = value.get("message")
            if isinstance(value, str) and value.strip():
                return value.strip()[:300]
        return None
    if "<" in text and ">" in text:  # a gateway's HTML page: keep its title or its visible text
        title = re.search(r"(?is)<title>(.*?)</title>", text)
        text = title.group(1) if title else re.sub(r"(?s)<[^>]*>", " ", text)
    text = " ".join(text.split())
    return text[:300] or None


def describe_refusal(status: int, reason: str, body: bytes, host: str) -> HandshakeError:
    """A :class:`HandshakeError` for a non-101 answer: status, reason phrase, the service's message, a hint."""
    message = _service_message(body)
    text = f"Bastion at {host} refused the WebSocket upgrade: HTTP {status} {reason}".rstrip()
    if message:
        text += f": {message}"
    return HandshakeError(redact(text), status=status, hint=_STATUS_HINTS.get(status, _DEFAULT_HINT))


class ClientHandshake:
    """One client opening handshake, driven by whoever owns the socket.

    Usage: send :meth:`request`, then call :meth:`receive_data` with every chunk read (and :meth:`receive_eof`
    at EOF) until :attr:`done`; then :meth:`result` returns the bytes that followed the 101 or raises
    :class:`HandshakeError`.

    Args:
        url: ``wss://host[:port]/path?query`` (the path and query are never logged or put in errors).
        headers: extra request headers (tests; nothing is needed for Bastion).
    """

    def __init__(self, url: str, *, headers: Mapping[str, str] | None = None) -> None:
        self.uri = parse_ws_url(url)
        self.host = f"{self.uri.host}:{self.uri.port}"
        self._protocol = ClientProtocol(
            self.uri,
            origin=Origin(origin_for(self.uri)),
            extensions=None,  # no permessage-deflate: a 101 that negotiates one is refused
            subprotocols=None,  # likewise for a subprotocol
            max_size=None,
            logger=log,
        )
        request = self._protocol.connect()
        for name, value in (headers or {}).items():
            request.headers[name] = value
        self._protocol.send_request(request)
        self._request = b"".join(self._protocol.data_to_send())
        self._buffer = bytearray()
        self._head_fed = False
        self._leftover = b""
        self._error: HandshakeError | None = None
        self.done = False
        self.response: Response | None = None

    def request(self) -> bytes:
        """The bytes of the upgrade request (send them once, before any response bytes arrive)."""
        return self._request

    def receive_data(self, data: bytes | bytearray | memoryview) -> bool:
        """Take response bytes; return :attr:`done`. Bytes after a successful 101 become the leftover."""
        if self.done:
            if self._error is None:
                self._leftover += bytes(data)
            return True
        if self._head_fed:  # a refusal whose body is still arriving
            self._protocol.receive_data(bytes(data))
            self._check_events()
            return self.done
        self._buffer += data
        end = self._buffer.find(_HEAD_END)
        if end < 0:
            if len(self._buffer) > MAX_HEAD_BYTES:
                self._fail(HandshakeError(
                    f"Bastion at {self.host} sent an HTTP response head larger than {MAX_HEAD_BYTES} bytes.",
                    hint="Something between you and Bastion (a proxy?) answered instead of the service.",
                ))
            return self.done
        cut = end + len(_HEAD_END)
        head, rest = bytes(self._buffer[:cut]), bytes(self._buffer[cut:])
        self._buffer.clear()
        self._head_fed = True
        self._protocol.receive_data(head)
        self._check_events()
        if self.done:
            if self._error is None:
                self._leftover = rest
        elif rest:
            self._protocol.receive_data(rest)
            self._check_events()
        return self.done

    def receive_eof(self) -> None:
        """The peer closed before (or while) sending the response."""
        if self.done:
            return
        if self._head_fed:
            self._protocol.receive_eof()
            self._check_events()
        if not self.done:
            self._fail(HandshakeError(
                f"Bastion at {self.host} closed the connection during the WebSocket handshake.",
                hint="Retry; if it persists, check any HTTPS proxy or TLS-inspecting firewall on the way.",
            ))

    def result(self) -> bytes:
        """The bytes received after the 101 (often empty); raises :class:`HandshakeError` if it failed."""
        if not self.done:
            raise RuntimeError("handshake not finished")
        if self._error is not None:
            raise self._error
        return self._leftover

    @property
    def error(self) -> HandshakeError | None:
        return self._error

    # -- internals -------------------------------------------------------------------------------------------------

    def _fail(self, error: HandshakeError) -> None:
        self._error = error
        self.done = True

    def _check_events(self) -> None:
        for event in self._protocol.events_received():
            if isinstance(event, Response):
                self.response = event
                self.done = True
        exc = self._protocol.handshake_exc
        if exc is not None:
            self.done = True
            self._error = self._translate(exc)
        elif self.done:
            self._error = None

    def _translate(self, exc: Exception) -> HandshakeError:
        if isinstance(exc, InvalidStatus):
            response = exc.response
            return describe_refusal(response.status_code, response.reason_phrase, bytes(response.body), self.host)
        status = self.response.status_code if self.response is not None else None
        if isinstance(exc, InvalidUpgrade):
            what = f"a missing or wrong {exc.name} header" if exc.value is None else f"{exc.name}: {exc.value}"
            text = f"Bastion at {self.host} answered 101 but with {what} (expected Upgrade: websocket, " \
                   "Connection: Upgrade)."
        elif isinstance(exc, InvalidHeader) and exc.name.lower() == "sec-websocket-accept":
            text = f"Bastion at {self.host} answered 101 with a wrong Sec-WebSocket-Accept ({exc})."
        elif isinstance(exc, NegotiationError):
            text = f"Bastion at {self.host} tried to negotiate something we did not offer ({exc})."
        elif isinstance(exc, InvalidHandshake):
            cause = exc.__cause__
            detail = f"{exc}: {cause}" if cause is not None else str(exc)
            text = f"Bastion at {self.host} sent an invalid handshake response ({detail})."
        else:
            text = f"Bastion at {self.host}: handshake failed ({exc})."
        return HandshakeError(
            redact(text),
            status=status,
            hint="Something between you and Bastion (a proxy or TLS-inspecting firewall?) rewrote the WebSocket "
            "upgrade; try from another network or set HTTPS_PROXY/NO_PROXY correctly.",
        )
