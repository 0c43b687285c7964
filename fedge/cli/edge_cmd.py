"""``fedge edge run|rollback|status|devices``: follow a registry alias on a device and serve it; list the
fleet's devices as the coordinator last heard from them.

Imports of ``edge`` happen inside each command, so ``fedge edge ...`` loads neither torch nor flwr.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
from typing import Annotated

import typer

from fedge.cli.errors import reports_errors
from fedge.cli.options import (
    ApiUrlOpt,
    CaOpt,
    JsonOpt,
    ShowJsonOpt,
    TokenOpt,
    checked_ca,
    listed,
    read_token_file,
)
from fedge.cli.tables import Column, print_table

__all__ = ["edge_app"]

edge_app = typer.Typer(help="Run the edge agent and its serving endpoint.", no_args_is_help=True)

DirOpt = Annotated[str, typer.Option("--dir", help="The agent's state folder")]
log = logging.getLogger("fedge.cli.edge")
SHUTDOWN_WAIT_S = 0.5  # how long a stopping `fedge edge run` waits for the agent's current poll
QUIET_START_S = 0.5  # the first poll and the FastAPI build wait this long after start (first answers first)


@edge_app.command("run")
@reports_errors
def run(
    registry: Annotated[str, typer.Option("--registry", help="Coordinator URL, e.g. http://host:8080")],
    public_key: Annotated[str, typer.Option("--public-key", help="The pinned release public key (PEM)")],
    state_dir: DirOpt = ".fedge-edge",
    name: Annotated[str, typer.Option("--name", help="Model name to follow")] = "digits",
    alias: Annotated[str, typer.Option("--alias", help="Alias to follow")] = "production",
    token: Annotated[
        str,
        typer.Option(
            "--token",
            envvar="FEDGE_TOKEN",
            help="Bearer token: a device token (fedge tokens create --role device --device NAME); "
            "reports are filed under NAME",
        ),
    ] = "",
    ca: CaOpt = None,
    host: Annotated[str, typer.Option(help="Serving bind address")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Serving port")] = 8090,
    poll_interval: Annotated[float, typer.Option("--poll-interval", help="Seconds between polls")] = 30.0,
    report_interval: Annotated[
        float, typer.Option("--report-interval", help="Seconds between device reports")
    ] = 60.0,
    cloud: Annotated[
        bool, typer.Option("--cloud/--device", help="Cloud: micro-batch concurrent requests")
    ] = False,
    precision: Annotated[str, typer.Option("--precision", help="fp32 or int8")] = "fp32",
    device_name: Annotated[
        str,
        typer.Option(
            "--device-name",
            help="Name in local report bodies (the coordinator files them under the token's device)",
        ),
    ] = "",
    drift_epsilon: Annotated[
        float,
        typer.Option("--drift-epsilon", help="Push noisy drift windows at this epsilon each (0: off)"),
    ] = 1.0,
    drift_budget: Annotated[
        float, typer.Option("--drift-budget", help="This device's total telemetry epsilon")
    ] = 100.0,
    drift_min_window: Annotated[
        int, typer.Option("--drift-min-window", help="Rows a window needs before anything is sent")
    ] = 200,
    canary: Annotated[
        int | None,
        typer.Option("--canary", help="Also serve this version NUMBER to --canary-weight of requests (A/B)"),
    ] = None,
    canary_weight: Annotated[
        float, typer.Option("--canary-weight", help="Share of requests the --canary version answers")
    ] = 0.1,
    shadow: Annotated[
        int | None,
        typer.Option("--shadow", help="Also run this version NUMBER on every request, answering nothing"),
    ] = None,
    metrics_token_file: Annotated[
        str | None,
        typer.Option(
            "--metrics-token-file",
            help="A file holding the bearer token /metrics then requires (default: /metrics is open)",
        ),
    ] = None,
) -> None:
    """Serve the verified model NAME@ALIAS and keep following the alias."""
    import uvicorn

    from edge import ModelSlot, ServingMetrics
    from edge.agent import EdgeAgent, EdgeSettings
    from edge.startup import fast_start_app
    from fedge.config import DriftSettings, validate_drift_settings
    from fedge.crypto import load_public_key
    from fedge.errors import ConfigError

    if precision not in ("fp32", "int8"):
        raise ConfigError(f"--precision {precision!r} is not fp32 or int8")
    if canary is not None and shadow is not None:
        raise ConfigError("--canary and --shadow exclude each other: the slot holds one secondary version")
    if not 0.0 <= canary_weight <= 1.0:
        raise ConfigError(f"--canary-weight {canary_weight} is outside [0, 1]")
    metrics_token = read_token_file(metrics_token_file, "--metrics-token-file")
    logging.getLogger("edge").setLevel(logging.INFO)
    drift = None
    if drift_epsilon > 0:
        drift = DriftSettings(epsilon=drift_epsilon, budget_epsilon=drift_budget, min_window=drift_min_window)
        validate_drift_settings(drift)
    metrics = ServingMetrics()
    slot = ModelSlot(metrics=metrics)
    settings = EdgeSettings(
        registry_url=registry,
        name=name,
        alias=alias,
        public_key=load_public_key(public_key),
        state_dir=state_dir,
        token=token or None,
        ca=checked_ca(ca),
        precision=precision,  # type: ignore[arg-type]
        poll_interval_s=poll_interval,
        report_interval_s=report_interval,
        device_name=device_name or socket.gethostname(),
        drift=drift,
    )
    agent = EdgeAgent(settings, slot=slot, metrics=metrics)
    agent.start_offline()
    if canary is not None:
        agent.attach_secondary(canary, mode="split", weight=canary_weight)
    elif shadow is not None:
        agent.attach_secondary(shadow, mode="shadow")
    stop = threading.Event()
    # Predictions are answered at once; the first registry poll and the rest of the app (FastAPI,
    # built in a thread unless a request needs it sooner) wait a moment, so their imports do not
    # compete with the first answers for the interpreter.
    poller = threading.Thread(
        target=agent.run_forever, args=(stop,), kwargs={"first_poll_after_s": QUIET_START_S},
        name="edge-agent", daemon=True,
    )  # fmt: skip
    app = fast_start_app(
        slot, batching=cloud, status_provider=agent.status, metrics=metrics, quiet_s=QUIET_START_S,
        metrics_token=metrics_token,
    )  # fmt: skip
    poller.start()
    try:
        # No proxy-header rewriting: the serving app never reads client addresses, and uvicorn's
        # check of the trusted proxies costs a few percent per request.
        uvicorn.run(
            app, host=host, port=port, log_level="warning", access_log=False, proxy_headers=False,
            ws="none",  # no websocket route: skip loading a websocket protocol (~30 ms of start)
        )  # fmt: skip
    finally:
        stop.set()  # the poller's waits end at once
        # A poll in flight to a registry that does not answer would hold the exit for its timeout:
        # the poller is a daemon and every state write is atomic, so stop without it.
        poller.join(timeout=SHUTDOWN_WAIT_S)
        if poller.is_alive():
            log.info("stopping while the agent's registry call is in flight")
        else:
            agent.close()


@edge_app.command("rollback")
@reports_errors
def rollback(state_dir: DirOpt = ".fedge-edge") -> None:
    """Return to the previous good version (a running agent follows within one poll)."""
    from edge.state import EdgeState

    state = EdgeState(state_dir)
    restored, abandoned = state.rollback("operator")
    state.record(
        version=restored.label,
        result="rolled_back",
        reason="operator",
        message=f"from {abandoned.label if abandoned else 'nothing'} (fedge edge rollback)",
    )
    typer.echo(f"rolled back from {abandoned.label if abandoned else 'nothing'} to {restored.label}")


@edge_app.command("status")
@reports_errors
def status(
    state_dir: DirOpt = ".fedge-edge",
    history: Annotated[int, typer.Option(help="How many history entries to show")] = 10,
    as_json: ShowJsonOpt = False,
) -> None:
    """Show the active and previous versions, versions refused, and recent outcomes (JSON)."""
    del as_json  # JSON either way
    from edge.state import EdgeState

    state = EdgeState(state_dir)
    active, previous = state.active(), state.previous()
    body = {
        "dir": str(state.root),
        "active": active.label if active else None,
        "previous": previous.label if previous else None,
        "bad": state.bad_versions(),
        "history": state.history(history),
    }
    typer.echo(json.dumps(body, indent=2))


@edge_app.command("devices")
@reports_errors
def devices(
    url: ApiUrlOpt = "https://127.0.0.1:8080",
    token: TokenOpt = "",
    ca: CaOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The fleet's devices: each one's newest report to the coordinator (version served, health, counts)."""
    reports = listed(url, token, ca, "/edge/devices", as_json=as_json)
    if reports is None:
        return
    rows = [
        (r["device"], f"{r['model_name']}:{r['model_version']}", _health(r["health"]), r["served"],
         str(r["received_at"])[:19].replace("T", " "), r["reported_by"])
        for r in reports
    ]  # fmt: skip
    print_table(DEVICE_COLUMNS, rows)


DEVICE_COLUMNS = (
    Column("device", min_width=10),
    Column("version", min_width=10),
    Column("health", priority=2, min_width=10),
    Column("served", priority=3),
    Column("last seen", priority=2, min_width=10),
    Column("reported by", priority=4, min_width=10),
)


def _health(health: dict[str, object]) -> str:
    """A device's health in one cell: its status when it reports one, else its fields."""
    if "status" in health:
        return str(health["status"])
    return ", ".join(f"{k}={v}" for k, v in sorted(health.items())) or "-"
