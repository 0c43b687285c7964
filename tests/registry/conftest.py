"""PostgreSQL for the registry's tests: the server ``FEDGE_TEST_POSTGRES_URL`` names, a database per test."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import NoReturn

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

POSTGRES_URL_ENV = "FEDGE_TEST_POSTGRES_URL"


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in {"", "0", "false", "no"}


def _unavailable(reason: str) -> NoReturn:
    """Fail in CI, which must test every backend; elsewhere skip, saying how to run the tests."""
    if _in_ci():
        pytest.fail(
            f"{reason}; CI runs the registry's PostgreSQL tests against a real server "
            f"(.ci/run starts one and sets {POSTGRES_URL_ENV})",
            pytrace=False,
        )
    pytest.skip(
        f"{reason}: set {POSTGRES_URL_ENV}=postgresql+psycopg2://USER:PASSWORD@127.0.0.1:PORT/DATABASE "
        "(a role allowed to CREATE DATABASE) to run the PostgreSQL tests"
    )


def _redacted(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except SQLAlchemyError:
        return "<an unparsable URL>"


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """The URL of a reachable PostgreSQL database; skips (fails in CI) without one."""
    url = os.environ.get(POSTGRES_URL_ENV, "")
    if not url:
        _unavailable(f"{POSTGRES_URL_ENV} is not set")
    try:
        if make_url(url).get_backend_name() != "postgresql":
            _unavailable(f"{POSTGRES_URL_ENV}={_redacted(url)} is not a PostgreSQL URL")
        engine = create_engine(url, connect_args={"connect_timeout": 5})
        try:
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        finally:
            engine.dispose()
    except SQLAlchemyError as exc:
        why = " ".join(str(getattr(exc, "orig", None) or exc).split())  # psycopg2's spans lines
        _unavailable(f"PostgreSQL is not reachable at {_redacted(url)}: {why}")
    return url


@pytest.fixture
def postgres_store_url(postgres_url: str) -> Iterator[str]:
    """A new, empty database on the test server for one test, dropped afterwards."""
    name = f"fedge_test_{uuid.uuid4().hex[:16]}"
    admin = create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    try:
        try:
            with admin.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
        except SQLAlchemyError as exc:
            _unavailable(
                f"cannot create a test database at {_redacted(postgres_url)}: {getattr(exc, 'orig', exc)}"
            )
        yield make_url(postgres_url).set(database=name).render_as_string(hide_password=False)
        with admin.connect() as conn:
            # FORCE: a connection a failed test leaked must not keep the database alive.
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()
