"""SQLModel tables of the registry; each row converts itself to its public schema (rows stay in the store)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Column, UniqueConstraint
from sqlmodel import Field, SQLModel

from registry.schemas import (
    AliasEvent,
    Approval,
    ArtifactRef,
    AuditEntry,
    Checkpoint,
    CheckpointCreate,
    ModelVersion,
    ModelVersionCreate,
    RunCreate,
    RunInfo,
    RunStatus,
)

__all__ = [
    "AliasEventRow",
    "AliasRow",
    "ApprovalRow",
    "AuditHeadRow",
    "AuditRow",
    "AuditTreeHeadRow",
    "AuditTreeNodeRow",
    "CheckpointRow",
    "ModelVersionRow",
    "RunRow",
    "VersionArtifactRow",
    "WebhookDeliveryRow",
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

    @classmethod
    def from_create(cls, run: RunCreate) -> RunRow:
        """The row of a new, pending run."""
        return cls(
            run_id=run.run_id,
            task=run.task,
            strategy=run.strategy,
            num_rounds=run.num_rounds,
            status=RunStatus.PENDING,
            config=run.config,
            config_hash=run.config_hash,
            reason=run.reason,
            mode=run.mode,
        )

    def to_info(self) -> RunInfo:
        """The run as the registry's API returns it."""
        return RunInfo(
            run_id=self.run_id,
            task=self.task,
            strategy=self.strategy,
            num_rounds=self.num_rounds,
            status=self.status,
            config=dict(self.config),
            config_hash=self.config_hash,
            reason=self.reason,
            mode=self.mode,
            flower_run_id=int(self.flower_run_id) if self.flower_run_id is not None else None,
            error=self.error,
            created_at=self.created_at,
            finished_at=self.finished_at,
        )


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

    @classmethod
    def from_create(cls, checkpoint: CheckpointCreate) -> CheckpointRow:
        """The row of a new checkpoint."""
        return cls(
            run_id=checkpoint.run_id,
            round=checkpoint.round,
            weights_sha256=checkpoint.weights.sha256,
            weights_size=checkpoint.weights.size,
            metrics=dict(checkpoint.metrics),
            lineage=dict(checkpoint.lineage),
        )

    def to_entity(self) -> Checkpoint:
        """The checkpoint as the registry's API returns it."""
        assert self.id is not None, "a checkpoint row is converted after it was flushed"
        return Checkpoint(
            id=self.id,
            run_id=self.run_id,
            round=self.round,
            weights=ArtifactRef("weights", self.weights_sha256, self.weights_size, "application/safetensors"),
            metrics=dict(self.metrics),
            lineage=dict(self.lineage),
            created_at=self.created_at,
        )


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

    @classmethod
    def from_create(cls, version: ModelVersionCreate, *, number: int) -> ModelVersionRow:
        """The row of a new version, numbered ``number`` among its model's."""
        return cls(
            name=version.name,
            number=number,
            run_id=version.run_id,
            checkpoint_id=version.checkpoint_id,
            metrics=dict(version.metrics),
            lineage=dict(version.lineage),
            model_config_json=dict(version.model_config),
            description=version.description,
            parent_version_id=version.parent_version_id,
        )

    def to_entity(self, *, artifacts: tuple[ArtifactRef, ...], aliases: tuple[str, ...]) -> ModelVersion:
        """The version as the registry's API returns it, with its artifacts and the aliases on it."""
        columns = {**self.model_dump(), "model_config": self.model_config_json}
        return ModelVersionRow.entity_from_columns(columns, artifacts=artifacts, aliases=aliases)

    @staticmethod
    def entity_from_columns(
        columns: Mapping[str, Any], *, artifacts: tuple[ArtifactRef, ...], aliases: tuple[str, ...]
    ) -> ModelVersion:
        """The same from this table's columns by name (a plain row's ``_mapping``: listing skips the ORM)."""
        return ModelVersion(
            id=columns["id"],
            name=columns["name"],
            number=columns["number"],
            run_id=columns["run_id"],
            checkpoint_id=columns["checkpoint_id"],
            artifacts=artifacts,
            metrics=dict(columns["metrics"]),
            lineage=dict(columns["lineage"]),
            model_config=dict(columns["model_config"]),
            description=columns["description"],
            aliases=aliases,
            created_at=columns["created_at"],
            parent_version_id=columns["parent_version_id"],
        )


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

    @classmethod
    def from_ref(cls, version_id: int, ref: ArtifactRef) -> VersionArtifactRow:
        """The row linking artifact ``ref`` to version ``version_id``."""
        return cls(
            version_id=version_id, kind=ref.kind, sha256=ref.sha256, size=ref.size, media_type=ref.media_type
        )


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

    def to_entity(self) -> AliasEvent:
        """The alias move as the registry's API returns it."""
        assert self.id is not None, "an alias event row is converted after it was flushed"
        return AliasEvent(
            self.id,
            self.name,
            self.alias,
            self.from_version_id,
            self.to_version_id,
            self.actor,
            self.reason,
            self.created_at,
        )


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

    def to_entity(self) -> Approval:
        """The approval as the registry's API returns it."""
        assert self.id is not None, "an approval row is converted after it was flushed"
        return Approval(self.id, self.version_id, self.alias, self.actor, self.comment, self.created_at)


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

    def to_entity(self) -> AuditEntry:
        """The entry as the registry's API returns it (and as its hash covers it)."""
        return AuditEntry(
            seq=self.seq,
            created_at=self.created_at,
            actor=self.actor,
            action=self.action,
            subject=self.subject,
            details=dict(self.details),
            prev_hash=self.prev_hash,
            hash=self.hash,
        )


class AuditHeadRow(SQLModel, table=True):
    """The chain's head (one row): appends lock it, and verify checks the last entry against it."""

    __tablename__ = "audit_head"

    id: int = Field(default=1, primary_key=True)
    seq: int = 0
    hash: str = Field(default="0" * 64, max_length=64)


class AuditTreeNodeRow(SQLModel, table=True):
    """A complete subtree of the audit log's Merkle tree: ``2**level`` entries from ``index * 2**level``."""

    __tablename__ = "audit_tree_nodes"

    level: int = Field(primary_key=True)
    idx: int = Field(primary_key=True)
    hash: str = Field(max_length=64)


class AuditTreeHeadRow(SQLModel, table=True):
    """The audit tree's latest signed head (one row), replaced after every append."""

    __tablename__ = "audit_tree_head"

    id: int = Field(default=1, primary_key=True)
    tree_size: int
    root_hash: str = Field(max_length=64)
    timestamp: str = Field(max_length=40)
    key_id: str = Field(max_length=16)
    signature: str = Field(max_length=128)


class WebhookDeliveryRow(SQLModel, table=True):
    """One event's delivery to one webhook: its attempts, last status and last error."""

    __tablename__ = "webhook_deliveries"

    id: str = Field(primary_key=True, max_length=36)  # the X-Fedge-Delivery uuid
    event: str = Field(index=True, max_length=64)
    url: str = Field(max_length=2048)  # without query or credentials
    status: str = Field(max_length=16)  # pending, delivered, failed
    attempts: int = 0
    status_code: int | None = None
    last_error: str = Field(default="")
    created_at: datetime = Field(default_factory=_now, index=True)
    updated_at: datetime = Field(default_factory=_now)
