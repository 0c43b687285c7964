"""Bring a registry database to the newest schema revision with alembic (SQLite and PostgreSQL)."""

from __future__ import annotations

import logging
import time
from functools import cache
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError, OperationalError

import registry.tables as tables
from fedge.errors import RegistryError

__all__ = [
    "BASELINE_REVISION",
    "MIGRATIONS_DIR",
    "current_revision",
    "head_revision",
    "include_name",
    "migration_config",
    "registry_table_names",
    "upgrade_schema",
]

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
BASELINE_REVISION = "0001"
# Registries that create_all made after the governance tables landed hold them without an
# alembic_version table: such a database is stamped with the revision that adds them.
_GOVERNANCE_REVISION = "0002"
_GOVERNANCE_TABLES = frozenset({"alias_events", "approvals", "audit_log", "audit_head"})
# Key of the PostgreSQL advisory lock that serialises migrations: "fedg" in ASCII, shared by every
# fedge process that opens the database.
_PG_LOCK_KEY = 0x66656467


@cache
def registry_table_names() -> frozenset[str]:
    """The names of the registry's tables (``SQLModel.metadata`` may hold other packages' tables)."""
    return frozenset(str(getattr(tables, name).__tablename__) for name in tables.__all__)


def include_name(name: str | None, type_: str, parent_names: Any) -> bool:
    """Alembic's ``include_name`` hook: compare and generate only the registry's tables."""
    return type_ != "table" or name in registry_table_names()


def migration_config(connection: Connection | None = None) -> Config:
    """An alembic ``Config`` for the packaged migrations, running on ``connection`` when given."""
    config = Config()
    # ConfigParser interpolates "%": a path holding one must be escaped.
    config.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


@cache
def head_revision() -> str:
    """The newest revision of the packaged migrations."""
    head = ScriptDirectory.from_config(migration_config()).get_current_head()
    if head is None:
        raise RegistryError(
            f"no schema migrations in {MIGRATIONS_DIR}: the fedge installation is incomplete; reinstall it"
        )
    return head


def current_revision(engine: Engine) -> str | None:
    """The revision ``engine``'s database is at; ``None`` for a new database or one made before migrations."""
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade_schema(engine: Engine, *, attempts: int = 8) -> None:
    """Bring the registry schema in ``engine``'s database to the newest revision.

    A new database gets every table. A registry made before migrations existed (tables from
    ``create_all``, no ``alembic_version``) is first stamped with the revision its tables match, so
    its rows survive the upgrade. Processes opening the same database at once take turns:
    PostgreSQL through an advisory lock held by the migration's transaction, SQLite through
    ``BEGIN IMMEDIATE``; should a driver already have begun the transaction, a race on a new file
    shows up as "already exists" and the upgrade is retried.

    Parameters
    ----------
    engine : Engine
        The registry's engine (SQLite or PostgreSQL).
    attempts : int
        How often to try when another process created the same tables at the same moment.

    Raises
    ------
    RegistryError
        If the database holds registry tables that match no release, or a migration left
        dangling foreign keys.
    sqlalchemy.exc.OperationalError
        If the database cannot be reached or written.
    """
    for attempt in range(attempts):
        try:
            _upgrade_once(engine)
            return
        except (OperationalError, IntegrityError) as exc:
            # Two processes opening a new SQLite registry race between "check" and "create".
            if "already exists" not in str(exc.orig) or attempt == attempts - 1:
                raise
            log.debug("another process is creating the registry schema; retrying: %s", exc.orig)
            time.sleep(0.05 * (attempt + 1))


def _upgrade_once(engine: Engine) -> None:
    head = head_revision()
    if current_revision(engine) == head:
        return  # the usual case: no lock taken, so opening a registry never waits on writers
    with engine.connect() as conn:
        sqlite = conn.dialect.name == "sqlite"
        raw = conn.connection.dbapi_connection
        # Batch migrations copy SQLite tables and swap them in: enforcement must be off meanwhile
        # (a pragma that only works outside a transaction), and is checked before the commit.
        restore_fks = sqlite and _sqlite_pragma(raw, "PRAGMA foreign_keys") == 1
        if restore_fks:
            _sqlite_pragma(raw, "PRAGMA foreign_keys=OFF")
        try:
            with conn.begin():
                _lock(conn, raw)
                before = MigrationContext.configure(conn).get_current_revision()
                if before == head:
                    return  # another process upgraded it while this one waited for the lock
                config = migration_config(conn)
                if before is None:
                    adopted = _adoptable_revision(conn)
                    if adopted is not None:
                        log.info("adopting a registry made before migrations as revision %s", adopted)
                        command.stamp(config, adopted)
                        before = adopted
                command.upgrade(config, "head")
                if sqlite:
                    _check_foreign_keys(conn)
                log.info("registry schema upgraded from %s to %s", before or "an empty database", head)
        finally:
            if restore_fks:
                _sqlite_pragma(raw, "PRAGMA foreign_keys=ON")


def _lock(conn: Connection, raw: Any) -> None:
    """Serialise migrations: the lock lasts until the transaction ends."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
    elif conn.dialect.name == "sqlite" and not getattr(raw, "in_transaction", True):
        # pysqlite begins lazily; taking the write lock now makes a second process wait
        # (busy timeout) and then find the schema done, instead of racing it.
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def _adoptable_revision(conn: Connection) -> str | None:
    """The revision a database without ``alembic_version`` is at, judged by its tables."""
    inspector = inspect(conn)
    names = set(inspector.get_table_names())
    if "runs" not in names or "alembic_version" in names:
        # A new database (other applications' tables are left alone), or one whose migration is
        # under way in another process (alembic makes its table first).
        return None
    columns = (
        {c["name"] for c in inspector.get_columns("model_versions")} if "model_versions" in names else set()
    )
    governance = _GOVERNANCE_TABLES & names
    if "parent_version_id" in columns and governance == _GOVERNANCE_TABLES:
        return _GOVERNANCE_REVISION
    if "parent_version_id" not in columns and not governance and "model_versions" in names:
        return BASELINE_REVISION
    raise RegistryError(
        "the registry database has registry tables but no alembic_version table, and they match "
        f"no release (tables: {', '.join(sorted(names & registry_table_names()))}; "
        f"model_versions columns: {', '.join(sorted(columns)) or 'none'}): it was made by an "
        "unreleased build; back it up, then stamp its revision with alembic or start a new registry"
    )


def _check_foreign_keys(conn: Connection) -> None:
    broken = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
    if broken:
        raise RegistryError(
            f"upgrading the registry schema left {len(broken)} rows with dangling foreign keys "
            f"(first: table {broken[0][0]}, rowid {broken[0][1]}, parent {broken[0][2]}); "
            "nothing was changed: restore a backup or report the migration as a bug"
        )


def _sqlite_pragma(raw: Any, statement: str) -> Any:
    # On the DBAPI connection itself: through SQLAlchemy the pragma would open a transaction.
    cursor = raw.cursor()
    try:
        cursor.execute(statement)
        row = cursor.fetchone()
        return row[0] if row else None
    finally:
        cursor.close()
