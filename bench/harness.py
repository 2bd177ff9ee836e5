"""The tunnel benchmark rig: processes, traffic drivers, measurements, gates, table and JSON.

Theory of operation
-------------------
Four kinds of process, never sharing an interpreter, so the CPU charged to a client is that client's alone::

    driver (this process) ──TCP──▶ client under test ──wss──▶ emulator ──TCP──▶ target (bench/targets.py)
                                   (ours / pure / websockets / az-style;  "direct" relays straight to the target)

* :class:`Rig` starts the target and the emulator once (``bastion-fast emulator --default-target
  127.0.0.1:<target>``) and one client process per kind (:func:`client_command`). Every client prints a JSON
  ``ready`` line with its port; :class:`ManagedProcess` reads it and afterwards keeps draining stdout.
* Drivers (:mod:`asyncio` on uvloop for bulk, blocking sockets for latency) speak the target's 17-byte header
  (``pattern.HEADER``): uploads end when the sink's sha256 of what arrived comes back through the tunnel;
  downloads hash what the source sent. Expected digests are computed before the clock starts.
* Each scenario reads the client's CPU time before and after — all threads, user + system: the exact per-thread
  runtimes of ``/proc/<pid>/task/*/sched`` where they account for everything, else ``/proc/<pid>/stat`` ticks
  (threads that exited inside the window, like az-style's per-connection threads) — and its peak RSS
  (``VmHWM``, reset through ``/proc/<pid>/clear_refs`` where allowed, else sampled every 50 ms). The emulator's and the
  target's CPU utilisation are recorded too: a scenario where the emulator is near one full core is flagged
  ``emulator_bound`` — then it measured the emulator, not the client.
* :func:`evaluate_gates` turns one run's numbers into ratio gates (fail the run) and absolute bars (information
  only: they depend on the machine), :func:`format_table` prints, :func:`write_results` keeps JSON for CI.

``BASTION_FAST_BENCH_SCALE`` (default 1) multiplies byte counts and sample counts: 0.0625 turns the concurrent
1 GiB into 64 MiB and 20 000 round trips into 1 250, and a complete run takes about two minutes on a 2-core box.
Single-stream bulk transfers never go below 256 MiB, so CPU-s/GB stays meaningful.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import json
import math
import os
import platform
import select
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
sys.path.insert(0, str(BENCH_DIR))

import pattern  # noqa: E402

__all__ = [
    "KINDS",
    "RESULTS",
    "SCALE",
    "Rig",
    "evaluate_gates",
    "format_table",
    "write_results",
]

KINDS = ("cython", "pure", "websockets", "azstyle", "direct")
"""Clients of one run: ours (Cython), ours pure-Python, websockets-library, az-style, direct relay (ceiling)."""
LABELS = {"cython": "ours (Cython)", "pure": "ours (pure)", "websockets": "websockets lib",
          "azstyle": "az-style", "direct": "direct TCP"}

SCALE = float(os.environ.get("BASTION_FAST_BENCH_SCALE", "1") or "1")
RESULTS_DIR = Path(os.environ.get("BASTION_FAST_BENCH_RESULTS", REPO / "bench-results"))
MB = 1_000_000
GB = 1_000_000_000
PYTHON = sys.executable


def scaled(n: int, minimum: int = 1) -> int:
    return max(minimum, int(n * SCALE))


# ≥ 256 MiB even in quick runs: where per-thread runtimes are missing, CPU time comes in 10 ms ticks
BULK_BYTES = scaled(1 << 30, 256 << 20)
CONCURRENCY = (1, 8, 64, 256)
CONCURRENT_TOTAL = scaled(1 << 30, 1 << 20)
PINGPONG_ROUNDS = scaled(20_000, 500)
PINGPONG_SIZE = 64
PINGPONG_MAX_SECONDS = 60.0 if SCALE >= 1 else 10.0  # a client that takes 100 ms per round trip under load stops early
SETUP_ROUNDS = scaled(200, 30)
COLD_START_ROUNDS = max(3, scaled(10, 3))

RESULTS: dict[str, dict[str, dict[str, Any]]] = {}
"""``RESULTS[scenario][kind] = metrics`` for the current run (filled by :func:`record`)."""


def record(scenario: str, kind: str, metrics: dict[str, Any]) -> dict[str, Any]:
    RESULTS.setdefault(scenario, {})[kind] = metrics
    return metrics


# ---------------------------------------------------------------------------------------------------------------
# processes
# ---------------------------------------------------------------------------------------------------------------


class ProcessFailed(RuntimeError):
    pass


class ManagedProcess:
    """A child process with a JSON readiness line on stdout, stderr kept in a log file, CPU and RSS probes."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str] | None = None,
                 log_dir: Path | None = None) -> None:
        self.name = name
        self.argv = argv
        self.env = {**os.environ, **(env or {})}
        self.log_path = (log_dir or Path(tempfile.gettempdir())) / f"{name}.stderr.log"
        self.popen: subprocess.Popen[bytes] | None = None
        self.ready: dict[str, Any] | None = None
        self.spawned_at = 0.0
        self.ready_at = 0.0
        self.lines: list[dict[str, Any]] = []
        self._ready_event = threading.Event()
        self._reader: threading.Thread | None = None
        self._ps: psutil.Process | None = None
        self._hwm_resettable = True
        self._sampled_peak = 0

    # lifecycle -------------------------------------------------------------------------------------------------
    def start(self, timeout: float = 30.0) -> dict[str, Any]:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("wb")
        self.spawned_at = time.perf_counter()
        self.popen = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log,
                                      env=self.env, cwd=str(REPO), start_new_session=True)
        log.close()
        self._ps = psutil.Process(self.popen.pid)
        self._reader = threading.Thread(target=self._read_stdout, name=f"{self.name}-stdout", daemon=True)
        self._reader.start()
        if not self._ready_event.wait(timeout) or self.ready is None:
            code = self.popen.poll()
            self.stop()
            raise ProcessFailed(f"{self.name} did not become ready in {timeout:.0f} s (exit {code}); "
                                f"stderr: {self.stderr_tail()}")
        return self.ready

    def _read_stdout(self) -> None:
        assert self.popen is not None and self.popen.stdout is not None
        for raw in self.popen.stdout:
            now = time.perf_counter()
            try:
                event = json.loads(raw)
            except ValueError:
                continue
            if not isinstance(event, dict):
                continue
            if self.ready is None and (event.get("event") == "ready" or "arm_endpoint" in event):
                self.ready, self.ready_at = event, now
                self._ready_event.set()
            elif len(self.lines) < 100_000:
                self.lines.append(event)
        self._ready_event.set()

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    @property
    def port(self) -> int:
        assert self.ready is not None
        return int(self.ready["port"])

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def stop(self, sig: int = signal.SIGINT, timeout: float = 15.0) -> int | None:
        """Ask politely (SIGINT: our tunnel deletes its tokens), then SIGKILL the whole group."""
        if self.popen is None:
            return None
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(sig)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(5)
        if self._reader is not None:
            self._reader.join(5)
        if self.popen.stdout is not None:
            self.popen.stdout.close()
        return self.popen.returncode

    def stderr_tail(self, limit: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-limit:]
        except OSError:
            return ""

    # probes ----------------------------------------------------------------------------------------------------
    def cpu_seconds(self) -> float:
        """User + system CPU of the process (all threads, dead ones too), from /proc/<pid>/stat (10 ms ticks)."""
        assert self._ps is not None
        t = self._ps.cpu_times()
        return float(t.user + t.system)

    def thread_runtimes(self) -> dict[int, float]:
        """Per-thread CPU seconds with sub-ms precision (``se.sum_exec_runtime`` of /proc/<pid>/task/*/sched);
        empty where the kernel does not offer it. Threads that already exited are not included."""
        out: dict[int, float] = {}
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{self.pid}/task").iterdir():
                with contextlib.suppress(OSError, ValueError, IndexError):
                    for line in (task / "sched").read_text().splitlines():
                        if line.startswith("se.sum_exec_runtime"):
                            out[int(task.name)] = float(line.split(":")[1]) / 1000.0
                            break
        return out

    def rss(self) -> int:
        assert self._ps is not None
        rss = int(self._ps.memory_info().rss)
        self._sampled_peak = max(self._sampled_peak, rss)
        return rss

    def reset_peak_rss(self) -> None:
        """Reset VmHWM (Linux ``clear_refs`` 5) so the next :meth:`peak_rss` covers one scenario only."""
        self._sampled_peak = 0
        if self._hwm_resettable:
            try:
                Path(f"/proc/{self.pid}/clear_refs").write_text("5")
            except OSError:
                self._hwm_resettable = False
        self.rss()

    def peak_rss(self) -> int:
        """Peak RSS since :meth:`reset_peak_rss`: VmHWM when it could be reset, else the sampled maximum."""
        current = self.rss()
        if self._hwm_resettable:
            with contextlib.suppress(OSError, ValueError):
                for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        return max(int(line.split()[1]) * 1024, current)
        return self._sampled_peak


class CpuWindow:
    """CPU seconds of several processes over one interval, plus RSS sampling of the client every 50 ms."""

    def __init__(self, client: ManagedProcess, others: dict[str, ManagedProcess]) -> None:
        self.client = client
        self.others = others
        self.wall = 0.0
        self.client_cpu = 0.0
        self.other_cpu: dict[str, float] = {}
        self._stop = threading.Event()

    def __enter__(self) -> CpuWindow:
        self.client.reset_peak_rss()
        self._threads0 = self.client.thread_runtimes()
        self._c0 = self.client.cpu_seconds()
        self._o0 = {k: p.cpu_seconds() for k, p in self.others.items() if p.alive()}
        self._t0 = time.perf_counter()
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.05):
            with contextlib.suppress(psutil.Error, AssertionError):
                self.client.rss()

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self._t0
        self._stop.set()
        self._sampler.join()
        ticks = self.client.cpu_seconds() - self._c0
        threads1 = self.client.thread_runtimes()
        precise = sum(t - self._threads0.get(tid, 0.0) for tid, t in threads1.items())
        # /proc/<pid>/stat counts 10 ms ticks (±20 ms per window, too coarse for a fast client on a short run);
        # the per-thread runtimes are exact but lose threads that exited inside the window (az-style's
        # per-connection threads). Use the exact sum unless the tick count shows that CPU went missing.
        self.client_cpu = precise if threads1 and ticks <= precise + 0.025 else ticks
        self.cpu_source = "sched" if self.client_cpu == precise and threads1 else "ticks"
        self.other_cpu = {k: p.cpu_seconds() - self._o0[k] for k, p in self.others.items() if k in self._o0}
        self.peak_rss = self.client.peak_rss()

    def utilisation(self) -> dict[str, float]:
        return {k: round(v / self.wall, 3) for k, v in self.other_cpu.items()} if self.wall else {}


def _bastion_fast_argv() -> list[str]:
    script = Path(PYTHON).with_name("bastion-fast")
    return [str(script)] if script.exists() else [PYTHON, "-m", "bastion_fast"]


def target_resource_id(info: dict[str, Any]) -> str:
    return (f"/subscriptions/{info['subscription']}/resourceGroups/{info['resource_group']}"
            "/providers/Microsoft.Compute/virtualMachines/bench-target")


RESOURCE_PORT = 22


def client_command(kind: str, info: dict[str, Any], target_port: int, *, cache_dir: Path | None = None,
                   discovery_cache: bool = True) -> tuple[list[str], dict[str, str]]:
    """argv and extra environment for one client kind, listening on a free port and printing a ready line.

    Ours keep their discovery cache in ``cache_dir`` (never the user's); ``discovery_cache=False`` passes
    ``--no-discovery-cache`` (every start asks ARM through azure-mgmt-network)."""
    token_env = {"BASTION_FAST_TOKEN": str(info["token"])}
    if kind in ("cython", "pure"):
        argv = [*_bastion_fast_argv(), "tunnel", "-n", str(info["bastion"]), "-g", str(info["resource_group"]),
                "--subscription", str(info["subscription"]),
                "--target-resource-id", target_resource_id(info), "--resource-port", str(RESOURCE_PORT),
                "--port", "0", "--output", "json", "--arm-endpoint", str(info["arm_endpoint"]),
                "--ca-bundle", str(info["ca_file"]), "--auth", "static"]
        if not discovery_cache:
            argv.append("--no-discovery-cache")
        env = dict(token_env)
        if cache_dir is not None:
            env["BASTION_FAST_CACHE_DIR"] = str(cache_dir)
        env["BASTION_FAST_NO_EXTENSIONS"] = "1" if kind == "pure" else "0"
        if kind == "cython":
            env["BASTION_FAST_REQUIRE_EXTENSION"] = "1"
        return argv, env
    if kind in ("websockets", "azstyle"):
        script = BENCH_DIR / "clients" / ("wsclient.py" if kind == "websockets" else "azstyle.py")
        argv = [PYTHON, str(script), "--endpoint", str(info["dns_name"]), "--ca-file", str(info["ca_file"]),
                "--target-resource-id", target_resource_id(info), "--resource-port", str(RESOURCE_PORT),
                "--port", "0"]
        return argv, token_env
    if kind == "direct":
        return [PYTHON, str(BENCH_DIR / "clients" / "direct.py"), "--target", f"127.0.0.1:{target_port}",
                "--port", "0"], {}
    raise ValueError(f"unknown client kind {kind!r}")


def emulator_command(target_port: int, state_dir: Path) -> list[str]:
    """``bastion-fast emulator`` bridged to our target; ``BASTION_FAST_BENCH_EMULATOR_CMD`` overrides it
    (a command line where ``{target}`` and ``{state_dir}`` are substituted), e.g. to bench another server."""
    override = os.environ.get("BASTION_FAST_BENCH_EMULATOR_CMD")
    target = f"127.0.0.1:{target_port}"
    if override:
        return [part.format(target=target, state_dir=state_dir) for part in shlex.split(override)]
    return [*_bastion_fast_argv(), "emulator", "--port", "0", "--state-dir", str(state_dir),
            "--default-target", target]


class Rig:
    """Target + emulator for a whole run; client processes on demand. A context manager that stops everything."""

    def __init__(self, log_dir: Path | None = None) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="bastion-bench-")
        self.cache_dir = Path(self._tmp.name) / "cache"  # our clients' discovery cache
        self.log_dir = log_dir or Path(os.environ.get("BASTION_FAST_BENCH_LOGS", RESULTS_DIR / "logs"))
        self.target = ManagedProcess("target", [PYTHON, str(BENCH_DIR / "targets.py"), "serve"],
                                     log_dir=self.log_dir)
        self.emulator: ManagedProcess | None = None
        self.info: dict[str, Any] = {}
        self.clients: dict[str, ManagedProcess] = {}

    def __enter__(self) -> Rig:
        try:
            self.target.start()
            self.emulator = ManagedProcess(
                "emulator", emulator_command(self.target.port, Path(self._tmp.name) / "emulator"),
                log_dir=self.log_dir)
            self.info = self.emulator.start(timeout=60)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for proc in list(self.clients.values()):
            proc.stop()
        self.clients.clear()
        if self.emulator is not None:
            self.emulator.stop(signal.SIGTERM)
        self.target.stop(signal.SIGTERM)
        self._tmp.cleanup()

    @property
    def target_port(self) -> int:
        return self.target.port

    def client(self, kind: str) -> ManagedProcess:
        """The (running) client process of ``kind``; started on first use, restarted if it died."""
        proc = self.clients.get(kind)
        if proc is not None and proc.alive():
            return proc
        argv, env = client_command(kind, self.info, self.target_port, cache_dir=self.cache_dir)
        first_run_rss = None
        if kind in ("cython", "pure") and "idle" not in RESULTS.get("idle", {}).get(kind, {}):
            # A user's first tunnel to a Bastion discovers it through azure-mgmt-network (~45 MB of imports that
            # stay); later starts are answered by the discovery cache. Measure that first run's idle RSS, then run
            # the scenarios on a cached start, the common case of a long-lived tunnel — both are in the table.
            first_run_rss = self._idle_rss(ManagedProcess(f"first-run-{kind}", [*argv, "--no-discovery-cache"],
                                                          env, log_dir=self.log_dir), stop=True)
            if not any(self.cache_dir.rglob("*")):  # fill the discovery cache (a user's first run does it)
                self._idle_rss(ManagedProcess(f"fill-cache-{kind}", argv, env, log_dir=self.log_dir), stop=True)
        proc = ManagedProcess(f"client-{kind}", argv, env, log_dir=self.log_dir)
        idle = self._idle_rss(proc, stop=False)
        if "idle" not in RESULTS.get("idle", {}).get(kind, {}):
            metrics: dict[str, Any] = {"idle": True, "rss_mb": round(idle / MB, 1)}
            if first_run_rss is not None:
                metrics["first_run_rss_mb"] = round(first_run_rss / MB, 1)
            record("idle", kind, metrics)
        self.clients[kind] = proc
        return proc

    @staticmethod
    def _idle_rss(proc: ManagedProcess, *, stop: bool) -> int:
        proc.start(timeout=60)
        try:
            time.sleep(0.3)  # let the loop settle after its ready line
            return proc.rss()
        finally:
            if stop:
                proc.stop()

    def stop_client(self, kind: str) -> None:
        proc = self.clients.pop(kind, None)
        if proc is not None:
            proc.stop()

    def ledger(self) -> dict[str, Any]:
        """The emulator's session ledger (``GET /_emulator/sessions``): counts and the ids of leaked sessions."""
        import ssl
        import urllib.request

        ctx = ssl.create_default_context(cafile=str(self.info["ca_file"]))
        url = f"https://{self.info['dns_name']}/_emulator/sessions"
        with urllib.request.urlopen(url, context=ctx, timeout=30) as reply:
            data: dict[str, Any] = json.loads(reply.read())
        return data

    def servers(self) -> dict[str, ManagedProcess]:
        out = {"target": self.target}
        if self.emulator is not None:
            out["emulator"] = self.emulator
        return out

    def window(self, client: ManagedProcess, kind: str) -> CpuWindow:
        others = self.servers()
        if kind == "direct":
            others = {"target": self.target}
        return CpuWindow(client, others)


# ---------------------------------------------------------------------------------------------------------------
# drivers
# ---------------------------------------------------------------------------------------------------------------


class VerificationError(AssertionError):
    pass


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()  # type: ignore[no-any-return]


def run_async(coro: Any, timeout: float) -> Any:
    async def bounded() -> Any:
        return await asyncio.wait_for(coro, timeout)

    with asyncio.Runner(loop_factory=_new_loop) as runner:
        return runner.run(bounded())


@dataclass
class Transfer:
    nbytes: int
    seconds: float
    start: float
    end: float


async def upload(port: int, length: int, seed: int) -> Transfer:
    """Send ``(length, seed)`` to the sink through ``port``; done when the sink's sha256 comes back and matches."""
    expected = pattern.expected_digest(length, seed)
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
    try:
        t0 = time.perf_counter()
        writer.write(pattern.header(pattern.MODE_SINK, length, seed))
        for piece in pattern.chunks(length, seed):
            writer.write(piece)
            await writer.drain()
        digest = await reader.readexactly(32)
        t1 = time.perf_counter()
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    if digest != expected:
        raise VerificationError(f"upload of {length} bytes (seed {seed}): sha256 mismatch at the sink")
    return Transfer(length, t1 - t0, t0, t1)


async def download(port: int, length: int, seed: int) -> Transfer:
    """Ask the source for ``(length, seed)`` through ``port``; hash it as it arrives and compare."""
    expected = pattern.expected_digest(length, seed)
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
    h = hashlib.sha256()
    got = 0
    try:
        t0 = time.perf_counter()
        writer.write(pattern.header(pattern.MODE_SOURCE, length, seed))
        while got < length:
            data = await reader.read(1 << 20)
            if not data:
                raise VerificationError(f"download: EOF after {got} of {length} bytes")
            h.update(data)
            got += len(data)
        t1 = time.perf_counter()
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    if got != length or h.digest() != expected:
        raise VerificationError(f"download of {length} bytes (seed {seed}): {got} bytes, sha256 mismatch")
    return Transfer(length, t1 - t0, t0, t1)


async def concurrent_uploads(port: int, streams: int, per_stream: int) -> tuple[list[Transfer], list[str]]:
    """``streams`` uploads at once. Connection-level failures (reset, EOF) are returned as a list of reasons — a
    client that cannot take the burst is a result; corrupted data (:class:`VerificationError`) is raised."""
    outcomes = await asyncio.gather(*(upload(port, per_stream, 1000 + i) for i in range(streams)),
                                    return_exceptions=True)
    done: list[Transfer] = []
    failed: list[str] = []
    for outcome in outcomes:
        if isinstance(outcome, Transfer):
            done.append(outcome)
        elif isinstance(outcome, OSError | asyncio.IncompleteReadError):
            failed.append(type(outcome).__name__)
        else:
            raise outcome
    if not done:
        raise VerificationError(f"all {streams} streams failed: {sorted(set(failed))}")
    return done, failed


def pingpong(port: int, rounds: int, size: int = PINGPONG_SIZE, warmup: int = 200,
             max_seconds: float = PINGPONG_MAX_SECONDS) -> list[int]:
    """``rounds`` round trips of ``size`` bytes over one echo connection (blocking socket); nanoseconds each.
    Stops early (fewer samples) once ``max_seconds`` have passed."""
    payload = os.urandom(size)
    buf = bytearray(size)
    view = memoryview(buf)
    samples: list[int] = []
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(pattern.header(pattern.MODE_ECHO))
        clock = time.perf_counter_ns
        warm_until = clock() + 2_000_000_000  # warm-up: `warmup` round trips or 2 s, whichever ends first
        deadline = None
        for i in itertools.count():
            t0 = clock()
            sock.sendall(payload)
            got = 0
            while got < size:
                n = sock.recv_into(view[got:])
                if not n:
                    raise VerificationError(f"echo connection closed after {i} round trips")
                got += n
            t1 = clock()
            if buf != payload:
                raise VerificationError("echo returned different bytes")
            if deadline is None:
                if i + 1 < warmup and t1 < warm_until:
                    continue
                deadline = t1 + int(max_seconds * 1e9)
                continue
            samples.append(t1 - t0)
            if len(samples) >= rounds or t1 > deadline:
                break
    return samples


class EchoConnection:
    """One echo connection for whole-message round trips of any size, without deadlocking on big messages
    (send and receive interleave through a selector, so a 1 MiB message never fills both directions' buffers)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.sendall(pattern.header(pattern.MODE_ECHO))
        self.samples: list[int] = []

    def round_trip(self, payload: bytes) -> None:
        size = len(payload)
        buf = bytearray(size)
        view = memoryview(buf)
        out = memoryview(payload)
        sent = got = 0
        t0 = time.perf_counter_ns()
        if size <= 65536:
            self.sock.sendall(payload)
            sent = size
        else:
            self.sock.setblocking(False)
        try:
            while got < size:
                if sent < size:
                    _, writable, _ = select.select([], [self.sock], [], 0)
                    if writable:
                        with contextlib.suppress(BlockingIOError):
                            sent += self.sock.send(out[sent:sent + 262144])
                    readable, _, _ = select.select([self.sock], [], [], 0 if sent < size else 30)
                    if not readable:
                        continue
                elif not self.sock.getblocking():
                    self.sock.setblocking(True)
                try:
                    n = self.sock.recv_into(view[got:])
                except BlockingIOError:
                    continue
                if not n:
                    raise VerificationError("echo connection closed mid-message")
                got += n
        finally:
            self.sock.setblocking(True)
        self.samples.append(time.perf_counter_ns() - t0)
        if buf != payload:
            raise VerificationError(f"echo of a {size}-byte message returned different bytes")

    def close(self) -> None:
        self.sock.close()


def setup_latency(port: int, rounds: int) -> list[int]:
    """Connect → first echoed byte, ``rounds`` times in a row (nanoseconds); each connection is a new session."""
    samples: list[int] = []
    first = pattern.header(pattern.MODE_ECHO) + b"!"
    for _ in range(rounds):
        t0 = time.perf_counter_ns()
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.sendall(first)
            if sock.recv(1) != b"!":
                raise VerificationError("setup probe: no echo")
            samples.append(time.perf_counter_ns() - t0)
    return samples


# ---------------------------------------------------------------------------------------------------------------
# scenarios (each returns the metrics it records)
# ---------------------------------------------------------------------------------------------------------------


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return math.nan
    k = min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))
    return ordered[k]


def _transfer_timeout(nbytes: int) -> float:
    return 120 + nbytes / (2 * MB)  # generous: 2 MB/s is far below any client here


def _flag_bound(metrics: dict[str, Any], w: CpuWindow, nbytes: int) -> None:
    """Record what the rig's other processes spent: a run where the emulator is near one full core measured it."""
    util = w.utilisation()
    metrics["server_cpu_util"] = util
    metrics["server_cpu_s_per_gb"] = {k: round(v / (nbytes / GB), 3) for k, v in w.other_cpu.items()}
    metrics["emulator_bound"] = util.get("emulator", 0.0) >= 0.9


def scenario_bulk(rig: Rig, kind: str, direction: str, nbytes: int = BULK_BYTES) -> dict[str, Any]:
    client = rig.client(kind)
    driver = upload if direction == "upload" else download
    pattern.expected_digest(nbytes, 1)  # before the clock
    run_async(driver(client.port, scaled(4 << 20, 1 << 20), 2), _transfer_timeout(nbytes))  # warm-up
    with rig.window(client, kind) as w:
        t = run_async(driver(client.port, nbytes, 1), _transfer_timeout(nbytes))
    metrics = {
        "bytes": nbytes,
        "seconds": round(t.seconds, 4),
        "mb_s": round(nbytes / t.seconds / MB, 1),
        "cpu_s": round(w.client_cpu, 3),
        "cpu_s_per_gb": round(w.client_cpu / (nbytes / GB), 3),
        "cpu_source": w.cpu_source,
        "peak_rss_mb": round(w.peak_rss / MB, 1),
    }
    _flag_bound(metrics, w, nbytes)
    return record(direction, kind, metrics)


def scenario_concurrent(rig: Rig, kind: str, streams: int) -> dict[str, Any]:
    client = rig.client(kind)
    per_stream = max(64 * 1024, CONCURRENT_TOTAL // streams)
    for i in range(streams):
        pattern.expected_digest(per_stream, 1000 + i)
    total = per_stream * streams
    with rig.window(client, kind) as w:
        transfers, failed = run_async(concurrent_uploads(client.port, streams, per_stream), _transfer_timeout(total))
    start = min(t.start for t in transfers)
    end = max(t.end for t in transfers)
    rates = [t.nbytes / t.seconds / MB for t in transfers]
    moved = sum(t.nbytes for t in transfers)
    metrics = {
        "streams": streams,
        "failed_streams": len(failed),
        "failures": sorted(set(failed)),
        "bytes": moved,
        "seconds": round(end - start, 4),
        "aggregate_mb_s": round(moved / (end - start) / MB, 1),
        "stream_min_mb_s": round(min(rates), 2),
        "stream_max_mb_s": round(max(rates), 2),
        "cpu_s_per_gb": round(w.client_cpu / (moved / GB), 3),
        "cpu_source": w.cpu_source,
        "peak_rss_mb": round(w.peak_rss / MB, 1),
        "rss_after_mb": round(client.rss() / MB, 1),
    }
    _flag_bound(metrics, w, moved)
    return record(f"concurrent_{streams}", kind, metrics)


def _latency_metrics(samples: list[int], baseline: dict[str, Any] | None) -> dict[str, Any]:
    us = [s / 1000 for s in samples]
    metrics: dict[str, Any] = {
        "rounds": len(us),
        "p50_us": round(statistics.median(us), 1),
        "p99_us": round(_pct(us, 99), 1),
        "max_us": round(max(us), 1),
    }
    if baseline:
        metrics["added_p50_us"] = round(metrics["p50_us"] - baseline["p50_us"], 1)
        metrics["added_p99_us"] = round(metrics["p99_us"] - baseline["p99_us"], 1)
    return metrics


def scenario_pingpong_baseline(rig: Rig) -> dict[str, Any]:
    """Direct TCP to the target's echo, no relay at all: what "added latency" is measured against.

    Also the floor of the client + emulator path: two plain TCP relays (``clients/direct.py`` → ``direct.py`` →
    target) put the same two extra processes in the round trip without TLS or WebSocket; what they add is what the
    machine charges for two more process hand-offs, before any work."""
    metrics = _latency_metrics(pingpong(rig.target_port, PINGPONG_ROUNDS), None)
    relays: list[ManagedProcess] = []
    try:
        port = rig.target_port
        for i in range(2):
            relay = ManagedProcess(f"relay-{i}", [PYTHON, str(BENCH_DIR / "clients" / "direct.py"),
                                                  "--target", f"127.0.0.1:{port}", "--port", "0"],
                                   log_dir=rig.log_dir)
            relay.start()
            relays.append(relay)
            port = relay.port
        chain = _latency_metrics(pingpong(port, PINGPONG_ROUNDS), metrics)
        metrics["two_relays_added_p50_us"] = chain["added_p50_us"]
        metrics["two_relays_added_p99_us"] = chain["added_p99_us"]
    finally:
        for relay in relays:
            relay.stop(signal.SIGTERM)
    return record("pingpong_idle", "tcp_baseline", metrics)


def scenario_pingpong(rig: Rig, kind: str, loaded: bool) -> dict[str, Any]:
    client = rig.client(kind)
    baseline = RESULTS.get("pingpong_idle", {}).get("tcp_baseline") or scenario_pingpong_baseline(rig)
    blaster: ManagedProcess | None = None
    if loaded:
        blaster = ManagedProcess(f"blast-{kind}", [PYTHON, str(BENCH_DIR / "targets.py"), "blast",
                                                    "--port", str(client.port)], log_dir=rig.log_dir)
        blaster.start()
        time.sleep(0.5)  # let the bulk stream reach full speed
    try:
        samples = pingpong(client.port, PINGPONG_ROUNDS)
    finally:
        if blaster is not None:
            blaster.stop(signal.SIGTERM)
    metrics = _latency_metrics(samples, baseline)
    if blaster is not None and blaster.lines:
        done = blaster.lines[-1]
        metrics["background_mb_s"] = round(done.get("bytes", 0) / max(1e-9, done.get("seconds", 0)) / MB, 1)
    return record("pingpong_loaded" if loaded else "pingpong_idle", kind, metrics)


def ledger_mark(rig: Rig) -> set[str]:
    """Ids of the sessions the emulator knows now (what a later :func:`scenario_sessions` compares against)."""
    try:
        return {str(sess["id"]) for sess in rig.ledger().get("sessions", [])}
    except (OSError, ValueError, KeyError):
        return set()


def scenario_sessions(rig: Rig, kind: str, before: set[str], settle: float = 10.0) -> dict[str, Any]:
    """Stop the client (SIGINT, like Ctrl+C) and count what its sessions left behind in the emulator's ledger:
    sessions created since ``before`` that are still live or ended without their token being deleted."""
    rig.stop_client(kind)
    deadline = time.monotonic() + settle
    while True:
        snap = rig.ledger()
        mine = [sess for sess in snap.get("sessions", []) if str(sess["id"]) not in before]
        live = [sess for sess in mine if sess.get("state") == "live"]
        if not live or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    leaked = [sess for sess in mine if sess.get("leaked")]
    deleted = [sess for sess in mine if sess.get("state") == "deleted"]
    metrics = {"sessions": len(mine), "deleted": len(deleted), "leaked": len(leaked), "live_after_exit": len(live)}
    return record("sessions", kind, metrics)


ECHO_SIZES = (64, 16 * 1024, 1 << 20)
ECHO_ROUNDS = {64: scaled(2000, 200), 16 * 1024: scaled(1000, 100), 1 << 20: scaled(100, 20)}


def record_echo(kind: str, size: int, samples: list[int]) -> dict[str, Any]:
    """Whole-message echo through the tunnel (STYLE rule 14's 64 B / 16 KiB / 1 MiB groups): p50 and MB/s."""
    us = [x / 1000 for x in samples]
    p50 = statistics.median(us)
    metrics = {"rounds": len(us), "size": size, "p50_us": round(p50, 1), "p99_us": round(_pct(us, 99), 1),
               "mb_s": round(2 * size / p50, 1)}  # bytes both ways per round trip; µs → MB/s
    return record(f"echo_{size}", kind, metrics)


def scenario_setup(rig: Rig, kind: str) -> dict[str, Any]:
    client = rig.client(kind)
    setup_latency(client.port, 3)  # warm-up (imports, TLS session state, first DELETE)
    ms = [s / 1e6 for s in setup_latency(client.port, SETUP_ROUNDS)]
    metrics = {"rounds": len(ms), "p50_ms": round(statistics.median(ms), 2), "p99_ms": round(_pct(ms, 99), 2)}
    return record("setup", kind, metrics)


def scenario_cold_start(rig: Rig, kind: str, *, cached: bool = False) -> dict[str, Any]:
    """Spawn → ready line of a fresh client process. Ours (``bastion-fast tunnel``): ``cached=False`` discovers
    the Bastion through azure-mgmt-network and ARM on every spawn (``--no-discovery-cache``); ``cached=True``
    measures the common repeated start, answered by the discovery cache (filled by the first, unmeasured spawn)
    — recorded separately as ``cold_start_cached``."""
    times = []
    cache_dir = rig.cache_dir / f"cold-{kind}-{'cached' if cached else 'arm'}"
    for i in range(COLD_START_ROUNDS + 1):
        argv, env = client_command(kind, rig.info, rig.target_port, cache_dir=cache_dir, discovery_cache=cached)
        proc = ManagedProcess(f"cold-{kind}-{i}", argv, env, log_dir=rig.log_dir)
        try:
            proc.start(timeout=60)
            if i:  # the first spawn warms the page cache and .pyc files (and, if cached, the discovery cache)
                times.append(proc.ready_at - proc.spawned_at)
        finally:
            proc.stop()
    metrics = {"rounds": len(times), "p50_s": round(statistics.median(times), 3), "max_s": round(max(times), 3),
               "loadavg_1min": round(os.getloadavg()[0], 2),
               "pyc_written": not os.environ.get("PYTHONDONTWRITEBYTECODE")}  # else every spawn compiles our .py
    return record("cold_start_cached" if cached else "cold_start", kind, metrics)


# ---------------------------------------------------------------------------------------------------------------
# gates, table, JSON
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class Gate:
    name: str
    kind: str  # "ratio" (fails the run) or "bar" (information)
    value: float | None
    limit: float
    op: str  # ">=" or "<="
    detail: str = ""
    passed: bool | None = field(default=None)

    def evaluate(self) -> Gate:
        if self.value is None or (isinstance(self.value, float) and math.isnan(self.value)):
            self.passed = None
        else:
            self.passed = self.value >= self.limit if self.op == ">=" else self.value <= self.limit
        return self

    def line(self) -> str:
        status = {True: "PASS", False: "FAIL", None: "n/a "}[self.passed]
        tag = "gate" if self.kind == "ratio" else "info"
        value = "missing" if self.value is None else f"{self.value:.3g}"
        return f"[{status}] {tag:4} {self.name}: {value} {self.op} {self.limit:g}  {self.detail}"


def _get(scenario: str, kind: str, key: str) -> float | None:
    value = RESULTS.get(scenario, {}).get(kind, {}).get(key)
    return float(value) if isinstance(value, int | float) else None


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


def _floor_note(which: str) -> str:
    floor = _get("pingpong_idle", "tcp_baseline", f"two_relays_added_{which}_us")
    return "" if floor is None else f"(two plain TCP relays add {floor:g} µs on this box)"


def evaluate_gates() -> list[Gate]:
    """Ratio gates of issue 4 from this run's numbers (fail the run) and absolute bars (printed as info)."""
    ours_mb = _get("upload", "cython", "mb_s")
    ours_cpu = _get("upload", "cython", "cpu_s_per_gb")
    az_mb = _get("upload", "azstyle", "mb_s")
    az_cpu = _get("upload", "azstyle", "cpu_s_per_gb")
    ws_mb = _get("upload", "websockets", "mb_s")
    ceiling = _ratio(_get("upload", "direct", "mb_s"), az_mb)
    ceiling_note = f"; direct TCP relay / az-style = {ceiling:.1f}x on this box" if ceiling else ""
    ws_ceiling = _ratio(_get("upload", "direct", "mb_s"), ws_mb)
    ws_note = f"; direct TCP relay / websockets lib = {ws_ceiling:.1f}x on this box" if ws_ceiling else ""
    gates = [
        Gate("upload MB/s: ours / az-style", "ratio", _ratio(ours_mb, az_mb), 10, ">=",
             f"({ours_mb} vs {az_mb} MB/s{ceiling_note})"),
        Gate("upload CPU-s/GB: ours / az-style", "ratio", _ratio(ours_cpu, az_cpu), 1 / 8, "<=",
             f"({ours_cpu} vs {az_cpu} CPU-s/GB)"),
        Gate("upload MB/s: ours / websockets lib", "ratio", _ratio(ours_mb, ws_mb), 2, ">=",
             f"({ours_mb} vs {ws_mb} MB/s{ws_note})"),
        Gate("upload CPU-s/GB over wss (ours)", "bar", ours_cpu, 1.0, "<="),
        Gate("ping-pong added p50 µs, idle (ours)", "bar", _get("pingpong_idle", "cython", "added_p50_us"), 25, "<=",
             _floor_note("p50")),
        Gate("ping-pong added p99 µs, idle (ours)", "bar", _get("pingpong_idle", "cython", "added_p99_us"), 100,
             "<=", _floor_note("p99")),
        Gate("ping-pong max sample ms, idle (ours)", "bar",
             None if _get("pingpong_idle", "cython", "max_us") is None
             else (_get("pingpong_idle", "cython", "max_us") or 0) / 1000, 30, "<="),
        Gate("ping-pong max sample ms, loaded (ours)", "bar",
             None if _get("pingpong_loaded", "cython", "max_us") is None
             else (_get("pingpong_loaded", "cython", "max_us") or 0) / 1000, 30, "<="),
        Gate("256 streams peak RSS MB (ours)", "bar", _get("concurrent_256", "cython", "peak_rss_mb"), 80, "<=",
             "(discovery cached; a first run adds the SDK: see 'idle RSS' rows)"),
        Gate("cold start to ready s (ours)", "bar", _get("cold_start", "cython", "p50_s"), 0.4, "<=",
             "(ARM discovery through azure-mgmt-network)"),
        Gate("cold start to ready s, discovery cached (ours)", "bar", _get("cold_start_cached", "cython", "p50_s"),
             0.4, "<="),
    ]
    return [g.evaluate() for g in gates]


def failed_ratio_gates(gates: list[Gate]) -> list[Gate]:
    return [g for g in gates if g.kind == "ratio" and g.passed is False]


def _fmt(value: Any, spec: str = ".1f") -> str:
    if value is None:
        return "-"
    if isinstance(value, int | float):
        return format(value, spec)
    return str(value)


def format_table() -> str:
    """The human table: one column per client, one row per measured quantity (absent cells are "-")."""
    kinds = [k for k in KINDS if any(k in per for per in RESULTS.values())]
    rows: list[tuple[str, str, str, str]] = [
        ("idle RSS MB (discovery cached)", "idle", "rss_mb", ".1f"),
        ("idle RSS MB, first run (ARM via SDK)", "idle", "first_run_rss_mb", ".1f"),
        ("upload 1 stream MB/s", "upload", "mb_s", ".0f"),
        ("upload CPU-s/GB", "upload", "cpu_s_per_gb", ".2f"),
        ("upload peak RSS MB", "upload", "peak_rss_mb", ".1f"),
        ("download 1 stream MB/s", "download", "mb_s", ".0f"),
        ("download CPU-s/GB", "download", "cpu_s_per_gb", ".2f"),
    ]
    for n in CONCURRENCY:
        rows += [
            (f"{n} streams aggregate MB/s", f"concurrent_{n}", "aggregate_mb_s", ".0f"),
            (f"{n} streams per-stream min MB/s", f"concurrent_{n}", "stream_min_mb_s", ".1f"),
            (f"{n} streams per-stream max MB/s", f"concurrent_{n}", "stream_max_mb_s", ".1f"),
            (f"{n} streams peak RSS MB", f"concurrent_{n}", "peak_rss_mb", ".1f"),
            (f"{n} streams failed (reset/EOF)", f"concurrent_{n}", "failed_streams", "d"),
        ]
    rows += [
        ("ping-pong idle p50 µs", "pingpong_idle", "p50_us", ".0f"),
        ("ping-pong idle p99 µs", "pingpong_idle", "p99_us", ".0f"),
        ("  added over TCP p50 µs", "pingpong_idle", "added_p50_us", ".0f"),
        ("  added over TCP p99 µs", "pingpong_idle", "added_p99_us", ".0f"),
        ("  max µs", "pingpong_idle", "max_us", ".0f"),
        ("ping-pong loaded p50 µs", "pingpong_loaded", "p50_us", ".0f"),
        ("ping-pong loaded p99 µs", "pingpong_loaded", "p99_us", ".0f"),
        ("  max µs", "pingpong_loaded", "max_us", ".0f"),
        ("  round trips done", "pingpong_loaded", "rounds", ".0f"),
        ("  background upload MB/s", "pingpong_loaded", "background_mb_s", ".0f"),
        ("echo 64 B p50 µs", "echo_64", "p50_us", ".0f"),
        ("echo 16 KiB p50 µs", "echo_16384", "p50_us", ".0f"),
        ("echo 1 MiB p50 µs", "echo_1048576", "p50_us", ".0f"),
        ("echo 1 MiB MB/s (both ways)", "echo_1048576", "mb_s", ".0f"),
        ("setup p50 ms", "setup", "p50_ms", ".2f"),
        ("setup p99 ms", "setup", "p99_ms", ".2f"),
        ("cold start p50 s", "cold_start", "p50_s", ".3f"),
        ("cold start, discovery cached p50 s", "cold_start_cached", "p50_s", ".3f"),
        ("Bastion sessions opened", "sessions", "sessions", "d"),
        ("  leaked (token never deleted)", "sessions", "leaked", "d"),
    ]
    header = ["", *(LABELS[k] for k in kinds)]
    lines = [[label, *(_fmt(RESULTS.get(sc, {}).get(k, {}).get(key), spec) for k in kinds)]
             for label, sc, key, spec in rows if sc in RESULTS]
    widths = [max(len(r[i]) for r in [header, *lines]) for i in range(len(header))]
    out = ["  ".join(h.ljust(widths[0]) if i == 0 else h.rjust(widths[i]) for i, h in enumerate(header))]
    out.append("  ".join("-" * w for w in widths))
    for r in lines:
        out.append("  ".join(c.ljust(widths[0]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(r)))
    base = RESULTS.get("pingpong_idle", {}).get("tcp_baseline")
    if base:
        out.append(f"(direct TCP to the target, no relay: ping-pong p50 {base['p50_us']} µs, "
                   f"p99 {base['p99_us']} µs; two plain TCP relays in a chain, the process floor of client + "
                   f"emulator: added p50 {base.get('two_relays_added_p50_us', '-')} µs, "
                   f"p99 {base.get('two_relays_added_p99_us', '-')} µs)")
    bound = sorted({f"{sc}/{k}" for sc, per in RESULTS.items() for k, m in per.items() if m.get("emulator_bound")})
    if bound:
        out.append("emulator near one full core (may have limited throughput): " + ", ".join(bound))
    out.append(f"MB = 10^6 bytes, GB = 10^9 bytes; scale {SCALE:g} (bulk {BULK_BYTES / MB:.0f} MB, "
               f"{PINGPONG_ROUNDS} round trips)")
    return "\n".join(out)


def _data_path(pure: bool) -> str:
    """``bastion-fast --version`` as the ours/pure clients see it (proves which data path was measured)."""
    env = {**os.environ, "BASTION_FAST_NO_EXTENSIONS": "1" if pure else "0"}
    try:
        out = subprocess.run([*_bastion_fast_argv(), "--version"], capture_output=True, text=True, env=env,
                             timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unknown ({exc})"
    return out.stdout.strip() or out.stderr.strip()[-200:]


def environment() -> dict[str, Any]:
    return {
        "bastion_fast_cython": _data_path(pure=False),
        "bastion_fast_pure": _data_path(pure=True),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "scale": SCALE,
        "bulk_bytes": BULK_BYTES,
        "pingpong_rounds": PINGPONG_ROUNDS,
        "setup_rounds": SETUP_ROUNDS,
        "loadavg": os.getloadavg(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def write_results(gates: list[Gate], path: Path | None = None) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = path or RESULTS_DIR / f"tunnel-{time.strftime('%Y%m%d-%H%M%S')}.json"
    doc = {
        "environment": environment(),
        "results": RESULTS,
        "gates": [{"name": g.name, "kind": g.kind, "value": g.value, "limit": g.limit, "op": g.op,
                   "passed": g.passed} for g in gates],
        "table": format_table(),
    }
    text = json.dumps(doc, indent=2, default=str)
    path.write_text(text)
    (RESULTS_DIR / "tunnel-latest.json").write_text(text)
    return path


# ---------------------------------------------------------------------------------------------------------------
# standalone: python bench/harness.py [--kinds …] [--scenarios …]
# ---------------------------------------------------------------------------------------------------------------

SCENARIOS = ("upload", "download", "concurrent", "pingpong", "setup", "cold_start")


def run_all(kinds: Iterator[str] | list[str], scenarios: list[str]) -> list[Gate]:
    with Rig() as rig:
        for kind in kinds:
            before = ledger_mark(rig)
            for name in scenarios:
                try:
                    if name in ("upload", "download"):
                        scenario_bulk(rig, kind, name)
                    elif name == "concurrent":
                        for n in CONCURRENCY:
                            scenario_concurrent(rig, kind, n)
                    elif name == "pingpong":
                        scenario_pingpong(rig, kind, loaded=False)
                        scenario_pingpong(rig, kind, loaded=True)
                    elif name == "setup":
                        scenario_setup(rig, kind)
                    elif name == "cold_start":
                        scenario_cold_start(rig, kind)
                        if kind in ("cython", "pure"):
                            scenario_cold_start(rig, kind, cached=True)
                except Exception as exc:  # keep going: one broken client must not hide the others
                    print(f"{kind}/{name}: FAILED: {exc}", file=sys.stderr)
                    record(name, kind, {"error": str(exc)[:500]})
            if kind != "direct":
                scenario_sessions(rig, kind, before)
            rig.stop_client(kind)
    return evaluate_gates()


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="Run the tunnel benchmarks without pytest and print the table.")
    parser.add_argument("--kinds", default=",".join(KINDS), help=f"comma list of {', '.join(KINDS)}")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help=f"comma list of {', '.join(SCENARIOS)}")
    args = parser.parse_args(argv)
    gates = run_all(args.kinds.split(","), args.scenarios.split(","))
    print(format_table())
    for g in gates:
        print(g.line())
    print(f"results: {write_results(gates)}")
    return 1 if failed_ratio_gates(gates) else 0


if __name__ == "__main__":
    sys.exit(main())
