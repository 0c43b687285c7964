"""``GET /api/v1/runs/{run_id}/report``: the run's self-contained HTML report (viewer and up)."""

# No `from __future__ import annotations`: FastAPI reads the dependency annotations at runtime.

from typing import Annotated

from fastapi import APIRouter, Path
from fastapi.responses import HTMLResponse

from coordinator.api.deps import DriftServiceDep, GatesDep, RegistryDep, Viewer
from coordinator.report import collect_run_report, render_run_report

__all__ = ["router"]

router = APIRouter(tags=["runs"])

RunId = Annotated[str, Path(min_length=1, max_length=128)]


@router.get(
    "/runs/{run_id}/report",
    response_class=HTMLResponse,
    responses={200: {"content": {"text/html": {}}, "description": "One HTML page, no external resources."}},
)
def run_report(
    run_id: RunId, registry: RegistryDep, gates: GatesDep, drift: DriftServiceDep, _actor: Viewer
) -> HTMLResponse:
    """The run's report: config, per-round charts, clients, the version's gates, bundle and drift."""
    report = collect_run_report(registry, run_id, gates, drift=drift.store)
    return HTMLResponse(
        render_run_report(report),
        headers={
            # The page needs nothing but its own inline style: forbid everything else.
            "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src data:",
            "X-Content-Type-Options": "nosniff",
        },
    )
