"""Alembic migrations of the coordinator's tables, applied when a coordinator store opens."""

__all__: list[str] = []
