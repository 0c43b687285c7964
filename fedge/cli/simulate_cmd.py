"""``fedge simulate``: a rich progress display during rounds and a result table at the end."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Annotated

import typer

from fedge.cli.errors import reports_errors

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["simulate_command"]


@reports_errors
def simulate_command(
    overrides: Annotated[
        list[str] | None, typer.Argument(help="Hydra overrides such as simulation.num_clients=10")
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log fedge's steps")] = False,
) -> None:
    """Run a local multi-client federation end to end."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from coordinator import RunProgress
    from fedge.config import load_config
    from simulations import simulate
    from simulations.runner import primary_metric

    if verbose:
        logging.getLogger().setLevel(logging.INFO)
    console = Console()
    config = load_config(overrides or [])
    if config.scenario.name == "drift":
        from fedge.cli.drift_cmd import drift_scenario

        drift_scenario(config)
        return
    if config.scenario.name == "byzantine":
        from fedge.cli.byzantine_cmd import byzantine_scenario

        byzantine_scenario(config)
        return
    lead = primary_metric(config)
    console.print(
        f"[bold]fedge simulate[/]: task [cyan]{config.task.name}[/] · strategy "
        f"[cyan]{config.strategy.name}[/] · {config.simulation.num_clients} clients "
        f"({config.simulation.partition}) · {config.strategy.num_rounds} rounds · registry "
        f"[cyan]{config.registry.root}[/]"
    )
    with Progress(
        SpinnerColumn(),
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} rounds"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as progress:
        bar = progress.add_task("starting the SuperLink", total=config.strategy.num_rounds)

        def on_progress(p: RunProgress) -> None:
            if p.last_checkpoint is not None:
                m = p.last_checkpoint.metrics
                value = m.get(f"central-{lead}", m.get(f"eval-{lead}"))
                desc = f"round {p.rounds_done}/{p.num_rounds}"
                if value is not None:
                    desc += f" · {lead} {value:.3f}"
            else:
                desc = {"pending": "submitting the run", "starting": "starting Flower (Ray)"}.get(
                    p.flower_status, "round 1 training"
                )
            progress.update(bar, completed=p.rounds_done, description=desc)

        try:
            report = simulate(config, on_progress=on_progress)
        except KeyboardInterrupt:
            progress.stop()
            typer.secho(
                "interrupted: the run is marked stopped and every process it started was stopped "
                f"(see `fedge registry runs --root {config.registry.root}`)",
                fg=typer.colors.YELLOW,
                err=True,
            )
            raise typer.Exit(130) from None
    _print_report(console, report)
    if not report.succeeded:
        run = report.outcome.run
        typer.secho(
            f"error [federation_failed]: run {run.run_id} ended {run.status}: {run.error or 'see the log'} "
            f"(log: {report.outcome.log_path})",
            fg=typer.colors.RED,
            err=True,
        )
        raise typer.Exit(1)


def _print_report(console: Console, report: object) -> None:
    from rich.table import Table

    from simulations import SimulationReport

    assert isinstance(report, SimulationReport)
    outcome = report.outcome
    lead = report.primary_metric
    short = "acc" if lead == "accuracy" else lead
    table = Table(title=f"run {outcome.run.run_id} · {outcome.run.status} · {outcome.elapsed_s:.1f}s")
    for col in (
        "round",
        f"central {short}",
        "central loss",
        f"fed. eval {short}",
        "fed. eval loss",
        "train loss",
        "participants",
    ):
        table.add_column(col)

    def fmt(value: float | None) -> str:
        return "-" if value is None else f"{value:.4f}"

    for ckpt in outcome.checkpoints:
        m = ckpt.metrics
        table.add_row(
            str(ckpt.round),
            fmt(m.get(f"central-{lead}")),
            fmt(m.get("central-loss")),
            fmt(m.get(f"eval-{lead}")),
            fmt(m.get("eval-loss")),
            fmt(m.get("train-loss")),
            str(len(ckpt.lineage.get("nodes", []))),
        )
    console.print(table)
    if outcome.version is not None:
        v = outcome.version
        console.print(
            f"registered version [bold]{v.name}:{v.number}[/] (id {v.id}) aliases {', '.join(v.aliases)}"
        )
        console.print(f"ONNX: {report.onnx_path}")
        if report.parity_max_abs_diff is not None:
            console.print(f"ONNX parity vs torch: max abs diff {report.parity_max_abs_diff:.2e}")
    console.print(f"Flower log: {outcome.log_path}")
