"""``create_app(settings)``: the operator API (FastAPI), with the registry mounted under /api/v1."""

import asyncio
import logging
import math
from collections.abc import Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from coordinator.api import (
    audit_routes,
    device_routes,
    drift_routes,
    operations,
    registry_routes,
    report_routes,
    rollout_routes,
    webhook_routes,
)
from coordinator.api.deps import RunConfigLoader, Viewer
from coordinator.auth import TokenStore
from coordinator.deployment.deployment import Deployment
from coordinator.device_reports import DeviceReportStore
from coordinator.drift.launch import open_drift_service
from coordinator.drift.metrics import DriftMetrics
from coordinator.metrics import metrics_registry, render_metrics
from coordinator.rollouts import RolloutService, RolloutStore
from coordinator.telemetry_limits import TelemetryLimiter, TelemetryLimits
from coordinator.ui.routes import CONSOLE_MARKER, mount_console
from fedge.config import DriftSettings
from fedge.errors import AuthenticationError, FedgeError, RateLimitedError
from fedge.http_limits import RequestGuard, RequestLimits
from registry import RegistryConfig, WebhookDeliveryStore, open_engine, open_registry

__all__ = ["CoordinatorSettings", "create_app"]

log = logging.getLogger(__name__)

API_PREFIX = "/api/v1"


@dataclass
class CoordinatorSettings:
    """What the API serves: the registry (and its gates) and where tokens live.

    ``tokens_url`` empty means the registry's own database. ``telemetry``: per-device rate and
    sites-per-window limits on the telemetry devices post. ``limits``: request body sizes (1 MiB
    by default), enforced while reading, after the bearer token is checked.
    """

    registry: RegistryConfig = field(default_factory=RegistryConfig)
    tokens_url: str = ""
    drift: DriftSettings = field(default_factory=DriftSettings)
    telemetry: TelemetryLimits = field(default_factory=TelemetryLimits)
    limits: RequestLimits = field(default_factory=RequestLimits)


def create_app(
    settings: CoordinatorSettings,
    *,
    deployment: Deployment | None = None,
    load_run_config: RunConfigLoader | None = None,
) -> FastAPI:
    """Build the app; nothing is opened at import time, everything here is per app.

    ``deployment`` (the SuperLink the coordinator manages, its nodes and runs) enables the run
    and node routes; ``load_run_config`` composes a run's config from a name and overrides.
    """
    # One engine per database URL, shared by every store on it (the coordinator's tables live in
    # the registry's database unless tokens_url names another).
    registry_url = settings.registry.resolved_database_url()
    engines = {url: open_engine(url) for url in {registry_url, settings.tokens_url or registry_url}}
    registry = open_registry(settings.registry, engine=engines[registry_url])
    coordinator_engine = engines[settings.tokens_url or registry_url]
    tokens = TokenStore(coordinator_engine)
    reports = DeviceReportStore(coordinator_engine)
    drift = open_drift_service(settings.drift, registry, coordinator_engine)
    rollouts = RolloutService(
        RolloutStore(coordinator_engine), registry, reports,
        gates=settings.registry.gates, aliases=settings.registry.aliases,
    )  # fmt: skip

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> Any:
        yield
        if registry.webhooks is not None:  # queued deliveries get a few seconds, then the worker stops
            registry.webhooks.close()
        for engine in engines.values():
            engine.dispose()

    app = FastAPI(
        title="fedge coordinator",
        version="1",
        lifespan=lifespan,
        docs_url=f"{API_PREFIX}/docs",
        openapi_url=f"{API_PREFIX}/openapi.json",
    )
    app.state.registry = registry
    app.state.tokens = tokens
    app.state.gates = settings.registry.gates
    app.state.aliases = list(settings.registry.aliases)
    app.state.device_reports = reports
    app.state.drift = drift
    app.state.rollouts = rollouts
    app.state.webhook_deliveries = WebhookDeliveryStore(engines[registry_url])
    app.state.telemetry = TelemetryLimiter(settings.telemetry)
    app.state.deployment = deployment
    app.state.load_run_config = load_run_config

    async def authenticate_headers(headers: Mapping[str, str]) -> str | None:
        """The 401 message for a request's bearer token, before its body is read (None: let it in)."""
        if headers.get(CONSOLE_MARKER) == "1":
            return None  # a /ui request: the console authenticates its session cookie itself
        scheme, _, token = headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            return "missing bearer token: send 'Authorization: Bearer fedge_...'"
        try:
            await asyncio.to_thread(tokens.authenticate, token.strip())
        except AuthenticationError as exc:
            return str(exc)
        return None

    # Outermost of the app's own layers: a refused request never reaches a route or its body parser.
    app.add_middleware(RequestGuard, limits=settings.limits, authenticate=authenticate_headers)

    app.include_router(registry_routes.router, prefix=f"{API_PREFIX}/registry")
    app.include_router(audit_routes.router, prefix=f"{API_PREFIX}/audit")
    app.include_router(operations.router, prefix=API_PREFIX)
    app.include_router(drift_routes.router, prefix=f"{API_PREFIX}/drift")
    app.include_router(device_routes.router, prefix=f"{API_PREFIX}/edge")
    app.include_router(rollout_routes.router, prefix=f"{API_PREFIX}/rollouts")
    app.include_router(webhook_routes.router, prefix=f"{API_PREFIX}/webhooks")
    app.include_router(report_routes.router, prefix=API_PREFIX)
    mount_console(app)  # the operator web console at /ui (coordinator/ui, docs/console.md)

    def node_states() -> dict[str, str]:
        if deployment is None:
            raise RuntimeError("no deployment")
        # one SuperLink query per scrape gives both fedge_nodes_online and fedge_node_online;
        # a stopped deployment raises: both are left out
        return {n.name: n.state for n in deployment.nodes.list() if n.state != "revoked"}

    scrape_registry = metrics_registry(registry, node_states=node_states if deployment else None)
    scrape_registry.register(
        DriftMetrics(drift.store, settings.drift.policy)
    )  # fedge_drift_* from the reports

    @app.get(
        "/metrics",
        tags=["metrics"],
        response_class=Response,
        responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format."}},
    )
    def metrics(_actor: Viewer) -> Response:
        """Prometheus metrics (viewer token: Prometheus sends it with ``authorization``)."""
        body, content_type = render_metrics(scrape_registry)
        return Response(content=body, media_type=content_type)

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.exception_handler(FedgeError)
    async def fedge_error(_request: Request, exc: FedgeError) -> JSONResponse:
        status = exc.http_status
        if status >= 500:
            log.error("request failed: %s", exc)
        else:
            log.info("request refused (%s): %s", exc.code, exc)
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        if isinstance(exc, RateLimitedError):
            headers = {"Retry-After": str(max(1, math.ceil(exc.retry_after)))}
        return JSONResponse(
            status_code=status, content={"error": {"code": exc.code, "message": str(exc)}}, headers=headers
        )

    @app.exception_handler(Exception)
    async def unexpected_error(_request: Request, exc: Exception) -> JSONResponse:
        # The last resort (every refusal a client can cause is a FedgeError or a validation
        # error): the details go to the log, never into the answer.
        log.error("request failed unexpectedly", exc_info=exc)
        return JSONResponse(
            status_code=500, content={"error": {"code": "internal", "message": "internal server error"}}
        )

    return app
