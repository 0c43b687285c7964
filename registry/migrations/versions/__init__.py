"""Revisions of the registry schema, oldest first (``0001_baseline`` is the schema before migrations)."""
