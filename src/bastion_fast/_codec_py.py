"""Pure-Python frame codec (filled in by the codec work)."""

__all__: list[str] = []
