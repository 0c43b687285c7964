"""Stored drift telemetry: the sites' noisy summaries, the per-window reports, and the policy's triggers.

Tables live on :data:`coordinator.tables.coordinator_metadata`, beside the tokens and device reports. Counts
are stored as float64 bytes (decoding 10,000 summaries stays a ``frombuffer`` each, not a JSON parse).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Float,
    Integer,
    LargeBinary,
    String,
    Table,
    UniqueConstraint,
    delete,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from coordinator.drift.aggregate import STATISTICS, WindowAggregate
from coordinator.tables import coordinator_metadata, open_coordinator_engine
from fedge.drift_summary import SiteSummary
from fedge.errors import ConflictError

__all__ = ["DriftReport", "DriftReportStore", "DriftTrigger"]

_summaries = Table(
    "drift_summaries",
    coordinator_metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("model", String(128), nullable=False),
    Column("version", Integer, nullable=False),
    Column("window", Integer, nullable=False),
    Column("site", String(128), nullable=False),
    Column("source", String(16), nullable=False),
    Column("window_size", Integer, nullable=False),
    Column("epsilon", Float, nullable=False),
    Column("delta", Float, nullable=False),
    Column("mechanism", String(16), nullable=False),
    Column("shape", JSON, nullable=False),
    Column("counts", LargeBinary, nullable=False),
    Column("class_counts", LargeBinary, nullable=True),
    Column("received_from", String(256), nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("model", "version", "window", "site", name="uq_drift_summary_site_window"),
)

_reports = Table(
    "drift_reports",
    coordinator_metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("model", String(128), nullable=False, index=True),
    Column("version", Integer, nullable=False),
    Column("window", Integer, nullable=False),
    Column("sites", JSON, nullable=False),
    Column("window_rows", Integer, nullable=False),
    Column("epsilon", Float, nullable=False),
    Column("features", JSON, nullable=False),
    Column("overall", JSON, nullable=False),
    Column("per_site", JSON, nullable=False),
    Column("classes", JSON, nullable=True),
    Column("flagged", Boolean, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("model", "version", "window", name="uq_drift_report_window"),
)

_triggers = Table(
    "drift_triggers",
    coordinator_metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("model", String(128), nullable=False, index=True),
    Column("version", Integer, nullable=False),
    Column("run_id", String(64), nullable=True),
    Column("outcome", String(32), nullable=False),
    Column("reason", String(512), nullable=False),
    Column("evidence", JSON, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)


@dataclass(frozen=True)
class DriftReport:
    """One window's drift of a version: overall and per site, per feature and statistic.

    ``overall[stat]`` is a list over ``features``; ``per_site[site][stat]`` likewise; ``classes[stat]``
    the predicted-class statistic; ``epsilon`` the largest per-site epsilon of the window.
    """

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
    created_at: datetime


@dataclass(frozen=True)
class DriftTrigger:
    """A policy decision that fired: the run it opened (or why none was), with its evidence."""

    id: int
    model: str
    version: int
    run_id: str | None
    outcome: str  # started | requested (no launcher) | cooldown | in-progress
    reason: str
    evidence: dict[str, Any]
    created_at: datetime


def _report(r: Any) -> DriftReport:
    return DriftReport(
        r.id, r.model, r.version, r.window, r.sites, r.window_rows, r.epsilon, r.features, r.overall,
        r.per_site, r.classes, r.flagged, r.created_at,
    )  # fmt: skip


def _trigger(r: Any) -> DriftTrigger:
    return DriftTrigger(r.id, r.model, r.version, r.run_id, r.outcome, r.reason, r.evidence, r.created_at)


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


class DriftReportStore:
    """Summaries, reports and triggers in SQL tables (the coordinator's own)."""

    def __init__(self, url: str) -> None:
        self._engine: Engine = open_coordinator_engine(url)

    # --- summaries ------------------------------------------------------------------------------------

    def add_summaries(self, summaries: list[SiteSummary], *, source: str, received_from: str) -> None:
        """Store a window's summaries in one transaction.

        Raises
        ------
        ConflictError
            If a site already sent a summary for this version and window (nothing is stored).
        """
        now = datetime.now(UTC)
        rows = [
            {
                "model": s.model,
                "version": s.version,
                "window": s.window,
                "site": s.site,
                "source": source,
                "window_size": s.window_size,
                "epsilon": s.epsilon,
                "delta": s.delta,
                "mechanism": s.mechanism,
                "shape": list(np.shape(s.counts)),
                "counts": np.ascontiguousarray(s.counts, dtype=np.float64).tobytes(),
                "class_counts": None
                if s.class_counts is None
                else np.ascontiguousarray(s.class_counts, dtype=np.float64).tobytes(),
                "received_from": received_from,
                "received_at": now,
            }
            for s in summaries
        ]
        try:
            with self._engine.begin() as conn:
                conn.execute(insert(_summaries), rows)
        except IntegrityError as exc:
            raise ConflictError(
                "a site already sent a summary for this version and window: each site counts once per "
                "window (send the next window instead)"
            ) from exc

    def summaries(self, model: str, version: int, window: int) -> list[SiteSummary]:
        """A window's summaries, in arrival order."""
        query = (
            select(_summaries)
            .where(
                _summaries.c.model == model, _summaries.c.version == version, _summaries.c.window == window
            )
            .order_by(_summaries.c.id)
        )
        with self._engine.connect() as conn:
            rows = conn.execute(query).all()
        return [
            SiteSummary(
                site=r.site,
                model=r.model,
                version=r.version,
                window=r.window,
                window_size=r.window_size,
                counts=np.frombuffer(r.counts, dtype=np.float64).reshape(r.shape),
                class_counts=None
                if r.class_counts is None
                else np.frombuffer(r.class_counts, dtype=np.float64),
                epsilon=r.epsilon,
                delta=r.delta,
                mechanism=r.mechanism,
            )
            for r in rows
        ]

    # --- reports --------------------------------------------------------------------------------------

    def put_report(
        self,
        *,
        model: str,
        version: int,
        window: int,
        features: list[str],
        agg: WindowAggregate,
        flagged: bool,
    ) -> DriftReport:
        """Store (or replace, when more sites reported) the report of one window."""
        values = {
            "model": model,
            "version": version,
            "window": window,
            "sites": list(agg.sites),
            "window_rows": agg.window_rows,
            "epsilon": agg.epsilon,
            "features": list(features),
            "overall": {k: [float(v) for v in agg.overall[k]] for k in STATISTICS},
            "per_site": {
                site: {k: [float(v) for v in agg.per_site[k][i]] for k in STATISTICS}
                for i, site in enumerate(agg.sites)
            },
            "classes": agg.classes,
            "flagged": flagged,
            "created_at": datetime.now(UTC),
        }
        with self._engine.begin() as conn:
            conn.execute(
                delete(_reports).where(
                    _reports.c.model == model, _reports.c.version == version, _reports.c.window == window
                )
            )
            report_id = int(conn.execute(insert(_reports).values(**values)).inserted_primary_key[0])  # type: ignore[index]
        return DriftReport(id=report_id, **values)  # type: ignore[arg-type]  # the row's own values

    def reports(
        self, model: str | None = None, *, version: int | None = None, limit: int = 100
    ) -> list[DriftReport]:
        """Reports, newest window last (the last ``limit``)."""
        query = select(_reports)
        if model is not None:
            query = query.where(_reports.c.model == model)
        if version is not None:
            query = query.where(_reports.c.version == version)
        query = query.order_by(
            _reports.c.version.desc(), _reports.c.window.desc(), _reports.c.id.desc()
        ).limit(limit)
        with self._engine.connect() as conn:
            rows = conn.execute(query).all()
        return [_report(r) for r in reversed(rows)]

    # --- triggers -------------------------------------------------------------------------------------

    def add_trigger(
        self,
        *,
        model: str,
        version: int,
        run_id: str | None,
        outcome: str,
        reason: str,
        evidence: dict[str, Any],
    ) -> DriftTrigger:
        """Record a policy decision that fired."""
        values = {
            "model": model,
            "version": version,
            "run_id": run_id,
            "outcome": outcome,
            "reason": reason[:512],
            "evidence": evidence,
            "created_at": datetime.now(UTC),
        }
        with self._engine.begin() as conn:
            trigger_id = int(conn.execute(insert(_triggers).values(**values)).inserted_primary_key[0])  # type: ignore[index]
        return DriftTrigger(id=trigger_id, **values)  # type: ignore[arg-type]  # the row's own values

    def set_outcome(self, trigger_id: int, outcome: str) -> None:
        """Record what became of a trigger (a requested run that a launcher started)."""
        with self._engine.begin() as conn:
            conn.execute(update(_triggers).where(_triggers.c.id == trigger_id).values(outcome=outcome))

    def triggers(self, model: str | None = None, *, limit: int = 50) -> list[DriftTrigger]:
        """Triggers, newest first."""
        query = select(_triggers)
        if model is not None:
            query = query.where(_triggers.c.model == model)
        with self._engine.connect() as conn:
            rows = conn.execute(query.order_by(_triggers.c.id.desc()).limit(limit)).all()
        return [_trigger(r) for r in rows]

    def last_started(self, model: str) -> DriftTrigger | None:
        """The newest trigger of ``model`` that started or requested a run (for the cooldown)."""
        query = (
            select(_triggers)
            .where(_triggers.c.model == model, _triggers.c.outcome.in_(("started", "requested")))
            .order_by(_triggers.c.id.desc())
            .limit(1)
        )
        with self._engine.connect() as conn:
            row = conn.execute(query).first()
        if row is None:
            return None
        t = _trigger(row)
        return DriftTrigger(**{**t.__dict__, "created_at": _aware(t.created_at)})

    def close(self) -> None:
        """Release connections."""
        self._engine.dispose()
