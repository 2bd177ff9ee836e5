"""Parsing of the values administrators type: az's three-state booleans and durations like ``24h``.

az accepts ``true/false/yes/no/1/0/t/f/y/n`` (any case) wherever a flag takes a boolean; people paste az commands,
so the same words work here. Durations are a number and a unit (``30m``, ``24h``, ``7d``, ``2w``); a bare number
means hours, because "how many hours should this link live" is the question people answer.
"""

from __future__ import annotations

import re
from datetime import timedelta

__all__ = ["parse_bool", "parse_duration"]

_TRUE = frozenset({"true", "yes", "1", "t", "y", "on"})
_FALSE = frozenset({"false", "no", "0", "f", "n", "off"})
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$", re.IGNORECASE)
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0, "": 3600.0}


def parse_bool(value: str) -> bool:
    """az's three-state boolean words → ``bool``.

    Raises:
        ValueError: anything else (argparse turns it into a usage error naming the accepted words).
    """
    word = value.strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise ValueError(f"{value!r} is not a boolean; use true/false, yes/no, 1/0, t/f or y/n")


def parse_duration(value: str) -> timedelta:
    """``"24h"`` → ``timedelta(hours=24)``; units s, m, h, d, w; a bare number is hours.

    Raises:
        ValueError: not a positive number with a known unit.
    """
    match = _DURATION.match(value)
    if match is None:
        raise ValueError(f"{value!r} is not a duration; use a number and a unit, e.g. 30m, 24h, 7d or 2w")
    seconds = float(match[1]) * _UNITS[match[2].lower()]
    if seconds <= 0:
        raise ValueError(f"{value!r} is not a positive duration")
    return timedelta(seconds=seconds)
