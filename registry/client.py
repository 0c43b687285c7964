"""A Python client of the registry's HTTP API (what operators' scripts and edge tooling use)."""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any

import httpx

from fedge.errors import (
    ArtifactError,
    ConfigError,
    FedgeError,
    RegistryUnavailableError,
    error_for_code,
)
from registry.schemas import ArtifactRef, ModelVersion

__all__ = ["RegistryClient"]


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
    """

    def __init__(
        self, base_url: str, token: str, *, client: httpx.Client | None = None, timeout: float = 30.0
    ) -> None:
        self._prefix = base_url.rstrip("/") + "/api/v1/registry"
        self._http = client or httpx.Client(timeout=timeout)
        self._headers = {"Authorization": f"Bearer {token}"}

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, self._prefix + path, headers=self._headers, **kwargs)
        except httpx.HTTPError as exc:
            raise RegistryUnavailableError(f"cannot reach the registry at {self._prefix}: {exc}") from exc
        if response.is_success:
            return response
        try:
            error = response.json()["error"]
            code, message = str(error["code"]), str(error["message"])
        except (ValueError, KeyError, TypeError):
            if response.status_code == 422:
                raise ConfigError(f"the registry rejected the request: {response.text[:500]}") from None
            raise FedgeError(
                f"the registry answered HTTP {response.status_code}: {response.text[:200]}"
            ) from None
        raise error_for_code(code, message)

    def list_versions(self, *, name: str | None = None, limit: int = 100) -> list[ModelVersion]:
        """Versions, newest first."""
        params: dict[str, Any] = {"limit": limit} | ({"name": name} if name else {})
        return [_version(v) for v in self._request("GET", "/versions", params=params).json()]

    def get_version(self, ref: str) -> ModelVersion:
        """One version by ``ID``, ``NAME:NUMBER`` or ``NAME@ALIAS``."""
        return _version(self._request("GET", f"/versions/{ref}").json())

    def download_artifact(self, ref: str, kind: str) -> bytes:
        """An artifact's bytes, checked against the digest the server announces."""
        response = self._request("GET", f"/versions/{ref}/artifacts/{kind}")
        expected = response.headers.get("X-Content-SHA256", "")
        actual = hashlib.sha256(response.content).hexdigest()
        if actual != expected:
            raise ArtifactError(
                f"downloaded {kind} of {ref} has sha256 {actual[:12]}.. but the registry announced "
                f"{expected[:12]}..: the transfer is corrupt or was tampered with"
            )
        return response.content

    def download_bundle(self, ref: str) -> bytes:
        """The version's signed release bundle (verify it with :func:`registry.verify_bundle`)."""
        response = self._request("GET", f"/versions/{ref}/bundle")
        if hashlib.sha256(response.content).hexdigest() != response.headers.get("X-Content-SHA256", ""):
            raise ArtifactError(f"the bundle of {ref} was corrupted in transfer")
        return response.content

    def approve(self, ref: str, *, alias: str, comment: str = "") -> dict[str, Any]:
        """Approve a version for an alias as this token's operator."""
        result: dict[str, Any] = self._request(
            "POST", f"/versions/{ref}/approvals", json={"alias": alias, "comment": comment}
        ).json()
        return result

    def promote(self, moves: list[tuple[str, str]], *, reason: str) -> list[ModelVersion]:
        """Move aliases (``(version ref, alias)`` pairs) in one transaction, through the gates."""
        body = {"moves": [{"version": v, "alias": a} for v, a in moves], "reason": reason}
        return [_version(v) for v in self._request("POST", "/promotions", json=body).json()]

    def audit(self, *, after_seq: int = 0, limit: int = 1000) -> list[dict[str, Any]]:
        """Audit entries in order."""
        result: list[dict[str, Any]] = self._request(
            "GET", "/audit", params={"after_seq": after_seq, "limit": limit}
        ).json()
        return result

    def close(self) -> None:
        """Close the HTTP client."""
        self._http.close()


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
