"""Public schemas of the registry: plain frozen dataclasses, never table rows."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

__all__ = [
    "AliasEvent",
    "AliasMove",
    "Approval",
    "ArtifactRef",
    "AuditEntry",
    "Checkpoint",
    "CheckpointCreate",
    "ModelVersion",
    "ModelVersionCreate",
    "NodeContribution",
    "RunCreate",
    "RunInfo",
    "RunStatus",
]


class RunStatus:
    """The states a run moves through (plain strings, stored as such)."""

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    STOPPED = "stopped"
    # The coordinator died under the run (found at its restart); `fedge runs resume` continues it.
    INTERRUPTED = "interrupted"
    # An interrupted (or stopped, failed) run another run continued from its last checkpoint.
    RESUMED = "resumed"
    FINISHED = frozenset({COMPLETED, FAILED, STOPPED, INTERRUPTED, RESUMED})


@dataclass(frozen=True)
class ArtifactRef:
    """A content-addressed artifact: its role in a version, sha256 and size in bytes."""

    kind: str
    sha256: str
    size: int
    media_type: str = "application/octet-stream"


@dataclass(frozen=True)
class NodeContribution:
    """One node's part in a round: its id, the rows it trained on and the metrics it sent."""

    node_id: int
    num_examples: int
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class RunCreate:
    """What is known of a run when it is asked for."""

    run_id: str
    task: str
    strategy: str
    num_rounds: int
    config: dict[str, Any]
    config_hash: str
    reason: str = "operator"
    mode: str = "simulation"


@dataclass(frozen=True)
class RunInfo:
    """A run as stored."""

    run_id: str
    task: str
    strategy: str
    num_rounds: int
    status: str
    config: dict[str, Any]
    config_hash: str
    reason: str
    mode: str
    flower_run_id: int | None
    error: str | None
    created_at: datetime
    finished_at: datetime | None


@dataclass(frozen=True)
class CheckpointCreate:
    """An aggregate to record after a round, with its lineage."""

    run_id: str
    round: int
    weights: ArtifactRef
    metrics: dict[str, float]
    lineage: dict[str, Any]


@dataclass(frozen=True)
class Checkpoint:
    """A round's aggregate as stored."""

    id: int
    run_id: str
    round: int
    weights: ArtifactRef
    metrics: dict[str, float]
    lineage: dict[str, Any]
    created_at: datetime


@dataclass(frozen=True)
class ModelVersionCreate:
    """A model version to register: its model name, origin, artifacts, metrics and lineage."""

    name: str
    run_id: str | None
    checkpoint_id: int | None
    artifacts: tuple[ArtifactRef, ...]
    metrics: dict[str, float]
    lineage: dict[str, Any]
    model_config: dict[str, Any]
    description: str = ""
    parent_version_id: int | None = None


@dataclass(frozen=True)
class ModelVersion:
    """A registered model version, with the aliases it holds now."""

    id: int
    name: str
    number: int
    run_id: str | None
    checkpoint_id: int | None
    artifacts: tuple[ArtifactRef, ...]
    metrics: dict[str, float]
    lineage: dict[str, Any]
    model_config: dict[str, Any]
    description: str
    aliases: tuple[str, ...]
    created_at: datetime
    parent_version_id: int | None = None

    def artifact(self, kind: str) -> ArtifactRef | None:
        """Return the artifact of ``kind`` (``weights``, ``onnx``, ...) or ``None``."""
        return next((a for a in self.artifacts if a.kind == kind), None)


@dataclass(frozen=True)
class AliasMove:
    """Point ``name@alias`` at ``version_id``."""

    name: str
    alias: str
    version_id: int


@dataclass(frozen=True)
class AliasEvent:
    """A recorded alias move."""

    id: int
    name: str
    alias: str
    from_version_id: int | None
    to_version_id: int
    actor: str
    reason: str
    created_at: datetime


@dataclass(frozen=True)
class Approval:
    """An operator's approval of a version for an alias."""

    id: int
    version_id: int
    alias: str
    actor: str
    comment: str
    created_at: datetime


@dataclass(frozen=True)
class AuditEntry:
    """One entry of the hash-chained audit log."""

    seq: int
    created_at: str
    actor: str
    action: str
    subject: str
    details: dict[str, Any]
    prev_hash: str
    hash: str
