"""Entry point of the ``fedge`` command line."""

from __future__ import annotations

import logging
from typing import Annotated

import typer

from fedge.cli.audit_cmd import audit_app
from fedge.cli.certs_cmd import certs_app
from fedge.cli.client_cmd import client_app
from fedge.cli.coordinator_cmd import coordinator_app
from fedge.cli.drift_cmd import drift_app
from fedge.cli.edge_cmd import edge_app
from fedge.cli.nodes_cmd import nodes_app
from fedge.cli.registry_cmd import registry_app
from fedge.cli.report_cmd import report_command
from fedge.cli.runs_cmd import runs_app
from fedge.cli.simulate_cmd import simulate_command
from fedge.cli.tasks_cmd import new_command, tasks_app
from fedge.cli.tokens_cmd import tokens_app
from fedge.interrupts import install_interrupt_handlers

__all__ = ["app", "main"]

app = typer.Typer(
    name="fedge",
    help="Federated and edge-aware MLOps: train with Flower, version, package to ONNX, serve.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def version_text() -> str:
    """``fedge --version``: ``fedge X.Y.Z`` first, then flwr, torch and onnxruntime (or ``not installed``)."""
    from fedge.version import RUNTIME_DISTRIBUTIONS, distribution_version, fedge_version

    lines = [f"fedge {fedge_version()}"]
    for name in RUNTIME_DISTRIBUTIONS:
        lines.append(f"{name} {distribution_version(name) or 'not installed'}")
    return "\n".join(lines)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(version_text())
        raise typer.Exit(0)


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_print_version,
            is_eager=True,
            help="Print the versions of fedge, flwr, torch, onnxruntime",
        ),
    ] = False,
) -> None:
    """Federated and edge-aware MLOps: train with Flower, version, package to ONNX, serve."""


app.command(
    "simulate",
    context_settings={"allow_extra_args": False},
    help="Run a local multi-client federation end to end. Hydra overrides, e.g. "
    "`fedge simulate strategy=fedprox simulation.num_clients=10 task=breast_cancer`.",
)(simulate_command)
app.add_typer(registry_app, name="registry")
app.add_typer(audit_app, name="audit")
app.add_typer(tokens_app, name="tokens")
app.add_typer(coordinator_app, name="coordinator")
app.add_typer(edge_app, name="edge")
app.add_typer(certs_app, name="certs")
app.add_typer(client_app, name="client")
app.add_typer(nodes_app, name="nodes")
app.add_typer(runs_app, name="runs")
app.add_typer(drift_app, name="drift")
app.add_typer(tasks_app, name="tasks")
app.command(
    "report", help="Write a run's self-contained HTML report (`fedge report RUN --out report.html`)."
)(report_command)
app.command("new", help="Scaffold a task package (pip install -e it, then fedge simulate task=NAME).")(
    new_command
)


def main() -> None:
    """Run the CLI."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # SIGTERM gets the same clean shutdown as Ctrl-C: every started process is stopped.
    install_interrupt_handlers()
    app()


if __name__ == "__main__":
    main()
