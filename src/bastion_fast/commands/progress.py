"""Transfer progress on stderr, driven by the tunnel's own byte counters.

The tunnel knows exactly how many bytes crossed it each way (payload bytes of every connection, live and finished),
so progress needs no cooperation from scp or sftp — their own meters are switched off (``-q``) and ours shows
bytes, rate and ETA with ``rich`` when stderr is a terminal. The counters include SSH's own overhead (a few per
cent); the bar is capped at the file size and the final summary reports the file bytes.

Without a terminal (CI logs, pipes) or with ``--no-progress`` nothing is drawn; the one-line summary is still
printed (or, with ``--output json``, a JSON object on stdout).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["ProgressMeter", "TransferSummary", "format_rate", "format_size", "tunnel_counters"]


def tunnel_counters(tunnel: Any) -> tuple[int, int]:
    """Payload bytes (local → Bastion, Bastion → local) over all connections of a tunnel, live ones included."""
    for names in (("bytes_up", "bytes_down"), ("bytes_stream_to_ws", "bytes_ws_to_stream")):
        if all(hasattr(tunnel, name) for name in names):
            return int(getattr(tunnel, names[0])), int(getattr(tunnel, names[1]))
    listener = getattr(tunnel, "listener", None)
    if listener is None:
        return 0, 0
    up = sum(result.bytes_up for result in listener.results)
    down = sum(result.bytes_down for result in listener.results)
    for session in list(listener.sessions.values()):
        splice = getattr(session, "splice", None)
        if splice is not None:
            up += int(splice.bytes_stream_to_ws)
            down += int(splice.bytes_ws_to_stream)
    return up, down


def format_size(n: float) -> str:
    """Binary units, as file sizes are usually quoted (64.0 MiB)."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def format_rate(nbytes: float, seconds: float) -> str:
    """Decimal MB/s, as network throughput is usually quoted."""
    return f"{nbytes / max(seconds, 1e-9) / 1e6:.1f} MB/s"


@dataclass(frozen=True)
class TransferSummary:
    """What one ``cp`` did."""

    direction: str  # "upload" | "download"
    files: int
    bytes: int
    seconds: float
    wire_bytes: int
    verified: bool | None = None
    resumed: bool = False
    exit_code: int = 0

    @property
    def mb_per_s(self) -> float:
        return self.bytes / max(self.seconds, 1e-9) / 1e6

    def line(self) -> str:
        verb = "uploaded" if self.direction == "upload" else "downloaded"
        what = f"{self.files} file{'s' if self.files != 1 else ''}, " if self.files != 1 else ""
        extra = ""
        if self.verified:
            extra = ", sha256 verified"
        if self.resumed:
            extra += ", resumed"
        return (f"{verb} {what}{format_size(self.bytes)} in {self.seconds:.2f} s "
                f"({format_rate(self.bytes, self.seconds)}){extra}")

    def as_json(self) -> str:
        return json.dumps({
            "event": "done", "direction": self.direction, "files": self.files, "bytes": self.bytes,
            "seconds": round(self.seconds, 6), "mb_per_s": round(self.mb_per_s, 3), "wire_bytes": self.wire_bytes,
            "verified": self.verified, "resumed": self.resumed, "exit_code": self.exit_code,
        }, separators=(",", ":"))


class ProgressMeter:
    """A rich progress bar on stderr fed by polling ``counter()``; a no-op when disabled.

    Use as an async context manager around the transfer; ``total`` may be ``None`` (size unknown: bytes and rate
    only).
    """

    def __init__(self, counter: Callable[[], int], *, total: int | None, label: str, enabled: bool,
                 interval: float = 0.1) -> None:
        self.counter = counter
        self.total = total
        self.label = label
        self.enabled = enabled and sys.stderr.isatty()
        self.interval = interval
        self._task: asyncio.Task[None] | None = None
        self._progress: Any = None
        self._task_id: Any = None
        self.started = time.monotonic()

    async def __aenter__(self) -> ProgressMeter:
        self.started = time.monotonic()
        if self.enabled:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
                TransferSpeedColumn,
            )

            self._progress = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                                      TransferSpeedColumn(), TimeRemainingColumn(),
                                      console=Console(stderr=True), transient=True)
            self._progress.start()
            self._task_id = self._progress.add_task(self.label, total=self.total)
            self._task = asyncio.get_running_loop().create_task(self._poll())
        return self

    def _value(self) -> int:
        value = self.counter()
        return min(value, self.total) if self.total is not None else value

    async def _poll(self) -> None:
        while True:
            self._progress.update(self._task_id, completed=self._value())
            await asyncio.sleep(self.interval)

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._progress is not None:
            self._progress.update(self._task_id, completed=self._value())
            self._progress.stop()
