"""The coordinator's own SQL tables (tokens, nodes, device and drift reports) and their migrations.

They share the registry's database but not its history: their rows derive from
:class:`CoordinatorRow` (a metadata of their own), and their alembic history, in
``coordinator/migrations``, records its revision in ``coordinator_alembic_version``.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path

from sqlalchemy import MetaData, inspect
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import registry as orm_registry
from sqlmodel import Session, SQLModel

from fedge.errors import DatabaseUnavailableError
from registry import MigrationHistory, SqlStoreBase, redact_url, session_scope, upgrade_schema

__all__ = [
    "COORDINATOR_HISTORY",
    "COORDINATOR_TABLES",
    "CoordinatorRow",
    "CoordinatorStore",
    "coordinator_metadata",
]

coordinator_metadata = MetaData()


class CoordinatorRow(SQLModel, registry=orm_registry(metadata=coordinator_metadata)):
    """Base of the coordinator's table rows: on :data:`coordinator_metadata`, not the registry's."""


# Every table the coordinator's history owns, with the columns its baseline (0001), or the revision
# that made it (LATER_TABLES), gives each.
COORDINATOR_TABLES: dict[str, frozenset[str]] = {
    "api_tokens": frozenset({"id", "name", "role", "token_sha256", "created_at", "revoked_at"}),
    "device_reports": frozenset(
        {"id", "device", "model_name", "model_version", "served", "health", "drift", "reported_by"}
        | {"received_at"}
    ),
    "drift_summaries": frozenset(
        {"id", "model", "version", "window", "site", "source", "window_size", "epsilon", "delta"}
        | {"mechanism", "shape", "counts", "class_counts", "received_from", "received_at"}
    ),
    "drift_reports": frozenset(
        {"id", "model", "version", "window", "sites", "window_rows", "epsilon", "features", "overall"}
        | {"per_site", "classes", "flagged", "created_at"}
    ),
    "drift_triggers": frozenset(
        {"id", "model", "version", "run_id", "outcome", "reason", "evidence", "created_at"}
    ),
    "nodes": frozenset(
        {"id", "name", "public_key_pem", "key_sha256", "flower_node_id", "enrolled_at", "enrolled_by"}
        | {"revoked_at", "revoked_by"}
    ),
    "rollouts": frozenset(
        {"id", "model", "alias", "from_version_id", "from_number", "to_version_id", "to_number", "steps"}
        | {"groups", "min_healthy_s", "max_error_rate", "max_p99_ms", "state", "step", "step_started_at"}
        | {"started_by", "reason", "timeline", "created_at"}
    ),
}
LATER_TABLES = frozenset({"rollouts"})  # made by 0004 (staged rollouts), not by the baseline
BASELINE_REVISION = "0001"


def _adopt(conn: Connection, names: set[str]) -> str | None:
    """Stamp a database whose coordinator tables ``create_all`` made before migrations.

    With all of them it is at the baseline. Releases before the drift and node tables made only
    some: the baseline then runs and creates just the missing ones.
    """
    found = names & COORDINATOR_TABLES.keys()
    inspector = inspect(conn)
    for table in sorted(found):
        columns = {c["name"] for c in inspector.get_columns(table)}
        if columns != COORDINATOR_TABLES[table]:
            raise DatabaseUnavailableError(
                f"the coordinator table {table} has no coordinator_alembic_version and its columns "
                f"({', '.join(sorted(columns))}) match no release: it was made by an unreleased build; "
                "back the database up, then stamp its revision with alembic or start a new database"
            )
    return BASELINE_REVISION if found >= COORDINATOR_TABLES.keys() - LATER_TABLES else None


COORDINATOR_HISTORY = MigrationHistory(
    name="coordinator",
    script_location=Path(__file__).resolve().parent / "migrations",
    version_table="coordinator_alembic_version",
    metadata=coordinator_metadata,
    table_names=frozenset(COORDINATOR_TABLES),
    adopt=_adopt,
)


class CoordinatorStore(SqlStoreBase):
    """A store on the coordinator's tables: opening migrates them; errors are the coordinator's own.

    Raises
    ------
    DatabaseUnavailableError
        If the database cannot be opened, migrated, reached or written.
    """

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine)
        try:
            upgrade_schema(engine, COORDINATOR_HISTORY)
        except SQLAlchemyError as exc:
            raise DatabaseUnavailableError(
                f"cannot open the coordinator's tables in {redact_url(str(engine.url))}: "
                f"{getattr(exc, 'orig', exc)}; check that the path exists and is writable"
            ) from exc

    def _session(self) -> AbstractContextManager[Session]:
        """A transaction: committed when the block ends, rolled back (and translated) when it raises."""
        return session_scope(
            self.engine,
            unavailable=DatabaseUnavailableError,
            failed=DatabaseUnavailableError,
            what="coordinator database",
        )
