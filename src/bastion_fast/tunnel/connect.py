"""Open the WebSocket leg of one tunnel connection and hand it to the pump.

Steps, each with its own clear error:

1. **TCP** to Bastion (or to the HTTP proxy): ``TCP_NODELAY``; OS keepalive with 30 s idle, 10 s interval, 3 probes
   where the OS has the knobs (what websocket-client does for az, PROTOCOL.md §3.1).
2. **HTTP CONNECT** through a proxy when ``HTTPS_PROXY``/``https_proxy`` names one and ``NO_PROXY`` does not exempt
   the host (or when the caller passes one). Request and response parsing come from ``websockets`` (its proxy helper
   and its HTTP/1.1 parser in proxy mode).
3. **TLS** with ``loop.start_tls`` on that same transport, certificate and hostname verified by the caller's context
   (``bastion_fast.tls``: system roots plus ``--ca-bundle``).
4. **Upgrade** (``handshake.ClientHandshake``). The moment the 101 is accepted — inside the same ``data_received``
   call, so not one byte can be delivered to the wrong object — the transport is switched to
   ``splice.ws_protocol`` and ``splice.attach_ws(transport, leftover)`` is called with whatever followed the 101.

Until step 4 a small setup protocol owns the socket; it routes bytes to the current stage (proxy reply, then the
upgrade response) and turns EOF into the stage's error. Every failure aborts the transport before raising, so a
failed connect never leaves a socket behind.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import Generator, Mapping
from typing import Literal, Protocol, cast

from websockets.http11 import Response
from websockets.proxy import Proxy, get_proxy, parse_proxy, prepare_connect_request
from websockets.streams import StreamReader
from websockets.uri import WebSocketURI

from bastion_fast._logging import register_secret
from bastion_fast.exceptions import ConfigurationError, HandshakeError, WebSocketError
from bastion_fast.tunnel.handshake import ClientHandshake, parse_ws_url

__all__ = ["KEEPALIVE_IDLE", "SpliceLike", "open_websocket", "resolve_proxy", "set_socket_options"]

log = logging.getLogger("bastion_fast.tunnel.connect")

KEEPALIVE_IDLE = 30
KEEPALIVE_INTERVAL = 10
KEEPALIVE_COUNT = 3


class SpliceLike(Protocol):
    """What :func:`open_websocket` needs from the pump (``bastion_fast.pump.impl.Splice``)."""

    @property
    def ws_protocol(self) -> asyncio.BaseProtocol: ...

    def attach_ws(self, transport: asyncio.Transport, leftover: bytes = b"") -> None: ...


def set_socket_options(transport: asyncio.BaseTransport, *, keepalive: bool = True) -> None:
    """``TCP_NODELAY`` and (optionally) OS keepalive on the transport's socket, where the OS allows each."""
    sock = transport.get_extra_info("socket")
    if sock is None:
        return
    options: list[tuple[int, int, int]] = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]
    if keepalive:
        options.append((socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1))
        idle = getattr(socket, "TCP_KEEPIDLE", None) or getattr(socket, "TCP_KEEPALIVE", None)  # Linux / macOS
        for opt, value in ((idle, KEEPALIVE_IDLE),
                           (getattr(socket, "TCP_KEEPINTVL", None), KEEPALIVE_INTERVAL),
                           (getattr(socket, "TCP_KEEPCNT", None), KEEPALIVE_COUNT)):
            if opt is not None:
                options.append((socket.IPPROTO_TCP, opt, value))
    for level, opt, value in options:
        try:
            sock.setsockopt(level, opt, value)
        except (OSError, AttributeError):  # not a TCP socket (tests), or an OS without the knob
            log.debug("setsockopt(%s, %s) not supported here", level, opt)


def resolve_proxy(uri: WebSocketURI, proxy: str | Literal[False] | None) -> Proxy | None:
    """The HTTP proxy to tunnel through, or ``None``.

    ``proxy=None`` reads the environment (``HTTPS_PROXY``/``https_proxy``, exemptions in ``NO_PROXY``/``no_proxy``),
    ``False`` forces a direct connection, a string is an explicit ``http://[user:password@]host:port``.
    """
    if proxy is False:
        return None
    url = get_proxy(uri) if proxy is None else proxy
    if not url:
        return None
    try:
        parsed = parse_proxy(url if "://" in url else f"http://{url}")
    except Exception as exc:
        raise ConfigurationError(
            f"The proxy setting is not a valid proxy URL ({type(exc).__name__}).",
            hint="Set HTTPS_PROXY to http://host:port (or http://user:password@host:port), or unset it.",
        ) from None
    if parsed.scheme != "http":
        raise ConfigurationError(
            f"Proxy scheme {parsed.scheme!r} is not supported for Bastion connections; only HTTP CONNECT proxies are.",
            hint="Set HTTPS_PROXY to an http://host:port proxy, or add the Bastion host to NO_PROXY.",
        )
    if parsed.password:
        register_secret(parsed.password)
    return parsed


class _SetupProtocol(asyncio.Protocol):
    """Owns the socket between TCP connect and the hand-off to the pump; routes bytes to the current stage."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.stage: _Stage | None = None
        self.pending = bytearray()
        self.eof = False
        self.lost_exc: BaseException | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self.stage is None:
            self.pending += data  # the server spoke before we asked: the stage will see it
        else:
            self.stage.feed(data)

    def eof_received(self) -> bool:
        self._end(None)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._end(exc)

    def _end(self, exc: BaseException | None) -> None:
        if self.eof:
            return
        self.eof = True
        self.lost_exc = exc
        if self.stage is not None:
            self.stage.end(exc)

    def begin(self, stage: _Stage) -> None:
        self.stage = stage
        if self.pending:
            data, self.pending = bytes(self.pending), bytearray()
            stage.feed(data)
        if self.eof and not stage.future.done():
            stage.end(self.lost_exc)


class _Stage:
    """One request/response exchange on the setup protocol."""

    def __init__(self) -> None:
        self.future: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def feed(self, data: bytes) -> None:
        raise NotImplementedError

    def end(self, exc: BaseException | None) -> None:
        raise NotImplementedError

    def _settle(self, exc: BaseException | None = None) -> None:
        if self.future.done():
            return
        if exc is None:
            self.future.set_result(None)
        else:
            self.future.set_exception(exc)


class _ProxyStage(_Stage):
    """Read the proxy's answer to ``CONNECT``; any 2xx opens the tunnel."""

    def __init__(self, proxy: Proxy, target: str) -> None:
        super().__init__()
        self.proxy = proxy
        self.target = target
        self.reader = StreamReader()
        self.parser: Generator[None, None, Response] = Response.parse(
            self.reader.read_line, self.reader.read_exact, self.reader.read_to_eof, proxy=True)

    def feed(self, data: bytes) -> None:
        self.reader.feed_data(data)
        self._run()

    def end(self, exc: BaseException | None) -> None:
        if not self.future.done():
            self.reader.feed_eof()
            self._run()
        self._settle(WebSocketError(
            f"The HTTPS proxy {self.proxy.host}:{self.proxy.port} closed the connection during CONNECT.",
            hint="Check HTTPS_PROXY, or add the Bastion host to NO_PROXY."))

    def _run(self) -> None:
        if self.future.done():
            return
        try:
            next(self.parser)
        except StopIteration as stop:
            response: Response = stop.value
            if 200 <= response.status_code < 300:
                self._settle()
                return
            hint = ("The proxy wants credentials: use HTTPS_PROXY=http://user:password@host:port."
                    if response.status_code == 407 else
                    "The proxy refused to reach Bastion: check its allow-list for port 443, or NO_PROXY.")
            self._settle(HandshakeError(
                f"The HTTPS proxy {self.proxy.host}:{self.proxy.port} refused CONNECT {self.target}: "
                f"HTTP {response.status_code} {response.reason_phrase}",
                status=response.status_code, hint=hint))
        except Exception as exc:
            self._settle(WebSocketError(
                f"The HTTPS proxy {self.proxy.host}:{self.proxy.port} sent an invalid answer to CONNECT ({exc}).",
                hint="Check HTTPS_PROXY: it must name an HTTP CONNECT proxy."))


class _UpgradeStage(_Stage):
    """Send the upgrade request, validate the 101, hand the transport to the splice in the same callback."""

    def __init__(self, handshake: ClientHandshake, transport: asyncio.Transport, splice: SpliceLike) -> None:
        super().__init__()
        self.handshake = handshake
        self.transport = transport
        self.splice = splice

    def feed(self, data: bytes) -> None:
        if self.future.done():
            return
        if self.handshake.receive_data(data):
            self._finish()

    def end(self, exc: BaseException | None) -> None:
        if self.future.done():
            return
        self.handshake.receive_eof()
        self._finish()

    def _finish(self) -> None:
        try:
            leftover = self.handshake.result()
        except HandshakeError as exc:
            self._settle(exc)
            return
        self.transport.set_protocol(self.splice.ws_protocol)
        try:
            self.splice.attach_ws(self.transport, leftover)
        except BaseException as exc:  # a broken splice must not leave us waiting for a timeout
            self._settle(exc)
            raise
        self._settle()


def _network_error(what: str, host: str, exc: BaseException) -> WebSocketError:
    """Turn an OSError/ssl error from connect or TLS into a message that says what to do."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return WebSocketError(
            f"The TLS certificate of {host} could not be verified: {exc.verify_message or exc.reason}.",
            hint="If a TLS-inspecting proxy sits in the way, pass its CA with --ca-bundle (or BASTION_FAST_CA_BUNDLE);"
            " against the emulator, pass the ca_file from its readiness line.")
    if isinstance(exc, ssl.SSLError):
        return WebSocketError(f"TLS with {host} failed: {exc.reason or exc}.",
                              hint="Check the endpoint, any proxy on the way, and --ca-bundle.")
    if isinstance(exc, socket.gaierror):
        return WebSocketError(f"Cannot resolve {host}: {exc.strerror or exc}.",
                              hint="Check your DNS and network (and HTTPS_PROXY if you need a proxy).")
    if isinstance(exc, TimeoutError):
        return WebSocketError(f"Timed out during {what} with {host}.",
                              hint="Check your network, firewall or proxy; raise --connect-timeout if it is slow.")
    if isinstance(exc, ConnectionRefusedError):
        return WebSocketError(f"{host} refused the connection.",
                              hint="Check the Bastion endpoint and that nothing blocks outbound port 443.")
    detail = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return WebSocketError(f"{what.capitalize()} with {host} failed: {detail}.",
                          hint="Check your network connection and any proxy on the way.")


async def open_websocket(
    url: str,
    splice: SpliceLike,
    *,
    ssl_context: ssl.SSLContext | None = None,
    proxy: str | Literal[False] | None = None,
    connect_timeout: float | None = 10.0,
    handshake_timeout: float | None = 10.0,
    headers: Mapping[str, str] | None = None,
    keepalive: bool = True,
) -> asyncio.Transport:
    """Connect to ``url`` (``wss://`` or ``ws://``), upgrade, and attach the WebSocket to ``splice``.

    Args:
        url: the WebSocket URL from the token exchange (its path carries the websocket token: never logged).
        splice: the pump; gets ``ws_protocol`` installed and ``attach_ws(transport, leftover)`` called.
        ssl_context: for ``wss://`` (default: ``bastion_fast.tls.client_ssl_context()``).
        proxy: ``None`` = from the environment, ``False`` = direct, or an ``http://host:port`` proxy URL.
        connect_timeout: seconds for TCP + proxy CONNECT + TLS.
        handshake_timeout: seconds for the HTTP upgrade.
        headers: extra upgrade request headers.
        keepalive: OS TCP keepalive on the socket.

    Returns:
        The transport now owned by the splice.

    Raises:
        HandshakeError: the server (or proxy) answered with something other than a valid 101 / 2xx.
        WebSocketError: TCP, DNS, TLS or proxy failure, or a timeout.
        ConfigurationError: an unusable proxy setting.
    """
    uri = parse_ws_url(url)
    handshake = ClientHandshake(url, headers=headers)
    host = handshake.host
    via = resolve_proxy(uri, proxy)
    loop = asyncio.get_running_loop()
    setup = _SetupProtocol()
    transport: asyncio.Transport | None = None
    handed_off = False
    phase = "connect"
    try:
        async with asyncio.timeout(connect_timeout):
            dial_host, dial_port = (via.host, via.port) if via else (uri.host, uri.port)
            raw, _ = await loop.create_connection(lambda: setup, dial_host, dial_port)
            transport = raw
            set_socket_options(transport, keepalive=keepalive)
            if via is not None:
                phase = "proxy CONNECT"
                stage: _Stage = _ProxyStage(via, host)
                transport.write(prepare_connect_request(via, uri, user_agent_header=None))
                setup.begin(stage)
                await stage.future
                setup.stage = None
            if uri.secure:
                phase = "TLS handshake"
                if ssl_context is None:
                    from bastion_fast.tls import client_ssl_context

                    ssl_context = client_ssl_context()
                tls = await loop.start_tls(transport, setup, ssl_context, server_hostname=uri.host)
                if tls is None:  # pragma: no cover - only when the transport closed under us
                    raise ConnectionResetError("connection closed during TLS handshake")
                transport = tls
        phase = "WebSocket handshake"
        async with asyncio.timeout(handshake_timeout):
            upgrade = _UpgradeStage(handshake, transport, splice)
            transport.write(handshake.request())
            setup.begin(upgrade)
            await upgrade.future
            handed_off = True
    except BaseException as exc:
        if transport is not None and not handed_off:
            transport.abort()
            if setup.transport is not None and setup.transport is not transport:
                setup.transport.abort()  # the TCP transport under a TLS one that failed
        if isinstance(exc, WebSocketError | ConfigurationError):
            raise
        if isinstance(exc, OSError | ssl.SSLError | TimeoutError):
            raise _network_error(phase, f"{via.host}:{via.port} (proxy for {host})" if via and phase in (
                "connect", "proxy CONNECT") else host, exc) from exc
        raise
    log.debug("WebSocket open to %s%s", host, f" via proxy {via.host}:{via.port}" if via else "")
    return transport
