"""``/api/v1/webhooks``: the registry's webhook delivery log (admin only: it names receivers)."""

# No `from __future__ import annotations`: FastAPI reads the dependency annotations at runtime.

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel

from coordinator.api.deps import Admin
from registry import WebhookDeliveryStore

__all__ = ["router"]

router = APIRouter(tags=["webhooks"])


def get_delivery_log(request: Request) -> WebhookDeliveryStore:
    """The delivery log on the registry's database (``app.state.webhook_deliveries``)."""
    store: WebhookDeliveryStore = request.app.state.webhook_deliveries
    return store


class DeliveryPublic(BaseModel):
    """One event's delivery to one receiver (its URL without query or credentials)."""

    id: str
    event: str
    url: str
    status: str
    attempts: int
    status_code: int | None
    last_error: str
    created_at: str
    updated_at: str


class DeliveryPage(BaseModel):
    """A page of deliveries, newest first, and how many there are in all."""

    items: list[DeliveryPublic]
    total: int
    limit: int
    offset: int


@router.get("/deliveries", response_model=DeliveryPage)
def list_deliveries(
    _actor: Admin,
    log: Annotated[WebhookDeliveryStore, Depends(get_delivery_log)],
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=2**31)] = 0,
    event: Annotated[str | None, Query(pattern=r"^[a-z_]{1,64}$")] = None,
) -> Any:
    """Deliveries newest first: event, receiver, attempts, last status code and error."""
    items, total = log.list(limit=limit, offset=offset, event=event)
    return DeliveryPage(
        items=[DeliveryPublic(**d.to_dict()) for d in items], total=total, limit=limit, offset=offset
    )
