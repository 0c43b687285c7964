"""``/api/v1/drift``: devices push noisy window summaries; operators read reports, triggers and status.

A summary is posted with a ``device`` token: its site is the device name the token is bound to (a
body naming another site is refused), within the device's rate and the window's cap on sites.
"""

# No `from __future__ import annotations`: FastAPI reads the dependency aliases at runtime.

from typing import Annotated, Literal

import numpy as np
from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from coordinator.api.deps import Device, DriftServiceDep, Operator, TelemetryLimiterDep, Viewer
from coordinator.api.drift_schemas import (
    DriftDecision,
    DriftReportPublic,
    DriftStatusPublic,
    DriftTriggerPublic,
    SummaryAccepted,
)
from coordinator.auth import Principal
from fedge.drift_summary import SiteSummary
from fedge.errors import PermissionDeniedError
from fedge.http_limits import MAX_ID

__all__ = ["DriftSummaryIn", "EvaluateIn", "router", "telemetry_site"]


class DriftSummaryIn(BaseModel):
    """One site's noisy counts for one window: nothing else is accepted (unknown keys are refused).

    ``site`` may be left out: the site is the device name of the posting token, and a body that
    names another is refused.
    """

    model_config = ConfigDict(extra="forbid")
    site: str | None = Field(default=None, min_length=1, max_length=128)
    model: str = Field(min_length=1, max_length=128)
    version: int = Field(ge=1, le=MAX_ID)
    window: int = Field(ge=0, le=MAX_ID)
    window_size: int = Field(ge=1, le=MAX_ID)
    counts: list[list[float]] = Field(min_length=1)
    class_counts: list[float] | None = None
    epsilon: float = Field(gt=0)
    delta: float = Field(default=0.0, ge=0, lt=1)
    mechanism: Literal["laplace", "gaussian"] = "laplace"

    def to_summary(self, site: str) -> SiteSummary:
        """The domain summary of ``site`` (ragged counts are refused by the service, naming the shape)."""
        widths = {len(row) for row in self.counts}
        counts = np.asarray(self.counts, dtype=np.float64) if len(widths) == 1 else np.zeros((0, 0))
        return SiteSummary(
            site=site,
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
    version: int = Field(ge=1, le=MAX_ID)
    performance: float | None = None


router = APIRouter(tags=["drift"])


def telemetry_site(caller: Principal, named: str | None, *, field: str) -> str:
    """The device name ``caller``'s token is bound to; refused when the body ``named`` another.

    Raises
    ------
    PermissionDeniedError
        Naming both the token's device and the one the body named.
    """
    site = caller.device or ""
    if named is not None and named != site:
        raise PermissionDeniedError(
            f"token {caller.name!r} is bound to device {site!r} but the body's {field} is {named!r}: "
            "a device posts only its own telemetry (leave the field out or name the token's device)"
        )
    return site


@router.post("/summaries", status_code=201, response_model=SummaryAccepted)
def post_summary(
    body: DriftSummaryIn, caller: Device, service: DriftServiceDep, limiter: TelemetryLimiterDep
) -> SummaryAccepted:
    """Aggregate one device's noisy window counts into the window's report (``device`` token only).

    403 for any other token or a body naming another site; 429 (``Retry-After``) beyond the device's
    rate or when the window already has the cap's number of sites.
    """
    site = telemetry_site(caller, body.site, field="site")
    limiter.take(site)
    reported = {s.site for s in service.store.summaries(body.model, body.version, body.window)}
    limiter.admit_site(site, reported, window=f"{body.model}:{body.version} window {body.window}")
    report, trigger = service.ingest([body.to_summary(site)], source="edge", actor=caller.name)
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
    version: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
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
