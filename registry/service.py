"""Registry domain functions: register checkpoints and versions with verified artifacts."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from fedge.errors import ArtifactError, NotFoundError
from fedge.release_format import ReleaseIdentity
from registry.artifacts import ArtifactStore, sha256_hex
from registry.schemas import (
    ArtifactRef,
    Checkpoint,
    CheckpointCreate,
    ModelVersion,
    ModelVersionCreate,
)
from registry.store import RegistryStore
from registry.webhooks import WebhookDispatcher

__all__ = ["AttachRelease", "Registry", "parse_version_ref"]

log = logging.getLogger(__name__)

MEDIA_TYPES = {
    "weights": "application/safetensors",
    "strategy_state": "application/safetensors",
    "onnx": "application/onnx",
    "onnx-int8": "application/onnx",
    "manifest": "application/json",
    "manifest-sig": "text/plain",
}


# Told the identity of a version being registered (number and id assigned, not yet committed);
# returns the artifacts of its release signed for that identity.
AttachRelease = Callable[[ReleaseIdentity], Sequence[ArtifactRef]]


@dataclass
class Registry:
    """The registry: metadata in a :class:`RegistryStore`, bytes in an :class:`ArtifactStore`."""

    store: RegistryStore
    artifacts: ArtifactStore
    # Delivers emit()ted events to registry.webhooks (None: no webhook configured).
    webhooks: WebhookDispatcher | None = None
    _registry_id: str | None = field(default=None, init=False, repr=False)

    @property
    def registry_id(self) -> str:
        """This registry's stable id (kept with the artifacts; release manifests are signed with it)."""
        if self._registry_id is None:
            self._registry_id = self.artifacts.registry_id()
        return self._registry_id

    def emit(self, event: str, data: Mapping[str, Any]) -> None:
        """Queue ``event`` for the webhooks subscribed to it (never blocks, never raises)."""
        if self.webhooks is not None:
            self.webhooks.emit(event, data)

    def identity(self, version: ModelVersion) -> ReleaseIdentity:
        """The identity a release of the registered ``version`` must carry."""
        return ReleaseIdentity(version.name, version.number, version.id, self.registry_id)

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

    def register_version(
        self,
        version: ModelVersionCreate,
        *,
        aliases: tuple[str, ...] = (),
        attach: AttachRelease | None = None,
    ) -> ModelVersion:
        """Register a version whose artifacts are all stored and intact, moving ``aliases``.

        Every artifact is checked first; if one is missing or altered nothing is written.
        ``attach`` (see :func:`registry.bundle.release_version`) signs the release once the
        version's number and id are known, in the registration's transaction; the artifacts it
        returns are checked the same way.
        """
        for ref in version.artifacts:
            self.verify_artifact(ref)
        hook = None
        if attach is not None:
            registry_id, sign = self.registry_id, attach

            def hook(name: str, number: int, version_id: int) -> Sequence[ArtifactRef]:
                refs = tuple(sign(ReleaseIdentity(name, number, version_id, registry_id)))
                for ref in refs:
                    self.verify_artifact(ref)
                return refs

        registered = self.store.create_version(version, aliases=aliases, attach=hook)
        log.info(
            "registered %s v%d (id %d) aliases=%s",
            registered.name,
            registered.number,
            registered.id,
            list(aliases),
        )
        self.emit(
            "version_registered",
            {
                "name": registered.name,
                "number": registered.number,
                "version_id": registered.id,
                "run_id": registered.run_id,
                "parent_version_id": registered.parent_version_id,
                "metrics": dict(registered.metrics),
                "aliases": list(aliases),
            },
        )
        for alias in aliases:
            self.emit(
                "alias_moved",
                {
                    "name": registered.name,
                    "alias": alias,
                    "version_id": registered.id,
                    "number": registered.number,
                    "actor": "system",
                    "reason": "registered",
                },
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
        """Stop the webhook worker and release the store's connections."""
        if self.webhooks is not None:
            self.webhooks.close()
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
