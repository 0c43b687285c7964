"""Alembic migrations of the registry schema, applied by :func:`registry.migrate.upgrade_schema`."""
