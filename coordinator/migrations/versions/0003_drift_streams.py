"""Drift streams: a window is numbered within its stream (a monitor run, one edge device).

``drift_summaries.stream`` and ``drift_reports.source``/``stream`` join the unique keys, so an edge
device's window 0 is no longer merged into a monitor run's window 0 (nor into another device's).
Existing rows get ``''`` (one stream per source, as before).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

__all__ = ["branch_labels", "depends_on", "down_revision", "downgrade", "revision", "upgrade"]

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

# table -> (columns added, unique key before, unique key after)
_KEYS = {
    "drift_summaries": (
        (("stream", 128),),
        ("uq_drift_summary_site_window", ["model", "version", "window", "site"]),
        ("uq_drift_summary_stream_site", ["model", "version", "source", "stream", "window", "site"]),
    ),
    "drift_reports": (
        (("source", 16), ("stream", 128)),
        ("uq_drift_report_window", ["model", "version", "window"]),
        ("uq_drift_report_stream", ["model", "version", "source", "stream", "window"]),
    ),
}


def _unique_names(table: str) -> set[str]:
    return {u["name"] for u in sa.inspect(op.get_bind()).get_unique_constraints(table) if u["name"]}


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    for table, (columns, (old_name, _), (new_name, new_columns)) in _KEYS.items():
        present = _unique_names(table)
        have = {c["name"] for c in inspector.get_columns(table)}
        if new_name in present and all(name in have for name, _ in columns):
            continue  # already keyed by stream (a database stamped back by hand)
        with op.batch_alter_table(table) as batch:
            for name, length in columns:
                if name not in have:
                    batch.add_column(
                        sa.Column(name, sa.String(length=length), nullable=False, server_default="")
                    )
            if old_name in present:  # a database an older release's create_all made may lack the name
                batch.drop_constraint(old_name, type_="unique")
            if new_name not in present:
                batch.create_unique_constraint(new_name, new_columns)


def downgrade() -> None:
    for table, (columns, (old_name, old_columns), (new_name, _)) in _KEYS.items():
        with op.batch_alter_table(table) as batch:
            batch.drop_constraint(new_name, type_="unique")
            for name, _length in columns:
                batch.drop_column(name)
            batch.create_unique_constraint(old_name, old_columns)
