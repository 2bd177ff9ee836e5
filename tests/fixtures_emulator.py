"""Fixtures giving tests a running in-process emulator (``bastion_fast.emulator.Emulator``).

Import them into a test module, like the sshd fixtures::

    from tests import fixtures_emulator
    emulator = fixtures_emulator.emulator                    # Standard SKU, tunneling on, default target "echo"
    emulator_factory = fixtures_emulator.emulator_factory    # async with emulator_factory(default_target="sink"): ...

Certificates are generated once per test session (a session-scoped state dir) so each emulator starts in
milliseconds. Every emulator is stopped at the end of its test, closing its sessions.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from bastion_fast.emulator import Emulator, EmulatorConfig

__all__ = ["emulator", "emulator_factory", "emulator_state_dir", "make_config"]


@pytest.fixture(scope="session")
def emulator_state_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One state dir (CA + server certificate) shared by every emulator of the session."""
    return tmp_path_factory.mktemp("emulator-state")


def make_config(state_dir: Path, **overrides: Any) -> EmulatorConfig:
    """An :class:`EmulatorConfig` in ``state_dir``; keyword arguments set config fields, and the dotted-free
    shortcuts ``knobs=dict(...)``, ``faults=dict(...)``, ``bastion=dict(...)`` update those sections."""
    from bastion_fast.emulator.config import BastionConfig, Knobs
    from bastion_fast.emulator.faults import FaultConfig

    config = EmulatorConfig(state_dir=state_dir)
    for key, value in overrides.items():
        if key == "knobs" and isinstance(value, dict):
            for k, v in value.items():
                setattr(config.knobs, k, v)
        elif key == "faults" and isinstance(value, dict):
            config.faults = FaultConfig.from_mapping(value)
        elif key == "bastion" and isinstance(value, dict):
            config.bastion = BastionConfig(**value)
        elif key == "extra_bastions":
            config.extra_bastions = [b if isinstance(b, BastionConfig) else BastionConfig(**b) for b in value]
        else:
            assert hasattr(config, key), f"EmulatorConfig has no field {key!r}"
            setattr(config, key, value)
    assert isinstance(config.knobs, Knobs)
    return config


@pytest.fixture
async def emulator(emulator_state_dir: Path) -> AsyncIterator[Emulator]:
    """A running emulator with the defaults: one Standard Bastion, tunneling on, default target echo."""
    async with Emulator(make_config(emulator_state_dir)) as emu:
        yield emu


@pytest.fixture
def emulator_factory(emulator_state_dir: Path) -> Callable[..., contextlib.AbstractAsyncContextManager[Emulator]]:
    """``async with emulator_factory(**config_overrides) as emu:`` — see :func:`make_config`."""

    @contextlib.asynccontextmanager
    async def factory(**overrides: Any) -> AsyncIterator[Emulator]:
        async with Emulator(make_config(emulator_state_dir, **overrides)) as emu:
            yield emu

    return factory
