"""``/api/v1/drift``: devices push noisy window summaries; operators read reports, triggers and status."""

# No `from __future__ import annotations`: FastAPI reads the dependency aliases at runtime.

from typing import Annotated, Literal

import numpy as np
from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from coordinator.api.deps import DriftServiceDep, Operator, Viewer
from coordinator.api.drift_schemas import (
    DriftDecision,
    DriftReportPublic,
    DriftStatusPublic,
    DriftTriggerPublic,
    SummaryAccepted,
)
from fedge.drift_summary import SiteSummary

__all__ = ["DriftSummaryIn", "EvaluateIn", "router"]


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


router = APIRouter(tags=["drift"])


@router.post("/summaries", status_code=201, response_model=SummaryAccepted)
def post_summary(body: DriftSummaryIn, actor: Viewer, service: DriftServiceDep) -> SummaryAccepted:
    """Aggregate one site's noisy window counts into the window's report (a device token may push)."""
    report, trigger = service.ingest([body.to_summary()], source="edge", actor=actor)
    return SummaryAccepted(
        report_id=report.id,
        window=report.window,
        sites=len(report.sites),
        flagged=report.flagged,
        trigger=None if trigger is None else DriftTriggerPublic.model_validate(trigger),
    )


@router.get("/reports", response_model=list[DriftReportPublic])
def list_reports(
    _actor: Viewer,
    service: DriftServiceDep,
    model: str | None = None,
    version: int | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[DriftReportPublic]:
    """Window reports, oldest first, optionally of one model or version."""
    reports = service.store.reports(model, version=version, limit=limit)
    return [DriftReportPublic.model_validate(r) for r in reports]


@router.get("/triggers", response_model=list[DriftTriggerPublic])
def list_triggers(
    _actor: Viewer, service: DriftServiceDep, model: str | None = None
) -> list[DriftTriggerPublic]:
    """The policy's triggers, optionally of one model."""
    return [DriftTriggerPublic.model_validate(t) for t in service.store.triggers(model)]


@router.get("/status", response_model=DriftStatusPublic)
def status(_actor: Viewer, service: DriftServiceDep, model: str | None = None) -> DriftStatusPublic:
    """Per version: the latest window's top features, flagged sites, decision; recent triggers."""
    return DriftStatusPublic.model_validate(service.status(model))


@router.post("/evaluate", response_model=DriftDecision)
def evaluate(body: EvaluateIn, _actor: Operator, service: DriftServiceDep) -> DriftDecision:
    """Ask the policy to decide now (optionally with a federated evaluation metric)."""
    trigger = service.evaluate(body.model, body.version, performance=body.performance)
    return DriftDecision(trigger=None if trigger is None else DriftTriggerPublic.model_validate(trigger))
