"""Open a registry from its configuration (SQLite file and artifact folder by default)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine

from fedge.errors import RegistryUnavailableError
from registry.artifacts import open_artifact_store
from registry.governance import GatesConfig, gates_from_dict
from registry.service import Registry
from registry.sql_store import SqlRegistryStore

__all__ = ["RegistryConfig", "open_registry"]


@dataclass
class RegistryConfig:
    """Hydra schema of the ``registry`` group.

    Attributes
    ----------
    root : str
        Folder for the embedded defaults: ``registry.db`` (SQLite) and ``artifacts/``.
    database_url : str
        A SQLAlchemy URL; empty means ``sqlite:///<root>/registry.db``. A password belongs in the
        ``FEDGE_REGISTRY_DATABASE_URL`` environment variable, never in a config file.
    artifact_uri : str
        Where artifacts go; empty means ``<root>/artifacts``.
    signing_key : str
        Ed25519 private key (PEM) that signs release manifests; empty means
        ``<root>/keys/signing-key.pem``, created on first use.
    gates : GatesConfig
        What each alias requires (metrics, parity, approvals).
    """

    root: str = ".fedge"
    database_url: str = ""
    artifact_uri: str = ""
    signing_key: str = ""
    gates: GatesConfig = field(default_factory=GatesConfig)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> RegistryConfig:
        """Rebuild from plain data (a decoded run config), nested gates included."""
        data = dict(raw)
        gates = gates_from_dict(data.pop("gates", None))
        return cls(**data, gates=gates)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (JSON-able)."""
        return asdict(self)

    def resolved_signing_key(self) -> Path:
        """Path of the signing key after defaults are applied."""
        if self.signing_key:
            return Path(self.signing_key).expanduser().resolve()
        return Path(self.root).expanduser().resolve() / "keys" / "signing-key.pem"

    def resolved_database_url(self) -> str:
        """The database URL after defaults and the environment are applied."""
        env = os.environ.get("FEDGE_REGISTRY_DATABASE_URL", "")
        if self.database_url or env:
            return self.database_url or env
        return f"sqlite:///{Path(self.root).expanduser().resolve() / 'registry.db'}"

    def resolved_artifact_uri(self) -> str:
        """The artifact store URI after defaults are applied."""
        return self.artifact_uri or str(Path(self.root).expanduser().resolve() / "artifacts")


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
            root.mkdir(parents=True, exist_ok=True)
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
    if engine is None:
        store = SqlRegistryStore.from_url(config.resolved_database_url())
    else:
        store = SqlRegistryStore(engine)
    return Registry(store=store, artifacts=artifacts)
