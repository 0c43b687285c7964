"""Reports that edge devices send: the version they serve, their health, and a drift summary.

Only aggregates arrive (histogram counts of served inputs, a served count); never an input row.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Column, DateTime, Integer, String, Table, insert, select
from sqlalchemy.engine import Engine

from coordinator.tables import coordinator_metadata, open_coordinator_engine

__all__ = ["DeviceReport", "DeviceReportStore"]

_reports = Table(
    "device_reports",
    coordinator_metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("device", String(128), nullable=False, index=True),
    Column("model_name", String(128), nullable=False),
    Column("model_version", String(64), nullable=False),
    Column("served", Integer, nullable=False),
    Column("health", JSON, nullable=False),
    Column("drift", JSON, nullable=False),
    Column("reported_by", String(256), nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=False),
)


@dataclass(frozen=True)
class DeviceReport:
    """One report as stored."""

    id: int
    device: str
    model_name: str
    model_version: str
    served: int
    health: dict[str, Any]
    drift: dict[str, Any]
    reported_by: str
    received_at: datetime


class DeviceReportStore:
    """Device reports in a SQL table (the coordinator's own, beside the registry's)."""

    def __init__(self, url: str) -> None:
        self._engine: Engine = open_coordinator_engine(url)

    def add(
        self,
        *,
        device: str,
        model_name: str,
        model_version: str,
        served: int,
        health: dict[str, Any],
        drift: dict[str, Any],
        reported_by: str,
    ) -> DeviceReport:
        """Store a report."""
        now = datetime.now(UTC)
        values = {
            "device": device,
            "model_name": model_name,
            "model_version": model_version,
            "served": served,
            "health": health,
            "drift": drift,
            "reported_by": reported_by,
            "received_at": now,
        }
        with self._engine.begin() as conn:
            result = conn.execute(insert(_reports).values(**values))
            report_id = int(result.inserted_primary_key[0])  # type: ignore[index]
        return DeviceReport(id=report_id, **values)  # type: ignore[arg-type]

    def latest_by_device(self) -> list[DeviceReport]:
        """Each device's newest report."""
        with self._engine.connect() as conn:
            rows = conn.execute(select(_reports).order_by(_reports.c.id.desc())).all()
        seen: dict[str, DeviceReport] = {}
        for r in rows:
            if r.device not in seen:
                seen[r.device] = DeviceReport(
                    r.id,
                    r.device,
                    r.model_name,
                    r.model_version,
                    r.served,
                    r.health,
                    r.drift,
                    r.reported_by,
                    r.received_at,
                )
        return sorted(seen.values(), key=lambda d: d.device)

    def close(self) -> None:
        """Release connections."""
        self._engine.dispose()
