"""``/api/v1/rollouts``: start a staged rollout of an alias, read its status, halt it.

``Operator`` starts and halts; ``Viewer`` reads. The domain is :mod:`coordinator.rollouts`.
"""

# No `from __future__ import annotations`: FastAPI reads the dependency annotations at runtime.

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from coordinator.api.deps import Operator, RolloutsDep, Viewer
from coordinator.rollouts import Rollout
from fedge.http_limits import MAX_ID

__all__ = ["RolloutPublic", "RolloutRequest", "router"]

router = APIRouter(tags=["rollouts"])

RolloutId = Annotated[int, Path(ge=1, le=MAX_ID)]


class RolloutRequest(BaseModel):
    """A staged rollout of ``model@alias`` to ``version``.

    ``steps``: fractions of the fleet in (0, 1], increasing, the last 1.0, or names of ``groups``.
    """

    model_config = ConfigDict(extra="forbid")
    model: str = Field(min_length=1, max_length=128)
    alias: str = Field(min_length=1, max_length=128)
    version: str = Field(min_length=1, max_length=256)
    steps: list[str] = Field(min_length=1, max_length=20)
    groups: dict[str, list[str]] = Field(default_factory=dict, max_length=20)
    min_healthy_s: float = Field(default=60.0, ge=0, le=86_400)
    max_error_rate: float = Field(default=0.01, ge=0, le=1)
    max_p99_ms: float = Field(default=1000.0, gt=0, le=3_600_000)


class HaltRequest(BaseModel):
    """Why an operator halts a rollout."""

    model_config = ConfigDict(extra="forbid")
    reason: str = Field(default="operator", max_length=1000)


class RolloutPublic(BaseModel):
    """A rollout: its plan, where it stands, and its timeline."""

    id: int
    model: str
    alias: str
    from_version: str
    to_version: str
    steps: list[str]
    groups: dict[str, list[str]]
    min_healthy_s: float
    max_error_rate: float
    max_p99_ms: float
    state: str
    step: int
    step_started_at: datetime
    started_by: str
    reason: str
    timeline: list[dict[str, Any]]

    @classmethod
    def of(cls, r: Rollout) -> "RolloutPublic":
        """The public view of a stored rollout."""
        return cls(
            id=r.id, model=r.model, alias=r.alias, from_version=f"{r.model}:{r.from_number}",
            to_version=r.to_label, steps=r.steps, groups=r.groups, min_healthy_s=r.min_healthy_s,
            max_error_rate=r.max_error_rate, max_p99_ms=r.max_p99_ms, state=r.state, step=r.step,
            step_started_at=r.step_started_at, started_by=r.started_by, reason=r.reason,
            timeline=r.timeline,
        )  # fmt: skip


@router.post("", status_code=201, response_model=RolloutPublic)
def start_rollout(body: RolloutRequest, rollouts: RolloutsDep, actor: Operator) -> RolloutPublic:
    """Start a rollout (422 bad steps, 404 unknown version or alias, 409 one already active)."""
    started = rollouts.start(
        model=body.model, alias=body.alias, version=body.version, steps=body.steps, groups=body.groups,
        min_healthy_s=body.min_healthy_s, max_error_rate=body.max_error_rate,
        max_p99_ms=body.max_p99_ms, actor=actor,
    )  # fmt: skip
    return RolloutPublic.of(started)


@router.get("", response_model=list[RolloutPublic])
def list_rollouts(
    rollouts: RolloutsDep, _actor: Viewer, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> list[RolloutPublic]:
    """Rollouts, newest first."""
    return [RolloutPublic.of(r) for r in rollouts.store.list(limit=limit)]


@router.get("/{rollout_id}", response_model=RolloutPublic)
def get_rollout(rollout_id: RolloutId, rollouts: RolloutsDep, _actor: Viewer) -> RolloutPublic:
    """A rollout, judged on the latest device reports first."""
    return RolloutPublic.of(rollouts.status(rollout_id))


@router.post("/{rollout_id}/halt", response_model=RolloutPublic)
def halt_rollout(
    rollout_id: RolloutId, rollouts: RolloutsDep, actor: Operator, body: HaltRequest | None = None
) -> RolloutPublic:
    """Halt an active rollout: every device resolves to the previous version (409 if not active)."""
    return RolloutPublic.of(
        rollouts.halt(rollout_id, actor=actor, reason=(body.reason if body else "operator"))
    )
