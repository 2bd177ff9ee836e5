"""End-to-end tunnel benchmarks (issue 4): every client kind through the emulator over wss, sha256-verified.

Run: ``.venv/bin/pytest bench/test_bench_tunnel.py`` (full: 1 GiB transfers, 20 000 round trips), or quick:
``BASTION_FAST_BENCH_SCALE=0.0625 .venv/bin/pytest bench/test_bench_tunnel.py`` (about two minutes).
``BASTION_FAST_BENCH_KINDS=cython,azstyle`` limits the clients. Add ``--benchmark-json FILE`` or
``--benchmark-autosave`` for pytest-benchmark's own records.

Each test runs one scenario for one client kind (one client process per kind, reused by all its scenarios) via
``benchmark.pedantic(..., rounds=1)``; pytest-benchmark's time is the scenario's wall time, and the numbers that
matter — MB/s, client CPU-s/GB, RSS, latency percentiles — are in ``extra_info`` and in ``harness.RESULTS``.
``test_ratio_gates`` runs last (see conftest.py) and fails the run when a same-run ratio gate fails; absolute bars
are printed as information with the table at the end of the session, and the JSON goes to ``bench-results/``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import harness

KINDS = [k for k in os.environ.get("BASTION_FAST_BENCH_KINDS", ",".join(harness.KINDS)).split(",") if k]
LONG = pytest.mark.timeout(3600)


@pytest.fixture(scope="session")
def rig() -> Iterator[harness.Rig]:
    with harness.Rig() as r:
        yield r


LEDGER_MARKS: dict[str, set[str]] = {}


@pytest.fixture(scope="module", params=KINDS)
def kind(request: pytest.FixtureRequest, rig: harness.Rig) -> Iterator[str]:
    """One client kind at a time: its process is started on first use and stopped after its scenarios."""
    LEDGER_MARKS[request.param] = harness.ledger_mark(rig)
    yield request.param
    rig.stop_client(request.param)


def _measure(benchmark: Any, group: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    benchmark.group = group
    metrics: dict[str, Any] = benchmark.pedantic(fn, rounds=1, iterations=1, warmup_rounds=0)
    benchmark.extra_info.update(metrics)
    return metrics


@LONG
@pytest.mark.parametrize("direction", ["upload", "download"])
def test_bulk_one_stream(benchmark: Any, rig: harness.Rig, kind: str, direction: str) -> None:
    """1 GiB (scaled) one way through one connection: MB/s and client CPU-s/GB."""
    m = _measure(benchmark, f"{direction} 1 stream", lambda: harness.scenario_bulk(rig, kind, direction))
    assert m["bytes"] == harness.BULK_BYTES and m["mb_s"] > 0


@LONG
@pytest.mark.parametrize("streams", harness.CONCURRENCY)
def test_concurrent_streams(benchmark: Any, rig: harness.Rig, kind: str, streams: int) -> None:
    """N uploads at once on one tunnel: aggregate MB/s, per-stream min/max, peak RSS of the client."""
    m = _measure(benchmark, f"{streams} streams", lambda: harness.scenario_concurrent(rig, kind, streams))
    assert m["stream_min_mb_s"] > 0
    if kind in ("cython", "pure"):  # ours must take the burst; a reference client's failures are a result
        assert m["failed_streams"] == 0, f"{m['failed_streams']} of {streams} connections failed: {m['failures']}"


@LONG
@pytest.mark.parametrize("loaded", [False, True], ids=["idle", "loaded"])
def test_pingpong(benchmark: Any, rig: harness.Rig, kind: str, loaded: bool) -> None:
    """64-byte round trips: p50/p99/max, and what the client adds over a direct TCP connection to the target."""
    m = _measure(benchmark, f"ping-pong {'loaded' if loaded else 'idle'}",
                 lambda: harness.scenario_pingpong(rig, kind, loaded))
    assert 0 < m["rounds"] <= harness.PINGPONG_ROUNDS  # fewer when the time cap hit (slow under load)


@LONG
@pytest.mark.parametrize("size", harness.ECHO_SIZES, ids=["64B", "16KiB", "1MiB"])
def test_echo_message(benchmark: Any, rig: harness.Rig, kind: str, size: int) -> None:
    """Whole messages echoed through one connection, one pytest-benchmark group per size for every client, so
    ``--benchmark-autosave`` / ``--benchmark-compare-fail=mean:10%`` track regressions round by round."""
    client = rig.client(kind)
    payload = os.urandom(size)
    rounds = harness.ECHO_ROUNDS[size]
    conn = harness.EchoConnection(client.port)
    try:
        conn.round_trip(payload)  # the first round trip also opens the Bastion session: not a message time
        benchmark.group = f"echo {size} B"
        benchmark.pedantic(conn.round_trip, args=(payload,), rounds=rounds, warmup_rounds=1)
        while len(conn.samples) < rounds + 2:  # --benchmark-disable runs the function once: keep our own count
            conn.round_trip(payload)
    finally:
        conn.close()
    m = harness.record_echo(kind, size, conn.samples[-rounds:])
    benchmark.extra_info.update(m)
    assert m["rounds"] >= 1


@LONG
def test_connection_setup(benchmark: Any, rig: harness.Rig, kind: str) -> None:
    """Local connect → first echoed byte (token exchange, TLS, upgrade, target connect): p50/p99."""
    m = _measure(benchmark, "connection setup", lambda: harness.scenario_setup(rig, kind))
    assert m["rounds"] == harness.SETUP_ROUNDS


@LONG
def test_cold_start(benchmark: Any, rig: harness.Rig, kind: str) -> None:
    """Process spawn → ready line (ours: ``bastion-fast tunnel`` including ARM discovery at the emulator through
    azure-mgmt-network on every spawn: ``--no-discovery-cache``)."""
    m = _measure(benchmark, "cold start", lambda: harness.scenario_cold_start(rig, kind))
    assert m["rounds"] == harness.COLD_START_ROUNDS


@LONG
def test_cold_start_cached(benchmark: Any, rig: harness.Rig, kind: str) -> None:
    """Process spawn → ready line when the discovery cache answers (the common repeated start; reported apart)."""
    if kind not in ("cython", "pure"):
        pytest.skip("only bastion-fast discovers the Bastion through ARM")
    m = _measure(benchmark, "cold start, discovery cached",
                 lambda: harness.scenario_cold_start(rig, kind, cached=True))
    assert m["rounds"] == harness.COLD_START_ROUNDS


def test_sessions_cleaned_up(rig: harness.Rig, kind: str) -> None:
    """After all its scenarios and a Ctrl+C, every Bastion session the client opened has its token deleted
    (ours must leave none; a reference client's leaks are a result, printed in the table)."""
    if kind == "direct":
        pytest.skip("the direct relay opens no Bastion sessions")
    m = harness.scenario_sessions(rig, kind, LEDGER_MARKS.get(kind, set()))
    assert m["sessions"] > 0
    if kind in ("cython", "pure"):
        assert m["leaked"] == 0 and m["live_after_exit"] == 0, m


def test_ratio_gates() -> None:
    """Issue 4's ratio bars from this run: ours vs az-style and vs the websockets library (absolute bars: info)."""
    gates = harness.evaluate_gates()
    ratio = [g for g in gates if g.kind == "ratio"]
    if all(g.passed is None for g in ratio):
        pytest.skip("no ratio could be computed (run ours, az-style and websockets upload in the same session)")
    failed = harness.failed_ratio_gates(gates)
    assert not failed, "ratio gates failed:\n" + "\n".join(g.line() for g in failed)
