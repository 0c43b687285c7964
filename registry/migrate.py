"""Bring a database to the newest revision of an alembic history (SQLite and PostgreSQL).

Two histories share a database: the registry's (``registry/migrations``, version table
``alembic_version``) and the coordinator's (its own folder and version table). Each is a
:class:`MigrationHistory`; :func:`upgrade_schema` applies either, and :func:`run_environment` is the
body of both ``env.py`` files.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Literal

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import MetaData, inspect, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlmodel import SQLModel
from sqlmodel.sql.sqltypes import AutoString, UTCDateTime

import registry.tables as tables
from fedge.errors import RegistryError

__all__ = [
    "BASELINE_REVISION",
    "MIGRATIONS_DIR",
    "REGISTRY_HISTORY",
    "MigrationHistory",
    "current_revision",
    "head_revision",
    "include_name",
    "migration_config",
    "registry_table_names",
    "render_item",
    "run_environment",
    "upgrade_schema",
]

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
BASELINE_REVISION = "0001"
# Registries that create_all made after the governance tables landed hold them without an
# alembic_version table: such a database is stamped with the revision that adds them.
_GOVERNANCE_REVISION = "0002"
_GOVERNANCE_TABLES = frozenset({"alias_events", "approvals", "audit_log", "audit_head"})
# ... and those made after the audit log's Merkle tree landed, with the revision that adds it.
_TRANSPARENCY_REVISION = "0003"
_TRANSPARENCY_TABLES = frozenset({"audit_tree_nodes", "audit_tree_head"})
# ... and those made after webhook deliveries were logged, with the revision that adds their table.
_WEBHOOK_REVISION = "0004"
_WEBHOOK_TABLES = frozenset({"webhook_deliveries"})
# Key of the PostgreSQL advisory lock that serialises migrations: "fedg" in ASCII, shared by every
# fedge process and every history that opens the database.
_PG_LOCK_KEY = 0x66656467


@dataclass(frozen=True)
class MigrationHistory:
    """One alembic history: its revisions, its version table, and the tables it owns.

    Attributes
    ----------
    name : str
        Who owns the tables (``registry``, ``coordinator``), for messages.
    script_location : Path
        The folder of ``env.py`` and ``versions/``.
    version_table : str
        The table that records the revision; distinct per history in a shared database.
    metadata : MetaData
        The metadata holding the history's tables (autogenerate compares only ``table_names``).
    table_names : frozenset[str]
        The tables this history creates and migrates.
    adopt : Callable[[Connection, set[str]], str | None]
        Given a database without ``version_table`` and its table names, the revision that tables
        made before migrations match (it is stamped), or ``None`` to migrate from the start.
    """

    name: str
    script_location: Path
    version_table: str
    metadata: MetaData
    table_names: frozenset[str]
    adopt: Callable[[Connection, set[str]], str | None]

    def include_name(self, name: str | None, type_: str, parent_names: Any) -> bool:
        """Alembic's ``include_name`` hook: compare and generate only this history's tables."""
        return type_ != "table" or name in self.table_names

    def config(self, connection: Connection | None = None) -> Config:
        """An alembic ``Config`` for this history, running on ``connection`` when given."""
        config = Config()
        # ConfigParser interpolates "%": a path holding one must be escaped.
        config.set_main_option("script_location", str(self.script_location).replace("%", "%%"))
        if connection is not None:
            config.attributes["connection"] = connection
        return config

    def head(self) -> str:
        """The newest revision of this history."""
        return _head(self.script_location, self.name)

    def current(self, engine: Engine) -> str | None:
        """The revision ``engine``'s database is at; ``None`` when this history never ran there."""
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"version_table": self.version_table})
            return context.get_current_revision()


@cache
def _head(script_location: Path, name: str) -> str:
    config = Config()
    config.set_main_option("script_location", str(script_location).replace("%", "%%"))
    head = ScriptDirectory.from_config(config).get_current_head()
    if head is None:
        raise RegistryError(
            f"no {name} schema migrations in {script_location}: the fedge installation is incomplete; "
            "reinstall it"
        )
    return head


@cache
def registry_table_names() -> frozenset[str]:
    """The names of the registry's tables (``SQLModel.metadata`` may hold other packages' tables)."""
    return frozenset(str(getattr(tables, name).__tablename__) for name in tables.__all__)


def _adopt_registry(conn: Connection, names: set[str]) -> str | None:
    """The revision a registry without ``alembic_version`` is at, judged by its tables."""
    if "runs" not in names:
        return None  # a new registry (other applications' tables are left alone)
    inspector = inspect(conn)
    columns = (
        {c["name"] for c in inspector.get_columns("model_versions")} if "model_versions" in names else set()
    )
    governance = _GOVERNANCE_TABLES & names
    transparency = _TRANSPARENCY_TABLES & names
    if "parent_version_id" in columns and governance == _GOVERNANCE_TABLES:
        if transparency == _TRANSPARENCY_TABLES:
            return _WEBHOOK_REVISION if names >= _WEBHOOK_TABLES else _TRANSPARENCY_REVISION
        if not transparency:
            return _GOVERNANCE_REVISION
    if "parent_version_id" not in columns and not governance and "model_versions" in names:
        return BASELINE_REVISION
    raise RegistryError(
        "the registry database has registry tables but no alembic_version table, and they match "
        f"no release (tables: {', '.join(sorted(names & registry_table_names()))}; "
        f"model_versions columns: {', '.join(sorted(columns)) or 'none'}): it was made by an "
        "unreleased build; back it up, then stamp its revision with alembic or start a new registry"
    )


REGISTRY_HISTORY = MigrationHistory(
    name="registry",
    script_location=MIGRATIONS_DIR,
    version_table="alembic_version",
    metadata=SQLModel.metadata,
    table_names=registry_table_names(),
    adopt=_adopt_registry,
)


def include_name(name: str | None, type_: str, parent_names: Any) -> bool:
    """Alembic's ``include_name`` hook of the registry's history."""
    return REGISTRY_HISTORY.include_name(name, type_, parent_names)


def migration_config(connection: Connection | None = None) -> Config:
    """An alembic ``Config`` for the registry's migrations, running on ``connection`` when given."""
    return REGISTRY_HISTORY.config(connection)


def head_revision() -> str:
    """The newest revision of the registry's migrations."""
    return REGISTRY_HISTORY.head()


def current_revision(engine: Engine) -> str | None:
    """The registry revision of ``engine``'s database; ``None`` if new or made before migrations."""
    return REGISTRY_HISTORY.current(engine)


def upgrade_schema(
    engine: Engine, history: MigrationHistory = REGISTRY_HISTORY, *, attempts: int = 8
) -> None:
    """Bring ``history``'s tables in ``engine``'s database to its newest revision.

    A new database gets every table. One made before migrations existed (tables from
    ``create_all``, no version table) is first stamped with the revision its tables match, so its
    rows survive the upgrade. Processes opening the same database at once take turns: PostgreSQL
    through an advisory lock held by the migration's transaction, SQLite through ``BEGIN
    IMMEDIATE``; should a driver already have begun the transaction, a race on a new file shows up
    as "already exists" and the upgrade is retried.

    Parameters
    ----------
    engine : Engine
        The database's engine (SQLite or PostgreSQL).
    history : MigrationHistory
        Which tables: the registry's by default.
    attempts : int
        How often to try when another process created the same tables at the same moment.

    Raises
    ------
    FedgeError
        What ``history.adopt`` raises for tables that match no release; a
        :class:`RegistryError` if a migration left dangling foreign keys.
    sqlalchemy.exc.OperationalError
        If the database cannot be reached or written.
    """
    for attempt in range(attempts):
        try:
            _upgrade_once(engine, history)
            return
        except (OperationalError, IntegrityError) as exc:
            # Two processes opening a new SQLite database race between "check" and "create".
            if "already exists" not in str(exc.orig) or attempt == attempts - 1:
                raise
            log.debug("another process is creating the %s schema; retrying: %s", history.name, exc.orig)
            time.sleep(0.05 * (attempt + 1))


def run_environment(history: MigrationHistory) -> None:
    """The body of a history's ``env.py``: migrate the connection :func:`upgrade_schema` hands in.

    Without one (a developer's ``Config`` with ``sqlalchemy.url`` set), an engine is made from that
    URL; that is how a new revision is autogenerated against a scratch database at ``head``.
    """
    from alembic import context
    from sqlalchemy import create_engine

    if context.is_offline_mode():
        raise RuntimeError(f"{history.name} migrations run online only: call upgrade_schema(engine)")
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _migrate(context, connection, history)
        return
    url = context.config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError(
            "no connection to migrate: call upgrade_schema(engine), or set sqlalchemy.url on the "
            "alembic Config"
        )
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            _migrate(context, conn, history)
            conn.commit()
    finally:
        engine.dispose()


def render_item(type_: str, obj: Any, _autogen_context: Any) -> str | Literal[False]:
    """Write SQLModel's column types as plain SQLAlchemy ones, so that revisions never import sqlmodel."""
    if type_ == "type" and isinstance(obj, AutoString):
        length = getattr(obj.impl, "length", None)
        return f"sa.String(length={length})" if length else "sa.String()"
    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def _migrate(context: Any, connection: Connection, history: MigrationHistory) -> None:
    context.configure(
        connection=connection,
        target_metadata=history.metadata,
        version_table=history.version_table,
        include_name=history.include_name,
        render_item=render_item,
        # SQLite cannot ALTER most things: autogenerate writes batch operations (copy and swap) there.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def _upgrade_once(engine: Engine, history: MigrationHistory) -> None:
    head = history.head()
    if history.current(engine) == head:
        return  # the usual case: no lock taken, so opening a store never waits on writers
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
                context = MigrationContext.configure(conn, opts={"version_table": history.version_table})
                before = context.get_current_revision()
                if before == head:
                    return  # another process upgraded it while this one waited for the lock
                config = history.config(conn)
                if before is None:
                    names = set(inspect(conn).get_table_names())
                    # With the version table but no revision, a migration is under way elsewhere.
                    adopted = None if history.version_table in names else history.adopt(conn, names)
                    if adopted is not None:
                        log.info("adopting a %s made before migrations as revision %s", history.name, adopted)
                        command.stamp(config, adopted)
                        before = adopted
                command.upgrade(config, "head")
                if sqlite:
                    _check_foreign_keys(conn, history)
                start = before or "an empty database"
                log.info("%s schema upgraded from %s to %s", history.name, start, head)
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


def _check_foreign_keys(conn: Connection, history: MigrationHistory) -> None:
    broken = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
    if broken:
        raise RegistryError(
            f"upgrading the {history.name} schema left {len(broken)} rows with dangling foreign keys "
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
