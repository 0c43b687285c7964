"""``fedge drift``: drift status of the monitored versions, and the ``scenario=drift`` simulation's output."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from fedge.cli.errors import reports_errors
from fedge.cli.options import DatabaseUrlOpt, RootOpt, opened_registry

__all__ = ["drift_app", "print_scenario_report"]

drift_app = typer.Typer(help="Privacy-preserving drift monitoring.", no_args_is_help=True)


@drift_app.command("status")
@reports_errors
def drift_status(
    root: RootOpt = ".fedge",
    database_url: DatabaseUrlOpt = "",
    model: Annotated[str | None, typer.Option(help="Only this model")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
    overrides: Annotated[
        list[str] | None,
        typer.Argument(help="Hydra overrides of the drift settings, e.g. drift.policy.threshold=0.3"),
    ] = None,
) -> None:
    """The latest window of every monitored version: top features, flagged sites, the policy's triggers."""
    from coordinator.drift.launch import open_drift_service
    from fedge.config import RegistryConfig, load_config

    # The policy is read from the composed config, as `fedge coordinator serve` reads it.
    settings = load_config(overrides or []).drift
    with opened_registry(root, database_url) as registry:
        url = RegistryConfig(root=root, database_url=database_url).resolved_database_url()
        service = open_drift_service(settings, registry, url)
        try:
            status = service.status(model)
        finally:
            service.store.close()
    if as_json:
        typer.echo(json.dumps(status, indent=2, default=str))
        return
    console = Console()
    table = Table(title=f"drift ({status['policy']['statistic']} > {status['policy']['threshold']})")
    columns = (
        "version",
        "stream",
        "window",
        "sites",
        "rows",
        "epsilon",
        "flagged",
        "top features",
        "decision",
    )
    for col in columns:
        table.add_column(col)
    for v in status["versions"]:
        stat = v["statistic"]
        top = ", ".join(f"{t['feature']} {t[stat]:.3f}" for t in v["top_features"][:3])
        table.add_row(
            f"{v['model']}:{v['version']}",
            f"{v['source']} {v['stream']}".strip() or "-",  # a monitor run's id or one edge device
            str(v["window"]),
            f"{len(v['flagged_sites'])}/{v['sites']} flagged",
            str(v["window_rows"]),
            f"{v['epsilon']:g}",
            "yes" if v["flagged"] else "no",
            top,
            v["decision"],
        )
    console.print(table)
    if not status["versions"]:
        console.print("no drift reports yet")
    for t in status["triggers"]:
        console.print(f"trigger {t['id']} [{t['outcome']}] run {t['run_id'] or '-'}: {t['reason']}")


def print_scenario_report(console: Console, report: Any, policy: Any) -> None:
    """The final table of ``fedge simulate scenario=drift`` (sites flagged as ``policy`` counts them)."""
    from coordinator.drift.policy import window_verdict

    windows = Table(title="drift per window (all sites)")
    for col in ("window", "sites", "rows", "epsilon", "max psi", "max js", "flagged", "flagged sites"):
        windows.add_column(col, justify="right")
    for r in report.reports:
        flagged_sites = len(window_verdict(r, policy).flagged_sites)
        windows.add_row(
            str(r.window),
            str(len(r.sites)),
            str(r.window_rows),
            f"{r.epsilon:g}",
            f"{max(r.overall['psi']):.3f}",
            f"{max(r.overall['js']):.3f}",
            "yes" if r.flagged else "no",
            f"{flagged_sites}/{len(r.sites)}",
        )
    console.print(windows)
    versions = Table(title="accuracy per version")
    for col in ("version", "shifted clients' data", "held-out rows"):
        versions.add_column(col, justify="right")
    for a in report.accuracies:
        versions.add_row(a.version, f"{a.shifted_accuracy:.4f}", f"{a.holdout_accuracy:.4f}")
    console.print(versions)
    if report.trigger is not None:
        console.print(
            f"shift from window {report.shift_from_window}; the policy fired at window "
            f"{report.detection_window} ({report.windows_to_detect} window(s) after the shift): "
            f"{report.trigger.reason}"
        )
    else:
        console.print("[red]the policy did not fire[/]")
    if report.retrain is not None:
        v = report.retrain.version
        console.print(
            f"retraining run {report.retrain.run.run_id} ({report.retrain.run.status}, reason recorded) -> "
            f"{'new version ' + v.name + ':' + str(v.number) if v else 'no version'}"
        )
    if report.plot_path is not None:
        console.print(f"plot: {report.plot_path}")


def drift_scenario(config: Any) -> None:
    """Run ``scenario=drift`` and print its table (exit 1 unless detected within 2 windows and retrained)."""
    from simulations.drift_scenario import run_drift_scenario

    console = Console()
    console.print(
        f"[bold]fedge simulate scenario=drift[/]: {config.simulation.num_clients} clients, shift "
        f"{config.drift.shift_size} sd at clients {list(config.drift.shift_clients)} from window "
        f"{config.drift.shift_from_window} of {config.drift.windows}; registry "
        f"[cyan]{config.registry.root}[/]"
    )
    try:
        report = run_drift_scenario(config, on_step=lambda text: console.print(f"[cyan]{text}[/]"))
    except KeyboardInterrupt:
        typer.secho(
            "interrupted: every process the scenario started was stopped", fg=typer.colors.YELLOW, err=True
        )
        raise typer.Exit(130) from None
    print_scenario_report(console, report, config.drift.policy)
    if not report.succeeded:
        run = report.train.outcome.run
        typer.secho(
            f"error [drift_scenario]: the scenario did not complete (training run {run.run_id}: {run.status}"
            f"{', ' + run.error if run.error else ''})",
            fg=typer.colors.RED,
            err=True,
        )
        raise typer.Exit(1)
