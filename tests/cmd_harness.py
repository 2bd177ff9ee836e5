"""Harness for the everyday commands' end-to-end tests: the emulator on a background thread, the CLI as a child.

The commands under test (``bastion-fast ssh``, ``proxy``, ``cp`` …) run as real subprocesses — exactly what a user
types — against an :class:`~bastion_fast.emulator.Emulator` whose VM resource ids map to real local servers
(a test ``sshd``, ``xrdp``). The emulator lives on its own event loop in a thread so the test body can block on
subprocesses; :meth:`EmulatorThread.call` runs a function on that loop (faults, ledger reads).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.conftest import TIMEOUT_FACTOR

T = TypeVar("T")
SUBSCRIPTION = "00000000-0000-0000-0000-0000000000e5"
WAIT = 60.0 * TIMEOUT_FACTOR


def vm_id(name: str, group: str = "rg-vms") -> str:
    return f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{group}/providers/Microsoft.Compute/virtualMachines/{name}"


class EmulatorThread:
    """A running emulator (``info``, ``ledger``, ``faults`` reachable through :meth:`call`)."""

    def __init__(self, config: Any) -> None:
        self.config = config
        self.loop = asyncio.new_event_loop()
        self.emulator: Any = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._main, name="emulator", daemon=True)
        self._ready: Future[None] = Future()

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._serve())
        self.loop.close()

    async def _serve(self) -> None:
        from bastion_fast.emulator import Emulator

        self._stop = asyncio.Event()
        try:
            async with Emulator(self.config) as emu:
                self.emulator = emu
                self._ready.set_result(None)
                await self._stop.wait()
        except BaseException as exc:
            if not self._ready.done():
                self._ready.set_exception(exc)
            raise

    def start(self) -> EmulatorThread:
        self._thread.start()
        self._ready.result(timeout=WAIT)
        return self

    def stop(self) -> None:
        if self._stop is not None and self._thread.is_alive():
            self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=WAIT)

    @property
    def info(self) -> dict[str, Any]:
        return dict(self.emulator.info)

    def call(self, fn: Callable[[Any], T]) -> T:
        """Run ``fn(emulator)`` on the emulator's loop and return its result (awaiting it if it is a coroutine)."""

        async def runner() -> Any:
            result = fn(self.emulator)
            if asyncio.iscoroutine(result):
                result = await result
            return result

        return asyncio.run_coroutine_threadsafe(runner(), self.loop).result(timeout=WAIT)

    def wait_idle(self) -> None:
        self.call(lambda emu: emu.wait_idle(timeout=WAIT))

    def leaked(self) -> list[Any]:
        return self.call(lambda emu: [s.to_dict() for s in emu.ledger.leaked()])

    def sessions(self) -> list[dict[str, Any]]:
        return self.call(lambda emu: [s.to_dict() for s in emu.ledger.sessions()])

    def wait_all_deleted(self, minimum: int = 1) -> list[dict[str, Any]]:
        """Wait until at least ``minimum`` sessions exist and every one was DELETEd; return them all.

        Fails (TimeoutError) if a session stays undeleted — a leaked Bastion session, the ext#10137 bug class.
        """

        async def wait(emu: Any) -> list[dict[str, Any]]:
            ledger = emu.ledger
            await ledger.wait_for(lambda: len(ledger.sessions()) >= minimum and
                                  all(s.state == "deleted" for s in ledger.sessions()), WAIT)
            return [s.to_dict() for s in ledger.sessions()]

        return self.call(wait)

    def set_faults(self, **faults: Any) -> None:
        self.call(lambda emu: emu.faults.update(faults))

    def clear_faults(self) -> None:
        self.call(lambda emu: emu.faults.reset())

    # -- CLI side ------------------------------------------------------------------------------------------------

    def connection_args(self) -> list[str]:
        """The flags that point a command at this emulator (sign-in with a static token)."""
        info = self.info
        return ["-n", info["bastion"], "-g", info["resource_group"], "--subscription", info["subscription"],
                "--arm-endpoint", info["arm_endpoint"], "--ca-bundle", info["ca_file"], "--auth", "static"]

    def env(self, state_dir: Path, **extra: str) -> dict[str, str]:
        """Environment for a CLI child: the static token, private state/config dirs, no az config."""
        env = dict(os.environ)
        env.update(pure_if_needed())
        env.update({
            "BASTION_FAST_TOKEN": self.info["token"],
            "BASTION_FAST_STATE_DIR": str(state_dir / "state"),
            "BASTION_FAST_CONFIG": str(state_dir / "config.toml"),
            "AZURE_CONFIG_DIR": str(state_dir / "az"),
            "PYTHONUNBUFFERED": "1",
        })
        env.update(extra)
        return env


def pure_if_needed() -> dict[str, str]:
    """Use the pure-Python data path in children while the compiled pump has no ``Splice`` (as the emulator does)."""
    from bastion_fast.pump import impl

    return {} if hasattr(impl, "Splice") else {"BASTION_FAST_NO_EXTENSIONS": "1"}


@contextmanager
def running_emulator(targets: dict[str, str] | None = None, *, state_dir: Path | None = None,
                     **config_fields: Any) -> Iterator[EmulatorThread]:
    """An emulator with ``targets`` (resource id or ip → "host:port"), no default target unless given."""
    from bastion_fast.emulator import EmulatorConfig

    config_fields.setdefault("default_target", None)
    config = EmulatorConfig(subscription=SUBSCRIPTION, targets=dict(targets or {}), state_dir=state_dir,
                            **config_fields)
    thread = EmulatorThread(config).start()
    try:
        yield thread
    finally:
        thread.stop()


def bastion_fast(*args: str, env: dict[str, str], input: bytes | None = None, timeout: float = WAIT,
                 stdin: Any = None) -> subprocess.CompletedProcess[bytes]:
    """Run ``python -m bastion_fast ARGS`` and capture its output."""
    return subprocess.run([sys.executable, "-m", "bastion_fast", *args], env=env, input=input, stdin=stdin,
                          capture_output=True, timeout=timeout, check=False)


def cli_command() -> list[str]:
    """The argv prefix that runs this checkout's CLI."""
    return [sys.executable, "-m", "bastion_fast"]


def joined(argv: Sequence[str]) -> str:
    import shlex

    return shlex.join(argv)


@dataclass
class VmSetup:
    """One VM (``web1``) behind the emulator, backed by a real sshd; everything a CLI test needs."""

    emu: EmulatorThread
    sshd: Any
    tmp: Path
    vm: str
    env: dict[str, str]

    @property
    def target_args(self) -> list[str]:
        """Connection flags + ``--target-resource-id`` + the sshd's user key."""
        return [*self.emu.connection_args(), "--target-resource-id", self.vm, "--ssh-key", str(self.sshd.key_path)]

    @property
    def user(self) -> str:
        return str(self.sshd.user)

    def write_profiles(self, extra: str = "") -> Path:
        """A profiles file with ``web1`` (this VM) pointing at the emulator; returns its path."""
        info = self.emu.info
        path = self.tmp / "config.toml"
        path.write_text(
            "[defaults]\n"
            f'bastion = "{info["bastion"]}"\nresource_group = "{info["resource_group"]}"\n'
            f'subscription = "{info["subscription"]}"\narm_endpoint = "{info["arm_endpoint"]}"\n'
            f'ca_bundle = "{info["ca_file"]}"\nauth = "static"\n\n'
            "[targets.web1]\n"
            f'target_resource_id = "{self.vm}"\nresource_port = 22\nusername = "{self.user}"\n'
            f'ssh_key = "{self.sshd.key_path}"\n' + extra)
        return path


@contextmanager
def vm_behind_bastion(tmp: Path, **sshd_options: Any) -> Iterator[VmSetup]:
    """sshd + emulator with ``web1`` mapped to it (use from a fixture)."""
    from tests.fixtures_sshd import running_sshd

    vm = vm_id("web1")
    with running_sshd(**sshd_options) as sshd, \
            running_emulator({vm: f"127.0.0.1:{sshd.port}"}, state_dir=tmp / "emulator") as emu:
        yield VmSetup(emu=emu, sshd=sshd, tmp=tmp, vm=vm, env=emu.env(tmp))


def _sshd_missing() -> str | None:
    from tests.fixtures_sshd import sshd_missing_reason

    return sshd_missing_reason()


#: Marks a test that needs Debian's openssh-server and openssh-client.
needs_sshd = pytest.mark.skipif(_sshd_missing() is not None, reason=_sshd_missing() or "")


@pytest.fixture(name="setup")
def vm_setup_fixture(tmp_path: Path) -> Iterator[VmSetup]:
    """Fixture ``setup``: :func:`vm_behind_bastion` in the test's ``tmp_path`` (skips when sshd is missing).
    Import it into a test module: ``from tests.cmd_harness import vm_setup_fixture  # noqa: F401``."""
    if _sshd_missing():
        pytest.skip(_sshd_missing() or "")
    with vm_behind_bastion(tmp_path) as vm:
        yield vm


class PtyCapture:
    """A pseudo-terminal whose output is collected on a thread: lets a test see what a user's terminal shows.

    Give ``slave`` to the child as its stderr/stdout; ``text()`` is everything shown so far; ``close()`` ends it.
    """

    def __init__(self) -> None:
        import pty

        self.master, self.slave = pty.openpty()
        self.chunks: list[bytes] = []
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self.master, 65536)
            except OSError:
                return
            if not data:
                return
            self.chunks.append(data)

    def raw(self) -> bytes:
        return b"".join(self.chunks)

    def text(self) -> str:
        return self.raw().decode(errors="replace")

    def close(self) -> None:
        os.close(self.slave)
        self._thread.join(timeout=10)
        os.close(self.master)
