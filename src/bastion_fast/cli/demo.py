"""``bastion-fast demo``: a real tunnel through the built-in emulator, measured, in one command.

What runs: the emulator in this process (ARM, ``/api/tokens``, WebSocket over TLS with its own CA, a ``sink`` and a
``source`` target), and ``bastion-fast tunnel`` as a **separate process**, exactly as a user starts it (``--auth
static``, ``--arm-endpoint``, ``--ca-bundle``). This process then plays the local application: it pushes ``--size``
bytes through the tunnel to the sink and pulls as many from the source, and checks both SHA-256s (the sink reports
what it received; the source's bytes are deterministic).

Because the tunnel is its own process, its CPU time can be read alone (``/proc`` or psutil): the table shows MB/s
and **client CPU-seconds per GB** for the compiled data path and for the pure-Python twin
(``BASTION_FAST_NO_EXTENSIONS=1``), which moves ``--pure-size`` bytes (smaller by default, to keep the demo short;
per-GB figures compare fairly). On a small machine the emulator and the verifier (this process) share the CPU with
the tunnel, so MB/s is a floor; CPU-s/GB is the tunnel's own cost.

Exit status: 0 when every checksum matched and every Bastion session was deleted; 1 otherwise.
"""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["HELP", "NAME", "register", "run"]

NAME = "demo"
HELP = "run a real tunnel through the built-in emulator, push and verify data, print MB/s and CPU-s/GB"

GiB = 1024 ** 3
MiB = 1024 ** 2
_UNITS = {"": 1, "k": 1024, "kb": 1024, "kib": 1024, "m": MiB, "mb": MiB, "mib": MiB, "g": GiB, "gb": GiB,
          "gib": GiB}


def _size(text: str) -> int:
    value = text.strip().lower()
    digits = value.rstrip("kmgib")
    unit = value[len(digits):]
    try:
        number = float(digits)
    except ValueError:
        number = -1.0
    if number <= 0 or unit not in _UNITS:
        raise argparse.ArgumentTypeError(f"invalid size {text!r} (examples: 1G, 256M, 1048576)")
    return int(number * _UNITS[unit])


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--size", type=_size, default=GiB, metavar="BYTES",
                        help="bytes to push and to pull through the compiled data path (default 1G)")
    parser.add_argument("--pure-size", dest="pure_size", type=_size, default=256 * MiB, metavar="BYTES",
                        help="bytes for the pure-Python comparison run (default 256M; never more than --size)")
    parser.add_argument("--no-compare", dest="compare", action="store_false",
                        help="skip the pure-Python comparison run")
    parser.add_argument("--frame-size", dest="frame_size", default="32k", metavar="BYTES",
                        help="passed to the tunnel (default 32k)")
    parser.add_argument("--output", "-o", choices=("text", "json"), default="text",
                        help="json: print one JSON object with every measurement")
    parser.add_argument("--state-dir", dest="state_dir", default=None, metavar="DIR",
                        help="where the emulator keeps its CA and certificate (default: the user cache dir)")


def run(args: argparse.Namespace) -> int:
    from bastion_fast.loop import run as run_loop

    return run_loop(_demo(args))


# ---------------------------------------------------------------------------------------------------------------


_VM = "/subscriptions/{sub}/resourceGroups/rg-demo/providers/Microsoft.Compute/virtualMachines/demo-vm"


def _cpu_seconds(pid: int) -> float | None:
    """User+system CPU seconds of process ``pid`` so far (psutil, else /proc); None where neither works."""
    import logging

    log = logging.getLogger("bastion_fast.demo")
    try:
        import psutil  # type: ignore[import-not-found,unused-ignore]

        times = psutil.Process(pid).cpu_times()
        return float(times.user + times.system)
    except Exception:  # psutil missing (it is optional) or the process is gone: try /proc
        log.debug("psutil cannot read the tunnel's CPU time", exc_info=True)
    try:
        import os

        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks
    except (OSError, ValueError, IndexError, AttributeError):
        return None


async def _run_one(emu: Any, label: str, size: int, frame_size: str, *, pure: bool) -> dict[str, Any]:
    """Start ``bastion-fast tunnel`` as a child, upload ``size`` bytes to the sink, download ``size`` from the
    source, stop the child; return the measurements."""
    import asyncio
    import hashlib
    import json
    import os
    import signal
    import sys
    import time

    from bastion_fast.emulator.targets import source_sha256

    info = emu.info
    vm = _VM.format(sub=info["subscription"])
    env = dict(os.environ, BASTION_FAST_TOKEN=info["token"])
    for name in ("HTTPS_PROXY", "https_proxy"):
        env.pop(name, None)  # the emulator is on loopback
    if pure:
        env["BASTION_FAST_NO_EXTENSIONS"] = "1"
    else:
        env.pop("BASTION_FAST_NO_EXTENSIONS", None)
    cmd = [sys.executable, "-m", "bastion_fast", "--only-show-errors", "tunnel", "-n", info["bastion"],
           "-g", info["resource_group"], "--target-resource-id", vm, "--resource-port", "22", "--port", "0",
           "--subscription", info["subscription"], "--auth", "static", "--arm-endpoint", info["arm_endpoint"],
           "--ca-bundle", info["ca_file"], "--frame-size", frame_size, "--output", "json"]
    started = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(*cmd, env=env, stdin=asyncio.subprocess.DEVNULL,
                                                stdout=asyncio.subprocess.PIPE)
    assert proc.stdout is not None
    result: dict[str, Any] = {"label": label, "size": size, "pid": proc.pid}
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        if not line:
            raise RuntimeError("the tunnel process exited before it was ready (see its error above)")
        ready = json.loads(line)
        result["ready_seconds"] = time.perf_counter() - started
        port = int(ready["port"])

        # Upload: a 4 MiB random block, repeated; the expected digest is computed before the clock starts.
        block = os.urandom(4 * MiB)
        expected = hashlib.sha256()
        full, rest = divmod(size, len(block))
        for _ in range(full):
            expected.update(block)
        expected.update(block[:rest])
        emu.targets.set(vm, "sink")
        cpu0, t0 = _cpu_seconds(proc.pid), time.perf_counter()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for _ in range(full):
            writer.write(block)
            await writer.drain()
        writer.write(block[:rest])
        await writer.drain()
        writer.write_eof()
        await reader.read()  # EOF: the tunnel flushed everything and Bastion answered the Close
        t1, cpu1 = time.perf_counter(), _cpu_seconds(proc.pid)
        writer.close()
        ledger = emu.ledger
        await ledger.wait_for(lambda: ledger.sessions() and ledger.sessions()[-1].sink is not None, 30)
        sink = ledger.sessions()[-1].sink
        result["upload_ok"] = sink == {"bytes": size, "sha256": expected.hexdigest()}
        result["upload_seconds"] = t1 - t0
        result["upload_cpu"] = None if cpu0 is None or cpu1 is None else cpu1 - cpu0

        # Download: the source sends deterministic bytes; hash them as they arrive.
        emu.targets.set(vm, f"source:{size}")
        digest = hashlib.sha256()
        got = 0
        cpu0, t0 = _cpu_seconds(proc.pid), time.perf_counter()
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=4 * MiB)
        while chunk := await reader.read(4 * MiB):
            digest.update(chunk)
            got += len(chunk)
        t1, cpu1 = time.perf_counter(), _cpu_seconds(proc.pid)
        writer.close()
        result["download_ok"] = got == size and digest.hexdigest() == source_sha256(size)
        result["download_seconds"] = t1 - t0
        result["download_cpu"] = None if cpu0 is None or cpu1 is None else cpu1 - cpu0
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM if hasattr(signal, "SIGTERM") else signal.SIGINT)
            try:
                await asyncio.wait_for(proc.wait(), 15)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        result["exit_code"] = proc.returncode
    return result


def _mbps(size: int, seconds: float | None) -> str:
    return f"{size / seconds / 1e6:,.0f} MB/s" if seconds else "n/a"


def _cpu_per_gb(size: int, cpu: float | None) -> str:
    return f"{cpu / (size / 1e9):.2f}" if cpu is not None else "n/a"


def _human(size: int) -> str:
    return f"{size / GiB:g} GiB" if size >= GiB else f"{size / MiB:g} MiB"


async def _demo(args: argparse.Namespace) -> int:
    import contextlib
    import json
    import sys

    from bastion_fast.emulator import Emulator, EmulatorConfig
    from bastion_fast.loop import LOOP_NAME
    from bastion_fast.pump import load

    compiled = load(pure=False)
    has_compiled = compiled.IMPLEMENTATION == "cython" and hasattr(compiled, "Splice")
    runs: list[tuple[str, int, bool]] = []
    if has_compiled:
        runs.append((f"cython/{LOOP_NAME}", args.size, False))
    if args.compare or not has_compiled:
        runs.append((f"python/{LOOP_NAME}", min(args.pure_size, args.size) if has_compiled else args.size, True))
    text = args.output == "text"

    def say(line: str = "") -> None:
        if text:
            print(line, flush=True)

    say("bastion-fast demo: a real tunnel through the built-in emulator (ARM discovery, /api/tokens, WebSocket "
        "over TLS)")
    say("to its built-in targets; the tunnel runs as its own process, exactly as `bastion-fast tunnel` does.")
    if not has_compiled:
        say("note: the compiled data path is not available in this install; showing the pure-Python path only.")
    results = []
    from pathlib import Path

    config = EmulatorConfig(default_target=None, state_dir=Path(args.state_dir) if args.state_dir else None)
    async with Emulator(config) as emu:
        say(f"emulator: ARM {emu.info['arm_endpoint']}, Bastion data plane {emu.info['dns_name']}, "
            f"CA {emu.info['ca_file']}")
        say()
        for label, size, pure in runs:
            say(f"  {label}: pushing and pulling {_human(size)} …")
            results.append(await _run_one(emu, label, size, args.frame_size, pure=pure))
        ledger = emu.ledger
        with contextlib.suppress(TimeoutError):  # counted below either way
            await ledger.wait_for(lambda: all(s.state == "deleted" for s in ledger.sessions()), 10)
        sessions = len(ledger.sessions())
        deleted = sum(1 for s in ledger.sessions() if s.state == "deleted")
        leaked = len(ledger.leaked())
    ok = all(r.get("upload_ok") and r.get("download_ok") for r in results) and deleted == sessions and not leaked
    if not text:
        print(json.dumps({"ok": ok, "runs": results, "sessions": sessions, "sessions_deleted": deleted,
                          "sessions_leaked": leaked}, indent=2))
        return 0 if ok else 1
    say()
    header = f"  {'data path':<16} {'size':>8}  {'upload':>11}  {'download':>11}  {'client CPU-s/GB up/down':>24}" \
             f"  {'ready':>6}  sha256"
    say(header)
    for r in results:
        up = _cpu_per_gb(r["size"], r.get("upload_cpu"))
        down = _cpu_per_gb(r["size"], r.get("download_cpu"))
        check = "ok" if r.get("upload_ok") and r.get("download_ok") else "MISMATCH"
        say(f"  {r['label']:<16} {_human(r['size']):>8}  {_mbps(r['size'], r.get('upload_seconds')):>11}  "
            f"{_mbps(r['size'], r.get('download_seconds')):>11}  {up + ' / ' + down:>24}  "
            f"{r.get('ready_seconds', 0):>5.2f}s  {check}")
    if len(results) == 2 and all(r.get("upload_seconds") for r in results):
        fast, slow = results
        speed = (fast["size"] / fast["upload_seconds"]) / (slow["size"] / slow["upload_seconds"])
        line = f"  compiled vs pure-Python, upload: {speed:.1f}× the throughput"
        if fast.get("upload_cpu") and slow.get("upload_cpu"):
            cpu = (slow["upload_cpu"] / slow["size"]) / (fast["upload_cpu"] / fast["size"])
            line += f", {cpu:.1f}× less CPU per GB"
        say(line)
        if slow["size"] < fast["size"]:
            say(f"  (the pure-Python run moved {_human(slow['size'])} to keep the demo short: --pure-size)")
    say(f"  Bastion sessions: {sessions} opened, {deleted} deleted, {leaked} leaked"
        " (one per connection, each deleted when it closed)")
    say("  ready = time from starting `bastion-fast tunnel` to its ready event (sign-in, discovery, listen)")
    if not ok:
        print("error: the demo did not verify (see the table above)", file=sys.stderr)
    return 0 if ok else 1
