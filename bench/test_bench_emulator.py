"""The emulator's own WebSocket leg: can it carry clearly more than one client stream? (issue 3, "Speed")

Run: ``.venv/bin/pytest bench/test_bench_emulator.py -s`` (``BASTION_FAST_BENCH_SCALE`` scales the bytes; default
256 MiB per transfer).

Three kinds of process, so CPU time is charged to the right one::

    client(s) (websockets library; this file, "client" mode) ──wss──▶ bastion-fast emulator ──TCP──▶ target
                                                                                        (this file, "target" mode)

* **upload**: each client sends N bytes in 32 KiB binary frames; the target's sink hashes what arrives and prints
  the sha256, which must equal the client's.
* **download**: the target's source sends N deterministic bytes (the emulator's ``source`` pattern); the client's
  sha256 must equal :func:`bastion_fast.emulator.targets.source_sha256`.

Clients connect first, then wait for "go", so only the transfer is timed. For one client alone we read the CPU
seconds of the client process and of the emulator process over the same transfer:
``capacity ratio = client CPU / emulator CPU`` — how many such streams the emulator could carry before it, and not
the client, became the limit. CPU time does not depend on what else the shared box is doing, so this same-run
ratio is the gate (≥ 1.5). Two clients at once give the aggregate MB/s, printed as information only.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import ssl
import subprocess
import sys
import tempfile
import time
from typing import Any

SCALE = float(os.environ.get("BASTION_FAST_BENCH_SCALE", "1"))
NBYTES = int(256 * (1 << 20) * SCALE)
FRAME = 32 * 1024
VM = ("/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg/providers"
      "/Microsoft.Compute/virtualMachines/bench")
GATE = 1.5


# -- the target process: a sink and a source on loopback ---------------------------------------------------------


async def _target_main(nbytes: int) -> None:
    from bastion_fast.emulator.targets import source_bytes

    block = source_bytes(1 << 20)
    out = sys.stdout

    async def sink(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        digest, count = hashlib.sha256(), 0
        while data := await reader.read(1 << 18):
            digest.update(data)
            count += len(data)
        writer.close()
        out.write(json.dumps({"bytes": count, "sha256": digest.hexdigest()}) + "\n")
        out.flush()

    async def source(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        left = nbytes
        while left > 0:
            chunk = block[: min(left, len(block))]
            writer.write(chunk)
            left -= len(chunk)
            await writer.drain()
        writer.close()

    sink_server = await asyncio.start_server(sink, "127.0.0.1", 0)
    source_server = await asyncio.start_server(source, "127.0.0.1", 0)
    out.write(json.dumps({"sink": sink_server.sockets[0].getsockname()[1],
                          "source": source_server.sockets[0].getsockname()[1]}) + "\n")
    out.flush()
    await asyncio.Event().wait()


# -- the client process ------------------------------------------------------------------------------------------


async def _client_main(info: dict[str, Any], direction: str, nbytes: int) -> None:
    import aiohttp
    import websockets

    ctx = ssl.create_default_context(cafile=info["ca_file"])
    host = info["dns_name"]
    port = "22" if direction == "upload" else "2022"
    form = {"resourceId": VM, "protocol": "tcptunnel", "workloadHostPort": port, "aztoken": info["token"]}
    loop = asyncio.get_running_loop()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx)) as http:
        async with http.post(f"https://{host}/api/tokens", data=form) as r:
            tokens = await r.json()
        url = f"wss://{host}/webtunnelv2/{tokens['websocketToken']}?X-Node-Id={tokens['nodeId']}"
        digest, moved = hashlib.sha256(), 0
        # ping_interval=None: the ping timer must not count as work; the download waits for "go" before reading
        async with websockets.connect(url, ssl=ctx, compression=None, max_size=None, ping_interval=None) as ws:
            print("ready", flush=True)
            await loop.run_in_executor(None, sys.stdin.readline)
            cpu0, t0 = time.process_time(), time.perf_counter()
            if direction == "upload":
                block = os.urandom(1 << 20)
                while moved < nbytes:
                    for i in range(0, len(block), FRAME):
                        frame = block[i:i + FRAME]
                        await ws.send(frame)
                        digest.update(frame)
                        moved += len(frame)
                await ws.close()  # answered after the emulator forwarded every frame sent before it
            else:
                async for message in ws:
                    digest.update(message if isinstance(message, bytes) else message.encode())
                    moved += len(message)
            cpu1, t1 = time.process_time(), time.perf_counter()
        async with http.delete(f"https://{host}/api/tokens/{tokens['authToken']}",
                               headers={"X-Node-Id": tokens["nodeId"]}) as r:
            assert r.status == 204, r.status
    print(json.dumps({"bytes": moved, "t0": t0, "t1": t1, "cpu": cpu1 - cpu0, "sha256": digest.hexdigest()}),
          flush=True)


# -- the benchmark ----------------------------------------------------------------------------------------------


def _cpu(pid: int) -> float:
    import psutil

    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


class _Rig:
    def __init__(self) -> None:
        self.tmp = tempfile.TemporaryDirectory(prefix="bench-emulator-")
        self.target = subprocess.Popen([sys.executable, __file__, "target", str(NBYTES)], stdout=subprocess.PIPE,
                                       text=True)
        assert self.target.stdout is not None
        ports = json.loads(self.target.stdout.readline())
        cmd = [sys.executable, "-m", "bastion_fast", "emulator", "--state-dir", self.tmp.name, "--default-target",
               "none", "--target", f"{VM}:22=127.0.0.1:{ports['sink']}",
               "--target", f"{VM}:2022=127.0.0.1:{ports['source']}"]
        self.emulator = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert self.emulator.stdout is not None
        self.info = json.loads(self.emulator.stdout.readline())

    def run(self, direction: str, count: int) -> tuple[list[dict[str, Any]], float, float]:
        """``count`` clients at once; returns their results, aggregate seconds and the emulator's CPU seconds."""
        cmd = [sys.executable, __file__, "client", json.dumps(self.info), direction, str(NBYTES)]
        procs = [subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
                 for _ in range(count)]
        for p in procs:
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        cpu0 = _cpu(self.emulator.pid)
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        results = [json.loads(p.stdout.readline()) for p in procs if p.stdout is not None]
        emu_cpu = _cpu(self.emulator.pid) - cpu0
        for p in procs:
            assert p.wait(60) == 0
        seconds = max(r["t1"] for r in results) - min(r["t0"] for r in results)
        self._verify(direction, results)
        return results, seconds, emu_cpu

    def _verify(self, direction: str, results: list[dict[str, Any]]) -> None:
        from bastion_fast.emulator.targets import source_sha256

        if direction == "upload":
            assert self.target.stdout is not None
            arrived = sorted(json.loads(self.target.stdout.readline())["sha256"] for _ in results)
            assert arrived == sorted(r["sha256"] for r in results)
        for r in results:
            assert r["bytes"] == NBYTES
            if direction == "download":
                assert r["sha256"] == source_sha256(NBYTES)

    def close(self) -> None:
        self.emulator.send_signal(signal.SIGTERM)
        try:
            assert self.emulator.wait(30) == 0
        finally:
            self.target.terminate()
            self.target.wait(30)
            self.tmp.cleanup()


def _pump_name() -> str:
    from bastion_fast.emulator.core import select_pump

    return str(select_pump().IMPLEMENTATION)


def test_emulator_carries_more_than_one_client_stream() -> None:
    rig = _Rig()
    lines, failures = [], []
    mb = NBYTES / 1e6
    try:
        for direction in ("upload", "download"):
            (single,), seconds, emu_cpu = rig.run(direction, 1)
            ratio = single["cpu"] / max(emu_cpu, 1e-9)
            lines.append(f"{direction:8s} 1 client : {mb / seconds:7.1f} MB/s   client CPU {single['cpu']:5.2f} s   "
                         f"emulator CPU {emu_cpu:5.2f} s   capacity ratio {ratio:4.2f} (gate >= {GATE})")
            if ratio < GATE:
                failures.append(f"{direction}: capacity ratio {ratio:.2f} < {GATE}")
            _, seconds2, emu_cpu2 = rig.run(direction, 2)
            lines.append(f"{direction:8s} 2 clients: {2 * mb / seconds2:7.1f} MB/s aggregate "
                         f"({2 * mb / seconds2 / (mb / seconds):.2f}x one client; information only)   "
                         f"emulator CPU {emu_cpu2:5.2f} s")
    finally:
        rig.close()
    print(f"\nemulator WebSocket leg: {NBYTES >> 20} MiB per transfer, emulator pump {_pump_name()}, "
          f"{os.cpu_count()} CPUs")
    print("\n".join(lines))
    assert not failures, "; ".join(failures)


if __name__ == "__main__" and len(sys.argv) > 1:
    if sys.argv[1] == "client":
        asyncio.run(_client_main(json.loads(sys.argv[2]), sys.argv[3], int(sys.argv[4])))
    elif sys.argv[1] == "target":
        asyncio.run(_target_main(int(sys.argv[2])))
