"""The :class:`Emulator`: starts TLS material, the data-plane listeners and the ARM app; stops them cleanly.

In-process use (tests, benchmarks)::

    async with Emulator(EmulatorConfig(default_target="sink")) as emu:
        emu.info            # readiness dict: arm_endpoint, dns_name, ca_file, subscription, resource_group, bastion,
                            # token, pid
        emu.ledger          # sessions (snapshot(), leaked(), live(), by_auth_token(...))
        emu.faults.update({"drop_after_bytes": 4096})
        await emu.wait_idle()

The CLI (``bastion-fast emulator``) wraps the same class and prints ``emu.info`` as one JSON line.

Data path: the WebSocket leg is the project's own pump (``bastion_fast.pump.impl.Splice``) in server role — the
Cython build when present, else the pure twin — so the emulator is not what a benchmark measures.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
from pathlib import Path
from types import ModuleType, TracebackType
from typing import Any

from bastion_fast.emulator.config import EmulatorConfig
from bastion_fast.emulator.faults import Faults
from bastion_fast.emulator.ledger import Ledger
from bastion_fast.emulator.runtime import BastionRuntime, Runtime
from bastion_fast.emulator.targets import Targets
from bastion_fast.exceptions import ConfigurationError

__all__ = ["Emulator", "default_state_dir", "select_pump"]

log = logging.getLogger("bastion_fast.emulator")

_STOP_GRACE = 3.0  # seconds live WebSockets get to finish their closing handshake at shutdown


def default_state_dir() -> Path:
    """Where certificates are cached when no state dir is given: the user cache dir's ``emulator`` folder."""
    import platformdirs

    return Path(platformdirs.user_cache_dir("bastion-fast")) / "emulator"


def select_pump() -> ModuleType:
    """The data-path module with a ``Splice``: the compiled one when it has it, else the pure twin."""
    from bastion_fast.pump import impl

    if hasattr(impl, "Splice"):
        return impl
    from bastion_fast import _pump_py

    log.debug("the compiled pump has no Splice yet; the emulator uses the pure-Python twin")
    return _pump_py


class Emulator:
    """A local Azure Bastion (ARM subset + data plane); an async context manager."""

    def __init__(self, config: EmulatorConfig | None = None, *, pump: ModuleType | None = None) -> None:
        self.config = config if config is not None else EmulatorConfig()
        self._pump = pump
        self.rt: Runtime | None = None
        self._planes: list[Any] = []
        self._runner: Any = None
        self._ssl: ssl.SSLContext | None = None
        self.ca_file: str | None = None
        self.arm_endpoint = ""
        self.info: dict[str, Any] = {}
        self.arm_state: Any = None

    # -- lifecycle -----------------------------------------------------------------------------------------------

    async def __aenter__(self) -> Emulator:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop()

    async def start(self) -> None:
        """Generate/load TLS files, bind every listener, build the readiness dict."""
        from bastion_fast.emulator import certs
        from bastion_fast.emulator.auth import mint_token
        from bastion_fast.emulator.dataplane import DataPlane

        config = self.config
        config.validate()
        if not config.insecure_http:
            state_dir = config.state_dir or default_state_dir()
            files = certs.ensure_certificates(Path(state_dir), certs.default_names(config.bind))
            self._ssl = certs.server_ssl_context(files)
            self.ca_file = str(files.ca_file)
        rt = Runtime(config, self._pump or select_pump())
        self.rt = rt
        advertised = "127.0.0.1" if config.bind in ("0.0.0.0", "::", "") else config.bind
        try:
            for bastion in rt.bastions:
                plane = DataPlane(rt, bastion, self._ssl)
                port = config.port if bastion.index == 0 and config.port else bastion.cfg.port
                bastion.host = advertised
                bastion.port = await plane.start(config.bind, port)
                self._planes.append(plane)
            await self._start_arm(advertised)
        except OSError as exc:
            await self.stop()
            raise ConfigurationError(f"The emulator cannot listen on {config.bind}: {exc.strerror or exc}.",
                                     hint="Pick other ports (--port/--arm-port) or 0 for free ones.") from exc
        default = rt.bastions[0]
        self.info = {
            "arm_endpoint": self.arm_endpoint,
            "dns_name": default.dns_name,
            "ca_file": self.ca_file,
            "subscription": config.subscription,
            "resource_group": default.cfg.resource_group,
            "bastion": default.cfg.name,
            "token": mint_token(tenant=config.tenant),
            "pid": os.getpid(),
        }
        rt.info = self.info
        log.info("emulator ready: ARM %s, data plane %s (%s), pump %s", self.arm_endpoint, default.dns_name,
                 default.cfg.sku, rt.pump.IMPLEMENTATION)

    async def _start_arm(self, advertised: str) -> None:
        from aiohttp import web

        from bastion_fast.emulator.arm import ArmState, build_app
        from bastion_fast.emulator.arm_bastion_hosts import bastion_resource

        assert self.rt is not None
        config = self.config
        state = ArmState(subscription=config.subscription, tenant=config.tenant,
                         strict_auth=config.knobs.strict_auth, omit_false_booleans=config.omit_false_booleans,
                         sessions=self.rt)
        for bastion in self.rt.bastions:
            state.put(bastion_resource(bastion.cfg, config.subscription, bastion.dns_name))
        self.arm_state = state
        app = build_app(state)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        self._runner = runner
        site = web.TCPSite(runner, config.bind, config.arm_port, ssl_context=self._ssl, backlog=128,
                           reuse_address=True)
        await site.start()
        server = site._server
        assert server is not None
        port = int(server.sockets[0].getsockname()[1])  # type: ignore[attr-defined]
        host = f"[{advertised}]" if ":" in advertised else advertised
        scheme = "http" if config.insecure_http else "https"
        self.arm_endpoint = f"{scheme}://{host}:{port}"
        state.endpoint = self.arm_endpoint

    async def stop(self) -> None:
        """Stop accepting, close every live WebSocket with 1001 (then drop stragglers), stop ARM and targets."""
        rt = self.rt
        if rt is None:
            return
        rt.closing = True
        for plane in self._planes:
            plane.close()
        bridges = list(rt.bridges)
        for bridge in bridges:
            bridge.close(1001, "Going away", by="shutdown")
        if bridges:
            await asyncio.wait([b.done for b in bridges], timeout=_STOP_GRACE)
        stragglers = list(rt.bridges)
        for bridge in stragglers:
            bridge.abort(by="shutdown")
        if stragglers:
            await asyncio.wait([b.done for b in stragglers], timeout=1.0)
        for plane in self._planes:
            await plane.wait_closed()
        self._planes = []
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await rt.targets.close()
        await asyncio.sleep(0)  # let transports deliver their connection_lost callbacks
        self.rt = None
        self._last_rt = rt

    # -- conveniences for tests ----------------------------------------------------------------------------------

    def _runtime(self) -> Runtime:
        rt = self.rt or getattr(self, "_last_rt", None)
        if rt is None:
            raise RuntimeError("the emulator is not started")
        return rt

    @property
    def ledger(self) -> Ledger:
        return self._runtime().ledger

    @property
    def faults(self) -> Faults:
        return self._runtime().faults

    @property
    def targets(self) -> Targets:
        return self._runtime().targets

    @property
    def bastions(self) -> list[BastionRuntime]:
        return self._runtime().bastions

    @property
    def dns_name(self) -> str:
        return str(self.info["dns_name"])

    @property
    def token(self) -> str:
        return str(self.info["token"])

    @property
    def pump(self) -> ModuleType:
        return self._runtime().pump

    def bastion(self, name: str | None = None) -> BastionRuntime:
        """The default Bastion host, or the one called ``name``."""
        for bastion in self.bastions:
            if name is None or bastion.cfg.name == name:
                return bastion
        raise KeyError(name)

    def client_ssl_context(self) -> ssl.SSLContext:
        """A client context trusting only the emulator's CA (hostname checked)."""
        ctx = ssl.create_default_context(cafile=self.ca_file)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        return ctx

    def maintenance(self, code: int | None = 1012, reason: str = "Service restart") -> int:
        """Close every live WebSocket now (``code=None`` drops them); returns how many."""
        return self._runtime().maintenance(code=code, reason=reason)

    async def wait_idle(self, timeout: float = 10.0) -> None:  # noqa: ASYNC109 - a bounded wait is the point
        """Wait until no handshake is in progress, no WebSocket is live and the built-in targets are closed."""
        rt = self._runtime()
        await rt.ledger.wait_for(lambda: rt.ledger.idle and rt.targets.open_connections == 0, timeout)
