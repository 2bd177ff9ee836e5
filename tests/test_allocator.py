"""glibc malloc tuning (``bastion_fast.allocator``): on by default in CLI processes, and out of the way when the
user configured malloc or opted out. Each case runs in a fresh interpreter: the setting is process-wide."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt is Linux-only")

PROBE = "from bastion_fast.allocator import tune_allocator; print(tune_allocator(), tune_allocator())"


def _tuned(**env: str) -> str:
    clean = {k: v for k, v in os.environ.items()
             if k not in ("BASTION_FAST_MALLOC_TUNING", "GLIBC_TUNABLES", "MALLOC_MMAP_THRESHOLD_",
                          "MALLOC_TRIM_THRESHOLD_")}
    out = subprocess.run([sys.executable, "-c", PROBE], env={**clean, **env}, capture_output=True, text=True,
                         check=True)
    return out.stdout.strip()


def _is_glibc() -> bool:
    import platform

    return platform.libc_ver()[0] == "glibc"


@pytest.mark.skipif(not _is_glibc(), reason="needs glibc")
def test_on_by_default_and_applied_once() -> None:
    assert _tuned() == "True True"


@pytest.mark.parametrize("env", [
    {"BASTION_FAST_MALLOC_TUNING": "0"},
    {"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=1000000"},
    {"MALLOC_MMAP_THRESHOLD_": "65536"},
], ids=["opt-out", "glibc-tunables", "malloc-env"])
def test_users_own_malloc_settings_win(env: dict[str, str]) -> None:
    assert _tuned(**env) == "False False"


@pytest.mark.skipif(not _is_glibc(), reason="needs glibc")
def test_cli_processes_are_tuned() -> None:
    """The tunnel and emulator run through ``bastion_fast.loop.run``, which applies the tuning."""
    code = ("import asyncio, bastion_fast.loop as l, bastion_fast.allocator as a\n"
            "async def main():\n    return a.is_tuned()\n"
            "print(l.run(main()))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={k: v for k, v in os.environ.items() if k != "BASTION_FAST_MALLOC_TUNING"})
    assert out.stdout.strip() == "True"
