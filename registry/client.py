"""A Python client of the registry's HTTP API (what operators' scripts and edge tooling use)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from fedge.api_client import ApiClient
from fedge.errors import RegistryUnavailableError
from registry.schemas import ArtifactRef, ModelVersion

__all__ = ["MAX_DOWNLOAD_BYTES", "RegistryClient"]

# The largest artifact or bundle a client accepts unless told otherwise.
MAX_DOWNLOAD_BYTES = 4 * 2**30


class RegistryClient:
    """Talk to ``{base_url}/api/v1/registry`` with a bearer token.

    Parameters
    ----------
    base_url : str
        The coordinator, e.g. ``http://127.0.0.1:8080``.
    token : str
        A fedge API token (``fedge tokens create``).
    client : httpx.Client, optional
        An HTTP client to use (tests pass FastAPI's ``TestClient``); one is made otherwise.
    timeout : float
        Seconds for connecting and for each read.
    ca : path, optional
        A CA certificate the coordinator's TLS chains to.
    transport : httpx.BaseTransport, optional
        The network seam (tests fake the network, not the client).
    """

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        client: httpx.Client | None = None,
        timeout: float = 30.0,
        ca: str | Path | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._api = ApiClient(
            base_url.rstrip("/") + "/api/v1/registry",
            token=token,
            ca=ca,
            timeout=timeout,
            transport=transport,
            client=client,
            service="the registry",
            unreachable=RegistryUnavailableError,
        )

    def list_versions(self, *, name: str | None = None, limit: int = 100) -> list[ModelVersion]:
        """Versions, newest first."""
        params: dict[str, Any] = {"limit": limit} | ({"name": name} if name else {})
        return [_version(v) for v in self._api.get_json("/versions", params=params)]

    def get_version(self, ref: str) -> ModelVersion:
        """One version by ``ID``, ``NAME:NUMBER`` or ``NAME@ALIAS``."""
        return _version(self._api.get_json(f"/versions/{ref}"))

    def download_artifact(self, ref: str, kind: str, *, max_bytes: int = MAX_DOWNLOAD_BYTES) -> bytes:
        """An artifact's bytes, checked against the digest the server announces.

        Raises
        ------
        ArtifactError
            When the bytes do not match the announced sha256 or exceed ``max_bytes``.
        """
        return self._api.download_bytes(f"/versions/{ref}/artifacts/{kind}", max_bytes=max_bytes)

    def download_bundle(self, ref: str, *, max_bytes: int = MAX_DOWNLOAD_BYTES) -> bytes:
        """The version's signed release bundle (verify it with :func:`registry.verify_bundle`)."""
        return self._api.download_bytes(f"/versions/{ref}/bundle", max_bytes=max_bytes)

    def download_to(
        self, ref: str, dest: str | Path, *, kind: str = "bundle", max_bytes: int = MAX_DOWNLOAD_BYTES
    ) -> int:
        """Stream the bundle (or the artifact ``kind``) to ``dest``, digest-checked; return its size.

        Nothing is left at ``dest`` when the transfer is cut, altered or too large.
        """
        path = f"/versions/{ref}/bundle" if kind == "bundle" else f"/versions/{ref}/artifacts/{kind}"
        self._api.download(path, dest, max_bytes=max_bytes)
        return Path(dest).stat().st_size

    def approve(self, ref: str, *, alias: str, comment: str = "") -> dict[str, Any]:
        """Approve a version for an alias as this token's operator."""
        result: dict[str, Any] = self._api.post_json(
            f"/versions/{ref}/approvals", {"alias": alias, "comment": comment}
        )
        return result

    def promote(self, moves: list[tuple[str, str]], *, reason: str) -> list[ModelVersion]:
        """Move aliases (``(version ref, alias)`` pairs) in one transaction, through the gates."""
        body = {"moves": [{"version": v, "alias": a} for v, a in moves], "reason": reason}
        return [_version(v) for v in self._api.post_json("/promotions", body)]

    def declared_aliases(self) -> list[str]:
        """The aliases a model may take."""
        result: list[str] = self._api.get_json("/aliases")["aliases"]
        return result

    def declare_alias(self, alias: str, *, reason: str) -> list[str]:
        """Declare one more alias (admin token); answer the declared aliases."""
        result: list[str] = self._api.post_json("/aliases", {"alias": alias, "reason": reason})["aliases"]
        return result

    def audit(self, *, after_seq: int = 0, limit: int = 1000) -> list[dict[str, Any]]:
        """Audit entries in order."""
        result: list[dict[str, Any]] = self._api.get_json(
            "/audit", params={"after_seq": after_seq, "limit": limit}
        )
        return result

    def close(self) -> None:
        """Close the HTTP client."""
        self._api.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def _version(data: dict[str, Any]) -> ModelVersion:
    return ModelVersion(
        id=int(data["id"]),
        name=data["name"],
        number=int(data["number"]),
        run_id=data.get("run_id"),
        checkpoint_id=data.get("checkpoint_id"),
        artifacts=tuple(ArtifactRef(**a) for a in data.get("artifacts", [])),
        metrics=dict(data.get("metrics", {})),
        lineage=dict(data.get("lineage", {})),
        model_config=dict(data.get("model_config", {})),
        description=data.get("description", ""),
        aliases=tuple(data.get("aliases", [])),
        created_at=datetime.fromisoformat(data["created_at"]),
        parent_version_id=data.get("parent_version_id"),
    )
