"""The coordinator's own SQL tables (tokens, device reports), beside the registry's in one database.

They live on their own metadata: the registry's migrations own the registry's tables only.
"""

from __future__ import annotations

from sqlalchemy import MetaData, create_engine
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError

from fedge.errors import RegistryUnavailableError

__all__ = ["coordinator_metadata", "open_coordinator_engine"]

coordinator_metadata = MetaData()


def open_coordinator_engine(url: str) -> Engine:
    """An engine on ``url`` with the coordinator's tables created (tolerating a concurrent creator)."""
    connect_args = {"timeout": 30} if url.startswith("sqlite") else {}
    engine = create_engine(url, connect_args=connect_args)
    try:
        coordinator_metadata.create_all(engine)
    except OperationalError as exc:
        if "already exists" not in str(exc.orig):
            engine.dispose()
            raise RegistryUnavailableError(f"cannot create the coordinator's tables: {exc.orig}") from exc
    return engine
