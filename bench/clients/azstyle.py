"""An az-style Bastion tunnel: the design of ``az network bastion tunnel`` (PROTOCOL.md §3.2–§3.4), our own code.

The baseline the benchmarks compare against. It keeps every design choice that decides az's speed and cost, so
the numbers say what a user of az actually gets:

* ``websocket-client`` with blocking sockets, ``create_connection(..., sockopt=TCP_NODELAY,
  enable_multithread=True)``, certificate verification on (the emulator's CA via ``sslopt``);
* per accepted connection a handler thread (ext ≥ 1.0.1) that POSTs ``/api/tokens`` with ``requests`` (a new TLS
  connection per call, module-level ``requests.post``; ``urllib`` if requests is missing), connects the
  WebSocket and runs two pump threads, then DELETEs that connection's token (the ext#10137 fix, so the emulator's
  ledger stays clean between benchmark scenarios);
* the listener: ``listen(100)``, blocking ``accept`` in one thread (a burst of more simultaneous connections than
  the backlog holds gets resets — the 256-stream scenario counts them);
* local → Bastion: one ``bytearray(4096)`` per connection, ``recv_into``, a slice copy, one ``send_binary``
  (one masked frame) per read — no coalescing;
* Bastion → local: ``ws.recv()`` (a whole message) then ``socket.send`` — not ``sendall``, as az does; the
  benchmark's sha256 check would catch a short write;
* the per-chunk ``logger.info`` calls (four per direction, cheap at the default WARNING level, ruinous with
  ``--debug``) — kept because the level check is part of az's cost;
* either pump ending ends the connection: local EOF sends Close 1000 and gives the peer 3 s to answer (as
  ``ws.close()`` does); the WebSocket ending shuts the local socket down.

One deliberate difference from az, in teardown only: the pumps *shut down* sockets and the handler closes them
after both pumps have returned. Closing a socket that another thread may still re-enter a read on (websocket-client
keeps OpenSSL bound to the raw fd number) lets that read land on an unrelated new connection once the kernel
reuses the fd; at 64 concurrent streams we saw exactly that — sha256 mismatches and TLS EOFs on fresh
connections — which would make the baseline flaky, not slower.

Usage: ``BASTION_FAST_TOKEN=… python bench/clients/azstyle.py --endpoint HOST:PORT --ca-file CA
--target-resource-id ID --resource-port 22 --port 0``; prints ``{"event":"ready",…,"port":N}``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import socket
import ssl
import sys
import threading
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common
import websocket

logger = logging.getLogger("azstyle")


def _http(method: str, url: str, *, ca_file: str | None, data: dict[str, str] | None = None,
          headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """One HTTPS call on a new connection, the way module-level ``requests.post``/``delete`` do it."""
    try:
        import requests
    except ImportError:
        requests = None
    if requests is not None:
        verify: Any = ca_file if ca_file else True
        response = requests.request(method, url, data=data, headers=headers, verify=verify)
        return response.status_code, response.content
    ctx = ssl.create_default_context(cafile=ca_file)
    body = urllib.parse.urlencode(data).encode() if data is not None else None
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, context=ctx) as reply:
            return reply.status, reply.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


class AzStyleTunnel:
    """Listener + per-connection handler threads, as in az's ``TunnelServer``."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((args.bind_address, args.port))

    # -- control plane ----------------------------------------------------------------------------------------
    def _get_auth_token(self) -> tuple[str, str, str]:
        status, body = _http("POST", _common.tokens_url(self.args.endpoint), ca_file=self.args.ca_file,
                             data=_common.token_form(self.args))
        reply = json.loads(body.decode("utf-8"))
        if status != 200:
            raise RuntimeError(f"token exchange failed ({status}): {reply.get('message')}")
        return reply["authToken"], reply["websocketToken"], reply["nodeId"]

    def _delete_token(self, auth_token: str, node_id: str) -> None:
        try:
            status, _ = _http("DELETE", _common.delete_url(self.args.endpoint, auth_token),
                              ca_file=self.args.ca_file, headers={"X-Node-Id": node_id})
            if status not in (200, 204, 404):
                logger.warning("DELETE of a session token answered %s", status)
        except Exception as exc:
            logger.warning("DELETE of a session token failed: %s", _common.redact(exc))

    # -- listener ---------------------------------------------------------------------------------------------
    def serve_forever(self) -> None:
        self.sock.listen(100)
        address, port = self.sock.getsockname()[:2]
        _common.print_ready(address, port)
        index = 0
        while True:
            client, _address = self.sock.accept()
            index += 1
            handler = threading.Thread(target=self._handle, args=(client, index), daemon=True)
            handler.start()

    def _handle(self, client: socket.socket, index: int) -> None:
        try:
            auth_token, websocket_token, node_id = self._get_auth_token()
        except Exception as exc:
            logger.error("connection %s: %s", index, _common.redact(exc))
            client.close()
            return
        try:
            ca = self.args.ca_file
            sslopt: dict[str, Any] = {"cert_reqs": ssl.CERT_REQUIRED}
            if ca:
                sslopt["ca_certs"] = ca
            ws = websocket.create_connection(
                _common.websocket_url(self.args.endpoint, websocket_token, node_id),
                sockopt=((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),),
                sslopt=sslopt,
                enable_multithread=True,
            )
            logger.info("Websocket, connected status: %s", ws.connected)
            to_ws = threading.Thread(target=self._listen_to_client, args=(client, ws, index), daemon=True)
            to_local = threading.Thread(target=self._listen_to_web_socket, args=(client, ws, index), daemon=True)
            to_ws.start()
            to_local.start()
            to_ws.join()
            to_local.join()
            ws.shutdown()  # close the sockets only now that no pump thread can re-enter a read on them
        except Exception as exc:
            logger.error("connection %s: %s", index, _common.redact(exc))
        finally:
            client.close()
            self._delete_token(auth_token, node_id)

    # -- the two pumps ----------------------------------------------------------------------------------------
    def _listen_to_web_socket(self, client: socket.socket, ws: Any, index: int) -> None:
        try:
            while True:
                logger.info("Waiting for websocket data, connection id: %s", index)
                data = ws.recv()
                logger.info("Received websocket data, connection id: %s", index)
                if data:
                    logger.info("Sending to debugger, connection id: %s", index)
                    client.send(data)
                    logger.info("Done sending to debugger, connection id: %s", index)
                else:
                    break
        except Exception as exc:
            logger.info("websocket pump ended: %s", _common.redact(exc))
        finally:
            with contextlib.suppress(OSError):
                client.shutdown(socket.SHUT_RDWR)  # wakes the other pump; the local app sees EOF

    def _listen_to_client(self, client: socket.socket, ws: Any, index: int) -> None:
        try:
            buf = bytearray(4096)
            while True:
                logger.info("Waiting for debugger data, connection id: %s", index)
                nbytes = client.recv_into(buf, len(buf))
                logger.info("Received debugger data, nbytes: %s, connection id: %s", nbytes, index)
                if nbytes > 0:
                    data = buf[0:nbytes]
                    logger.info("Sending to websocket, connection id: %s", index)
                    ws.send_binary(data)
                    logger.info("Done sending to websocket, connection id: %s", index)
                else:
                    break
        except Exception as exc:
            logger.info("client pump ended: %s", _common.redact(exc))
        finally:
            # ws.close() would wait for the peer's Close *and* close the socket under the other pump's feet:
            # send our Close (1000), let the other pump read the answer, and cut it off after 3 s like close().
            with contextlib.suppress(Exception):
                ws.send_close()
            timer = threading.Timer(3.0, ws.abort)
            timer.daemon = True
            timer.start()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="az-style Bastion tunnel (benchmark baseline)")
    _common.add_bastion_arguments(parser)
    args = parser.parse_args(argv)
    _common.aad_token()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="azstyle: %(message)s")
    try:
        AzStyleTunnel(args).serve_forever()
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
