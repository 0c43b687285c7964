"""Schema migrations on SQLite and PostgreSQL: new databases, old registries, concurrent openers."""

from __future__ import annotations

import json
import multiprocessing as mp
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import (
    ForeignKeyConstraint,
    MetaData,
    Table,
    UniqueConstraint,
    inspect,
    text,
)
from sqlalchemy.engine import Engine
from sqlmodel import SQLModel

from fedge.errors import RegistryError
from registry import SqlRegistryStore, open_engine
from registry.migrate import (
    BASELINE_REVISION,
    current_revision,
    head_revision,
    include_name,
    migration_config,
    registry_table_names,
    upgrade_schema,
)

BASELINE_TABLES = ("runs", "checkpoints", "model_versions", "version_artifacts", "aliases")
GOVERNANCE_TABLES = {"alias_events", "approvals", "audit_log", "audit_head"}


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of a new, empty database on each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'registry.db'}"
    return str(request.getfixturevalue("postgres_store_url"))


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    eng = open_engine(db_url)
    yield eng
    eng.dispose()


def schema_differences(engine: Engine) -> list[Any]:
    """What autogenerate would change to make the database match the registry's tables."""
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"include_name": include_name, "compare_type": True})
        return list(compare_metadata(context, SQLModel.metadata))


def baseline_metadata() -> MetaData:
    """The registry's tables as create_all made them before migrations (no parent_version_id)."""
    metadata = MetaData()
    for name in BASELINE_TABLES:
        table = SQLModel.metadata.tables[name]
        if name != "model_versions":
            table.to_metadata(metadata)
            continue
        Table(
            name,
            metadata,
            *(c._copy() for c in table.columns if c.name != "parent_version_id"),
            ForeignKeyConstraint(["run_id"], ["runs.run_id"]),
            ForeignKeyConstraint(["checkpoint_id"], ["checkpoints.id"]),
            UniqueConstraint("name", "number", name="uq_version_name_number"),
        )
    return metadata


def insert_old_rows(engine: Engine) -> None:
    """A run, a version with an artifact and an alias, written as the old code wrote them."""
    now = "2026-11-20 10:00:00+00:00"
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO runs (run_id, task, strategy, num_rounds, status, config, config_hash,"
                " reason, mode, flower_run_id, created_at)"
                " VALUES ('run-1', 'digits', 'fedavg', 2, 'completed', :config, :hash, 'operator',"
                " 'simulation', '18446744073709551615', :now)"
            ),
            {"config": json.dumps({"task": {"name": "digits"}}), "hash": "ab" * 32, "now": now},
        )
        conn.execute(
            text(
                "INSERT INTO model_versions (id, name, number, run_id, metrics, lineage, model_config,"
                " description, created_at)"
                " VALUES (1, 'digits', 1, 'run-1', :metrics, '{}', '{}', 'old', :now)"
            ),
            {"metrics": json.dumps({"central-accuracy": 0.9}), "now": now},
        )
        conn.execute(
            text(
                "INSERT INTO version_artifacts (version_id, kind, sha256, size, media_type)"
                " VALUES (1, 'onnx', :digest, 20, 'application/onnx')"
            ),
            {"digest": "2" * 64},
        )
        conn.execute(
            text(
                "INSERT INTO aliases (name, alias, version_id, updated_at)"
                " VALUES ('digits', 'production', 1, :now)"
            ),
            {"now": now},
        )


def assert_old_rows_survived(url: str) -> None:
    store = SqlRegistryStore.from_url(url)
    try:
        version = store.get_alias("digits", "production")
        run = store.get_run("run-1")
    finally:
        store.close()
    assert (version.id, version.number, version.description) == (1, 1, "old")
    assert version.metrics == {"central-accuracy": 0.9}
    assert [(a.kind, a.size) for a in version.artifacts] == [("onnx", 20)]
    assert run.flower_run_id == 2**64 - 1 and run.config == {"task": {"name": "digits"}}


def test_upgrading_a_new_database_creates_exactly_the_registry_tables(engine: Engine) -> None:
    upgrade_schema(engine)

    assert current_revision(engine) == head_revision()
    assert set(inspect(engine).get_table_names()) == registry_table_names() | {"alembic_version"}
    assert schema_differences(engine) == []


def test_upgrading_twice_changes_nothing(engine: Engine) -> None:
    upgrade_schema(engine)

    upgrade_schema(engine)

    assert current_revision(engine) == head_revision()
    assert schema_differences(engine) == []


def test_a_registry_at_the_baseline_keeps_its_rows_through_the_upgrade(db_url: str, engine: Engine) -> None:
    with engine.begin() as conn:
        command.upgrade(migration_config(conn), BASELINE_REVISION)
    insert_old_rows(engine)

    upgrade_schema(engine)

    assert current_revision(engine) == head_revision()
    columns = {c["name"] for c in inspect(engine).get_columns("model_versions")}
    assert "parent_version_id" in columns
    assert set(inspect(engine).get_table_names()) >= GOVERNANCE_TABLES
    assert schema_differences(engine) == []
    with engine.connect() as conn:
        parent = conn.execute(text("SELECT parent_version_id FROM model_versions WHERE id = 1")).scalar_one()
    assert parent is None
    if engine.dialect.name == "sqlite":  # enforcement, off while tables were copied, is back on
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    assert_old_rows_survived(db_url)


def test_a_registry_made_by_create_all_before_migrations_is_adopted(db_url: str, engine: Engine) -> None:
    baseline_metadata().create_all(engine)
    insert_old_rows(engine)
    assert current_revision(engine) is None

    upgrade_schema(engine)

    assert current_revision(engine) == head_revision()
    assert schema_differences(engine) == []
    assert_old_rows_survived(db_url)


def test_a_create_all_registry_with_the_governance_tables_is_adopted_as_is(engine: Engine) -> None:
    registry_tables = [SQLModel.metadata.tables[name] for name in registry_table_names()]
    SQLModel.metadata.create_all(engine, tables=registry_tables)

    upgrade_schema(engine)

    assert current_revision(engine) == head_revision()
    assert schema_differences(engine) == []


def test_tables_that_match_no_release_are_refused_untouched(engine: Engine) -> None:
    tables = [SQLModel.metadata.tables[name] for name in BASELINE_TABLES]
    SQLModel.metadata.create_all(engine, tables=tables)  # a parent column, but no governance tables

    with pytest.raises(RegistryError, match="match no release") as caught:
        upgrade_schema(engine)

    assert caught.value.code == "registry_error"
    assert current_revision(engine) is None
    assert not GOVERNANCE_TABLES & set(inspect(engine).get_table_names())


def test_downgrading_to_nothing_and_upgrading_again_round_trips(engine: Engine) -> None:
    upgrade_schema(engine)
    with engine.begin() as conn:
        command.downgrade(migration_config(conn), "base")
    assert not registry_table_names() & set(inspect(engine).get_table_names())

    upgrade_schema(engine)

    assert schema_differences(engine) == []


def _upgrade_when_all_are_ready(url: str, barrier: Any) -> None:
    engine = open_engine(url)
    barrier.wait(timeout=60)
    upgrade_schema(engine)
    engine.dispose()


def test_processes_upgrading_a_new_database_at_once_all_succeed(db_url: str) -> None:
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(4)
    procs = [ctx.Process(target=_upgrade_when_all_are_ready, args=(db_url, barrier)) for _ in range(4)]

    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)

    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    engine = open_engine(db_url)
    try:
        assert current_revision(engine) == head_revision()
        assert schema_differences(engine) == []
    finally:
        engine.dispose()
