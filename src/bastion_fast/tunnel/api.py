"""The library face of the tunnel: ``async with bastion_fast.open_tunnel(...) as t: t.port``.

It is the CLI's ``tunnel`` without argparse and without signal handling: the caller's ``async with`` block is the
tunnel's lifetime. Leaving the block closes every connection and deletes every Bastion session token.

Tooling and tests can pass a ready ``control`` object (anything with the ``ControlPlane`` protocol: ``open_grant``,
``close_grant``, ``aclose``); otherwise the usual sign-in and discovery run once on entry.
"""

from __future__ import annotations

import ssl
from types import TracebackType
from typing import Literal

from bastion_fast.control.models import ConnectionOptions, ControlPlane
from bastion_fast.exceptions import UsageError
from bastion_fast.tunnel.config import DEFAULT_BIND_ADDRESS, DEFAULT_FRAME_SIZE, TunnelConfig, load_pump
from bastion_fast.tunnel.events import ConnectionResult, TunnelEvents
from bastion_fast.tunnel.listener import Listener

__all__ = ["Tunnel", "open_tunnel"]


class Tunnel:
    """A running local tunnel. Use it as an async context manager (``open_tunnel`` returns one).

    Attributes (after entering): ``address``, ``port``, ``listener``, ``control``, ``implementation``.
    """

    def __init__(
        self,
        *,
        config: TunnelConfig,
        control: ControlPlane | None = None,
        options: ConnectionOptions | None = None,
        events: TunnelEvents | None = None,
    ) -> None:
        if control is None and options is None:
            raise UsageError("open_tunnel needs either connection options (name, resource_group, target) or a "
                             "ready control plane (control=...).")
        self.config = config
        self.control: ControlPlane | None = control
        self._options = options
        self._owns_control = control is None
        self._events = events
        self.listener: Listener | None = None
        assert config.pump is not None
        self.implementation: str = config.pump.IMPLEMENTATION

    @property
    def port(self) -> int:
        """The local port (useful with ``port=0``)."""
        if self.listener is None:
            raise RuntimeError("the tunnel is not open yet: use 'async with open_tunnel(...) as t'")
        return self.listener.port

    @property
    def address(self) -> str:
        return self.config.bind_address

    @property
    def results(self) -> list[ConnectionResult]:
        """How each finished connection went, in order of completion."""
        return [] if self.listener is None else self.listener.results

    @property
    def active(self) -> int:
        return 0 if self.listener is None else self.listener.active

    async def start(self) -> Tunnel:
        """Sign in and discover (unless a control plane was given), then bind and listen."""
        if self.control is None:
            from bastion_fast.control import connect

            assert self._options is not None
            self.control = await connect(self._options)
        listener = Listener(self.control, self.config, self._events)
        try:
            await listener.start()
        except BaseException:
            await self._close_control()
            raise
        self.listener = listener
        return self

    async def wait(self) -> str:
        """Until the tunnel stops by itself (``timeout``, ``idle_timeout``, ``max_failures`` → TunnelError)."""
        if self.listener is None:
            raise RuntimeError("the tunnel is not open")
        return await self.listener.wait()

    def stop(self, reason: str = "closed") -> None:
        """Ask the tunnel to stop; ``wait()`` returns, and leaving the block (or ``aclose``) cleans up."""
        if self.listener is not None:
            self.listener.stop(reason)

    async def aclose(self) -> None:
        """Close every connection, delete every token, release the control plane (if we created it)."""
        try:
            if self.listener is not None:
                await self.listener.aclose()
        finally:
            await self._close_control()

    async def _close_control(self) -> None:
        if self._owns_control and self.control is not None:
            control, self.control = self.control, None
            await control.aclose()

    async def __aenter__(self) -> Tunnel:
        return await self.start()

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.aclose()


def open_tunnel(
    *,
    name: str | None = None,
    resource_group: str | None = None,
    target_resource_id: str | None = None,
    target_ip_address: str | None = None,
    resource_port: int | None = None,
    port: int = 0,
    bind_address: str = DEFAULT_BIND_ADDRESS,
    subscription: str | None = None,
    auth: str = "default",
    tenant: str | None = None,
    client_id: str | None = None,
    cloud: str | None = None,
    arm_endpoint: str | None = None,
    ca_bundle: str | None = None,
    control: ControlPlane | None = None,
    options: ConnectionOptions | None = None,
    implementation: Literal["cython", "python"] | None = None,
    frame_size: int = DEFAULT_FRAME_SIZE,
    keepalive: float | None = None,
    half_close: bool = False,
    max_failures: int = 5,
    timeout: float | None = None,
    idle_timeout: float | None = None,
    connect_timeout: float = 10.0,
    handshake_timeout: float = 10.0,
    proxy: str | Literal[False] | None = None,
    ssl_context: ssl.SSLContext | None = None,
    events: TunnelEvents | None = None,
) -> Tunnel:
    """Open a local tunnel through Azure Bastion (``az network bastion tunnel`` as a library).

    Example::

        async with bastion_fast.open_tunnel(name="bastion", resource_group="rg",
                                            target_resource_id=vm_id, resource_port=22) as t:
            reader, writer = await asyncio.open_connection("127.0.0.1", t.port)

    Args:
        name, resource_group, target_resource_id, target_ip_address, resource_port: as az's flags.
        port: local port (0 = a free one, read it from ``t.port``); bind_address: loopback by default.
        subscription, auth, tenant, client_id, cloud, arm_endpoint, ca_bundle: sign-in and endpoints (see
            ``bastion-fast tunnel --help``); or pass ``options`` (a ``ConnectionOptions``) or ``control`` (a ready
            control plane, which the tunnel then does not close).
        implementation: ``None`` (best available), ``"cython"`` (required) or ``"python"`` (pure twin).
        frame_size, keepalive, half_close: data-path tuning (see the CLI flags of the same names).
        max_failures, timeout, idle_timeout: when the tunnel gives up or ends (``t.wait()`` returns).
        connect_timeout, handshake_timeout, proxy, ssl_context: the WebSocket leg's connection.
        events: receives ready/opened/closed events (silent by default).

    Raises (on entry):
        UsageError, ConfigurationError, ControlPlaneError (sign-in, discovery).
    """
    if control is None and options is None:
        if not name or not resource_group:
            raise UsageError("open_tunnel needs name= and resource_group= (the Bastion host), or control=.")
        if resource_port is None:
            raise UsageError("open_tunnel needs resource_port= (the port on the target).")
        from bastion_fast.control.targets import validate_target

        options = ConnectionOptions(
            name=name, resource_group=resource_group,
            target=validate_target(target_resource_id, target_ip_address, int(resource_port)),
            subscription=subscription, auth=auth, tenant=tenant, client_id=client_id, cloud=cloud,
            arm_endpoint=arm_endpoint, ca_bundle=ca_bundle, command="tunnel", connect_timeout=connect_timeout,
        )
    if ssl_context is None:
        from bastion_fast.tls import client_ssl_context

        ssl_context = client_ssl_context(ca_bundle or (options.ca_bundle if options is not None else None))
    config = TunnelConfig(
        bind_address=bind_address, port=port, frame_size=frame_size, keepalive=keepalive, half_close=half_close,
        max_failures=max_failures, timeout=timeout, idle_timeout=idle_timeout, connect_timeout=connect_timeout,
        handshake_timeout=handshake_timeout, ssl_context=ssl_context, proxy=proxy, pump=load_pump(implementation),
    )
    return Tunnel(config=config, control=control, options=options, events=events)
