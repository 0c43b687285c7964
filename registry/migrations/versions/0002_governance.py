"""Governance: version parents, alias history, approvals and the hash-chained audit log.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

# The name PostgreSQL gives the constraint create_all makes, so both paths end up alike.
_PARENT_FK = "model_versions_parent_version_id_fkey"


def upgrade() -> None:
    # SQLite cannot add a foreign key with ALTER: the batch copies the table and swaps it in
    # (upgrade_schema turns SQLite's foreign key enforcement off meanwhile and checks afterwards).
    with op.batch_alter_table("model_versions") as batch:
        batch.add_column(sa.Column("parent_version_id", sa.Integer(), nullable=True))
        batch.create_foreign_key(_PARENT_FK, "model_versions", ["parent_version_id"], ["id"])

    op.create_table(
        "alias_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("alias", sa.String(length=128), nullable=False),
        sa.Column("from_version_id", sa.Integer(), nullable=True),
        sa.Column("to_version_id", sa.Integer(), nullable=False),
        sa.Column("actor", sa.String(length=256), nullable=False),
        sa.Column("reason", sa.String(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["to_version_id"], ["model_versions.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_alias_events_name", "alias_events", ["name"])

    op.create_table(
        "approvals",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("alias", sa.String(length=128), nullable=False),
        sa.Column("actor", sa.String(length=256), nullable=False),
        sa.Column("comment", sa.String(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["version_id"], ["model_versions.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("version_id", "alias", "actor", name="uq_approval_version_alias_actor"),
    )
    op.create_index("ix_approvals_version_id", "approvals", ["version_id"])

    op.create_table(
        "audit_log",
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.String(length=40), nullable=False),
        sa.Column("actor", sa.String(length=256), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("subject", sa.String(length=256), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("prev_hash", sa.String(length=64), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("seq"),
    )
    op.create_index("ix_audit_log_action", "audit_log", ["action"])

    op.create_table(
        "audit_head",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )


def downgrade() -> None:
    op.drop_table("audit_head")
    op.drop_index("ix_audit_log_action", table_name="audit_log")
    op.drop_table("audit_log")
    op.drop_index("ix_approvals_version_id", table_name="approvals")
    op.drop_table("approvals")
    op.drop_index("ix_alias_events_name", table_name="alias_events")
    op.drop_table("alias_events")
    with op.batch_alter_table("model_versions") as batch:
        batch.drop_constraint(_PARENT_FK, type_="foreignkey")
        batch.drop_column("parent_version_id")
