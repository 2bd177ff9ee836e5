"""The two data-path implementations export the same API, the stub declares it, and no build falls back silently."""

from __future__ import annotations
import __future__

import ast
import importlib
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from bastion_fast import _codec_py, _pump_py, _splice_py
from tests.conftest import PURE_ONLY

STUB = Path(_pump_py.__file__).with_name("_pump.pyi")


def public_names(module: ModuleType) -> set[str]:
    """What a user can reach: non-underscore attributes other than imported modules and ``__future__`` flags."""
    return {
        name
        for name in dir(module)
        if not name.startswith("_") and not isinstance(getattr(module, name), ModuleType | __future__._Feature)
    }


def stub_names() -> set[str]:
    tree = ast.parse(STUB.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.ClassDef | ast.FunctionDef):
            names.add(node.name)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return names


def test_pure_twin_all_is_the_union_of_its_parts() -> None:
    assert sorted(_pump_py.__all__) == sorted({"IMPLEMENTATION", *_codec_py.__all__, *_splice_py.__all__})
    assert len(_pump_py.__all__) == len(set(_pump_py.__all__))
    for name in _pump_py.__all__:
        assert hasattr(_pump_py, name), name
    assert public_names(_pump_py) == set(_pump_py.__all__)


@pytest.mark.compiled
def test_extension_exports_the_same_names() -> None:
    compiled = importlib.import_module("bastion_fast._pump")
    assert public_names(compiled) == set(_pump_py.__all__)


def test_stub_declares_every_public_name() -> None:
    declared = {n for n in stub_names() if not n.startswith("_")}
    helper_aliases = {"BytesLike", "Event"}  # type aliases used inside the stub only
    assert declared - helper_aliases == set(_pump_py.__all__)


def _public_members(module: ModuleType, name: str) -> tuple[set[str], bool]:
    """Public attributes of an instance built with ``client=True`` (exact), else of the class (a lower bound)."""
    cls = getattr(module, name)
    try:
        return {n for n in dir(cls(client=True)) if not n.startswith("_")}, True
    except Exception:  # a class that needs more to construct (e.g. a running loop): class attributes only
        return {n for n in dir(cls) if not n.startswith("_")}, False


def _stub_classes() -> dict[str, set[str]]:
    tree = ast.parse(STUB.read_text(encoding="utf-8"))
    return {
        node.name: {item.name for item in node.body if isinstance(item, ast.FunctionDef) and item.name[0] != "_"}
        for node in tree.body
        if isinstance(node, ast.ClassDef)
    }


def test_stub_classes_match_the_pure_twin() -> None:
    for name, declared in _stub_classes().items():
        real, exact = _public_members(_pump_py, name)
        assert declared == real if exact else real <= declared, name


@pytest.mark.compiled
def test_extension_classes_match_the_pure_twin() -> None:
    compiled = importlib.import_module("bastion_fast._pump")
    for name in _stub_classes():
        if not hasattr(compiled, name):
            continue  # a missing class fails test_extension_exports_the_same_names
        pure, pure_exact = _public_members(_pump_py, name)
        ext, ext_exact = _public_members(compiled, name)
        if pure_exact and ext_exact:
            assert ext == pure, name


def test_implementation_selected() -> None:
    """``bastion_fast.IMPLEMENTATION`` is "cython" unless the pure twin was asked for: a silent fallback fails."""
    import bastion_fast

    assert bastion_fast.IMPLEMENTATION == ("python" if PURE_ONLY else "cython")


@pytest.mark.parametrize(
    ("env", "expected"), [("1", "python"), pytest.param("", "cython", marks=pytest.mark.compiled)]
)
def test_implementation_switch_in_a_fresh_interpreter(env: str, expected: str) -> None:
    code = "import bastion_fast; print(bastion_fast.IMPLEMENTATION)"
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "BASTION_FAST_NO_EXTENSIONS": env},
        timeout=60,
    )
    assert result.stdout.strip() == expected

