"""``/api/v1/registry``: model versions, artifacts, bundles, approvals, promotions, aliases, audit."""

# Handlers parse, call one registry function and return a public schema. ``Viewer`` reads;
# ``Operator`` approves, promotes and reads the audit log. ``ReleaseReader`` (a viewer or a device
# token) reads what an edge device follows: an alias and a bundle.

# No `from __future__ import annotations`: FastAPI reads the dependency annotations at runtime.

import hashlib
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Response
from pydantic import AfterValidator

from coordinator.api.deps import (
    Admin,
    ConfiguredAliasesDep,
    GatesDep,
    Operator,
    RegistryDep,
    ReleaseReader,
    RolloutsDep,
    Viewer,
)
from coordinator.api.registry_schemas import (
    AliasDeclarationRequest,
    AliasEventPublic,
    ApprovalPublic,
    ApprovalRequest,
    AuditEntryPublic,
    AuditVerificationPublic,
    CheckpointPublic,
    DeclaredAliasesPublic,
    PromotionRequest,
    RegistryRunPublic,
    VersionPublic,
    bounded_version_ref,
)
from fedge.http_limits import MAX_ID
from registry import approve, assemble_bundle, declare_alias, declared_aliases, promote, verify_chain

__all__ = ["router"]

router = APIRouter(tags=["registry"])


# ``12``, ``digits:3`` or ``digits@staging``; the number checked before it reaches the database.
VersionRef = Annotated[str, Path(min_length=1, max_length=256), AfterValidator(bounded_version_ref)]
Name = Annotated[str, Path(min_length=1, max_length=256)]
RunId = Annotated[str, Path(min_length=1, max_length=128)]
ArtifactKind = Annotated[str, Path(min_length=1, max_length=64)]

_BINARY: dict[int | str, dict[str, Any]] = {
    200: {"content": {"application/octet-stream": {}}, "description": "The file's bytes."}
}


@router.get("/versions", response_model=list[VersionPublic])
def list_versions(
    registry: RegistryDep,
    _actor: Viewer,
    name: Annotated[str | None, Query(max_length=256)] = None,
    run_id: Annotated[str | None, Query(max_length=128)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[VersionPublic]:
    """Versions, newest first, optionally of one model or one run."""
    versions = registry.store.list_versions(name=name, run_id=run_id, limit=limit)
    return [VersionPublic.model_validate(v) for v in versions]


@router.get("/versions/{ref}", response_model=VersionPublic)
def get_version(ref: VersionRef, registry: RegistryDep, _actor: Viewer) -> VersionPublic:
    """A version by reference (``12``, ``digits:3``, ``digits@staging``)."""
    return VersionPublic.model_validate(registry.resolve(ref))


@router.get("/versions/{ref}/artifacts/{kind}", response_class=Response, responses=_BINARY)
def get_artifact(ref: VersionRef, kind: ArtifactKind, registry: RegistryDep, _actor: Viewer) -> Response:
    """One artifact's bytes; ``X-Content-SHA256`` carries the digest to check them against."""
    version = registry.resolve(ref)
    data = registry.read_artifact(version, kind)
    artifact = version.artifact(kind)
    assert artifact is not None  # read_artifact refused a kind the version lacks
    return Response(
        content=data,
        media_type=artifact.media_type,
        headers={
            "X-Content-SHA256": artifact.sha256,
            "X-Model-Version": f"{version.name}:{version.number}",
        },
    )


@router.get("/versions/{ref}/bundle", response_class=Response, responses=_BINARY)
def get_bundle(ref: VersionRef, registry: RegistryDep, actor: ReleaseReader) -> Response:
    """The version's signed release bundle (a zip); the download is audited."""
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


@router.get("/versions/{ref}/approvals", response_model=list[ApprovalPublic])
def list_approvals(ref: VersionRef, registry: RegistryDep, _actor: Viewer) -> list[ApprovalPublic]:
    """A version's approvals, oldest first."""
    approvals = registry.store.list_approvals(registry.resolve(ref).id)
    return [ApprovalPublic.model_validate(a) for a in approvals]


@router.post("/versions/{ref}/approvals", status_code=201, response_model=ApprovalPublic)
def add_approval(
    ref: VersionRef,
    body: ApprovalRequest,
    registry: RegistryDep,
    gates: GatesDep,
    aliases: ConfiguredAliasesDep,
    actor: Operator,
) -> ApprovalPublic:
    """Approve a version for a declared alias (a gate may require approvals before a promotion)."""
    approval = approve(
        registry, ref=ref, alias=body.alias, actor=actor, comment=body.comment, aliases=aliases, gates=gates
    )
    return ApprovalPublic.model_validate(approval)


@router.post("/promotions", response_model=list[VersionPublic])
def promote_versions(
    body: PromotionRequest,
    registry: RegistryDep,
    gates: GatesDep,
    aliases: ConfiguredAliasesDep,
    actor: Operator,
) -> list[VersionPublic]:
    """Move declared aliases (all or none) once every gate passes; answer the versions moved."""
    moved = promote(
        registry,
        moves=[(m.version, m.alias) for m in body.moves],
        actor=actor,
        reason=body.reason,
        gates=gates,
        aliases=aliases,
    )
    return [VersionPublic.model_validate(v) for v in moved]


@router.get("/aliases", response_model=DeclaredAliasesPublic)
def list_declared_aliases(
    registry: RegistryDep, gates: GatesDep, aliases: ConfiguredAliasesDep, _actor: Viewer
) -> DeclaredAliasesPublic:
    """The aliases a model may take (config, gates and admin declarations)."""
    return DeclaredAliasesPublic(aliases=declared_aliases(registry, aliases, gates))


@router.post("/aliases", status_code=201, response_model=DeclaredAliasesPublic)
def add_declared_alias(
    body: AliasDeclarationRequest,
    registry: RegistryDep,
    gates: GatesDep,
    aliases: ConfiguredAliasesDep,
    actor: Admin,
) -> DeclaredAliasesPublic:
    """Declare one more alias (admin only; audited as ``alias.declared``)."""
    declared = declare_alias(
        registry, body.alias, actor=actor, reason=body.reason, configured=aliases, gates=gates
    )
    return DeclaredAliasesPublic(aliases=declared)


@router.get("/aliases/{name}/{alias}", response_model=VersionPublic)
def get_alias(
    name: Name,
    alias: Name,
    rollouts: RolloutsDep,
    _actor: ReleaseReader,
    response: Response,
    device: Annotated[str | None, Query(min_length=1, max_length=128)] = None,
) -> VersionPublic:
    """The version ``name@alias`` points at; with ``device``, for that device during a staged
    rollout (its cohort in ``X-Fedge-Rollout``; see docs/rollout.md)."""
    resolved = rollouts.resolve(name, alias, device)
    header = resolved.header()
    if header is not None:
        response.headers["X-Fedge-Rollout"] = header
    return VersionPublic.model_validate(resolved.version)


@router.get("/models/{name}/alias-history", response_model=list[AliasEventPublic])
def alias_history(
    name: Name,
    registry: RegistryDep,
    _actor: Viewer,
    alias: Annotated[str | None, Query(max_length=256)] = None,
) -> list[AliasEventPublic]:
    """A model's alias moves, oldest first (one alias with ``alias``)."""
    return [AliasEventPublic.model_validate(e) for e in registry.store.list_alias_events(name, alias)]


@router.get("/runs", response_model=list[RegistryRunPublic])
def list_runs(
    registry: RegistryDep, _actor: Viewer, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> list[RegistryRunPublic]:
    """Runs as stored, newest first, with their resolved configs."""
    return [RegistryRunPublic.model_validate(r) for r in registry.store.list_runs(limit=limit)]


@router.get("/runs/{run_id}/checkpoints", response_model=list[CheckpointPublic])
def list_checkpoints(run_id: RunId, registry: RegistryDep, _actor: Viewer) -> list[CheckpointPublic]:
    """A run's checkpoints in round order (404 for an unknown run)."""
    registry.store.get_run(run_id)
    return [CheckpointPublic.model_validate(c) for c in registry.store.list_checkpoints(run_id)]


@router.get("/audit", response_model=list[AuditEntryPublic])
def list_audit(
    registry: RegistryDep,
    _actor: Operator,
    after_seq: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
    limit: Annotated[int, Query(ge=1, le=10000)] = 1000,
) -> list[AuditEntryPublic]:
    """Audit entries after ``after_seq``, in order."""
    entries = registry.store.list_audit(after_seq=after_seq, limit=limit)
    return [AuditEntryPublic.model_validate(e) for e in entries]


@router.get("/audit/verify", response_model=AuditVerificationPublic)
def verify_audit(registry: RegistryDep, _actor: Operator) -> AuditVerificationPublic:
    """Walk the audit chain against its stored head; say where it first breaks."""
    seq, head = registry.store.audit_head()
    verification = verify_chain(registry.store.list_audit(), head_seq=seq, head_hash=head)
    return AuditVerificationPublic.model_validate(verification)
