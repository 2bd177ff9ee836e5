"""Pick the data-path implementation: the Cython extension, or its pure-Python twin.

``BASTION_FAST_NO_EXTENSIONS=1`` (or a non-CPython interpreter) forces the pure twin. Otherwise the compiled
``bastion_fast._pump`` is used when it imports. ``BASTION_FAST_REQUIRE_EXTENSION=1`` turns a missing extension into
an ImportError instead of a silent fallback (wheel tests and CI use it, so a broken build cannot pass as "python").
"""

from __future__ import annotations

import os
import sys
from types import ModuleType
from typing import TYPE_CHECKING

__all__ = ["IMPLEMENTATION", "impl", "load"]


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "yes", "true", "y", "on"}


NO_EXTENSIONS = _env_flag("BASTION_FAST_NO_EXTENSIONS") or sys.implementation.name != "cpython"


def load(pure: bool = False) -> ModuleType:
    """Return the implementation module: ``bastion_fast._pump`` or ``bastion_fast._pump_py``."""
    if pure:
        from bastion_fast import _pump_py

        return _pump_py
    try:
        from bastion_fast import _pump as compiled
    except ImportError:
        if _env_flag("BASTION_FAST_REQUIRE_EXTENSION"):
            raise
        from bastion_fast import _pump_py

        return _pump_py
    module: ModuleType = compiled
    return module


if TYPE_CHECKING:
    from bastion_fast import _pump_py as impl
else:
    impl = load(pure=NO_EXTENSIONS)

IMPLEMENTATION: str = impl.IMPLEMENTATION
