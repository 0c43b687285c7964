"""Entry point of the ``fedge`` command line.

``fedge NAME ...`` builds only the subcommand NAME: typer inspects every command's signature when it
builds a group, and importing and inspecting all of them costs ~0.1 s that ``fedge edge run`` (whose
cold start is measured) and every other command would otherwise pay. ``fedge --help`` and anything
that is not a known subcommand build the whole tree, as :data:`app` does.
"""

from __future__ import annotations

import importlib
import logging
import sys
from typing import Annotated, Any

import typer

from fedge.interrupts import install_interrupt_handlers

__all__ = ["SUBCOMMANDS", "build_app", "main"]  # and `app`, built on first access

HELP = "Federated and edge-aware MLOps: train with Flower, version, package to ONNX, serve."

# name: (module, attribute, how it is attached). Groups are typer apps; commands are functions.
SUBCOMMANDS: dict[str, tuple[str, str, dict[str, Any] | None]] = {
    "simulate": (
        "fedge.cli.simulate_cmd",
        "simulate_command",
        {
            "context_settings": {"allow_extra_args": False},
            "help": "Run a local multi-client federation end to end. Hydra overrides, e.g. "
            "`fedge simulate strategy=fedprox simulation.num_clients=10 task=breast_cancer`.",
        },
    ),
    "registry": ("fedge.cli.registry_cmd", "registry_app", None),
    "audit": ("fedge.cli.audit_cmd", "audit_app", None),
    "tokens": ("fedge.cli.tokens_cmd", "tokens_app", None),
    "coordinator": ("fedge.cli.coordinator_cmd", "coordinator_app", None),
    "edge": ("fedge.cli.edge_cmd", "edge_app", None),
    "certs": ("fedge.cli.certs_cmd", "certs_app", None),
    "client": ("fedge.cli.client_cmd", "client_app", None),
    "nodes": ("fedge.cli.nodes_cmd", "nodes_app", None),
    "runs": ("fedge.cli.runs_cmd", "runs_app", None),
    "drift": ("fedge.cli.drift_cmd", "drift_app", None),
    "tasks": ("fedge.cli.tasks_cmd", "tasks_app", None),
    "report": (
        "fedge.cli.report_cmd",
        "report_command",
        {"help": "Write a run's self-contained HTML report (`fedge report RUN --out report.html`)."},
    ),
    "new": (
        "fedge.cli.tasks_cmd",
        "new_command",
        {"help": "Scaffold a task package (pip install -e it, then fedge simulate task=NAME)."},
    ),
}


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


def build_app(only: str | None = None) -> typer.Typer:
    """The ``fedge`` CLI: every subcommand, or with ``only`` just that one (a key of
    :data:`SUBCOMMANDS`), which is all ``fedge ONLY ...`` needs."""
    if only is not None and only not in SUBCOMMANDS:
        raise KeyError(f"no fedge subcommand {only!r}")
    cli = typer.Typer(
        name="fedge", help=HELP, no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False
    )
    # The callback keeps the root a group even when one subcommand is attached.
    cli.callback()(_root)
    for name in SUBCOMMANDS if only is None else (only,):
        module, attribute, command_settings = SUBCOMMANDS[name]
        target = getattr(importlib.import_module(module), attribute)
        if command_settings is None:
            cli.add_typer(target, name=name)
        else:
            cli.command(name, **command_settings)(target)
    return cli


def __getattr__(name: str) -> Any:
    # ``from fedge.cli.main import app``: the whole tree, built on first use (PEP 562).
    if name == "app":
        globals()["app"] = full = build_app()
        return full
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main() -> None:
    """Run the CLI."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # SIGTERM gets the same clean shutdown as Ctrl-C: every started process is stopped.
    install_interrupt_handlers()
    first = sys.argv[1] if len(sys.argv) > 1 else None
    build_app(first if first in SUBCOMMANDS else None)()


if __name__ == "__main__":
    main()
