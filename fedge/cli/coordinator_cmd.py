"""``fedge coordinator serve``: the operator API and, with TLS, the federation's SuperLink."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer

from fedge.cli.errors import reports_errors
from fedge.errors import ConfigError

__all__ = ["coordinator_app"]

coordinator_app = typer.Typer(help="Run the coordinator's operator API.", no_args_is_help=True)


@coordinator_app.command("serve")
@reports_errors
def serve(
    host: Annotated[str, typer.Option(help="Bind address of the operator API")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port of the operator API")] = 8080,
    tls_dir: Annotated[
        Path | None,
        typer.Option(
            "--tls-dir",
            help="Folder from `fedge certs init`: manage a deployment SuperLink (TLS, node auth) and "
            "serve the API over HTTPS. Without it: registry and reports only, plain HTTP on loopback.",
        ),
    ] = None,
    state_dir: Annotated[
        Path, typer.Option("--state-dir", help="The SuperLink's state database, run logs")
    ] = Path(".fedge/coordinator"),
    superlink_port: Annotated[int, typer.Option(help="Port of the SuperLink's Fleet API")] = 9092,
    superlink_state: Annotated[
        str,
        typer.Option(
            help="memory (Flower's default): Flower's run and message state in memory, about 1 s less "
            "per round; fedge's database keeps enrolments, runs and checkpoints, a restart registers "
            "the enrolled keys again and marks unfinished runs interrupted (`fedge runs resume`). "
            "file: in <state-dir>/superlink/superlink-state.db",
        ),
    ] = "memory",
    telemetry_rate: Annotated[
        float,
        typer.Option(help="Telemetry posts (drift summaries and reports) one device may make per minute"),
    ] = 60.0,
    telemetry_burst: Annotated[
        int, typer.Option(min=1, help="Telemetry posts one device may make at once before the rate applies")
    ] = 20,
    max_sites_per_window: Annotated[
        int, typer.Option(min=1, help="Distinct sites one drift window accepts summaries from")
    ] = 1000,
    overrides: Annotated[
        list[str] | None, typer.Argument(help="Hydra overrides, e.g. registry.root=PATH")
    ] = None,
) -> None:
    """Serve the operator API and, with --tls-dir, manage the federation's SuperLink."""
    import uvicorn

    from coordinator.api import CoordinatorSettings, create_app
    from coordinator.deployment.deployment import Deployment, DeploymentSettings
    from coordinator.telemetry_limits import TelemetryLimits
    from fedge.config import FedgeConfig, load_config
    from registry import open_registry

    if not (telemetry_rate > 0 and math.isfinite(telemetry_rate)):
        raise ConfigError(
            f"--telemetry-rate must be a positive number of posts per minute, got {telemetry_rate}"
        )
    telemetry = TelemetryLimits(
        rate_per_minute=telemetry_rate, burst=telemetry_burst, max_sites_per_window=max_sites_per_window
    )
    state_file = _state_file(superlink_state)
    config = load_config(overrides or [])
    if tls_dir is None and host not in ("127.0.0.1", "::1", "localhost"):
        raise ConfigError(f"--host {host} without --tls-dir would serve tokens in clear text: add --tls-dir")

    def load_run_config(name: str, run_overrides: list[str]) -> FedgeConfig:
        return load_config([*(overrides or []), *run_overrides], config_name=name)

    registry = open_registry(config.registry)
    deployment = None
    try:
        if tls_dir is not None:
            deployment = Deployment(
                DeploymentSettings(
                    state_dir=state_dir,
                    tls_dir=tls_dir,
                    superlink_port=superlink_port,
                    superlink_state_file=state_file,
                ),
                registry,
                config.registry,
            ).start()
            typer.echo(f"SuperLink (TLS, node authentication) on {deployment.fleet_address}", err=True)
        app = create_app(
            # the composed drift settings too: windows that devices push obey drift.* overrides
            CoordinatorSettings(registry=config.registry, drift=config.drift, telemetry=telemetry),
            deployment=deployment,
            load_run_config=load_run_config,
        )
        ssl_args: dict[str, str] = {}
        if deployment is not None:
            ssl_args = {
                "ssl_certfile": str(deployment.tls.server_cert),
                "ssl_keyfile": str(deployment.tls.server_key),
            }
        scheme = "https" if ssl_args else "http"
        typer.echo(f"operator API on {scheme}://{host}:{port}/api/v1 (docs at /api/v1/docs)", err=True)
        uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False, **ssl_args)
    finally:
        if deployment is not None:
            deployment.stop()
        registry.close()


def _state_file(superlink_state: str) -> bool:
    if superlink_state not in ("memory", "file"):
        raise ConfigError(f"--superlink-state {superlink_state!r}: choose memory or file")
    return superlink_state == "file"
