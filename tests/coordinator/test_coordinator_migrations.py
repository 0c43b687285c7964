"""The coordinator's own migration history on SQLite and PostgreSQL, beside the registry's in one database."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Column, DateTime, Integer, MetaData, String, Table, UniqueConstraint, inspect, text
from sqlalchemy.engine import Engine

import coordinator.auth
import coordinator.deployment.nodes
import coordinator.device_reports
import coordinator.drift.store
import coordinator.rollouts  # noqa: F401  (the stores define the coordinator's rows)
from coordinator.auth import TokenStore
from coordinator.device_reports import DeviceReportStore
from coordinator.tables import COORDINATOR_HISTORY, COORDINATOR_TABLES, coordinator_metadata
from fedge.errors import DatabaseUnavailableError
from registry import SqlRegistryStore, open_engine, upgrade_schema
from registry.migrate import REGISTRY_HISTORY, registry_table_names
from tests.registry.conftest import postgres_store_url, postgres_url  # noqa: F401  (fixtures)

VERSION_TABLE = "coordinator_alembic_version"


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of a new, empty database on each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'coordinator.db'}"
    return str(request.getfixturevalue("postgres_store_url"))


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    eng = open_engine(db_url)
    yield eng
    eng.dispose()


def schema_differences(engine: Engine) -> list[Any]:
    """What autogenerate would change to make the database match the coordinator's rows."""
    with engine.connect() as conn:
        context = MigrationContext.configure(
            conn,
            opts={
                "include_name": COORDINATOR_HISTORY.include_name,
                "compare_type": True,
                "version_table": VERSION_TABLE,
            },
        )
        return list(compare_metadata(context, coordinator_metadata))


def old_tokens_table(metadata: MetaData) -> Table:
    """``api_tokens`` as the first release's ``create_all`` made it."""
    return Table(
        "api_tokens",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("name", String(128), nullable=False),
        Column("role", String(16), nullable=False),
        Column("token_sha256", String(64), nullable=False, unique=True),
        Column("created_at", DateTime(timezone=True), nullable=False),
        Column("revoked_at", DateTime(timezone=True), nullable=True),
    )


def insert_old_token(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO api_tokens (name, role, token_sha256, created_at)"
                " VALUES ('ops', 'admin', :digest, :now)"
            ),
            {"digest": "a" * 64, "now": datetime(2026, 11, 20, tzinfo=UTC)},
        )


def test_a_new_database_gets_exactly_the_coordinator_tables(engine: Engine) -> None:
    upgrade_schema(engine, COORDINATOR_HISTORY)

    assert COORDINATOR_HISTORY.current(engine) == COORDINATOR_HISTORY.head()
    assert set(inspect(engine).get_table_names()) == set(COORDINATOR_TABLES) | {VERSION_TABLE}
    assert schema_differences(engine) == []


def test_upgrading_twice_changes_nothing(engine: Engine) -> None:
    upgrade_schema(engine, COORDINATOR_HISTORY)

    upgrade_schema(engine, COORDINATOR_HISTORY)

    assert COORDINATOR_HISTORY.current(engine) == COORDINATOR_HISTORY.head()
    assert schema_differences(engine) == []


def test_the_registry_and_coordinator_histories_share_a_database_apart(engine: Engine) -> None:
    registry = SqlRegistryStore(engine)
    tokens = TokenStore(engine)

    tokens.create(name="ops", role="admin")

    names = set(inspect(engine).get_table_names())
    assert names == registry_table_names() | set(COORDINATOR_TABLES) | {"alembic_version", VERSION_TABLE}
    assert REGISTRY_HISTORY.current(engine) == REGISTRY_HISTORY.head()
    assert COORDINATOR_HISTORY.current(engine) == COORDINATOR_HISTORY.head()
    assert schema_differences(engine) == []
    registry.close()
    tokens.close()


def test_a_database_made_by_create_all_is_stamped_at_the_baseline(engine: Engine) -> None:
    old = MetaData()
    for table in coordinator_metadata.sorted_tables:
        table.to_metadata(old)
    for table in old.sorted_tables:  # columns (and keys on them) later revisions added were not there
        newer = set(table.columns.keys()) - COORDINATOR_TABLES[table.name]
        for constraint in list(table.constraints):
            if isinstance(constraint, UniqueConstraint) and newer & set(constraint.columns.keys()):
                table.constraints.discard(constraint)
        for column in newer:
            table._columns.remove(table.columns[column])
    old.create_all(engine)
    insert_old_token(engine)
    assert COORDINATOR_HISTORY.current(engine) is None

    upgrade_schema(engine, COORDINATOR_HISTORY)

    assert COORDINATOR_HISTORY.current(engine) == COORDINATOR_HISTORY.head()
    assert schema_differences(engine) == []
    assert [t.name for t in TokenStore(engine).list()] == ["ops"]


def test_an_older_release_with_only_some_tables_gains_the_rest(engine: Engine) -> None:
    old = MetaData()
    old_tokens_table(old)
    old.create_all(engine)
    insert_old_token(engine)

    upgrade_schema(engine, COORDINATOR_HISTORY)

    assert set(inspect(engine).get_table_names()) >= set(COORDINATOR_TABLES)
    assert schema_differences(engine) == []
    assert [t.name for t in TokenStore(engine).list()] == ["ops"]


def test_tables_that_match_no_release_are_refused_untouched(engine: Engine) -> None:
    old = MetaData()
    Table("device_reports", old, Column("id", Integer, primary_key=True), Column("device", String(128)))
    old.create_all(engine)

    with pytest.raises(DatabaseUnavailableError, match="match no release") as caught:
        DeviceReportStore(engine)

    assert caught.value.code == "database_unavailable"
    assert COORDINATOR_HISTORY.current(engine) is None
    assert set(inspect(engine).get_table_names()) == {"device_reports"}


def test_downgrading_to_nothing_and_upgrading_again_round_trips(engine: Engine) -> None:
    upgrade_schema(engine, COORDINATOR_HISTORY)
    with engine.begin() as conn:
        command.downgrade(COORDINATOR_HISTORY.config(conn), "base")
    assert not set(COORDINATOR_TABLES) & set(inspect(engine).get_table_names())

    upgrade_schema(engine, COORDINATOR_HISTORY)

    assert schema_differences(engine) == []


def test_an_unwritable_database_is_a_coordinator_error_not_a_registry_one(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-folder" / "coordinator.db"

    with pytest.raises(DatabaseUnavailableError, match="cannot open the coordinator's tables") as caught:
        TokenStore.from_url(f"sqlite:///{missing}")

    assert caught.value.code == "database_unavailable" and caught.value.http_status == 503


@pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX")
def test_a_new_sqlite_database_is_private(tmp_path: Path) -> None:
    path = tmp_path / "coordinator.db"

    TokenStore.from_url(f"sqlite:///{path}").close()

    assert stat.S_IMODE(path.stat().st_mode) == 0o600
