"""An independent Bastion client for the emulator's tests: aiohttp for the REST calls, the ``websockets`` library
for the WebSocket, and a raw TLS socket for what ``websockets`` refuses to do (unmasked frames, odd 101s).

Nothing here uses bastion-fast's own client code, so the emulator is checked against third-party behaviour.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import websockets
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.uri import parse_uri

__all__ = [
    "VM_ID",
    "RawWebSocket",
    "RemoteEmulator",
    "Tokens",
    "delete_token",
    "get_tokens",
    "http",
    "ip_connect_id",
    "open_tunnel",
    "ws_url",
]

VM_ID = ("/subscriptions/11111111-2222-3333-4444-555555555555/resourceGroups/rg-vms"
         "/providers/Microsoft.Compute/virtualMachines/vm1")


def ip_connect_id(emu: Any, ip: str) -> str:
    """The synthetic id the az extension builds for IP connect."""
    return (f"/subscriptions/{emu.info['subscription']}/resourceGroups/{emu.info['resource_group']}"
            f"/providers/Microsoft.Network/bh-hostConnect/{ip}")


def http(emu: Any) -> aiohttp.ClientSession:
    """A client session trusting the emulator's CA (a new TLS connection pool per session)."""
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=emu.client_ssl_context()))


class Tokens(dict[str, Any]):
    """The JSON of a successful ``POST /api/tokens``."""

    @property
    def auth(self) -> str:
        return str(self["authToken"])

    @property
    def ws(self) -> str:
        return str(self["websocketToken"])

    @property
    def node(self) -> str:
        return str(self["nodeId"])


async def post_tokens(session: aiohttp.ClientSession, endpoint: str, form: dict[str, str] | None = None,
                      **kwargs: Any) -> aiohttp.ClientResponse:
    """Raw ``POST /api/tokens`` (caller reads the response)."""
    return await session.post(f"https://{endpoint}/api/tokens", data=form, **kwargs)


async def get_tokens(emu: Any, *, endpoint: str | None = None, resource_id: str = VM_ID, port: int = 22,
                     **extra: str) -> Tokens:
    """A successful token exchange, form-encoded like the az extension; asserts 200."""
    form = {"resourceId": resource_id, "protocol": "tcptunnel", "workloadHostPort": str(port),
            "aztoken": emu.token, **extra}
    async with http(emu) as session:
        response = await post_tokens(session, endpoint or emu.dns_name, form)
        body = await response.json(content_type=None)
        assert response.status == 200, body
        return Tokens(body)


async def delete_token(emu: Any, tokens: Tokens, *, endpoint: str | None = None, node: str | None = None,
                       send_node: bool = True) -> int:
    """``DELETE /api/tokens/{authToken}`` with ``X-Node-Id``; returns the status."""
    headers = {"X-Node-Id": node if node is not None else tokens.node} if send_node else {}
    async with http(emu) as session:
        response = await session.delete(f"https://{endpoint or emu.dns_name}/api/tokens/{tokens.auth}",
                                        headers=headers)
        await response.read()
        return response.status


def ws_url(emu: Any, tokens: Tokens, *, endpoint: str | None = None, node: str | None = None,
           omni: bool = False) -> str:
    host = endpoint or emu.dns_name
    if omni:
        return f"wss://{host}/omni/webtunnel/{tokens.ws}"
    return f"wss://{host}/webtunnelv2/{tokens.ws}?X-Node-Id={node if node is not None else tokens.node}"


def open_tunnel(emu: Any, tokens: Tokens, **kwargs: Any) -> Any:
    """``websockets.connect`` to the session's WebSocket (no compression, like the az CLI); use ``async with``."""
    url_kwargs = {k: kwargs.pop(k) for k in ("endpoint", "node", "omni") if k in kwargs}
    kwargs.setdefault("compression", None)
    kwargs.setdefault("max_size", None)
    return websockets.connect(ws_url(emu, tokens, **url_kwargs), ssl=emu.client_ssl_context(), **kwargs)


class RawWebSocket:
    """A WebSocket client on a raw TLS stream: websockets' sans-I/O ``ClientProtocol`` for the handshake and for
    parsing server frames, but frames we send are written as given (so they can be unmasked or fragmented)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, protocol: ClientProtocol,
                 response: Any) -> None:
        self.reader = reader
        self.writer = writer
        self.protocol = protocol
        self.response = response

    @classmethod
    async def connect(cls, emu: Any, url: str) -> RawWebSocket:
        uri = parse_uri(url)
        reader, writer = await asyncio.open_connection(uri.host, uri.port, ssl=emu.client_ssl_context())
        protocol = ClientProtocol(uri, max_size=None)
        protocol.send_request(protocol.connect())
        for data in protocol.data_to_send():
            writer.write(data)
        await writer.drain()
        while True:
            data = await reader.read(65536)
            if not data:
                protocol.receive_eof()
            else:
                protocol.receive_data(data)
            events = protocol.events_received()
            if events:
                return cls(reader, writer, protocol, events[0])
            if not data:
                raise ConnectionError("closed during the handshake")

    async def send_frame(self, opcode: Opcode, payload: bytes, *, mask: bool = True, fin: bool = True) -> None:
        self.writer.write(Frame(opcode, payload, fin=fin).serialize(mask=mask, extensions=[]))
        await self.writer.drain()

    async def next_frame(self, timeout: float = 5.0) -> Frame | None:
        """The next frame from the server (None at EOF)."""
        while True:
            events = self.protocol.events_received()
            if events:
                frame = events[0]
                assert isinstance(frame, Frame)
                return frame
            data = await asyncio.wait_for(self.reader.read(65536), timeout)
            if not data:
                self.protocol.receive_eof()
                events = self.protocol.events_received()
                return events[0] if events else None  # type: ignore[return-value]
            self.protocol.receive_data(data)
            # the protocol answers pings/closes itself; never send its bytes (we control what goes out)
            self.protocol.data_to_send()

    def close(self) -> None:
        self.writer.close()



class RemoteEmulator:
    """The parts of :class:`~bastion_fast.emulator.Emulator` the helpers use, built from the readiness JSON line of
    a ``bastion-fast emulator`` subprocess."""

    def __init__(self, info: dict[str, Any]) -> None:
        self.info = info
        self.token = str(info["token"])
        self.dns_name = str(info["dns_name"])

    def client_ssl_context(self) -> Any:
        import ssl

        return ssl.create_default_context(cafile=self.info["ca_file"])
