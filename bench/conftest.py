"""Benchmark session plumbing: gates last, tables at the end, JSON results for CI.

Benchmarks are opt-in (STYLE.md rule 14): they live in ``bench/``, outside ``testpaths``, and run only when named:
``pytest bench/ -p no:cacheprovider`` (add ``--benchmark-disable`` for a one-shot smoke run).

Shared by every bench module (keep it small and generic):

* Gate tests — any test function whose name ends in ``gates`` — run after every other bench test, so they see all
  of the run's numbers. Gates that *fail* the run compare ratios measured in the same run, never absolute times.
* ``throughput(fn, nbytes, group=..., case=..., impl=...)`` (fixture, micro-benchmarks) runs ``fn`` under
  pytest-benchmark (one call moves ``nbytes``), stores GB/s in ``benchmark.extra_info`` and in ``RESULTS``: the best
  round (the machine's capability, least disturbed by other processes) and the median beside it.
* ``bench_report`` (fixture): ``gbps(group, case, impl)``, ``ratio(group, case, fast, slow)`` and
  ``record_check(name, passed, detail)`` — a PASS/FAIL line in the summary for absolute bars (reported, not
  enforced: absolute speed belongs to the machine).
* End-to-end tunnel benchmarks keep their own records in ``harness.RESULTS`` (table, gates, JSON: see harness.py).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness


@dataclass(frozen=True)
class Result:
    group: str  # what is measured, e.g. "mask"
    case: str  # the variant, e.g. "64 KiB"
    impl: str  # "python" / "cython" / any label
    gbps: float  # best round
    gbps_median: float


RESULTS: list[Result] = []
CHECKS: list[tuple[str, bool, str]] = []


def gbps(group: str, case: str, impl: str) -> float | None:
    """Best GB/s recorded for (group, case, impl) in this run, or None."""
    for result in reversed(RESULTS):
        if (result.group, result.case, result.impl) == (group, case, impl):
            return result.gbps
    return None


def ratio(group: str, case: str, fast: str, slow: str) -> float | None:
    """GB/s of ``fast`` divided by GB/s of ``slow`` (same run), or None if either is missing."""
    a, b = gbps(group, case, fast), gbps(group, case, slow)
    return None if a is None or b is None or b == 0 else a / b


def record_check(name: str, passed: bool, detail: str) -> None:
    CHECKS.append((name, passed, detail))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Gate tests (``test_*gates``) need every number of the run: run them after everything else."""
    gates = [item for item in items if getattr(item, "originalname", item.name).endswith("gates")]
    if gates:
        items[:] = [item for item in items if item not in gates] + gates


@pytest.fixture
def bench_report() -> SimpleNamespace:
    """``gbps``, ``ratio`` and ``record_check`` for gate tests."""
    return SimpleNamespace(gbps=gbps, ratio=ratio, record_check=record_check)


@pytest.fixture
def throughput(benchmark: Any) -> Callable[..., float]:
    def measure(fn: Callable[[], object], nbytes: int, *, group: str, case: str, impl: str) -> float:
        benchmark.group = f"{group} {case}"
        benchmark.extra_info.update(group=group, case=case, impl=impl, bytes=nbytes)
        benchmark(fn)
        stats = getattr(benchmark, "stats", None)
        if stats is not None:
            best, median = stats.stats.min, stats.stats.median
        else:  # --benchmark-disable: one timed call, enough for a smoke run
            start = time.perf_counter()
            fn()
            best = median = max(time.perf_counter() - start, 1e-9)
        result = Result(group, case, impl, nbytes / best / 1e9, nbytes / median / 1e9)
        benchmark.extra_info.update(gbps=round(result.gbps, 3), gbps_median=round(result.gbps_median, 3))
        RESULTS.append(result)
        return result.gbps

    return measure


def _throughput_table(terminalreporter: pytest.TerminalReporter) -> None:
    write = terminalreporter.write_line
    terminalreporter.section("throughput (GB/s, best round; median in brackets)")
    impls = list(dict.fromkeys(r.impl for r in RESULTS))
    header = f"{'group':<14}{'case':<10}" + "".join(f"{impl:>22}" for impl in impls)
    if len(impls) == 2:
        header += f"{impls[1] + '/' + impls[0]:>18}"
    write(header)
    for group, case in dict.fromkeys((r.group, r.case) for r in RESULTS):
        row = f"{group:<14}{case:<10}"
        for impl in impls:
            found = [r for r in RESULTS if (r.group, r.case, r.impl) == (group, case, impl)]
            cell = f"{found[-1].gbps:.3f} [{found[-1].gbps_median:.3f}]" if found else "-"
            row += f"{cell:>22}"
        if len(impls) == 2:
            r = ratio(group, case, impls[1], impls[0])
            row += f"{(f'{r:.1f}x' if r is not None else '-'):>18}"
        write(row)
    if CHECKS:
        terminalreporter.section("bars")
        for name, passed, detail in CHECKS:
            write(f"{'PASS' if passed else 'FAIL'}  {name}: {detail}")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, exitstatus: int, config: pytest.Config) -> None:
    if RESULTS or CHECKS:
        _throughput_table(terminalreporter)
    if not harness.RESULTS:
        return
    terminalreporter.section("bastion-fast tunnel benchmarks")
    terminalreporter.write_line(harness.format_table())
    terminalreporter.write_line("")
    for gate in harness.evaluate_gates():
        terminalreporter.write_line(gate.line())
    path = getattr(config, "_bench_results_path", None)
    if path:
        terminalreporter.write_line(f"results: {path}")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if harness.RESULTS:
        session.config._bench_results_path = harness.write_results(harness.evaluate_gates())  # type: ignore[attr-defined]
