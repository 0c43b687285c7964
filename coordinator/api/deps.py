"""The API's dependencies: the caller's role (``Viewer`` ... ``Admin``, ``Device``) and what it serves."""

# Each alias is an ``Annotated[..., Depends()]`` reading what ``create_app`` put on
# ``request.app.state``: routers are plain module-level ``APIRouter`` objects and nothing is built at
# import time. The role aliases authenticate from the ``Authorization`` header alone, rank roles
# admin > operator > viewer, and hand the route the principal's name (the audit log's actor).
# ``Device`` (a device token, bound to a device name) stands outside the ladder: it alone posts
# telemetry; ``ReleaseReader`` lets a viewer or a device read what an edge device follows.

# No `from __future__ import annotations`: FastAPI reads the dependency annotations at runtime.

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends, Request

from coordinator.auth import DEVICE_ROLE, Principal, TokenStore, require_device, require_role
from coordinator.deployment.deployment import Deployment
from coordinator.device_reports import DeviceReportStore
from coordinator.drift.service import DriftService
from coordinator.rollouts import RolloutService
from coordinator.telemetry_limits import TelemetryLimiter
from fedge.config import FedgeConfig
from fedge.errors import AuthenticationError, ConfigError, FederationError
from registry import GatesConfig, Registry

__all__ = [
    "Admin",
    "DeploymentDep",
    "Device",
    "DeviceReportsDep",
    "DriftServiceDep",
    "GatesDep",
    "MaybeDeploymentDep",
    "Operator",
    "RegistryDep",
    "ReleaseReader",
    "RolloutsDep",
    "RunConfigLoader",
    "RunConfigLoaderDep",
    "TelemetryLimiterDep",
    "TokensDep",
    "Viewer",
    "started_deployment",
]

# (config name, Hydra overrides) -> the validated run config; raises ConfigError.
RunConfigLoader = Callable[[str, list[str]], FedgeConfig]


def get_registry(request: Request) -> Registry:
    """The registry the app serves."""
    registry: Registry = request.app.state.registry
    return registry


def get_tokens(request: Request) -> TokenStore:
    """The API's token store."""
    tokens: TokenStore = request.app.state.tokens
    return tokens


def get_gates(request: Request) -> GatesConfig:
    """The promotion gates of the registry's config."""
    gates: GatesConfig = request.app.state.gates
    return gates


def get_configured_aliases(request: Request) -> list[str]:
    """The aliases the registry's config declares (``registry.aliases``)."""
    aliases: list[str] = request.app.state.aliases
    return aliases


def get_drift_service(request: Request) -> DriftService:
    """The drift service (report store and retraining policy)."""
    service: DriftService = request.app.state.drift
    return service


def get_device_reports(request: Request) -> DeviceReportStore:
    """The store of edge devices' periodic reports."""
    reports: DeviceReportStore = request.app.state.device_reports
    return reports


def get_rollouts(request: Request) -> RolloutService:
    """The staged rollouts of aliases."""
    rollouts: RolloutService = request.app.state.rollouts
    return rollouts


def get_telemetry_limiter(request: Request) -> TelemetryLimiter:
    """The per-device rate and sites-per-window limits of posted telemetry."""
    limiter: TelemetryLimiter = request.app.state.telemetry
    return limiter


def started_deployment(deployment: Deployment | None) -> Deployment:
    """``deployment`` once started, or a refusal that says how to serve a coordinator with one.

    A coordinator served without ``--tls-dir`` has no deployment: a 409 (the request is valid, this
    coordinator is not set up for it). One whose deployment is not running: a 502 (its SuperLink failed).
    """
    from fedge.errors import ConflictError

    how = "start it with `fedge coordinator serve --tls-dir DIR` to run federations and enrol nodes"
    if deployment is None:
        raise ConflictError(f"this coordinator manages no SuperLink (it was served without --tls-dir): {how}")
    if not deployment.started:
        raise FederationError(f"this coordinator's SuperLink is not running: {how}")
    return deployment


def get_optional_deployment(request: Request) -> Deployment | None:
    """The deployment the app was given, if any (started or not)."""
    deployment: Deployment | None = request.app.state.deployment
    return deployment


def get_deployment(request: Request) -> Deployment:
    """The started deployment (refused with :class:`FederationError` when there is none)."""
    return started_deployment(get_optional_deployment(request))


def no_run_configs(name: str, overrides: list[str]) -> dict[str, Any]:
    """The loader of a coordinator started without a config directory: it refuses every run."""
    raise ConfigError("this coordinator was started without a config directory")


def get_run_config_loader(request: Request) -> RunConfigLoader:
    """How a run's config is composed from a config name and overrides."""
    loader: RunConfigLoader | None = request.app.state.load_run_config
    return no_run_configs if loader is None else loader


def principal(request: Request) -> Principal:
    """Authenticate the bearer token of the request (its headers only, never its body)."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer":
        raise AuthenticationError("missing bearer token: send 'Authorization: Bearer fedge_...'")
    return get_tokens(request).authenticate(token.strip())


def viewer(p: Annotated[Principal, Depends(principal)]) -> str:
    """The caller's name if its role is at least ``viewer``."""
    return require_role(p, "viewer").name


def operator(p: Annotated[Principal, Depends(principal)]) -> str:
    """The caller's name if its role is at least ``operator``."""
    return require_role(p, "operator").name


def admin(p: Annotated[Principal, Depends(principal)]) -> str:
    """The caller's name if its role is ``admin``."""
    return require_role(p, "admin").name


def device(p: Annotated[Principal, Depends(principal)]) -> Principal:
    """The caller if it holds a ``device`` token (its ``device`` is the name it posts as)."""
    require_device(p)
    return p


def release_reader(p: Annotated[Principal, Depends(principal)]) -> str:
    """The caller's name if it is a viewer (or higher) or a device: what an edge device reads."""
    return p.name if p.role == DEVICE_ROLE and p.device else require_role(p, "viewer").name


Viewer = Annotated[str, Depends(viewer)]
Operator = Annotated[str, Depends(operator)]
Admin = Annotated[str, Depends(admin)]
Device = Annotated[Principal, Depends(device)]
ReleaseReader = Annotated[str, Depends(release_reader)]

RegistryDep = Annotated[Registry, Depends(get_registry)]
TokensDep = Annotated[TokenStore, Depends(get_tokens)]
GatesDep = Annotated[GatesConfig, Depends(get_gates)]
ConfiguredAliasesDep = Annotated[list[str], Depends(get_configured_aliases)]
DriftServiceDep = Annotated[DriftService, Depends(get_drift_service)]
DeviceReportsDep = Annotated[DeviceReportStore, Depends(get_device_reports)]
RolloutsDep = Annotated[RolloutService, Depends(get_rollouts)]
TelemetryLimiterDep = Annotated[TelemetryLimiter, Depends(get_telemetry_limiter)]
DeploymentDep = Annotated[Deployment, Depends(get_deployment)]
# For a route that must refuse a bad request before it says no deployment is running.
MaybeDeploymentDep = Annotated[Deployment | None, Depends(get_optional_deployment)]
RunConfigLoaderDep = Annotated[RunConfigLoader, Depends(get_run_config_loader)]
