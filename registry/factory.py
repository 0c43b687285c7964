"""Open a registry from its configuration (SQLite file and artifact folder by default)."""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy.engine import Engine

from fedge.config import RegistryConfig
from fedge.errors import RegistryUnavailableError
from fedge.private_fs import private_dir
from registry.artifacts import open_artifact_store
from registry.audit import key_file_signer
from registry.service import Registry
from registry.sql_store import SqlRegistryStore
from registry.webhooks import WebhookDeliveryStore, WebhookDispatcher

__all__ = ["RegistryConfig", "open_registry"]


def open_registry(config: RegistryConfig, *, engine: Engine | None = None) -> Registry:
    """Open (creating if needed) the registry ``config`` describes.

    ``engine`` (from :func:`registry.db.open_engine` on the configured database URL) is shared
    with the caller's other stores and stays open when the registry closes; without one, the
    registry opens and closes its own.

    Raises
    ------
    RegistryUnavailableError
        If the root folder, the database or the artifact folder cannot be created or written.
    """
    root = Path(config.root).expanduser()
    if not config.database_url or not config.artifact_uri:
        try:
            private_dir(root)
        except OSError as exc:
            raise RegistryUnavailableError(
                f"cannot create the registry folder {root}: {exc.strerror}; choose a writable "
                "location (registry.root=PATH)"
            ) from exc
        if not os.access(root, os.W_OK):
            raise RegistryUnavailableError(
                f"the registry folder {root} is not writable; choose a writable location (registry.root=PATH)"
            )
    artifacts = open_artifact_store(config.resolved_artifact_uri())
    # The release key also signs the audit tree's head after every append (docs/security.md).
    signer = key_file_signer(config.resolved_signing_key())
    if engine is None:
        store = SqlRegistryStore.from_url(config.resolved_database_url(), head_signer=signer)
    else:
        store = SqlRegistryStore(engine, head_signer=signer)
    webhooks = None
    if config.webhooks:  # after the store: its migrations create the delivery log's table
        webhooks = WebhookDispatcher(config.webhooks, WebhookDeliveryStore(store.engine))
    return Registry(store=store, artifacts=artifacts, webhooks=webhooks)
