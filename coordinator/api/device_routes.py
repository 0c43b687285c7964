"""``/api/v1/edge``: edge devices report what they serve and how it goes; operators list them.

A report is posted with a ``device`` token: it is filed under the device name the token is bound to.
"""

# No `from __future__ import annotations`: FastAPI reads the dependency annotations at runtime.

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from coordinator.api.deps import Device, DeviceReportsDep, RolloutsDep, TelemetryLimiterDep, Viewer
from coordinator.api.drift_routes import telemetry_site
from coordinator.api.schemas import DevicePublic, DeviceReportCreated
from fedge.http_limits import MAX_ID

__all__ = ["DeviceReportIn", "ModelRef", "router"]

router = APIRouter(tags=["edge"])


class ModelRef(BaseModel):
    """The model a device serves."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=128)
    version: str = Field(min_length=1, max_length=64)


class DeviceReportIn(BaseModel):
    """A device's periodic report: aggregates only, never an input row.

    ``device`` may be left out: the device is the one the posting token is bound to, and a body
    that names another is refused.
    """

    model_config = ConfigDict(extra="forbid")
    device: str | None = Field(default=None, min_length=1, max_length=128)
    model: ModelRef
    served: int = Field(ge=0, le=MAX_ID)
    health: dict[str, Any] = Field(default_factory=dict)
    drift: dict[str, Any] = Field(default_factory=dict)


@router.post("/reports", status_code=201, response_model=DeviceReportCreated)
def post_device_report(
    body: DeviceReportIn,
    caller: Device,
    reports: DeviceReportsDep,
    limiter: TelemetryLimiterDep,
    rollouts: RolloutsDep,
) -> DeviceReportCreated:
    """Store a device's report under its token's device; the token's name is recorded beside it.

    403 for any token but a ``device`` one, or a body naming another device; 429 beyond its rate.
    An active rollout of the model is then judged on it (see :mod:`coordinator.rollouts`).
    """
    device = telemetry_site(caller, body.device, field="device")
    limiter.take(device)
    stored = reports.add(
        device=device,
        model_name=body.model.name,
        model_version=body.model.version,
        served=body.served,
        health=body.health,
        drift=body.drift,
        reported_by=caller.name,
    )
    rollouts.on_report(body.model.name)
    return DeviceReportCreated(id=stored.id, received_at=stored.received_at)


@router.get("/devices", response_model=list[DevicePublic])
def list_devices(_actor: Viewer, reports: DeviceReportsDep) -> list[DevicePublic]:
    """Each device's newest report, by device name."""
    return [DevicePublic.model_validate(r) for r in reports.latest_by_device()]
