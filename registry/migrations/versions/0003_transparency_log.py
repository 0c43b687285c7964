"""Transparency log: the audit entries' Merkle tree (complete-subtree hashes) and its signed head.

Existing entries are backfilled as leaves (their canonical JSON, hash included) in sequence order.
No head is signed here (a migration holds no key): the registry signs one at its next append or
when a head is first asked for (``fedge audit head``, the API, a release).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-10
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_BATCH = 1000


def upgrade() -> None:
    op.create_table(
        "audit_tree_nodes",
        sa.Column("level", sa.Integer(), nullable=False),
        sa.Column("idx", sa.Integer(), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("level", "idx"),
    )
    op.create_table(
        "audit_tree_head",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("tree_size", sa.Integer(), nullable=False),
        sa.Column("root_hash", sa.String(length=64), nullable=False),
        sa.Column("timestamp", sa.String(length=40), nullable=False),
        sa.Column("key_id", sa.String(length=16), nullable=False),
        sa.Column("signature", sa.String(length=128), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    _backfill()


def _backfill() -> None:
    # Imported here: the leaf encoding is the registry's, and the tree arithmetic the kernel's.
    from fedge.transparency import MemoryNodes, leaf_hash
    from registry.audit import leaf_data

    conn = op.get_bind()
    rows = conn.execute(
        sa.text(
            "SELECT seq, created_at, actor, action, subject, details, prev_hash, hash "
            "FROM audit_log ORDER BY seq"
        )
    ).mappings()
    tree = MemoryNodes()
    for row in rows:
        details = row["details"]
        if isinstance(details, str | bytes):
            import json

            details = json.loads(details)
        tree.append(leaf_hash(leaf_data({**row, "details": details})))
    nodes = sa.table(
        "audit_tree_nodes",
        sa.column("level", sa.Integer),
        sa.column("idx", sa.Integer),
        sa.column("hash", sa.String),
    )
    items = [{"level": lvl, "idx": idx, "hash": h.hex()} for (lvl, idx), h in sorted(tree.store.items())]
    for start in range(0, len(items), _BATCH):
        op.bulk_insert(nodes, items[start : start + _BATCH])


def downgrade() -> None:
    op.drop_table("audit_tree_head")
    op.drop_table("audit_tree_nodes")
