"""One engine and one transaction helper for every fedge SQL store (SQLite by default, PostgreSQL)."""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Self

from sqlalchemy import event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, IntegrityError, OperationalError, SQLAlchemyError
from sqlmodel import Session, create_engine

from fedge.errors import ConfigError, ConflictError, FedgeError
from fedge.private_fs import private_file

__all__ = ["SqlStoreBase", "open_engine", "redact_url", "session_scope", "set_wal_mode"]

log = logging.getLogger(__name__)

# Seconds a SQLite connection waits for another writer before answering "database is locked".
SQLITE_BUSY_TIMEOUT_S = 30


def open_engine(url: str) -> Engine:
    """An engine on ``url`` configured alike for every store that shares the database.

    SQLite files run in WAL mode with foreign keys enforced and a busy timeout, so that the
    coordinator, its ServerApp and the CLI can write concurrently; connections may cross threads
    (FastAPI runs sync routes in a pool) and a new file is created private (0600). PostgreSQL
    connections are checked before use, so a restarted server costs no failed request.

    Parameters
    ----------
    url : str
        A SQLAlchemy URL, e.g. ``sqlite:///path/registry.db`` or ``postgresql+psycopg://...``.

    Returns
    -------
    Engine
        Nothing is connected yet: the first use opens (and for SQLite, creates) the database.
    """
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ConfigError(
            f"{redact_url(url)!r} is not a database URL ({exc}): write e.g. sqlite:///PATH"
        ) from exc
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True)
    engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S, "check_same_thread": False})
    database = parsed.database or ""
    if database and database != ":memory:" and not database.startswith("file:"):
        path = Path(database)
        event.listen(engine, "do_connect", lambda *_args: _create_private(path))
    event.listen(engine, "connect", _sqlite_pragmas)
    return engine


@contextmanager
def session_scope(
    engine: Engine,
    *,
    unavailable: type[FedgeError],
    failed: type[FedgeError],
    what: str,
) -> Iterator[Session]:
    """A session committed when the block ends and rolled back when it raises.

    Database errors become fedge errors: a refused write (a unique or foreign key constraint) is a
    :class:`ConflictError`, a database that cannot be reached or written is ``unavailable``, any
    other failure ``failed``; ``what`` names the database in their messages.
    """
    with Session(engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except IntegrityError as exc:
            session.rollback()
            raise ConflictError(f"the {what} refused the write: {exc.orig}") from exc
        except OperationalError as exc:
            session.rollback()
            # The message may reach an API client: the database's URL (a server path for SQLite)
            # goes to the log only.
            log.warning("the %s %s failed: %s", what, redact_url(str(engine.url)), exc.orig)
            raise unavailable(f"the {what} failed: {exc.orig}") from exc
        except SQLAlchemyError as exc:
            session.rollback()
            raise failed(f"the {what} failed: {exc}") from exc
        except BaseException:
            session.rollback()
            raise


class SqlStoreBase:
    """A store on an engine it is handed (shared with the other stores of the same database).

    ``from_url`` opens a private engine for a store used alone (a CLI command, a test); only then
    does :meth:`close` dispose it. Whoever opened a shared engine disposes it.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._owns_engine = False

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> Self:
        """Open the store on its own engine (through :func:`open_engine`); ``kwargs`` go to the class."""
        engine = open_engine(url)
        try:
            store = cls(engine, **kwargs)
        except BaseException:
            engine.dispose()
            raise
        store._owns_engine = True
        return store

    def close(self) -> None:
        """Release the connections of an engine the store opened itself (a shared one stays open)."""
        if self._owns_engine:
            self.engine.dispose()


def _create_private(path: Path) -> None:
    """Create a new SQLite file readable by its owner alone (SQLite gives its WAL files the same mode)."""
    try:
        private_file(path)  # a file left wider by an older version is tightened too
    except OSError:
        return  # its folder does not exist or is not writable: SQLite names the problem


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_S * 1000}")
    set_wal_mode(cur)
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def set_wal_mode(cursor: Any, attempts: int = 50) -> None:
    """Switch a SQLite file to WAL, retrying while another process holds the lock.

    Changing the journal mode needs an exclusive lock and answers "database is locked" at once,
    busy timeout or not, when several processes open a new database together. WAL is a property of
    the file: once one process set it, the others find it set.
    """
    for attempt in range(attempts):
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == attempts - 1:
                raise
            time.sleep(0.02 * (attempt + 1))


def redact_url(url: str) -> str:
    """Hide a password in a database URL before it reaches a message or a log."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        return f"{scheme}://{creds.split(':', 1)[0]}:***@{host}"
    return url
