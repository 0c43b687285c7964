"""``/api/v1/drift``: devices push noisy window summaries; operators read reports, triggers and status."""

# No `from __future__ import annotations`: FastAPI reads the dependency aliases at runtime.

from collections.abc import Callable
from dataclasses import asdict
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict, Field

from coordinator.drift.service import DriftService
from fedge.drift_summary import SiteSummary

__all__ = ["DriftSummaryIn", "EvaluateIn", "create_drift_router"]


class DriftSummaryIn(BaseModel):
    """One site's noisy counts for one window: nothing else is accepted (unknown keys are refused)."""

    model_config = ConfigDict(extra="forbid")
    site: str = Field(min_length=1, max_length=128)
    model: str = Field(min_length=1, max_length=128)
    version: int = Field(ge=1)
    window: int = Field(ge=0)
    window_size: int = Field(ge=1)
    counts: list[list[float]] = Field(min_length=1)
    class_counts: list[float] | None = None
    epsilon: float = Field(gt=0)
    delta: float = Field(default=0.0, ge=0, lt=1)
    mechanism: Literal["laplace", "gaussian"] = "laplace"

    def to_summary(self) -> SiteSummary:
        """The domain summary (ragged counts are refused by the service, naming the shape)."""
        widths = {len(row) for row in self.counts}
        counts = np.asarray(self.counts, dtype=np.float64) if len(widths) == 1 else np.zeros((0, 0))
        return SiteSummary(
            site=self.site,
            model=self.model,
            version=self.version,
            window=self.window,
            window_size=self.window_size,
            counts=counts,
            class_counts=None
            if self.class_counts is None
            else np.asarray(self.class_counts, dtype=np.float64),
            epsilon=self.epsilon,
            delta=self.delta,
            mechanism=self.mechanism,
        )


class EvaluateIn(BaseModel):
    """Ask the policy to decide now (optionally with a federated evaluation metric)."""

    model_config = ConfigDict(extra="forbid")
    model: str = Field(min_length=1, max_length=128)
    version: int = Field(ge=1)
    performance: float | None = None


def _public(obj: Any) -> dict[str, Any]:
    out = asdict(obj)
    if "created_at" in out:
        out["created_at"] = obj.created_at.isoformat()
    return out


def create_drift_router(
    *, get_service: Callable[[], DriftService], reader: Callable[..., str], operator: Callable[..., str]
) -> APIRouter:
    """Routes over ``get_service()``; ``reader``/``operator`` are the app's role dependencies."""
    router = APIRouter(tags=["drift"])
    Service = Annotated[DriftService, Depends(get_service)]

    @router.post("/summaries", status_code=201)
    def post_summary(
        body: DriftSummaryIn, service: Service, actor: Annotated[str, Depends(reader)]
    ) -> dict[str, Any]:
        report, trigger = service.ingest([body.to_summary()], source="edge", actor=actor)
        return {
            "report_id": report.id,
            "window": report.window,
            "sites": len(report.sites),
            "flagged": report.flagged,
            "trigger": None if trigger is None else _public(trigger),
        }

    @router.get("/reports")
    def list_reports(
        service: Service,
        _actor: Annotated[str, Depends(reader)],
        model: str | None = None,
        version: int | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> list[dict[str, Any]]:
        return [_public(r) for r in service.store.reports(model, version=version, limit=limit)]

    @router.get("/triggers")
    def list_triggers(
        service: Service, _actor: Annotated[str, Depends(reader)], model: str | None = None
    ) -> list[dict[str, Any]]:
        return [_public(t) for t in service.store.triggers(model)]

    @router.get("/status")
    def status(
        service: Service, _actor: Annotated[str, Depends(reader)], model: str | None = None
    ) -> dict[str, Any]:
        return service.status(model)

    @router.post("/evaluate")
    def evaluate(
        body: EvaluateIn, service: Service, _actor: Annotated[str, Depends(operator)]
    ) -> dict[str, Any]:
        trigger = service.evaluate(body.model, body.version, performance=body.performance)
        return {"trigger": None if trigger is None else _public(trigger)}

    return router
