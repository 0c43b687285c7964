"""Response schemas of the drift routes: reports, triggers, the policy's status."""

from __future__ import annotations

from typing import Any

from coordinator.api.schemas import IsoDatetime, PublicModel

__all__ = [
    "DriftDecision",
    "DriftReportPublic",
    "DriftStatusPublic",
    "DriftTriggerPublic",
    "SummaryAccepted",
    "TriggerBrief",
    "VersionDriftStatus",
]


class DriftReportPublic(PublicModel):
    """One window's drift of a version: ``overall[stat]`` and ``per_site[site][stat]`` per feature."""

    id: int
    model: str
    version: int
    window: int
    sites: list[str]
    window_rows: int
    epsilon: float
    features: list[str]
    overall: dict[str, list[float]]
    per_site: dict[str, dict[str, list[float]]]
    classes: dict[str, float] | None
    flagged: bool
    created_at: IsoDatetime
    source: str = ""  # flower (a monitor run's clients) | edge (one device) | ...
    stream: str = ""  # the run id or device name whose windows are numbered together


class DriftTriggerPublic(PublicModel):
    """A policy decision that fired: the run it opened (or why none was), with its evidence."""

    id: int
    model: str
    version: int
    run_id: str | None
    outcome: str
    reason: str
    evidence: dict[str, Any]
    created_at: IsoDatetime


class SummaryAccepted(PublicModel):
    """A pushed window summary, aggregated into a report (and the trigger it fired, if any)."""

    report_id: int
    window: int
    sites: int
    flagged: bool
    trigger: DriftTriggerPublic | None


class DriftDecision(PublicModel):
    """What the policy decided when asked: the trigger it fired, or ``None``."""

    trigger: DriftTriggerPublic | None


class VersionDriftStatus(PublicModel):
    """A version's latest window: its top features by the policy's statistic, flagged sites, decision."""

    model: str
    version: int
    source: str = ""
    stream: str = ""
    window: int
    sites: int
    window_rows: int
    epsilon: float
    flagged: bool
    flagged_sites: dict[str, list[str]]
    statistic: str
    top_features: list[dict[str, Any]]  # {"feature": name, <statistic>: value}
    classes: dict[str, float] | None
    decision: str


class TriggerBrief(PublicModel):
    """A recent trigger, as the status lists it."""

    id: int
    model: str
    outcome: str
    run_id: str | None
    reason: str


class DriftStatusPublic(PublicModel):
    """The policy in force, each version's latest window, and the recent triggers."""

    policy: dict[str, Any]
    versions: list[VersionDriftStatus]
    triggers: list[TriggerBrief]
