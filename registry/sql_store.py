"""The SQL implementation of :class:`RegistryStore` (SQLite by default, any SQLAlchemy URL)."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import event, func, update
from sqlalchemy import select as sa_select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, OperationalError, SQLAlchemyError
from sqlmodel import Session, create_engine, select

from fedge.errors import ConflictError, NotFoundError, RegistryError, RegistryUnavailableError
from registry.audit import GENESIS_HASH, entry_hash
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
from registry.store import RegistryStore
from registry.tables import (
    AliasEventRow,
    AliasRow,
    ApprovalRow,
    AuditHeadRow,
    AuditRow,
    CheckpointRow,
    ModelVersionRow,
    RunRow,
    VersionArtifactRow,
)

__all__ = ["SqlRegistryStore"]

log = logging.getLogger(__name__)


class SqlRegistryStore(RegistryStore):
    """Registry metadata in a SQL database.

    Parameters
    ----------
    url : str
        A SQLAlchemy URL, e.g. ``sqlite:///path/registry.db``. SQLite files run in WAL mode with
        a busy timeout so that the coordinator and its ServerApp can write concurrently.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        is_sqlite = url.startswith("sqlite")
        connect_args: dict[str, Any] = {"timeout": 30} if is_sqlite else {}
        self._engine: Engine = create_engine(url, connect_args=connect_args)
        if is_sqlite:
            event.listen(self._engine, "connect", _sqlite_pragmas)
        try:
            self._create_schema()
        except SQLAlchemyError as exc:
            self._engine.dispose()
            raise RegistryUnavailableError(
                f"cannot open the registry database {_redact(url)}: {getattr(exc, 'orig', exc)}; "
                "check that the path exists and is writable"
            ) from exc

    def _create_schema(self) -> None:
        """Migrate to the newest schema revision (safe when processes open a new registry at once)."""
        upgrade_schema(self._engine)
        self._ensure_audit_head()

    def _ensure_audit_head(self) -> None:
        with Session(self._engine) as s:
            if s.get(AuditHeadRow, 1) is None:
                s.add(AuditHeadRow(id=1, seq=0, hash=GENESIS_HASH))
                try:
                    s.commit()
                except IntegrityError:  # another process created it first
                    s.rollback()

    @contextmanager
    def _session(self) -> Iterator[Session]:
        with Session(self._engine, expire_on_commit=False) as session:
            try:
                yield session
                session.commit()
            except IntegrityError as exc:
                session.rollback()
                raise ConflictError(f"the registry refused the write: {exc.orig}") from exc
            except OperationalError as exc:
                session.rollback()
                raise RegistryUnavailableError(
                    f"the registry database {_redact(self.url)} failed: {exc.orig}"
                ) from exc
            except SQLAlchemyError as exc:
                session.rollback()
                raise RegistryError(f"the registry database failed: {exc}") from exc
            except BaseException:
                session.rollback()
                raise

    # --- runs -------------------------------------------------------------------------------
    def create_run(self, run: RunCreate) -> RunInfo:
        row = RunRow(
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
        with self._session() as s:
            s.add(row)
        return _run(row)

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
        return _run(row)

    def get_run(self, run_id: str) -> RunInfo:
        with self._session() as s:
            return _run(_get(s, RunRow, run_id, f"run {run_id!r}"))

    def list_runs(self, *, limit: int = 100) -> list[RunInfo]:
        with self._session() as s:
            rows = s.exec(select(RunRow).order_by(RunRow.created_at.desc()).limit(limit)).all()  # type: ignore[attr-defined]
            return [_run(r) for r in rows]

    # --- checkpoints --------------------------------------------------------------------------
    def add_checkpoint(self, checkpoint: CheckpointCreate) -> Checkpoint:
        row = CheckpointRow(
            run_id=checkpoint.run_id,
            round=checkpoint.round,
            weights_sha256=checkpoint.weights.sha256,
            weights_size=checkpoint.weights.size,
            metrics=dict(checkpoint.metrics),
            lineage=dict(checkpoint.lineage),
        )
        with self._session() as s:
            _get(s, RunRow, checkpoint.run_id, f"run {checkpoint.run_id!r}")
            s.add(row)
            s.flush()
        return _checkpoint(row)

    def list_checkpoints(self, run_id: str) -> list[Checkpoint]:
        with self._session() as s:
            rows = s.exec(
                select(CheckpointRow).where(CheckpointRow.run_id == run_id).order_by(CheckpointRow.round)  # type: ignore[arg-type]
            ).all()
            return [_checkpoint(r) for r in rows]

    def get_checkpoint(self, checkpoint_id: int) -> Checkpoint:
        with self._session() as s:
            return _checkpoint(_get(s, CheckpointRow, checkpoint_id, f"checkpoint {checkpoint_id}"))

    # --- versions and aliases ------------------------------------------------------------------
    def create_version(
        self, version: ModelVersionCreate, *, aliases: tuple[str, ...] = (), actor: str = "system"
    ) -> ModelVersion:
        with self._session() as s:
            _lock_writers(s)
            if version.run_id is not None:
                _get(s, RunRow, version.run_id, f"run {version.run_id!r}")
            last = s.exec(
                select(func.max(ModelVersionRow.number)).where(ModelVersionRow.name == version.name)
            ).one()
            row = ModelVersionRow(
                name=version.name,
                number=(last or 0) + 1,
                run_id=version.run_id,
                checkpoint_id=version.checkpoint_id,
                metrics=dict(version.metrics),
                lineage=dict(version.lineage),
                model_config_json=dict(version.model_config),
                description=version.description,
                parent_version_id=version.parent_version_id,
            )
            s.add(row)
            s.flush()
            assert row.id is not None
            for art in version.artifacts:
                s.add(
                    VersionArtifactRow(
                        version_id=row.id,
                        kind=art.kind,
                        sha256=art.sha256,
                        size=art.size,
                        media_type=art.media_type,
                    )
                )
            _append_audit(
                s,
                action="version.registered",
                actor=actor,
                subject=f"{row.name}:{row.number}",
                details={
                    "version_id": row.id,
                    "run_id": row.run_id,
                    "artifacts": {a.kind: a.sha256 for a in version.artifacts},
                },
            )
            for alias in aliases:
                _move_alias(s, version.name, alias, row.id, actor=actor, reason="registered")
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
        self, *, name: str | None = None, run_id: str | None = None, limit: int = 100
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
            rows = s.connection().execute(query.limit(limit)).all()
            return _versions(s, rows)

    def move_aliases(self, moves: Sequence[AliasMove], *, actor: str, reason: str = "") -> list[ModelVersion]:
        with self._session() as s:
            _lock_writers(s)
            rows = []
            for move in moves:
                row = _get(s, ModelVersionRow, move.version_id, f"model version {move.version_id}")
                if row.name != move.name:
                    raise ConflictError(
                        f"version {move.version_id} belongs to model {row.name!r}, not {move.name!r}"
                    )
                _move_alias(s, move.name, move.alias, move.version_id, actor=actor, reason=reason)
                rows.append(row)
            s.flush()
            return _versions(s, rows)

    def list_alias_events(self, name: str, alias: str | None = None) -> list[AliasEvent]:
        with self._session() as s:
            query = select(AliasEventRow).where(AliasEventRow.name == name)
            if alias is not None:
                query = query.where(AliasEventRow.alias == alias)
            rows = s.exec(query.order_by(AliasEventRow.id)).all()  # type: ignore[arg-type]
            return [
                AliasEvent(
                    r.id or 0,
                    r.name,
                    r.alias,
                    r.from_version_id,
                    r.to_version_id,
                    r.actor,
                    r.reason,
                    r.created_at,
                )
                for r in rows
            ]

    def add_approval(self, version_id: int, alias: str, *, actor: str, comment: str = "") -> Approval:
        with self._session() as s:
            _lock_writers(s)
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
            _append_audit(
                s,
                action="approval.given",
                actor=actor,
                subject=f"{version.name}:{version.number}",
                details={"version_id": version_id, "alias": alias, "comment": comment},
            )
            return _approval(row)

    def list_approvals(self, version_id: int, alias: str | None = None) -> list[Approval]:
        with self._session() as s:
            query = select(ApprovalRow).where(ApprovalRow.version_id == version_id)
            if alias is not None:
                query = query.where(ApprovalRow.alias == alias)
            return [_approval(r) for r in s.exec(query.order_by(ApprovalRow.id)).all()]  # type: ignore[arg-type]

    def append_audit(self, *, action: str, actor: str, subject: str, details: dict[str, Any]) -> AuditEntry:
        with self._session() as s:
            return _append_audit(s, action=action, actor=actor, subject=subject, details=details)

    def list_audit(self, *, after_seq: int = 0, limit: int | None = None) -> list[AuditEntry]:
        with self._session() as s:
            query = select(AuditRow).where(AuditRow.seq > after_seq).order_by(AuditRow.seq)  # type: ignore[arg-type]
            if limit is not None:
                query = query.limit(limit)
            return [_audit(r) for r in s.exec(query).all()]

    def audit_head(self) -> tuple[int, str]:
        with self._session() as s:
            head = s.get(AuditHeadRow, 1)
            return (head.seq, head.hash) if head is not None else (0, GENESIS_HASH)

    def get_alias(self, name: str, alias: str) -> ModelVersion:
        with self._session() as s:
            row = s.get(AliasRow, (name, alias))
            if row is None:
                raise NotFoundError(f"model {name!r} has no alias {alias!r}")
            return _version(s, _get(s, ModelVersionRow, row.version_id, "aliased version"))

    def close(self) -> None:
        self._engine.dispose()


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA busy_timeout=30000")
    set_wal_mode(cur)
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def set_wal_mode(cursor: Any, attempts: int = 50) -> None:
    """Switch a SQLite file to WAL, retrying while another process holds the lock.

    Changing the journal mode needs an exclusive lock and answers "database is locked" at once,
    busy timeout or not, when several processes open a new registry together. WAL is a property of
    the file: once one process set it, the others find it set.
    """
    import sqlite3

    for attempt in range(attempts):
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == attempts - 1:
                raise
            time.sleep(0.02 * (attempt + 1))


def _redact(url: str) -> str:
    """Hide a password in a database URL before it reaches a message or a log."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        return f"{scheme}://{creds.split(':', 1)[0]}:***@{host}"
    return url


def _get(session: Session, table: Any, key: Any, what: str) -> Any:
    row = session.get(table, key)
    if row is None:
        raise NotFoundError(f"{what} does not exist in the registry")
    return row


def _move_alias(session: Session, name: str, alias: str, version_id: int, *, actor: str, reason: str) -> None:
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
    _append_audit(
        session,
        action="alias.moved",
        actor=actor,
        subject=f"{name}@{alias}",
        details={"from_version_id": previous, "to_version_id": version_id, "reason": reason},
    )


def _lock_writers(session: Session) -> None:
    """Take the registry's write lock before reading what a write depends on (alias holders,
    version numbers, approvals): a no-op UPDATE of the audit chain head, which is SQLite's
    reserved lock and a PostgreSQL row lock. Without it two writers can both read "no alias yet"
    and both insert one."""
    session.execute(update(AuditHeadRow).where(AuditHeadRow.id == 1).values(hash=AuditHeadRow.hash))  # type: ignore[arg-type]


def _append_audit(
    session: Session, *, action: str, actor: str, subject: str, details: dict[str, Any]
) -> AuditEntry:
    """Append one entry inside the caller's transaction, serialized on the chain head.

    The UPDATE takes the write lock first (SQLite's reserved lock, a PostgreSQL row lock), so
    concurrent appenders queue instead of both linking to the same previous entry.
    """
    session.execute(update(AuditHeadRow).where(AuditHeadRow.id == 1).values(seq=AuditHeadRow.seq + 1))  # type: ignore[arg-type]
    head = session.exec(
        select(AuditHeadRow).where(AuditHeadRow.id == 1).execution_options(populate_existing=True)
    ).first()
    if head is None:
        raise RegistryError("the audit log has no chain head: the registry schema is incomplete")
    seq, prev_hash = head.seq, head.hash
    created_at = datetime.now(UTC).isoformat(timespec="microseconds")
    details = json.loads(json.dumps(details, default=str))
    digest = entry_hash(
        prev_hash=prev_hash,
        seq=seq,
        created_at=created_at,
        actor=actor,
        action=action,
        subject=subject,
        details=details,
    )
    row = AuditRow(
        seq=seq,
        created_at=created_at,
        actor=actor,
        action=action,
        subject=subject,
        details=details,
        prev_hash=prev_hash,
        hash=digest,
    )
    head.hash = digest
    session.add(row)
    session.add(head)
    session.flush()
    return _audit(row)


def _audit(row: AuditRow) -> AuditEntry:
    return AuditEntry(
        seq=row.seq,
        created_at=row.created_at,
        actor=row.actor,
        action=row.action,
        subject=row.subject,
        details=dict(row.details),
        prev_hash=row.prev_hash,
        hash=row.hash,
    )


def _approval(row: ApprovalRow) -> Approval:
    assert row.id is not None
    return Approval(row.id, row.version_id, row.alias, row.actor, row.comment, row.created_at)


def _run(row: RunRow) -> RunInfo:
    return RunInfo(
        run_id=row.run_id,
        task=row.task,
        strategy=row.strategy,
        num_rounds=row.num_rounds,
        status=row.status,
        config=dict(row.config),
        config_hash=row.config_hash,
        reason=row.reason,
        mode=row.mode,
        flower_run_id=int(row.flower_run_id) if row.flower_run_id is not None else None,
        error=row.error,
        created_at=row.created_at,
        finished_at=row.finished_at,
    )


def _checkpoint(row: CheckpointRow) -> Checkpoint:
    assert row.id is not None
    return Checkpoint(
        id=row.id,
        run_id=row.run_id,
        round=row.round,
        weights=ArtifactRef("weights", row.weights_sha256, row.weights_size, "application/safetensors"),
        metrics=dict(row.metrics),
        lineage=dict(row.lineage),
        created_at=row.created_at,
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
        assert row.id is not None
        out.append(
            ModelVersion(
                id=row.id,
                name=row.name,
                number=row.number,
                run_id=row.run_id,
                checkpoint_id=row.checkpoint_id,
                artifacts=tuple(arts[row.id]),
                metrics=dict(row.metrics),
                lineage=dict(row.lineage),
                model_config=dict(
                    row._mapping["model_config"] if hasattr(row, "_mapping") else row.model_config_json
                ),
                description=row.description,
                aliases=tuple(aliases[row.id]),
                created_at=row.created_at,
                parent_version_id=row.parent_version_id,
            )
        )
    return out
