"""bastion-fast: a fast, faithful client for Azure Bastion native-client tunnels.

Public names are imported lazily so that ``bastion-fast --version`` and the CLI's cold start stay fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bastion_fast._version import __version__

__all__ = ["IMPLEMENTATION", "__version__", "open_tunnel"]

if TYPE_CHECKING:
    from bastion_fast.pump import IMPLEMENTATION
    from bastion_fast.tunnel import open_tunnel

_LAZY = {
    "IMPLEMENTATION": ("bastion_fast.pump", "IMPLEMENTATION"),
    "open_tunnel": ("bastion_fast.tunnel", "open_tunnel"),
}


def __getattr__(name: str) -> Any:
    try:
        module_name, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'bastion_fast' has no attribute {name!r}") from None
    import importlib

    value = getattr(importlib.import_module(module_name), attr)
    globals()[name] = value
    return value
