"""Shared fixtures: the two data-path implementations, time scaling, artifacts.

``impl`` runs a test on the pure-Python twin and on the Cython extension. The Cython case *fails* (not skips) when
the extension is missing, so an accelerated build that silently fell back cannot pass. Runs that are pure on
purpose set ``BASTION_FAST_NO_EXTENSIONS=1`` or pass ``--no-compiled``: the Cython cases are then deselected.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from types import ModuleType

import pytest

PURE_ONLY = os.environ.get("BASTION_FAST_NO_EXTENSIONS", "").strip().lower() in {"1", "yes", "true", "y", "on"}

# One time unit for tests that must wait; CI on a busy box can scale it.
TIMEOUT_FACTOR = float(os.environ.get("BASTION_FAST_TESTS_TIMEOUT_FACTOR", "1"))
ARTIFACTS = Path(
    os.environ.get("BASTION_FAST_TEST_ARTIFACTS", Path(__file__).resolve().parent.parent / "test-artifacts")
)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--no-compiled", action="store_true", help="deselect tests of the Cython extension")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not (PURE_ONLY or config.getoption("--no-compiled")):
        return
    kept, dropped = [], []
    for item in items:
        (dropped if item.get_closest_marker("compiled") else kept).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


def _load(name: str) -> ModuleType:
    if name == "python":
        return importlib.import_module("bastion_fast._pump_py")
    try:
        return importlib.import_module("bastion_fast._pump")
    except ImportError as exc:  # pragma: no cover - only on a broken build
        pytest.fail(f"the Cython extension bastion_fast._pump is not importable ({exc}); rebuild, or run with "
                    "BASTION_FAST_NO_EXTENSIONS=1 for a pure-Python run")


@pytest.fixture(params=["python", pytest.param("cython", marks=pytest.mark.compiled)], scope="session")
def impl(request: pytest.FixtureRequest) -> ModuleType:
    """The data-path module under test: ``bastion_fast._pump_py`` or ``bastion_fast._pump``."""
    module = _load(request.param)
    assert module.IMPLEMENTATION == request.param
    return module


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


@pytest.fixture(autouse=True)
def _private_discovery_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test gets an empty discovery cache (``BASTION_FAST_CACHE_DIR``) instead of the user's: the CLI caches
    the Bastion ARM GET by default, and one test's entry must not answer another test's discovery."""
    monkeypatch.setenv("BASTION_FAST_CACHE_DIR", str(tmp_path_factory.mktemp("bastion-fast-cache")))
