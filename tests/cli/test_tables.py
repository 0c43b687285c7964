"""The table renderer's layout rules: which columns stay on a narrow terminal, and how wide each is."""

from __future__ import annotations

from fedge.cli.tables import GAP, Column, column_widths, fitting_columns

COLUMNS = (
    Column("name", min_width=12),
    Column("state"),
    Column("seen", priority=2, min_width=10),
    Column("notes", priority=3, min_width=20),
    Column("key", priority=3, min_width=16),
)


def test_columns_go_highest_priority_number_first_rightmost_among_equals() -> None:
    everything = sum(c.narrowest for c in COLUMNS) + GAP * (len(COLUMNS) - 1)

    assert fitting_columns(COLUMNS, everything) == [0, 1, 2, 3, 4]
    assert fitting_columns(COLUMNS, everything - 1) == [0, 1, 2, 3]
    assert fitting_columns(COLUMNS, 40) == [0, 1, 2]
    assert fitting_columns(COLUMNS, 10) == [0, 1], "priority-1 columns stay, however narrow the terminal"


def test_the_widest_column_narrows_first_and_never_below_its_minimum() -> None:
    shown = (Column("name", min_width=12), Column("state"), Column("error", min_width=12))
    cells = [["x" * 60, "ok", "y" * 40]]

    widths = column_widths(shown, cells, 60)

    assert sum(widths) + GAP * 2 == 60
    assert widths[0] >= 12 and widths[2] >= 12 and widths[1] == 5, widths
    assert column_widths(shown, [["short", "ok", "fine"]], 80) == [5, 5, 5], "headers set the floor"
    assert column_widths(shown, cells, 20) == [12, 5, 12], "too narrow: every column at its minimum"
