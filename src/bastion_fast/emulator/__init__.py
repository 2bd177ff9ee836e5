"""A local Azure Bastion: ARM subset (aiohttp) + data plane (h11 + the project's pump in server role).

``Emulator`` (an async context manager) and ``EmulatorConfig`` are the public names; the CLI front end is
``bastion-fast emulator``. Module map: ``config`` (dataclasses, TOML), ``certs`` (CA + server certificate),
``auth`` (bearer checks, unsigned JWTs), ``arm`` + ``arm_bastion_hosts`` (ARM routes), ``http11`` (h11 server),
``dataplane`` (routing), ``api`` (token/connection/rdpfile rules), ``bridge`` (WebSocket handshake → Splice),
``admin`` (``/_emulator/…``), ``ledger`` (sessions, leaks), ``targets`` (mapping, echo/sink/source), ``faults``,
``runtime`` (shared state), ``core`` (``Emulator``).

Names are imported lazily so that ``import bastion_fast.emulator.config`` stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["BastionConfig", "Emulator", "EmulatorConfig", "FaultConfig", "Knobs"]

if TYPE_CHECKING:
    from bastion_fast.emulator.config import BastionConfig, EmulatorConfig, Knobs
    from bastion_fast.emulator.core import Emulator
    from bastion_fast.emulator.faults import FaultConfig

_LAZY = {
    "BastionConfig": "bastion_fast.emulator.config",
    "EmulatorConfig": "bastion_fast.emulator.config",
    "Knobs": "bastion_fast.emulator.config",
    "FaultConfig": "bastion_fast.emulator.faults",
    "Emulator": "bastion_fast.emulator.core",
}


def __getattr__(name: str) -> Any:
    try:
        module_name = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'bastion_fast.emulator' has no attribute {name!r}") from None
    import importlib

    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value
    return value
