"""The registry's HTTP API (a FastAPI router the coordinator mounts under ``/api/v1/registry``).

Handlers parse, call one domain function, and return public data; authentication is injected:
``reader`` and ``operator`` are FastAPI dependencies that return the calling actor's name.
"""

# No `from __future__ import annotations` here: FastAPI resolves the dependency aliases built
# inside the factory from the annotations at runtime.

import hashlib
from collections.abc import Callable
from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from registry.audit import verify_chain
from registry.bundle import assemble_bundle
from registry.governance import GatesConfig, approve, promote
from registry.service import Registry

__all__ = ["ApprovalRequest", "PromotionRequest", "create_registry_router"]


class AliasTarget(BaseModel):
    """One move: version reference (``12``, ``digits:3``, ``digits@staging``) and the alias."""

    model_config = ConfigDict(extra="forbid")
    version: str = Field(min_length=1, max_length=256)
    alias: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.-]+$")


class PromotionRequest(BaseModel):
    """Move one or more aliases at once (all or none)."""

    model_config = ConfigDict(extra="forbid")
    moves: list[AliasTarget] = Field(min_length=1, max_length=50)
    reason: str = Field(min_length=1, max_length=1000)


class ApprovalRequest(BaseModel):
    """Approve a version for an alias."""

    model_config = ConfigDict(extra="forbid")
    alias: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.-]+$")
    comment: str = Field(default="", max_length=1000)


def _public(obj: Any) -> dict[str, Any]:
    out: dict[str, Any] = asdict(obj)
    return out


def create_registry_router(
    *,
    get_registry: Callable[[], Registry],
    gates: GatesConfig,
    reader: Callable[..., str],
    operator: Callable[..., str],
) -> APIRouter:
    """Build the router; ``reader``/``operator`` are dependencies that authorize and name the caller."""
    router = APIRouter(tags=["registry"])
    Reader = Annotated[str, Depends(reader)]
    Operator = Annotated[str, Depends(operator)]
    Reg = Annotated[Registry, Depends(get_registry)]

    @router.get("/versions")
    def list_versions(
        registry: Reg,
        _actor: Reader,
        name: str | None = None,
        run_id: str | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> list[dict[str, Any]]:
        return [_public(v) for v in registry.store.list_versions(name=name, run_id=run_id, limit=limit)]

    @router.get("/versions/{ref}")
    def get_version(ref: str, registry: Reg, _actor: Reader) -> dict[str, Any]:
        return _public(registry.resolve(ref))

    @router.get("/versions/{ref}/artifacts/{kind}")
    def get_artifact(ref: str, kind: str, registry: Reg, actor: Reader) -> Response:
        version = registry.resolve(ref)
        data = registry.read_artifact(version, kind)
        ref_ = version.artifact(kind)
        assert ref_ is not None
        return Response(
            content=data,
            media_type=ref_.media_type,
            headers={"X-Content-SHA256": ref_.sha256, "X-Model-Version": f"{version.name}:{version.number}"},
        )

    @router.get("/versions/{ref}/bundle")
    def get_bundle(ref: str, registry: Reg, actor: Reader) -> Response:
        version = registry.resolve(ref)
        data = assemble_bundle(registry, version)
        registry.store.append_audit(
            action="bundle.downloaded", actor=actor, subject=f"{version.name}:{version.number}", details={}
        )
        return Response(
            content=data,
            media_type="application/zip",
            headers={
                "X-Content-SHA256": hashlib.sha256(data).hexdigest(),
                "X-Model-Version": f"{version.name}:{version.number}",
                "Content-Disposition": f'attachment; filename="{version.name}-{version.number}.fedge.zip"',
            },
        )

    @router.get("/versions/{ref}/approvals")
    def list_approvals(ref: str, registry: Reg, _actor: Reader) -> list[dict[str, Any]]:
        return [_public(a) for a in registry.store.list_approvals(registry.resolve(ref).id)]

    @router.post("/versions/{ref}/approvals", status_code=201)
    def add_approval(ref: str, body: ApprovalRequest, registry: Reg, actor: Operator) -> dict[str, Any]:
        return _public(approve(registry, ref=ref, alias=body.alias, actor=actor, comment=body.comment))

    @router.post("/promotions")
    def promote_versions(body: PromotionRequest, registry: Reg, actor: Operator) -> list[dict[str, Any]]:
        moved = promote(
            registry,
            moves=[(m.version, m.alias) for m in body.moves],
            actor=actor,
            reason=body.reason,
            gates=gates,
        )
        return [_public(v) for v in moved]

    @router.get("/aliases/{name}/{alias}")
    def get_alias(name: str, alias: str, registry: Reg, _actor: Reader) -> dict[str, Any]:
        return _public(registry.store.get_alias(name, alias))

    @router.get("/models/{name}/alias-history")
    def alias_history(
        name: str, registry: Reg, _actor: Reader, alias: str | None = None
    ) -> list[dict[str, Any]]:
        return [_public(e) for e in registry.store.list_alias_events(name, alias)]

    @router.get("/runs")
    def list_runs(
        registry: Reg, _actor: Reader, limit: Annotated[int, Query(ge=1, le=1000)] = 100
    ) -> list[dict[str, Any]]:
        return [_public(r) for r in registry.store.list_runs(limit=limit)]

    @router.get("/runs/{run_id}/checkpoints")
    def list_checkpoints(run_id: str, registry: Reg, _actor: Reader) -> list[dict[str, Any]]:
        registry.store.get_run(run_id)
        return [_public(c) for c in registry.store.list_checkpoints(run_id)]

    @router.get("/audit")
    def list_audit(
        registry: Reg,
        _actor: Operator,
        after_seq: Annotated[int, Query(ge=0)] = 0,
        limit: Annotated[int, Query(ge=1, le=10000)] = 1000,
    ) -> list[dict[str, Any]]:
        return [_public(e) for e in registry.store.list_audit(after_seq=after_seq, limit=limit)]

    @router.get("/audit/verify")
    def verify_audit(registry: Reg, _actor: Operator) -> dict[str, Any]:
        seq, head = registry.store.audit_head()
        return _public(verify_chain(registry.store.list_audit(), head_seq=seq, head_hash=head))

    return router
