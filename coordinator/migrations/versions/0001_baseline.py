"""Baseline: the coordinator's tables as ``create_all`` made them before migrations existed.

Tokens, device reports, drift summaries, reports and triggers, and enrolled nodes. A database
holding all of them is stamped with this revision instead of running it; one that an older release
made holds only some, and this revision creates the rest.

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

__all__ = ["branch_labels", "depends_on", "down_revision", "downgrade", "revision", "upgrade"]

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _tables() -> dict[str, tuple[sa.Column | sa.Constraint, ...]]:
    return {
        "api_tokens": (
            sa.Column("id", sa.Integer(), nullable=False),
            sa.Column("name", sa.String(length=128), nullable=False),
            sa.Column("role", sa.String(length=16), nullable=False),
            sa.Column("token_sha256", sa.String(length=64), nullable=False),
            sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
            sa.PrimaryKeyConstraint("id"),
            sa.UniqueConstraint("token_sha256"),
        ),
        "device_reports": (
            sa.Column("id", sa.Integer(), nullable=False),
            sa.Column("device", sa.String(length=128), nullable=False),
            sa.Column("model_name", sa.String(length=128), nullable=False),
            sa.Column("model_version", sa.String(length=64), nullable=False),
            sa.Column("served", sa.Integer(), nullable=False),
            sa.Column("health", sa.JSON(), nullable=False),
            sa.Column("drift", sa.JSON(), nullable=False),
            sa.Column("reported_by", sa.String(length=256), nullable=False),
            sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
            sa.PrimaryKeyConstraint("id"),
        ),
        "drift_summaries": (
            sa.Column("id", sa.Integer(), nullable=False),
            sa.Column("model", sa.String(length=128), nullable=False),
            sa.Column("version", sa.Integer(), nullable=False),
            sa.Column("window", sa.Integer(), nullable=False),
            sa.Column("site", sa.String(length=128), nullable=False),
            sa.Column("source", sa.String(length=16), nullable=False),
            sa.Column("window_size", sa.Integer(), nullable=False),
            sa.Column("epsilon", sa.Float(), nullable=False),
            sa.Column("delta", sa.Float(), nullable=False),
            sa.Column("mechanism", sa.String(length=16), nullable=False),
            sa.Column("shape", sa.JSON(), nullable=False),
            sa.Column("counts", sa.LargeBinary(), nullable=False),
            sa.Column("class_counts", sa.LargeBinary(), nullable=True),
            sa.Column("received_from", sa.String(length=256), nullable=False),
            sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
            sa.PrimaryKeyConstraint("id"),
            sa.UniqueConstraint("model", "version", "window", "site", name="uq_drift_summary_site_window"),
        ),
        "drift_reports": (
            sa.Column("id", sa.Integer(), nullable=False),
            sa.Column("model", sa.String(length=128), nullable=False),
            sa.Column("version", sa.Integer(), nullable=False),
            sa.Column("window", sa.Integer(), nullable=False),
            sa.Column("sites", sa.JSON(), nullable=False),
            sa.Column("window_rows", sa.Integer(), nullable=False),
            sa.Column("epsilon", sa.Float(), nullable=False),
            sa.Column("features", sa.JSON(), nullable=False),
            sa.Column("overall", sa.JSON(), nullable=False),
            sa.Column("per_site", sa.JSON(), nullable=False),
            sa.Column("classes", sa.JSON(), nullable=True),
            sa.Column("flagged", sa.Boolean(), nullable=False),
            sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
            sa.PrimaryKeyConstraint("id"),
            sa.UniqueConstraint("model", "version", "window", name="uq_drift_report_window"),
        ),
        "drift_triggers": (
            sa.Column("id", sa.Integer(), nullable=False),
            sa.Column("model", sa.String(length=128), nullable=False),
            sa.Column("version", sa.Integer(), nullable=False),
            sa.Column("run_id", sa.String(length=64), nullable=True),
            sa.Column("outcome", sa.String(length=32), nullable=False),
            sa.Column("reason", sa.String(length=512), nullable=False),
            sa.Column("evidence", sa.JSON(), nullable=False),
            sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
            sa.PrimaryKeyConstraint("id"),
        ),
        "nodes": (
            sa.Column("id", sa.Integer(), nullable=False),
            sa.Column("name", sa.String(length=128), nullable=False),
            sa.Column("public_key_pem", sa.Text(), nullable=False),
            sa.Column("key_sha256", sa.String(length=64), nullable=False),
            sa.Column("flower_node_id", sa.String(length=24), nullable=True),
            sa.Column("enrolled_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("enrolled_by", sa.String(length=128), nullable=False),
            sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
            sa.Column("revoked_by", sa.String(length=128), nullable=True),
            sa.PrimaryKeyConstraint("id"),
            sa.UniqueConstraint("name"),
        ),
    }


_INDEXES = {
    "device_reports": ("device",),
    "drift_reports": ("model",),
    "drift_triggers": ("model",),
}


def upgrade() -> None:
    # An older release's create_all made some of these tables: they are kept as they are.
    existing = set(sa.inspect(op.get_bind()).get_table_names())
    for name, items in _tables().items():
        if name in existing:
            continue
        op.create_table(name, *items)
        for column in _INDEXES.get(name, ()):
            op.create_index(f"ix_{name}_{column}", name, [column])


def downgrade() -> None:
    for name in reversed(list(_tables())):
        for column in _INDEXES.get(name, ()):
            op.drop_index(f"ix_{name}_{column}", table_name=name)
        op.drop_table(name)
