"""Reports that edge devices send: the version they serve, their health, and a drift summary.

Only aggregates arrive (histogram counts of served inputs, a served count); never an input row.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Column, DateTime
from sqlmodel import Field, select

from coordinator.tables import CoordinatorRow, CoordinatorStore

__all__ = ["DeviceReport", "DeviceReportRow", "DeviceReportStore"]


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


class DeviceReportRow(CoordinatorRow, table=True):
    """A stored device report."""

    __tablename__ = "device_reports"

    id: int | None = Field(default=None, primary_key=True)
    device: str = Field(max_length=128, index=True)
    model_name: str = Field(max_length=128)
    model_version: str = Field(max_length=64)
    served: int
    health: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    drift: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    reported_by: str = Field(max_length=256)
    received_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))

    def to_entity(self) -> DeviceReport:
        """The report as the API lists it."""
        assert self.id is not None, "a report row is converted after it was flushed"
        return DeviceReport(
            id=self.id,
            device=self.device,
            model_name=self.model_name,
            model_version=self.model_version,
            served=self.served,
            health=self.health,
            drift=self.drift,
            reported_by=self.reported_by,
            received_at=self.received_at,
        )


class DeviceReportStore(CoordinatorStore):
    """Device reports in a SQL table (the coordinator's own, beside the registry's).

    Parameters
    ----------
    engine : Engine
        The database's shared engine (``DeviceReportStore.from_url(url)`` opens one of its own).
    """

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
        row = DeviceReportRow(
            device=device,
            model_name=model_name,
            model_version=model_version,
            served=served,
            health=health,
            drift=drift,
            reported_by=reported_by,
            received_at=datetime.now(UTC),
        )
        with self._session() as s:
            s.add(row)
            s.flush()
        return row.to_entity()

    def latest_by_device(self) -> list[DeviceReport]:
        """Each device's newest report."""
        seen: dict[str, DeviceReport] = {}
        with self._session() as s:
            for r in s.exec(select(DeviceReportRow).order_by(DeviceReportRow.id.desc())):  # type: ignore[union-attr]
                if r.device not in seen:
                    seen[r.device] = r.to_entity()
        return sorted(seen.values(), key=lambda d: d.device)

    def since(self, model_name: str, after: datetime) -> list[DeviceReport]:
        """Reports on ``model_name`` received at or after ``after``, oldest first."""
        with self._session() as s:
            rows = s.exec(
                select(DeviceReportRow)
                .where(DeviceReportRow.model_name == model_name, DeviceReportRow.received_at >= after)
                .order_by(DeviceReportRow.id)  # type: ignore[arg-type]
            )
            return [r.to_entity() for r in rows]
