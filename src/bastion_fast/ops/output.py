"""How operations results reach the user: a table on a terminal, JSON for scripts.

Every ops command returns a *report* object with ``to_json()`` (the machine-readable document, stable keys) and
``tables()`` (what a person reads). The format is chosen once: ``--output`` wins; otherwise a table when stdout is
a terminal and JSON when it is a pipe or a file — so ``bastion-fast sessions list | jq`` works without a flag.

Prompts, progress and warnings go to stderr, so stdout carries nothing but the result in either format.
rich is imported only when a table or a prompt is actually shown.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import IO, Any, Protocol

__all__ = [
    "FORMATS",
    "Cell",
    "Report",
    "Table",
    "choose_format",
    "confirm",
    "emit",
    "emit_json",
    "stderr_console",
]

FORMATS = ("table", "json")

# Styles for cells that carry a verdict; anything else is printed plain.
STYLES = {
    "error": "bold red",
    "warning": "yellow",
    "info": "cyan",
    "ok": "green",
    "ready": "green",
    "disabled": "yellow",
    "unavailable": "red",
}


@dataclass(frozen=True)
class Cell:
    """A table cell with an explicit style (``None`` = plain)."""

    text: str
    style: str | None = None


@dataclass
class Table:
    """One titled table of strings; ``notes`` are printed under it."""

    title: str | None
    columns: Sequence[str]
    rows: list[Sequence[str | Cell]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


class Report(Protocol):
    """What every ops command returns."""

    def to_json(self) -> Any:
        """The JSON document printed with ``--output json``."""
        ...

    def tables(self) -> list[Table]:
        """The tables printed for a person."""
        ...


def choose_format(requested: str | None, stream: IO[str] | None = None) -> str:
    """``--output`` if given, else ``table`` on a terminal and ``json`` otherwise."""
    if requested:
        return requested
    stream = sys.stdout if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    return "table" if isatty is not None and isatty() else "json"


def emit_json(document: Any, stream: IO[str] | None = None, *, compact: bool = False) -> None:
    """Write one JSON document (one line when ``compact``, for ``--watch`` streams)."""
    stream = sys.stdout if stream is None else stream
    text = json.dumps(document, separators=(",", ":")) if compact else json.dumps(document, indent=2)
    stream.write(text + "\n")
    stream.flush()


def _cell(value: str | Cell) -> Any:
    from rich.text import Text

    if isinstance(value, Cell):
        return Text(value.text, style=value.style or "")
    return Text(str(value))


def render(tables: Sequence[Table]) -> Any:
    """The rich renderable of ``tables`` (a Group), also used by ``--watch``'s live display."""
    from rich.console import Group
    from rich.table import Table as RichTable
    from rich.text import Text

    parts: list[Any] = []
    for table in tables:
        rich_table = RichTable(title=table.title, title_justify="left", show_lines=False)
        for column in table.columns:
            rich_table.add_column(column, overflow="fold")
        for row in table.rows:
            rich_table.add_row(*(_cell(value) for value in row))
        parts.append(rich_table)
        parts.extend(Text(note) for note in table.notes)
    return Group(*parts)


def emit(report: Report, fmt: str, stream: IO[str] | None = None) -> None:
    """Print ``report`` to stdout (or ``stream``) as a table or as JSON."""
    stream = sys.stdout if stream is None else stream
    if fmt == "json":
        emit_json(report.to_json(), stream)
        return
    from rich.console import Console

    Console(file=stream, soft_wrap=False).print(render(report.tables()))


def stderr_console() -> Any:
    """A rich console on stderr for warnings, progress and prompts."""
    from rich.console import Console

    return Console(stderr=True)


def confirm(question: str, *, assume_yes: bool = False, stdin: IO[str] | None = None) -> bool:
    """Ask ``question [y/N]`` on stderr and read one answer line from stdin.

    ``assume_yes`` (``--yes``) answers for the user — the question is still printed, so nothing happens silently.
    End of input or anything but y/yes is a no: a script that did not think about the question changes nothing.
    """
    err = sys.stderr
    if assume_yes:
        err.write(f"{question} [y/N] yes (--yes)\n")
        err.flush()
        return True
    err.write(f"{question} [y/N] ")
    err.flush()
    stdin = sys.stdin if stdin is None else stdin
    try:
        answer = stdin.readline()
    except (OSError, ValueError):
        answer = ""
    if not answer:
        err.write("\n(no answer: nothing changed)\n")
        return False
    return answer.strip().lower() in {"y", "yes"}
