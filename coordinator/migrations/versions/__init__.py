"""Revisions of the coordinator's tables, oldest first (``0001_baseline`` is the schema before migrations)."""

__all__: list[str] = []
