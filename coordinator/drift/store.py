"""Stored drift telemetry: the sites' noisy summaries, the per-window reports, and the policy's triggers.

Tables live on :data:`coordinator.tables.coordinator_metadata`, beside the tokens and device reports. Counts
are stored as float64 bytes (decoding 10,000 summaries stays a ``frombuffer`` each, not a JSON parse).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import numpy as np
from sqlalchemy import JSON, Column, DateTime, LargeBinary, String, UniqueConstraint, delete, insert, update
from sqlmodel import Field, select

from coordinator.drift.aggregate import WindowAggregate
from coordinator.tables import CoordinatorRow, CoordinatorStore
from fedge.drift_summary import SiteSummary
from fedge.errors import ConflictError, DataError

__all__ = [
    "DriftReport",
    "DriftReportRow",
    "DriftReportStore",
    "DriftSummaryRow",
    "DriftTrigger",
    "DriftTriggerRow",
    "stream_of",
]


@dataclass(frozen=True)
class DriftReport:
    """One window's drift of a version: overall and per site, per feature and statistic.

    ``overall[stat]`` is a list over ``features``; ``per_site[site][stat]`` likewise; ``classes[stat]``
    the predicted-class statistic; ``epsilon`` the largest per-site epsilon of the window. With the
    calibrated test, ``overall`` also holds ``pvalue`` and ``flagged`` per feature and ``window_pvalue``
    (one value), and ``per_site[site]`` holds ``pvalue`` and ``flagged`` (one value each).

    A report covers one window of one *stream* (:func:`stream_of`): ``source`` is the kind of sender
    (``flower`` for a monitor run's clients, ``edge`` for a device) and ``stream`` names the sender
    whose windows are numbered together (the monitor run's id, the device's name). A device's window
    0 is never merged into a monitor run's window 0, nor into another device's.
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
    source: str = ""
    stream: str = ""


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


def stream_of(source: str, summaries: Sequence[SiteSummary], stream: str = "") -> str:
    """The stream a window of ``summaries`` from ``source`` belongs to.

    An edge device numbers its windows itself: its stream is its own name (``stream`` ignored; all
    summaries must come from that one device). Other sources name their stream (a monitor run's id);
    without one, the source's windows form one stream.

    Raises
    ------
    DataError
        Edge summaries of more than one device in one window.
    """
    if source == "edge":
        sites = {s.site for s in summaries}
        if len(sites) != 1:
            raise DataError(
                f"an edge window comes from one device; got summaries of {len(sites)} devices: "
                "each device posts its own windows"
            )
        return sites.pop()
    return stream


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _json(**kwargs: Any) -> Any:
    return Field(sa_column=Column(JSON, **kwargs))


def _when() -> Any:
    return Field(sa_column=Column(DateTime(timezone=True), nullable=False))


def _name(length: int) -> Any:
    return Field(default="", sa_column=Column(String(length), nullable=False, server_default=""))


class DriftSummaryRow(CoordinatorRow, table=True):
    """One site's noisy summary of one window (counts as float64 bytes)."""

    __tablename__ = "drift_summaries"
    __table_args__ = (
        UniqueConstraint(
            "model", "version", "source", "stream", "window", "site", name="uq_drift_summary_stream_site"
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    model: str = Field(max_length=128)
    version: int
    window: int
    site: str = Field(max_length=128)
    source: str = Field(max_length=16)
    stream: str = _name(128)
    window_size: int
    epsilon: float
    delta: float
    mechanism: str = Field(max_length=16)
    shape: list[int] = _json(nullable=False)
    counts: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    class_counts: bytes | None = Field(default=None, sa_column=Column(LargeBinary))
    received_from: str = Field(max_length=256)
    received_at: datetime = _when()

    @staticmethod
    def summary_from_columns(columns: Mapping[Any, Any]) -> SiteSummary:
        """The summary as the site sent it, from this table's columns by name.

        A plain row's ``_mapping``: reading a window of 10,000 summaries skips the ORM.
        """
        class_counts = columns["class_counts"]
        return SiteSummary(
            site=columns["site"],
            model=columns["model"],
            version=columns["version"],
            window=columns["window"],
            window_size=columns["window_size"],
            counts=np.frombuffer(columns["counts"], dtype=np.float64).reshape(columns["shape"]),
            class_counts=None if class_counts is None else np.frombuffer(class_counts, dtype=np.float64),
            epsilon=columns["epsilon"],
            delta=columns["delta"],
            mechanism=columns["mechanism"],
        )


class DriftReportRow(CoordinatorRow, table=True):
    """One window's stored report."""

    __tablename__ = "drift_reports"
    __table_args__ = (
        UniqueConstraint("model", "version", "source", "stream", "window", name="uq_drift_report_stream"),
    )

    id: int | None = Field(default=None, primary_key=True)
    model: str = Field(max_length=128, index=True)
    version: int
    window: int
    sites: list[str] = _json(nullable=False)
    window_rows: int
    epsilon: float
    features: list[str] = _json(nullable=False)
    overall: dict[str, list[float]] = _json(nullable=False)
    per_site: dict[str, dict[str, list[float]]] = _json(nullable=False)
    classes: dict[str, float] | None = _json(nullable=True)
    flagged: bool
    created_at: datetime = _when()
    source: str = _name(16)
    stream: str = _name(128)

    def to_entity(self) -> DriftReport:
        """The report as the API returns it."""
        assert self.id is not None, "a report row is converted after it was flushed"
        return DriftReport(
            self.id, self.model, self.version, self.window, self.sites, self.window_rows, self.epsilon,
            self.features, self.overall, self.per_site, self.classes, self.flagged, self.created_at,
            self.source, self.stream,
        )  # fmt: skip


class DriftTriggerRow(CoordinatorRow, table=True):
    """A stored policy decision."""

    __tablename__ = "drift_triggers"

    id: int | None = Field(default=None, primary_key=True)
    model: str = Field(max_length=128, index=True)
    version: int
    run_id: str | None = Field(default=None, max_length=64)
    outcome: str = Field(max_length=32)
    reason: str = Field(max_length=512)
    evidence: dict[str, Any] = _json(nullable=False)
    created_at: datetime = _when()

    def to_entity(self) -> DriftTrigger:
        """The trigger as the API returns it."""
        assert self.id is not None, "a trigger row is converted after it was flushed"
        return DriftTrigger(
            self.id, self.model, self.version, self.run_id, self.outcome, self.reason, self.evidence,
            self.created_at,
        )  # fmt: skip


class DriftReportStore(CoordinatorStore):
    """Summaries, reports and triggers in SQL tables (the coordinator's own).

    Parameters
    ----------
    engine : Engine
        The database's shared engine (``DriftReportStore.from_url(url)`` opens one of its own).
    """

    # --- summaries ------------------------------------------------------------------------------------

    def add_summaries(
        self, summaries: list[SiteSummary], *, source: str, received_from: str, stream: str = ""
    ) -> None:
        """Store a window's summaries of one stream (:func:`stream_of`) in one transaction.

        Raises
        ------
        ConflictError
            If a site already sent a summary for this version, stream and window (nothing is stored).
        """
        now = datetime.now(UTC)
        rows = [
            {
                "model": s.model,
                "version": s.version,
                "window": s.window,
                "site": s.site,
                "source": source,
                "stream": stream,
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
            with self._session() as s:
                # The table, not the ORM entity: one executemany, no per-row bookkeeping.
                s.execute(insert(DriftSummaryRow.__table__), rows)  # type: ignore[attr-defined]
        except ConflictError as exc:
            raise ConflictError(
                "a site already sent a summary for this version and window: each site counts once per "
                "window (send the next window instead)"
            ) from exc

    def summaries(
        self,
        model: str,
        version: int,
        window: int,
        *,
        source: str | None = None,
        stream: str | None = None,
    ) -> list[SiteSummary]:
        """A window's summaries, in arrival order (of one source and stream when named)."""
        table = DriftSummaryRow.__table__  # type: ignore[attr-defined]
        query = table.select().where(
            table.c.model == model, table.c.version == version, table.c.window == window
        )
        if source is not None:
            query = query.where(table.c.source == source)
        if stream is not None:
            query = query.where(table.c.stream == stream)
        query = query.order_by(table.c.id)
        with self._session() as s:
            rows = s.connection().execute(query).all()
        return [DriftSummaryRow.summary_from_columns(r._mapping) for r in rows]

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
        source: str = "",
        stream: str = "",
    ) -> DriftReport:
        """Store (or replace, when more sites reported) the report of one window of one stream."""
        row = DriftReportRow(
            model=model,
            version=version,
            window=window,
            source=source,
            stream=stream,
            sites=list(agg.sites),
            window_rows=agg.window_rows,
            epsilon=agg.epsilon,
            features=list(features),
            overall={k: [float(v) for v in values] for k, values in agg.overall.items()},
            per_site={
                site: {k: [float(v) for v in values[i]] for k, values in agg.per_site.items()}
                for i, site in enumerate(agg.sites)
            },
            classes=agg.classes,
            flagged=flagged,
            created_at=datetime.now(UTC),
        )
        with self._session() as s:
            s.execute(
                delete(DriftReportRow).where(
                    DriftReportRow.model == model,  # type: ignore[arg-type]
                    DriftReportRow.version == version,  # type: ignore[arg-type]
                    DriftReportRow.window == window,  # type: ignore[arg-type]
                    DriftReportRow.source == source,  # type: ignore[arg-type]
                    DriftReportRow.stream == stream,  # type: ignore[arg-type]
                )
            )
            s.add(row)
            s.flush()
        return row.to_entity()

    def reports(
        self,
        model: str | None = None,
        *,
        version: int | None = None,
        limit: int = 100,
        source: str | None = None,
        stream: str | None = None,
    ) -> list[DriftReport]:
        """Reports, newest window last (the last ``limit``), of one source and stream when named."""
        table = DriftReportRow.__table__.c  # type: ignore[attr-defined]
        query = select(DriftReportRow)
        if model is not None:
            query = query.where(DriftReportRow.model == model)
        if version is not None:
            query = query.where(DriftReportRow.version == version)
        if source is not None:
            query = query.where(DriftReportRow.source == source)
        if stream is not None:
            query = query.where(DriftReportRow.stream == stream)
        query = query.order_by(table.version.desc(), table.window.desc(), table.id.desc()).limit(limit)
        with self._session() as s:
            rows = s.exec(query).all()
        return [r.to_entity() for r in reversed(rows)]

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
        row = DriftTriggerRow(
            model=model,
            version=version,
            run_id=run_id,
            outcome=outcome,
            reason=reason[:512],
            evidence=evidence,
            created_at=datetime.now(UTC),
        )
        with self._session() as s:
            s.add(row)
            s.flush()
        return row.to_entity()

    def set_outcome(self, trigger_id: int, outcome: str) -> None:
        """Record what became of a trigger (a requested run that a launcher started)."""
        with self._session() as s:
            s.execute(update(DriftTriggerRow).where(DriftTriggerRow.id == trigger_id).values(outcome=outcome))  # type: ignore[arg-type]

    def triggers(self, model: str | None = None, *, limit: int = 50) -> list[DriftTrigger]:
        """Triggers, newest first."""
        query = select(DriftTriggerRow)
        if model is not None:
            query = query.where(DriftTriggerRow.model == model)
        with self._session() as s:
            rows = s.exec(query.order_by(DriftTriggerRow.id.desc()).limit(limit)).all()  # type: ignore[union-attr]
        return [r.to_entity() for r in rows]

    def last_started(self, model: str) -> DriftTrigger | None:
        """The newest trigger of ``model`` that started or requested a run (for the cooldown)."""
        query = (
            select(DriftTriggerRow)
            .where(
                DriftTriggerRow.model == model,
                DriftTriggerRow.outcome.in_(("started", "requested")),  # type: ignore[attr-defined]
            )
            .order_by(DriftTriggerRow.id.desc())  # type: ignore[union-attr]
            .limit(1)
        )
        with self._session() as s:
            row = s.exec(query).first()
        if row is None:
            return None
        return replace(row.to_entity(), created_at=_aware(row.created_at))
