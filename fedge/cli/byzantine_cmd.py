"""``fedge simulate scenario=byzantine``: the run's rejections and the strategy x attack table."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["byzantine_scenario", "print_byzantine_report"]


def byzantine_scenario(config: Any) -> None:
    """Run ``scenario=byzantine`` and print its tables (exit 1 if the real Flower run failed)."""
    from rich.console import Console

    from simulations.byzantine_scenario import run_byzantine_scenario

    console = Console()
    sc = config.scenario
    console.print(
        f"[bold]fedge simulate scenario=byzantine[/]: {config.simulation.num_clients} clients, partitions "
        f"{list(sc.attackers)} attack (TEST HARNESS); registry [cyan]{config.registry.root}[/]"
    )
    try:
        report = run_byzantine_scenario(config, on_step=lambda text: console.print(f"[cyan]{text}[/]"))
    except KeyboardInterrupt:
        typer.secho(
            "interrupted: every process the scenario started was stopped", fg=typer.colors.YELLOW, err=True
        )
        raise typer.Exit(130) from None
    print_byzantine_report(console, report)
    if not report.succeeded and report.real_run is not None:
        run = report.real_run.outcome.run
        typer.secho(
            f"error [byzantine_scenario]: the real Flower run {run.run_id} ended {run.status}"
            f"{': ' + run.error if run.error else ''} (log: {report.real_run.outcome.log_path})",
            fg=typer.colors.RED,
            err=True,
        )
        raise typer.Exit(1)


def print_byzantine_report(console: Console, report: Any) -> None:
    """The real run's dropped updates, then final accuracy per strategy x attack."""
    from rich.table import Table

    if report.real_run is not None:
        run = report.real_run.outcome.run
        table = Table(title=f"real Flower run {run.run_id} · {run.status}: updates validation dropped")
        for col in ("round", "node", "check", "value", "bound"):
            table.add_column(col)
        for r in report.real_rejections:
            node = f"{r['node_id']} ({r['node_name']})" if r.get("node_name") else str(r["node_id"])
            table.add_row(str(r["round"]), node, r["check"], str(r["value"]), str(r["bound"]))
        console.print(table)
        if report.real_run.outcome.version is not None:
            v = report.real_run.outcome.version
            console.print(
                f"registered {v.name}:{v.number} · central accuracy "
                f"{v.metrics.get('central-accuracy', float('nan')):.4f}"
            )
    if not report.cells:
        return
    attacks = list(dict.fromkeys(c.attack for c in report.cells))
    strategies = list(dict.fromkeys(c.strategy for c in report.cells))
    table = Table(title="final central accuracy per strategy x attack (fast harness; dropped updates)")
    table.add_column("strategy")
    for attack in attacks:
        table.add_column("clean" if attack == "none" else attack)
    for name in strategies:
        row = [name]
        for attack in attacks:
            cell = next(c for c in report.cells if c.strategy == name and c.attack == attack)
            dropped = f" ({len(cell.rejected)})" if cell.rejected else ""
            skipped = f" [{cell.skipped_rounds} skipped]" if cell.skipped_rounds else ""
            row.append(f"{cell.accuracy:.3f}{dropped}{skipped}")
        table.add_row(*row)
    console.print(table)
    if report.plot_path is not None:
        console.print(f"plot: {report.plot_path}")
