"""The SQL implementation of :class:`RegistryStore` (SQLite by default, PostgreSQL through its URL)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func
from sqlalchemy import select as sa_select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session, select

from fedge.errors import ConflictError, NotFoundError, RegistryError, RegistryUnavailableError
from fedge.transparency import SignedTreeHead
from registry.audit import (
    HeadSigner,
    append_entry,
    ensure_chain_head,
    lock_writers,
    read_chain_head,
    read_signed_head,
    sign_current_head,
    stored_consistency_proof,
)
from registry.db import SqlStoreBase, redact_url, session_scope
from registry.migrate import upgrade_schema
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
    RunStatus,
)
from registry.store import AttachArtifacts, RegistryStore
from registry.tables import (
    AliasEventRow,
    AliasRow,
    ApprovalRow,
    AuditRow,
    CheckpointRow,
    ModelVersionRow,
    RunRow,
    VersionArtifactRow,
)

__all__ = ["SqlRegistryStore"]

log = logging.getLogger(__name__)


class SqlRegistryStore(SqlStoreBase, RegistryStore):
    """Registry metadata in a SQL database.

    Opening migrates the registry's tables to the newest revision and creates the audit chain's
    head (safe when several processes open a new registry at once).

    Parameters
    ----------
    engine : Engine
        From :func:`registry.db.open_engine`, shared with the other stores of the database;
        :meth:`from_url` opens one of the store's own.
    head_signer : callable, optional
        Gives the key that signs the audit tree's head after every append (the registry's release
        key, loaded on first use); without one the tree grows but no head is signed.

    Raises
    ------
    RegistryUnavailableError
        If the database cannot be opened, created or migrated.
    """

    def __init__(self, engine: Engine, *, head_signer: HeadSigner | None = None) -> None:
        super().__init__(engine)
        self.head_signer = head_signer
        try:
            upgrade_schema(engine)
            ensure_chain_head(engine)
        except SQLAlchemyError as exc:
            raise RegistryUnavailableError(
                f"cannot open the registry database {redact_url(str(engine.url))}: "
                f"{getattr(exc, 'orig', exc)}; check that the path exists and is writable"
            ) from exc

    def _session(self) -> AbstractContextManager[Session]:
        return session_scope(
            self.engine, unavailable=RegistryUnavailableError, failed=RegistryError, what="registry database"
        )

    # --- runs -------------------------------------------------------------------------------
    def create_run(self, run: RunCreate) -> RunInfo:
        row = RunRow.from_create(run)
        with self._session() as s:
            s.add(row)
        return row.to_info()

    def update_run(
        self,
        run_id: str,
        *,
        status: str | None = None,
        flower_run_id: int | None = None,
        error: str | None = None,
    ) -> RunInfo:
        with self._session() as s:
            row = _get(s, RunRow, run_id, f"run {run_id!r}")
            if status is not None:
                row.status = status
                if status in RunStatus.FINISHED:
                    row.finished_at = datetime.now(UTC)
            if flower_run_id is not None:
                row.flower_run_id = str(flower_run_id)
            if error is not None:
                row.error = error
            s.add(row)
        return row.to_info()

    def get_run(self, run_id: str) -> RunInfo:
        with self._session() as s:
            return _get(s, RunRow, run_id, f"run {run_id!r}").to_info()

    def list_runs(self, *, limit: int = 100, offset: int = 0) -> list[RunInfo]:
        with self._session() as s:
            query = select(RunRow).order_by(RunRow.created_at.desc())  # type: ignore[attr-defined]
            rows = s.exec(query.offset(offset).limit(limit)).all()
            return [r.to_info() for r in rows]

    # --- checkpoints --------------------------------------------------------------------------
    def add_checkpoint(self, checkpoint: CheckpointCreate) -> Checkpoint:
        row = CheckpointRow.from_create(checkpoint)
        with self._session() as s:
            _get(s, RunRow, checkpoint.run_id, f"run {checkpoint.run_id!r}")
            s.add(row)
            s.flush()
        return row.to_entity()

    def list_checkpoints(self, run_id: str) -> list[Checkpoint]:
        with self._session() as s:
            rows = s.exec(
                select(CheckpointRow).where(CheckpointRow.run_id == run_id).order_by(CheckpointRow.round)  # type: ignore[arg-type]
            ).all()
            return [r.to_entity() for r in rows]

    def get_checkpoint(self, checkpoint_id: int) -> Checkpoint:
        with self._session() as s:
            return _get(s, CheckpointRow, checkpoint_id, f"checkpoint {checkpoint_id}").to_entity()

    # --- versions and aliases ------------------------------------------------------------------
    def create_version(
        self,
        version: ModelVersionCreate,
        *,
        aliases: tuple[str, ...] = (),
        actor: str = "system",
        attach: AttachArtifacts | None = None,
    ) -> ModelVersion:
        with self._session() as s:
            lock_writers(s)
            if version.run_id is not None:
                _get(s, RunRow, version.run_id, f"run {version.run_id!r}")
            last = s.exec(
                select(func.max(ModelVersionRow.number)).where(ModelVersionRow.name == version.name)
            ).one()
            row = ModelVersionRow.from_create(version, number=(last or 0) + 1)
            s.add(row)
            s.flush()
            assert row.id is not None
            artifacts = (*version.artifacts, *(attach(row.name, row.number, row.id) if attach else ()))
            s.add_all(VersionArtifactRow.from_ref(row.id, art) for art in artifacts)
            append_entry(
                s,
                action="version.registered",
                actor=actor,
                subject=f"{row.name}:{row.number}",
                details={
                    "version_id": row.id,
                    "run_id": row.run_id,
                    "artifacts": {a.kind: a.sha256 for a in artifacts},
                },
                signer=self.head_signer,
            )
            for alias in aliases:
                _move_alias(
                    s, version.name, alias, row.id, actor=actor, reason="registered", signer=self.head_signer
                )
            s.flush()
            return _version(s, row)

    def get_version(self, version_id: int) -> ModelVersion:
        with self._session() as s:
            return _version(s, _get(s, ModelVersionRow, version_id, f"model version {version_id}"))

    def get_version_by_number(self, name: str, number: int) -> ModelVersion:
        with self._session() as s:
            row = s.exec(
                select(ModelVersionRow).where(ModelVersionRow.name == name, ModelVersionRow.number == number)
            ).first()
            if row is None:
                raise NotFoundError(f"model {name!r} has no version {number}")
            return _version(s, row)

    def list_versions(
        self, *, name: str | None = None, run_id: str | None = None, limit: int = 100, offset: int = 0
    ) -> list[ModelVersion]:
        table = ModelVersionRow.__table__  # type: ignore[attr-defined]
        # Plain rows, not ORM objects: listing is the hot path and object validation dominated it.
        query = sa_select(table)
        if name is not None:
            # Newest of one model by number: served by the (name, number) unique index.
            query = query.where(table.c.name == name).order_by(table.c.number.desc())
        else:
            query = query.order_by(table.c.id.desc())
        if run_id is not None:
            query = query.where(table.c.run_id == run_id)
        with self._session() as s:
            rows = s.connection().execute(query.offset(offset).limit(limit)).all()
            return _versions(s, rows)

    def move_aliases(self, moves: Sequence[AliasMove], *, actor: str, reason: str = "") -> list[ModelVersion]:
        with self._session() as s:
            lock_writers(s)
            rows = []
            for move in moves:
                row = _get(s, ModelVersionRow, move.version_id, f"model version {move.version_id}")
                if row.name != move.name:
                    raise ConflictError(
                        f"version {move.version_id} belongs to model {row.name!r}, not {move.name!r}"
                    )
                _move_alias(
                    s,
                    move.name,
                    move.alias,
                    move.version_id,
                    actor=actor,
                    reason=reason,
                    signer=self.head_signer,
                )
                rows.append(row)
            s.flush()
            return _versions(s, rows)

    def list_alias_events(self, name: str, alias: str | None = None) -> list[AliasEvent]:
        with self._session() as s:
            query = select(AliasEventRow).where(AliasEventRow.name == name)
            if alias is not None:
                query = query.where(AliasEventRow.alias == alias)
            rows = s.exec(query.order_by(AliasEventRow.id)).all()  # type: ignore[arg-type]
            return [r.to_entity() for r in rows]

    def add_approval(self, version_id: int, alias: str, *, actor: str, comment: str = "") -> Approval:
        with self._session() as s:
            lock_writers(s)
            version = _get(s, ModelVersionRow, version_id, f"model version {version_id}")
            existing = s.exec(
                select(ApprovalRow).where(
                    ApprovalRow.version_id == version_id,
                    ApprovalRow.alias == alias,
                    ApprovalRow.actor == actor,
                )
            ).first()
            if existing is not None:
                raise ConflictError(
                    f"{actor!r} already approved {version.name}:{version.number} for {alias!r}; approvals "
                    "must come from distinct operators"
                )
            row = ApprovalRow(version_id=version_id, alias=alias, actor=actor, comment=comment)
            s.add(row)
            s.flush()
            append_entry(
                s,
                action="approval.given",
                actor=actor,
                subject=f"{version.name}:{version.number}",
                details={"version_id": version_id, "alias": alias, "comment": comment},
                signer=self.head_signer,
            )
            return row.to_entity()

    def list_approvals(self, version_id: int, alias: str | None = None) -> list[Approval]:
        with self._session() as s:
            query = select(ApprovalRow).where(ApprovalRow.version_id == version_id)
            if alias is not None:
                query = query.where(ApprovalRow.alias == alias)
            return [r.to_entity() for r in s.exec(query.order_by(ApprovalRow.id)).all()]  # type: ignore[arg-type]

    def append_audit(self, *, action: str, actor: str, subject: str, details: dict[str, Any]) -> AuditEntry:
        with self._session() as s:
            return append_entry(
                s, action=action, actor=actor, subject=subject, details=details, signer=self.head_signer
            )

    def list_audit(
        self, *, after_seq: int = 0, limit: int | None = None, action: str | None = None
    ) -> list[AuditEntry]:
        # Columns, not ORM objects: a verifier reads every entry, and 100k ORM rows take seconds.
        table = AuditRow.__table__  # type: ignore[attr-defined]
        query = sa_select(*table.columns).where(table.c.seq > after_seq).order_by(table.c.seq)
        if action is not None:
            query = query.where(table.c.action == action)
        if limit is not None:
            query = query.limit(limit)
        with self._session() as s:
            return [
                AuditEntry(**{**row, "details": dict(row["details"])}) for row in s.execute(query).mappings()
            ]

    def audit_head(self) -> tuple[int, str]:
        with self._session() as s:
            return read_chain_head(s)

    def signed_audit_head(self, *, sign_if_stale: bool = True) -> SignedTreeHead | None:
        with self._session() as s:
            if sign_if_stale and self.head_signer is not None:
                return sign_current_head(s, self.head_signer)
            return read_signed_head(s)

    def audit_consistency(self, old_size: int, new_size: int) -> list[bytes]:
        with self._session() as s:
            return stored_consistency_proof(s, old_size, new_size)

    def get_alias(self, name: str, alias: str) -> ModelVersion:
        with self._session() as s:
            row = s.get(AliasRow, (name, alias))
            if row is None:
                raise NotFoundError(f"model {name!r} has no alias {alias!r}")
            return _version(s, _get(s, ModelVersionRow, row.version_id, "aliased version"))


def _get(session: Session, table: Any, key: Any, what: str) -> Any:
    row = session.get(table, key)
    if row is None:
        raise NotFoundError(f"{what} does not exist in the registry")
    return row


def _move_alias(
    session: Session,
    name: str,
    alias: str,
    version_id: int,
    *,
    actor: str,
    reason: str,
    signer: HeadSigner | None,
) -> None:
    row = session.get(AliasRow, (name, alias))
    previous = None if row is None else row.version_id
    if row is None:
        session.add(AliasRow(name=name, alias=alias, version_id=version_id))
    else:
        row.version_id = version_id
        row.updated_at = datetime.now(UTC)
        session.add(row)
    session.add(
        AliasEventRow(
            name=name,
            alias=alias,
            from_version_id=previous,
            to_version_id=version_id,
            actor=actor,
            reason=reason,
        )
    )
    append_entry(
        session,
        action="alias.moved",
        actor=actor,
        subject=f"{name}@{alias}",
        details={"from_version_id": previous, "to_version_id": version_id, "reason": reason},
        signer=signer,
    )


def _version(session: Session, row: ModelVersionRow) -> ModelVersion:
    return _versions(session, [row])[0]


def _versions(session: Session, rows: Sequence[Any]) -> list[ModelVersion]:
    """Convert rows to public versions with two queries in all (artifacts, aliases), not 2 per row."""
    ids = [r.id for r in rows if r.id is not None]
    arts: dict[int, list[ArtifactRef]] = {i: [] for i in ids}
    aliases: dict[int, list[str]] = {i: [] for i in ids}
    if ids:
        conn = session.connection()
        art = VersionArtifactRow.__table__.c  # type: ignore[attr-defined]
        for version_id, kind, sha, size, media in conn.execute(
            sa_select(art.version_id, art.kind, art.sha256, art.size, art.media_type)
            .where(art.version_id.in_(ids))
            .order_by(art.kind)
        ):
            arts[version_id].append(ArtifactRef(kind, sha, size, media))
        ali = AliasRow.__table__.c  # type: ignore[attr-defined]
        for version_id, alias in conn.execute(
            sa_select(ali.version_id, ali.alias).where(ali.version_id.in_(ids)).order_by(ali.alias)
        ):
            aliases[version_id].append(alias)
    out = []
    for row in rows:
        found, on = tuple(arts[row.id]), tuple(aliases[row.id])
        if isinstance(row, ModelVersionRow):
            out.append(row.to_entity(artifacts=found, aliases=on))
        else:
            out.append(ModelVersionRow.entity_from_columns(row._mapping, artifacts=found, aliases=on))
    return out
