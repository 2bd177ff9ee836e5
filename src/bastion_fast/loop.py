"""One way to run bastion-fast's event loop: uvloop where it exists, asyncio elsewhere (Windows)."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["LOOP_NAME", "new_event_loop", "run"]

T = TypeVar("T")
log = logging.getLogger("bastion_fast.loop")


def _uvloop_wanted() -> bool:
    return sys.platform != "win32" and os.environ.get("BASTION_FAST_LOOP", "").lower() != "asyncio"


def _loop_name() -> str:
    if _uvloop_wanted():
        try:
            import uvloop  # noqa: F401
        except ImportError:
            return "asyncio"
        return "uvloop"
    return "asyncio"


LOOP_NAME = _loop_name()


def new_event_loop() -> asyncio.AbstractEventLoop:
    """A new loop of the kind named by :data:`LOOP_NAME`."""
    if LOOP_NAME == "uvloop":
        import uvloop

        return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion on a fresh loop; log which loop and data path are in use."""
    from bastion_fast.allocator import tune_allocator
    from bastion_fast.pump import IMPLEMENTATION

    tune_allocator()
    log.debug("event loop: %s, data path: %s", LOOP_NAME, IMPLEMENTATION)
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        return runner.run(coro)
