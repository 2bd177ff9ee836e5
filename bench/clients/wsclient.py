"""A Bastion tunnel on the ``websockets`` library: what a competent asyncio developer would write.

The "good pure-Python" reference of the benchmarks. Per accepted connection: POST ``/api/tokens`` (aiohttp, one
shared session), ``websockets.connect(url, ssl=ctx, compression=None, max_size=None)``, two tasks — local reads
of 64 KiB each sent as one binary message, and ``async for message in ws`` written to the local stream with
``drain()`` — then close 1000 and DELETE the token. Standard asyncio event loop by default (what most such code
runs on); ``--loop uvloop`` to try it on uvloop. Nothing here is deliberately slow; nothing is hand-tuned either.

Usage: ``BASTION_FAST_TOKEN=… python bench/clients/wsclient.py --endpoint HOST:PORT --ca-file CA
--target-resource-id ID --resource-port 22 --port 0``; prints ``{"event":"ready",…,"port":N}``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import ssl
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common
import aiohttp
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

log = logging.getLogger("wsclient")
READ_SIZE = 64 * 1024


class Tunnel:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.ssl = ssl.create_default_context(cafile=args.ca_file)
        self.http: aiohttp.ClientSession | None = None

    async def _open_grant(self) -> tuple[str, str, str]:
        assert self.http is not None
        async with self.http.post(_common.tokens_url(self.args.endpoint), data=_common.token_form(self.args),
                                  ssl=self.ssl) as response:
            reply = await response.json(content_type=None)
            if response.status != 200:
                raise RuntimeError(f"token exchange failed ({response.status}): {reply.get('message')}")
        return reply["authToken"], reply["websocketToken"], reply["nodeId"]

    async def _close_grant(self, auth_token: str, node_id: str) -> None:
        assert self.http is not None
        try:
            async with self.http.delete(_common.delete_url(self.args.endpoint, auth_token),
                                        headers={"X-Node-Id": node_id}, ssl=self.ssl) as response:
                if response.status not in (200, 204, 404):
                    log.warning("DELETE of a session token answered %s", response.status)
        except aiohttp.ClientError as exc:
            log.warning("DELETE of a session token failed: %s", _common.redact(exc))

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            auth_token, websocket_token, node_id = await self._open_grant()
        except (aiohttp.ClientError, RuntimeError, ValueError) as exc:
            log.error("token exchange: %s", _common.redact(exc))
            writer.close()
            return
        try:
            url = _common.websocket_url(self.args.endpoint, websocket_token, node_id)
            async with connect(url, ssl=self.ssl, compression=None, max_size=None) as ws:

                async def upstream() -> None:
                    while data := await reader.read(READ_SIZE):
                        await ws.send(data)
                    await ws.close()

                async def downstream() -> None:
                    with contextlib.suppress(ConnectionClosed):
                        async for message in ws:
                            writer.write(message if isinstance(message, bytes) else message.encode())
                            await writer.drain()

                tasks = [asyncio.create_task(upstream()), asyncio.create_task(downstream())]
                _done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                for task in pending:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
        except (TimeoutError, OSError, ConnectionClosed) as exc:
            log.error("connection: %s", _common.redact(exc))
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            await self._close_grant(auth_token, node_id)

    async def run(self) -> None:
        async with aiohttp.ClientSession() as self.http:
            server = await asyncio.start_server(self.handle, self.args.bind_address, self.args.port)
            address, port = server.sockets[0].getsockname()[:2]
            _common.print_ready(address, port)
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            async with server:
                await stop.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="websockets-library Bastion tunnel (benchmark reference)")
    _common.add_bastion_arguments(parser)
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    args = parser.parse_args(argv)
    _common.aad_token()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="wsclient: %(message)s")
    factory = None
    if args.loop == "uvloop":
        import uvloop

        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(Tunnel(args).run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
