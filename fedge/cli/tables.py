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
from typing import Any

__all__ = [
    "DEFAULT_WIDTH",
    "Column",
    "column_widths",
    "fitting_columns",
    "output_width",
    "plain_output",
    "print_table",
]

DEFAULT_WIDTH = 80  # when stdout is not a terminal and COLUMNS says nothing
GAP = 3  # between two columns: a space of padding either side of a blank rule


@dataclass(frozen=True)
class Column:
    """One column of a list command's table.

    ``priority``: 1 is never dropped; on a narrow terminal the highest number goes first (the
    rightmost among equals). ``min_width``: the narrowest the column wraps to (never narrower
    than its header, nor than 4).
    """

    header: str
    priority: int = 1
    min_width: int = 4

    @property
    def narrowest(self) -> int:
        return max(self.min_width, len(self.header))


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
        return sum(columns[i].narrowest for i in indices) + GAP * (len(indices) - 1)

    while len(kept) > 1 and needed(kept) > width:
        droppable = [i for i in kept[1:] if columns[i].priority > 1]
        if not droppable:
            break
        kept.remove(max(droppable, key=lambda i: (columns[i].priority, i)))
    return kept


def column_widths(columns: Sequence[Column], cells: Sequence[Sequence[str]], width: int) -> list[int]:
    """Each column's width: as wide as its longest cell or header, then the widest ones narrowed
    in turn (never below their ``narrowest``) until the table fits ``width``."""
    from rich.cells import cell_len

    widths = [
        max([cell_len(col.header), *(cell_len(row[i]) for row in cells)]) for i, col in enumerate(columns)
    ]
    excess = sum(widths) + GAP * (len(widths) - 1) - width
    while excess > 0:
        shrinkable = [i for i, w in enumerate(widths) if w > columns[i].narrowest]
        if not shrinkable:
            break  # even the narrowest layout is wider: the terminal wraps what is left
        widest = max(shrinkable, key=lambda i: widths[i])
        widths[widest] -= 1
        excess -= 1
    return widths


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
    shown = [columns[i] for i in kept]
    rows = list(rows)
    for row in rows:
        if len(row) != len(columns):
            raise ValueError(f"a row of {len(row)} values for {len(columns)} columns: {row!r}")
    cells = [["-" if row[i] is None else str(row[i]) for i in kept] for row in rows]
    widths = column_widths(shown, cells, width)
    table = Table(
        title=Text(title) if title else None,
        box=ASCII_HEAD if plain else box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        header_style="" if plain else "bold",
        title_style="" if plain else "bold",
        expand=False,
    )
    for col, col_width in zip(shown, widths, strict=True):
        table.add_column(col.header, overflow="fold", width=col_width)
    for row_cells in cells:
        table.add_row(*(Text(cell) for cell in row_cells))
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
