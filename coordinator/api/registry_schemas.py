"""Request and response schemas of the registry routes (versions, aliases, runs, audit)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from coordinator.api.schemas import Metrics, PublicModel
from fedge.http_limits import MAX_ID

__all__ = [
    "AliasDeclarationRequest",
    "AliasEventPublic",
    "AliasTarget",
    "ApprovalPublic",
    "ApprovalRequest",
    "ArtifactPublic",
    "AuditEntryPublic",
    "AuditVerificationPublic",
    "CheckpointPublic",
    "DeclaredAliasesPublic",
    "PromotionRequest",
    "RegistryRunPublic",
    "VersionPublic",
    "bounded_version_ref",
]


def bounded_version_ref(ref: str) -> str:
    """``ref`` if its id or version number (if any) is an ASCII integer the database can hold."""
    text = ref.strip()
    number = text if text.isdigit() else None
    if number is None and "@" not in text and ":" in text:
        tail = text.rsplit(":", 1)[1]
        number = tail if tail.isdigit() else None
    if number is not None and not (number.isascii() and int(number) <= MAX_ID):
        raise ValueError(f"an id or version number is an integer from 0 to {MAX_ID} (ASCII digits)")
    return ref


# --- requests -----------------------------------------------------------------------------------
class AliasTarget(BaseModel):
    """One move: version reference (``12``, ``digits:3``, ``digits@staging``) and the alias."""

    model_config = ConfigDict(extra="forbid")
    version: Annotated[str, Field(min_length=1, max_length=256), AfterValidator(bounded_version_ref)]
    alias: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.-]+$")


class PromotionRequest(BaseModel):
    """Move one or more aliases at once (all or none)."""

    model_config = ConfigDict(extra="forbid")
    moves: list[AliasTarget] = Field(min_length=1, max_length=50)
    reason: str = Field(min_length=1, max_length=1000)


class ApprovalRequest(BaseModel):
    """Approve a version for an alias."""

    model_config = ConfigDict(extra="forbid")
    alias: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.-]+$")
    comment: str = Field(default="", max_length=1000)


class AliasDeclarationRequest(BaseModel):
    """Declare one more alias every model may take (admin; audited)."""

    model_config = ConfigDict(extra="forbid")
    alias: str = Field(min_length=1, max_length=64, pattern=r"^[a-z][a-z0-9-]*$")
    reason: str = Field(min_length=1, max_length=1000)


# --- responses ----------------------------------------------------------------------------------
class ArtifactPublic(PublicModel):
    """A content-addressed artifact of a version: its role, sha256, size in bytes, media type."""

    kind: str
    sha256: str
    size: int
    media_type: str


class VersionPublic(PublicModel):
    """A registered model version, with the aliases it holds now."""

    id: int
    name: str
    number: int
    run_id: str | None
    checkpoint_id: int | None
    artifacts: list[ArtifactPublic]
    metrics: Metrics
    lineage: dict[str, Any]
    # ``model_config`` names pydantic's settings on a model: the field takes another name in Python.
    model_arguments: dict[str, Any] = Field(alias="model_config")
    description: str
    aliases: list[str]
    created_at: datetime
    parent_version_id: int | None


class ApprovalPublic(PublicModel):
    """An operator's approval of a version for an alias."""

    id: int
    version_id: int
    alias: str
    actor: str
    comment: str
    created_at: datetime


class AliasEventPublic(PublicModel):
    """A recorded alias move."""

    id: int
    name: str
    alias: str
    from_version_id: int | None
    to_version_id: int
    actor: str
    reason: str
    created_at: datetime


class RegistryRunPublic(PublicModel):
    """A run as the registry stores it (its resolved config included)."""

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


class CheckpointPublic(PublicModel):
    """A round's aggregate, with its lineage."""

    id: int
    run_id: str
    round: int
    weights: ArtifactPublic
    metrics: Metrics
    lineage: dict[str, Any]
    created_at: datetime


class AuditEntryPublic(PublicModel):
    """One entry of the hash-chained audit log."""

    seq: int
    created_at: str
    actor: str
    action: str
    subject: str
    details: dict[str, Any]
    prev_hash: str
    hash: str


class AuditVerificationPublic(PublicModel):
    """The result of walking the audit chain: where it first breaks, if anywhere, and why."""

    ok: bool
    entries: int
    first_bad_seq: int | None
    reason: str


class DeclaredAliasesPublic(PublicModel):
    """The aliases a model may take: the registry config's, its gates' and those an admin declared."""

    aliases: list[str]
