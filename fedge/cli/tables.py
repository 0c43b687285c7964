"""The one table renderer of the CLI's list commands: a header row, fitted to the terminal's width.

A table never grows wider than the terminal (80 columns when stdout is not a terminal and
``COLUMNS`` is unset): long cells wrap, and when even the narrowest layout does not fit, whole
columns are dropped, highest ``priority`` number first (the command declares which columns an
operator can do without). Piped output, ``TERM=dumb`` and ``NO_COLOR`` get no ANSI codes at all.
Cell text is printed as given: no rich markup is interpreted in names an operator chose.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["DEFAULT_WIDTH", "Column", "fitting_columns", "output_width", "plain_output", "print_table"]

DEFAULT_WIDTH = 80  # when stdout is not a terminal and COLUMNS says nothing
CELL_PADDING = 2  # one space either side of every cell
SEPARATOR = 1  # the (blank) rule between two columns


@dataclass(frozen=True)
class Column:
    """One column of a list command's table.

    ``priority``: 1 is never dropped; on a narrow terminal the highest number goes first (the
    rightmost among equals). ``min_width``: the narrowest the column wraps to (default: its
    header's length, at least 4).
    """

    header: str
    priority: int = 1
    min_width: int | None = None
    justify: Literal["left", "right"] = "left"

    @property
    def narrowest(self) -> int:
        return self.min_width if self.min_width is not None else max(len(self.header), 4)


def _ascii_head() -> Any:
    from rich.box import Box

    # box.SIMPLE_HEAD drawn with '-': what a pipe into grep or awk expects under a header
    return Box("    \n    \n -- \n    \n    \n    \n    \n    \n", ascii=True)


ASCII_HEAD = _ascii_head()


def output_width() -> int:
    """Columns to fit: ``COLUMNS`` if set, else the terminal's width, else 80 when not a terminal."""
    raw = os.environ.get("COLUMNS", "")
    if raw.strip().isdigit() and int(raw) > 0:
        return int(raw)
    if _stdout_is_tty():
        return shutil.get_terminal_size((DEFAULT_WIDTH, 24)).columns
    return DEFAULT_WIDTH


def plain_output() -> bool:
    """Whether to write no ANSI codes: stdout is not a terminal, ``NO_COLOR`` is set or ``TERM=dumb``."""
    return not _stdout_is_tty() or bool(os.environ.get("NO_COLOR")) or os.environ.get("TERM") == "dumb"


def fitting_columns(columns: Sequence[Column], width: int) -> list[int]:
    """Indices (in order) of the columns kept so that their narrowest layout fits ``width``.

    Columns go highest priority number first, the rightmost among equals; priority-1 columns and
    the first column always stay (a table too narrow even for them wraps them further).
    """
    kept = list(range(len(columns)))

    def needed(indices: list[int]) -> int:
        return sum(columns[i].narrowest + CELL_PADDING for i in indices) + SEPARATOR * (len(indices) - 1)

    while len(kept) > 1 and needed(kept) > width:
        droppable = [i for i in kept[1:] if columns[i].priority > 1]
        if not droppable:
            break
        kept.remove(max(droppable, key=lambda i: (columns[i].priority, i)))
    return kept


def print_table(
    columns: Sequence[Column],
    rows: Iterable[Sequence[Any]],
    *,
    title: str | None = None,
    width: int | None = None,
) -> None:
    """Print ``rows`` (one value per column; ``None`` shows as ``-``) under a header row on stdout."""
    from rich import box
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    width = width or output_width()
    plain = plain_output()
    kept = fitting_columns(columns, width)
    table = Table(
        title=Text(title) if title else None,
        box=ASCII_HEAD if plain else box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        header_style="" if plain else "bold",
        title_style="" if plain else "bold",
        expand=False,
    )
    for i in kept:
        col = columns[i]
        table.add_column(col.header, justify=col.justify, overflow="fold", min_width=col.narrowest)
    for row in rows:
        table.add_row(*(Text("-" if row[i] is None else str(row[i])) for i in kept))
    console = Console(
        file=sys.stdout,
        width=width,
        color_system=None if plain else "auto",
        force_terminal=False if plain else None,
        no_color=plain,
        highlight=False,
        emoji=False,
        markup=False,
        soft_wrap=False,
    )
    with console.capture() as captured:
        console.print(table)
    # rich pads every line to the table's width: trailing blanks only get in a pipe's way
    sys.stdout.write("".join(line.rstrip() + "\n" for line in captured.get().splitlines()))
    sys.stdout.flush()


def _stdout_is_tty() -> bool:
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):  # a closed or replaced stream
        return False
