"""Registry domain functions: register checkpoints and versions with verified artifacts."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fedge.errors import ArtifactError, NotFoundError
from registry.artifacts import ArtifactStore, sha256_hex
from registry.schemas import (
    ArtifactRef,
    Checkpoint,
    CheckpointCreate,
    ModelVersion,
    ModelVersionCreate,
)
from registry.store import RegistryStore

__all__ = ["Registry", "parse_version_ref"]

log = logging.getLogger(__name__)

MEDIA_TYPES = {
    "weights": "application/safetensors",
    "onnx": "application/onnx",
    "onnx-int8": "application/onnx",
    "manifest": "application/json",
    "manifest-sig": "text/plain",
}


@dataclass
class Registry:
    """The registry: metadata in a :class:`RegistryStore`, bytes in an :class:`ArtifactStore`."""

    store: RegistryStore
    artifacts: ArtifactStore

    def put_artifact(self, kind: str, data: bytes) -> ArtifactRef:
        """Store bytes content-addressed and return their reference."""
        digest = self.artifacts.put(data)
        return ArtifactRef(kind, digest, len(data), MEDIA_TYPES.get(kind, "application/octet-stream"))

    def verify_artifact(self, ref: ArtifactRef) -> None:
        """Raise unless ``ref``'s blob is stored and its bytes hash to ``ref.sha256``.

        Raises
        ------
        ArtifactError
            If the blob is missing, or its size or digest differ from the reference.
        """
        try:
            data = self.artifacts.get(ref.sha256)
        except NotFoundError as exc:
            raise ArtifactError(
                f"artifact {ref.kind!r} sha256:{ref.sha256[:12]}.. is not in the artifact store; "
                "store it before registering"
            ) from exc
        if len(data) != ref.size or sha256_hex(data) != ref.sha256:
            raise ArtifactError(
                f"artifact {ref.kind!r} sha256:{ref.sha256[:12]}.. has {len(data)} bytes, the "
                f"reference says {ref.size}; refusing to register it"
            )

    def register_checkpoint(
        self,
        *,
        run_id: str,
        round: int,
        weights: bytes,
        metrics: Mapping[str, float],
        lineage: Mapping[str, Any],
    ) -> Checkpoint:
        """Store a round's aggregate weights (safetensors) and record the checkpoint."""
        ref = self.put_artifact("weights", weights)
        return self.store.add_checkpoint(
            CheckpointCreate(
                run_id=run_id,
                round=round,
                weights=ref,
                metrics=dict(metrics),
                lineage=dict(lineage),
            )
        )

    def register_version(self, version: ModelVersionCreate, *, aliases: tuple[str, ...] = ()) -> ModelVersion:
        """Register a version whose artifacts are all stored and intact, moving ``aliases``.

        Every artifact is checked first; if one is missing or altered nothing is written.
        """
        for ref in version.artifacts:
            self.verify_artifact(ref)
        registered = self.store.create_version(version, aliases=aliases)
        log.info(
            "registered %s v%d (id %d) aliases=%s",
            registered.name,
            registered.number,
            registered.id,
            list(aliases),
        )
        return registered

    def resolve(self, ref: str) -> ModelVersion:
        """Find a version from ``ID``, ``NAME:NUMBER`` or ``NAME@ALIAS``."""
        kind, a, b = parse_version_ref(ref)
        if kind == "id":
            return self.store.get_version(int(a))
        if kind == "number":
            return self.store.get_version_by_number(a, int(b))
        return self.store.get_alias(a, b)

    def read_artifact(self, version: ModelVersion, kind: str) -> bytes:
        """Return a version's artifact bytes (digest-verified)."""
        ref = version.artifact(kind)
        if ref is None:
            raise NotFoundError(f"version {version.name}:{version.number} has no {kind!r} artifact")
        return self.artifacts.get(ref.sha256)

    def close(self) -> None:
        """Release the store's connections."""
        self.store.close()


def parse_version_ref(ref: str) -> tuple[str, str, str]:
    """Split a version reference into ``(kind, a, b)``.

    ``"12"`` -> ``("id", "12", "")``, ``"digits:3"`` -> ``("number", "digits", "3")``,
    ``"digits@candidate"`` -> ``("alias", "digits", "candidate")``.

    Raises
    ------
    NotFoundError
        If ``ref`` has none of these forms.
    """
    ref = ref.strip()
    if ref.isdigit():
        return ("id", ref, "")
    if "@" in ref:
        name, alias = ref.split("@", 1)
        if name and alias:
            return ("alias", name, alias)
    if ":" in ref:
        name, number = ref.rsplit(":", 1)
        if name and number.isdigit():
            return ("number", name, number)
    raise NotFoundError(
        f"{ref!r} is not a version reference: use an id (12), NAME:NUMBER (digits:3) or "
        "NAME@ALIAS (digits@candidate)"
    )
