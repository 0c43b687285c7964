"""Operator routes: runs (create, list, get, logs, stop), nodes (enrol, list, revoke) and tokens.

Roles: ``viewer`` reads, ``operator`` creates and stops runs, ``admin`` manages nodes and tokens.
Every change is written to the registry's audit log with the token's name as the actor.
"""

# No `from __future__ import annotations`: FastAPI reads the dependency annotations at runtime.

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from coordinator.auth import TokenStore
from coordinator.deployment.deployment import Deployment
from fedge.config import FedgeConfig
from fedge.errors import ConfigError, FederationError
from registry import Registry, RunInfo

__all__ = ["RunConfigLoader", "create_operations_router"]

# (config name, Hydra overrides) -> the resolved config as a plain dict; raises ConfigError.
RunConfigLoader = Callable[[str, list[str]], FedgeConfig]


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
    """A token to create."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=128)
    role: str = Field(pattern=r"^(viewer|operator|admin)$")


def run_summary(run: RunInfo, rounds_done: int) -> dict[str, Any]:
    """A run as listed."""
    return {
        "run_id": run.run_id,
        "status": run.status,
        "mode": run.mode,
        "task": run.task,
        "strategy": run.strategy,
        "num_rounds": run.num_rounds,
        "rounds_done": rounds_done,
        "reason": run.reason,
        "flower_run_id": str(run.flower_run_id) if run.flower_run_id is not None else None,
        "error": run.error,
        "created_at": run.created_at.isoformat(),
        "finished_at": run.finished_at.isoformat() if run.finished_at else None,
    }


def _participant(node: dict[str, Any]) -> dict[str, Any]:
    keep = ("node_id", "name", "data_fingerprint", "data_rows", "num_examples")
    out = {k: node[k] for k in keep if k in node}
    if "node_id" in out:
        out["node_id"] = str(out["node_id"])  # Flower node ids are uint64: JSON numbers lose them
    return out


def run_detail(registry: Registry, run: RunInfo) -> dict[str, Any]:
    """A run with its per-round metrics and participants (from its checkpoints' lineage)."""
    checkpoints = registry.store.list_checkpoints(run.run_id)
    rounds = [
        {
            "round": c.round,
            "checkpoint_id": c.id,
            "metrics": c.metrics,
            "participants": [_participant(n) for n in c.lineage.get("nodes", [])],
            "failed_nodes": c.lineage.get("failed_nodes", 0),
            "created_at": c.created_at.isoformat(),
        }
        for c in checkpoints
    ]
    participants: dict[str, dict[str, Any]] = {}
    for r in rounds:
        for p in r["participants"]:
            participants[p.get("name") or p.get("node_id", "?")] = p
    versions = registry.store.list_versions(run_id=run.run_id, limit=10)
    return {
        **run_summary(run, len(checkpoints)),
        "config_hash": run.config_hash,
        "rounds": rounds,
        "participants": sorted(participants.values(), key=lambda p: str(p.get("name", ""))),
        "versions": [f"{v.name}:{v.number}" for v in versions],
    }


def create_operations_router(
    *,
    get_registry: Callable[[], Registry],
    get_deployment: Callable[[], Deployment | None],
    tokens: TokenStore,
    load_run_config: RunConfigLoader | None,
    reader: Callable[..., str],
    operator: Callable[..., str],
    admin: Callable[..., str],
) -> APIRouter:
    """Build the router (mounted under ``/api/v1``)."""
    router = APIRouter()

    def deployment() -> Deployment:
        dep = get_deployment()
        if dep is None or dep.runs is None or dep.nodes is None:
            raise FederationError(
                "this coordinator manages no SuperLink: start it with "
                "`fedge coordinator serve --tls-dir DIR` to run federations and enrol nodes"
            )
        return dep

    # --- runs -----------------------------------------------------------------------------------
    @router.post("/runs", status_code=201, tags=["runs"])
    def create_run(body: RunCreateIn, actor: Annotated[str, Depends(operator)]) -> dict[str, Any]:
        """Start a federated training run from a config name plus Hydra overrides."""
        for item in body.overrides:
            key = item.partition("=")[0].lstrip("+~")
            if key == "registry" or key.startswith("registry."):
                raise ConfigError(f"override {item!r}: the registry is set by the coordinator, not per run")
        if load_run_config is None:
            raise ConfigError("this coordinator was started without a config directory")
        config = load_run_config(body.config, list(body.overrides))
        run = deployment().runs.create(config, reason=body.reason, actor=actor)  # type: ignore[union-attr]
        return run_summary(run, 0)

    @router.get("/runs", tags=["runs"])
    def list_runs(
        _actor: Annotated[str, Depends(reader)],
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        status: str | None = None,
    ) -> list[dict[str, Any]]:
        """Runs, newest first (simulations and deployments alike)."""
        registry = get_registry()
        runs = [r for r in registry.store.list_runs(limit=limit) if status is None or r.status == status]
        return [run_summary(r, len(registry.store.list_checkpoints(r.run_id))) for r in runs]

    @router.get("/runs/{run_id}", tags=["runs"])
    def get_run(run_id: str, _actor: Annotated[str, Depends(reader)]) -> dict[str, Any]:
        """A run: status, rounds done, per-round metrics, participants, versions."""
        registry = get_registry()
        return run_detail(registry, registry.store.get_run(run_id))

    @router.get("/runs/{run_id}/logs", tags=["runs"])
    def run_logs(
        run_id: str,
        _actor: Annotated[str, Depends(reader)],
        offset: Annotated[int, Query(ge=0)] = 0,
        limit: Annotated[int, Query(ge=1, le=1 << 20)] = 65536,
    ) -> dict[str, Any]:
        """A page of the run's log; pass ``next_offset`` back as ``offset`` for the next page."""
        return asdict(deployment().runs.logs(run_id, offset=offset, limit=limit))  # type: ignore[union-attr]

    @router.get("/runs/{run_id}/logs/stream", tags=["runs"])
    async def stream_logs(
        run_id: str,
        _actor: Annotated[str, Depends(reader)],
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> StreamingResponse:
        """The run's log as plain text, following it until the run finishes."""
        runs = deployment().runs
        assert runs is not None
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

    @router.post("/runs/{run_id}/stop", tags=["runs"])
    def stop_run(run_id: str, actor: Annotated[str, Depends(operator)]) -> dict[str, Any]:
        """Ask the SuperLink to stop the run."""
        registry = get_registry()
        run = deployment().runs.stop(run_id, actor=actor)  # type: ignore[union-attr]
        return run_summary(run, len(registry.store.list_checkpoints(run_id)))

    # --- nodes ----------------------------------------------------------------------------------
    @router.get("/nodes", tags=["nodes"])
    def list_nodes(_actor: Annotated[str, Depends(reader)]) -> list[dict[str, Any]]:
        """Enrolled nodes with their live state (online, offline, registered, revoked)."""
        return [_node_json(n) for n in deployment().nodes.list()]  # type: ignore[union-attr]

    @router.post("/nodes", status_code=201, tags=["nodes"])
    def enroll_node(body: NodeIn, actor: Annotated[str, Depends(admin)]) -> dict[str, Any]:
        """Enrol an institution's node key; its SuperNode may then connect."""
        node = deployment().nodes.enroll(  # type: ignore[union-attr]
            name=body.name, public_key=body.public_key.encode(), actor=actor
        )
        get_registry().store.append_audit(
            action="node.enrolled",
            actor=actor,
            subject=f"node {node.name}",
            details={"key_sha256": node.key_sha256},
        )
        return _node_json(node)

    @router.delete("/nodes/{name}", tags=["nodes"])
    def revoke_node(name: str, actor: Annotated[str, Depends(admin)]) -> dict[str, Any]:
        """Revoke a node: its key is unregistered at the SuperLink and can no longer connect."""
        node = deployment().nodes.revoke(name, actor=actor)  # type: ignore[union-attr]
        get_registry().store.append_audit(
            action="node.revoked", actor=actor, subject=f"node {node.name}", details={}
        )
        return _node_json(node)

    # --- tokens ---------------------------------------------------------------------------------
    @router.post("/tokens", status_code=201, tags=["tokens"])
    def create_token(body: TokenIn, actor: Annotated[str, Depends(admin)]) -> dict[str, Any]:
        """Create a token; the secret is in this response only."""
        info, secret = tokens.create(name=body.name, role=body.role)
        get_registry().store.append_audit(
            action="token.created",
            actor=actor,
            subject=f"token {info.id}",
            details={"name": info.name, "role": info.role},
        )
        return {"id": info.id, "name": info.name, "role": info.role, "token": secret}

    @router.get("/tokens", tags=["tokens"])
    def list_tokens(_actor: Annotated[str, Depends(admin)]) -> list[dict[str, Any]]:
        """Tokens without their secrets."""
        return [
            {
                "id": t.id,
                "name": t.name,
                "role": t.role,
                "created_at": t.created_at.isoformat(),
                "revoked_at": t.revoked_at.isoformat() if t.revoked_at else None,
            }
            for t in tokens.list()
        ]

    @router.delete("/tokens/{token_id}", tags=["tokens"])
    def revoke_token(token_id: int, actor: Annotated[str, Depends(admin)]) -> dict[str, Any]:
        """Revoke a token."""
        tokens.revoke(token_id)
        get_registry().store.append_audit(
            action="token.revoked", actor=actor, subject=f"token {token_id}", details={}
        )
        return {"id": token_id, "revoked": True}

    return router


def _node_json(node: Any) -> dict[str, Any]:
    return {
        "id": node.id,
        "name": node.name,
        "key_sha256": node.key_sha256,
        "flower_node_id": str(node.flower_node_id) if node.flower_node_id is not None else None,
        "state": node.state,
        "last_seen": node.last_seen or None,
        "enrolled_at": node.enrolled_at.isoformat(),
        "enrolled_by": node.enrolled_by,
        "revoked_at": node.revoked_at.isoformat() if node.revoked_at else None,
    }
