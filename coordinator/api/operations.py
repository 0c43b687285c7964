"""Operator routes: runs (create, list, get, logs, stop, resume), nodes (enrol, list, revoke) and tokens."""

# Roles: ``viewer`` reads, ``operator`` creates and stops runs, ``admin`` manages nodes and tokens.
# Every change is written to the registry's audit log with the token's name as the actor.

# No `from __future__ import annotations`: FastAPI reads the dependency annotations at runtime.

import asyncio
from collections.abc import AsyncIterator
from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, Path, Query
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from coordinator.api.deps import (
    Admin,
    DeploymentDep,
    MaybeDeploymentDep,
    Operator,
    RegistryDep,
    RunConfigLoaderDep,
    TokensDep,
    Viewer,
    started_deployment,
)
from coordinator.api.schemas import (
    LogPagePublic,
    NodePublic,
    RunDetail,
    RunSummary,
    TokenCreated,
    TokenPublic,
    TokenRevoked,
)
from coordinator.run_recovery import plan_resume
from fedge.config.compose import refuse_interpolations
from fedge.errors import ConfigError
from fedge.http_limits import MAX_ID

__all__ = ["NodeIn", "RunCreateIn", "TokenIn", "router"]

router = APIRouter()

RunId = Annotated[str, Path(min_length=1, max_length=128)]
NodeName = Annotated[str, Path(min_length=1, max_length=128)]
TokenId = Annotated[int, Path(ge=1, le=MAX_ID)]


class RunCreateIn(BaseModel):
    """A run to start: a config name (a file in configs/, default ``config``) plus Hydra overrides."""

    model_config = ConfigDict(extra="forbid")
    config: str = Field(default="config", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_\-]+$")
    overrides: list[str] = Field(default_factory=list, max_length=100)
    reason: str = Field(default="operator", min_length=1, max_length=500)


class NodeIn(BaseModel):
    """A node to enrol: its name and public key (the .pub file's text, OpenSSH or PEM)."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=128)
    public_key: str = Field(min_length=1, max_length=10_000)


class TokenIn(BaseModel):
    """A token to create (a ``device`` token names the device it is bound to)."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=128)
    role: str = Field(pattern=r"^(viewer|operator|admin|device)$")
    device: str | None = Field(default=None, min_length=1, max_length=128)


def _refuse_registry_overrides(overrides: list[str]) -> None:
    for item in overrides:
        key = item.partition("=")[0].lstrip("+~")
        if key == "registry" or key.startswith("registry."):
            raise ConfigError(f"override {item!r}: the registry is set by the coordinator, not per run")


# --- runs -----------------------------------------------------------------------------------------
@router.post("/runs", status_code=201, tags=["runs"], response_model=RunSummary)
def create_run(
    body: RunCreateIn,
    actor: Operator,
    load_run_config: RunConfigLoaderDep,
    deployment: MaybeDeploymentDep,
) -> RunSummary:
    """Start a federated training run from a config name plus Hydra overrides."""
    refuse_interpolations(body.overrides)  # overrides are data: no `${...}` reaches a resolver
    _refuse_registry_overrides(body.overrides)
    config = load_run_config(body.config, list(body.overrides))  # a bad config is refused first
    run = started_deployment(deployment).runs.create(config, reason=body.reason, actor=actor)
    return RunSummary.of(run, rounds_done=0)


@router.get("/runs", tags=["runs"], response_model=list[RunSummary])
def list_runs(
    registry: RegistryDep,
    _actor: Viewer,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    status: Annotated[str | None, Query(max_length=32)] = None,
) -> list[RunSummary]:
    """Runs, newest first (simulations and deployments alike)."""
    runs = [r for r in registry.store.list_runs(limit=limit) if status is None or r.status == status]
    return [RunSummary.of(r, rounds_done=len(registry.store.list_checkpoints(r.run_id))) for r in runs]


@router.get("/runs/{run_id}", tags=["runs"], response_model=RunDetail)
def get_run(run_id: RunId, registry: RegistryDep, _actor: Viewer) -> RunDetail:
    """A run: status, rounds done, per-round metrics, participants, versions."""
    return RunDetail.read(registry, registry.store.get_run(run_id))


@router.get("/runs/{run_id}/logs", tags=["runs"], response_model=LogPagePublic)
def run_logs(
    run_id: RunId,
    _actor: Viewer,
    deployment: DeploymentDep,
    offset: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
    limit: Annotated[int, Query(ge=1, le=1 << 20)] = 65536,
) -> LogPagePublic:
    """A page of the run's log; pass ``next_offset`` back as ``offset`` for the next page."""
    page = deployment.runs.logs(run_id, offset=offset, limit=limit)
    return LogPagePublic.model_validate(asdict(page))


@router.get(
    "/runs/{run_id}/logs/stream",
    tags=["runs"],
    response_class=StreamingResponse,
    responses={200: {"content": {"text/plain": {}}, "description": "The log, followed."}},
)
async def stream_logs(
    run_id: RunId,
    _actor: Viewer,
    deployment: DeploymentDep,
    offset: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
) -> StreamingResponse:
    """The run's log as plain text, following it until the run finishes."""
    runs = deployment.runs
    runs.get(run_id)  # 404 before the stream starts

    async def follow() -> AsyncIterator[bytes]:
        position = offset
        while True:
            page = await asyncio.to_thread(runs.logs, run_id, offset=position)
            if page.text:
                yield page.text.encode()
            position = page.next_offset
            if page.finished and not page.text:
                return
            if not page.text:
                await asyncio.sleep(0.5)

    return StreamingResponse(follow(), media_type="text/plain; charset=utf-8")


@router.post("/runs/{run_id}/stop", tags=["runs"], response_model=RunSummary)
def stop_run(run_id: RunId, actor: Operator, registry: RegistryDep, deployment: DeploymentDep) -> RunSummary:
    """Ask the SuperLink to stop the run."""
    run = deployment.runs.stop(run_id, actor=actor)
    return RunSummary.of(run, rounds_done=len(registry.store.list_checkpoints(run_id)))


@router.post("/runs/{run_id}/resume", status_code=201, tags=["runs"], response_model=RunSummary)
def resume_run(
    run_id: RunId, actor: Operator, registry: RegistryDep, deployment: MaybeDeploymentDep
) -> RunSummary:
    """Continue an interrupted (or stopped, failed) run from its last checkpoint in a new run.

    409 when the run was already resumed, completed, registered a version, is still in progress
    or has no checkpoint.
    """
    plan_resume(registry, run_id)  # a run that cannot be resumed is refused first, by its own reason
    run = started_deployment(deployment).runs.resume(run_id, actor=actor)
    return RunSummary.of(run, rounds_done=0)


# --- nodes ----------------------------------------------------------------------------------------
@router.get("/nodes", tags=["nodes"], response_model=list[NodePublic])
def list_nodes(_actor: Viewer, deployment: DeploymentDep) -> list[NodePublic]:
    """Enrolled nodes with their live state (online, offline, registered, revoked)."""
    return [NodePublic.of(n) for n in deployment.nodes.list()]


@router.post("/nodes", status_code=201, tags=["nodes"], response_model=NodePublic)
def enroll_node(body: NodeIn, actor: Admin, registry: RegistryDep, deployment: DeploymentDep) -> NodePublic:
    """Enrol an institution's node key; its SuperNode may then connect."""
    node = deployment.nodes.enroll(name=body.name, public_key=body.public_key.encode(), actor=actor)
    registry.store.append_audit(
        action="node.enrolled",
        actor=actor,
        subject=f"node {node.name}",
        details={"key_sha256": node.key_sha256},
    )
    return NodePublic.of(node)


@router.delete("/nodes/{name}", tags=["nodes"], response_model=NodePublic)
def revoke_node(name: NodeName, actor: Admin, registry: RegistryDep, deployment: DeploymentDep) -> NodePublic:
    """Revoke a node: its key is unregistered at the SuperLink and can no longer connect."""
    node = deployment.nodes.revoke(name, actor=actor)
    registry.store.append_audit(action="node.revoked", actor=actor, subject=f"node {node.name}", details={})
    return NodePublic.of(node)


# --- tokens ---------------------------------------------------------------------------------------
@router.post("/tokens", status_code=201, tags=["tokens"], response_model=TokenCreated)
def create_token(body: TokenIn, registry: RegistryDep, tokens: TokensDep, actor: Admin) -> TokenCreated:
    """Create a token; the secret is in this response only."""
    info, secret = tokens.create(name=body.name, role=body.role, device=body.device)
    bound = {"device": info.device} if info.device is not None else {}
    registry.store.append_audit(
        action="token.created",
        actor=actor,
        subject=f"token {info.id}",
        details={"name": info.name, "role": info.role, **bound},
    )
    return TokenCreated.of(info, secret)


@router.get("/tokens", tags=["tokens"], response_model=list[TokenPublic])
def list_tokens(tokens: TokensDep, _actor: Admin) -> list[TokenPublic]:
    """Tokens without their secrets."""
    return [TokenPublic.model_validate(t) for t in tokens.list()]


@router.delete("/tokens/{token_id}", tags=["tokens"], response_model=TokenRevoked)
def revoke_token(token_id: TokenId, registry: RegistryDep, tokens: TokensDep, actor: Admin) -> TokenRevoked:
    """Revoke a token."""
    tokens.revoke(token_id)
    registry.store.append_audit(action="token.revoked", actor=actor, subject=f"token {token_id}", details={})
    return TokenRevoked(id=token_id, revoked=True)
