"""Where a session's bytes go: the target mapping and the built-in echo / sink / source servers.

A target spec is ``HOST:PORT`` (IPv6 as ``[::1]:22``), ``echo``, ``sink`` or ``source[:N]``. The mapping keys are
a VM resource id (any port), ``<resource id>:<port>``, an IP (IP connect, any port) or ``<ip>:<port>``; resource
ids compare case-insensitively, like ARM. Unmapped sessions use the default target; with none, the token request
is refused (the service's "unknown target" answer).

The built-in targets are tiny asyncio TCP servers on 127.0.0.1, started on first use:

* ``echo`` — writes back what it reads (flow-controlled: a slow reader pauses it);
* ``sink`` — reads, counts and SHA-256s; on close the result lands in the session's ledger entry (``sink``) and in
  :attr:`Targets.sink_results` — the "answer on request" is ``GET /_emulator/sessions`` / ``/_emulator/targets``;
* ``source`` — sends N deterministic bytes (:func:`source_bytes`), then closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ipaddress
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from bastion_fast.exceptions import ConfigurationError

__all__ = ["BUILTINS", "TargetSpec", "Targets", "parse_target_spec", "source_bytes", "source_sha256"]

log = logging.getLogger("bastion_fast.emulator.targets")

BUILTINS = ("echo", "sink", "source")
_HIGH_WATER = 1 << 20
_CHUNK = 64 * 1024


def _make_block() -> bytes:
    return b"".join(hashlib.sha256(b"bastion-fast source %d" % i).digest() for i in range(_CHUNK // 32))


_BLOCK = _make_block()


def source_bytes(n: int, offset: int = 0) -> bytes:
    """The bytes ``source:N`` sends, from ``offset`` (a repeating 64 KiB pseudo-random block)."""
    out = bytearray()
    pos = offset
    end = offset + n
    while pos < end:
        start = pos % _CHUNK
        take = min(_CHUNK - start, end - pos)
        out += _BLOCK[start : start + take]
        pos += take
    return bytes(out)


def source_sha256(n: int) -> str:
    """SHA-256 (hex) of :func:`source_bytes` ``(n)``, computed without holding n bytes."""
    h = hashlib.sha256()
    full, rest = divmod(n, _CHUNK)
    for _ in range(full):
        h.update(_BLOCK)
    h.update(_BLOCK[:rest])
    return h.hexdigest()


@dataclass(frozen=True)
class TargetSpec:
    """A parsed target: ``kind`` is ``address`` (host, port) or a built-in (``size`` for source)."""

    kind: str
    host: str = ""
    port: int = 0
    size: int = 0

    def __str__(self) -> str:
        if self.kind == "address":
            host = f"[{self.host}]" if ":" in self.host else self.host
            return f"{host}:{self.port}"
        if self.kind == "source":
            return f"source:{self.size}"
        return self.kind


def parse_target_spec(spec: str, *, where: str = "target", source_size: int = 1 << 20) -> TargetSpec:
    """Parse ``HOST:PORT | echo | sink | source[:N]``; raise :class:`ConfigurationError` with the place named."""
    text = spec.strip()
    lowered = text.lower()
    if lowered in ("echo", "sink"):
        return TargetSpec(lowered)
    if lowered == "source":
        return TargetSpec("source", size=source_size)
    if lowered.startswith("source:"):
        try:
            size = int(lowered.split(":", 1)[1])
        except ValueError:
            size = -1
        if size < 0:
            raise ConfigurationError(f"{where}: bad source size in {spec!r}.", hint="Use source:N with N >= 0 bytes.")
        return TargetSpec("source", size=size)
    host, sep, port_text = text.rpartition(":")
    if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ConfigurationError(
            f"{where}: {spec!r} is not HOST:PORT, echo, sink or source[:N].",
            hint="Examples: 127.0.0.1:2222, [::1]:22, echo, source:1048576.",
        )
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return TargetSpec("address", host=host, port=int(port_text))


def _normalise_key(key: str) -> str:
    key = key.strip()
    if key.startswith("/"):
        return key.lower()
    host, sep, port = key.rpartition(":")
    if sep and port.isdigit() and host:
        host = host.strip("[]")
        with contextlib.suppress(ValueError):
            host = str(ipaddress.ip_address(host))
        return f"{host.lower()}:{port}"
    try:
        return str(ipaddress.ip_address(key.strip("[]")))
    except ValueError:
        return key.lower()


class _Echo(asyncio.Protocol):
    def __init__(self, owner: Targets) -> None:
        self.owner = owner
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not subclasses
        self.owner._opened()

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    def pause_writing(self) -> None:
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def eof_received(self) -> bool:
        return False  # close once the echoes are flushed

    def connection_lost(self, exc: Exception | None) -> None:
        self.owner._closed()


class _Sink(asyncio.Protocol):
    def __init__(self, owner: Targets) -> None:
        self.owner = owner
        self.count = 0
        self.hash = hashlib.sha256()
        self.peer_port = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        self.peer_port = int(peer[1]) if peer else 0
        self.owner._opened()

    def data_received(self, data: bytes) -> None:
        self.count += len(data)
        self.hash.update(data)

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.owner._sink_done(self.peer_port, {"bytes": self.count, "sha256": self.hash.hexdigest()})
        self.owner._closed()


class _Source(asyncio.Protocol):
    def __init__(self, owner: Targets, size: int) -> None:
        self.owner = owner
        self.left = size
        self.offset = 0
        self.paused = False
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not subclasses
        self.owner._opened()
        self._fill()

    def _fill(self) -> None:
        transport = self.transport
        assert transport is not None
        while self.left > 0 and not self.paused and not transport.is_closing():
            take = min(self.left, _CHUNK - self.offset % _CHUNK)
            start = self.offset % _CHUNK
            transport.write(_BLOCK[start : start + take])
            self.left -= take
            self.offset += take
        if self.left == 0 and not transport.is_closing():
            transport.close()

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        self._fill()

    def data_received(self, data: bytes) -> None:
        pass  # a source ignores what it is sent

    def eof_received(self) -> bool:
        return True  # keep sending until done

    def connection_lost(self, exc: Exception | None) -> None:
        self.owner._closed()


class Targets:
    """Resolve sessions to targets and run the built-in servers."""

    def __init__(self, mapping: dict[str, str], default: str | None, *, source_size: int,
                 on_change: Callable[[], None] | None = None) -> None:
        self.source_size = source_size
        self._mapping = {
            _normalise_key(k): parse_target_spec(v, where=f"target {k!r}", source_size=source_size)
            for k, v in mapping.items()
        }
        self.default = parse_target_spec(default, where="default target", source_size=source_size) if default else None
        self._servers: dict[str, asyncio.Server] = {}
        self._starting: dict[str, asyncio.Future[asyncio.Server]] = {}
        self._open = 0
        self._on_change = on_change
        self._sink_watch: dict[int, Callable[[dict[str, Any]], None]] = {}
        self.sink_results: deque[dict[str, Any]] = deque(maxlen=1000)
        self.sink_total_bytes = 0

    # -- mapping -------------------------------------------------------------------------------------------------

    def set(self, key: str, spec: str) -> None:
        """Add or replace one mapping at run time."""
        self._mapping[_normalise_key(key)] = parse_target_spec(spec, where=f"target {key!r}",
                                                               source_size=self.source_size)

    def set_default(self, spec: str | None) -> None:
        self.default = parse_target_spec(spec, where="default target", source_size=self.source_size) if spec else None

    def resolve(self, resource_id: str, port: int, hostname: str | None = None) -> TargetSpec | None:
        """The target for a session: IP connect by ``hostname``, else by resource id; then the default."""
        keys = []
        if hostname:
            ip = _normalise_key(hostname)
            keys += [f"{ip}:{port}", ip]
        rid = resource_id.lower()
        keys += [f"{rid}:{port}", rid]
        for key in keys:
            spec = self._mapping.get(key)
            if spec is not None:
                return spec
        return self.default

    # -- built-in servers ----------------------------------------------------------------------------------------

    async def address(self, spec: TargetSpec) -> tuple[str, int]:
        """``(host, port)`` to connect to for ``spec``, starting a built-in server if needed."""
        if spec.kind == "address":
            return spec.host, spec.port
        key = str(spec)
        server = self._servers.get(key)
        if server is None:
            pending = self._starting.get(key)
            if pending is None:
                pending = asyncio.get_running_loop().create_future()
                self._starting[key] = pending
                try:
                    server = await self._start(spec)
                except BaseException as exc:
                    pending.set_exception(exc)
                    pending.exception()  # mark retrieved
                    del self._starting[key]
                    raise
                self._servers[key] = server
                pending.set_result(server)
                del self._starting[key]
            else:
                server = await asyncio.shield(pending)
        sock = server.sockets[0]
        return "127.0.0.1", int(sock.getsockname()[1])

    async def _start(self, spec: TargetSpec) -> asyncio.Server:
        loop = asyncio.get_running_loop()
        factory: Callable[[], asyncio.Protocol]
        if spec.kind == "echo":
            def factory() -> asyncio.Protocol:
                return _Echo(self)
        elif spec.kind == "sink":
            def factory() -> asyncio.Protocol:
                return _Sink(self)
        else:
            size = spec.size

            def factory() -> asyncio.Protocol:
                return _Source(self, size)
        server = await loop.create_server(factory, "127.0.0.1", 0, backlog=512)
        log.debug("built-in target %s listening on port %d", spec, server.sockets[0].getsockname()[1])
        return server

    def watch_sink(self, local_port: int, callback: Callable[[dict[str, Any]], None]) -> None:
        """Call ``callback(result)`` when the sink connection from ``local_port`` closes."""
        self._sink_watch[local_port] = callback

    @property
    def open_connections(self) -> int:
        """Connections currently open on the built-in servers."""
        return self._open

    def snapshot(self) -> dict[str, Any]:
        return {
            "default": str(self.default) if self.default else None,
            "mapping": {k: str(v) for k, v in self._mapping.items()},
            "builtin_ports": {k: s.sockets[0].getsockname()[1] for k, s in self._servers.items()},
            "open_connections": self._open,
            "sink": {"total_bytes": self.sink_total_bytes, "recent": list(self.sink_results)[-20:]},
        }

    def _opened(self) -> None:
        self._open += 1

    def _closed(self) -> None:
        self._open -= 1
        if self._on_change is not None:
            self._on_change()

    def _sink_done(self, peer_port: int, result: dict[str, Any]) -> None:
        self.sink_total_bytes += result["bytes"]
        self.sink_results.append(result)
        callback = self._sink_watch.pop(peer_port, None)
        if callback is not None:
            callback(result)

    async def close(self) -> None:
        servers, self._servers = list(self._servers.values()), {}
        for server in servers:
            server.close()
        for server in servers:
            try:
                await asyncio.wait_for(server.wait_closed(), 2.0)
            except TimeoutError:
                log.debug("a built-in target server did not close in time")
