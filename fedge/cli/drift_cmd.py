"""``fedge drift``: drift status of the monitored versions, the power plan of a monitoring configuration, and
the ``scenario=drift`` simulation's output."""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from typing import TYPE_CHECKING, Annotated, Any

import typer

from fedge.cli.errors import reports_errors
from fedge.cli.options import DatabaseUrlOpt, JsonOpt, RootOpt, opened_registry, print_json
from fedge.cli.tables import Column, print_table

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["drift_app", "plan_input", "print_scenario_report"]

drift_app = typer.Typer(help="Privacy-preserving drift monitoring.", no_args_is_help=True)


@drift_app.command("status")
@reports_errors
def drift_status(
    root: RootOpt = ".fedge",
    database_url: DatabaseUrlOpt = "",
    model: Annotated[str | None, typer.Option(help="Only this model")] = None,
    as_json: JsonOpt = False,
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
        print_json(status)
        return
    policy = status["policy"]
    test = (
        "calibrated test"
        if policy.get("test") == "calibrated"
        else f"{policy['statistic']} > {policy['threshold']}"
    )
    rows = []
    for v in status["versions"]:
        stat = v["statistic"]
        top = ", ".join(f"{t['feature']} {t[stat]:.3f}" for t in v["top_features"][:3])
        rows.append((
            f"{v['model']}:{v['version']}",
            f"{v['source']} {v['stream']}".strip() or None,  # a monitor run's id or one edge device
            v["window"],
            f"{len(v['flagged_sites'])}/{v['sites']} flagged",
            v["window_rows"],
            f"{v['epsilon']:g}",
            "yes" if v["flagged"] else "no",
            top,
            v["decision"],
        ))  # fmt: skip
    print_table(DRIFT_COLUMNS, rows, title=f"drift ({test})")
    if not status["versions"]:
        typer.echo("no drift reports yet")
    for t in status["triggers"]:
        typer.echo(f"trigger {t['id']} [{t['outcome']}] run {t['run_id'] or '-'}: {t['reason']}")


DRIFT_COLUMNS = (
    Column("version", min_width=10),
    Column("stream", priority=2, min_width=12),
    Column("window", priority=3),
    Column("sites", priority=2, min_width=9),
    Column("rows", priority=5),
    Column("epsilon", priority=6),
    Column("flagged"),
    Column("top features", priority=4, min_width=14),
    Column("decision", min_width=10),
)


def plan_input(config: Any, *, rows: int, sites: int, **changes: Any) -> Any:
    """The :class:`~fedge.drift_plan.PlanInput` of a composed config's drift settings and task.

    Features are ``drift.features`` (all the task's drift features when empty); predicted classes are
    counted for classification tasks; ``changes`` override any field (``None`` values are ignored).
    """
    from fedge.drift_plan import PlanInput
    from fedge.tasks import get_task

    d = config.drift
    task = get_task(config.task.name)
    features = len(d.features) or len(task.drift_feature_names())
    base = PlanInput(
        features=features,
        bins=d.num_bins,
        epsilon=d.epsilon,
        rows=rows,
        sites=sites,
        mechanism=d.mechanism,
        delta=d.delta,
        windows=max(d.policy.consecutive_windows, 2),
        consecutive=d.policy.consecutive_windows,
        false_alarm_rate=d.false_alarm_rate,
        num_classes=task.target.num_classes,
        reference_epsilon=d.reference_epsilon,
        contribution_bound=d.contribution_bound,
    )
    return replace(base, **{k: v for k, v in changes.items() if v is not None})


@drift_app.command("plan")
@reports_errors
def drift_plan(
    rows: Annotated[int, typer.Option(help="Rows per site per window")] = 500,
    sites: Annotated[int, typer.Option(help="Sites reporting each window")] = 3,
    features: Annotated[
        int | None, typer.Option(help="Monitored features [config: drift.features / task]")
    ] = None,
    bins: Annotated[int | None, typer.Option(help="Bins per feature [drift.num_bins]")] = None,
    epsilon: Annotated[float | None, typer.Option(help="Epsilon per site per window [drift.epsilon]")] = None,
    mechanism: Annotated[str | None, typer.Option(help="laplace | gaussian [drift.mechanism]")] = None,
    windows: Annotated[int | None, typer.Option(help="Detect within this many windows")] = None,
    classes: Annotated[
        int | None, typer.Option(help="Predicted classes counted too (0: none) [task]")
    ] = None,
    reference_rows: Annotated[
        int | None, typer.Option(help="Training rows per site at release [= rows]")
    ] = None,
    false_alarm_rate: Annotated[
        float | None, typer.Option(help="Per window [drift.false_alarm_rate]")
    ] = None,
    shifted_fraction: Annotated[float, typer.Option(help="Share of sites whose data shifts")] = 0.6,
    max_shift: Annotated[float, typer.Option(help="Refuse when no shift up to this (sd) is detected")] = 3.0,
    draws: Annotated[int, typer.Option(min=50, help="Simulated runs per figure")] = 300,
    seed: Annotated[int, typer.Option(help="Simulation seed")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
    overrides: Annotated[
        list[str] | None,
        typer.Argument(help="Hydra overrides, e.g. task=wine drift.features=[0,1,2] drift.epsilon=2"),
    ] = None,
) -> None:
    """Smallest mean shift detected with 95% probability within N windows, through the calibrated test.

    Exit 2 (with the numbers and what to change) when the false-alarm rate cannot be held or no shift
    up to --max-shift sd is detectable.
    """
    from fedge.config import load_config
    from fedge.drift_plan import plan_monitoring

    config = plan_input(
        load_config(overrides or []), rows=rows, sites=sites, features=features, bins=bins,
        epsilon=epsilon, mechanism=mechanism, windows=windows, num_classes=classes,
        reference_rows=reference_rows, false_alarm_rate=false_alarm_rate,
        shifted_fraction=shifted_fraction, max_shift=max_shift,
    )  # fmt: skip
    if windows is not None and config.consecutive > windows:
        config = replace(config, consecutive=windows)
    result = plan_monitoring(config, draws=draws, seed=seed)
    if as_json:
        body = {
            "config": asdict(config),
            "accepted": result.accepted,
            "false_alarm_rate": result.false_alarm_rate,
            "false_alarm_limit": result.false_alarm_limit,
            "detection": {str(k): v for k, v in sorted(result.detection.items())},
            "detectable_shift": result.detectable_shift,
            "problems": result.problems,
            "advice": result.advice,
        }
        typer.echo(json.dumps(body, indent=2))
    else:
        for line in result.lines():
            typer.echo(line)
    if not result.accepted:
        raise typer.Exit(2)


def print_scenario_report(console: Console, report: Any, policy: Any) -> None:
    """The final table of ``fedge simulate scenario=drift`` (sites flagged as ``policy`` counts them)."""
    from rich.table import Table

    from coordinator.drift.policy import window_verdict

    windows = Table(title="drift per window (all sites)")
    for col in ("window", "sites", "rows", "epsilon", "max psi", "max js", "flagged", "flagged sites"):
        windows.add_column(col)
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
        versions.add_column(col)
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
    from rich.console import Console

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
