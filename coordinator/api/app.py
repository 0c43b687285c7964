"""``create_app(settings)``: the operator API (FastAPI), with the registry mounted under /api/v1."""

# No `from __future__ import annotations` here: FastAPI resolves the dependency aliases built
# inside the factory from the annotations at runtime.

import logging
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from coordinator.api.drift_routes import create_drift_router
from coordinator.api.operations import RunConfigLoader, create_operations_router
from coordinator.auth import Principal, TokenStore, require_role
from coordinator.deployment.deployment import Deployment
from coordinator.device_reports import DeviceReportStore
from coordinator.drift.launch import open_drift_service
from coordinator.drift.metrics import DriftMetrics
from coordinator.metrics import metrics_registry, render_metrics
from fedge.drift_summary import DriftSettings
from fedge.errors import AuthenticationError, FedgeError, http_status_for
from registry import Registry, RegistryConfig, create_registry_router, open_engine, open_registry

__all__ = ["CoordinatorSettings", "create_app"]

log = logging.getLogger(__name__)

API_PREFIX = "/api/v1"


@dataclass
class CoordinatorSettings:
    """What the API serves: the registry (and its gates) and where tokens live.

    ``tokens_url`` empty means the registry's own database.
    """

    registry: RegistryConfig = field(default_factory=RegistryConfig)
    tokens_url: str = ""
    drift: DriftSettings = field(default_factory=DriftSettings)


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

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> Any:
        yield
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

    def principal(request: Request) -> Principal:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer":
            raise AuthenticationError("missing bearer token: send 'Authorization: Bearer fedge_...'")
        return tokens.authenticate(token.strip())

    def reader(p: Annotated[Principal, Depends(principal)]) -> str:
        return require_role(p, "viewer").name

    def operator(p: Annotated[Principal, Depends(principal)]) -> str:
        return require_role(p, "operator").name

    def admin(p: Annotated[Principal, Depends(principal)]) -> str:
        return require_role(p, "admin").name

    def get_registry() -> Registry:
        return registry

    app.include_router(
        create_registry_router(
            get_registry=get_registry, gates=settings.registry.gates, reader=reader, operator=operator
        ),
        prefix=f"{API_PREFIX}/registry",
    )

    app.include_router(
        create_operations_router(
            get_registry=get_registry,
            get_deployment=lambda: deployment,
            tokens=tokens,
            load_run_config=load_run_config,
            reader=reader,
            operator=operator,
            admin=admin,
        ),
        prefix=API_PREFIX,
    )
    app.include_router(
        create_drift_router(get_service=lambda: drift, reader=reader, operator=operator),
        prefix=f"{API_PREFIX}/drift",
    )

    @app.post(f"{API_PREFIX}/edge/reports", status_code=201, tags=["edge"])
    def post_device_report(body: DeviceReportIn, actor: Annotated[str, Depends(reader)]) -> dict[str, Any]:
        stored = reports.add(
            device=body.device,
            model_name=body.model.name,
            model_version=body.model.version,
            served=body.served,
            health=body.health,
            drift=body.drift,
            reported_by=actor,
        )
        return {"id": stored.id, "received_at": stored.received_at.isoformat()}

    @app.get(f"{API_PREFIX}/edge/devices", tags=["edge"])
    def list_devices(_actor: Annotated[str, Depends(reader)]) -> list[dict[str, Any]]:
        return [asdict(r) for r in reports.latest_by_device()]

    def nodes_online() -> int:
        if deployment is None or deployment.nodes is None:
            raise RuntimeError("no deployment")
        return deployment.nodes.online_count()

    scrape_registry = metrics_registry(registry, nodes_online=nodes_online if deployment else None)
    scrape_registry.register(
        DriftMetrics(drift.store, settings.drift.policy)
    )  # fedge_drift_* from the reports

    @app.get("/metrics", tags=["metrics"])
    def metrics(_actor: Annotated[str, Depends(reader)]) -> Response:
        """Prometheus metrics (viewer token: Prometheus sends it with ``authorization``)."""
        body, content_type = render_metrics(scrape_registry)
        return Response(content=body, media_type=content_type)

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.exception_handler(FedgeError)
    async def fedge_error(_request: Request, exc: FedgeError) -> JSONResponse:
        status = http_status_for(exc)
        if status >= 500:
            log.error("request failed: %s", exc)
        else:
            log.info("request refused (%s): %s", exc.code, exc)
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        return JSONResponse(
            status_code=status, content={"error": {"code": exc.code, "message": str(exc)}}, headers=headers
        )

    return app
