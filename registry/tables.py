"""SQLModel tables of the registry (rows stay inside the SQL store)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Column, UniqueConstraint
from sqlmodel import Field, SQLModel

__all__ = [
    "AliasEventRow",
    "AliasRow",
    "ApprovalRow",
    "AuditHeadRow",
    "AuditRow",
    "CheckpointRow",
    "ModelVersionRow",
    "RunRow",
    "VersionArtifactRow",
]


def _now() -> datetime:
    return datetime.now(UTC)


class RunRow(SQLModel, table=True):
    """A federated training run."""

    __tablename__ = "runs"

    run_id: str = Field(primary_key=True, max_length=64)
    task: str = Field(max_length=128)
    strategy: str = Field(max_length=128)
    num_rounds: int
    status: str = Field(max_length=32, index=True)
    config: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    config_hash: str = Field(max_length=64)
    reason: str = Field(default="operator", max_length=512)
    mode: str = Field(default="simulation", max_length=32)
    # Flower run ids are unsigned 64-bit; SQL integers are signed, so the id is kept as text.
    flower_run_id: str | None = Field(default=None, index=True, max_length=20)
    error: str | None = Field(default=None)
    created_at: datetime = Field(default_factory=_now)
    finished_at: datetime | None = None


class CheckpointRow(SQLModel, table=True):
    """One round's aggregate of a run."""

    __tablename__ = "checkpoints"
    __table_args__ = (UniqueConstraint("run_id", "round", name="uq_checkpoint_run_round"),)

    id: int | None = Field(default=None, primary_key=True)
    run_id: str = Field(foreign_key="runs.run_id", index=True, max_length=64)
    round: int
    weights_sha256: str = Field(max_length=64)
    weights_size: int
    metrics: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    lineage: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(default_factory=_now)


class ModelVersionRow(SQLModel, table=True):
    """A registered version of a named model."""

    __tablename__ = "model_versions"
    __table_args__ = (UniqueConstraint("name", "number", name="uq_version_name_number"),)

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(index=True, max_length=128)
    number: int
    run_id: str | None = Field(default=None, foreign_key="runs.run_id", index=True, max_length=64)
    checkpoint_id: int | None = Field(default=None, foreign_key="checkpoints.id")
    parent_version_id: int | None = Field(default=None, foreign_key="model_versions.id")
    metrics: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    lineage: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    model_config_json: dict[str, Any] = Field(sa_column=Column("model_config", JSON, nullable=False))
    description: str = Field(default="")
    created_at: datetime = Field(default_factory=_now)


class VersionArtifactRow(SQLModel, table=True):
    """An artifact (by digest) that belongs to a model version."""

    __tablename__ = "version_artifacts"
    __table_args__ = (UniqueConstraint("version_id", "kind", name="uq_artifact_version_kind"),)

    id: int | None = Field(default=None, primary_key=True)
    version_id: int = Field(foreign_key="model_versions.id", index=True)
    kind: str = Field(max_length=64)
    sha256: str = Field(max_length=64)
    size: int
    media_type: str = Field(max_length=128)


class AliasRow(SQLModel, table=True):
    """A movable name (``candidate``, ``staging``, ``production``) pointing at one version."""

    __tablename__ = "aliases"

    name: str = Field(primary_key=True, max_length=128)
    alias: str = Field(primary_key=True, max_length=128)
    version_id: int = Field(foreign_key="model_versions.id")
    updated_at: datetime = Field(default_factory=_now)


class AliasEventRow(SQLModel, table=True):
    """One alias move: who moved which alias from which version to which, when and why."""

    __tablename__ = "alias_events"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(index=True, max_length=128)
    alias: str = Field(max_length=128)
    from_version_id: int | None = Field(default=None)
    to_version_id: int = Field(foreign_key="model_versions.id")
    actor: str = Field(max_length=256)
    reason: str = Field(default="")
    created_at: datetime = Field(default_factory=_now)


class ApprovalRow(SQLModel, table=True):
    """An operator's approval of a version for an alias (one per operator, version and alias)."""

    __tablename__ = "approvals"
    __table_args__ = (
        UniqueConstraint("version_id", "alias", "actor", name="uq_approval_version_alias_actor"),
    )

    id: int | None = Field(default=None, primary_key=True)
    version_id: int = Field(foreign_key="model_versions.id", index=True)
    alias: str = Field(max_length=128)
    actor: str = Field(max_length=256)
    comment: str = Field(default="")
    created_at: datetime = Field(default_factory=_now)


class AuditRow(SQLModel, table=True):
    """An append-only, hash-chained record of a lifecycle event."""

    __tablename__ = "audit_log"

    seq: int = Field(primary_key=True)
    created_at: str = Field(max_length=40)  # ISO 8601, hashed as written
    actor: str = Field(max_length=256)
    action: str = Field(index=True, max_length=64)
    subject: str = Field(max_length=256)
    details: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    prev_hash: str = Field(max_length=64)
    hash: str = Field(max_length=64)


class AuditHeadRow(SQLModel, table=True):
    """The chain's head (one row): appends lock it, and verify checks the last entry against it."""

    __tablename__ = "audit_head"

    id: int = Field(default=1, primary_key=True)
    seq: int = 0
    hash: str = Field(default="0" * 64, max_length=64)
