"""The registry store interface; implementations keep runs, checkpoints, versions and aliases."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any

from fedge.transparency import SignedTreeHead
from registry.schemas import (
    AliasEvent,
    AliasMove,
    Approval,
    ArtifactRef,
    AuditEntry,
    Checkpoint,
    CheckpointCreate,
    ModelVersion,
    ModelVersionCreate,
    RunCreate,
    RunInfo,
)

__all__ = ["AttachArtifacts", "RegistryStore"]

# Called inside create_version's transaction with the new version's (name, number, id); returns
# more artifacts of the version (its signed release), which are recorded in the same transaction.
AttachArtifacts = Callable[[str, int, int], Sequence[ArtifactRef]]


class RegistryStore(ABC):
    """Metadata of the registry. Every method is one transaction: it all happens or none of it.

    Lookups of what does not exist raise :class:`fedge.errors.NotFoundError`; writes that clash
    with what is stored raise :class:`fedge.errors.ConflictError`.
    """

    # --- runs -------------------------------------------------------------------------------
    @abstractmethod
    def create_run(self, run: RunCreate) -> RunInfo:
        """Record a new run in status ``pending``."""

    @abstractmethod
    def update_run(
        self,
        run_id: str,
        *,
        status: str | None = None,
        flower_run_id: int | None = None,
        error: str | None = None,
    ) -> RunInfo:
        """Change a run's status, Flower run id or error; a finished status stamps the time."""

    @abstractmethod
    def get_run(self, run_id: str) -> RunInfo:
        """Return one run."""

    @abstractmethod
    def list_runs(self, *, limit: int = 100, offset: int = 0) -> list[RunInfo]:
        """Return the newest runs first (``offset`` skips that many: pages of a long list)."""

    # --- checkpoints --------------------------------------------------------------------------
    @abstractmethod
    def add_checkpoint(self, checkpoint: CheckpointCreate) -> Checkpoint:
        """Record a round's aggregate; one checkpoint per (run, round)."""

    @abstractmethod
    def list_checkpoints(self, run_id: str) -> list[Checkpoint]:
        """Return a run's checkpoints by round."""

    @abstractmethod
    def get_checkpoint(self, checkpoint_id: int) -> Checkpoint:
        """Return one checkpoint."""

    # --- versions and aliases ------------------------------------------------------------------
    @abstractmethod
    def create_version(
        self,
        version: ModelVersionCreate,
        *,
        aliases: tuple[str, ...] = (),
        attach: AttachArtifacts | None = None,
    ) -> ModelVersion:
        """Register the next version number of ``version.name``, pointing ``aliases`` at it.

        ``attach`` is told the new version's name, number and id before the transaction commits;
        the artifacts it returns are the version's too (if it raises, nothing is registered).
        """

    @abstractmethod
    def get_version(self, version_id: int) -> ModelVersion:
        """Return one version by its global id."""

    @abstractmethod
    def get_version_by_number(self, name: str, number: int) -> ModelVersion:
        """Return version ``number`` of model ``name``."""

    @abstractmethod
    def list_versions(
        self, *, name: str | None = None, run_id: str | None = None, limit: int = 100, offset: int = 0
    ) -> list[ModelVersion]:
        """Return the newest versions first, optionally only of one model or one run (``offset``
        skips that many: pages of a long list)."""

    @abstractmethod
    def move_aliases(self, moves: Sequence[AliasMove], *, actor: str, reason: str = "") -> list[ModelVersion]:
        """Apply every move in one transaction, recording who, when and why (audited)."""

    def set_alias(
        self, name: str, alias: str, version_id: int, *, actor: str = "system", reason: str = ""
    ) -> ModelVersion:
        """Point ``name@alias`` at ``version_id`` (moving it if it pointed elsewhere)."""
        return self.move_aliases([AliasMove(name, alias, version_id)], actor=actor, reason=reason)[0]

    @abstractmethod
    def list_alias_events(self, name: str, alias: str | None = None) -> list[AliasEvent]:
        """Return a model's alias moves, oldest first."""

    # --- approvals -------------------------------------------------------------------------------
    @abstractmethod
    def add_approval(self, version_id: int, alias: str, *, actor: str, comment: str = "") -> Approval:
        """Record ``actor``'s approval of a version for ``alias`` (once per actor; audited)."""

    @abstractmethod
    def list_approvals(self, version_id: int, alias: str | None = None) -> list[Approval]:
        """Return a version's approvals, oldest first."""

    # --- audit log -------------------------------------------------------------------------------
    @abstractmethod
    def append_audit(self, *, action: str, actor: str, subject: str, details: dict[str, Any]) -> AuditEntry:
        """Append an event to the hash-chained audit log."""

    @abstractmethod
    def list_audit(
        self, *, after_seq: int = 0, limit: int | None = None, action: str | None = None
    ) -> list[AuditEntry]:
        """Return audit entries in order (only those of ``action`` when given)."""

    @abstractmethod
    def audit_head(self) -> tuple[int, str]:
        """The chain head: the last entry's sequence number and hash."""

    @abstractmethod
    def signed_audit_head(self, *, sign_if_stale: bool = True) -> SignedTreeHead | None:
        """The audit tree's latest signed head (signing one first if it lags the log and a key is
        at hand; ``sign_if_stale=False`` only reads it, as a verifier must)."""

    @abstractmethod
    def audit_consistency(self, old_size: int, new_size: int) -> list[bytes]:
        """The consistency proof of the audit tree from ``old_size`` to ``new_size`` entries."""

    @abstractmethod
    def get_alias(self, name: str, alias: str) -> ModelVersion:
        """Return the version ``name@alias`` points at."""

    @abstractmethod
    def close(self) -> None:
        """Release connections."""
