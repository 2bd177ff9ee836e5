"""Pure-Python splice (filled in by the pump work)."""

__all__: list[str] = []
