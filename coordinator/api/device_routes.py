"""``/api/v1/edge``: edge devices report what they serve and how it goes; operators list them."""

# No `from __future__ import annotations`: FastAPI reads the dependency annotations at runtime.

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from coordinator.api.deps import DeviceReportsDep, Viewer
from coordinator.api.schemas import DevicePublic, DeviceReportCreated

__all__ = ["DeviceReportIn", "ModelRef", "router"]

router = APIRouter(tags=["edge"])


class ModelRef(BaseModel):
    """The model a device serves."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=128)
    version: str = Field(min_length=1, max_length=64)


class DeviceReportIn(BaseModel):
    """A device's periodic report: aggregates only, never an input row."""

    model_config = ConfigDict(extra="forbid")
    device: str = Field(min_length=1, max_length=128)
    model: ModelRef
    served: int = Field(ge=0)
    health: dict[str, Any] = Field(default_factory=dict)
    drift: dict[str, Any] = Field(default_factory=dict)


@router.post("/reports", status_code=201, response_model=DeviceReportCreated)
def post_device_report(body: DeviceReportIn, actor: Viewer, reports: DeviceReportsDep) -> DeviceReportCreated:
    """Store a device's report; the reporting token's name is recorded beside it."""
    stored = reports.add(
        device=body.device,
        model_name=body.model.name,
        model_version=body.model.version,
        served=body.served,
        health=body.health,
        drift=body.drift,
        reported_by=actor,
    )
    return DeviceReportCreated(id=stored.id, received_at=stored.received_at)


@router.get("/devices", response_model=list[DevicePublic])
def list_devices(_actor: Viewer, reports: DeviceReportsDep) -> list[DevicePublic]:
    """Each device's newest report, by device name."""
    return [DevicePublic.model_validate(r) for r in reports.latest_by_device()]
